//! The local name registry: how one sidecar finds another's internal port by app id.
//!
//! Each running sidecar writes `<dir>/<app-id>.<pid>.json` and removes it on shutdown.
//! The directory is per user by default; a test or a second stack passes its own
//! (`--registry-dir` / `SIDECAR_REGISTRY_DIR`) so that stacks side by side never see each
//! other. Several files for one app id (replicas) are used round-robin. Lookups are cached
//! for a short time so the hot path reads no files.
//!
//! The folder is private to its user: created 0700, and refused when it is a symlink,
//! another user's, or open to others. It holds the registry's secret (`.secret`, 0600),
//! which a sidecar sends on every call to a peer's internal port and requires on every
//! call it takes there: only sidecars that can read this folder reach each other's apps.
//! Entries are read without following links, only from regular files, and only so far.

use std::fs::{self, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cache::LookupCache;

const CACHE_TTL: Duration = Duration::from_secs(2);

/// App ids whose ports are cached at once: past it, stale answers are dropped first, and
/// a full cache of fresh ones takes no more (those lookups read the folder each time).
const CACHE_CAP: usize = 1024;

/// A registration is a few hundred bytes; a larger file is not one.
const ENTRY_MAX: u64 = 4096;

const SECRET_FILE: &str = ".secret";
/// A secret is 64 hex digits; a larger file is not one.
const SECRET_MAX: u64 = 256;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub app_id: String,
    pub pid: u32,
    pub internal_port: u16,
    pub http_port: u16,
    pub grpc_port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_port: Option<u16>,
    /// When the sidecar's process started (set by `register`): an entry whose pid now
    /// belongs to another process is stale, not alive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<u64>,
}

impl Entry {
    /// Whether the sidecar that wrote this entry still runs.
    fn is_live(&self) -> bool {
        match self.started {
            Some(started) => appkit::process::start_time(self.pid) == Some(started),
            None => appkit::process::is_alive(self.pid),
        }
    }
}

pub struct Registry {
    dir: PathBuf,
    /// App id → internal ports of its live sidecars.
    cache: LookupCache<Vec<u16>>,
    /// Read (or made) by `open`; a registry that was never opened has none.
    secret: Option<String>,
}

/// Removes the registration file when dropped.
pub struct Registration {
    file: PathBuf,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

/// `$XDG_RUNTIME_DIR` (private to the user by design) when set, else a per-user folder in
/// the temp directory.
pub fn default_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(runtime) => PathBuf::from(runtime).join("dapr-sidecar-registry"),
        None => std::env::temp_dir().join(format!(
            "dapr-sidecar-registry-{}",
            appkit::process::user_id()
        )),
    }
}

/// Makes `dir` a folder only this user can enter, or says why it cannot be one.
fn make_private(dir: &Path) -> io::Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir.parent().unwrap_or(dir))?;
            return make_private(dir);
        }
        other => other?,
    }
    let refuse = |why: String| {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("registry folder {}: {why}", dir.display()),
        ))
    };
    // Checked and closed through one open handle, so the folder checked is the folder
    // changed even if the name is swapped in between.
    let folder = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
    {
        Ok(folder) => folder,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
            return refuse("is not a folder (a symlink is refused too)".into());
        }
        Err(e) => return Err(e),
    };
    let meta = folder.metadata()?;
    if meta.uid() != appkit::process::user_id() {
        return refuse(format!("belongs to user {}, not to this one", meta.uid()));
    }
    if meta.mode() & 0o077 != 0 {
        // Ours, but open to others (made by an older version, or by hand): close it.
        folder.set_permissions(fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Opens `path` for reading only if it is a regular file of ours, not a link, FIFO or
/// device, and reads at most `max` bytes of it.
fn read_private(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() || meta.uid() != appkit::process::user_id() || meta.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a registry file", path.display()),
        ));
    }
    let mut out = Vec::with_capacity(meta.len() as usize);
    file.take(max).read_to_end(&mut out)?;
    Ok(out)
}

/// Writes `bytes` to a fresh file next to `path` (never an existing one, nor through a
/// link), then puts it in place: by rename, or with `no_replace`, only where nothing is.
fn write_new(path: &Path, bytes: &[u8], no_replace: bool) -> io::Result<()> {
    // A name no other writer uses, in this process or another; `create_new` refuses
    // anything already there, a planted link included.
    static WRITES: AtomicUsize = AtomicUsize::new(0);
    let tmp = path.with_file_name(format!(
        ".{}.{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("entry"),
        std::process::id(),
        WRITES.fetch_add(1, Ordering::Relaxed)
    ));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    let placed = if no_replace {
        fs::hard_link(&tmp, path)
    } else {
        fs::rename(&tmp, path)
    };
    let _ = fs::remove_file(&tmp);
    placed
}

impl Registry {
    pub fn new(dir: PathBuf) -> Self {
        Registry {
            dir,
            cache: LookupCache::new(CACHE_TTL, CACHE_CAP),
            secret: None,
        }
    }

    /// The registry in `dir`, made private and with its secret read, created by the first
    /// sidecar that needs it.
    pub fn open(dir: PathBuf) -> io::Result<Self> {
        make_private(&dir)?;
        let path = dir.join(SECRET_FILE);
        let secret = match read_private(&path, SECRET_MAX) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut random = [0u8; 32];
                fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
                let fresh: String = random.iter().map(|b| format!("{b:02x}")).collect();
                match write_new(&path, fresh.as_bytes(), true) {
                    // Another sidecar made it first: theirs is the one.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    other => other?,
                }
                read_private(&path, SECRET_MAX)?
            }
            Err(e) => return Err(e),
        };
        let secret = String::from_utf8(secret)
            .ok()
            .filter(|s| s.len() >= 32 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is not a registry secret", path.display()),
                )
            })?;
        Ok(Registry {
            secret: Some(secret),
            ..Registry::new(dir)
        })
    }

    /// What peers of this registry send to each other's internal ports.
    pub fn secret(&self) -> Option<&str> {
        self.secret.as_deref()
    }

    /// Where the secret is kept.
    pub fn secret_file(&self) -> PathBuf {
        self.dir.join(SECRET_FILE)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn register(&self, entry: &Entry) -> io::Result<Registration> {
        make_private(&self.dir)?;
        let file = self
            .dir
            .join(format!("{}.{}.json", entry.app_id, entry.pid));
        let entry = Entry {
            started: appkit::process::start_time(entry.pid),
            ..entry.clone()
        };
        let bytes = serde_json::to_vec(&entry).map_err(io::Error::other)?;
        write_new(&file, &bytes, false)?;
        Ok(Registration { file })
    }

    /// Every live registration of `app_id`; files of dead processes are removed.
    pub fn entries(&self, app_id: &str) -> Vec<Entry> {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let prefix = format!("{app_id}.");
        let mut out = Vec::new();
        for file in dir.filter_map(Result::ok) {
            let name = file.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with(&prefix) || !name.ends_with(".json") {
                continue;
            }
            let Ok(text) = read_private(&file.path(), ENTRY_MAX) else {
                continue;
            };
            let Ok(entry) = serde_json::from_slice::<Entry>(&text) else {
                continue;
            };
            if entry.app_id != app_id {
                continue;
            }
            if entry.is_live() {
                out.push(entry);
            } else {
                let _ = std::fs::remove_file(file.path());
            }
        }
        out.sort_by_key(|e| e.pid);
        out
    }

    /// The internal ports of the live sidecars of `app_id` (name resolution takes turns
    /// between them). An app id with no live sidecar is not cached (a peer that starts is
    /// found at once, and unknown ids take no memory); the folder is read outside the lock,
    /// so a slow read holds up no other lookup.
    pub fn ports(&self, app_id: &str) -> Vec<u16> {
        if let Some(ports) = self.cache.get(app_id) {
            return ports;
        }
        let now = Instant::now();
        let ports: Vec<u16> = self
            .entries(app_id)
            .iter()
            .map(|e| e.internal_port)
            .collect();
        if !ports.is_empty() {
            self.cache.put(app_id, ports.clone(), now);
        }
        ports
    }

    /// Drops the cached answer after a failed connection, so the next call reads again.
    pub fn forget(&self, app_id: &str) {
        self.cache.forget(app_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("registry-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let _ = fs::remove_file(&dir);
        dir
    }

    fn entry(app_id: &str, pid: u32, internal_port: u16) -> Entry {
        Entry {
            app_id: app_id.into(),
            pid,
            internal_port,
            http_port: 1,
            grpc_port: 2,
            app_port: None,
            started: None,
        }
    }

    /// A fresh registry where this process is `svc`, on internal port 4242.
    fn with_live_svc(name: &str) -> (PathBuf, Registry, Registration) {
        let dir = scratch(name);
        let reg = Registry::open(dir.clone()).unwrap();
        let live = reg
            .register(&entry("svc", std::process::id(), 4242))
            .unwrap();
        (dir, reg, live)
    }

    #[test]
    fn the_folder_and_its_secret_are_private_and_shared() {
        let dir = scratch("private");
        let a = Registry::open(dir.clone()).unwrap();
        let b = Registry::open(dir.clone()).unwrap();
        let secret = a.secret().unwrap();
        assert_eq!(secret.len(), 64);
        assert_eq!(b.secret(), Some(secret), "one secret per registry");
        let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(SECRET_FILE)), 0o600);
        // A folder of ours left open to others is closed.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        Registry::open(dir.clone()).unwrap();
        assert_eq!(mode(&dir), 0o700);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_folder_that_is_a_link_or_someone_elses_is_refused() {
        let real = scratch("real");
        fs::create_dir(&real).unwrap();
        let link = scratch("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = Registry::open(link.clone())
            .err()
            .expect("a symlinked folder");
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
        fs::remove_file(&link).unwrap();
        let file = scratch("file");
        fs::write(&file, b"").unwrap();
        let err = Registry::open(file.clone()).err().expect("a plain file");
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
        fs::remove_file(&file).unwrap();
        // Another user's folder (root can hand one over; others cannot, and skip this part).
        if std::os::unix::fs::chown(&real, Some(65534), Some(65534)).is_ok() {
            let err = Registry::open(real.clone())
                .err()
                .expect("another user's folder");
            assert!(err.to_string().contains("belongs to user 65534"), "{err}");
        }
        fs::remove_dir_all(real).unwrap();
    }

    /// Whatever else lies in the folder under an entry's name (a FIFO, a link to a device,
    /// a huge file, a link planted where the secret goes) is passed over, never followed,
    /// never waited on.
    #[test]
    fn planted_files_are_passed_over() {
        let (dir, _reg, _live) = with_live_svc("planted");
        let me = std::process::id();
        let fifo = dir.join(format!("svc.{}.json", me + 1));
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        std::os::unix::fs::symlink("/dev/zero", dir.join(format!("svc.{}.json", me + 2))).unwrap();
        let mut huge = serde_json::to_vec(&entry("svc", me, 1)).unwrap();
        huge.resize(ENTRY_MAX as usize + 1, b' ');
        fs::write(dir.join(format!("svc.{}.json", me + 3)), huge).unwrap();
        // A link to a file that would be a valid, live entry: only the link is refused.
        let outside = scratch("planted-target");
        fs::write(&outside, serde_json::to_vec(&entry("svc", me, 7)).unwrap()).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join(format!("svc.{}.json", me + 4))).unwrap();
        // The FIFO must not be waited on: read in a thread, with a bound.
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = Registry::new(dir.clone());
        std::thread::spawn(move || tx.send(reader.entries("svc")).unwrap());
        let found = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("entries() waited on a planted FIFO");
        let ports: Vec<u16> = found.iter().map(|e| e.internal_port).collect();
        assert_eq!(ports, [4242]);

        // A secret behind a link to a file holding a well-formed secret is refused too.
        let other = scratch("planted-secret");
        fs::create_dir(&other).unwrap();
        fs::set_permissions(&other, fs::Permissions::from_mode(0o700)).unwrap();
        let secret = scratch("planted-secret-target");
        fs::write(&secret, "ab".repeat(32)).unwrap();
        std::os::unix::fs::symlink(&secret, other.join(SECRET_FILE)).unwrap();
        assert!(
            Registry::open(other.clone()).is_err(),
            "a secret behind a link"
        );
        for f in [outside, secret] {
            fs::remove_file(f).unwrap();
        }
        fs::remove_dir_all(other).unwrap();
        fs::remove_dir_all(dir).unwrap();
    }

    /// An entry whose pid now names another process (the sidecar died, the pid was used
    /// again) is stale: passed over and removed, never called.
    #[test]
    fn an_entry_whose_pid_was_reused_is_stale() {
        let (dir, reg, _live) = with_live_svc("reused");
        let me = std::process::id();
        let stale = Entry {
            started: appkit::process::start_time(me).map(|t| t + 1),
            ..entry("old", me, 9)
        };
        let file = dir.join(format!("old.{me}.json"));
        fs::write(&file, serde_json::to_vec(&stale).unwrap()).unwrap();
        assert!(
            reg.entries("old").is_empty(),
            "a reused pid counted as alive"
        );
        assert!(!file.exists(), "the stale entry is removed");
        assert_eq!(
            reg.ports("svc"),
            [4242],
            "the live one, with its start time"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unknown_app_ids_take_no_cache_room() {
        let dir = std::env::temp_dir().join(format!("registry-unknown-{}", std::process::id()));
        let r = Registry::new(dir.clone());
        for i in 0..2000 {
            assert!(r.ports(&format!("nobody-{i}")).is_empty());
        }
        assert!(r.cache.is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn register_resolve_and_unregister() {
        let dir = std::env::temp_dir().join(format!("reg-test-{}", std::process::id()));
        let reg = Registry::new(dir.clone());
        let entry = Entry {
            app_id: "svc".into(),
            pid: std::process::id(),
            internal_port: 4242,
            http_port: 1,
            grpc_port: 2,
            app_port: None,
            started: None,
        };
        let handle = reg.register(&entry).unwrap();
        assert_eq!(reg.ports("svc"), [4242]);
        assert!(reg.ports("other").is_empty());
        drop(handle);
        reg.forget("svc");
        assert!(reg.ports("svc").is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
