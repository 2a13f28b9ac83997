//! Starting one configuration of the study as real processes (sidecars, services, a Redis
//! when the row wants one), on free loopback ports, and stopping all of it afterwards.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;

use crate::load::wait_port;
use crate::procstat;

/// A scratch folder removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> anyhow::Result<Scratch> {
        let p = std::env::temp_dir().join(format!(
            "bench-{tag}-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&p)?;
        Ok(Scratch(p))
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

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

/// The processes of one configuration. Dropping it stops them (SIGTERM, then SIGKILL).
#[derive(Default)]
pub struct Running {
    children: Vec<(String, Child)>,
    /// Every process whose CPU and memory are reported, sidecars and apps alike.
    pub measured: Vec<(String, u32)>,
}

impl Running {
    pub fn spawn(&mut self, name: &str, cmd: &mut Command) -> anyhow::Result<u32> {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let pid = child.id();
        self.children.push((name.to_string(), child));
        Ok(pid)
    }

    /// Starts `sidecar run` for `app_id` with `command` as its app, and waits until the app
    /// listens on `app_port`. Both the sidecar and the app are measured.
    pub fn sidecar_with_app(
        &mut self,
        app_id: &str,
        app_port: u16,
        resources: &Path,
        registry: &Path,
        env: &[(&str, String)],
        command: &[String],
    ) -> anyhow::Result<()> {
        let mut cmd = Command::new(bin("sidecar")?);
        cmd.args([
            "run",
            "--app-id",
            app_id,
            "--app-port",
            &app_port.to_string(),
            "--log-level",
            "warn",
        ])
        .arg("--resources-path")
        .arg(resources)
        .arg("--registry-dir")
        .arg(registry)
        .arg("--config")
        .arg("config.yaml")
        .arg("--")
        .args(command);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let pid = self.spawn(&format!("{app_id}-sidecar"), &mut cmd)?;
        self.measured.push((format!("{app_id}-sidecar"), pid));
        wait_port(app_port, Duration::from_secs(60))
            .with_context(|| format!("{app_id} never listened"))?;
        for child in procstat::children(pid) {
            self.measured.push((app_id.to_string(), child));
        }
        Ok(())
    }

    /// Starts an app with no sidecar and waits until it listens.
    pub fn app(&mut self, name: &str, port: u16, cmd: &mut Command) -> anyhow::Result<()> {
        let pid = self.spawn(name, cmd)?;
        self.measured.push((name.to_string(), pid));
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
    fn drop(&mut self) {
        for (_, child) in &self.children {
            // SAFETY: kill(2) on a child we spawned.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        }
        for (name, child) in &mut self.children {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    eprintln!("bench: {name} did not stop; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A `redis-server` of our own, with no persistence, on a free port.
pub struct Redis {
    pub port: u16,
    pub pid: u32,
    child: Child,
    _dir: Scratch,
}

impl Redis {
    pub fn start() -> anyhow::Result<Redis> {
        let dir = Scratch::new("redis")?;
        let port = free_port()?;
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (apt-get install redis-server)")?;
        wait_port(port, Duration::from_secs(10))?;
        Ok(Redis {
            port,
            pid: child.id(),
            child,
            _dir: dir,
        })
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn component(name: &str, kind: &str, meta: &[(&str, String)]) -> String {
    let mut s = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: {kind}\n  version: v1\n  metadata:"
    );
    if meta.is_empty() {
        s.push_str(" []\n");
    } else {
        s.push('\n');
        for (k, v) in meta {
            s.push_str(&format!("  - name: {k}\n    value: \"{v}\"\n"));
        }
    }
    s
}

/// Writes the components of a row: SQLite (in `dir`) or Redis state, with the in-process
/// lock or lock.redis.
/// State and lock components: SQLite (with `sqlite_sync` as its `synchronous`) and the
/// in-process lock, or Redis for both.
pub fn write_components(dir: &Path, redis: Option<u16>, sqlite_sync: &str) -> anyhow::Result<()> {
    match redis {
        None => {
            let db = dir.join("state.db").display().to_string();
            std::fs::write(
                dir.join("statestore.yaml"),
                component(
                    "statestore",
                    "state.sqlite",
                    &[
                        ("connectionString", db),
                        ("synchronous", sqlite_sync.to_string()),
                    ],
                ),
            )?;
            std::fs::write(
                dir.join("lockstore.yaml"),
                component("lockstore", "lock.in-memory", &[]),
            )?;
        }
        Some(port) => {
            let host = format!("127.0.0.1:{port}");
            std::fs::write(
                dir.join("statestore.yaml"),
                component("statestore", "state.redis", &[("redisHost", host.clone())]),
            )?;
            std::fs::write(
                dir.join("lockstore.yaml"),
                component("lockstore", "lock.redis", &[("redisHost", host)]),
            )?;
        }
    }
    Ok(())
}
