//! Metadata, health and shutdown: what the sidecar tells about itself, in one typed
//! document that each transport encodes (JSON over HTTP, `GetMetadataResponse` over gRPC).

use std::collections::BTreeMap;

use super::{Api, RUNTIME_VERSION};
use crate::components::Registered;
use crate::errors::ApiError;
use crate::pubsub::subscriptions::Subscription;

/// The metadata document.
pub struct Metadata<'a> {
    pub app_id: &'a str,
    pub runtime_version: &'static str,
    /// Values set through the API, plus `daprRuntimeVersion`.
    pub extended: BTreeMap<String, String>,
    pub components: &'a [Registered],
    pub app_port: Option<u16>,
    pub app_protocol: &'a str,
    pub app_channel_address: &'a str,
    /// The app's health probe, when there is one.
    pub app_health: Option<HealthProperties>,
}

/// The health probe as daprd reports it: durations in Go's format, no path for a gRPC app.
pub struct HealthProperties {
    pub check_path: Option<String>,
    pub probe_interval: String,
    pub probe_timeout: String,
    pub threshold: i32,
}

impl Api {
    pub fn metadata(&self) -> Metadata<'_> {
        let mut extended: BTreeMap<String, String> = self
            .extended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        extended.insert("daprRuntimeVersion".into(), RUNTIME_VERSION.into());
        Metadata {
            app_id: &self.config.app_id,
            runtime_version: RUNTIME_VERSION,
            extended,
            components: &self.components.registered,
            app_port: self.config.app_port(),
            app_protocol: &self.config.app_protocol,
            app_channel_address: &self.config.app_channel_address,
            app_health: self.invoker.health().check().map(|h| HealthProperties {
                // daprd: the path means nothing to a gRPC app.
                check_path: (!self.config.app_protocol.eq_ignore_ascii_case("grpc"))
                    .then(|| h.path.clone()),
                probe_interval: crate::apphealth::go_duration(h.interval),
                probe_timeout: crate::apphealth::go_duration(h.timeout),
                threshold: i32::try_from(h.threshold).unwrap_or(i32::MAX),
            }),
        }
    }

    /// The subscriptions in force: the app's and the declared ones once the app was asked
    /// for its own, then the streams open now.
    pub fn subscriptions(&self) -> Vec<Subscription> {
        let mut all = self.subscriptions.get().cloned().unwrap_or_default();
        all.extend(self.streams.list());
        all
    }

    pub fn set_metadata(&self, key: String, value: String) {
        self.extended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, value);
    }

    /// Inbound health: ready once the app is; `asked_app_id`, when given, must be ours.
    pub fn health(&self, asked_app_id: Option<&str>) -> Result<(), ApiError> {
        if asked_app_id.is_some_and(|app| app != self.app_id()) {
            return Err(ApiError::internal(
                "ERR_HEALTH_APPID_NOT_MATCH",
                "dapr app-id does not match",
            ));
        }
        if !self.is_app_ready() {
            return Err(ApiError::internal(
                "ERR_HEALTH_NOT_READY",
                "dapr is not ready",
            ));
        }
        Ok(())
    }
}
