//! Command-line flags: `sidecar run` takes the flags of `dapr run` that matter on one
//! machine, with the same names, short forms and meanings.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "sidecar",
    version,
    about = "A Dapr-API-compatible sidecar with a `dapr run`-style launcher"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start a sidecar and, if given, the app command beside it (like `dapr run`).
    Run(RunArgs),
    /// Remove one app's keys and held locks from the stores of a resources folder.
    ResetState(StoreArgs),
    /// Print one app's state as JSON lines (`{"store","key","value"}`), e.g. for the
    /// booking ledger check after a load.
    DumpState(StoreArgs),
}

/// The stores of a resources folder, seen from outside a running sidecar.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// Folders of component YAMLs naming the stores.
    #[arg(
        short = 'd',
        long = "resources-path",
        visible_alias = "components-path",
        required = true
    )]
    pub resources_path: Vec<PathBuf>,
    /// The app whose keys are meant (its key prefix).
    #[arg(short = 'a', long, default_value = "backend")]
    pub app_id: String,
    #[arg(long, default_value = "warn")]
    pub log_level: String,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The id of the app; other sidecars invoke it by this name.
    #[arg(short = 'a', long)]
    pub app_id: Option<String>,
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
    /// debug, info, warn, error, fatal or panic.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Write logs as JSON lines.
    #[arg(long)]
    pub log_as_json: bool,
    /// Prometheus metrics port (a free port when not given; only with metrics enabled).
    #[arg(short = 'M', long)]
    pub metrics_port: Option<u16>,
    /// The protocol the app speaks; this sidecar supports http.
    #[arg(short = 'P', long, default_value = "http")]
    pub app_protocol: String,
    /// Log one line per API call.
    #[arg(long)]
    pub enable_api_logging: bool,
    /// Address of the app.
    #[arg(long, default_value = "127.0.0.1")]
    pub app_channel_address: String,
    /// Largest request body accepted, e.g. 4Mi.
    #[arg(long, default_value = "4Mi")]
    pub max_body_size: String,
    /// Tokio worker threads; 1 (the default) runs a single-threaded runtime, which serves
    /// best when a few busy processes share two cores.
    #[arg(long, env = "SIDECAR_WORKERS", default_value_t = 1)]
    pub workers: usize,
    /// Name-registry folder shared by the sidecars that should see each other.
    #[arg(long, env = "SIDECAR_REGISTRY_DIR")]
    pub registry_dir: Option<PathBuf>,
    /// The app command and its arguments (after the flags, with or without `--`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4Mi"), Some(4 << 20));
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("x"), None);
    }

    #[test]
    fn app_command_follows_flags_with_or_without_dashes() {
        let a = Cli::parse_from([
            "sidecar",
            "run",
            "--app-id",
            "backend",
            "--app-port",
            "5001",
            "bash",
            "run_server.sh",
            "1",
            "critical",
        ]);
        let Command::Run(r) = a.command else {
            panic!("not run")
        };
        assert_eq!(r.command, ["bash", "run_server.sh", "1", "critical"]);
        let b = Cli::parse_from([
            "sidecar",
            "run",
            "-a",
            "x",
            "--components-path",
            "c",
            "--",
            "app",
            "--flag",
        ]);
        let Command::Run(r) = b.command else {
            panic!("not run")
        };
        assert_eq!(r.command, ["app", "--flag"]);
        assert_eq!(r.resources_path, [PathBuf::from("c")]);
    }
}
