//! One fixture per kind of store, so a suite of state and lock tests can run unchanged
//! against in-memory, SQLite and a real Redis.

use crate::components::ComponentsDir;
use crate::process::TempDir;
use crate::redis::RedisServer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Memory,
    Sqlite,
    /// SQLite with `synchronous=NORMAL`, whose writes commit on the sidecar's runtime
    /// thread when its store thread is idle (the default, FULL, keeps them on that thread).
    SqliteNormal,
    Redis,
}

/// Components for `kind`, plus whatever they need running (a Redis server, a data folder).
pub struct StoreFixture {
    pub kind: StoreKind,
    pub components: ComponentsDir,
    pub redis: Option<RedisServer>,
    pub data: TempDir,
}

impl StoreFixture {
    pub async fn start(kind: StoreKind) -> anyhow::Result<StoreFixture> {
        let data = TempDir::new("data");
        let (components, redis) = match kind {
            StoreKind::Memory => (ComponentsDir::memory(), None),
            StoreKind::Sqlite => (ComponentsDir::sqlite(&data.path().join("state.db")), None),
            StoreKind::SqliteNormal => {
                let db = data.path().join("state.db");
                let normal = [("synchronous", "NORMAL".to_string())];
                (ComponentsDir::sqlite_with(&db, &normal), None)
            }
            StoreKind::Redis => {
                let redis = RedisServer::start().await?;
                (ComponentsDir::redis(redis.port, &[]), Some(redis))
            }
        };
        Ok(StoreFixture {
            kind,
            components,
            redis,
            data,
        })
    }
}
