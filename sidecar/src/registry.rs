//! The local name registry: how one sidecar finds another's internal port by app id.
//!
//! Each running sidecar writes `<dir>/<app-id>.<pid>.json` and removes it on shutdown.
//! The directory is per user by default; a test or a second stack passes its own
//! (`--registry-dir` / `SIDECAR_REGISTRY_DIR`) so that stacks side by side never see each
//! other. Several files for one app id (replicas) are used round-robin. Lookups are cached
//! for a short time so the hot path reads no files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

const CACHE_TTL: Duration = Duration::from_secs(2);

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
}

pub struct Registry {
    dir: PathBuf,
    cache: Mutex<HashMap<String, (Vec<u16>, Instant)>>,
    next: AtomicUsize,
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

pub fn default_dir() -> PathBuf {
    std::env::temp_dir().join(format!(
        "dapr-sidecar-registry-{}",
        appkit::process::user_id()
    ))
}

impl Registry {
    pub fn new(dir: PathBuf) -> Self {
        Registry {
            dir,
            cache: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn register(&self, entry: &Entry) -> std::io::Result<Registration> {
        std::fs::create_dir_all(&self.dir)?;
        let file = self
            .dir
            .join(format!("{}.{}.json", entry.app_id, entry.pid));
        let tmp = self
            .dir
            .join(format!(".{}.{}.tmp", entry.app_id, entry.pid));
        std::fs::write(
            &tmp,
            serde_json::to_vec(entry).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(&tmp, &file)?;
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
            let Ok(text) = std::fs::read(file.path()) else {
                continue;
            };
            let Ok(entry) = serde_json::from_slice::<Entry>(&text) else {
                continue;
            };
            if entry.app_id != app_id {
                continue;
            }
            if appkit::process::is_alive(entry.pid) {
                out.push(entry);
            } else {
                let _ = std::fs::remove_file(file.path());
            }
        }
        out.sort_by_key(|e| e.pid);
        out
    }

    /// The internal port of one live sidecar of `app_id`.
    pub fn resolve(&self, app_id: &str) -> Option<u16> {
        let now = Instant::now();
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ports = match cache.get(app_id) {
            Some((ports, at)) if now.duration_since(*at) < CACHE_TTL && !ports.is_empty() => ports,
            _ => {
                let ports: Vec<u16> = self
                    .entries(app_id)
                    .iter()
                    .map(|e| e.internal_port)
                    .collect();
                &cache
                    .entry(app_id.to_string())
                    .insert_entry((ports, now))
                    .into_mut()
                    .0
            }
        };
        match ports.len() {
            0 => None,
            1 => Some(ports[0]),
            n => Some(ports[self.next.fetch_add(1, Ordering::Relaxed) % n]),
        }
    }

    /// Drops the cached answer after a failed connection, so the next call reads again.
    pub fn forget(&self, app_id: &str) {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(app_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        };
        let handle = reg.register(&entry).unwrap();
        assert_eq!(reg.resolve("svc"), Some(4242));
        assert_eq!(reg.resolve("other"), None);
        drop(handle);
        reg.forget("svc");
        assert_eq!(reg.resolve("svc"), None);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
