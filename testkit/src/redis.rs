//! A real `redis-server` on a free loopback port, stopped on drop: without persistence, or
//! with its append-only file on, so that it can be restarted and keep what it acknowledged.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::netns::Host;
use crate::process::{ChildGuard, TempDir, free_port, wait_until};

pub struct RedisServer {
    pub port: u16,
    child: Child,
    dir: TempDir,
    durable: bool,
}

/// The settings every test Redis runs with: `port`, files in `dir`, no snapshots; with
/// `durable`, the append-only file synced on every write, else nothing kept on disk.
fn configure(cmd: &mut Command, port: u16, dir: &Path, durable: bool) {
    let aof: &[&str] = if durable {
        &["--appendonly", "yes", "--appendfsync", "always"]
    } else {
        &["--appendonly", "no"]
    };
    cmd.args(["--port", &port.to_string(), "--save", ""])
        .args(aof)
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
}

fn spawn(port: u16, dir: &TempDir, durable: bool) -> anyhow::Result<Child> {
    let mut cmd = Command::new("redis-server");
    cmd.args(["--bind", "127.0.0.1"]);
    configure(&mut cmd, port, dir.path(), durable);
    cmd.spawn()
        .map_err(|e| anyhow::anyhow!("starting redis-server (apt-get install redis-server): {e}"))
}

/// A `redis-server` on `host` of a test bed, on port 6379 of its loopback and its address
/// (reachable from the other hosts), with files in `dir`; stopped when the guard drops.
pub fn spawn_on(host: &Host, dir: &Path, durable: bool) -> anyhow::Result<ChildGuard> {
    let mut cmd = host.command("redis-server");
    cmd.args(["--protected-mode", "no", "--bind", "127.0.0.1"])
        .arg(host.ip.to_string());
    configure(&mut cmd, 6379, dir, durable);
    ChildGuard::spawn("redis-server", &mut cmd)
}

impl RedisServer {
    /// A Redis that keeps nothing on disk.
    pub async fn start() -> anyhow::Result<RedisServer> {
        Self::start_with(false).await
    }

    /// A Redis whose append-only file is synced on every write, so a restart keeps
    /// everything it acknowledged.
    pub async fn start_durable() -> anyhow::Result<RedisServer> {
        Self::start_with(true).await
    }

    async fn start_with(durable: bool) -> anyhow::Result<RedisServer> {
        let dir = TempDir::new("redis");
        let port = free_port();
        let child = spawn(port, &dir, durable)?;
        let server = RedisServer {
            port,
            child,
            dir,
            durable,
        };
        wait_until("redis PING", Duration::from_secs(5), || ping(port)).await?;
        Ok(server)
    }

    /// Kills the server (SIGKILL: no goodbye, no final save) and starts it again on the
    /// same port and folder, waiting until it answers.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(self.port, &self.dir, self.durable)?;
        let port = self.port;
        wait_until(
            "redis PING after a restart",
            Duration::from_secs(10),
            || ping(port),
        )
        .await
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server (SIGSTOP) until the guard drops: its connections stay open and
    /// nothing comes back on them, as across a cut cable.
    pub fn silence(&self) -> Silenced {
        let pid = self.pid();
        appkit::process::send_signal(pid, appkit::process::Signal::Stop).expect("SIGSTOP redis");
        Silenced { pid }
    }

    /// Runs one command (inline form) and returns the raw reply text.
    pub async fn command(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).await?;
        let mut buf = vec![0u8; 64 * 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await??;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Whether `key` exists now (`EXISTS` answers the integer reply `:1` or `:0`).
    pub async fn exists(&self, key: &str) -> anyhow::Result<bool> {
        let reply = self.command(&["EXISTS", key]).await?;
        match reply.trim_end() {
            ":1" => Ok(true),
            ":0" => Ok(false),
            other => anyhow::bail!("EXISTS {key} answered {other:?}"),
        }
    }
}

async fn ping(port: u16) -> Option<()> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(b"PING\r\n").await.ok()?;
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).await.ok()?;
    buf[..n].starts_with(b"+PONG").then_some(())
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stopped Redis, continued (SIGCONT) on drop, also when a test fails.
pub struct Silenced {
    pid: u32,
}

impl Drop for Silenced {
    fn drop(&mut self) {
        let _ = appkit::process::send_signal(self.pid, appkit::process::Signal::Cont);
    }
}
