//! The gRPC app channel (`--app-protocol grpc`): a call for the app goes to its
//! `AppCallback.OnInvoke` as Dapr sends it (method, data, content type, the HTTP verb and
//! query string, the caller's headers as metadata), and the app's answer comes back as
//! Dapr gives it to an HTTP caller: 200 with the data and its content type, or for an error
//! status the HTTP status Dapr maps its code to, with the status as JSON. Pub/sub asks the
//! app's `ListTopicSubscriptions` and hands each message to its `OnTopicEvent`.

use std::time::Duration;

use axum::body::Body;
use base64::Engine as _;
use dapr::dapr::proto::common::v1::{
    HttpExtension, InvokeRequest, InvokeResponse, http_extension::Verb,
};
use dapr::dapr::proto::runtime::v1::app_callback_client::AppCallbackClient;
use dapr::dapr::proto::runtime::v1::app_callback_health_check_client::AppCallbackHealthCheckClient;
use dapr::dapr::proto::runtime::v1::{
    TopicEventRequest, topic_event_response::TopicEventResponseStatus,
};
use http::{HeaderValue, Method, Response, StatusCode, header};
use serde_json::{Map, Value};
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, KeyAndValueRef, MetadataMap};
use tonic::transport::{Channel, Endpoint};

use crate::errors::ApiError;
use crate::invoke::Call;
use crate::pubsub::subscriptions::{Origin, Rule, Subscription};

/// Headers that describe the HTTP message, not the call: never passed on as metadata
/// (nor `grpc-*`, which gRPC reserves). `content-type` and `content-length` go on with a
/// `dapr-` prefix from an HTTP caller (below).
const NOT_METADATA: [&str; 4] = ["content-type", "content-length", "host", "te"];

/// IANA's permanent HTTP request headers, which daprd passes from an HTTP caller to a gRPC
/// app as `dapr-<name>` (`isPermanentHTTPHeader`), HTTP/2 reserving or redefining them.
pub(crate) const PREFIXED: [&str; 28] = [
    "accept",
    "accept-charset",
    "accept-language",
    "accept-ranges",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "cache-control",
    "content-type",
    "content-length",
    "cookie",
    "date",
    "expect",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-schedule-tag-match",
    "if-unmodified-since",
    "max-forwards",
    "origin",
    "pragma",
    "referer",
    "via",
    "warning",
];

/// How long a connection to the app may take: it runs beside the sidecar.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The app's `AppCallback` service.
#[derive(Clone)]
pub struct GrpcApp {
    client: AppCallbackClient<Channel>,
    /// `OnInvoke` is called through the plain client: the generated one merges the answer's
    /// trailers into its headers, which daprd keeps apart.
    grpc: tonic::client::Grpc<Channel>,
    channel: Channel,
}

impl GrpcApp {
    /// A channel to the app at `host:port`, connected at first use: the app may start
    /// after its sidecar, as with `sidecar run`. Messages both ways may be as large as
    /// `max_body` (`--max-body-size`), as daprd sets its channel's limits.
    pub fn new(host: &str, port: u16, max_body: usize) -> Result<GrpcApp, tonic::transport::Error> {
        let authority = appkit::origin::authority(host, port);
        let channel = Endpoint::from_shared(format!("http://{authority}"))?
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .connect_lazy();
        // Room for the message's own fields around a body of the largest size.
        let limit = max_body.saturating_add(64 << 10);
        Ok(GrpcApp {
            grpc: tonic::client::Grpc::new(channel.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
            channel: channel.clone(),
            client: AppCallbackClient::new(channel)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        })
    }

    /// Sends `call` to the app's `OnInvoke`, within `limit` when the call has one. The
    /// answer carries the app's header metadata as headers (binary values base64, as daprd
    /// keeps them) and, in [`crate::invoke::APP_GRPC_ANSWER`], its trailers and the data's
    /// type URL, for a gRPC caller.
    pub async fn invoke(
        &self,
        call: &Call,
        limit: Option<Duration>,
        app_id: &str,
    ) -> Result<Response<Body>, ApiError> {
        let mut request = tonic::Request::new(invoke_request(call));
        let source = if call.headers.contains_key(crate::invoke::GRPC_CALLER) {
            Source::GrpcCaller
        } else {
            Source::HttpCaller
        };
        add_metadata(&mut request, &call.headers, source);
        if let Some(d) = limit {
            request.set_timeout(d);
        }
        let sent = self.on_invoke(request);
        let answer = match limit {
            None => sent.await,
            Some(d) => tokio::time::timeout(d, sent).await.map_err(|_| {
                ApiError::invoke_timeout(format!(
                    "failed to invoke, id: {app_id}, err: no answer within the call's {d:?}"
                ))
            })?,
        };
        let answer = match answer {
            Ok(answer) => answer,
            // The channel failed (no app listening, a broken connection): not the app's word.
            Err(status) => {
                return Err(ApiError::direct_invoke(format!(
                    "failed to invoke, id: {app_id}, err: {}",
                    status.message()
                )));
            }
        };
        let (mut out, type_url) = match &answer.outcome {
            Ok(message) => {
                let data = message.data.clone().unwrap_or_default();
                let mut out = Response::new(Body::from(data.value));
                if let Ok(v) = HeaderValue::from_str(&message.content_type)
                    && !message.content_type.is_empty()
                {
                    out.headers_mut().insert(header::CONTENT_TYPE, v);
                }
                (out, data.type_url)
            }
            Err(status) => (app_error(status), String::new()),
        };
        for (name, value) in metadata_headers(&answer.headers) {
            out.headers_mut().append(name, value);
        }
        let passed = serde_json::json!({
            "typeUrl": type_url,
            "trailers": metadata_headers(&answer.trailers)
                .iter()
                .map(|(k, v)| [k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()])
                .collect::<Vec<_>>(),
        });
        // Base64, so that whatever the type URL holds, the header is there: without it the
        // answer would pass for an HTTP app's.
        let passed = base64::engine::general_purpose::STANDARD.encode(passed.to_string());
        out.headers_mut().insert(
            crate::invoke::APP_GRPC_ANSWER,
            HeaderValue::try_from(passed).expect("base64 is a header value"),
        );
        Ok(out)
    }

    /// One `OnInvoke` exchange, its header metadata apart from its trailers (as grpc-go's
    /// `grpc.Header` and `grpc.Trailer` give them to daprd). `Err` is the channel's own
    /// failure; the app's error status is the answer's outcome.
    async fn on_invoke(
        &self,
        request: tonic::Request<InvokeRequest>,
    ) -> Result<Answer, tonic::Status> {
        let mut grpc = self.grpc.clone();
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let path = http::uri::PathAndQuery::from_static(ON_INVOKE);
        let codec = tonic_prost::ProstCodec::<InvokeRequest, InvokeResponse>::default();
        let (headers, mut body) = match grpc.server_streaming(request, path, codec).await {
            Ok(r) => {
                let (headers, body, _) = r.into_parts();
                (headers, body)
            }
            Err(status) if std::error::Error::source(&status).is_some() => return Err(status),
            // A trailers-only answer: its metadata are trailers.
            Err(status) => return Ok(Answer::failed(MetadataMap::new(), status)),
        };
        match body.message().await {
            Ok(Some(message)) => {
                let trailers = match body.trailers().await {
                    Ok(t) => t.unwrap_or_default(),
                    Err(status) if std::error::Error::source(&status).is_some() => {
                        return Err(status);
                    }
                    Err(status) => return Ok(Answer::failed(headers, status)),
                };
                Ok(Answer {
                    headers,
                    outcome: Ok(message),
                    trailers,
                })
            }
            Ok(None) => Ok(Answer::failed(
                headers,
                tonic::Status::internal("Missing response message."),
            )),
            Err(status) if std::error::Error::source(&status).is_some() => Err(status),
            Err(status) => Ok(Answer::failed(headers, status)),
        }
    }
}

const ON_INVOKE: &str = "/dapr.proto.runtime.v1.AppCallback/OnInvoke";

/// A gRPC app's answer to `OnInvoke`.
struct Answer {
    headers: MetadataMap,
    outcome: Result<InvokeResponse, tonic::Status>,
    trailers: MetadataMap,
}

impl Answer {
    /// An error status, its metadata the trailers it came in.
    fn failed(headers: MetadataMap, status: tonic::Status) -> Answer {
        Answer {
            headers,
            trailers: status.metadata().clone(),
            outcome: Err(status),
        }
    }
}

/// What an app's answer carries that is not its own metadata: what gRPC itself uses (the
/// message's headers, and every `grpc-` name, a little more than grpc-go's
/// `isReservedHeader` keeps from daprd), and the sidecars' own headers, which no app may
/// set.
fn reserved(name: &str) -> bool {
    matches!(
        name,
        "content-type" | "user-agent" | "te" | "content-length"
    ) || name.starts_with("grpc-")
        || name.starts_with("dapr-internal-")
}

/// An app's metadata as headers between sidecars, as daprd keeps it: text values as they
/// are, binary values base64 (padded).
fn metadata_headers(metadata: &MetadataMap) -> Vec<(http::HeaderName, HeaderValue)> {
    metadata
        .iter()
        .filter_map(|kv| {
            let (name, value) = match kv {
                KeyAndValueRef::Ascii(k, v) => (
                    k.as_str(),
                    HeaderValue::from_bytes(v.as_encoded_bytes()).ok()?,
                ),
                KeyAndValueRef::Binary(k, v) => {
                    let bytes = v.to_bytes().ok()?;
                    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
                    (k.as_str(), HeaderValue::from_str(&text).ok()?)
                }
            };
            if reserved(name) {
                return None;
            }
            Some((http::HeaderName::from_bytes(name.as_bytes()).ok()?, value))
        })
        .collect()
}

impl GrpcApp {
    /// One health probe: `AppCallbackHealthCheck.HealthCheck`, within `limit`; an app that
    /// does not serve it is unhealthy, as with daprd.
    pub async fn health_check(&self, limit: Duration) -> Result<(), String> {
        let mut request = tonic::Request::new(());
        request.set_timeout(limit);
        let mut client = AppCallbackHealthCheckClient::new(self.channel.clone());
        match tokio::time::timeout(limit, client.health_check(request)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(status)) => Err(format!("health check failed: {status}")),
            Err(_) => Err(format!("no answer within {limit:?}")),
        }
    }

    /// The app's subscriptions (`ListTopicSubscriptions`); none when it does not serve it.
    /// A subscription without routes goes to path `""`, as daprd sends it.
    pub async fn subscriptions(&self) -> Result<Vec<Subscription>, tonic::Status> {
        let mut client = self.client.clone();
        let mut request = tonic::Request::new(());
        request.set_timeout(Duration::from_secs(60));
        let list = match client.list_topic_subscriptions(request).await {
            Ok(r) => r.into_inner().subscriptions,
            Err(s) if s.code() == tonic::Code::Unimplemented => return Ok(Vec::new()),
            Err(s) => return Err(s),
        };
        Ok(list
            .into_iter()
            .map(|t| {
                let routes = t.routes.unwrap_or_default();
                let mut rules: Vec<Rule> = routes
                    .rules
                    .into_iter()
                    .map(|r| Rule {
                        condition: r.r#match,
                        path: r.path,
                    })
                    .collect();
                if !routes.default.is_empty() || rules.is_empty() {
                    rules.push(Rule {
                        condition: String::new(),
                        path: routes.default,
                    });
                }
                Subscription {
                    pubsub: t.pubsub_name,
                    topic: t.topic,
                    rules,
                    dead_letter_topic: t.dead_letter_topic,
                    metadata: t.metadata,
                    origin: Origin::Programmatic,
                }
            })
            .collect())
    }

    /// Hands one event (built by [`topic_event_request`]) to the app's `OnTopicEvent`,
    /// with `metadata` as the call's metadata; the app's status, or its error.
    pub async fn topic_event(
        &self,
        event: TopicEventRequest,
        metadata: &http::HeaderMap,
        limit: Duration,
    ) -> Result<TopicEventResponseStatus, tonic::Status> {
        let mut request = tonic::Request::new(event);
        add_metadata(&mut request, metadata, Source::Event);
        request.set_timeout(limit);
        let mut client = self.client.clone();
        let answer = client.on_topic_event(request).await?.into_inner();
        Ok(event_status(answer.status))
    }
}

/// An app's answer to an event: an unknown status is retried, as in daprd.
pub fn event_status(status: i32) -> TopicEventResponseStatus {
    TopicEventResponseStatus::try_from(status).unwrap_or(TopicEventResponseStatus::Retry)
}

/// A CloudEvent `ce` as gRPC hands it to an app (`OnTopicEvent`, or a streaming
/// subscription): data decoded by its content type, the attributes it has no field for
/// as extensions.
pub fn topic_event_request(
    ce: &Map<String, Value>,
    pubsub: &str,
    topic: &str,
    path: &str,
) -> Result<TopicEventRequest, tonic::Status> {
    let text = |k: &str| ce.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let content_type = text("datacontenttype");
    let data = if let Some(b64) = ce.get("data_base64").and_then(Value::as_str) {
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| tonic::Status::invalid_argument(format!("data_base64: {e}")))?
    } else {
        match (
            ce.get("data"),
            crate::pubsub::cloudevent::media_type(&content_type),
        ) {
            (None, _) => Vec::new(),
            (Some(Value::String(s)), t) if t.starts_with("text/") || t == "application/xml" => {
                s.clone().into_bytes()
            }
            (Some(d), t)
                if t == "application/json"
                    || t == crate::pubsub::cloudevent::CLOUDEVENTS_JSON
                    || t.ends_with("+json") =>
            {
                serde_json::to_vec(d).unwrap_or_default()
            }
            _ => Vec::new(),
        }
    };
    const OWN: [&str; 7] = [
        "id",
        "source",
        "datacontenttype",
        "type",
        "specversion",
        "data",
        "data_base64",
    ];
    let extensions = prost_types::Struct {
        fields: ce
            .iter()
            .filter(|(k, _)| !OWN.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), proto_value(v)))
            .collect(),
    };
    Ok(TopicEventRequest {
        id: text("id"),
        source: text("source"),
        r#type: text("type"),
        spec_version: text("specversion"),
        data_content_type: content_type,
        data,
        topic: topic.to_string(),
        pubsub_name: pubsub.to_string(),
        path: path.to_string(),
        extensions: Some(extensions),
    })
}

/// Where the headers given to a gRPC app come from: daprd converts each kind its own way.
#[derive(Clone, Copy, PartialEq)]
enum Source {
    /// An invocation by an HTTP caller.
    HttpCaller,
    /// An invocation by a gRPC caller: its metadata, binary values base64 in their headers
    /// between the sidecars.
    GrpcCaller,
    /// An event's metadata.
    Event,
}

/// The headers as gRPC metadata, as daprd converts them: from an HTTP caller, the
/// permanent HTTP headers as `dapr-<name>` (`host` left out, as Go's server keeps it
/// apart); a `-bin` header's value as binary metadata, its text as it is (daprd checks
/// the suffix on Go's canonical `X-...-Bin`, so it never decodes an HTTP caller's), but
/// decoded from a gRPC caller, whose binary metadata crossed the sidecars in base64; those
/// describing the HTTP message and `grpc-*` never.
fn add_metadata<T>(request: &mut tonic::Request<T>, headers: &http::HeaderMap, source: Source) {
    use base64::Engine as _;
    for (name, value) in headers {
        let name = name.as_str();
        if name.starts_with("grpc-") || name == crate::invoke::GRPC_CALLER.as_str() {
            continue;
        }
        if name.ends_with("-bin") {
            let key = tonic::metadata::BinaryMetadataKey::from_bytes(name.as_bytes());
            let value = match source {
                Source::GrpcCaller => {
                    base64::engine::general_purpose::STANDARD.decode(value.as_bytes())
                }
                Source::HttpCaller | Source::Event => Ok(value.as_bytes().to_vec()),
            };
            if let (Ok(key), Ok(value)) = (key, value) {
                request.metadata_mut().append_bin(
                    key,
                    tonic::metadata::BinaryMetadataValue::from_bytes(&value),
                );
            }
            continue;
        }
        let key = if source == Source::HttpCaller && name != "host" && PREFIXED.contains(&name) {
            AsciiMetadataKey::from_bytes(format!("dapr-{name}").as_bytes())
        } else if NOT_METADATA.contains(&name) {
            continue;
        } else {
            AsciiMetadataKey::from_bytes(name.as_bytes())
        };
        let value = value.to_str().ok().map(str::parse::<AsciiMetadataValue>);
        if let (Ok(key), Some(Ok(value))) = (key, value) {
            request.metadata_mut().append(key, value);
        }
    }
}

/// A JSON value as protobuf's `Value`, for a CloudEvent's extensions.
fn proto_value(v: &Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(proto_value).collect(),
        }),
        Value::Object(o) => Kind::StructValue(prost_types::Struct {
            fields: o.iter().map(|(k, v)| (k.clone(), proto_value(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// The `InvokeRequest` for `call`: its path without the leading `/`, percent-decoded as
/// daprd decodes it, is the method.
fn invoke_request(call: &Call) -> InvokeRequest {
    let content_type = call
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    InvokeRequest {
        method: percent_encoding::percent_decode_str(call.path.trim_start_matches('/'))
            .decode_utf8_lossy()
            .into_owned(),
        data: Some(prost_types::Any {
            type_url: String::new(),
            value: call.body.to_vec(),
        }),
        content_type: content_type.to_string(),
        http_extension: Some(HttpExtension {
            verb: verb(&call.method) as i32,
            querystring: call.query.clone().unwrap_or_default(),
        }),
    }
}

fn verb(method: &Method) -> Verb {
    match *method {
        Method::GET => Verb::Get,
        Method::HEAD => Verb::Head,
        Method::POST => Verb::Post,
        Method::PUT => Verb::Put,
        Method::DELETE => Verb::Delete,
        Method::CONNECT => Verb::Connect,
        Method::OPTIONS => Verb::Options,
        Method::TRACE => Verb::Trace,
        Method::PATCH => Verb::Patch,
        // daprd sends a verb gRPC has no name for as POST.
        _ => Verb::Post,
    }
}

/// An app's error status as Dapr hands it to an HTTP caller: the HTTP status of its code
/// (daprd's `HTTPStatusFromCode`) and the status itself, details too, as JSON; a detail
/// daprd could not write as JSON makes it a 500 `ERR_MALFORMED_RESPONSE`, as there. The
/// whole status, as the app sent it, goes along in a header for a gRPC caller's sidecar.
fn app_error(status: &tonic::Status) -> Response<Body> {
    let rpc = rpc_status(status);
    let (code, body) = match crate::errors::rpc_status_json(&rpc) {
        Ok(json) => (http_status(status.code()), json),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({"errorCode": "ERR_MALFORMED_RESPONSE", "message": e}),
        ),
    };
    let mut out = Response::new(Body::from(body.to_string()));
    *out.status_mut() = code;
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(v) = rpc_header(&rpc) {
        out.headers_mut().insert(crate::invoke::APP_GRPC_STATUS, v);
    }
    out
}

/// `status` as [`crate::invoke::APP_GRPC_STATUS`] carries it between sidecars: the whole
/// `google.rpc.Status`, base64.
pub fn status_header(status: &tonic::Status) -> Option<HeaderValue> {
    rpc_header(&rpc_status(status))
}

fn rpc_header(rpc: &dapr::google::rpc::Status) -> Option<HeaderValue> {
    use prost::Message as _;
    let whole = base64::engine::general_purpose::STANDARD.encode(rpc.encode_to_vec());
    HeaderValue::from_str(&whole).ok()
}

/// The app's status as `google.rpc.Status`: its code and message, and the details of its
/// `grpc-status-details-bin` when it sent any that decode.
fn rpc_status(status: &tonic::Status) -> dapr::google::rpc::Status {
    use prost::Message as _;
    let details = (!status.details().is_empty())
        .then(|| dapr::google::rpc::Status::decode(status.details()).ok())
        .flatten()
        .map(|s| s.details)
        .unwrap_or_default();
    dapr::google::rpc::Status {
        code: status.code() as i32,
        message: status.message().to_string(),
        details,
    }
}

/// The app's status a sidecar passed on in [`crate::invoke::APP_GRPC_STATUS`] (see
/// [`app_error`]), as a gRPC caller is given it: code, message and details as the app sent
/// them (`grpc-status-details-bin` only where there are details, as grpc-go sends it).
pub fn passed_status(header: &HeaderValue) -> Option<tonic::Status> {
    use prost::Message as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(header.as_bytes())
        .ok()?;
    let rpc = dapr::google::rpc::Status::decode(bytes.as_slice()).ok()?;
    let code = tonic::Code::from_i32(rpc.code);
    Some(if rpc.details.is_empty() {
        tonic::Status::new(code, rpc.message)
    } else {
        tonic::Status::with_details(code, rpc.message, bytes.into())
    })
}

/// daprd's mapping of a gRPC code to an HTTP status (after grpc-gateway's).
pub fn http_status(code: tonic::Code) -> StatusCode {
    use tonic::Code;
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_becomes_the_invoke_request_dapr_sends() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let call = Call {
            method: Method::PUT,
            path: "/orders/7%20b".into(),
            query: Some("a=1&b=2".into()),
            headers,
            body: bytes::Bytes::from_static(b"{}"),
        };
        let req = invoke_request(&call);
        assert_eq!(req.method, "orders/7 b");
        assert_eq!(req.content_type, "application/json");
        assert_eq!(req.data.unwrap().value, b"{}");
        let ext = req.http_extension.unwrap();
        assert_eq!(ext.verb, Verb::Put as i32);
        assert_eq!(ext.querystring, "a=1&b=2");
    }

    #[test]
    fn codes_map_to_the_http_statuses_daprd_uses() {
        use tonic::Code;
        for (code, status) in [
            (Code::NotFound, 404),
            (Code::InvalidArgument, 400),
            (Code::FailedPrecondition, 400),
            (Code::AlreadyExists, 409),
            (Code::Cancelled, 408),
            (Code::DeadlineExceeded, 504),
            (Code::Unimplemented, 501),
            (Code::Unknown, 500),
        ] {
            assert_eq!(http_status(code).as_u16(), status, "{code:?}");
        }
    }
}
