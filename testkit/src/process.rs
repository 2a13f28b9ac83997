//! Process-level pieces of a harness: free ports, temporary folders, child processes that
//! stop when dropped, and polling with a deadline.

use std::future::Future;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A loopback port for a process that must be told its port up front (sidecars pick their
/// own and report them). Binding to 0 and releasing is racy: the kernel hands the same
/// ephemeral port to the next test process that asks. So ports come from below the
/// ephemeral range, where the kernel never hands one out, and each is reserved for the
/// life of this process by a lock on a file named for it; the lock goes with the process,
/// however it ends, so concurrent test processes never share a port.
pub fn free_port() -> u16 {
    static HELD: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("testkit-ports");
    std::fs::create_dir_all(&dir).expect("creating the port reservation folder");
    let low = ephemeral_low().clamp(11_000, 65_000);
    let span = u64::from(low - 10_000);
    for _ in 0..1000 {
        let port = 10_000 + (RandomState::new().build_hasher().finish() % span) as u16;
        let Ok(file) = std::fs::File::create(dir.join(port.to_string())) else {
            continue;
        };
        if file.try_lock().is_err() {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            HELD.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(file);
            return port;
        }
    }
    panic!("no free loopback port below the ephemeral range after 1000 tries")
}

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A folder removed (with its contents) on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "testkit-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("creating a temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `check` every 20 ms until it yields a value or `timeout` passes.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stops `child`: SIGTERM, then SIGKILL once `grace` has passed; returns how it ended.
pub(crate) fn stop_child(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    let _ = appkit::process::send_signal(child.id(), appkit::process::Signal::Term);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().ok()
}

/// A child process that is stopped (SIGTERM, then SIGKILL after 10 s) when dropped.
pub struct ChildGuard {
    pub name: String,
    child: Child,
}

impl ChildGuard {
    pub fn spawn(name: &str, cmd: &mut std::process::Command) -> anyhow::Result<ChildGuard> {
        let child = cmd
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {name}: {e}"))?;
        Ok(ChildGuard {
            name: name.to_string(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if stop_child(&mut self.child, Duration::from_secs(10)).is_none() {
            eprintln!("{} could not be stopped", self.name);
        }
    }
}
