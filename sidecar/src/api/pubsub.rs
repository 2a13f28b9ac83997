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

/// One entry of a bulk publish, as a transport decoded it.
pub struct BulkEntry {
    pub entry_id: String,
    /// The event's bytes, or why they could not be had (HTTP: an event that does not
    /// match its content type).
    pub data: Result<Bytes, String>,
    pub content_type: String,
    /// The entry's own metadata; `None` when it has none.
    pub metadata: Option<HashMap<String, String>>,
}

/// A bulk publish as a transport decoded it.
pub struct BulkPublishRequest {
    pub pubsub: String,
    pub topic: String,
    pub entries: Vec<BulkEntry>,
    /// `metadata.*` query parameters (HTTP) or the request's metadata map (gRPC).
    pub metadata: HashMap<String, String>,
    pub traceparent: String,
}

/// An entry the component did not take.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FailedEntry {
    #[serde(rename = "entryId")]
    pub entry_id: String,
    pub error: String,
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
    pub(crate) fn pubsub_for(
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

    /// The pub/sub `name` and whether payloads go raw, after daprd's checks of a
    /// publish's target: the name, the topic, the `rawPayload` metadata.
    fn publish_target(
        &self,
        name: &str,
        topic: &str,
        metadata: &HashMap<String, String>,
    ) -> Result<(&PubSub, bool), ApiError> {
        let pubsub = self.pubsub_for(name, metadata)?;
        if topic.is_empty() {
            return Err(invalid(
                "ERR_TOPIC_NAME_EMPTY",
                "DAPR_PUBSUB_TOPIC_NAME_EMPTY",
                format!("topic is empty in pubsub {name}"),
                Some(name),
                metadata.clone(),
            ));
        }
        let raw = match meta(metadata, "rawPayload") {
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
                    Some(name),
                    metadata.clone(),
                )
            })?,
        };
        Ok((pubsub, raw))
    }

    /// daprd's checks of a publish's target alone (for an answer that comes after them).
    pub fn check_publish_target(
        &self,
        name: &str,
        topic: &str,
        metadata: &HashMap<String, String>,
    ) -> Result<(), ApiError> {
        self.publish_target(name, topic, metadata).map(|_| ())
    }

    /// A bulk publish whose body is not a list of entries.
    pub fn unreadable_events(&self, pubsub: &str, topic: &str, error: &str) -> ApiError {
        ApiError::pubsub(
            "ERR_PUBSUB_EVENTS_SER",
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            "DAPR_PUBSUB_UNMARSHAL_EVENTS",
            format!(
                "error when unmarshaling the request for topic {topic} pubsub {pubsub}: {error}"
            ),
            Some(pubsub),
            [("appID".to_string(), self.app_id().to_string())].into(),
        )
    }

    /// `ErrorInfo.metadata` of daprd's errors about the app's own request.
    fn app_error(&self, error: String) -> HashMap<String, String> {
        [
            ("appID".to_string(), self.app_id().to_string()),
            ("error".to_string(), error),
        ]
        .into()
    }

    /// What goes to the component: the data as it is (`rawPayload`), or its CloudEvent.
    fn payload(&self, raw: bool, publish: &Publish<'_>) -> Result<Bytes, ApiError> {
        if raw {
            return Ok(Bytes::copy_from_slice(publish.data));
        }
        let envelope = cloudevent::envelope(publish).map_err(|e| {
            ApiError::pubsub(
                "ERR_PUBSUB_CLOUD_EVENTS_SER",
                StatusCode::INTERNAL_SERVER_ERROR,
                tonic::Code::InvalidArgument,
                "DAPR_PUBSUB_CLOUD_EVENT_CREATION",
                "cannot create cloudevent",
                Some(publish.pubsub),
                self.app_error(e.to_string()),
            )
        })?;
        Ok(Bytes::from(envelope))
    }

    pub async fn publish(&self, req: PublishRequest) -> Result<(), ApiError> {
        let (pubsub, raw) = self.publish_target(&req.pubsub, &req.topic, &req.metadata)?;
        let data = self.payload(
            raw,
            &Publish {
                app_id: self.app_id(),
                pubsub: &req.pubsub,
                topic: &req.topic,
                content_type: &req.content_type,
                data: &req.data,
                metadata: &req.metadata,
                traceparent: &req.traceparent,
            },
        )?;
        let message = Message {
            topic: req.topic.clone(),
            data,
            metadata: req.metadata,
        };
        let published = pubsub.publish_within(message, PUBLISH_TIMEOUT).await;
        published.map_err(|e| publish_failed(&req.pubsub, &req.topic, &e.to_string()))
    }

    /// Bulk publish: every entry checked first (its event readable, its id present and
    /// its own), then each published by itself, all at once (as daprd does for a
    /// component without bulk publish); the entries that failed, with their errors.
    pub async fn bulk_publish(
        &self,
        req: BulkPublishRequest,
    ) -> Result<Vec<FailedEntry>, ApiError> {
        let (pubsub, raw) = self.publish_target(&req.pubsub, &req.topic, &req.metadata)?;
        let marshal = |reason: &'static str, message: String, error: String| {
            ApiError::pubsub(
                "ERR_PUBSUB_EVENTS_SER",
                StatusCode::BAD_REQUEST,
                tonic::Code::InvalidArgument,
                reason,
                message,
                Some(&req.pubsub),
                self.app_error(error),
            )
        };
        let mut ids = std::collections::HashSet::new();
        let mut messages = Vec::with_capacity(req.entries.len());
        for entry in &req.entries {
            let data = entry.data.as_ref().map_err(|error| {
                marshal(
                    "DAPR_PUBSUB_MARSHAL_ENVELOPE",
                    format!(
                        "error when marshalling cloud event envelope for topic {} pubsub {}: {error}",
                        req.topic, req.pubsub
                    ),
                    error.clone(),
                )
            })?;
            if entry.entry_id.is_empty() || !ids.insert(entry.entry_id.as_str()) {
                let error = "entryId is duplicated or not present for entry";
                return Err(marshal(
                    "DAPR_PUBSUB_MARSHAL_EVENTS",
                    format!(
                        "error marshaling events to bytes for topic {} pubsub {}. error: {error}",
                        req.topic, req.pubsub
                    ),
                    error.into(),
                ));
            }
            // An entry's own metadata over the request's; an entry without any has none
            // (daprd applies no request-level CloudEvent overrides to it).
            let metadata = entry.metadata.as_ref().map_or_else(HashMap::new, |own| {
                let mut m = req.metadata.clone();
                m.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
                m
            });
            let data = self.payload(
                raw,
                &Publish {
                    app_id: self.app_id(),
                    pubsub: &req.pubsub,
                    topic: &req.topic,
                    content_type: &entry.content_type,
                    data,
                    metadata: &metadata,
                    traceparent: &req.traceparent,
                },
            )?;
            let message = Message {
                topic: req.topic.clone(),
                data,
                metadata,
            };
            messages.push((entry.entry_id.clone(), message));
        }
        let sends = messages.into_iter().map(|(entry_id, message)| async move {
            let published = pubsub.publish_within(message, PUBLISH_TIMEOUT).await;
            published.err().map(|e| FailedEntry {
                entry_id,
                error: e.to_string(),
            })
        });
        let failed = futures_util::future::join_all(sends).await;
        Ok(failed.into_iter().flatten().collect())
    }
}

/// daprd's `PublishMessage`: the component did not take a message.
pub fn publish_failed(pubsub: &str, topic: &str, error: &str) -> ApiError {
    ApiError::pubsub(
        "ERR_PUBSUB_PUBLISH_MESSAGE",
        StatusCode::INTERNAL_SERVER_ERROR,
        tonic::Code::Internal,
        "DAPR_PUBSUB_PUBLISH_MESSAGE",
        format!("error when publishing to topic {topic} in pubsub {pubsub}: {error}"),
        Some(pubsub),
        [
            ("topic".to_string(), topic.to_string()),
            ("error".to_string(), error.to_string()),
        ]
        .into(),
    )
}
