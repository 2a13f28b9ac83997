//! Publishing: the checks daprd makes, in its order and with its errors (an empty pub/sub
//! name, one not loaded, an empty topic, unreadable metadata), the envelope, and the
//! component's publish.

use std::collections::HashMap;

use axum::http::StatusCode;
use bytes::Bytes;

use super::Api;
use crate::errors::ApiError;
use crate::pubsub::cloudevent::{self, Publish};
use crate::pubsub::subscriptions::parse_bool;
use crate::pubsub::{Message, PubSub, meta};

/// How long a publish may wait for the component to take it.
const PUBLISH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A publish as a transport decoded it.
pub struct PublishRequest {
    pub pubsub: String,
    pub topic: String,
    pub data: Bytes,
    pub content_type: String,
    /// `metadata.*` query parameters (HTTP) or the request's metadata map (gRPC).
    pub metadata: HashMap<String, String>,
    pub traceparent: String,
}

fn invalid(
    code: &'static str,
    reason: &'static str,
    message: String,
    pubsub: Option<&str>,
    info: HashMap<String, String>,
) -> ApiError {
    ApiError::pubsub(
        code,
        StatusCode::NOT_FOUND,
        tonic::Code::InvalidArgument,
        reason,
        message,
        pubsub,
        info,
    )
}

impl Api {
    /// The pub/sub component `name`, checked as daprd checks a publish's target.
    fn pubsub_for(
        &self,
        name: &str,
        metadata: &HashMap<String, String>,
    ) -> Result<&PubSub, ApiError> {
        if name.is_empty() {
            return Err(invalid(
                "ERR_PUBSUB_EMPTY",
                "DAPR_PUBSUB_NAME_EMPTY",
                "pubsub name is empty".into(),
                Some(name),
                metadata.clone(),
            ));
        }
        self.components.pubsub.get(name).ok_or_else(|| {
            invalid(
                "ERR_PUBSUB_NOT_FOUND",
                "DAPR_PUBSUB_NOT_FOUND",
                format!("pubsub {name} is not found"),
                None,
                metadata.clone(),
            )
        })
    }

    pub async fn publish(&self, req: PublishRequest) -> Result<(), ApiError> {
        let pubsub = self.pubsub_for(&req.pubsub, &req.metadata)?;
        if req.topic.is_empty() {
            return Err(invalid(
                "ERR_TOPIC_NAME_EMPTY",
                "DAPR_PUBSUB_TOPIC_NAME_EMPTY",
                format!("topic is empty in pubsub {}", req.pubsub),
                Some(&req.pubsub),
                req.metadata.clone(),
            ));
        }
        let raw = match meta(&req.metadata, "rawPayload") {
            None => false,
            Some(v) => parse_bool(v).ok_or_else(|| {
                ApiError::pubsub(
                    "ERR_PUBSUB_REQUEST_METADATA",
                    StatusCode::BAD_REQUEST,
                    tonic::Code::InvalidArgument,
                    "DAPR_PUBSUB_METADATA_DESERIALIZATION",
                    format!(
                        "failed deserializing metadata. Error: rawPayload {v:?} is not a boolean"
                    ),
                    Some(&req.pubsub),
                    req.metadata.clone(),
                )
            })?,
        };
        let info = |error: String| -> HashMap<String, String> {
            [
                ("appID".to_string(), self.app_id().to_string()),
                ("error".to_string(), error),
            ]
            .into()
        };
        let data = if raw {
            req.data
        } else {
            let envelope = cloudevent::envelope(&Publish {
                app_id: self.app_id(),
                pubsub: &req.pubsub,
                topic: &req.topic,
                content_type: &req.content_type,
                data: &req.data,
                metadata: &req.metadata,
                traceparent: &req.traceparent,
            })
            .map_err(|e| {
                ApiError::pubsub(
                    "ERR_PUBSUB_CLOUD_EVENTS_SER",
                    StatusCode::INTERNAL_SERVER_ERROR,
                    tonic::Code::InvalidArgument,
                    "DAPR_PUBSUB_CLOUD_EVENT_CREATION",
                    "cannot create cloudevent",
                    Some(&req.pubsub),
                    info(e.to_string()),
                )
            })?;
            Bytes::from(envelope)
        };
        let message = Message {
            topic: req.topic.clone(),
            data,
            metadata: req.metadata,
        };
        let published = pubsub.publish_within(message, PUBLISH_TIMEOUT).await;
        published.map_err(|e| {
            ApiError::pubsub(
                "ERR_PUBSUB_PUBLISH_MESSAGE",
                StatusCode::INTERNAL_SERVER_ERROR,
                tonic::Code::Internal,
                "DAPR_PUBSUB_PUBLISH_MESSAGE",
                format!(
                    "error when publishing to topic {} in pubsub {}: {e}",
                    req.topic, req.pubsub
                ),
                Some(&req.pubsub),
                [
                    ("topic".to_string(), req.topic.clone()),
                    ("error".to_string(), e.to_string()),
                ]
                .into(),
            )
        })
    }
}
