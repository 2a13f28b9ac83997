//! The backend's line to its sidecar: Dapr's gRPC API through the `dapr` crate's generated
//! client, which (unlike the crate's high-level client) keeps the gRPC status code, so an
//! ETag conflict can be told from a store failure, and has locks and transactions.
//!
//! The channel connects lazily and reconnects by itself, so the app can start before its
//! sidecar and survives a sidecar restart; a call while the sidecar is down fails fast.
//! Every call carries a deadline (`SidecarClient::until`): the sidecar sees it as
//! `grpc-timeout`, and the call gives up locally when it passes, so a stalled sidecar or
//! store can never hold a request (or a lock) without end.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use dapr::dapr::proto::common::v1::{Etag, StateItem, StateOptions};
use dapr::dapr::proto::runtime::v1::dapr_client::DaprClient;
use dapr::dapr::proto::runtime::v1::{
    ExecuteStateTransactionRequest, GetBulkStateRequest, GetStateRequest, SaveStateRequest,
    TransactionalStateOperation, TryLockRequest, UnlockRequest,
};
use hyper_util::rt::TokioIo;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::settings::DaprSettings;

/// Adds `dapr-api-token` to every call when `DAPR_API_TOKEN` is set.
#[derive(Clone)]
pub struct Token(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for Token {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.0 {
            req.metadata_mut().insert(crate::token::HEADER, t.clone());
        }
        Ok(req)
    }
}

type Raw = DaprClient<InterceptedService<Channel, Token>>;

#[derive(Debug, thiserror::Error)]
pub enum DaprError {
    /// The sidecar could not be reached, or said it is unavailable.
    #[error("dapr sidecar unavailable: {0}")]
    Unavailable(String),
    /// First-write / ETag refusal (gRPC ABORTED).
    #[error("etag conflict: {0}")]
    Conflict(String),
    /// The call's deadline passed first; whether a write took effect is unknown.
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    /// Anything else the sidecar or its store reported.
    #[error("dapr call failed ({code:?}): {message}")]
    Failed { code: tonic::Code, message: String },
}

impl From<tonic::Status> for DaprError {
    fn from(s: tonic::Status) -> Self {
        match s.code() {
            tonic::Code::Unavailable => DaprError::Unavailable(s.message().to_string()),
            tonic::Code::Aborted => DaprError::Conflict(s.message().to_string()),
            tonic::Code::DeadlineExceeded => DaprError::DeadlineExceeded(s.message().to_string()),
            code => DaprError::Failed {
                code,
                message: s.message().to_string(),
            },
        }
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
    Delete {
        key: String,
        etag: Option<String>,
    },
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

/// The app's client of its sidecar: state calls on one state store, lock calls on one
/// lock store.
#[derive(Clone)]
pub struct SidecarClient {
    raw: Raw,
    statestore: String,
    lockstore: String,
    /// When every call made through this handle gives up.
    deadline: Option<Instant>,
}

/// Connects to the sidecar's gRPC socket (`DAPR_GRPC_ENDPOINT=unix:///path`); the
/// channel's URI then only names the origin of the calls.
fn unix_connector(
    path: std::path::PathBuf,
) -> impl tower::Service<
    http::Uri,
    Response = TokioIo<tokio::net::UnixStream>,
    Error = std::io::Error,
    Future = impl Future<Output = std::io::Result<TokioIo<tokio::net::UnixStream>>> + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |_: http::Uri| {
        let path = path.clone();
        async move { Ok(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
    })
}

/// `grpc-timeout` for `left`, marked sensitive: the value differs on every call, and
/// HPACK would otherwise add each one to the connection's header table, evicting the
/// headers that repeat (measured: 45% fewer instructions encoding headers, 5% fewer in all).
fn grpc_timeout(left: Duration) -> tonic::metadata::MetadataValue<tonic::metadata::Ascii> {
    // At most 8 digits: microseconds below 100 s, milliseconds above.
    let text = match u64::try_from(left.as_micros()) {
        Ok(us) if us < 100_000_000 => format!("{}u", us.max(1)),
        _ => format!("{}m", left.as_millis().min(99_999_999)),
    };
    let mut value = tonic::metadata::MetadataValue::try_from(text.as_str())
        .expect("digits and a unit are ASCII");
    value.set_sensitive(true);
    value
}

fn ttl_metadata(ttl: Option<u32>) -> HashMap<String, String> {
    ttl.map(|t| HashMap::from([("ttlInSeconds".to_string(), t.to_string())]))
        .unwrap_or_default()
}

fn first_write() -> Option<StateOptions> {
    Some(StateOptions {
        concurrency: 1,
        consistency: 2,
    })
}

impl SidecarClient {
    fn endpoint(settings: &DaprSettings) -> Result<Endpoint, DaprError> {
        let uri = match settings.grpc_socket {
            Some(_) => "http://localhost".to_string(),
            None => settings.grpc_endpoint.clone(),
        };
        Ok(Endpoint::from_shared(uri)
            .map_err(|e| {
                DaprError::Unavailable(format!("bad gRPC endpoint {}: {e}", settings.grpc_endpoint))
            })?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true))
    }

    fn with_channel(settings: &DaprSettings, channel: Channel) -> Self {
        let token = settings.api_token.as_deref().and_then(|t| t.parse().ok());
        SidecarClient {
            raw: DaprClient::with_interceptor(channel, Token(token))
                .max_decoding_message_size(64 << 20),
            statestore: settings.statestore.clone(),
            lockstore: settings.lockstore.clone(),
            deadline: None,
        }
    }

    /// The same client, with every call made through it bounded by `deadline`.
    pub fn until(&self, deadline: Instant) -> SidecarClient {
        SidecarClient {
            deadline: Some(deadline),
            ..self.clone()
        }
    }

    /// Runs one call within the deadline: the sidecar is told the time left
    /// (`grpc-timeout`), and the wait ends here when it runs out either way.
    async fn call<T, R, Fut>(
        &self,
        what: &str,
        request: T,
        send: impl FnOnce(Raw, tonic::Request<T>) -> Fut,
    ) -> Result<R, DaprError>
    where
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let mut request = tonic::Request::new(request);
        let Some(deadline) = self.deadline else {
            return Ok(send(self.raw.clone(), request).await?.into_inner());
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(DaprError::DeadlineExceeded(format!(
                "no time left for {what}"
            )));
        }
        request
            .metadata_mut()
            .insert("grpc-timeout", grpc_timeout(left));
        let late = || DaprError::DeadlineExceeded(format!("{what} took longer than {left:?}"));
        match tokio::time::timeout(left, send(self.raw.clone(), request)).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            // tonic ends a call whose grpc-timeout passed as CANCELLED.
            Ok(Err(s)) if s.code() == tonic::Code::Cancelled && Instant::now() >= deadline => {
                Err(late())
            }
            Ok(Err(s)) => Err(s.into()),
            Err(_) => Err(late()),
        }
    }

    /// A client that connects on its first call and reconnects by itself.
    pub fn new(settings: &DaprSettings) -> Result<Self, DaprError> {
        let endpoint = Self::endpoint(settings)?;
        let channel = match &settings.grpc_socket {
            Some(path) => endpoint.connect_with_connector_lazy(unix_connector(path.clone())),
            None => endpoint.connect_lazy(),
        };
        Ok(Self::with_channel(settings, channel))
    }

    /// A client connected now (retrying for up to 30 s while the sidecar starts).
    pub async fn connect(settings: &DaprSettings) -> Result<Self, DaprError> {
        let endpoint = Self::endpoint(settings)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let connected = match &settings.grpc_socket {
                Some(path) => {
                    endpoint
                        .connect_with_connector(unix_connector(path.clone()))
                        .await
                }
                None => endpoint.connect().await,
            };
            match connected {
                Ok(channel) => return Ok(Self::with_channel(settings, channel)),
                Err(e) if std::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "sidecar not reachable yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(DaprError::Unavailable(e.to_string())),
            }
        }
    }

    pub async fn try_lock(
        &self,
        resource: &str,
        owner: &str,
        lease_secs: i32,
    ) -> Result<bool, DaprError> {
        let req = TryLockRequest {
            store_name: self.lockstore.clone(),
            resource_id: resource.to_string(),
            lock_owner: owner.to_string(),
            expiry_in_seconds: lease_secs,
        };
        let r = self
            .call("TryLockAlpha1", req, |mut raw, req| async move {
                raw.try_lock_alpha1(req).await
            })
            .await?;
        Ok(r.success)
    }

    pub async fn unlock(&self, resource: &str, owner: &str) -> Result<Unlocked, DaprError> {
        let req = UnlockRequest {
            store_name: self.lockstore.clone(),
            resource_id: resource.to_string(),
            lock_owner: owner.to_string(),
        };
        let r = self
            .call("UnlockAlpha1", req, |mut raw, req| async move {
                raw.unlock_alpha1(req).await
            })
            .await?;
        Ok(match r.status {
            0 => Unlocked::Released,
            1 => Unlocked::DidNotExist,
            _ => Unlocked::HeldByOther,
        })
    }

    pub async fn get(&self, key: &str) -> Result<Item, DaprError> {
        let req = GetStateRequest {
            store_name: self.statestore.clone(),
            key: key.to_string(),
            consistency: 2,
            metadata: HashMap::new(),
        };
        let r = self
            .call("GetState", req, |mut raw, req| async move {
                raw.get_state(req).await
            })
            .await?;
        Ok(Item {
            key: key.to_string(),
            data: r.data,
            etag: r.etag,
        })
    }

    /// One round trip for all keys, in order.
    pub async fn bulk_get(&self, keys: &[String]) -> Result<Vec<Item>, DaprError> {
        let req = GetBulkStateRequest {
            store_name: self.statestore.clone(),
            keys: keys.to_vec(),
            parallelism: 0,
            metadata: HashMap::new(),
        };
        let r = self
            .call("GetBulkState", req, |mut raw, req| async move {
                raw.get_bulk_state(req).await
            })
            .await?;
        let mut by_key: HashMap<String, Item> = HashMap::with_capacity(r.items.len());
        for it in r.items {
            if !it.error.is_empty() {
                return Err(DaprError::Failed {
                    code: tonic::Code::Internal,
                    message: format!("reading {}: {}", it.key, it.error),
                });
            }
            by_key.insert(
                it.key.clone(),
                Item {
                    key: it.key,
                    data: it.data,
                    etag: it.etag,
                },
            );
        }
        Ok(keys
            .iter()
            .map(|k| {
                by_key.remove(k).unwrap_or(Item {
                    key: k.clone(),
                    data: Vec::new(),
                    etag: String::new(),
                })
            })
            .collect())
    }

    /// Creates each of `items` whose key does not exist yet, in one call. Which were
    /// created is for a read to tell: a first-write save on an existing key is refused
    /// (in-memory and SQLite as a conflict, Redis as a failure) while the others still go
    /// in, and that refusal is not an error here. On Redis only a key that was itself
    /// created first-write is safe from it: one written otherwise (by a transaction, as the
    /// booking's modes without ETags write nights) is overwritten, so those modes and the
    /// guarded ones must not share one Redis.
    pub async fn create(&self, items: Vec<NewItem>) -> Result<(), DaprError> {
        let states = items
            .into_iter()
            .map(|item| StateItem {
                key: item.key,
                value: item.value,
                etag: None,
                metadata: ttl_metadata(item.ttl),
                options: first_write(),
            })
            .collect();
        let req = SaveStateRequest {
            store_name: self.statestore.clone(),
            states,
        };
        let r = self
            .call("SaveState", req, |mut raw, req| async move {
                raw.save_state(req).await
            })
            .await;
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
        let operations = ops
            .into_iter()
            .map(|op| {
                let (kind, key, value, etag, ttl) = match op {
                    Op::Upsert {
                        key,
                        value,
                        etag,
                        ttl,
                    } => ("upsert", key, value, etag, ttl),
                    Op::Delete { key, etag } => ("delete", key, Vec::new(), etag, None),
                };
                let options = etag.as_ref().and(first_write());
                TransactionalStateOperation {
                    operation_type: kind.to_string(),
                    request: Some(StateItem {
                        key,
                        value,
                        etag: etag.map(|value| Etag { value }),
                        metadata: ttl_metadata(ttl),
                        options,
                    }),
                }
            })
            .collect();
        let req = ExecuteStateTransactionRequest {
            store_name: self.statestore.clone(),
            operations,
            metadata: HashMap::new(),
        };
        self.call("ExecuteStateTransaction", req, |mut raw, req| async move {
            raw.execute_state_transaction(req).await
        })
        .await?;
        Ok(())
    }
}
