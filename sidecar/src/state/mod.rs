//! State stores: the request and result types every store speaks, and the enum that
//! dispatches to the store a component file named.
//!
//! Stores see keys already prefixed by the runtime (`app||key`, see `components::KeyPrefix`);
//! ETag and concurrency rules are each store's own, copying the Dapr component of that type.

pub mod memory;
pub mod redis;
pub mod sqlite;

use bytes::Bytes;

/// `StateOptions.concurrency`: unset behaves as last-write unless an ETag is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Concurrency {
    #[default]
    Unspecified,
    FirstWrite,
    LastWrite,
}

impl Concurrency {
    /// Parses the HTTP/JSON spelling; `None` for a value outside Dapr's list.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "" => Some(Concurrency::Unspecified),
            "first-write" => Some(Concurrency::FirstWrite),
            "last-write" => Some(Concurrency::LastWrite),
            _ => None,
        }
    }

    pub fn from_proto(v: i32) -> Self {
        match v {
            1 => Concurrency::FirstWrite,
            2 => Concurrency::LastWrite,
            _ => Concurrency::Unspecified,
        }
    }
}

/// One write: the key is already prefixed.
#[derive(Debug, Clone)]
pub struct SetRequest {
    pub key: String,
    pub value: Bytes,
    pub etag: Option<String>,
    pub concurrency: Concurrency,
    /// `ttlInSeconds` from metadata: `Some(n <= 0)` clears an expiry.
    pub ttl: Option<i64>,
}

/// Reads a `ttlInSeconds` value: empty is unset; a value must fit Dapr's 32-bit range, so
/// that no store is asked for an expiry it cannot represent (past `i32::MAX` seconds an
/// in-process deadline overflows, and Redis refuses the EXPIRE mid-script).
pub fn parse_ttl(v: &str) -> Result<Option<i64>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    let n: i64 = v.parse().map_err(|_| {
        format!("incorrect value for metadata ttlInSeconds: {v:?} is not an integer")
    })?;
    if i32::try_from(n).is_err() {
        return Err(format!(
            "incorrect value for metadata ttlInSeconds: {n} is out of range (at most {})",
            i32::MAX
        ));
    }
    Ok(Some(n))
}

#[derive(Debug, Clone)]
pub struct DeleteRequest {
    pub key: String,
    pub etag: Option<String>,
    pub concurrency: Concurrency,
}

#[derive(Debug, Clone)]
pub enum TxOperation {
    Upsert(SetRequest),
    Delete(DeleteRequest),
}

/// What a get finds.
#[derive(Debug, Clone)]
pub struct Stored {
    pub data: Bytes,
    pub etag: Option<String>,
    /// Response metadata, e.g. `ttlExpireTime`.
    pub metadata: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("possible etag mismatch. error from state store: {0}")]
    EtagMismatch(String),
    #[error("invalid etag value: {0}")]
    EtagInvalid(String),
    #[error("{0}")]
    Backend(String),
}

impl StoreError {
    pub fn backend(e: impl std::fmt::Display) -> Self {
        StoreError::Backend(e.to_string())
    }
}

/// A loaded state component.
pub enum StateStore {
    Memory(memory::MemoryStore),
    Sqlite(sqlite::SqliteStore),
    Redis(redis::RedisStore),
}

impl StateStore {
    /// What daprd lists for the same component (components-contrib's `Features()`).
    pub fn capabilities(&self) -> &'static [&'static str] {
        match self {
            StateStore::Memory(_) => &[
                "ETAG",
                "TRANSACTIONAL",
                "TTL",
                "DELETE_WITH_PREFIX",
                "KEYS_LIKE",
            ],
            StateStore::Sqlite(_) => &["ETAG", "TRANSACTIONAL", "TTL", "KEYS_LIKE"],
            StateStore::Redis(_) => &["ETAG", "TRANSACTIONAL", "TTL", "KEYS_LIKE"],
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        match self {
            StateStore::Memory(s) => s.get(key),
            StateStore::Sqlite(s) => s.get(key).await,
            StateStore::Redis(s) => s.get(key).await,
        }
    }

    /// One result per key, in order; per-key failures stay per key.
    pub async fn bulk_get(
        &self,
        keys: &[String],
    ) -> Result<Vec<Result<Option<Stored>, StoreError>>, StoreError> {
        match self {
            StateStore::Memory(s) => Ok(keys.iter().map(|k| s.get(k)).collect()),
            StateStore::Sqlite(s) => s.bulk_get(keys).await,
            StateStore::Redis(s) => s.bulk_get(keys).await,
        }
    }

    pub async fn set(&self, req: &SetRequest) -> Result<(), StoreError> {
        match self {
            StateStore::Memory(s) => s.set(req),
            StateStore::Sqlite(s) => s.set(req).await,
            StateStore::Redis(s) => s.set(req).await,
        }
    }

    pub async fn delete(&self, req: &DeleteRequest) -> Result<(), StoreError> {
        match self {
            StateStore::Memory(s) => s.delete(req),
            StateStore::Sqlite(s) => s.delete(req).await,
            StateStore::Redis(s) => s.delete(req).await,
        }
    }

    /// Removes every key that starts with `prefix`; returns how many. In-memory stores hold
    /// nothing between runs, so they report 0.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        match self {
            StateStore::Memory(_) => Ok(0),
            StateStore::Sqlite(s) => s.delete_prefix(prefix).await,
            StateStore::Redis(s) => s.delete_prefix(prefix).await,
        }
    }

    /// The keys that start with `prefix`, sorted, for tools that read a stopped stack's
    /// store. An in-memory store lives in its sidecar's process, so from here it has none.
    pub async fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        match self {
            StateStore::Memory(_) => Err(StoreError::Backend(
                "an in-memory store's data lives only in its running sidecar".into(),
            )),
            StateStore::Sqlite(s) => s.keys_with_prefix(prefix).await,
            StateStore::Redis(s) => s.keys_with_prefix(prefix).await,
        }
    }

    /// Where the data lives, for messages.
    pub fn location(&self) -> String {
        match self {
            StateStore::Memory(_) => "sidecar memory".into(),
            StateStore::Sqlite(s) => s.location(),
            StateStore::Redis(s) => s.location(),
        }
    }

    pub async fn multi(&self, ops: &[TxOperation]) -> Result<(), StoreError> {
        match self {
            StateStore::Memory(s) => s.multi(ops),
            StateStore::Sqlite(s) => s.multi(ops).await,
            StateStore::Redis(s) => s.multi(ops).await,
        }
    }
}

/// True when `bytes` is one JSON value: such values are stored as text, others as binary.
pub fn is_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
}

/// A fresh random ETag, the form in-memory and SQLite stores use.
pub fn new_uuid_etag() -> String {
    uuid::Uuid::new_v4().to_string()
}
