//! The Dapr API, free of any transport. Each operation takes a typed request that a
//! transport (`crate::transport::http`, `crate::transport::grpc`) decoded once, and gives
//! a typed answer or an `ApiError` that each transport encodes its own way. The rules that
//! do not depend on the wire live here only (store lookup, key checks and prefixing, TTL
//! metadata, lock checks, unknown operations, and their order and error codes): state
//! (`state`), locks (`lock`), metadata and health (`metadata`); invocation is
//! `crate::invoke`. The transports keep only what their encoding brings: JSON parsing and
//! `concurrency` words over HTTP, the `contentType` check over gRPC.

pub mod lock;
pub mod metadata;
pub mod pubsub;
pub mod state;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use tokio::sync::watch;

use crate::components::Components;
use crate::config::Config;
use crate::errors::ApiError;
use crate::invoke::Invoker;
use crate::pubsub::subscriptions::Subscription;

/// The sidecar's API and what it serves from: components, invocation, readiness.
pub struct Api {
    /// The sidecar's settings, as given.
    pub config: Config,
    pub components: Components,
    pub invoker: Invoker,
    /// Set once the app's port accepts connections (or at once without `--app-port`).
    pub app_ready: AtomicBool,
    /// `PUT /v1.0/metadata/{attr}` values.
    pub extended: Mutex<HashMap<String, String>>,
    /// Flipped to true to ask the whole process to stop (`/v1.0/shutdown`, gRPC Shutdown).
    pub shutdown: watch::Sender<bool>,
    /// The `Subscription` resources for this app.
    pub declared_subscriptions: Vec<Subscription>,
    /// The subscriptions in force, set once the app was asked for its own.
    pub subscriptions: OnceLock<Vec<Subscription>>,
    /// The streaming subscriptions open now.
    pub streams: crate::pubsub::stream::Streams,
}

pub const RUNTIME_VERSION: &str = concat!("sidecar-", env!("CARGO_PKG_VERSION"));

impl Api {
    pub fn app_id(&self) -> &str {
        &self.config.app_id
    }

    pub fn request_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    pub fn is_app_ready(&self) -> bool {
        self.app_ready.load(Ordering::Acquire)
    }

    /// State keys may not hold `||`, the separator of the prefixes (lock resources are
    /// checked in `lock`, with the lock API's own error).
    fn check_key(
        &self,
        store: &crate::components::StateComponent,
        key: &str,
        in_transaction: bool,
    ) -> Result<(), ApiError> {
        if key.contains("||") {
            return Err(ApiError::illegal_key(key, &store.name, in_transaction));
        }
        Ok(())
    }
}
