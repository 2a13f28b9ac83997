//! Dapr's HTTP API (`/v1.0/state`, `/v1.0-alpha1/lock`) on one pooled keep-alive client:
//! the same calls as the gRPC side. Values travel as the
//! JSON they are (the sidecar stores the same bytes either way), and a status maps to the
//! error the gRPC side would give: 409 is an ETag conflict, 500 a store failure.
//!
//! HTTP has no `grpc-timeout`: a call's time left bounds the wait here, and the request
//! also carries it, less a margin, as `x-request-timeout-ms`, by which this project's
//! sidecar ends state and lock calls as it ends invocation hops (daprd ignores it there).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, ETAG, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::Full;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{DaprError, ErrorBody, Item, NewItem, Op, Unlocked};
use crate::origin::{Failure, Origin};
use crate::settings::DaprSettings;

/// What a path segment (a store name, a key) must not carry unencoded.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

fn segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// The HTTP side of a `SidecarClient`: one client, and the routes it calls, parsed once.
#[derive(Clone)]
pub struct Http {
    line: Origin,
    /// `/v1.0/state/{store}`: save, and the base of a single key's get.
    state_path: String,
    state: Uri,
    bulk: Uri,
    transaction: Uri,
    lock: Uri,
    unlock: Uri,
    token: Option<HeaderValue>,
}

#[derive(Serialize)]
struct FirstWrite {
    concurrency: &'static str,
    consistency: &'static str,
}

const FIRST_WRITE: FirstWrite = FirstWrite {
    concurrency: "first-write",
    consistency: "strong",
};

/// The metadata of one item: its TTL, or that it is an outbox projection.
#[derive(Serialize)]
struct Metadata {
    #[serde(rename = "ttlInSeconds", skip_serializing_if = "Option::is_none")]
    seconds: Option<String>,
    #[serde(rename = "outbox.projection", skip_serializing_if = "Option::is_none")]
    projection: Option<&'static str>,
    #[serde(rename = "contentType", skip_serializing_if = "Option::is_none")]
    content_type: Option<&'static str>,
}

/// An upsert's projection for the state store's outbox, published as JSON.
const PROJECTION: Metadata = Metadata {
    seconds: None,
    projection: Some("true"),
    content_type: Some("application/json"),
};

/// One item of a save, or the request of a transaction's operation.
#[derive(Serialize)]
struct StateItem<'a> {
    key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    etag: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata>,
    #[serde(skip_serializing_if = "Option::is_none")]
    options: Option<FirstWrite>,
}

#[derive(Serialize)]
struct Operation<'a> {
    operation: &'static str,
    request: StateItem<'a>,
}

#[derive(Serialize)]
struct Transaction<'a> {
    operations: Vec<Operation<'a>>,
}

#[derive(Deserialize)]
struct MetadataAnswer {
    #[serde(default)]
    components: Vec<Component>,
}

#[derive(Deserialize)]
struct Component {
    name: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Serialize)]
struct BulkRequest<'a> {
    keys: &'a [String],
}

#[derive(Deserialize)]
struct BulkItem<'a> {
    key: String,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    etag: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LockRequest<'a> {
    resource_id: &'a str,
    lock_owner: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiry_in_seconds: Option<i32>,
}

#[derive(Deserialize)]
struct Locked {
    #[serde(default)]
    success: bool,
}

#[derive(Deserialize)]
struct UnlockAnswer {
    #[serde(default)]
    status: i32,
}

/// A value as the JSON it must be: the HTTP API stores JSON.
fn json_value<'a>(key: &str, value: &'a [u8]) -> Result<&'a RawValue, DaprError> {
    serde_json::from_slice(value).map_err(|e| DaprError::Failed {
        code: tonic::Code::InvalidArgument,
        message: format!("the value of {key} is not JSON, which the HTTP API needs: {e}"),
    })
}

fn ttl(ttl: Option<u32>) -> Option<Metadata> {
    ttl.map(|t| Metadata {
        seconds: Some(t.to_string()),
        projection: None,
        content_type: None,
    })
}

/// The error the gRPC side would give for the sidecar's answer `status`.
fn status_error(what: &str, status: StatusCode, body: &[u8]) -> DaprError {
    let dapr = ErrorBody::parse(body);
    let message = match &dapr {
        Some(e) => format!("{what}: {} {}", e.error_code, e.message),
        None => format!("{what}: {status} {}", String::from_utf8_lossy(body)),
    };
    // A component that is not loaded is the same refusal as gRPC's FAILED_PRECONDITION,
    // not a store failure.
    if dapr.is_some_and(|e| e.error_code.ends_with("_NOT_CONFIGURED")) {
        return DaprError::Failed {
            code: tonic::Code::FailedPrecondition,
            message,
        };
    }
    let code = match status.as_u16() {
        409 => return DaprError::Conflict(message),
        // A proxy's or the sidecar's own trouble: whether a write landed is unknown.
        502 | 503 => return DaprError::Unavailable(message),
        408 | 504 => return DaprError::DeadlineExceeded(message),
        400 => tonic::Code::InvalidArgument,
        401 => tonic::Code::Unauthenticated,
        403 => tonic::Code::PermissionDenied,
        404 => tonic::Code::NotFound,
        429 => tonic::Code::ResourceExhausted,
        500 => tonic::Code::Internal,
        501 => tonic::Code::Unimplemented,
        _ => tonic::Code::Unknown,
    };
    DaprError::Failed { code, message }
}

/// `value` under `key` where the key does not exist yet: first-write, without an ETag.
fn created<'a>(key: &'a str, value: &'a [u8], t: Option<u32>) -> Result<StateItem<'a>, DaprError> {
    Ok(StateItem {
        key,
        value: Some(json_value(key, value)?),
        etag: None,
        metadata: ttl(t),
        options: Some(FIRST_WRITE),
    })
}

fn malformed(what: &str, e: &serde_json::Error) -> DaprError {
    DaprError::Failed {
        // Not the store failing: a sidecar that is not Dapr's (a 502 `store_error`).
        code: tonic::Code::DataLoss,
        message: format!("{what}: the sidecar's answer is not what Dapr sends: {e}"),
    }
}

impl Http {
    pub fn new(settings: &DaprSettings) -> Result<Self, DaprError> {
        let line = Origin::sidecar(settings);
        let uri = |path: &str| {
            line.uri(path).map_err(|e| {
                DaprError::Unavailable(format!("no URI for the sidecar's {path}: {e}"))
            })
        };
        let state_path = format!("/v1.0/state/{}", segment(&settings.statestore));
        let lockstore = segment(&settings.lockstore);
        Ok(Http {
            state: uri(&state_path)?,
            bulk: uri(&format!("{state_path}/bulk"))?,
            transaction: uri(&format!("{state_path}/transaction"))?,
            lock: uri(&format!("/v1.0-alpha1/lock/{lockstore}"))?,
            unlock: uri(&format!("/v1.0-alpha1/unlock/{lockstore}"))?,
            state_path,
            token: settings
                .api_token
                .as_deref()
                .map(HeaderValue::from_str)
                .transpose()
                .map_err(|_| DaprError::Failed {
                    code: tonic::Code::InvalidArgument,
                    message: "DAPR_API_TOKEN cannot be sent as a header value".into(),
                })?,
            line,
        })
    }

    /// Whether the sidecar answers now, or why not.
    pub async fn check(&self) -> Result<(), String> {
        let uri = self
            .line
            .uri("/v1.0/healthz/outbound")
            .map_err(|e| e.to_string())?;
        let (status, _, _) = self
            .exchange(
                "health check",
                Some(Duration::from_secs(2)),
                Method::GET,
                uri,
                Bytes::new(),
            )
            .await
            .map_err(|e| e.to_string())?;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the sidecar answered {status}"))
        }
    }

    /// One request and its whole answer, within `left`.
    async fn exchange(
        &self,
        what: &str,
        left: Option<Duration>,
        method: Method,
        uri: Uri,
        body: Bytes,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), DaprError> {
        let mut req = Request::builder().method(method).uri(uri);
        if !body.is_empty() {
            req = req.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        if let Some(t) = &self.token {
            req = req.header(crate::token::HEADER, t.clone());
        }
        if let Some(left) = left {
            // A little less than this call waits, as every hop hands on: the sidecar gives
            // up first, so a write it drops is known dropped once this wait ends.
            let next = crate::request::timeout_for_next_hop(Instant::now() + left).max(1);
            req = req.header(crate::request::TIMEOUT_HEADER, HeaderValue::from(next));
        }
        let req = req.body(Full::new(body)).map_err(|e| DaprError::Failed {
            code: tonic::Code::Internal,
            message: format!("{what}: {e}"),
        })?;
        let (parts, body) = self.line.exchange(req, left).await.map_err(|f| match f {
            Failure::Late => {
                DaprError::DeadlineExceeded(format!("{what} took longer than {left:?}"))
            }
            Failure::Connecting(e) => DaprError::Unavailable(format!("{what}: {e}")),
            Failure::Sending(e) | Failure::Reading(e) => {
                DaprError::Unavailable(format!("{what}: {e}"))
            }
            // This line has no limit on answers.
            too_large @ Failure::TooLarge(_) => {
                DaprError::Unavailable(format!("{what}: {too_large}"))
            }
        })?;
        let (status, headers) = (parts.status, parts.headers);
        if status.is_success() {
            Ok((status, headers, body))
        } else {
            Err(status_error(what, status, &body))
        }
    }

    /// POSTs `body` as JSON; the answer's body.
    async fn post(
        &self,
        what: &str,
        left: Option<Duration>,
        uri: &Uri,
        body: &impl Serialize,
    ) -> Result<Bytes, DaprError> {
        let body = serde_json::to_vec(body).map_err(|e| DaprError::Failed {
            code: tonic::Code::InvalidArgument,
            message: format!("{what}: {e}"),
        })?;
        let (_, _, answer) = self
            .exchange(what, left, Method::POST, uri.clone(), Bytes::from(body))
            .await?;
        Ok(answer)
    }

    /// The loaded components' names and types.
    pub async fn component_types(
        &self,
        left: Option<Duration>,
    ) -> Result<Vec<(String, String)>, DaprError> {
        let what = "metadata";
        let uri = self
            .line
            .uri("/v1.0/metadata")
            .map_err(|e| DaprError::Failed {
                code: tonic::Code::Internal,
                message: format!("{what}: {e}"),
            })?;
        let (_, _, body) = self
            .exchange(what, left, Method::GET, uri, Bytes::new())
            .await?;
        let answer: MetadataAnswer =
            serde_json::from_slice(&body).map_err(|e| malformed(what, &e))?;
        Ok(answer
            .components
            .into_iter()
            .map(|c| (c.name, c.kind))
            .collect())
    }

    pub async fn try_lock(
        &self,
        left: Option<Duration>,
        resource: &str,
        owner: &str,
        lease_secs: i32,
    ) -> Result<bool, DaprError> {
        let what = "lock";
        let request = LockRequest {
            resource_id: resource,
            lock_owner: owner,
            expiry_in_seconds: Some(lease_secs),
        };
        let answer = self.post(what, left, &self.lock, &request).await?;
        let locked: Locked = serde_json::from_slice(&answer).map_err(|e| malformed(what, &e))?;
        Ok(locked.success)
    }

    pub async fn unlock(
        &self,
        left: Option<Duration>,
        resource: &str,
        owner: &str,
    ) -> Result<Unlocked, DaprError> {
        let what = "unlock";
        let request = LockRequest {
            resource_id: resource,
            lock_owner: owner,
            expiry_in_seconds: None,
        };
        let answer = self.post(what, left, &self.unlock, &request).await?;
        let r: UnlockAnswer = serde_json::from_slice(&answer).map_err(|e| malformed(what, &e))?;
        Ok(Unlocked::from_status(r.status))
    }

    pub async fn get(&self, left: Option<Duration>, key: &str) -> Result<Item, DaprError> {
        let what = "get";
        let path = format!("{}/{}?consistency=strong", self.state_path, segment(key));
        let uri = self.line.uri(&path).map_err(|e| DaprError::Failed {
            code: tonic::Code::InvalidArgument,
            message: format!("{what} {key}: {e}"),
        })?;
        let (status, headers, body) = self
            .exchange(what, left, Method::GET, uri, Bytes::new())
            .await?;
        let etag = headers
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Ok(Item {
            key: key.to_string(),
            data: if status == StatusCode::NO_CONTENT {
                Vec::new()
            } else {
                body.to_vec()
            },
            etag,
        })
    }

    /// Every item the sidecar answered for, in no particular order.
    pub async fn bulk_get(
        &self,
        left: Option<Duration>,
        keys: &[String],
    ) -> Result<Vec<Item>, DaprError> {
        let what = "bulk get";
        let answer = self
            .post(what, left, &self.bulk, &BulkRequest { keys })
            .await?;
        let items: Vec<BulkItem> =
            serde_json::from_slice(&answer).map_err(|e| malformed(what, &e))?;
        items
            .into_iter()
            .map(|it| match it.error.filter(|e| !e.is_empty()) {
                Some(error) => Err(DaprError::item_failed(&it.key, &error)),
                None => Ok(Item {
                    data: it
                        .data
                        .map(|d| d.get().as_bytes().to_vec())
                        .unwrap_or_default(),
                    etag: it.etag.unwrap_or_default(),
                    key: it.key,
                }),
            })
            .collect()
    }

    pub async fn create(
        &self,
        left: Option<Duration>,
        items: Vec<NewItem>,
    ) -> Result<(), DaprError> {
        let states = items
            .iter()
            .map(|item| created(&item.key, &item.value, item.ttl))
            .collect::<Result<Vec<_>, DaprError>>()?;
        self.post("save", left, &self.state, &states).await?;
        Ok(())
    }

    pub async fn transact(&self, left: Option<Duration>, ops: Vec<Op>) -> Result<(), DaprError> {
        let operations = ops
            .iter()
            .map(|op| {
                Ok(match op {
                    Op::Upsert {
                        key,
                        value,
                        etag,
                        ttl: t,
                    } => Operation {
                        operation: "upsert",
                        request: StateItem {
                            key,
                            value: Some(json_value(key, value)?),
                            etag: etag.as_deref(),
                            metadata: ttl(*t),
                            options: etag.as_ref().map(|_| FIRST_WRITE),
                        },
                    },
                    Op::Create { key, value, ttl } => Operation {
                        operation: "upsert",
                        request: created(key, value, *ttl)?,
                    },
                    Op::Projection { key, value } => Operation {
                        operation: "upsert",
                        request: StateItem {
                            key,
                            value: Some(json_value(key, value)?),
                            etag: None,
                            metadata: Some(PROJECTION),
                            options: None,
                        },
                    },
                    Op::Delete { key, etag } => Operation {
                        operation: "delete",
                        request: StateItem {
                            key,
                            value: None,
                            etag: etag.as_deref(),
                            metadata: None,
                            options: etag.as_ref().map(|_| FIRST_WRITE),
                        },
                    },
                })
            })
            .collect::<Result<Vec<_>, DaprError>>()?;
        self.post(
            "transaction",
            left,
            &self.transaction,
            &Transaction { operations },
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{DaprError, StatusCode, segment, status_error};

    #[test]
    fn answers_map_to_the_errors_grpc_gives() {
        let body = br#"{"errorCode":"ERR_STATE_SAVE","message":"possible etag mismatch"}"#;
        let e = |status: u16| status_error("save", StatusCode::from_u16(status).unwrap(), body);
        assert!(matches!(e(409), DaprError::Conflict(m) if m.contains("ERR_STATE_SAVE")));
        assert!(matches!(e(503), DaprError::Unavailable(_)));
        assert!(matches!(e(502), DaprError::Unavailable(_)));
        assert!(matches!(e(504), DaprError::DeadlineExceeded(_)));
        assert!(matches!(
            e(500),
            DaprError::Failed {
                code: tonic::Code::Internal,
                ..
            }
        ));
        assert!(matches!(
            e(400),
            DaprError::Failed {
                code: tonic::Code::InvalidArgument,
                ..
            }
        ));
        let missing = status_error(
            "save",
            StatusCode::INTERNAL_SERVER_ERROR,
            br#"{"errorCode":"ERR_STATE_STORE_NOT_CONFIGURED","message":"state store is not configured"}"#,
        );
        assert!(
            matches!(
                missing,
                DaprError::Failed {
                    code: tonic::Code::FailedPrecondition,
                    ..
                }
            ),
            "as gRPC answers it: {missing:?}"
        );
        let plain = status_error("get", StatusCode::UNAUTHORIZED, b"invalid api token\n");
        assert!(
            matches!(&plain, DaprError::Failed { code: tonic::Code::Unauthenticated, message } if message.contains("invalid api token")),
            "{plain:?}"
        );
    }

    #[test]
    fn keys_are_one_path_segment() {
        assert_eq!(segment("hotel-1-2026-12-01"), "hotel-1-2026-12-01");
        assert_eq!(segment("a/b?c#d e%"), "a%2Fb%3Fc%23d%20e%25");
        assert_eq!(segment("idempotency-k:1.x_y"), "idempotency-k:1.x_y");
    }
}
