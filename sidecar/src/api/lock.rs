//! Distributed locks (`v1.0-alpha1`): try-lock and unlock, checked in daprd's order.

use super::Api;
use crate::components::LockComponent;
use crate::errors::ApiError;
use crate::lock::{Lease, UnlockStatus};

/// The longest resource id and owner a lock takes. Not a daprd rule: each lease is held in
/// memory (in-memory locks) or in Redis until it ends, so the cap on leases held at once
/// must also be a cap on their size.
pub const MAX_LOCK_ID: usize = 1024;

/// A lock request as either transport carries it.
#[derive(Debug, Clone)]
pub struct LockRequest {
    pub store: String,
    pub resource_id: String,
    pub owner: String,
}

impl Api {
    /// The lock store and the store's key for the request, checked in daprd's order:
    /// expiry, lock stores configured, ids, store lookup, then the resource's `||`.
    fn lock_key(
        &self,
        req: &LockRequest,
        expiry: Option<i32>,
        code: &'static str,
    ) -> Result<(&LockComponent, String), ApiError> {
        let name = &req.store;
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
        if req.resource_id.is_empty() {
            return Err(ApiError::malformed(format!(
                "ResourceId is empty in lock store {name}"
            )));
        }
        if req.owner.is_empty() {
            return Err(ApiError::malformed(format!(
                "LockOwner is empty in lock store {name}"
            )));
        }
        if req.resource_id.len() > MAX_LOCK_ID || req.owner.len() > MAX_LOCK_ID {
            return Err(ApiError::malformed(format!(
                "ResourceId and LockOwner may be at most {MAX_LOCK_ID} bytes in lock store {name}"
            )));
        }
        let store = self
            .components
            .lock
            .get(name)
            .ok_or_else(|| ApiError::lock_store_not_found(name))?;
        if req.resource_id.contains("||") {
            return Err(ApiError::internal(
                code,
                format!(
                    "input key/keyPrefix '{}' can't contain '||'",
                    req.resource_id
                ),
            ));
        }
        let mut key = String::with_capacity(store.prefix.len() + req.resource_id.len());
        key.push_str(&store.prefix);
        key.push_str(&req.resource_id);
        Ok((store, key))
    }

    pub async fn try_lock(&self, req: &LockRequest, expiry: i32) -> Result<bool, ApiError> {
        let (store, key) = self.lock_key(req, Some(expiry), "ERR_TRY_LOCK")?;
        store
            .store
            .try_lock(&Lease {
                key: &key,
                owner: &req.owner,
                expiry_secs: expiry,
            })
            .await
            .map_err(|e| {
                ApiError::internal("ERR_TRY_LOCK", format!("failed to try acquiring lock: {e}"))
            })
    }

    pub async fn unlock(&self, req: &LockRequest) -> Result<UnlockStatus, ApiError> {
        let (store, key) = self.lock_key(req, None, "ERR_UNLOCK")?;
        store
            .store
            .unlock(&key, &req.owner)
            .await
            .map_err(|e| ApiError::internal("ERR_UNLOCK", format!("failed to release lock: {e}")))
    }
}
