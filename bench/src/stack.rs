//! Starting one configuration of the study as real processes (sidecars, services, a Redis
//! when the row wants one), on free loopback ports, through the testkit's launchers, and
//! stopping all of it afterwards. What the bench adds is which processes it measures.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use testkit::{ChildGuard, SidecarBuilder, SidecarProcess};

use crate::load::wait_port;
use crate::procstat;

/// Where the workspace's release binaries are: beside this one.
pub fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe.parent().context("bin dir")?.join(name);
    anyhow::ensure!(
        p.exists(),
        "{} is missing: run scripts/bench, which builds it",
        p.display()
    );
    Ok(p)
}

/// How the binaries beside this one were built: `scripts/build --pgo` leaves a `PGO` file
/// saying so (and what it trained them on) beside those it builds.
pub fn build_kind() -> String {
    match bin("PGO").and_then(|p| Ok(std::fs::read_to_string(p)?)) {
        Ok(how) => how.trim().to_string(),
        Err(_) => "release".into(),
    }
}

/// `sidecar run` for `app_id` from the release build, on `config.yaml` (tracing and
/// metrics off) and the components in `resources`.
pub fn sidecar(app_id: &str, registry: &Path, resources: &Path) -> anyhow::Result<SidecarBuilder> {
    Ok(SidecarBuilder::new(bin("sidecar")?, app_id, registry)
        .resources(resources)
        .flag("--config", "config.yaml"))
}

/// The processes of one configuration; dropping it stops them, all at once.
#[derive(Default)]
pub struct Running {
    sidecars: Vec<SidecarProcess>,
    apps: Vec<ChildGuard>,
    /// Every process whose CPU and memory are reported, sidecars and apps alike.
    pub measured: Vec<(String, u32)>,
}

impl Running {
    /// Starts a sidecar (`sidecar()` and then the row's app, env and command) and waits
    /// until it serves and, when it has an app, until the app listens on `app_port`. The
    /// sidecar and its app are measured.
    pub fn start(
        &mut self,
        rt: &tokio::runtime::Runtime,
        builder: SidecarBuilder,
        app_port: Option<u16>,
    ) -> anyhow::Result<&SidecarProcess> {
        let sidecar = rt.block_on(builder.spawn())?;
        if let Some(port) = app_port {
            wait_port(port, Duration::from_secs(60))
                .with_context(|| format!("{} never listened", sidecar.app_id))?;
        }
        Ok(self.adopt(sidecar, app_port.is_some()))
    }

    /// Measures and, when dropped, stops a sidecar started elsewhere (on a host of the
    /// test bed), and its app when `with_app`.
    pub fn adopt(&mut self, sidecar: SidecarProcess, with_app: bool) -> &SidecarProcess {
        let app_id = sidecar.app_id.clone();
        self.measured
            .push((format!("{app_id}-sidecar"), sidecar.pid()));
        if with_app {
            for child in sidecar.app_pids() {
                self.measured.push((app_id.clone(), child));
            }
        }
        self.sidecars.push(sidecar);
        self.sidecars.last().expect("just pushed")
    }

    /// Measures and, when dropped, stops a process started elsewhere.
    pub fn adopt_app(&mut self, name: &str, app: ChildGuard) {
        self.measured.push((name.to_string(), app.pid()));
        self.apps.push(app);
    }

    /// Starts an app with no sidecar and waits until it listens.
    pub fn app(&mut self, name: &str, port: u16, cmd: &mut Command) -> anyhow::Result<()> {
        let app = ChildGuard::spawn(
            name,
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit()),
        )?;
        self.measured.push((name.to_string(), app.pid()));
        self.apps.push(app);
        wait_port(port, Duration::from_secs(60)).with_context(|| format!("{name} never listened"))
    }

    pub fn peak_rss(&self) -> std::collections::BTreeMap<String, f64> {
        self.measured
            .iter()
            .filter_map(|(n, pid)| Some((n.clone(), procstat::peak_rss_mib(*pid)?)))
            .collect()
    }
}

impl Drop for Running {
    /// Every process gets SIGTERM first, so they wind down together; each handle then
    /// waits for its own (and kills it if it lingers).
    fn drop(&mut self) {
        let pids = self.sidecars.iter().map(SidecarProcess::pid);
        for pid in pids.chain(self.apps.iter().map(ChildGuard::pid)) {
            let _ = appkit::process::send_signal(pid, appkit::process::Signal::Term);
        }
    }
}
