//! Distributed lock stores: `lock.redis` (Dapr's layout: `SET key owner NX EX`, an owner-checked
//! delete script) and `lock.in-memory`, an in-process lock for one-machine runs.
//!
//! Keys arrive already prefixed (`lock||app||resource`).

pub mod memory;
pub mod redis;

/// `UnlockResponse.Status`, the numbers the HTTP API writes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnlockStatus {
    Success = 0,
    LockDoesNotExist = 1,
    LockBelongsToOthers = 2,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LockError(pub String);

/// A request to hold `key` (already prefixed) as `owner` for `expiry_secs`.
pub struct Lease<'a> {
    pub key: &'a str,
    pub owner: &'a str,
    pub expiry_secs: i32,
}

pub enum LockStore {
    Memory(memory::MemoryLock),
    Redis(redis::RedisLock),
}

impl LockStore {
    pub async fn try_lock(&self, lease: &Lease<'_>) -> Result<bool, LockError> {
        match self {
            LockStore::Memory(l) => l.try_lock(lease),
            LockStore::Redis(l) => l.try_lock(lease).await,
        }
    }

    /// Removes held locks under `prefix` (Redis only; in-process locks end with the sidecar).
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64, LockError> {
        match self {
            LockStore::Memory(_) => Ok(0),
            LockStore::Redis(l) => l.delete_prefix(prefix).await,
        }
    }

    pub async fn unlock(&self, key: &str, owner: &str) -> Result<UnlockStatus, LockError> {
        match self {
            LockStore::Memory(l) => Ok(l.unlock(key, owner)),
            LockStore::Redis(l) => l.unlock(key, owner).await,
        }
    }
}
