//! `lock.redis`: the layout of Dapr's Redis lock: the key holds the owner and expires by
//! itself (`SET NX EX`); unlock is a script that deletes only for the owner.

use redis::aio::ConnectionManager;

use super::{Lease, LockError, UnlockStatus};
use crate::components::redis::Redis;

/// -1: no such lock; -2: someone else's; otherwise the DEL count.
const UNLOCK_SCRIPT: &str = r#"
local v = redis.call("GET", KEYS[1])
if not v then return -1 end
if v ~= ARGV[1] then return -2 end
return redis.call("DEL", KEYS[1])
"#;

pub struct RedisLock {
    redis: Redis,
}

impl RedisLock {
    pub fn new(redis: Redis) -> Self {
        RedisLock { redis }
    }

    /// The connection, or a lock error at once when Redis has gone silent.
    fn conn(&self) -> Result<ConnectionManager, LockError> {
        self.redis.conn().map_err(|e| LockError(e.to_string()))
    }

    pub async fn try_lock(&self, lease: &Lease<'_>) -> Result<bool, LockError> {
        let mut conn = self.conn()?;
        let reply: Option<String> = redis::cmd("SET")
            .arg(lease.key)
            .arg(lease.owner)
            .arg("NX")
            .arg("EX")
            .arg(lease.expiry_secs)
            .query_async(&mut conn)
            .await
            .map_err(|e| LockError(e.to_string()))?;
        Ok(reply.is_some())
    }

    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64, LockError> {
        crate::components::redis::delete_prefix(&mut self.conn()?, prefix)
            .await
            .map_err(|e| LockError(e.to_string()))
    }

    pub async fn unlock(&self, key: &str, owner: &str) -> Result<UnlockStatus, LockError> {
        let mut conn = self.conn()?;
        let n: i64 = redis::cmd("EVAL")
            .arg(UNLOCK_SCRIPT)
            .arg(1)
            .arg(key)
            .arg(owner)
            .query_async(&mut conn)
            .await
            .map_err(|e| LockError(e.to_string()))?;
        Ok(match n {
            -1 => UnlockStatus::LockDoesNotExist,
            -2 => UnlockStatus::LockBelongsToOthers,
            _ => UnlockStatus::Success,
        })
    }
}
