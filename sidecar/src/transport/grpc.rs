//! The Dapr gRPC API (`dapr.proto.runtime.v1.Dapr`): state, locks, invocation, metadata
//! and shutdown, each decoded into the core's operation (`crate::api`), the same the HTTP
//! API calls, and its answer encoded back. Everything else answers `Unimplemented` (see
//! `grpc_unimplemented`).

use std::sync::Arc;

use bytes::Bytes;
use dapr::dapr::proto::common::v1 as common;
use dapr::dapr::proto::runtime::v1::dapr_server::{Dapr, DaprServer};
use dapr::dapr::proto::runtime::v1::*;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use tonic::metadata::MetadataMap;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use super::grpc_unimplemented::{dapr_unimplemented, unimplemented_methods};
use crate::api::Api;
use crate::api::lock::LockRequest;
use crate::api::pubsub::{self as api_pubsub, BulkEntry, PublishRequest};
use crate::api::state::{SaveItem, TxOp};
use crate::errors::ApiError;
use crate::invoke::{Call, grpc_code_for_http, read_body};
use crate::pubsub::stream;
use crate::pubsub::subscriptions::Origin;
use crate::state::{Concurrency, DeleteRequest, is_json};

/// The tonic service over the core.
pub struct GrpcApi {
    rt: Arc<Api>,
}

impl GrpcApi {
    /// `BulkPublishEvent` (and its alpha name): the events' bytes as they are; every entry
    /// taken answers an empty list, and a component failure is the call's error (daprd
    /// returns no failed entries then).
    async fn bulk_publish(
        &self,
        request: Request<BulkPublishRequest>,
    ) -> Result<Response<BulkPublishResponse>, Status> {
        let traceparent = traceparent(&request);
        let r = request.into_inner();
        let failed = self
            .rt
            .bulk_publish(api_pubsub::BulkPublishRequest {
                entries: r
                    .entries
                    .into_iter()
                    .map(|e| BulkEntry {
                        entry_id: e.entry_id,
                        data: Ok(Bytes::from(e.event)),
                        content_type: e.content_type,
                        metadata: (!e.metadata.is_empty()).then_some(e.metadata),
                    })
                    .collect(),
                pubsub: r.pubsub_name.clone(),
                topic: r.topic.clone(),
                metadata: r.metadata,
                traceparent,
            })
            .await?;
        if let Some(first) = failed.first() {
            return Err(api_pubsub::publish_failed(&r.pubsub_name, &r.topic, &first.error).into());
        }
        Ok(Response::new(BulkPublishResponse::default()))
    }

    /// The service without the token check in front (what `service` wraps); called
    /// directly by the fuzz targets.
    pub fn new(rt: Arc<Api>) -> Self {
        GrpcApi { rt }
    }
}

/// A publish's `traceparent` metadata, for its CloudEvent ("" without one).
fn traceparent<T>(request: &Request<T>) -> String {
    request
        .metadata()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Checks `dapr-api-token` metadata when `DAPR_API_TOKEN` is set.
#[derive(Clone)]
pub struct TokenCheck(Option<Arc<str>>);

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.0 else {
            return Ok(req);
        };
        let refuse = |why: &str| {
            let meta = [
                ("http.code".to_string(), "401".to_string()),
                ("http.error_message".to_string(), why.to_string()),
            ];
            crate::errors::status_with_reason(
                tonic::Code::Unauthenticated,
                "Unauthorized".into(),
                "Unauthorized",
                meta.into_iter().collect(),
            )
        };
        match req.metadata().get(appkit::token::HEADER) {
            None => Err(refuse("missing api token in request metadata")),
            Some(v) if appkit::token::matches(Some(v.as_bytes()), expected) => Ok(req),
            Some(_) => Err(refuse("authentication error: api token mismatch")),
        }
    }
}

/// The Dapr gRPC API as tonic serves it.
pub type Service = InterceptedService<DaprServer<GrpcApi>, TokenCheck>;

/// The gRPC service, with the API token check in front of it.
pub fn service(rt: Arc<Api>) -> Service {
    let check = TokenCheck(rt.config.api_token().map(Arc::from));
    // daprd bounds both directions by --max-body-size.
    let limit = rt.config.max_body_size;
    let server = DaprServer::new(GrpcApi { rt })
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    InterceptedService::new(server, check)
}

/// What may not stand raw in a path: a gRPC method is text, not a path, so its `?`, `#`,
/// `%` and the like are written percent-encoded (a `?` would otherwise start a query).
const NOT_IN_PATH: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'[')
    .add(b']')
    .add(b'\\')
    .add(b'^')
    .add(b'|');

/// The app path for a gRPC invocation's method: as written, with `/` kept as separators.
fn method_path(method: &str) -> String {
    percent_encoding::utf8_percent_encode(method.trim_start_matches('/'), NOT_IN_PATH).to_string()
}

fn etag_of(e: Option<common::Etag>) -> Option<String> {
    e.map(|e| e.value).filter(|v| !v.is_empty())
}

fn options_of(o: Option<common::StateOptions>) -> Concurrency {
    o.map(|o| Concurrency::from_proto(o.concurrency))
        .unwrap_or_default()
}

/// gRPC saves store raw bytes, except that `contentType=application/json` asks for JSON.
fn save_item(item: common::StateItem) -> Result<SaveItem, ApiError> {
    if item.metadata.get("contentType").map(String::as_str) == Some("application/json")
        && !is_json(&item.value)
    {
        return Err(ApiError::malformed(
            "value is not valid JSON but contentType is application/json",
        ));
    }
    Ok(SaveItem {
        key: item.key,
        value: Bytes::from(item.value),
        etag: etag_of(item.etag),
        concurrency: options_of(item.options),
        metadata: item.metadata,
        json: false,
    })
}

fn delete_request(
    key: String,
    etag: Option<common::Etag>,
    options: Option<common::StateOptions>,
) -> DeleteRequest {
    DeleteRequest {
        key,
        etag: etag_of(etag),
        concurrency: options_of(options),
    }
}

fn http_method(verb: i32) -> Method {
    use common::http_extension::Verb;
    match Verb::try_from(verb).unwrap_or(Verb::None) {
        Verb::Get => Method::GET,
        Verb::Head => Method::HEAD,
        Verb::Put => Method::PUT,
        Verb::Delete => Method::DELETE,
        Verb::Connect => Method::CONNECT,
        Verb::Options => Method::OPTIONS,
        Verb::Trace => Method::TRACE,
        Verb::Patch => Method::PATCH,
        Verb::Post | Verb::None => Method::POST,
    }
}

#[tonic::async_trait]
impl Dapr for GrpcApi {
    dapr_unimplemented!();

    type SubscribeTopicEventsAlpha1Stream =
        tonic::codegen::BoxStream<SubscribeTopicEventsResponseAlpha1>;

    /// A streaming subscription: the first message names it, the answer opens with an
    /// initial response, then carries the topic's events (`pubsub::stream`).
    async fn subscribe_topic_events_alpha1(
        &self,
        request: Request<tonic::Streaming<SubscribeTopicEventsRequestAlpha1>>,
    ) -> Result<Response<Self::SubscribeTopicEventsAlpha1Stream>, Status> {
        let mut incoming = request.into_inner();
        let sub = stream::opening(&self.rt, &mut incoming).await?;
        let held = stream::hold(&self.rt, &sub)?;
        let (out, events) = tokio::sync::mpsc::channel(16);
        out.try_send(Ok(stream::initial_response()))
            .expect("a new channel has room");
        tokio::spawn(stream::serve(self.rt.clone(), sub, held, incoming, out));
        let events = futures_util::stream::unfold(events, |mut rx| async move {
            rx.recv().await.map(|e| (e, rx))
        });
        Ok(Response::new(Box::pin(events)))
    }

    async fn invoke_service(
        &self,
        request: Request<InvokeServiceRequest>,
    ) -> Result<Response<common::InvokeResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let msg = req
            .message
            .ok_or_else(|| ApiError::malformed("message is required"))?;
        let ext = msg.http_extension.unwrap_or_default();
        let mut headers = HeaderMap::new();
        for kv in meta.iter() {
            // Binary metadata travels base64 in its header, as in daprd's own metadata.
            let (name, value) = match kv {
                tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                    (k.as_str(), HeaderValue::from_bytes(v.as_bytes()))
                }
                tonic::metadata::KeyAndValueRef::Binary(k, v) => {
                    use base64::Engine as _;
                    let Ok(bytes) = v.to_bytes() else { continue };
                    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
                    (k.as_str(), HeaderValue::from_str(&text))
                }
            };
            if name.starts_with("grpc-")
                || name == "content-type"
                || name == "te"
                || name == "user-agent"
            {
                continue;
            }
            if let (Ok(n), Ok(v)) = (header::HeaderName::from_bytes(name.as_bytes()), value) {
                headers.append(n, v);
            }
        }
        if !msg.content_type.is_empty()
            && let Ok(v) = HeaderValue::from_str(&msg.content_type)
        {
            headers.insert(header::CONTENT_TYPE, v);
        }
        headers.insert(crate::invoke::GRPC_CALLER, HeaderValue::from_static("1"));
        let call = Call {
            method: http_method(ext.verb),
            path: format!("/{}", method_path(&msg.method)),
            query: Some(ext.querystring).filter(|q| !q.is_empty()),
            headers,
            body: msg.data.map(|a| Bytes::from(a.value)).unwrap_or_default(),
        };
        let resp = self.rt.invoker.invoke(&req.id, call).await?;
        let status = resp.status();
        let app_status = resp
            .headers()
            .get(crate::invoke::APP_GRPC_STATUS)
            .and_then(crate::appcallback::passed_status);
        let passed = GrpcAnswer::of(resp.headers());
        let from_grpc_app = passed.is_some();
        let mut headers = answer_metadata(resp.headers(), from_grpc_app);
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let limit = self.rt.config.max_body_size;
        let body = read_body(resp.into_body(), limit)
            .await
            .map_err(|e| match e.status {
                StatusCode::PAYLOAD_TOO_LARGE => Status::resource_exhausted(format!(
                    "the app's response is larger than --max-body-size ({limit} bytes)"
                )),
                _ => Status::internal(format!("reading the app's response: {}", e.message)),
            })?;
        let GrpcAnswer { type_url, trailers } = passed.unwrap_or_default();
        // A gRPC app's error: its own status, as daprd passes it on, its metadata along.
        if let Some(mut status) = app_status.filter(|s| s.code() != tonic::Code::Ok) {
            // The app's own metadata; a sidecar's own error (no app answered) has none.
            if from_grpc_app {
                super::trailers::append(&mut headers, trailers, |_| true);
                *status.metadata_mut() = MetadataMap::from_headers(headers);
            }
            return Err(status);
        }
        if !from_grpc_app && let Ok(v) = HeaderValue::from_str(status.as_str()) {
            headers.insert(HTTP_STATUS, v);
        }
        let code = grpc_code_for_http(status);
        if code != tonic::Code::Ok {
            let mut st = Status::new(code, String::from_utf8_lossy(&body).into_owned());
            *st.metadata_mut() = MetadataMap::from_headers(headers);
            return Err(st);
        }
        let mut out = Response::new(common::InvokeResponse {
            data: Some(prost_types::Any {
                type_url,
                value: body.to_vec(),
            }),
            content_type,
        });
        *out.metadata_mut() = MetadataMap::from_headers(headers);
        if !trailers.is_empty() {
            out.extensions_mut()
                .insert(super::trailers::Trailers(trailers));
        }
        Ok(out)
    }

    async fn get_state(
        &self,
        request: Request<GetStateRequest>,
    ) -> Result<Response<GetStateResponse>, Status> {
        let req = request.into_inner();
        let store = self.rt.state_store(&req.store_name)?;
        let found = self.rt.get_state(store, &req.key).await?;
        Ok(Response::new(match found {
            None => GetStateResponse::default(),
            Some(item) => GetStateResponse {
                data: item.data.to_vec(),
                etag: item.etag.unwrap_or_default(),
                metadata: item.metadata.into_iter().collect(),
            },
        }))
    }

    async fn get_bulk_state(
        &self,
        request: Request<GetBulkStateRequest>,
    ) -> Result<Response<GetBulkStateResponse>, Status> {
        let req = request.into_inner();
        let store = self.rt.state_store(&req.store_name)?;
        let results = self.rt.bulk_get(store, &req.keys).await?;
        let items = req
            .keys
            .into_iter()
            .zip(results)
            .map(|(key, r)| match r {
                Ok(Some(found)) => BulkStateItem {
                    key,
                    data: found.data.to_vec(),
                    etag: found.etag.unwrap_or_default(),
                    error: String::new(),
                    metadata: found.metadata.into_iter().collect(),
                },
                Ok(None) => BulkStateItem {
                    key,
                    ..Default::default()
                },
                Err(e) => BulkStateItem {
                    key,
                    error: e.to_string(),
                    ..Default::default()
                },
            })
            .collect();
        Ok(Response::new(GetBulkStateResponse { items }))
    }

    async fn save_state(&self, request: Request<SaveStateRequest>) -> Result<Response<()>, Status> {
        let req = request.into_inner();
        let store = self.rt.state_store(&req.store_name)?;
        let items = req.states.into_iter().map(save_item).collect();
        self.rt.save_state(&req.store_name, store, items).await?;
        Ok(Response::new(()))
    }

    async fn delete_state(
        &self,
        request: Request<DeleteStateRequest>,
    ) -> Result<Response<()>, Status> {
        // One delete is a bulk delete of one item: the same checks, the same errors.
        let req = request.into_inner();
        let item = common::StateItem {
            key: req.key,
            etag: req.etag,
            options: req.options,
            metadata: req.metadata,
            ..Default::default()
        };
        let bulk = DeleteBulkStateRequest {
            store_name: req.store_name,
            states: vec![item],
        };
        self.delete_bulk_state(Request::new(bulk)).await
    }

    async fn delete_bulk_state(
        &self,
        request: Request<DeleteBulkStateRequest>,
    ) -> Result<Response<()>, Status> {
        let req = request.into_inner();
        let store = self.rt.state_store(&req.store_name)?;
        let items = req
            .states
            .into_iter()
            .map(|i| delete_request(i.key, i.etag, i.options))
            .collect();
        self.rt.delete_state(store, items).await?;
        Ok(Response::new(()))
    }

    async fn execute_state_transaction(
        &self,
        request: Request<ExecuteStateTransactionRequest>,
    ) -> Result<Response<()>, Status> {
        let req = request.into_inner();
        let store = self.rt.state_store(&req.store_name)?;
        let mut ops = Vec::with_capacity(req.operations.len());
        for op in req.operations {
            let item = op.request.unwrap_or_default();
            ops.push(match op.operation_type.as_str() {
                "upsert" => save_item(item).map(TxOp::Upsert),
                "delete" => Ok(TxOp::Delete(delete_request(
                    item.key,
                    item.etag,
                    item.options,
                ))),
                _ => Ok(TxOp::Other(op.operation_type)),
            });
        }
        self.rt.transact(store, ops).await?;
        Ok(Response::new(()))
    }

    async fn try_lock_alpha1(
        &self,
        request: Request<TryLockRequest>,
    ) -> Result<Response<TryLockResponse>, Status> {
        let r = request.into_inner();
        let req = LockRequest {
            store: r.store_name,
            resource_id: r.resource_id,
            owner: r.lock_owner,
        };
        let success = self.rt.try_lock(&req, r.expiry_in_seconds).await?;
        Ok(Response::new(TryLockResponse { success }))
    }

    async fn unlock_alpha1(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let r = request.into_inner();
        let req = LockRequest {
            store: r.store_name,
            resource_id: r.resource_id,
            owner: r.lock_owner,
        };
        let status = self.rt.unlock(&req).await?;
        Ok(Response::new(UnlockResponse {
            status: status as i32,
        }))
    }

    async fn get_metadata(
        &self,
        _request: Request<GetMetadataRequest>,
    ) -> Result<Response<GetMetadataResponse>, Status> {
        let m = self.rt.metadata();
        Ok(Response::new(GetMetadataResponse {
            id: m.app_id.to_string(),
            runtime_version: m.runtime_version.into(),
            extended_metadata: m.extended.into_iter().collect(),
            registered_components: m
                .components
                .iter()
                .map(|c| RegisteredComponents {
                    name: c.name.clone(),
                    r#type: c.kind.clone(),
                    version: c.version.clone(),
                    capabilities: c
                        .capabilities
                        .iter()
                        .map(std::string::ToString::to_string)
                        .collect(),
                })
                .collect(),
            subscriptions: self
                .rt
                .subscriptions()
                .iter()
                .map(|s| PubsubSubscription {
                    pubsub_name: s.pubsub.clone(),
                    topic: s.topic.clone(),
                    metadata: s.metadata.clone(),
                    rules: Some(PubsubSubscriptionRules {
                        rules: s
                            .rules
                            .iter()
                            .map(|r| PubsubSubscriptionRule {
                                r#match: r.condition.clone(),
                                path: r.path.clone(),
                            })
                            .collect(),
                    }),
                    dead_letter_topic: s.dead_letter_topic.clone(),
                    r#type: match s.origin {
                        Origin::Declarative => PubsubSubscriptionType::Declarative,
                        Origin::Programmatic => PubsubSubscriptionType::Programmatic,
                        Origin::Streaming => PubsubSubscriptionType::Streaming,
                    } as i32,
                })
                .collect(),
            app_connection_properties: Some(AppConnectionProperties {
                port: m.app_port.map_or(0, i32::from),
                protocol: m.app_protocol.to_string(),
                channel_address: m.app_channel_address.to_string(),
                health: m.app_health.map(|h| AppConnectionHealthProperties {
                    health_check_path: h.check_path.unwrap_or_default(),
                    health_probe_interval: h.probe_interval,
                    health_probe_timeout: h.probe_timeout,
                    health_threshold: h.threshold,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn publish_event(
        &self,
        request: Request<PublishEventRequest>,
    ) -> Result<Response<()>, Status> {
        let traceparent = traceparent(&request);
        let r = request.into_inner();
        self.rt
            .publish(PublishRequest {
                pubsub: r.pubsub_name,
                topic: r.topic,
                data: Bytes::from(r.data),
                content_type: r.data_content_type,
                metadata: r.metadata,
                traceparent,
            })
            .await?;
        Ok(Response::new(()))
    }

    async fn bulk_publish_event(
        &self,
        request: Request<BulkPublishRequest>,
    ) -> Result<Response<BulkPublishResponse>, Status> {
        self.bulk_publish(request).await
    }

    async fn bulk_publish_event_alpha1(
        &self,
        request: Request<BulkPublishRequest>,
    ) -> Result<Response<BulkPublishResponse>, Status> {
        self.bulk_publish(request).await
    }

    async fn set_metadata(
        &self,
        request: Request<SetMetadataRequest>,
    ) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        self.rt.set_metadata(r.key, r.value);
        Ok(Response::new(()))
    }

    async fn shutdown(&self, _request: Request<ShutdownRequest>) -> Result<Response<()>, Status> {
        self.rt.request_shutdown();
        Ok(Response::new(()))
    }
}

/// On a gRPC caller's answer from an HTTP app: the app's HTTP status, as daprd gives it.
const HTTP_STATUS: header::HeaderName = header::HeaderName::from_static("dapr-http-status");

/// What [`crate::invoke::APP_GRPC_ANSWER`] brings from a gRPC app's sidecar: the type URL of
/// the answer's data and the app's trailers (as raw metadata: binary values base64).
#[derive(Default)]
struct GrpcAnswer {
    type_url: String,
    trailers: HeaderMap,
}

impl GrpcAnswer {
    /// None for an answer that is not a gRPC app's.
    fn of(headers: &HeaderMap) -> Option<GrpcAnswer> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire {
            #[serde(default)]
            type_url: String,
            #[serde(default)]
            trailers: Vec<(String, String)>,
        }
        use base64::Engine as _;
        let json = base64::engine::general_purpose::STANDARD
            .decode(headers.get(crate::invoke::APP_GRPC_ANSWER)?.as_bytes())
            .ok()?;
        let wire: Wire = serde_json::from_slice(&json).ok()?;
        let mut trailers = HeaderMap::new();
        for (name, value) in &wire.trailers {
            if let (Ok(n), Ok(v)) = (
                header::HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                add_metadata(&mut trailers, n, v);
            }
        }
        Some(GrpcAnswer {
            type_url: wire.type_url,
            trailers,
        })
    }
}

/// An answer's headers as a gRPC caller's metadata, as daprd converts them
/// (`InternalMetadataToGrpcMetadata`): from an HTTP app, the permanent HTTP headers as
/// `dapr-<name>`; nothing between sidecars and no trace context (the caller's own). Raw, as
/// tonic keeps metadata: binary values base64.
fn answer_metadata(headers: &HeaderMap, from_grpc_app: bool) -> HeaderMap {
    let mut md = HeaderMap::new();
    for (name, value) in headers {
        let n = name.as_str();
        if n.starts_with("dapr-internal-") || n == "traceparent" || n == "tracestate" {
            continue;
        }
        if from_grpc_app {
            // The sidecars' own hop: the app's metadata never has these.
            if !matches!(n, "content-type" | "content-length" | "date") {
                add_metadata(&mut md, name.clone(), value.clone());
            }
        } else if crate::appcallback::PREFIXED.contains(&n) {
            if let Ok(prefixed) = header::HeaderName::from_bytes(format!("dapr-{n}").as_bytes()) {
                add_metadata(&mut md, prefixed, value.clone());
            }
        } else {
            add_metadata(&mut md, name.clone(), value.clone());
        }
    }
    md
}

/// Adds one value; a binary one that is not base64 is left out, as daprd leaves it.
fn add_metadata(md: &mut HeaderMap, name: header::HeaderName, value: HeaderValue) {
    use base64::Engine as _;
    if name.as_str().ends_with("-bin")
        && base64::engine::general_purpose::STANDARD
            .decode(value.as_bytes())
            .is_err()
    {
        return;
    }
    md.append(name, value);
}
