//! `sidecar run` as a child process, built linkerd-style: a builder for the flags, a handle
//! that knows the ports the sidecar chose (read from its registry file) and stops it on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::process::{stop_child, wait_until};

pub struct SidecarBuilder {
    bin: PathBuf,
    app_id: String,
    registry: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    command: Vec<String>,
    socket_dir: Option<PathBuf>,
}

pub struct SidecarProcess {
    pub app_id: String,
    pub http_port: u16,
    pub grpc_port: u16,
    /// Where peer sidecars call this one.
    pub internal_port: u16,
    /// The HTTP API's socket when the sidecar serves on Unix domain sockets (no ports).
    pub http_socket: Option<PathBuf>,
    child: Option<Child>,
}

impl SidecarBuilder {
    /// `bin` is the sidecar binary (`env!("CARGO_BIN_EXE_sidecar")` in its own tests);
    /// `registry` is the folder shared by the sidecars of one stack.
    pub fn new(bin: impl Into<PathBuf>, app_id: &str, registry: &Path) -> Self {
        let bin = bin.into();
        SidecarBuilder {
            bin,
            app_id: app_id.to_string(),
            registry: registry.to_path_buf(),
            args: Vec::new(),
            env: Vec::new(),
            command: Vec::new(),
            socket_dir: None,
        }
    }

    /// Serves the API on Unix domain sockets in `dir` (`--unix-domain-socket`).
    pub fn unix_sockets(mut self, dir: &Path) -> Self {
        self.socket_dir = Some(dir.to_path_buf());
        self.flag("--unix-domain-socket", dir.display())
    }

    pub fn resources(mut self, dir: &Path) -> Self {
        self.args.push("--resources-path".into());
        self.args.push(dir.display().to_string());
        self
    }

    pub fn app_port(mut self, port: u16) -> Self {
        self.args.push("--app-port".into());
        self.args.push(port.to_string());
        self
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    /// A flag of `sidecar run` with its value: `.flag("--config", path)`.
    pub fn flag(self, name: &str, value: impl std::fmt::Display) -> Self {
        self.arg(name).arg(value.to_string())
    }

    /// mTLS between sidecars, with this app's certificate from `pki`.
    pub fn mtls(mut self, pki: &crate::Pki) -> Self {
        self.args.extend(pki.flags(&self.app_id));
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// The app command that `sidecar run` starts beside the sidecar.
    pub fn command<S: AsRef<str>>(mut self, cmd: &[S]) -> Self {
        self.command = cmd.iter().map(|s| s.as_ref().to_string()).collect();
        self
    }

    fn build_command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("run")
            .arg("--app-id")
            .arg(&self.app_id)
            .arg("--registry-dir")
            .arg(&self.registry)
            .arg("--log-level")
            .arg("warn")
            .args(&self.args)
            .env_remove("DAPR_API_TOKEN")
            .env_remove("APP_API_TOKEN")
            // The namespace the tests expect is Dapr's default, whatever the shell sets.
            .env_remove("NAMESPACE")
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if !self.command.is_empty() {
            cmd.arg("--").args(&self.command);
        }
        cmd
    }

    /// Runs to completion (for launcher tests); returns the exit status and stderr.
    pub fn run_to_end(&self) -> anyhow::Result<(ExitStatus, String)> {
        let out = self
            .build_command()
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()?;
        Ok((
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Starts the sidecar and waits until its outbound health answers 204.
    pub async fn spawn(self) -> anyhow::Result<SidecarProcess> {
        let mut child = self
            .build_command()
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()?;
        let pid = child.id();
        let file = self.registry.join(format!("{}.{pid}.json", self.app_id));
        let read = wait_until(
            "the sidecar's registry entry",
            Duration::from_secs(20),
            || {
                let file = file.clone();
                let exited = child.try_wait().ok().flatten().is_some();
                async move {
                    if exited {
                        return Some(None);
                    }
                    let text = std::fs::read(&file).ok()?;
                    serde_json::from_slice::<serde_json::Value>(&text)
                        .ok()
                        .map(Some)
                }
            },
        )
        .await;
        let entry = match read {
            Ok(Some(entry)) => entry,
            Ok(None) => {
                let status = child.wait()?;
                anyhow::bail!("sidecar exited before serving: {status}");
            }
            // Never leave a sidecar (and its app) running behind a failed start.
            Err(e) => {
                stop_child(&mut child, Duration::from_secs(5));
                return Err(e);
            }
        };
        let port = |k: &str| {
            entry[k]
                .as_u64()
                .map(|p| p as u16)
                .ok_or_else(|| anyhow::anyhow!("no {k} in registry entry"))
        };
        let sidecar = SidecarProcess {
            app_id: self.app_id.clone(),
            http_port: port("httpPort")?,
            grpc_port: port("grpcPort")?,
            internal_port: port("internalPort")?,
            http_socket: self
                .socket_dir
                .as_ref()
                .map(|d| d.join(format!("dapr-{}-http.socket", self.app_id))),
            child: Some(child),
        };
        let url = format!("{}/v1.0/healthz/outbound", sidecar.http_url());
        let client = sidecar.http_client();
        wait_until("sidecar health", Duration::from_secs(20), || {
            let req = client.get(&url).send();
            async move { req.await.ok().filter(|r| r.status() == 204).map(|_| ()) }
        })
        .await?;
        Ok(sidecar)
    }
}

impl SidecarProcess {
    /// The HTTP API's origin; on a socket the host only names it (`http_client` connects).
    pub fn http_url(&self) -> String {
        match self.http_socket {
            Some(_) => "http://localhost".into(),
            None => format!("http://127.0.0.1:{}", self.http_port),
        }
    }

    /// The metadata document (`GET /v1.0/metadata`).
    pub async fn metadata(&self) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}/v1.0/metadata", self.http_url());
        Ok(self.http_client().get(url).send().await?.json().await?)
    }

    /// The subscriptions the metadata lists, none when it lists no such field.
    pub async fn subscriptions(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let m = self.metadata().await?;
        Ok(m["subscriptions"].as_array().cloned().unwrap_or_default())
    }

    /// Waits until the sidecar lists a subscription in its metadata: its app has told it
    /// what it subscribes to, and deliveries can begin.
    pub async fn subscribed(&self, timeout: Duration) -> anyhow::Result<()> {
        wait_until("the app's subscriptions", timeout, || async {
            self.subscriptions()
                .await
                .ok()
                .filter(|s| !s.is_empty())
                .map(|_| ())
        })
        .await
    }

    /// Publishes `body` as `content_type` to `topic` (a `?metadata.<name>=` query may
    /// follow it) on pub/sub `pubsub` over the HTTP API; the answer's status (204 once the
    /// component took it).
    pub async fn publish(
        &self,
        pubsub: &str,
        topic: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> anyhow::Result<u16> {
        let url = format!("{}/v1.0/publish/{pubsub}/{topic}", self.http_url());
        let answer = self
            .http_client()
            .post(url)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await?;
        Ok(answer.status().as_u16())
    }

    /// A client that reaches the HTTP API, on its port or its socket.
    pub fn http_client(&self) -> reqwest::Client {
        let builder = reqwest::Client::builder();
        match &self.http_socket {
            Some(path) => builder.unix_socket(path.clone()),
            None => builder,
        }
        .build()
        .expect("a plain reqwest client builds")
    }

    pub fn grpc_url(&self) -> String {
        assert!(
            self.http_socket.is_none(),
            "a sidecar on Unix domain sockets has no gRPC port"
        );
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, std::process::Child::id)
    }

    /// The processes `sidecar run` started (its app), from /proc.
    pub fn app_pids(&self) -> Vec<u32> {
        appkit::process::children_of(self.pid())
    }

    /// Waits, without signalling, for the process to exit by itself.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// `kill -9`: no goodbye, nothing finished; returns once the process is gone. Its app
    /// (if any) is left running.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        appkit::process::send_signal(self.pid(), appkit::process::Signal::Kill)?;
        self.stop();
        Ok(())
    }

    /// SIGTERM, then wait for exit (SIGKILL after 10 s).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        stop_child(&mut self.child.take()?, Duration::from_secs(10))
    }
}

impl Drop for SidecarProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
