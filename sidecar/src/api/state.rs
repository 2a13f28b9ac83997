//! State operations: get, bulk get, save, delete and transactions, on the typed requests
//! the transports decode. Keys are checked and prefixed here; metadata (TTL) is read here.
//!
//! A save's items and a transaction's operations come as the transport decoded them, each
//! possibly a decoding error (a bad `concurrency` over HTTP, a non-JSON value marked JSON
//! over gRPC): the core meets them in item order, so with several faults in one request
//! the answer is the one daprd gives, whichever transport carried it.

use std::collections::HashMap;

use axum::http::StatusCode;
use bytes::Bytes;

use super::Api;
use crate::components::StateComponent;
use crate::errors::ApiError;
use crate::pubsub::outbox::{self, Outbox, Upsert};
use crate::state::{
    Concurrency, DeleteRequest, SetRequest, StoreError, Stored, TxOperation, parse_ttl,
};

/// How long a transaction's outbox events may wait for the pub/sub to take them.
const OUTBOX_PUBLISH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One item to save, as either transport carries it.
#[derive(Debug, Clone)]
pub struct SaveItem {
    pub key: String,
    pub value: Bytes,
    pub etag: Option<String>,
    pub concurrency: Concurrency,
    /// The item's metadata, with the request's merged in (e.g. `ttlInSeconds`).
    pub metadata: HashMap<String, String>,
    /// The value is JSON text (HTTP), not raw bytes (gRPC): what an outbox event is made of.
    pub json: bool,
}

/// One operation of a transaction, as either transport carries it.
#[derive(Debug, Clone)]
pub enum TxOp {
    Upsert(SaveItem),
    Delete(DeleteRequest),
    /// An operation type Dapr does not know, refused by the core like daprd does.
    Other(String),
}

impl SaveItem {
    fn as_upsert(&self) -> Upsert<'_> {
        Upsert {
            key: &self.key,
            value: &self.value,
            json: self.json,
            metadata: &self.metadata,
        }
    }

    /// The store's request: the key as given, `ttlInSeconds` read from the metadata.
    fn into_set(self) -> Result<SetRequest, ApiError> {
        let ttl = match self.metadata.get("ttlInSeconds") {
            None => None,
            Some(v) => parse_ttl(v).map_err(ApiError::malformed)?,
        };
        Ok(SetRequest {
            key: self.key,
            value: self.value,
            etag: self.etag.filter(|e| !e.is_empty()),
            concurrency: self.concurrency,
            ttl,
        })
    }
}

impl Api {
    pub fn state_store(&self, name: &str) -> Result<&StateComponent, ApiError> {
        if self.components.state.is_empty() {
            return Err(ApiError::state_store_not_configured(self.app_id()));
        }
        self.components
            .state
            .get(name)
            .ok_or_else(|| ApiError::state_store_not_found(name, self.app_id()))
    }

    pub async fn get_state(
        &self,
        store: &StateComponent,
        key: &str,
    ) -> Result<Option<Stored>, ApiError> {
        self.check_key(store, key, false)?;
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
            self.check_key(store, k, false)?;
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
        items: Vec<Result<SaveItem, ApiError>>,
    ) -> Result<(), ApiError> {
        let items = items
            .into_iter()
            .map(|item| item?.into_set())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.in_grpc_as("ERR_STATE_SAVE"))?;
        for item in &items {
            if item.key.is_empty() {
                return Err(
                    ApiError::malformed("\"key\" is a required field").in_grpc_as("ERR_STATE_SAVE")
                );
            }
            self.check_key(store, &item.key, false)?;
        }
        // All at once, as daprd's bulk save runs them: on SQLite with FULL they queue for
        // one group commit instead of one disk sync each (with NORMAL, where there is no
        // sync to share, each commits in turn where it is asked).
        let items: Vec<SetRequest> = items
            .into_iter()
            .map(|mut item| {
                item.key = store.key(&item.key);
                item
            })
            .collect();
        let errors: Vec<StoreError> =
            futures_util::future::join_all(items.iter().map(|item| store.store.set(item)))
                .await
                .into_iter()
                .filter_map(Result::err)
                .collect();
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

    /// Deletes the items one by one, stopping at the first failure.
    pub async fn delete_state(
        &self,
        store: &StateComponent,
        items: Vec<DeleteRequest>,
    ) -> Result<(), ApiError> {
        for mut req in items {
            self.check_key(store, &req.key, false)?;
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
            })?;
        }
        Ok(())
    }

    /// All operations or none. Checked as daprd does: each operation in order (its own
    /// faults, an unknown type), then every key.
    pub async fn transact(
        &self,
        store: &StateComponent,
        ops: Vec<Result<TxOp, ApiError>>,
    ) -> Result<(), ApiError> {
        let mut decoded = Vec::with_capacity(ops.len());
        // The upserts as the outbox needs them (position, item), when the store has one.
        let mut outbox_items = Vec::new();
        let in_grpc = |e: ApiError| e.in_grpc_as("ERR_STATE_TRANSACTION");
        for op in ops {
            decoded.push(match op.map_err(in_grpc)? {
                TxOp::Upsert(item) => {
                    if store.outbox.is_some() {
                        outbox_items.push((decoded.len(), item.clone()));
                    }
                    TxOperation::Upsert(item.into_set().map_err(in_grpc)?)
                }
                TxOp::Delete(req) => TxOperation::Delete(req),
                TxOp::Other(kind) => {
                    return Err(ApiError::new(
                        "ERR_NOT_SUPPORTED_STATE_OPERATION",
                        StatusCode::BAD_REQUEST,
                        tonic::Code::Unimplemented,
                        format!("operation type {kind} not supported"),
                    ));
                }
            });
        }
        let mut checked = Vec::with_capacity(decoded.len());
        for mut op in decoded {
            let key = match &mut op {
                TxOperation::Upsert(r) => &mut r.key,
                TxOperation::Delete(r) => &mut r.key,
            };
            self.check_key(store, key, true)?;
            *key = store.key(key);
            checked.push(op);
        }
        let markers = match &store.outbox {
            Some(outbox) => {
                self.publish_outbox(outbox, &outbox_items, &mut checked)
                    .await?
            }
            None => Vec::new(),
        };
        if checked.is_empty() {
            return Ok(());
        }
        let result = store.store.multi(&checked).await;
        if let Some(outbox) = &store.outbox {
            outbox.settled(
                &markers,
                match &result {
                    Ok(()) => Some(true),
                    Err(StoreError::EtagMismatch(_) | StoreError::EtagInvalid(_)) => Some(false),
                    // The store may have committed or not: the marker will tell.
                    Err(StoreError::Backend(_)) => None,
                },
            );
        }
        result.map_err(|e| {
            ApiError::internal(
                "ERR_STATE_TRANSACTION",
                format!("error while executing state transaction: {e}"),
            )
        })
    }

    /// Sends a transaction's events to the outbox's internal topic, takes its projections
    /// out of the transaction and adds the markers; the markers' keys.
    async fn publish_outbox(
        &self,
        outbox: &Outbox,
        items: &[(usize, SaveItem)],
        checked: &mut Vec<TxOperation>,
    ) -> Result<Vec<String>, ApiError> {
        // Projections are payloads only, never written: set apart, with their positions.
        let (mut projections, mut upserts, mut dropped) = (Vec::new(), Vec::new(), Vec::new());
        for (at, item) in items {
            let op = item.as_upsert();
            if op.is_projection() {
                projections.push(op);
                dropped.push(*at);
            } else {
                upserts.push(op);
            }
        }
        let prepared = outbox.prepare(self.app_id(), &upserts, &projections);
        let fail = |error: String| {
            ApiError::pubsub(
                "ERR_PUBLISH_OUTBOX",
                StatusCode::INTERNAL_SERVER_ERROR,
                tonic::Code::Internal,
                "DAPR_PUBSUB_OUTBOX",
                format!("error while publishing outbox message: {error}"),
                // daprd's PubSubOutbox names no resource.
                None,
                [
                    ("appID".to_string(), self.app_id().to_string()),
                    ("error".to_string(), error),
                ]
                .into(),
            )
        };
        let internal = self
            .components
            .pubsub
            .get(&outbox.internal_pubsub)
            .ok_or_else(|| fail(format!("pubsub {} is not found", outbox.internal_pubsub)))?;
        for event in prepared.events {
            if let Err(e) = internal.publish_within(event, OUTBOX_PUBLISH_TIMEOUT).await {
                // The transaction will not run: the events already out are never passed on.
                outbox.settled(&prepared.markers, Some(false));
                return Err(fail(e.to_string()));
            }
        }
        let mut position = 0;
        checked.retain(|_| {
            position += 1;
            !dropped.contains(&(position - 1))
        });
        checked.extend(outbox::marker_writes(&prepared.markers));
        Ok(prepared.markers)
    }
}
