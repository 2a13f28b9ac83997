//! The sidecar's shared state and the API operations both front ends (HTTP and gRPC) call,
//! so that validation order, key prefixing and error codes live in one place.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

use crate::components::{Components, LockComponent, StateComponent};
use crate::errors::ApiError;
use crate::invoke::Invoker;
use crate::lock::UnlockStatus;
use crate::state::{DeleteRequest, SetRequest, StoreError, Stored, TxOperation};
use axum::http::StatusCode;

/// Settings the APIs report or act on.
#[derive(Debug, Clone)]
pub struct RuntimeInfo {
    pub app_id: String,
    pub app_port: Option<u16>,
    pub app_protocol: String,
    pub app_channel_address: String,
    pub api_token: Option<String>,
    pub enable_api_logging: bool,
}

pub struct Runtime {
    pub info: RuntimeInfo,
    pub components: Components,
    pub invoker: Invoker,
    /// Set once the app's port accepts connections (or at once without `--app-port`).
    pub app_ready: AtomicBool,
    /// `PUT /v1.0/metadata/{attr}` values.
    pub extended: Mutex<HashMap<String, String>>,
    /// Flipped to true to ask the whole process to stop (`/v1.0/shutdown`, gRPC Shutdown).
    pub shutdown: watch::Sender<bool>,
}

pub const RUNTIME_VERSION: &str = concat!("sidecar-", env!("CARGO_PKG_VERSION"));

impl Runtime {
    pub fn app_id(&self) -> &str {
        &self.info.app_id
    }

    pub fn request_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    pub fn is_app_ready(&self) -> bool {
        self.app_ready.load(Ordering::Acquire)
    }

    pub fn state_store(&self, name: &str) -> Result<&StateComponent, ApiError> {
        if self.components.state.is_empty() {
            return Err(ApiError::state_store_not_configured(self.app_id()));
        }
        self.components
            .state
            .get(name)
            .ok_or_else(|| ApiError::state_store_not_found(name, self.app_id()))
    }

    fn check_key(&self, key: &str) -> Result<(), ApiError> {
        if key.contains("||") {
            return Err(ApiError::illegal_key(key, self.app_id()));
        }
        Ok(())
    }

    pub async fn get_state(
        &self,
        store: &StateComponent,
        key: &str,
    ) -> Result<Option<Stored>, ApiError> {
        self.check_key(key)?;
        store.store.get(&store.key(key)).await.map_err(|e| {
            ApiError::internal(
                "ERR_STATE_GET",
                format!("fail to get {key} from state store: {e}"),
            )
        })
    }

    pub async fn bulk_get(
        &self,
        store: &StateComponent,
        keys: &[String],
    ) -> Result<Vec<Result<Option<Stored>, StoreError>>, ApiError> {
        for k in keys {
            self.check_key(k)?;
        }
        let full: Vec<String> = keys.iter().map(|k| store.key(k)).collect();
        store.store.bulk_get(&full).await.map_err(|e| {
            ApiError::internal(
                "ERR_STATE_BULK_GET",
                format!("failed getting state in bulk: {e}"),
            )
        })
    }

    /// Writes every item; failures are joined as Dapr joins them (409 only if all are ETag
    /// mismatches, 400 if any ETag was invalid). Items that succeeded stay written.
    pub async fn save_state(
        &self,
        name: &str,
        store: &StateComponent,
        items: Vec<SetRequest>,
    ) -> Result<(), ApiError> {
        for item in &items {
            if item.key.is_empty() {
                return Err(ApiError::malformed("\"key\" is a required field"));
            }
            self.check_key(&item.key)?;
        }
        let mut errors = Vec::new();
        for mut item in items {
            item.key = store.key(&item.key);
            if let Err(e) = store.store.set(&item).await {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            return Ok(());
        }
        let status = if errors
            .iter()
            .all(|e| matches!(e, StoreError::EtagMismatch(_)))
        {
            (StatusCode::CONFLICT, tonic::Code::Aborted)
        } else if errors
            .iter()
            .any(|e| matches!(e, StoreError::EtagInvalid(_)))
        {
            (StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument)
        } else {
            (StatusCode::INTERNAL_SERVER_ERROR, tonic::Code::Internal)
        };
        let joined: Vec<String> = errors.iter().map(ToString::to_string).collect();
        Err(ApiError::new(
            "ERR_STATE_SAVE",
            status.0,
            status.1,
            format!(
                "failed saving state in state store {name}: {}",
                joined.join("\n")
            ),
        ))
    }

    pub async fn delete_state(
        &self,
        store: &StateComponent,
        mut req: DeleteRequest,
    ) -> Result<(), ApiError> {
        self.check_key(&req.key)?;
        let user_key = std::mem::take(&mut req.key);
        req.key = store.key(&user_key);
        store.store.delete(&req).await.map_err(|e| {
            let (status, code) = match e {
                StoreError::EtagMismatch(_) => (StatusCode::CONFLICT, tonic::Code::Aborted),
                StoreError::EtagInvalid(_) => {
                    (StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument)
                }
                StoreError::Backend(_) => {
                    (StatusCode::INTERNAL_SERVER_ERROR, tonic::Code::Internal)
                }
            };
            ApiError::new(
                "ERR_STATE_DELETE",
                status,
                code,
                format!("failed deleting state with key {user_key}: {e}"),
            )
        })
    }

    pub async fn transact(
        &self,
        name: &str,
        store: &StateComponent,
        mut ops: Vec<TxOperation>,
    ) -> Result<(), ApiError> {
        if !store.store.transactional() {
            return Err(ApiError::transactions_not_supported(name, self.app_id()));
        }
        if ops.is_empty() {
            return Ok(());
        }
        for op in &mut ops {
            let key = match op {
                TxOperation::Upsert(r) => &mut r.key,
                TxOperation::Delete(r) => &mut r.key,
            };
            self.check_key(key)?;
            *key = store.key(key);
        }
        store.store.multi(&ops).await.map_err(|e| {
            ApiError::internal(
                "ERR_STATE_TRANSACTION",
                format!("error while executing state transaction: {e}"),
            )
        })
    }

    /// Validation in daprd's order: expiry, lock stores configured, ids, store lookup.
    fn lock_store(
        &self,
        name: &str,
        resource_id: &str,
        owner: &str,
        expiry: Option<i32>,
    ) -> Result<&LockComponent, ApiError> {
        if let Some(expiry) = expiry
            && expiry <= 0
        {
            return Err(ApiError::malformed(format!(
                "ExpiryInSeconds is not positive in lock store {name}"
            )));
        }
        if self.components.lock.is_empty() {
            return Err(ApiError::lock_store_not_configured());
        }
        if resource_id.is_empty() {
            return Err(ApiError::malformed(format!(
                "ResourceId is empty in lock store {name}"
            )));
        }
        if owner.is_empty() {
            return Err(ApiError::malformed(format!(
                "LockOwner is empty in lock store {name}"
            )));
        }
        self.components
            .lock
            .get(name)
            .ok_or_else(|| ApiError::lock_store_not_found(name))
    }

    pub async fn try_lock(
        &self,
        name: &str,
        resource_id: &str,
        owner: &str,
        expiry: i32,
    ) -> Result<bool, ApiError> {
        let store = self.lock_store(name, resource_id, owner, Some(expiry))?;
        if resource_id.contains("||") {
            return Err(ApiError::internal(
                "ERR_TRY_LOCK",
                format!("input key/keyPrefix '{resource_id}' can't contain '||'"),
            ));
        }
        let key = format!("{}{resource_id}", store.prefix);
        store
            .store
            .try_lock(&key, owner, expiry)
            .await
            .map_err(|e| {
                ApiError::internal("ERR_TRY_LOCK", format!("failed to try acquiring lock: {e}"))
            })
    }

    pub async fn unlock(
        &self,
        name: &str,
        resource_id: &str,
        owner: &str,
    ) -> Result<UnlockStatus, ApiError> {
        let store = self.lock_store(name, resource_id, owner, None)?;
        if resource_id.contains("||") {
            return Err(ApiError::internal(
                "ERR_UNLOCK",
                format!("input key/keyPrefix '{resource_id}' can't contain '||'"),
            ));
        }
        let key = format!("{}{resource_id}", store.prefix);
        store
            .store
            .unlock(&key, owner)
            .await
            .map_err(|e| ApiError::internal("ERR_UNLOCK", format!("failed to release lock: {e}")))
    }

    /// The `/v1.0/metadata` document; gRPC builds its message from the same parts.
    pub fn metadata_json(&self) -> serde_json::Value {
        let mut extended: serde_json::Map<String, serde_json::Value> = self
            .extended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        extended.insert("daprRuntimeVersion".into(), RUNTIME_VERSION.into());
        let components: Vec<serde_json::Value> = self
            .components
            .registered
            .iter()
            .map(|c| {
                let mut v =
                    serde_json::json!({ "name": c.name, "type": c.kind, "version": c.version });
                if !c.capabilities.is_empty() {
                    v["capabilities"] = c.capabilities.clone().into();
                }
                v
            })
            .collect();
        let mut doc = serde_json::json!({
            "runtimeVersion": RUNTIME_VERSION,
            "extended": extended,
            "actorRuntime": { "runtimeStatus": "DISABLED" },
        });
        if !self.info.app_id.is_empty() {
            doc["id"] = self.info.app_id.clone().into();
        }
        if !components.is_empty() {
            doc["components"] = components.into();
        }
        let mut conn = serde_json::json!({
            "protocol": self.info.app_protocol,
            "channelAddress": self.info.app_channel_address,
        });
        if let Some(port) = self.info.app_port {
            conn["port"] = port.into();
        }
        doc["appConnectionProperties"] = conn;
        doc
    }
}
