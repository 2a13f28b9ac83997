//! Dapr's HTTP API (`/v1.0/state`, `/v1.0-alpha1/lock`) on one pooled keep-alive client:
//! the same calls as the gRPC side, for `DAPR_API_PROTOCOL=http`. Values travel as the
//! JSON they are (the sidecar stores the same bytes either way), and a status maps to the
//! error the gRPC side would give: 409 is an ETag conflict, 500 a store failure.
//!
//! HTTP has no `grpc-timeout`: a call's time left bounds the wait here, and the request
//! also carries it as `x-request-timeout-ms` (the header this project's invocation path
//! reads; daprd ignores it on state calls).

use std::time::Duration;

use reqwest::{StatusCode, Url, header::HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{DaprError, Item, NewItem, Op, Unlocked};
use crate::settings::DaprSettings;

/// The HTTP side of a `SidecarClient`: one client, and the routes it calls, parsed once.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    /// `…/v1.0/state/{store}`: save, and the base of a single key's get.
    state: Url,
    bulk: Url,
    transaction: Url,
    lock: Url,
    unlock: Url,
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

#[derive(Serialize)]
struct Ttl {
    #[serde(rename = "ttlInSeconds")]
    seconds: String,
}

/// One item of a save, or the request of a transaction's operation.
#[derive(Serialize)]
struct StateItem<'a> {
    key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    etag: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Ttl>,
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

/// Dapr's error body: `{"errorCode": "...", "message": "..."}`.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "errorCode", default)]
    error_code: String,
    #[serde(default)]
    message: String,
}

/// A value as the JSON it must be: the HTTP API stores JSON.
fn json_value<'a>(key: &str, value: &'a [u8]) -> Result<&'a RawValue, DaprError> {
    serde_json::from_slice(value).map_err(|e| DaprError::Failed {
        code: tonic::Code::InvalidArgument,
        message: format!("the value of {key} is not JSON, which the HTTP API needs: {e}"),
    })
}

fn ttl(ttl: Option<u32>) -> Option<Ttl> {
    ttl.map(|t| Ttl {
        seconds: t.to_string(),
    })
}

/// The error the gRPC side would give for the sidecar's answer `status`.
fn status_error(what: &str, status: StatusCode, body: &[u8]) -> DaprError {
    let message = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) if !e.error_code.is_empty() => format!("{what}: {} {}", e.error_code, e.message),
        _ => format!("{what}: {status} {}", String::from_utf8_lossy(body)),
    };
    let code = match status.as_u16() {
        409 => return DaprError::Conflict(message),
        503 => return DaprError::Unavailable(message),
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

fn malformed(what: &str, e: &serde_json::Error) -> DaprError {
    DaprError::Failed {
        code: tonic::Code::Internal,
        message: format!("{what}: the sidecar's answer is not what Dapr sends: {e}"),
    }
}

impl Http {
    pub fn new(settings: &DaprSettings) -> Result<Self, DaprError> {
        let unavailable = |e: &dyn std::fmt::Display| DaprError::Unavailable(e.to_string());
        let mut client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1024)
            .pool_idle_timeout(Duration::from_secs(90))
            .connect_timeout(Duration::from_secs(2))
            .no_proxy();
        let origin = match &settings.http_socket {
            Some(path) => {
                client = client.unix_socket(path.clone());
                "http://localhost".to_string()
            }
            None => format!("http://127.0.0.1:{}", settings.http_port),
        };
        let url =
            |path: String| Url::parse(&format!("{origin}{path}")).map_err(|e| unavailable(&e));
        let mut state = url("/v1.0/state".into())?;
        state
            .path_segments_mut()
            .map_err(|()| unavailable(&"the sidecar's URL cannot take a path"))?
            .push(&settings.statestore);
        let lock_route = |route: &str| -> Result<Url, DaprError> {
            let mut u = url(format!("/v1.0-alpha1/{route}"))?;
            u.path_segments_mut()
                .map_err(|()| unavailable(&"the sidecar's URL cannot take a path"))?
                .push(&settings.lockstore);
            Ok(u)
        };
        let (lock, unlock) = (lock_route("lock")?, lock_route("unlock")?);
        let under = |leaf: &str| {
            let mut u = state.clone();
            u.path_segments_mut().expect("a base URL").push(leaf);
            u
        };
        Ok(Http {
            client: client.build().map_err(|e| unavailable(&e))?,
            bulk: under("bulk"),
            transaction: under("transaction"),
            state,
            lock,
            unlock,
            token: settings
                .api_token
                .as_deref()
                .and_then(|t| HeaderValue::from_str(t).ok()),
        })
    }

    /// Whether the sidecar answers now, or why not.
    pub async fn check(&self) -> Result<(), String> {
        let mut health = self.state.clone();
        health.set_path("/v1.0/healthz/outbound");
        let r = self
            .client
            .get(health)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(format!("the sidecar answered {}", r.status()))
        }
    }

    /// Sends one request within `left`; the answer's status and body, if it is a success.
    async fn send(
        &self,
        what: &str,
        left: Option<Duration>,
        mut req: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, reqwest::header::HeaderMap, bytes::Bytes), DaprError> {
        if let Some(t) = &self.token {
            req = req.header(crate::token::HEADER, t.clone());
        }
        if let Some(left) = left {
            req = req.timeout(left).header(
                crate::request::TIMEOUT_HEADER,
                left.as_millis().max(1).to_string(),
            );
        }
        let failed = |e: reqwest::Error| {
            if e.is_timeout() {
                DaprError::DeadlineExceeded(format!("{what} took longer than {left:?}"))
            } else {
                DaprError::Unavailable(format!("{what}: {e}"))
            }
        };
        let r = req.send().await.map_err(failed)?;
        let (status, headers) = (r.status(), r.headers().clone());
        let body = r.bytes().await.map_err(failed)?;
        if status.is_success() {
            Ok((status, headers, body))
        } else {
            Err(status_error(what, status, &body))
        }
    }

    fn post(&self, url: &Url, body: Vec<u8>) -> reqwest::RequestBuilder {
        self.client
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
    }

    fn encode(what: &str, body: &impl Serialize) -> Result<Vec<u8>, DaprError> {
        serde_json::to_vec(body).map_err(|e| DaprError::Failed {
            code: tonic::Code::InvalidArgument,
            message: format!("{what}: {e}"),
        })
    }

    pub async fn try_lock(
        &self,
        left: Option<Duration>,
        resource: &str,
        owner: &str,
        lease_secs: i32,
    ) -> Result<bool, DaprError> {
        let what = "lock";
        let body = Self::encode(
            what,
            &LockRequest {
                resource_id: resource,
                lock_owner: owner,
                expiry_in_seconds: Some(lease_secs),
            },
        )?;
        let (_, _, answer) = self.send(what, left, self.post(&self.lock, body)).await?;
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
        let body = Self::encode(
            what,
            &LockRequest {
                resource_id: resource,
                lock_owner: owner,
                expiry_in_seconds: None,
            },
        )?;
        let (_, _, answer) = self.send(what, left, self.post(&self.unlock, body)).await?;
        let r: UnlockAnswer = serde_json::from_slice(&answer).map_err(|e| malformed(what, &e))?;
        Ok(Unlocked::from_status(r.status))
    }

    pub async fn get(&self, left: Option<Duration>, key: &str) -> Result<Item, DaprError> {
        let mut url = self.state.clone();
        url.path_segments_mut().expect("a base URL").push(key);
        url.set_query(Some("consistency=strong"));
        let (status, headers, body) = self.send("get", left, self.client.get(url)).await?;
        let etag = headers
            .get(reqwest::header::ETAG)
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
        let body = Self::encode(what, &BulkRequest { keys })?;
        let (_, _, answer) = self.send(what, left, self.post(&self.bulk, body)).await?;
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
        let what = "save";
        let states = items
            .iter()
            .map(|item| {
                Ok(StateItem {
                    key: &item.key,
                    value: Some(json_value(&item.key, &item.value)?),
                    etag: None,
                    metadata: ttl(item.ttl),
                    options: Some(FIRST_WRITE),
                })
            })
            .collect::<Result<Vec<_>, DaprError>>()?;
        let body = Self::encode(what, &states)?;
        self.send(what, left, self.post(&self.state, body)).await?;
        Ok(())
    }

    pub async fn transact(&self, left: Option<Duration>, ops: Vec<Op>) -> Result<(), DaprError> {
        let what = "transaction";
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
        let body = Self::encode(what, &Transaction { operations })?;
        self.send(what, left, self.post(&self.transaction, body))
            .await?;
        Ok(())
    }
}
