//! The Redis connection settings `state.redis` and `lock.redis` share (`redisHost`,
//! `redisPassword`, `redisUsername`, `redisDB`, timeouts, `maxRetries`), turned into one
//! multiplexed, auto-reconnecting connection that fails fast when the server is down.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

use super::{ComponentError, duration_meta, fail};
use crate::resources::ComponentSpec;

pub async fn connect(spec: &ComponentSpec) -> Result<ConnectionManager, ComponentError> {
    let host = spec
        .meta("redisHost")
        .ok_or_else(|| fail(spec, "metadata redisHost is required"))?;
    if spec.meta("enableTLS") == Some("true") {
        return Err(fail(
            spec,
            "enableTLS is not supported by this sidecar (loopback Redis only)",
        ));
    }
    if spec.meta("redisType").is_some_and(|t| t != "node") {
        return Err(fail(spec, "only redisType node is supported"));
    }
    if spec.meta("failover") == Some("true") {
        return Err(fail(spec, "Sentinel failover is not supported"));
    }
    let (h, p) = host.rsplit_once(':').unwrap_or((host, "6379"));
    let port: u16 = p
        .parse()
        .map_err(|_| fail(spec, format!("redisHost {host:?} has no valid port")))?;
    let mut settings = RedisConnectionInfo::default();
    if let Some(db) = spec.meta("redisDB") {
        settings = settings.set_db(
            db.parse()
                .map_err(|_| fail(spec, format!("redisDB {db:?} is not a number")))?,
        );
    }
    if let Some(user) = spec.meta("redisUsername") {
        settings = settings.set_username(user);
    }
    if let Some(password) = spec.meta("redisPassword") {
        settings = settings.set_password(password);
    }
    let info = ConnectionAddr::Tcp(h.to_string(), port)
        .into_connection_info()
        .map_err(|e| fail(spec, e.to_string()))?
        .set_redis_settings(settings);
    let client = redis::Client::open(info).map_err(|e| fail(spec, e.to_string()))?;
    let retries = match spec.meta("maxRetries").or(spec.meta("redisMaxRetries")) {
        Some(v) => v
            .parse()
            .map_err(|_| fail(spec, format!("maxRetries {v:?} is not a number")))?,
        None => 3,
    };
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(retries)
        .set_max_delay(duration_meta(
            spec,
            "maxRetryBackoff",
            Duration::from_secs(2),
        )?)
        .set_connection_timeout(Some(duration_meta(
            spec,
            "dialTimeout",
            Duration::from_secs(5),
        )?))
        .set_response_timeout(Some(duration_meta(
            spec,
            "readTimeout",
            Duration::from_secs(3),
        )?));
    client
        .get_connection_manager_with_config(config)
        .await
        .map_err(|e| fail(spec, format!("connecting to redis at {host}: {e}")))
}

/// Every key under `prefix` (glob characters escaped), found with SCAN in batches.
pub async fn scan_prefix(
    conn: &mut ConnectionManager,
    prefix: &str,
) -> redis::RedisResult<Vec<Vec<u8>>> {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('*');
    let (mut cursor, mut found) = (0u64, Vec::new());
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        found.extend(keys);
        if next == 0 {
            // SCAN may return a key twice while the keyspace is rehashed.
            found.sort();
            found.dedup();
            return Ok(found);
        }
        cursor = next;
    }
}

/// DELs every key under `prefix`, in batches.
pub async fn delete_prefix(conn: &mut ConnectionManager, prefix: &str) -> redis::RedisResult<u64> {
    let mut removed = 0;
    for batch in scan_prefix(conn, prefix).await?.chunks(1000) {
        removed += redis::cmd("DEL")
            .arg(batch)
            .query_async::<u64>(conn)
            .await?;
    }
    Ok(removed)
}
