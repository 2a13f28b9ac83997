//! Component folders for one test: a state store and a lock store of the chosen kind,
//! written as Dapr component YAMLs.

use std::path::Path;

use crate::process::TempDir;

pub struct ComponentsDir {
    dir: TempDir,
}

fn component(name: &str, kind: &str, meta: &[(&str, String)]) -> String {
    let mut s = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: {kind}\n  version: v1\n  metadata:"
    );
    s.push_str(if meta.is_empty() { " []\n" } else { "\n" });
    for (k, v) in meta {
        s.push_str(&format!("  - name: {k}\n    value: \"{v}\"\n"));
    }
    s
}

impl ComponentsDir {
    fn with(files: &[(&str, String)]) -> Self {
        let dir = TempDir::new("components");
        for (file, text) in files {
            std::fs::write(dir.path().join(file), text).expect("writing a component file");
        }
        ComponentsDir { dir }
    }

    /// In-memory state and lock.
    pub fn memory() -> Self {
        Self::with(&[
            (
                "statestore.yaml",
                component("statestore", "state.in-memory", &[]),
            ),
            (
                "lockstore.yaml",
                component("lockstore", "lock.in-memory", &[]),
            ),
        ])
    }

    /// SQLite state in `db` and the in-process lock.
    pub fn sqlite(db: &Path) -> Self {
        Self::sqlite_with(db, &[])
    }

    /// In-memory pub/sub `pubsub`, in-memory state `statestore` whose outbox publishes to
    /// `topic` on it, and the in-process lock `lockstore`: what an SDK app's checks need.
    pub fn memory_with_outbox(topic: &str) -> Self {
        let outbox = [
            ("outboxPublishPubsub", "pubsub".to_string()),
            ("outboxPublishTopic", topic.to_string()),
        ];
        Self::with(&[
            ("pubsub.yaml", component("pubsub", "pubsub.in-memory", &[])),
            (
                "statestore.yaml",
                component("statestore", "state.in-memory", &outbox),
            ),
            (
                "lockstore.yaml",
                component("lockstore", "lock.in-memory", &[]),
            ),
        ])
    }

    /// SQLite state in `db`, with extra state metadata (e.g. synchronous), and the
    /// in-process lock.
    pub fn sqlite_with(db: &Path, extra: &[(&str, String)]) -> Self {
        let mut state_meta = vec![("connectionString", db.display().to_string())];
        state_meta.extend(extra.iter().cloned());
        Self::with(&[
            (
                "statestore.yaml",
                component("statestore", "state.sqlite", &state_meta),
            ),
            (
                "lockstore.yaml",
                component("lockstore", "lock.in-memory", &[]),
            ),
        ])
    }

    /// Redis state and lock on `127.0.0.1:port`, with extra state metadata (e.g. keyPrefix).
    pub fn redis(port: u16, extra: &[(&str, String)]) -> Self {
        Self::redis_at(&format!("127.0.0.1:{port}"), extra)
    }

    /// Redis state (with its outbox publishing to topic `bookings` of `pubsub`), lock, and
    /// `pubsub.redis` on `127.0.0.1:port`: the backend's booking events end to end. A
    /// message a crashed sidecar held is claimed again after `processing_timeout_ms`.
    pub fn redis_with_events(port: u16, processing_timeout_ms: u64) -> Self {
        let dir = Self::redis(
            port,
            &[
                ("outboxPublishPubsub", "pubsub".into()),
                ("outboxPublishTopic", "bookings".into()),
            ],
        );
        let pubsub = component(
            "pubsub",
            "pubsub.redis",
            &[
                ("redisHost", format!("127.0.0.1:{port}")),
                ("processingTimeout", processing_timeout_ms.to_string()),
                ("redeliverInterval", "500".into()),
            ],
        );
        std::fs::write(dir.path().join("pubsub.yaml"), pubsub).expect("writing pubsub.yaml");
        dir
    }

    /// State and lock on the Redis at `addr` (`host:port`), e.g. on another test bed host.
    pub fn redis_at(addr: &str, extra: &[(&str, String)]) -> Self {
        let host = ("redisHost", addr.to_string());
        let mut state_meta = vec![host.clone()];
        state_meta.extend(extra.iter().cloned());
        Self::with(&[
            (
                "statestore.yaml",
                component("statestore", "state.redis", &state_meta),
            ),
            (
                "lockstore.yaml",
                component("lockstore", "lock.redis", &[host]),
            ),
        ])
    }

    /// SQLite state in `db` with the lock on the Redis at `127.0.0.1:port`: what replicas
    /// that share one SQLite file share a lock through.
    pub fn sqlite_with_redis_lock(db: &Path, port: u16) -> Self {
        Self::with(&[
            (
                "statestore.yaml",
                component(
                    "statestore",
                    "state.sqlite",
                    &[("connectionString", db.display().to_string())],
                ),
            ),
            (
                "lockstore.yaml",
                component(
                    "lockstore",
                    "lock.redis",
                    &[("redisHost", format!("127.0.0.1:{port}"))],
                ),
            ),
        ])
    }

    /// Arbitrary files, for tests of loading errors.
    pub fn raw(files: &[(&str, &str)]) -> Self {
        let owned: Vec<(&str, String)> = files.iter().map(|(f, t)| (*f, t.to_string())).collect();
        Self::with(&owned)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}
