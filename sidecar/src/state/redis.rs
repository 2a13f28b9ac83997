//! `state.redis`: a real Redis, in the exact layout of Dapr's Redis state store, so that
//! real `daprd` and this sidecar can share one server and read each other's data.
//!
//! Each entry is a hash at the prefixed key with fields `data` and `version` (the version is
//! the ETag, a decimal counter) and, for keys ever written with first-write, `first-write`.
//! Writes and deletes are single Lua scripts so the ETag check and the write are atomic;
//! a transaction is one script that checks every ETag before it writes anything.

use bytes::Bytes;
use redis::aio::ConnectionManager;

use crate::components::redis::Redis;
use redis::{RedisError, Value};

use super::{Concurrency, DeleteRequest, SetRequest, StoreError, Stored, TxOperation};

/// Write if the key has no version, the version matches ARGV[1], or (unless the key was
/// written with first-write) ARGV[1] is "0". ARGV[3] = "0" marks a first-write save.
const SET_SCRIPT: &str = r#"
local ok, ver = pcall(redis.call, "HGET", KEYS[1], "version")
if not ok then redis.call("DEL", KEYS[1]); ver = false end
local fw = redis.call("HEXISTS", KEYS[1], "first-write") == 1
if ver == false or ver == "" or ver == ARGV[1] or (not fw and ARGV[1] == "0") then
  redis.call("HSET", KEYS[1], "data", ARGV[2])
  if ARGV[3] == "0" then redis.call("HSET", KEYS[1], "first-write", 0) end
  return redis.call("HINCRBY", KEYS[1], "version", 1)
end
return redis.error_reply("failed to set key " .. KEYS[1])
"#;

/// Delete if the key has no version, the version matches, or no ETag was given ("0").
const DEL_SCRIPT: &str = r#"
local ok, ver = pcall(redis.call, "HGET", KEYS[1], "version")
if not ok or ver == false or ver == ARGV[1] or ARGV[1] == "0" then
  return redis.call("DEL", KEYS[1])
end
return redis.error_reply("failed to delete " .. KEYS[1])
"#;

/// A whole transaction: KEYS are the operations' keys; ARGV holds four values per
/// operation: "s" (upsert) or "d" (delete), the expected version ("0" for none), the data,
/// and the TTL ("" none, "p" persist, or seconds). Checks first, then writes.
const TX_SCRIPT: &str = r#"
local n = #KEYS
for i = 1, n do
  local b = (i - 1) * 4
  local want = ARGV[b + 2]
  local ok, ver = pcall(redis.call, "HGET", KEYS[i], "version")
  if not ok then ver = false end
  if ARGV[b + 1] == "s" then
    local fw = false
    if ok then
      local okf, f = pcall(redis.call, "HEXISTS", KEYS[i], "first-write")
      fw = okf and f == 1
    end
    if not (ver == false or ver == "" or ver == want or (not fw and want == "0")) then
      return redis.error_reply("failed to set key " .. KEYS[i])
    end
  elseif not (ver == false or ver == want or want == "0") then
    return redis.error_reply("failed to delete " .. KEYS[i])
  end
end
for i = 1, n do
  local b = (i - 1) * 4
  if ARGV[b + 1] == "s" then
    local t = redis.call("TYPE", KEYS[i])["ok"]
    if t ~= "hash" and t ~= "none" then redis.call("DEL", KEYS[i]) end
    redis.call("HSET", KEYS[i], "data", ARGV[b + 3])
    redis.call("HINCRBY", KEYS[i], "version", 1)
    local ttl = ARGV[b + 4]
    if ttl == "p" then redis.call("PERSIST", KEYS[i]) elseif ttl ~= "" then redis.call("EXPIRE", KEYS[i], ttl) end
  else
    redis.call("DEL", KEYS[i])
  end
end
return n
"#;

pub struct RedisStore {
    redis: Redis,
    host: String,
    /// The component's `ttlInSeconds`, used when a save gives none.
    default_ttl: Option<i64>,
}

impl RedisStore {
    pub fn new(redis: Redis, host: String, default_ttl: Option<i64>) -> Self {
        RedisStore {
            redis,
            host,
            default_ttl,
        }
    }

    /// The connection, or a store error at once when Redis has gone silent.
    fn conn(&self) -> Result<ConnectionManager, StoreError> {
        self.redis.conn().map_err(StoreError::backend)
    }

    pub fn location(&self) -> String {
        format!("Redis {}", self.host)
    }

    pub async fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let keys = crate::components::redis::scan_prefix(&mut self.conn()?, prefix)
            .await
            .map_err(StoreError::backend)?;
        keys.into_iter()
            .map(|k| String::from_utf8(k).map_err(StoreError::backend))
            .collect()
    }

    /// Deletes only the keys under `prefix`, never a FLUSHDB of a shared server.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        crate::components::redis::delete_prefix(&mut self.conn()?, prefix)
            .await
            .map_err(StoreError::backend)
    }

    pub async fn get(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        let mut conn = self.conn()?;
        let reply: Result<Value, RedisError> =
            redis::cmd("HGETALL").arg(key).query_async(&mut conn).await;
        match reply {
            Ok(v) => parse_hash(key, v),
            Err(e) if e.code() == Some("WRONGTYPE") => plain_get(&mut conn, key).await,
            Err(e) => Err(StoreError::backend(e)),
        }
    }

    pub async fn bulk_get(
        &self,
        keys: &[String],
    ) -> Result<Vec<Result<Option<Stored>, StoreError>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn()?;
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("HGETALL").arg(key);
        }
        pipe.ignore_errors();
        let replies: Vec<Result<Value, RedisError>> = pipe
            .query_async(&mut conn)
            .await
            .map_err(StoreError::backend)?;
        let mut out = Vec::with_capacity(keys.len());
        for (key, reply) in keys.iter().zip(replies) {
            out.push(match reply {
                Ok(v) => parse_hash(key, v),
                Err(e) if e.code() == Some("WRONGTYPE") => plain_get(&mut conn, key).await,
                Err(e) => Err(StoreError::backend(e)),
            });
        }
        Ok(out)
    }

    fn ttl_for(&self, req: &SetRequest) -> Option<i64> {
        req.ttl.or(self.default_ttl)
    }

    pub async fn set(&self, req: &SetRequest) -> Result<(), StoreError> {
        let version = expected_version(req.etag.as_deref(), req.concurrency)?;
        let mut conn = self.conn()?;
        let first_write = if req.concurrency == Concurrency::FirstWrite {
            "0"
        } else {
            "1"
        };
        let res: Result<i64, RedisError> = redis::cmd("EVAL")
            .arg(SET_SCRIPT)
            .arg(1)
            .arg(&req.key)
            .arg(version)
            .arg(&req.value[..])
            .arg(first_write)
            .query_async(&mut conn)
            .await;
        match res {
            Ok(_) => {}
            Err(e) if is_script_refusal(&e) => {
                return Err(if req.etag.is_some() {
                    StoreError::EtagMismatch(e.to_string())
                } else {
                    StoreError::Backend(e.to_string())
                });
            }
            Err(e) => return Err(StoreError::backend(e)),
        }
        if let Some(ttl) = self.ttl_for(req) {
            let mut cmd = if ttl > 0 {
                redis::cmd("EXPIRE")
            } else {
                redis::cmd("PERSIST")
            };
            cmd.arg(&req.key);
            if ttl > 0 {
                cmd.arg(ttl);
            }
            cmd.query_async::<Value>(&mut conn)
                .await
                .map_err(StoreError::backend)?;
        }
        Ok(())
    }

    pub async fn delete(&self, req: &DeleteRequest) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let etag = req.etag.clone().unwrap_or_else(|| "0".into());
        let res: Result<i64, RedisError> = redis::cmd("EVAL")
            .arg(DEL_SCRIPT)
            .arg(1)
            .arg(&req.key)
            .arg(etag)
            .query_async(&mut conn)
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_script_refusal(&e) => Err(StoreError::EtagMismatch(e.to_string())),
            Err(e) => Err(StoreError::backend(e)),
        }
    }

    /// All operations in one script: every ETag is checked before anything is written, so a
    /// failed transaction leaves nothing behind. (Dapr's own store sends MULTI/EXEC and can
    /// apply part of a failed transaction; the keys and hashes written are the same.)
    pub async fn multi(&self, ops: &[TxOperation]) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(TX_SCRIPT).arg(ops.len());
        for op in ops {
            match op {
                TxOperation::Upsert(r) => cmd.arg(&r.key),
                TxOperation::Delete(r) => cmd.arg(&r.key),
            };
        }
        for op in ops {
            match op {
                TxOperation::Upsert(req) => {
                    let version = expected_version(req.etag.as_deref(), req.concurrency)?;
                    let ttl = match self.ttl_for(req) {
                        Some(t) if t > 0 => t.to_string(),
                        Some(_) => "p".to_string(),
                        None => String::new(),
                    };
                    cmd.arg("s").arg(version).arg(&req.value[..]).arg(ttl);
                }
                TxOperation::Delete(req) => {
                    let etag = req.etag.as_deref().unwrap_or("0");
                    cmd.arg("d").arg(etag).arg("").arg("");
                }
            }
        }
        let mut conn = self.conn()?;
        match cmd.query_async::<Value>(&mut conn).await {
            Ok(_) => Ok(()),
            Err(e) if is_script_refusal(&e) => Err(StoreError::EtagMismatch(e.to_string())),
            Err(e) => Err(StoreError::backend(e)),
        }
    }
}

/// ARGV[1] of the set script: the ETag as an integer, or 0 without one or with last-write.
fn expected_version(etag: Option<&str>, concurrency: Concurrency) -> Result<i64, StoreError> {
    match etag {
        Some(e) if concurrency != Concurrency::LastWrite => e
            .parse::<i64>()
            .map_err(|_| StoreError::EtagInvalid(format!("{e:?} is not a Redis version"))),
        _ => Ok(0),
    }
}

/// The scripts' own refusals (`failed to set key ...`); redis-rs reads the first word of
/// an error reply as its code, so the text arrives split.
fn is_script_refusal(e: &RedisError) -> bool {
    e.code() == Some("failed") && {
        let text = e.to_string();
        text.contains("to set key") || text.contains("to delete")
    }
}

fn parse_hash(key: &str, v: Value) -> Result<Option<Stored>, StoreError> {
    let pairs = match v {
        Value::Map(pairs) => pairs,
        Value::Array(items) => {
            let mut pairs = Vec::with_capacity(items.len() / 2);
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            pairs
        }
        Value::Nil => return Ok(None),
        other => {
            return Err(StoreError::Backend(format!(
                "unexpected reply for {key}: {other:?}"
            )));
        }
    };
    if pairs.is_empty() {
        return Ok(None);
    }
    let (mut data, mut version) = (None, None);
    for (k, v) in pairs {
        let (Value::BulkString(k), Value::BulkString(v)) = (k, v) else {
            continue;
        };
        match &k[..] {
            b"data" => data = Some(Bytes::from(v)),
            b"version" => version = Some(String::from_utf8_lossy(&v).into_owned()),
            _ => {}
        }
    }
    match (data, version) {
        (Some(data), Some(etag)) => Ok(Some(Stored {
            data,
            etag: Some(etag),
            metadata: Vec::new(),
        })),
        _ => Err(StoreError::Backend(format!(
            "required hash field 'data' or 'version' was not found in {key}"
        ))),
    }
}

/// A plain string key written by something else: its value, without an ETag.
async fn plain_get(conn: &mut ConnectionManager, key: &str) -> Result<Option<Stored>, StoreError> {
    let v: Option<Vec<u8>> = redis::cmd("GET")
        .arg(key)
        .query_async(conn)
        .await
        .map_err(StoreError::backend)?;
    Ok(v.map(|data| Stored {
        data: Bytes::from(data),
        etag: None,
        metadata: Vec::new(),
    }))
}
