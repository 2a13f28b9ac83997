//! Several hosts on one machine: a network namespace per host, each joined by a veth pair
//! to a bridge in a namespace of its own (the switch), so that no address, route or packet
//! of the test bed touches the machine's own network. Made by the test (it needs root, as
//! CI runs), removed when dropped, and what a killed run left behind is removed by the next.
//!
//! Processes run on a host through `ip netns exec` (which also gives them the host's own
//! `/etc/hosts` from `/etc/netns/<ns>/hosts`, for DNS names); the test's own calls run on a
//! host through [`Host::run`], on a thread that has entered the host's network namespace
//! only (so it reaches the host's addresses, but reads the machine's `/etc/hosts`).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context as _;

/// Namespace names start with this, then the pid of the test process that made them.
const PREFIX: &str = "tb";

/// The test bed: the switch and its hosts, all removed when dropped.
pub struct Net {
    switch: String,
    pub hosts: Vec<Host>,
    /// The registry secret every host's sidecars share.
    secret: String,
}

/// One host of the test bed: a network namespace with one cable to the switch.
#[derive(Clone)]
pub struct Host {
    /// The name the test gave it.
    pub name: String,
    /// Its namespace.
    pub ns: String,
    pub ip: Ipv4Addr,
    /// Its cable's end on the switch.
    port: String,
    switch: String,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    anyhow::ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Removes the namespaces of test processes that are gone (killed before they cleaned up).
fn sweep_leftovers() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !PathBuf::from(format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
            let _ = std::fs::remove_dir_all(format!("/etc/netns/{name}"));
        }
    }
}

impl Net {
    /// Hosts named `names`, at 10.77.0.1, .2, … on one switch, each with a default route
    /// through its cable (so multicast and "which address do I send from" work as on a
    /// LAN). Fails with the reason when namespaces cannot be made (not root, no iproute2).
    pub fn new(names: &[&str]) -> anyhow::Result<Net> {
        static NETS: AtomicUsize = AtomicUsize::new(0);
        sweep_leftovers();
        let tag = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NETS.fetch_add(1, Ordering::Relaxed)
        );
        let switch = format!("{tag}-sw");
        ip(&["netns", "add", &switch]).context("making a network namespace (needs root)")?;
        let mut net = Net {
            switch: switch.clone(),
            hosts: Vec::new(),
            secret: format!("{:032x}{:032x}", random_u128()?, random_u128()?),
        };
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        // Multicast (mDNS) reaches every port, as on a plain LAN switch.
        ip(&[
            "-n",
            &switch,
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        for (i, name) in names.iter().enumerate() {
            let ns = format!("{tag}-{name}");
            let port = format!("p{i}");
            let host_ip = Ipv4Addr::new(10, 77, 0, i as u8 + 1);
            ip(&["netns", "add", &ns])?;
            net.hosts.push(Host {
                name: name.to_string(),
                ns: ns.clone(),
                ip: host_ip,
                port: port.clone(),
                switch: switch.clone(),
            });
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", &switch,
            ])?;
            ip(&["-n", &switch, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &switch, "link", "set", &port, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{host_ip}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "route", "add", "default", "dev", "eth0"])?;
        }
        Ok(net)
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name} in this test bed"))
    }

    /// A registry folder in `dir` for one host's sidecars, holding the secret every host of
    /// this test bed shares (as a user copies `.secret` to each machine).
    pub fn registry(&self, dir: &std::path::Path) -> anyhow::Result<PathBuf> {
        use std::io::Write as _;
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        let reg = dir.join("registry");
        std::fs::DirBuilder::new().mode(0o700).create(&reg)?;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(reg.join(".secret"))?
            .write_all(self.secret.as_bytes())?;
        Ok(reg)
    }

    /// Gives every host an `/etc/hosts` naming `names` (host name → test bed host).
    pub fn hosts_file(&self, names: &[(&str, &str)]) -> anyhow::Result<()> {
        let mut text = String::from("127.0.0.1 localhost\n");
        for (name, host) in names {
            text.push_str(&format!("{} {name}\n", self.host(host).ip));
        }
        for h in &self.hosts {
            let dir = PathBuf::from(format!("/etc/netns/{}", h.ns));
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("hosts"), &text)?;
        }
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for h in &self.hosts {
            let _ = ip(&["netns", "del", &h.ns]);
            let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", h.ns));
        }
        let _ = ip(&["netns", "del", &self.switch]);
    }
}

impl Host {
    /// `program` to run on this host.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns]).arg(program);
        cmd
    }

    /// Unplugs this host's cable at the switch: its packets, and everyone's to it, are
    /// lost without a word, as when a host is cut off.
    pub fn cut(&self) -> anyhow::Result<()> {
        ip(&["-n", &self.switch, "link", "set", &self.port, "down"])
    }

    /// Plugs the cable back in.
    pub fn reconnect(&self) -> anyhow::Result<()> {
        ip(&["-n", &self.switch, "link", "set", &self.port, "up"])
    }

    /// Waits (up to 30 s) until `GET http://127.0.0.1:{port}{path}` on this host answers
    /// `status`: a sidecar's or an app's health.
    pub async fn wait_for(&self, port: u16, path: &str, status: u16) -> anyhow::Result<()> {
        let url = format!("http://127.0.0.1:{port}{path}");
        self.run(move || async move {
            let http = reqwest::Client::new();
            crate::wait_until(&url, std::time::Duration::from_secs(30), || {
                let r = http.get(&url).send();
                async move { r.await.ok().filter(|r| r.status() == status).map(|_| ()) }
            })
            .await
        })
        .await?
    }

    /// Runs `work` on this host: on a thread of its own that has entered the host's network
    /// namespace, with a runtime of its own, so every socket it opens is the host's.
    pub async fn run<F, Fut, T>(&self, work: F) -> anyhow::Result<T>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T>,
        T: Send + 'static,
    {
        let path = format!("/var/run/netns/{}", self.ns);
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let entered = enter(&path).and_then(|()| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("a runtime on the host")
            });
            let _ = tx.send(entered.map(|rt| rt.block_on(work())));
        });
        rx.await.context("the host's thread ended")?
    }
}

/// 128 random bits from the kernel.
fn random_u128() -> anyhow::Result<u128> {
    use std::io::Read as _;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("reading /dev/urandom")?;
    Ok(u128::from_le_bytes(b))
}

/// Moves the calling thread into the network namespace at `path`.
#[allow(unsafe_code)]
fn enter(path: &str) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd as _;
    let file = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
    // SAFETY: setns on a valid namespace descriptor changes only this thread's namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    anyhow::ensure!(
        rc == 0,
        "entering {path}: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}
