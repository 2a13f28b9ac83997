//! The Redis connection settings `state.redis` and `lock.redis` share (`redisHost`,
//! `redisPassword`, `redisUsername`, `redisDB`, timeouts, `maxRetries`), turned into one
//! multiplexed, auto-reconnecting connection that fails fast when the server is down —
//! also when it is silently out of reach (a cut cable drops packets without a word), which
//! a PING every 200 ms notices within a second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

use super::{ComponentError, duration_meta, fail};
use crate::resources::ComponentSpec;

/// How often the watch PINGs the server.
const PING_EVERY: Duration = Duration::from_millis(200);
/// How long the server may stay silent before calls fail at once instead of each waiting
/// out `readTimeout` (3 s by default) — the sidecar's own circuit breaker for a store out
/// of reach, as a Dapr resiliency policy would open one.
const SILENT_FOR: Duration = Duration::from_secs(1);

/// One Redis server as a component uses it: the connection, and whether the server has
/// answered lately.
#[derive(Clone)]
pub struct Redis {
    conn: ConnectionManager,
    watch: Arc<Watch>,
}

struct Watch {
    host: String,
    since: Instant,
    /// When the PING still unanswered was sent, in ms after `since`; [`ANSWERED`] when
    /// none is waiting. A PING that failed for want of an answer (timeout, refused or
    /// dropped connection) stays unanswered until one is answered.
    waiting_since_ms: AtomicU64,
}

const ANSWERED: u64 = u64::MAX;

/// A call refused at once because the server has not answered for a while.
#[derive(Debug, thiserror::Error)]
#[error("redis at {host} is unreachable: no answer for {silent:?}")]
pub struct Unreachable {
    host: String,
    silent: Duration,
}

impl Redis {
    fn new(conn: ConnectionManager, host: String) -> Self {
        let watch = Arc::new(Watch {
            host,
            since: Instant::now(),
            waiting_since_ms: AtomicU64::new(ANSWERED),
        });
        tokio::spawn(ping(conn.clone(), Arc::downgrade(&watch)));
        Redis { conn, watch }
    }

    /// The connection to send a call on, unless a PING has waited for its answer longer
    /// than [`SILENT_FOR`]: then the call fails here, at once, and nothing is sent. (A slow
    /// command ahead of the PING delays it, so only a second of silence counts.)
    pub fn conn(&self) -> Result<ConnectionManager, Unreachable> {
        let w = &self.watch;
        let sent = w.waiting_since_ms.load(Ordering::Acquire);
        if sent != ANSWERED {
            let silent = w
                .since
                .elapsed()
                .saturating_sub(Duration::from_millis(sent));
            if silent > SILENT_FOR {
                return Err(Unreachable {
                    host: w.host.clone(),
                    silent,
                });
            }
        }
        Ok(self.conn.clone())
    }
}

/// PINGs the server until the component is dropped, noting how long each answer takes.
async fn ping(mut conn: ConnectionManager, watch: Weak<Watch>) {
    let mut every = tokio::time::interval(PING_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(w) = watch.upgrade() else { return };
        let now = w.since.elapsed().as_millis() as u64;
        // Keep the first unanswered PING's time: silence runs from it.
        let _ =
            w.waiting_since_ms
                .compare_exchange(ANSWERED, now, Ordering::AcqRel, Ordering::Acquire);
        drop(w);
        let reply = redis::cmd("PING").query_async::<()>(&mut conn).await;
        let Some(w) = watch.upgrade() else { return };
        // An error the server sent (LOADING, BUSY, ...) is an answer too.
        let silent = reply.as_ref().is_err_and(|e| {
            e.is_io_error()
                || e.is_timeout()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
        });
        if !silent {
            w.waiting_since_ms.store(ANSWERED, Ordering::Release);
        }
    }
}

/// A client for the server a component names, the settings of its connections, and the
/// server's address for messages.
#[derive(Clone)]
pub struct Server {
    pub client: redis::Client,
    pub config: ConnectionManagerConfig,
    pub host: String,
}

impl Server {
    /// The component's shared connection, watched.
    pub async fn connect(&self) -> Result<Redis, redis::RedisError> {
        let conn = self.connection(self.config.clone()).await?;
        Ok(Redis::new(conn, self.host.clone()))
    }

    /// A connection of its own with other settings (e.g. for blocking reads, which would
    /// hold up every call behind them on a shared one).
    pub async fn connection(
        &self,
        config: ConnectionManagerConfig,
    ) -> Result<ConnectionManager, redis::RedisError> {
        self.client.get_connection_manager_with_config(config).await
    }
}

/// The component's shared connection, watched; fails the component when the server cannot
/// be reached.
pub async fn connect(spec: &ComponentSpec) -> Result<Redis, ComponentError> {
    let server = settings(spec)?;
    server
        .connect()
        .await
        .map_err(|e| fail(spec, format!("connecting to redis at {}: {e}", server.host)))
}

/// The server and connection settings the component's metadata names.
pub fn settings(spec: &ComponentSpec) -> Result<Server, ComponentError> {
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
    Ok(Server {
        client,
        config,
        host: host.to_string(),
    })
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
