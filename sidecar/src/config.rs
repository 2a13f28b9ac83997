//! One `Config` for a sidecar: the flags of `dapr run` that matter on one machine, with
//! their names, short forms and meanings, and the environment `dapr run` reads, all parsed
//! by clap. Nothing is bound or loaded here: `Listeners::bind` and `Sidecar::build` do that,
//! so a test can build a config in code and run a sidecar in-process on port 0.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct Config {
    /// The id of the app; other sidecars invoke it by this name.
    #[arg(short = 'a', long, default_value = "")]
    pub app_id: String,
    /// The port the app listens on; without it the sidecar has no app channel.
    #[arg(short = 'p', long)]
    pub app_port: Option<u16>,
    /// Dapr HTTP API port (a free port when not given).
    #[arg(short = 'H', long)]
    pub dapr_http_port: Option<u16>,
    /// Dapr gRPC API port (a free port when not given).
    #[arg(short = 'G', long)]
    pub dapr_grpc_port: Option<u16>,
    /// Port peer sidecars use to reach this app (a free port when not given).
    #[arg(short = 'I', long)]
    pub dapr_internal_grpc_port: Option<u16>,
    /// Folders of component YAMLs (repeatable); default ~/.dapr/components if it exists.
    #[arg(
        short = 'd',
        long = "resources-path",
        visible_alias = "components-path"
    )]
    pub resources_path: Vec<PathBuf>,
    /// Dapr Configuration YAML; default ~/.dapr/config.yaml if it exists.
    #[arg(short = 'c', long)]
    pub config: Option<PathBuf>,
    /// Prometheus metrics port (a free port when not given; only with metrics enabled).
    #[arg(short = 'M', long)]
    pub metrics_port: Option<u16>,
    /// The protocol the app speaks: http, or grpc (the app serves Dapr's `AppCallback`).
    #[arg(short = 'P', long, default_value = "http")]
    pub app_protocol: String,
    /// Log one line per API call.
    #[arg(long)]
    pub enable_api_logging: bool,
    /// Address of the app.
    #[arg(long, default_value = "127.0.0.1")]
    pub app_channel_address: String,
    /// Probe the app's health: while it is unhealthy its subscriptions pause and calls to
    /// it are refused, as daprd does. `--enable-app-health-check` or `=true|false`.
    #[arg(
        long,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true"
    )]
    pub enable_app_health_check: bool,
    /// The HTTP app's health path (GET; any 2xx is healthy).
    #[arg(long, default_value = "/healthz")]
    pub app_health_check_path: String,
    /// Seconds between two health probes.
    #[arg(long, default_value_t = 5)]
    pub app_health_probe_interval: u64,
    /// Milliseconds a health probe may take.
    #[arg(long, default_value_t = 500)]
    pub app_health_probe_timeout: u64,
    /// Failed health probes in a row after which the app is unhealthy.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=i64::from(i32::MAX)))]
    pub app_health_threshold: u32,
    /// Largest request body accepted, e.g. 4Mi.
    #[arg(long, default_value = "4Mi", value_parser = size)]
    pub max_body_size: usize,
    /// Name-registry folder shared by the sidecars that should see each other.
    #[arg(long, env = "SIDECAR_REGISTRY_DIR")]
    pub registry_dir: Option<PathBuf>,
    /// The token every API call must carry (`dapr-api-token`), as `dapr run` passes it.
    #[arg(long, env = "DAPR_API_TOKEN", hide = true, hide_env_values = true)]
    pub dapr_api_token: Option<String>,
    /// The token sent to the app with every call, as `dapr run` passes it.
    #[arg(long, env = "APP_API_TOKEN", hide = true, hide_env_values = true)]
    pub app_api_token: Option<String>,
    /// The addresses the HTTP and gRPC API listen on, comma-separated (all on one port).
    /// daprd listens on all interfaces unless told; this sidecar on loopback unless told,
    /// since its API answers anyone who reaches it when no `DAPR_API_TOKEN` is set.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1",
        alias = "listen-address"
    )]
    pub dapr_listen_addresses: Vec<IpAddr>,
    /// The address peer sidecars reach this one on. Default: loopback with the local
    /// registry; all interfaces with mDNS or DNS name resolution, as daprd.
    #[arg(long)]
    pub dapr_internal_grpc_listen_address: Option<IpAddr>,
    /// Serve the HTTP and gRPC API on Unix domain sockets in this folder instead of TCP
    /// ports, as daprd does: `dapr-<app-id>-http.socket` and `dapr-<app-id>-grpc.socket`.
    #[arg(short = 'u', long)]
    pub unix_domain_socket: Option<PathBuf>,
    /// mTLS between sidecars, as daprd's flag (the Configuration's `spec.mtls.enabled`
    /// turns it on too): the internal port takes only callers with a trusted certificate.
    /// `--enable-mtls`, or `--enable-mtls=true|false` as Go's flags take it.
    #[arg(
        long,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true"
    )]
    pub enable_mtls: bool,
    /// This sidecar's certificate (PEM, chain after it), whose SPIFFE id names its app id.
    #[arg(long, env = "DAPR_CERT_CHAIN_FILE")]
    pub cert_chain_file: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "DAPR_CERT_KEY_FILE")]
    pub cert_key_file: Option<PathBuf>,
    /// The CA certificates (PEM) a peer's certificate must chain to.
    #[arg(long, env = "DAPR_TRUST_ANCHORS_FILE")]
    pub trust_anchors_file: Option<PathBuf>,
    /// The same bundle as PEM text, as daprd reads it.
    #[arg(long, env = "DAPR_TRUST_ANCHORS", hide = true, hide_env_values = true)]
    pub trust_anchors: Option<String>,
}

impl Config {
    /// A config for app `app_id` with the flags' defaults and nothing taken from the
    /// environment (no tokens, the default registry folder), for a sidecar built in code.
    /// `~/.dapr` still supplies components and configuration when no path is set.
    pub fn for_app(app_id: &str) -> Config {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            config: Config,
        }
        let mut config = <Only as clap::Parser>::parse_from(["sidecar"]).config;
        config.app_id = app_id.to_string();
        config.dapr_api_token = None;
        config.app_api_token = None;
        config.registry_dir = None;
        config.cert_chain_file = None;
        config.cert_key_file = None;
        config.trust_anchors_file = None;
        config.trust_anchors = None;
        config
    }

    /// Refuses what this sidecar cannot do, before anything starts.
    pub fn check(&self) -> anyhow::Result<()> {
        // A client-only app (no port) is never called: any protocol Dapr knows will do.
        let callable = ["http", "grpc"];
        let known = ["http", "grpc", "https", "grpcs", "h2c"];
        let protocol = self.app_protocol.to_ascii_lowercase();
        anyhow::ensure!(
            known.contains(&protocol.as_str()),
            "--app-protocol {} is not one of {}",
            self.app_protocol,
            known.join(", ")
        );
        anyhow::ensure!(
            self.app_port().is_none() || callable.contains(&protocol.as_str()),
            "--app-protocol {} is not supported with an app port; this sidecar calls apps \
             over http or grpc",
            self.app_protocol
        );
        anyhow::ensure!(
            !self.app_id.contains('.'),
            "--app-id {:?} must not contain dots",
            self.app_id
        );
        if let Some(h) = self.app_health() {
            // daprd's own check of these settings.
            anyhow::ensure!(
                h.timeout <= h.interval,
                "--app-health-probe-timeout ({} ms) must be smaller than the probe interval",
                h.timeout.as_millis()
            );
        }
        Ok(())
    }

    /// The app's port; 0 means none, as with `dapr run`.
    pub fn app_port(&self) -> Option<u16> {
        self.app_port.filter(|p| *p > 0)
    }

    /// The health probe's settings, when asked for and there is an app to probe. Zero
    /// stands for the default, as daprd reads these flags (5 s, 500 ms, 3).
    pub fn app_health(&self) -> Option<crate::apphealth::HealthCheck> {
        let or = |v: u64, default: u64| if v == 0 { default } else { v };
        (self.enable_app_health_check && self.app_port().is_some()).then(|| {
            crate::apphealth::HealthCheck {
                path: format!("/{}", self.app_health_check_path.trim_start_matches('/')),
                interval: Duration::from_secs(or(self.app_health_probe_interval, 5)),
                timeout: Duration::from_millis(or(self.app_health_probe_timeout, 500)),
                threshold: match self.app_health_threshold {
                    0 => 3,
                    n => n,
                },
            }
        })
    }

    pub fn resources_paths(&self) -> Vec<PathBuf> {
        if self.resources_path.is_empty() {
            home_dapr("components").into_iter().collect()
        } else {
            self.resources_path.clone()
        }
    }

    pub fn configuration_file(&self) -> Option<PathBuf> {
        self.config.clone().or_else(|| home_dapr("config.yaml"))
    }

    pub fn registry_dir(&self) -> PathBuf {
        self.registry_dir
            .clone()
            .unwrap_or_else(crate::registry::default_dir)
    }

    /// The API's socket for `api` ("http" or "grpc") under `--unix-domain-socket`.
    pub fn api_socket(&self, api: &str) -> Option<PathBuf> {
        let dir = self.unix_domain_socket.as_ref()?;
        Some(dir.join(format!("dapr-{}-{api}.socket", self.app_id)))
    }

    pub fn api_token(&self) -> Option<&str> {
        self.dapr_api_token.as_deref().filter(|t| !t.is_empty())
    }

    pub fn app_token(&self) -> Option<&str> {
        self.app_api_token.as_deref().filter(|t| !t.is_empty())
    }
}

fn home_dapr(file: &str) -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("HOME")?)
        .join(".dapr")
        .join(file);
    p.exists().then_some(p)
}

fn size(s: &str) -> Result<usize, String> {
    parse_size(s).ok_or_else(|| format!("{s:?} is not a size like 4Mi"))
}

/// Parses sizes as Dapr writes them: `4Mi`, `512Ki`, `1G`, `1000`.
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: usize = n.parse().ok()?;
    let mult = match unit {
        "" | "B" => 1,
        "K" | "k" | "KB" => 1_000,
        "Ki" | "KiB" => 1 << 10,
        "M" | "MB" => 1_000_000,
        "Mi" | "MiB" => 1 << 20,
        "G" | "GB" => 1_000_000_000,
        "Gi" | "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Dapr's truthy words (`utils.IsTruthy`): y, yes, true, t, on, 1, in any case.
pub(crate) fn is_truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "y" | "yes" | "true" | "t" | "on" | "1"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        for (text, size) in [
            ("4Mi", Some(4 << 20)),
            ("1000", Some(1000)),
            ("512Ki", Some(512 << 10)),
            ("x", None),
            ("4Qi", None),
        ] {
            assert_eq!(parse_size(text), size, "{text}");
        }
    }

    #[test]
    fn a_config_for_an_app_has_dapr_run_defaults() {
        let c = Config::for_app("backend");
        assert_eq!(c.app_id, "backend");
        assert_eq!(c.max_body_size, 4 << 20);
        assert_eq!(c.app_protocol, "http");
        assert!(c.check().is_ok());
        assert!(Config::for_app("a.b").check().is_err());
        assert!(!c.enable_mtls);
        let with = |protocol: &str, port: Option<u16>| {
            let mut c = Config::for_app("app");
            c.app_protocol = protocol.into();
            c.app_port = port;
            c.check()
        };
        assert!(with("grpc", Some(5001)).is_ok());
        assert!(with("GRPC", Some(5001)).is_ok(), "daprd lower-cases it");
        assert!(
            with("https", None).is_ok(),
            "a client-only app is never called"
        );
        assert!(with("https", Some(5001)).is_err());
        assert!(with("smtp", None).is_err());
    }

    #[test]
    fn enable_mtls_takes_go_style_values() {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            config: Config,
        }
        let parse = |args: &[&str]| {
            <Only as clap::Parser>::try_parse_from([&["sidecar"], args].concat())
                .map(|o| o.config.enable_mtls)
        };
        assert!(parse(&["--enable-mtls"]).unwrap());
        assert!(parse(&["--enable-mtls=true"]).unwrap());
        assert!(!parse(&["--enable-mtls=false"]).unwrap());
        assert!(!parse(&[]).unwrap());
        assert!(parse(&["--enable-mtls=maybe"]).is_err());
    }
}
