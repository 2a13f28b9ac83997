//! The backend's line to its sidecar: the state and lock calls a booking makes, over
//! Dapr's HTTP API (the default) or its gRPC API (`DAPR_API_PROTOCOL=grpc`), with the
//! same answers and errors either way.
//!
//! The client connects lazily and reconnects by itself, so the app can start before its
//! sidecar and survives a sidecar restart; a call while the sidecar is down fails fast.
//! Every call carries a deadline (`SidecarClient::until`): the sidecar is told the time
//! left, and the call gives up locally when it passes, so a stalled sidecar or store can
//! never hold a request (or a lock) without end.

mod grpc;
mod http;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::settings::{ApiProtocol, DaprSettings};

#[derive(Debug, thiserror::Error)]
pub enum DaprError {
    /// The sidecar could not be reached, or said it is unavailable.
    #[error("dapr sidecar unavailable: {0}")]
    Unavailable(String),
    /// First-write / ETag refusal (gRPC ABORTED, HTTP 409).
    #[error("etag conflict: {0}")]
    Conflict(String),
    /// The call's deadline passed first; whether a write took effect is unknown.
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    /// Anything else the sidecar or its store reported, as its gRPC code.
    #[error("dapr call failed ({code:?}): {message}")]
    Failed { code: tonic::Code, message: String },
}

impl DaprError {
    /// Whether this is daprd's answer when its store fails (HTTP 500, gRPC INTERNAL), as
    /// against a refusal of the call itself or an answer no sidecar should give.
    pub fn is_store_failure(&self) -> bool {
        matches!(
            self,
            DaprError::Failed {
                code: tonic::Code::Internal,
                ..
            }
        )
    }

    /// A bulk get's failure to read one key.
    fn item_failed(key: &str, error: &str) -> Self {
        DaprError::Failed {
            code: tonic::Code::Internal,
            message: format!("reading {key}: {error}"),
        }
    }
}

/// Dapr's error body over HTTP: `{"errorCode": "...", "message": "..."}`.
#[derive(Debug, serde::Deserialize)]
pub struct ErrorBody {
    #[serde(rename = "errorCode")]
    pub error_code: String,
    #[serde(default)]
    pub message: String,
}

impl ErrorBody {
    /// The body as Dapr's error, if it is one (an app's own error body is not).
    pub fn parse(body: &[u8]) -> Option<Self> {
        serde_json::from_slice::<Self>(body)
            .ok()
            .filter(|e| !e.error_code.is_empty())
    }
}

/// One value read from the store; an empty `etag` means the key does not exist.
#[derive(Debug, Clone)]
pub struct Item {
    pub key: String,
    pub data: Vec<u8>,
    pub etag: String,
}

impl Item {
    pub fn exists(&self) -> bool {
        !self.etag.is_empty() || !self.data.is_empty()
    }
}

/// A transaction operation.
#[derive(Debug, Clone)]
pub enum Op {
    Upsert {
        key: String,
        value: Vec<u8>,
        etag: Option<String>,
        /// Seconds until the store drops the key (`ttlInSeconds`); `None` keeps it.
        ttl: Option<u32>,
    },
    /// Writes `value` only if `key` does not exist (first-write, no ETag). Whether a
    /// transaction then refuses a key that exists depends on the store: see
    /// `SidecarClient::transactions_create`.
    Create {
        key: String,
        value: Vec<u8>,
        /// Seconds until the store drops the key; `None` keeps it.
        ttl: Option<u32>,
    },
    Delete {
        key: String,
        etag: Option<String>,
    },
    /// What the state store's outbox publishes for the upsert of `key` in the same
    /// transaction, in place of the value it stores (Dapr's `outbox.projection`, sent as
    /// `application/json`). Put it just before that upsert: a store without an outbox
    /// writes it as a plain value, which the upsert then overwrites. At most one per
    /// transaction: daprd takes projections out while it walks the operations and steps
    /// over the one after each, so a second projection right behind a first would be
    /// written instead of published.
    Projection {
        key: String,
        value: Vec<u8>,
    },
}

impl Op {
    /// The key the operation writes.
    pub fn key(&self) -> &str {
        match self {
            Op::Upsert { key, .. }
            | Op::Create { key, .. }
            | Op::Delete { key, .. }
            | Op::Projection { key, .. } => key,
        }
    }
}

/// A value to create where its key does not exist yet.
#[derive(Debug, Clone)]
pub struct NewItem {
    pub key: String,
    pub value: Vec<u8>,
    /// Seconds until the store drops the key; `None` keeps it.
    pub ttl: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unlocked {
    Released,
    DidNotExist,
    HeldByOther,
}

/// One item per key of `keys`, in their order, from what a bulk get `found` (in any
/// order): a key asked for twice gets its item twice, a key not found an item that does
/// not exist.
fn in_order(keys: &[String], found: Vec<Item>) -> Vec<Item> {
    let mut by_key: HashMap<String, Item> =
        found.into_iter().map(|it| (it.key.clone(), it)).collect();
    let mut out: Vec<Item> = Vec::with_capacity(keys.len());
    for k in keys {
        // Moved out once; only a key asked for again is copied from its first answer.
        let item = by_key.remove(k).unwrap_or_else(|| {
            out.iter()
                .find(|earlier| earlier.key == *k)
                .cloned()
                .unwrap_or_else(|| Item {
                    key: k.clone(),
                    data: Vec::new(),
                    etag: String::new(),
                })
        });
        out.push(item);
    }
    out
}

impl Unlocked {
    /// From the `status` of Dapr's unlock answer.
    fn from_status(status: i32) -> Self {
        match status {
            0 => Unlocked::Released,
            1 => Unlocked::DidNotExist,
            _ => Unlocked::HeldByOther,
        }
    }
}

/// The API a `SidecarClient` speaks.
#[derive(Clone)]
enum Api {
    Grpc(grpc::Grpc),
    /// Shared: a client is cloned for every request (`until`).
    Http(Arc<http::Http>),
}

/// The app's client of its sidecar: state calls on one state store, lock calls on one
/// lock store.
#[derive(Clone)]
pub struct SidecarClient {
    api: Api,
    statestore: String,
    lockstore: String,
    /// When every call made through this handle gives up.
    deadline: Option<Instant>,
    /// What the sidecar said `transactions_create` is.
    creates: Arc<StoreFacts>,
}

/// What the sidecar told of its state store, kept across calls: asked once, asked again
/// after the sidecar was unreachable (it may have come back with other components), and
/// not asked more than once in `ASK_AGAIN_AFTER` while it cannot answer.
#[derive(Default)]
struct StoreFacts {
    /// 0: not known; 1: transactions do not create; 2: they do.
    creates: std::sync::atomic::AtomicU8,
    failed_at: std::sync::Mutex<Option<Instant>>,
}

/// How long a failed question about the store stands before it is asked again.
const ASK_AGAIN_AFTER: Duration = Duration::from_secs(5);

/// State store types whose transactions refuse an `Op::Create` of a key that exists, as a
/// first-write save without an ETag does: their first-write check in a transaction
/// refuses any existing key. Redis is not one: its transactions refuse only keys that a
/// first-write *save* wrote (DAPR_API.md §3.8).
const CREATING_TRANSACTIONS: [&str; 2] = ["state.sqlite", "state.in-memory"];

/// The longest wait for the sidecar's metadata (a booking may be waiting on it).
const METADATA_WAIT: Duration = Duration::from_millis(500);

impl SidecarClient {
    fn with_api(settings: &DaprSettings, api: Api) -> Self {
        SidecarClient {
            api,
            statestore: settings.statestore.clone(),
            lockstore: settings.lockstore.clone(),
            deadline: None,
            creates: Arc::default(),
        }
    }

    /// A client that connects on its first call and reconnects by itself, on the API
    /// `settings` name.
    pub fn new(settings: &DaprSettings) -> Result<Self, DaprError> {
        let api = match settings.api_protocol {
            ApiProtocol::Grpc => Api::Grpc(grpc::Grpc::new(settings)?),
            ApiProtocol::Http => Api::Http(Arc::new(http::Http::new(settings)?)),
        };
        Ok(Self::with_api(settings, api))
    }

    /// A client connected now (retrying for up to 30 s while the sidecar starts).
    pub async fn connect(settings: &DaprSettings) -> Result<Self, DaprError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let http = match settings.api_protocol {
            ApiProtocol::Http => Some(Arc::new(http::Http::new(settings)?)),
            ApiProtocol::Grpc => None,
        };
        loop {
            let connected = match &http {
                Some(h) => h.check().await.map(|()| Api::Http(h.clone())),
                None => grpc::Grpc::connect(settings).await.map(Api::Grpc),
            };
            match connected {
                Ok(api) => return Ok(Self::with_api(settings, api)),
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "sidecar not reachable yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(DaprError::Unavailable(e)),
            }
        }
    }

    /// The same client, with every call made through it bounded by `deadline`.
    pub fn until(&self, deadline: Instant) -> SidecarClient {
        SidecarClient {
            deadline: Some(deadline),
            ..self.clone()
        }
    }

    /// Whether a transaction's `Op::Create` of a key that exists fails the transaction on
    /// this state store, so that a missing entry can be created in the commit that needs
    /// it. Asked of the sidecar's metadata (the store's component type) and kept; `false`
    /// for store types not known to, and while the sidecar cannot tell (asked again after
    /// `ASK_AGAIN_AFTER`, and after the sidecar was unreachable).
    pub async fn transactions_create(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        match self.creates.creates.load(Relaxed) {
            1 => return false,
            2 => return true,
            _ => {}
        }
        let failed_at = || {
            self.creates
                .failed_at
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if failed_at().is_some_and(|at| at.elapsed() < ASK_AGAIN_AFTER) {
            return false;
        }
        // A short question: without an answer, the booking just takes the longer way.
        let Ok(left) = self.left("metadata") else {
            return false;
        };
        let left = Some(left.map_or(METADATA_WAIT, |l| l.min(METADATA_WAIT)));
        let types = match &self.api {
            Api::Grpc(g) => g.component_types(left).await,
            Api::Http(h) => h.component_types(left).await,
        };
        match types {
            Ok(types) => {
                if let Some((_, kind)) = types.iter().find(|(name, _)| *name == self.statestore) {
                    let creates = CREATING_TRANSACTIONS.contains(&kind.as_str());
                    tracing::debug!(store = %self.statestore, %kind, creates, "state store type");
                    self.creates.creates.store(1 + u8::from(creates), Relaxed);
                    return creates;
                }
                tracing::debug!(store = %self.statestore, "the sidecar lists no such state store");
            }
            Err(e) => tracing::debug!(error = %e, "the sidecar's metadata is not available"),
        }
        *failed_at() = Some(Instant::now());
        false
    }

    /// Forgets what the sidecar told of its store once it could not be reached: it may
    /// come back with other components.
    fn note<T>(&self, result: Result<T, DaprError>) -> Result<T, DaprError> {
        if matches!(result, Err(DaprError::Unavailable(_))) {
            self.creates
                .creates
                .store(0, std::sync::atomic::Ordering::Relaxed);
        }
        result
    }

    /// The time a call has: `None` without a deadline; an error when none is left.
    fn left(&self, what: &str) -> Result<Option<Duration>, DaprError> {
        let Some(deadline) = self.deadline else {
            return Ok(None);
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(DaprError::DeadlineExceeded(format!(
                "no time left for {what}"
            )));
        }
        Ok(Some(left))
    }

    pub async fn try_lock(
        &self,
        resource: &str,
        owner: &str,
        lease_secs: i32,
    ) -> Result<bool, DaprError> {
        let left = self.left("a lock")?;
        self.note(match &self.api {
            Api::Grpc(g) => {
                g.try_lock(left, &self.lockstore, resource, owner, lease_secs)
                    .await
            }
            Api::Http(h) => h.try_lock(left, resource, owner, lease_secs).await,
        })
    }

    pub async fn unlock(&self, resource: &str, owner: &str) -> Result<Unlocked, DaprError> {
        let left = self.left("an unlock")?;
        self.note(match &self.api {
            Api::Grpc(g) => g.unlock(left, &self.lockstore, resource, owner).await,
            Api::Http(h) => h.unlock(left, resource, owner).await,
        })
    }

    pub async fn get(&self, key: &str) -> Result<Item, DaprError> {
        let left = self.left("a get")?;
        self.note(match &self.api {
            Api::Grpc(g) => g.get(left, &self.statestore, key).await,
            Api::Http(h) => h.get(left, key).await,
        })
    }

    /// One round trip for all keys, in order.
    pub async fn bulk_get(&self, keys: &[String]) -> Result<Vec<Item>, DaprError> {
        let left = self.left("a bulk get")?;
        let found = self.note(match &self.api {
            Api::Grpc(g) => g.bulk_get(left, &self.statestore, keys).await,
            Api::Http(h) => h.bulk_get(left, keys).await,
        })?;
        Ok(in_order(keys, found))
    }

    /// Creates each of `items` whose key does not exist yet, in one call. Which were
    /// created is for a read to tell: a first-write save on an existing key is refused
    /// (in-memory and SQLite as a conflict, Redis as a failure) while the others still go
    /// in, and that refusal is not an error here. On Redis only a key that was itself
    /// created first-write is safe from it: one written otherwise (by a transaction, as the
    /// booking's modes without ETags write nights) is overwritten, so those modes and the
    /// guarded ones must not share one Redis.
    pub async fn create(&self, items: Vec<NewItem>) -> Result<(), DaprError> {
        let left = self.left("a save")?;
        let r = self.note(match &self.api {
            Api::Grpc(g) => g.create(left, &self.statestore, items).await,
            Api::Http(h) => h.create(left, items).await,
        });
        match r {
            Ok(()) => Ok(()),
            Err(
                e @ (DaprError::Conflict(_)
                | DaprError::Failed {
                    code: tonic::Code::Internal,
                    ..
                }),
            ) => {
                // Also a store failure looks like this; the read that follows tells.
                tracing::debug!(error = %e, "a create was refused");
                Ok(())
            }
            Err(other) => Err(other),
        }
    }

    /// All operations or none (on this project's sidecar; see the README about real
    /// Dapr with Redis). An ETag that no longer matches fails the whole transaction.
    pub async fn transact(&self, ops: Vec<Op>) -> Result<(), DaprError> {
        let left = self.left("a transaction")?;
        self.note(match &self.api {
            Api::Grpc(g) => g.transact(left, &self.statestore, ops).await,
            Api::Http(h) => h.transact(left, ops).await,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{Item, in_order};

    fn item(key: &str, etag: &str) -> Item {
        Item {
            key: key.into(),
            data: b"{}".to_vec(),
            etag: etag.into(),
        }
    }

    #[test]
    fn a_bulk_read_answers_every_key_in_order_also_twice() {
        let keys: Vec<String> = ["b", "a", "b", "c"].map(String::from).to_vec();
        let got = in_order(&keys, vec![item("a", "1"), item("b", "2")]);
        let seen: Vec<(&str, &str)> = got
            .iter()
            .map(|i| (i.key.as_str(), i.etag.as_str()))
            .collect();
        assert_eq!(seen, [("b", "2"), ("a", "1"), ("b", "2"), ("c", "")]);
        assert!(!got[3].exists(), "a key not found does not exist");
    }
}
