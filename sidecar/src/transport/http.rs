//! The Dapr HTTP API: invocation, state, locks, health, metadata and shutdown, with daprd's
//! routes, status codes and error bodies (see `shared/DAPR_API.md`). Handlers only decode
//! a request into the core's operation (`crate::api`) and encode its answer; an
//! `ApiError` encodes itself.
//!
//! Unmatched routes fall to invocation by the `dapr-app-id` header, as in daprd, and end in
//! 404 `ERR_DIRECT_INVOKE` when there is no app id. Paths are normalised (trailing slash,
//! doubled slashes) before routing.

use std::collections::HashMap;
use std::sync::Arc;

use appkit::token;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Path, RawQuery, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::api::Api;
use crate::api::lock::LockRequest;
use crate::api::pubsub::{BulkEntry, BulkPublishRequest, PublishRequest};
use crate::api::state::{SaveItem, TxOp};
use crate::errors::ApiError;
use crate::invoke::{Call, read_body};
use crate::state::{Concurrency, DeleteRequest};

type Rt = State<Arc<Api>>;

/// What a handler answers: a response, or an error that renders itself.
type Answer = Result<Response, ApiError>;

pub fn router(rt: Arc<Api>) -> Router {
    // State and lock calls end when their caller's time does (`x-request-timeout-ms`), as
    // `grpc-timeout` ends them over gRPC: a queued store write whose caller is gone is
    // then never run.
    let store_calls = Router::new()
        .route("/v1.0/state/{store}", post(save_state).put(save_state))
        .route(
            "/v1.0/state/{store}/bulk",
            post(bulk_get)
                .put(bulk_get)
                .get(get_bulk_named_key)
                .delete(delete_bulk_named_key),
        )
        .route(
            "/v1.0/state/{store}/transaction",
            post(transaction)
                .put(transaction)
                .get(get_transaction_named_key),
        )
        .route(
            "/v1.0/state/{store}/{key}",
            get(get_state).delete(delete_state),
        )
        .route("/v1.0-alpha1/lock/{store}", post(try_lock))
        .route("/v1.0-alpha1/unlock/{store}", post(unlock))
        .route_layer(tower::layer::layer_fn(WithinCallerTime));
    let mut r = Router::new()
        .route("/v1.0/healthz", get(healthz))
        .route("/v1.0/healthz/outbound", get(healthz_outbound))
        .route("/v1.0/metadata", get(metadata))
        .route("/v1.0/metadata/{attr}", put(set_metadata))
        .route("/v1.0/shutdown", post(shutdown))
        .route(
            "/v1.0/publish/{pubsub}/{*topic}",
            post(publish).put(publish),
        )
        .route(
            "/v1.0/publish/{pubsub}",
            post(publish_no_topic).put(publish_no_topic),
        )
        .route(
            "/v1.0-alpha1/publish/bulk/{pubsub}/{*topic}",
            post(bulk_publish).put(bulk_publish),
        )
        .route(
            "/v1.0/publish/bulk/{pubsub}/{*topic}",
            post(bulk_publish).put(bulk_publish),
        )
        .route("/v1.0/invoke/{app_id}/method/{*method}", any(invoke_path))
        .merge(store_calls)
        .fallback(invoke_by_header)
        .method_not_allowed_fallback(invoke_by_header);
    if rt.config.api_token().is_some() {
        r = r.layer(middleware::from_fn_with_state(rt.clone(), require_token));
    }
    if rt.config.enable_api_logging {
        r = r.layer(middleware::from_fn(log_call));
    }
    r.with_state(rt)
}

/// daprd strips one trailing `/` and collapses `//` before routing; a wrapper calls this
/// before the router sees the request.
pub fn normalize_path(mut req: Request<Body>) -> Request<Body> {
    let path = req.uri().path();
    if path.len() > 1 && (path.ends_with('/') || path.contains("//")) {
        let mut clean = String::with_capacity(path.len());
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            clean.push('/');
            clean.push_str(seg);
        }
        if clean.is_empty() {
            clean.push('/');
        }
        if let Some(q) = req.uri().query() {
            clean.push('?');
            clean.push_str(q);
        }
        let mut parts = req.uri().clone().into_parts();
        if let Ok(pq) = clean.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = axum::http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    req
}

async fn require_token(State(rt): Rt, mut req: Request<Body>, next: Next) -> Response {
    let exempt = req.method() == Method::GET
        && matches!(req.uri().path(), "/v1.0/healthz" | "/v1.0/healthz/outbound");
    let expected = rt.config.api_token().unwrap_or_default();
    let given = req
        .headers()
        .get(token::HEADER_NAME)
        .map(HeaderValue::as_bytes);
    let ok = token::matches(given, expected);
    if !exempt && !ok {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/plain")],
            "invalid api token\n",
        )
            .into_response();
    }
    req.headers_mut().remove(token::HEADER_NAME);
    next.run(req).await
}

/// Bounds a call by its caller's `x-request-timeout-ms`: past it the handler is dropped
/// and the answer is 504. A plain service rather than `from_fn`, which measured 11,000
/// instructions per booking on the state path for the same thing.
#[derive(Clone)]
struct WithinCallerTime<S>(S);

type Bounded = futures_util::future::Either<
    axum::routing::future::RouteFuture<std::convert::Infallible>,
    std::pin::Pin<Box<dyn Future<Output = Result<Response, std::convert::Infallible>> + Send>>,
>;

impl tower::Service<Request<Body>> for WithinCallerTime<axum::routing::Route> {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = Bounded;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        tower::Service::<Request<Body>>::poll_ready(&mut self.0, cx)
    }

    fn call(&mut self, req: Request<Body>) -> Bounded {
        let limit = appkit::request::time_given(req.headers());
        let answer = self.0.call(req);
        let Some(limit) = limit else {
            return futures_util::future::Either::Left(answer);
        };
        futures_util::future::Either::Right(Box::pin(async move {
            Ok(match tokio::time::timeout(limit, answer).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(never)) => match never {},
                Err(_) => ApiError::caller_timeout(format!(
                    "no answer within the caller's {limit:?} (x-request-timeout-ms)"
                ))
                .into_response(),
            })
        }))
    }
}

async fn log_call(req: Request<Body>, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let resp = next.run(req).await;
    tracing::info!(%method, %path, status = resp.status().as_u16(), "HTTP API called");
    resp
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn json_response(body: Vec<u8>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

async fn healthz(State(rt): Rt, RawQuery(q): RawQuery) -> Answer {
    let asked = query_pairs(q.as_deref())
        .into_iter()
        .find_map(|(k, v)| (k == "appid").then_some(v));
    rt.health(asked.as_deref())?;
    Ok(no_content())
}

async fn healthz_outbound() -> Response {
    no_content()
}

async fn metadata(State(rt): Rt) -> Response {
    let m = rt.metadata();
    let components: Vec<serde_json::Value> = m
        .components
        .iter()
        .map(|c| {
            let mut v = serde_json::json!({ "name": c.name, "type": c.kind, "version": c.version });
            if !c.capabilities.is_empty() {
                v["capabilities"] = c.capabilities.clone().into();
            }
            v
        })
        .collect();
    let mut doc = serde_json::json!({
        "runtimeVersion": m.runtime_version,
        "extended": m.extended,
        "actorRuntime": { "runtimeStatus": "DISABLED" },
    });
    if !m.app_id.is_empty() {
        doc["id"] = m.app_id.into();
    }
    if !components.is_empty() {
        doc["components"] = components.into();
    }
    let mut conn = serde_json::json!({
        "protocol": m.app_protocol,
        "channelAddress": m.app_channel_address,
    });
    if let Some(port) = m.app_port {
        conn["port"] = port.into();
    }
    if let Some(h) = m.app_health {
        let mut health = serde_json::json!({
            "healthProbeInterval": h.probe_interval,
            "healthProbeTimeout": h.probe_timeout,
            "healthThreshold": h.threshold,
        });
        if let Some(path) = h.check_path {
            health["healthCheckPath"] = path.into();
        }
        conn["health"] = health;
    }
    doc["appConnectionProperties"] = conn;
    let subscriptions: Vec<serde_json::Value> = rt
        .subscriptions()
        .iter()
        .map(|s| {
            let mut v = serde_json::json!({
                "pubsubname": s.pubsub,
                "topic": s.topic,
                "rules": s.rules,
                "deadLetterTopic": s.dead_letter_topic,
                "type": s.origin,
            });
            if !s.metadata.is_empty() {
                v["metadata"] = serde_json::json!(s.metadata);
            }
            v
        })
        .collect();
    if !subscriptions.is_empty() {
        doc["subscriptions"] = subscriptions.into();
    }
    json_response(serde_json::to_vec(&doc).unwrap_or_default())
}

/// `POST|PUT /v1.0/publish/{pubsub}/{topic}`: the body, its content type and the
/// `metadata.*` query parameters; 204 once the component took it.
async fn publish(
    State(rt): Rt,
    Path((pubsub, topic)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    Payload(body): Payload,
) -> Answer {
    let metadata = publish_metadata(query.as_deref())?;
    rt.publish(PublishRequest {
        pubsub,
        topic,
        data: body,
        content_type: header_text(&headers, "content-type"),
        metadata,
        traceparent: header_text(&headers, "traceparent"),
    })
    .await?;
    Ok(no_content())
}

/// The `metadata.*` query parameters of a publish.
fn publish_metadata(query: Option<&str>) -> Result<HashMap<String, String>, ApiError> {
    let pairs = serde_urlencoded::from_str::<Vec<(String, String)>>(query.unwrap_or(""))
        .map_err(|e| ApiError::malformed(format!("the query string is not readable: {e}")))?;
    let mut metadata = HashMap::new();
    for (k, v) in pairs {
        if let Some(name) = k.strip_prefix("metadata.") {
            metadata.entry(name.to_string()).or_insert(v);
        }
    }
    Ok(metadata)
}

fn header_text(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// One entry of a bulk publish's body.
#[derive(Deserialize)]
struct BulkPublishEntry {
    #[serde(rename = "entryId", default)]
    entry_id: String,
    #[serde(default)]
    event: serde_json::Value,
    #[serde(rename = "contentType", default)]
    content_type: String,
    #[serde(default)]
    metadata: Option<HashMap<String, String>>,
}

/// An entry's event as bytes, as daprd's `ConvertEventToBytes` reads it by its content
/// type: base64 text for binary, text for text and XML, JSON for JSON and CloudEvents.
fn event_bytes(event: &serde_json::Value, content_type: &str) -> Result<Bytes, String> {
    const MISMATCH: &str = "error: mismatch between contentType and event";
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/octet-stream" => {
            use base64::Engine as _;
            let text = event.as_str().ok_or(MISMATCH)?;
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map(Bytes::from)
                .map_err(|e| {
                    format!("error: unable to decode base64 application/octect-stream data: {e}")
                })
        }
        m if m.starts_with("text/") || m == "application/xml" => event
            .as_str()
            .map(|t| Bytes::copy_from_slice(t.as_bytes()))
            .ok_or_else(|| MISMATCH.to_string()),
        "application/json" | "application/cloudevents+json" => serde_json::to_vec(event)
            .map(Bytes::from)
            .map_err(|e| format!("{MISMATCH}: {e}")),
        m if m.ends_with("+json") => serde_json::to_vec(event)
            .map(Bytes::from)
            .map_err(|e| format!("{MISMATCH}: {e}")),
        _ => Err(MISMATCH.to_string()),
    }
}

/// `POST|PUT /v1.0-alpha1/publish/bulk/{pubsub}/{topic}`: 204 when every entry was
/// taken, else 500 with the entries that failed.
async fn bulk_publish(
    State(rt): Rt,
    Path((pubsub, topic)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    Payload(body): Payload,
) -> Answer {
    let metadata = publish_metadata(query.as_deref())?;
    let entries = match serde_json::from_slice::<Vec<BulkPublishEntry>>(&body) {
        Ok(entries) => entries,
        // Past the target's own checks, daprd's "cannot read the events".
        Err(e) => {
            rt.check_publish_target(&pubsub, &topic, &metadata)?;
            return Err(rt.unreadable_events(&pubsub, &topic, &e.to_string()));
        }
    };
    let failed = rt
        .bulk_publish(BulkPublishRequest {
            entries: entries
                .into_iter()
                .map(|e| BulkEntry {
                    data: event_bytes(&e.event, &e.content_type),
                    entry_id: e.entry_id,
                    content_type: e.content_type,
                    metadata: e.metadata,
                })
                .collect(),
            pubsub,
            topic,
            metadata,
            traceparent: header_text(&headers, "traceparent"),
        })
        .await?;
    if failed.is_empty() {
        return Ok(no_content());
    }
    let body = serde_json::json!({
        "failedEntries": failed,
        "errorCode": "ERR_PUBSUB_PUBLISH_MESSAGE",
    });
    let mut r = json_response(serde_json::to_vec(&body).unwrap_or_default());
    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    Ok(r)
}

/// A publish without a topic: daprd's "topic is empty" error (after the pub/sub's checks).
async fn publish_no_topic(
    rt: Rt,
    Path(pubsub): Path<String>,
    query: RawQuery,
    headers: HeaderMap,
    body: Payload,
) -> Answer {
    publish(rt, Path((pubsub, String::new())), query, headers, body).await
}

async fn set_metadata(State(rt): Rt, Path(attr): Path<String>, Payload(body): Payload) -> Response {
    rt.set_metadata(attr, String::from_utf8_lossy(&body).into_owned());
    no_content()
}

async fn shutdown(State(rt): Rt) -> Response {
    rt.request_shutdown();
    no_content()
}

/// `a=b&metadata.x=y` decoded; malformed pairs are skipped as Go's parser does.
fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    q.map(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).unwrap_or_default())
        .unwrap_or_default()
}

fn query_metadata(pairs: &[(String, String)]) -> HashMap<String, String> {
    pairs
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("metadata.")
                .map(|k| (k.to_string(), v.clone()))
        })
        .collect()
}

async fn get_state(
    State(rt): Rt,
    Path((store, key)): Path<(String, String)>,
    RawQuery(_): RawQuery,
) -> Answer {
    let found = rt.get_state(rt.state_store(&store)?, &key).await?;
    Ok(match found {
        None => no_content(),
        Some(item) => {
            let mut resp = json_response(item.data.to_vec());
            let headers = resp.headers_mut();
            if let Some(etag) = item.etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
                headers.insert(header::ETAG, etag);
            }
            for (k, v) in item.metadata {
                if let (Ok(name), Ok(value)) = (
                    header::HeaderName::from_bytes(format!("metadata.{k}").as_bytes()),
                    HeaderValue::from_str(&v),
                ) {
                    headers.insert(name, value);
                }
            }
            resp
        }
    })
}

async fn get_bulk_named_key(state: Rt, Path(store): Path<String>, q: RawQuery) -> Answer {
    get_state(state, Path((store, "bulk".into())), q).await
}

async fn get_transaction_named_key(state: Rt, Path(store): Path<String>, q: RawQuery) -> Answer {
    get_state(state, Path((store, "transaction".into())), q).await
}

async fn delete_bulk_named_key(
    state: Rt,
    Path(store): Path<String>,
    q: RawQuery,
    h: HeaderMap,
) -> Answer {
    delete_state(state, Path((store, "bulk".into())), q, h).await
}

#[derive(Deserialize, Default)]
struct ItemOptions {
    #[serde(default)]
    concurrency: Option<String>,
    #[serde(default)]
    consistency: Option<String>,
}

/// An item of a save or of a transaction's operation, as JSON carries it.
#[derive(Deserialize)]
struct JsonItem {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    value: Option<Box<RawValue>>,
    #[serde(default)]
    etag: Option<String>,
    #[serde(default)]
    metadata: Option<HashMap<String, String>>,
    #[serde(default)]
    options: Option<ItemOptions>,
}

fn concurrency_of(
    options: Option<&ItemOptions>,
    code: &'static str,
) -> Result<Concurrency, ApiError> {
    let Some(o) = options else {
        return Ok(Concurrency::Unspecified);
    };
    if let Some(c) = o.consistency.as_deref()
        && !matches!(c, "" | "strong" | "eventual")
    {
        return Err(ApiError::internal(
            code,
            format!("unknown consistency value {c:?}"),
        ));
    }
    let c = o.concurrency.as_deref().unwrap_or("");
    Concurrency::parse(c)
        .ok_or_else(|| ApiError::internal(code, format!("unknown concurrency value {c:?}")))
}

impl JsonItem {
    /// The core's item: the value's JSON text as is, the query's metadata merged in.
    fn decode(
        self,
        query_meta: &HashMap<String, String>,
        code: &'static str,
    ) -> Result<SaveItem, ApiError> {
        let mut metadata = self.metadata.unwrap_or_default();
        metadata.extend(query_meta.iter().map(|(k, v)| (k.clone(), v.clone())));
        let concurrency = concurrency_of(self.options.as_ref(), code)?;
        let value = match self.value {
            Some(raw) => Bytes::copy_from_slice(raw.get().as_bytes()),
            None => Bytes::from_static(b"null"),
        };
        Ok(SaveItem {
            key: self.key.unwrap_or_default(),
            value,
            etag: self.etag,
            concurrency,
            metadata,
            json: true,
        })
    }
}

fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::malformed(format!("failed to parse JSON: {e}")))
}

/// A request body within `--max-body-size`; a larger or broken one is an `ApiError`, JSON
/// like every other, where axum's own rejection would be plain text.
struct Payload(Bytes);

impl FromRequest<Arc<Api>> for Payload {
    type Rejection = ApiError;

    async fn from_request(req: Request, rt: &Arc<Api>) -> Result<Self, ApiError> {
        read_body(req.into_body(), rt.config.max_body_size)
            .await
            .map(Payload)
    }
}

/// What a store-wide write reads outside its body: the store's name from the path, and
/// `metadata.*` from the query, which applies to every item.
struct StoreWrite {
    store: String,
    query_meta: HashMap<String, String>,
}

impl<S: Send + Sync> FromRequestParts<S> for StoreWrite {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let Path(store) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let query_meta = query_metadata(&query_pairs(parts.uri.query()));
        Ok(Self { store, query_meta })
    }
}

async fn save_state(State(rt): Rt, w: StoreWrite, Payload(body): Payload) -> Answer {
    let s = rt.state_store(&w.store)?;
    let items: Vec<JsonItem> = parse_json(&body)?;
    let items = items
        .into_iter()
        .map(|i| i.decode(&w.query_meta, "ERR_STATE_SAVE"))
        .collect();
    rt.save_state(&w.store, s, items).await?;
    Ok(no_content())
}

#[derive(Deserialize)]
struct BulkGetBody {
    #[serde(default)]
    keys: Vec<String>,
}

async fn bulk_get(State(rt): Rt, Path(store): Path<String>, Payload(body): Payload) -> Answer {
    let s = rt.state_store(&store)?;
    let req: BulkGetBody = parse_json(&body)?;
    let results = rt.bulk_get(s, &req.keys).await?;
    let mut out = Vec::with_capacity(64 * req.keys.len().max(1));
    out.push(b'[');
    for (i, (key, r)) in req.keys.iter().zip(results).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let mut item = serde_json::Map::new();
        item.insert("key".into(), key.clone().into());
        match r {
            Ok(Some(found)) => {
                let data: serde_json::Value =
                    match serde_json::from_slice::<Box<RawValue>>(&found.data) {
                        Ok(raw) => {
                            serde_json::from_str(raw.get()).unwrap_or(serde_json::Value::Null)
                        }
                        Err(_) => {
                            use base64::Engine as _;
                            base64::engine::general_purpose::STANDARD
                                .encode(&found.data)
                                .into()
                        }
                    };
                item.insert("data".into(), data);
                if let Some(etag) = found.etag {
                    item.insert("etag".into(), etag.into());
                }
                if !found.metadata.is_empty() {
                    let m: serde_json::Map<String, serde_json::Value> = found
                        .metadata
                        .into_iter()
                        .map(|(k, v)| (k, v.into()))
                        .collect();
                    item.insert("metadata".into(), m.into());
                }
            }
            Ok(None) => {}
            Err(e) => {
                item.insert("error".into(), e.to_string().into());
            }
        }
        out.extend_from_slice(&serde_json::to_vec(&item).unwrap_or_default());
    }
    out.push(b']');
    Ok(json_response(out))
}

async fn delete_state(
    State(rt): Rt,
    Path((store, key)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Answer {
    let s = rt.state_store(&store)?;
    let pairs = query_pairs(q.as_deref());
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let options = ItemOptions {
        concurrency: get("concurrency"),
        consistency: get("consistency"),
    };
    let concurrency = concurrency_of(Some(&options), "ERR_STATE_DELETE")?;
    let etag = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .filter(|e| !e.is_empty());
    let req = DeleteRequest {
        key,
        etag,
        concurrency,
    };
    rt.delete_state(s, vec![req]).await?;
    Ok(no_content())
}

#[derive(Deserialize)]
struct TxBody {
    #[serde(default)]
    operations: Vec<JsonTxOp>,
}

#[derive(Deserialize)]
struct JsonTxOp {
    operation: String,
    request: JsonItem,
}

async fn transaction(State(rt): Rt, w: StoreWrite, Payload(body): Payload) -> Answer {
    let s = rt.state_store(&w.store)?;
    let tx: TxBody = parse_json(&body)?;
    let mut ops = Vec::with_capacity(tx.operations.len());
    for op in tx.operations {
        let code = "ERR_STATE_TRANSACTION";
        ops.push(match op.operation.as_str() {
            "upsert" => op.request.decode(&w.query_meta, code).map(TxOp::Upsert),
            "delete" => concurrency_of(op.request.options.as_ref(), code).map(|concurrency| {
                TxOp::Delete(DeleteRequest {
                    concurrency,
                    key: op.request.key.unwrap_or_default(),
                    etag: op.request.etag.filter(|e| !e.is_empty()),
                })
            }),
            _ => Ok(TxOp::Other(op.operation)),
        });
    }
    rt.transact(s, ops).await?;
    Ok(no_content())
}

/// Protobuf JSON: camelCase names, snake_case accepted, unknown fields ignored.
#[derive(Deserialize)]
struct LockBody {
    #[serde(default, alias = "resource_id", rename = "resourceId")]
    resource_id: String,
    #[serde(default, alias = "lock_owner", rename = "lockOwner")]
    lock_owner: String,
    #[serde(default, alias = "expiry_in_seconds", rename = "expiryInSeconds")]
    expiry_in_seconds: i32,
}

impl LockBody {
    fn request(self, store: String) -> (LockRequest, i32) {
        let req = LockRequest {
            store,
            resource_id: self.resource_id,
            owner: self.lock_owner,
        };
        (req, self.expiry_in_seconds)
    }
}

async fn try_lock(State(rt): Rt, Path(store): Path<String>, Payload(body): Payload) -> Answer {
    let (req, expiry) = parse_json::<LockBody>(&body)?.request(store);
    let body = if rt.try_lock(&req, expiry).await? {
        r#"{"success":true}"#
    } else {
        r#"{"success":false}"#
    };
    Ok(json_response(body.as_bytes().to_vec()))
}

async fn unlock(State(rt): Rt, Path(store): Path<String>, Payload(body): Payload) -> Answer {
    let (req, _) = parse_json::<LockBody>(&body)?.request(store);
    let status = rt.unlock(&req).await?;
    Ok(json_response(
        format!(r#"{{"status":{}}}"#, status as i32).into_bytes(),
    ))
}

async fn forward(rt: &Api, target: &str, path: String, req: Request<Body>) -> Answer {
    let mut call = Call::read(&rt.invoker, path, req).await?;
    // Only a gRPC caller's sidecar marks its calls so.
    call.headers.remove(crate::invoke::GRPC_CALLER);
    let mut answer = rt.invoker.invoke(target, call).await?;
    crate::invoke::for_http_caller(answer.headers_mut());
    Ok(answer)
}

/// The method goes on as it was sent, still percent-encoded, as in the header form: decoded,
/// `%3F` would become a query and `%2F..%2F` a dot segment at the app.
async fn invoke_path(State(rt): Rt, req: Request<Body>) -> Answer {
    // "/v1.0/invoke/{app_id}/method/{method...}": the id is the fourth part (decoded), the
    // method all after the fifth '/' (as sent).
    let mut parts = req.uri().path().splitn(6, '/');
    let app_id = percent_encoding::percent_decode_str(parts.nth(3).unwrap_or_default())
        .decode_utf8()
        .map_err(|_| ApiError::malformed("the app id in the path is not UTF-8"))?
        .into_owned();
    let path = format!("/{}", parts.nth(1).unwrap_or_default());
    forward(&rt, &app_id, path, req).await
}

async fn invoke_by_header(State(rt): Rt, req: Request<Body>) -> Answer {
    let target = req
        .headers()
        .iter()
        .find(|(k, _)| k.as_str().eq_ignore_ascii_case("dapr-app-id"))
        .and_then(|(_, v)| v.to_str().ok())
        .map(str::to_string);
    let target = target
        .filter(|t| !t.is_empty())
        .ok_or_else(ApiError::no_app_id)?;
    let path = req.uri().path().to_string();
    forward(&rt, &target, path, req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_like_daprd() {
        let norm = |p: &str| {
            normalize_path(Request::builder().uri(p).body(Body::empty()).unwrap())
                .uri()
                .to_string()
        };
        assert_eq!(norm("/v1.0/healthz/"), "/v1.0/healthz");
        assert_eq!(norm("/v1.0//state/s?x=1"), "/v1.0/state/s?x=1");
        assert_eq!(norm("/"), "/");
        assert_eq!(norm("/v1.0/metadata"), "/v1.0/metadata");
    }
}
