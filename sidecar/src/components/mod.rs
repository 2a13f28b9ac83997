//! Turning component specs into live stores, and the key-prefix rules (`keyPrefix`) that
//! decide what key a store really sees.

pub(crate) mod redis;

use std::collections::HashMap;
use std::time::Duration;

use crate::lock::{self, LockStore};
use crate::pubsub::{self, PubSub};
use crate::resources::ComponentSpec;
use crate::state::{self, StateStore};

#[derive(Debug, thiserror::Error)]
#[error("component {name} ({kind}) in {file}: {message}")]
pub struct ComponentError {
    pub name: String,
    pub kind: String,
    pub file: String,
    pub message: String,
}

pub(crate) fn fail(spec: &ComponentSpec, message: impl Into<String>) -> ComponentError {
    ComponentError {
        name: spec.name.clone(),
        kind: spec.kind.clone(),
        file: spec.file.display().to_string(),
        message: message.into(),
    }
}

/// A loaded state store with its precomputed key prefix.
pub struct StateComponent {
    /// The component's name, as errors name it.
    pub name: String,
    pub store: StateStore,
    /// `None` means keys are stored as given (`keyPrefix: none`, or no app id).
    pub prefix: Option<String>,
    /// Transactions publish their upserts (`outboxPublishPubsub`, `outboxPublishTopic`).
    pub outbox: Option<pubsub::outbox::Outbox>,
}

impl StateComponent {
    pub fn key(&self, key: &str) -> String {
        match &self.prefix {
            Some(p) => {
                let mut k = String::with_capacity(p.len() + 2 + key.len());
                k.push_str(p);
                k.push_str("||");
                k.push_str(key);
                k
            }
            None => key.to_string(),
        }
    }
}

pub struct LockComponent {
    pub store: LockStore,
    /// `lock||app||` (or `lock||` with none); the resource id follows.
    pub prefix: String,
}

/// What `/v1.0/metadata` lists.
#[derive(Debug, Clone)]
pub struct Registered {
    pub name: String,
    pub kind: String,
    pub version: String,
    pub capabilities: Vec<&'static str>,
}

#[derive(Default)]
pub struct Components {
    pub state: HashMap<String, StateComponent>,
    pub lock: HashMap<String, LockComponent>,
    pub pubsub: HashMap<String, PubSub>,
    pub registered: Vec<Registered>,
}

/// `keyPrefix`, lower-cased as Dapr does.
fn prefixes(
    spec: &ComponentSpec,
    app_id: &str,
) -> Result<(Option<String>, String), ComponentError> {
    let setting = spec
        .meta("keyPrefix")
        .unwrap_or("appid")
        .to_ascii_lowercase();
    if setting.contains("||") {
        return Err(fail(spec, "keyPrefix can't contain '||'"));
    }
    let state = match setting.as_str() {
        "appid" if app_id.is_empty() => None,
        "appid" => Some(app_id.to_string()),
        "name" => Some(spec.name.clone()),
        "namespace" => match std::env::var("NAMESPACE") {
            Ok(ns) if !ns.is_empty() && !app_id.is_empty() => Some(format!("{ns}.{app_id}")),
            _ if app_id.is_empty() => None,
            _ => Some(app_id.to_string()),
        },
        "none" => None,
        literal => Some(literal.to_string()),
    };
    let lock = match setting.as_str() {
        "appid" if app_id.is_empty() => "lock||".to_string(),
        "appid" => format!("lock||{app_id}||"),
        "name" => format!("lock||{}||", spec.name),
        "none" => "lock||".to_string(),
        literal => format!("lock||{literal}||"),
    };
    Ok((state, lock))
}

/// The longest timeout or interval a component may name: longer ones are mistakes, and
/// would overflow the deadlines built from them.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

fn duration_meta(
    spec: &ComponentSpec,
    name: &str,
    default: Duration,
) -> Result<Duration, ComponentError> {
    match spec.meta(name) {
        None => Ok(default),
        Some(v) => match parse_duration(v) {
            Some(d) if d <= MAX_DURATION => Ok(d),
            Some(_) => Err(fail(spec, format!("{name}: {v:?} is longer than 24h"))),
            None => Err(fail(spec, format!("{name}: {v:?} is not a duration"))),
        },
    }
}

/// Go-style durations as Dapr metadata writes them (`2s`, `500ms`, `1m`), or plain seconds.
pub fn parse_duration(v: &str) -> Option<Duration> {
    let v = v.trim();
    // `try_from`: "inf", "nan" and values past u64 seconds are not durations.
    if let Ok(secs) = v.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().ok().filter(|n: &f64| *n >= 0.0)?;
    let secs = match unit {
        "ns" => n / 1e9,
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

impl Components {
    /// Builds every component; a failing one stops the sidecar unless it says `ignoreErrors`.
    /// The stores that the resources folders name for `app_id`, opened from outside a
    /// running sidecar (`reset-state`, `dump-state`): a SQLite file must exist already.
    pub async fn open_offline(
        paths: &[std::path::PathBuf],
        app_id: &str,
    ) -> anyhow::Result<Components> {
        let specs = crate::resources::load_components(paths, app_id)?;
        crate::resources::require_existing_databases(&specs)?;
        Ok(Components::load(&specs, app_id).await?)
    }

    pub async fn load(specs: &[ComponentSpec], app_id: &str) -> Result<Components, ComponentError> {
        let mut out = Components::default();
        for spec in specs {
            match Self::load_one(&mut out, spec, app_id).await {
                Ok(()) => {}
                Err(e) if spec.ignore_errors => {
                    tracing::warn!(error = %e, "component failed to load; ignored");
                }
                Err(e) => return Err(e),
            }
        }
        for spec in specs {
            let Some(outbox) = out.state.get(&spec.name).and_then(|s| s.outbox.as_ref()) else {
                continue;
            };
            for pubsub in [&outbox.publish_pubsub, &outbox.internal_pubsub] {
                if !out.pubsub.contains_key(pubsub) {
                    return Err(fail(
                        spec,
                        format!("the outbox names pub/sub {pubsub:?}, which is not loaded"),
                    ));
                }
            }
        }
        Ok(out)
    }

    async fn load_one(&mut self, spec: &ComponentSpec, app_id: &str) -> Result<(), ComponentError> {
        let (state_prefix, lock_prefix) = prefixes(spec, app_id)?;
        let outbox = if spec.kind.starts_with("state.") {
            pubsub::outbox::Outbox::from_metadata(|k| spec.meta(k).map(str::to_string), app_id)
                .map_err(|e| fail(spec, e))?
        } else {
            None
        };
        if self.state.contains_key(&spec.name)
            || self.lock.contains_key(&spec.name)
            || self.pubsub.contains_key(&spec.name)
        {
            return Err(fail(spec, "a component with this name is already loaded"));
        }
        let capabilities = match spec.kind.as_str() {
            "state.in-memory" => {
                let store = StateStore::Memory(state::memory::MemoryStore::new());
                self.add_state(spec, store, state_prefix, outbox)
            }
            "state.sqlite" => {
                let settings = state::sqlite::SqliteSettings {
                    connection_string: spec
                        .meta("connectionString")
                        .ok_or_else(|| fail(spec, "metadata connectionString is required"))?
                        .to_string(),
                    table_name: spec.meta("tableName").unwrap_or("state").to_string(),
                    busy_timeout: duration_meta(spec, "busyTimeout", Duration::from_secs(2))?,
                    disable_wal: spec.meta("disableWAL") == Some("true"),
                    synchronous: match spec.meta("synchronous") {
                        None => state::sqlite::Synchronous::default(),
                        Some(v) => state::sqlite::Synchronous::parse(v).ok_or_else(|| {
                            fail(
                                spec,
                                format!("synchronous {v:?} must be FULL, EXTRA or NORMAL"),
                            )
                        })?,
                    },
                };
                let store = state::sqlite::SqliteStore::open(&settings)
                    .map_err(|e| fail(spec, e.to_string()))?;
                self.add_state(spec, StateStore::Sqlite(store), state_prefix, outbox)
            }
            "state.redis" => {
                let ttl = match spec.meta("ttlInSeconds") {
                    None => None,
                    Some(v) => state::parse_ttl(v).map_err(|e| fail(spec, e))?,
                };
                let conn = redis::connect(spec).await?;
                let host = spec.meta("redisHost").unwrap_or_default().to_string();
                let store = StateStore::Redis(state::redis::RedisStore::new(conn, host, ttl));
                self.add_state(spec, store, state_prefix, outbox)
            }
            "lock.in-memory" => {
                self.lock.insert(
                    spec.name.clone(),
                    LockComponent {
                        store: LockStore::Memory(lock::memory::MemoryLock::new()),
                        prefix: lock_prefix,
                    },
                );
                Vec::new()
            }
            "lock.redis" => {
                if spec.meta("redisType") == Some("cluster") {
                    return Err(fail(spec, "lock.redis does not support redisType cluster"));
                }
                let conn = redis::connect(spec).await?;
                self.lock.insert(
                    spec.name.clone(),
                    LockComponent {
                        store: LockStore::Redis(lock::redis::RedisLock::new(conn)),
                        prefix: lock_prefix,
                    },
                );
                Vec::new()
            }
            "pubsub.in-memory" | "pubsub.redis" => {
                for scoping in [
                    "allowedTopics",
                    "protectedTopics",
                    "publishingScopes",
                    "subscriptionScopes",
                ] {
                    if spec.meta(scoping).is_some() {
                        return Err(fail(
                            spec,
                            format!(
                                "{scoping} is not enforced by this sidecar yet; remove it rather than rely on it"
                            ),
                        ));
                    }
                }
                let bus = if spec.kind == "pubsub.redis" {
                    PubSub::Redis(Box::new(
                        pubsub::redis::RedisStreams::open(spec, app_id).await?,
                    ))
                } else {
                    PubSub::Memory(pubsub::memory::MemoryBus::new())
                };
                let caps = bus.capabilities().to_vec();
                self.pubsub.insert(spec.name.clone(), bus);
                caps
            }
            other => {
                return Err(fail(
                    spec,
                    format!(
                        "unknown component type {other:?}; this sidecar loads state.in-memory, state.sqlite, state.redis, lock.in-memory, lock.redis, pubsub.in-memory and pubsub.redis"
                    ),
                ));
            }
        };
        self.registered.push(Registered {
            name: spec.name.clone(),
            kind: spec.kind.clone(),
            version: if spec.version.is_empty() {
                "v1".into()
            } else {
                spec.version.clone()
            },
            capabilities,
        });
        tracing::info!(name = %spec.name, kind = %spec.kind, "component loaded");
        Ok(())
    }

    fn add_state(
        &mut self,
        spec: &ComponentSpec,
        store: StateStore,
        prefix: Option<String>,
        outbox: Option<pubsub::outbox::Outbox>,
    ) -> Vec<&'static str> {
        let caps = store.capabilities().to_vec();
        self.state.insert(
            spec.name.clone(),
            StateComponent {
                name: spec.name.clone(),
                store,
                prefix,
                outbox,
            },
        );
        caps
    }

    /// Periodic housekeeping: expired in-memory entries.
    pub fn sweep(&self) {
        for c in self.state.values() {
            if let StateStore::Memory(m) = &c.store {
                m.sweep();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(prefix: Option<&str>) -> ComponentSpec {
        let mut metadata = HashMap::new();
        if let Some(p) = prefix {
            metadata.insert("keyprefix".to_string(), p.to_string());
        }
        ComponentSpec {
            name: "statestore".into(),
            kind: "state.in-memory".into(),
            version: "v1".into(),
            metadata,
            ignore_errors: false,
            scopes: vec![],
            file: "x.yaml".into(),
        }
    }

    #[test]
    fn key_prefix_rules_follow_dapr() {
        let p = |s| prefixes(&spec(s), "backend").unwrap();
        assert_eq!(p(None), (Some("backend".into()), "lock||backend||".into()));
        assert_eq!(
            p(Some("name")),
            (Some("statestore".into()), "lock||statestore||".into())
        );
        assert_eq!(p(Some("none")), (None, "lock||".into()));
        assert_eq!(
            p(Some("Shared")),
            (Some("shared".into()), "lock||shared||".into())
        );
        assert!(prefixes(&spec(Some("a||b")), "backend").is_err());
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("25h"), Some(Duration::from_secs(25 * 3600)));
        for bad in [
            "soon",
            "inf",
            "-1",
            "NaN",
            "1e300",
            "infh",
            "-0.5s",
            "99999999999999999999h",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
