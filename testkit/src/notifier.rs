//! The notifier beside its own `sidecar run`, keeping what it hears in a file of its own,
//! and a wait on what it has heard.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::process::{TempDir, free_port, wait_until};
use crate::sidecar::{SidecarBuilder, SidecarProcess};
use crate::stack::workspace_bin;

pub struct NotifierProcess {
    pub sidecar: SidecarProcess,
    pub url: String,
    port: u16,
    registry: PathBuf,
    resources: PathBuf,
    dir: TempDir,
}

impl NotifierProcess {
    /// Starts the notifier (app id `notifier`) with the components in `resources`; ready
    /// once it has told its sidecar what it subscribes to.
    pub async fn spawn(registry: &Path, resources: &Path) -> anyhow::Result<NotifierProcess> {
        let dir = TempDir::new("notifier");
        let port = free_port();
        let sidecar = Self::launch(registry, resources, port, &dir).await?;
        Ok(NotifierProcess {
            sidecar,
            url: format!("http://127.0.0.1:{port}"),
            port,
            registry: registry.to_path_buf(),
            resources: resources.to_path_buf(),
            dir,
        })
    }

    async fn launch(
        registry: &Path,
        resources: &Path,
        port: u16,
        dir: &TempDir,
    ) -> anyhow::Result<SidecarProcess> {
        let inbox = dir.path().join("notifications.jsonl");
        let bin = workspace_bin("notifier").display().to_string();
        let sidecar = SidecarBuilder::new(workspace_bin("sidecar"), "notifier", registry)
            .resources(resources)
            .app_port(port)
            .env("NOTIFIER_INBOX", &inbox.display().to_string())
            .command(&[&bin, "--log-level", "warning"])
            .spawn()
            .await?;
        sidecar.subscribed(Duration::from_secs(20)).await?;
        Ok(sidecar)
    }

    /// Stops (SIGSTOP) the notifier, not its sidecar: deliveries to it hang, pending.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal_app(appkit::process::Signal::Stop)
    }

    fn signal_app(&self, signal: appkit::process::Signal) -> anyhow::Result<()> {
        let pids = self.sidecar.app_pids();
        anyhow::ensure!(!pids.is_empty(), "the notifier's process is not found");
        for pid in pids {
            appkit::process::send_signal(pid, signal)?;
        }
        Ok(())
    }

    /// `kill -9` of the notifier's sidecar and then of the notifier (the sidecar first, so
    /// it cannot wind down when its app goes), and both started again on the same port and
    /// file: what they had not finished must come again.
    pub async fn crash_and_restart(&mut self) -> anyhow::Result<()> {
        let apps = self.sidecar.app_pids();
        anyhow::ensure!(!apps.is_empty(), "the notifier's process is not found");
        self.sidecar.kill()?;
        for pid in apps {
            appkit::process::send_signal(pid, appkit::process::Signal::Kill)?;
        }
        self.sidecar = Self::launch(&self.registry, &self.resources, self.port, &self.dir).await?;
        Ok(())
    }

    /// The notifier's file of events (what `ledger --events` reads).
    pub fn inbox(&self) -> PathBuf {
        self.dir.path().join("notifications.jsonl")
    }

    /// `GET /notifications`.
    pub async fn counts(&self) -> anyhow::Result<Value> {
        Ok(reqwest::get(format!("{}/notifications", self.url))
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// Waits until the notifier has heard at least `confirmed` bookings and `cancelled`
    /// cancellations (distinct), for at most `timeout`, and then (unless `settle` is zero)
    /// until its counts stay the same for `settle`: an event that should not come (of a
    /// change that did not commit, or a repeat) has that long to show.
    pub async fn heard(
        &self,
        confirmed: usize,
        cancelled: usize,
        timeout: Duration,
        settle: Duration,
    ) -> anyhow::Result<Value> {
        let what = format!("the notifier to hear {confirmed} bookings, {cancelled} cancellations");
        let mut last = wait_until(&what, timeout, || async {
            let c = self.counts().await.ok()?;
            let n = |k: &str| c[k].as_u64().unwrap_or(0) as usize;
            (n("confirmed") >= confirmed && n("cancelled") >= cancelled).then_some(c)
        })
        .await?;
        while !settle.is_zero() {
            tokio::time::sleep(settle).await;
            let now = self.counts().await?;
            if now == last {
                return Ok(now);
            }
            last = now;
        }
        Ok(last)
    }
}
