//! The errors the sidecar itself answers with, in Dapr's shape: an `errorCode` and a message,
//! the HTTP status daprd uses, and the gRPC code it uses for the same failure.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// One Dapr API error. Built through the named constructors so each code keeps the status
/// pair DAPR_API.md gives it.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: &'static str,
    pub message: String,
    pub status: StatusCode,
    pub grpc: tonic::Code,
    /// `ErrorInfo.reason` of Dapr's "rich" errors; they also carry `details` over HTTP.
    pub reason: Option<&'static str>,
    /// `ErrorInfo.reason` sent over gRPC only: daprd names a state request's own faults
    /// (an empty key, a TTL out of range) by the operation, while HTTP says
    /// `ERR_MALFORMED_REQUEST` with no details.
    pub grpc_reason: Option<&'static str>,
    pub app_id: Option<String>,
    /// What daprd's newer errors (pub/sub's, a state key's) add to the `ErrorInfo`
    /// reason (boxed: most errors have none).
    pub rich: Option<Box<Details>>,
}

/// The details of a rich error, sent in this order before its `ErrorInfo`.
#[derive(Debug, Clone, Default)]
pub struct Details {
    /// `ErrorInfo.metadata`, where it is not just the app id: `Some` (maybe empty, `{}` in
    /// HTTP's JSON) where daprd builds a map, `None` (`null`) where it passes none.
    pub info: Option<std::collections::HashMap<String, String>>,
    /// `BadRequest` with one field violation: (field, description).
    pub violation: Option<(String, String)>,
    /// `ResourceInfo{resource_type, resource_name, description}`.
    pub resource: Option<(&'static str, String, String)>,
    /// What HTTP says instead, where daprd's HTTP handler wraps the error once more: (the
    /// field, "" where daprd has cleared it; the message, also the violation's description).
    pub http: Option<(String, String)>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "errorCode")]
    error_code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    details: Vec<serde_json::Value>,
}

impl ApiError {
    pub fn new(
        code: &'static str,
        status: StatusCode,
        grpc: tonic::Code,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            code,
            message: message.into(),
            status,
            grpc,
            reason: None,
            grpc_reason: None,
            app_id: None,
            rich: None,
        }
    }

    /// A pub/sub error as daprd builds it: `ErrorInfo` with `reason` and `info` as its
    /// metadata, after a `ResourceInfo` naming the pub/sub when `pubsub` is given.
    pub fn pubsub(
        code: &'static str,
        status: StatusCode,
        grpc: tonic::Code,
        reason: &'static str,
        message: impl Into<String>,
        pubsub: Option<&str>,
        info: std::collections::HashMap<String, String>,
    ) -> Self {
        let mut e = Self::new(code, status, grpc, message);
        e.reason = Some(reason);
        e.rich = Some(Box::new(Details {
            info: Some(info),
            resource: pubsub.map(|p| ("pubsub", p.to_string(), e.message.clone())),
            ..Details::default()
        }));
        e
    }

    /// Names this error by a state operation over gRPC (`ERR_STATE_SAVE`, ...).
    pub fn in_grpc_as(mut self, reason: &'static str) -> Self {
        self.grpc_reason.get_or_insert(reason);
        self
    }

    fn rich(mut self, reason: &'static str, app_id: &str) -> Self {
        self.reason = Some(reason);
        if !app_id.is_empty() {
            self.app_id = Some(app_id.to_string());
        }
        self
    }

    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(
            "ERR_MALFORMED_REQUEST",
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            message,
        )
    }

    /// A body past `--max-body-size`, refused before it is held in memory.
    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            "ERR_BODY_READ",
            StatusCode::PAYLOAD_TOO_LARGE,
            tonic::Code::ResourceExhausted,
            format!("request body is larger than --max-body-size ({limit} bytes)"),
        )
    }

    /// A body that could not be read: too large (413), or broken off (400).
    pub fn body_failed(err: &axum::Error, limit: usize) -> Self {
        let too_large =
            std::iter::successors(Some(err as &(dyn std::error::Error + 'static)), |e| {
                e.source()
            })
            .any(<dyn std::error::Error>::is::<http_body_util::LengthLimitError>);
        if too_large {
            Self::body_too_large(limit)
        } else {
            Self::body_read(format!("failed to read request body: {err}"))
        }
    }

    pub fn body_read(message: impl Into<String>) -> Self {
        Self::new(
            "ERR_BODY_READ",
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            message,
        )
    }

    /// As daprd's `InvalidKeyName`: the key as a `BadRequest` field violation, the store
    /// as a `ResourceInfo`, and an `ErrorInfo` without metadata. Over HTTP daprd builds it
    /// again around its own text (`api error: code = InvalidArgument desc = ...`), and in a
    /// transaction after clearing the key, so the field is left out there.
    pub fn illegal_key(key: &str, store: &str, in_transaction: bool) -> Self {
        let mut e = Self::malformed(format!("input key/keyPrefix '{key}' can't contain '||'"));
        e.reason = Some("DAPR_STATE_ILLEGAL_KEY");
        let http_field = if in_transaction { "" } else { key };
        e.rich = Some(Box::new(Details {
            info: None,
            violation: Some((key.to_string(), e.message.clone())),
            resource: Some(("state", store.to_string(), String::new())),
            http: Some((
                http_field.to_string(),
                format!("api error: code = InvalidArgument desc = {}", e.message),
            )),
        }));
        e
    }

    pub fn state_store_not_found(name: &str, app_id: &str) -> Self {
        Self::new(
            "ERR_STATE_STORE_NOT_FOUND",
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            format!("state store {name} is not found"),
        )
        .rich("DAPR_STATE_NOT_FOUND", app_id)
    }

    pub fn state_store_not_configured(app_id: &str) -> Self {
        Self::new(
            "ERR_STATE_STORE_NOT_CONFIGURED",
            StatusCode::INTERNAL_SERVER_ERROR,
            tonic::Code::FailedPrecondition,
            "state store is not configured",
        )
        .rich("DAPR_STATE_NOT_CONFIGURED", app_id)
    }

    pub fn lock_store_not_configured() -> Self {
        Self::new(
            "ERR_LOCK_STORE_NOT_CONFIGURED",
            StatusCode::INTERNAL_SERVER_ERROR,
            tonic::Code::FailedPrecondition,
            "lock store is not configured",
        )
    }

    pub fn lock_store_not_found(name: &str) -> Self {
        Self::new(
            "ERR_LOCK_STORE_NOT_FOUND",
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            format!("lock store {name} not found"),
        )
    }

    pub fn internal(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            code,
            StatusCode::INTERNAL_SERVER_ERROR,
            tonic::Code::Internal,
            message,
        )
    }

    pub fn direct_invoke(message: impl Into<String>) -> Self {
        Self::internal("ERR_DIRECT_INVOKE", message)
    }

    /// An app's answer past `--max-body-size` (daprd limits the app's answers as it limits
    /// requests): a failed invocation over HTTP, ResourceExhausted over gRPC.
    pub fn reply_too_large(app_id: &str, limit: usize) -> Self {
        Self::new(
            "ERR_DIRECT_INVOKE",
            StatusCode::INTERNAL_SERVER_ERROR,
            tonic::Code::ResourceExhausted,
            format!(
                "failed to invoke, id: {app_id}, err: the app's response is larger than \
                 --max-body-size ({limit} bytes)"
            ),
        )
    }

    /// A call on the internal port without the registry's secret: not from a peer.
    pub fn not_a_peer() -> Self {
        Self::new(
            "ERR_DIRECT_INVOKE",
            StatusCode::UNAUTHORIZED,
            tonic::Code::Unauthenticated,
            "the internal port takes calls only from sidecars of the same registry",
        )
    }

    /// An invocation whose caller's time (`x-request-timeout-ms`) ran out: 504.
    pub fn invoke_timeout(message: impl Into<String>) -> Self {
        Self::new(
            "ERR_DIRECT_INVOKE",
            StatusCode::GATEWAY_TIMEOUT,
            tonic::Code::DeadlineExceeded,
            message,
        )
    }

    /// A state or lock call over HTTP whose caller's time (`x-request-timeout-ms`) ran out
    /// first: 504, as `grpc-timeout` ends a gRPC call.
    pub fn caller_timeout(message: impl Into<String>) -> Self {
        Self::new(
            "ERR_DEADLINE_EXCEEDED",
            StatusCode::GATEWAY_TIMEOUT,
            tonic::Code::DeadlineExceeded,
            message,
        )
    }

    pub fn no_app_id() -> Self {
        Self::new(
            "ERR_DIRECT_INVOKE",
            StatusCode::NOT_FOUND,
            tonic::Code::NotFound,
            "failed getting app id either from the URL path or the header dapr-app-id",
        )
    }

    /// `ErrorInfo.metadata`: the rich error's own, else the app id; `None` where daprd
    /// passes no map.
    fn info_metadata(&self) -> Option<std::collections::HashMap<String, String>> {
        match (
            self.rich.as_deref().and_then(|d| d.info.as_ref()),
            &self.app_id,
        ) {
            (Some(info), _) => Some(info.clone()),
            (None, Some(app_id)) => Some([("appID".to_string(), app_id.clone())].into()),
            (None, None) => None,
        }
    }

    /// The message HTTP answers with.
    fn http_message(&self) -> &str {
        match self.rich.as_deref().and_then(|d| d.http.as_ref()) {
            Some((_, message)) => message,
            None => &self.message,
        }
    }

    fn details(&self) -> Vec<serde_json::Value> {
        let Some(reason) = self.reason else {
            return Vec::new();
        };
        let mut details = Vec::new();
        let rich = self.rich.as_deref();
        let violation = rich.and_then(|r| r.http.as_ref().or(r.violation.as_ref()));
        if let Some((field, description)) = violation {
            // Go's JSON of the proto leaves an empty field out.
            let mut v = serde_json::json!({ "description": description });
            if !field.is_empty() {
                v["field"] = serde_json::json!(field);
            }
            details.push(serde_json::json!({
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "field_violations": [v],
            }));
        }
        if let Some((kind, name, description)) = rich.and_then(|r| r.resource.as_ref()) {
            details.push(serde_json::json!({
                "@type": "type.googleapis.com/google.rpc.ResourceInfo",
                "resource_type": kind,
                "resource_name": name,
                "owner": "",
                "description": description,
            }));
        }
        let mut info = serde_json::json!({
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": reason,
            "domain": "dapr.io",
        });
        // daprd always writes the map: `null` where it passed none, `{}` where it is empty.
        info["metadata"] = serde_json::json!(self.info_metadata());
        details.push(info);
        details
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error_code: self.code,
            message: self.http_message(),
            details: self.details(),
        };
        (self.status, Json(body)).into_response()
    }
}

/// `google.rpc.ErrorInfo`, which the `dapr` crate does not generate.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ErrorInfo {
    #[prost(string, tag = "1")]
    pub reason: String,
    #[prost(string, tag = "2")]
    pub domain: String,
    #[prost(map = "string, string", tag = "3")]
    pub metadata: std::collections::HashMap<String, String>,
}

/// `google.rpc.ResourceInfo`, likewise.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResourceInfo {
    #[prost(string, tag = "1")]
    pub resource_type: String,
    #[prost(string, tag = "2")]
    pub resource_name: String,
    #[prost(string, tag = "3")]
    pub owner: String,
    #[prost(string, tag = "4")]
    pub description: String,
}

/// `google.rpc.BadRequest`, likewise.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BadRequest {
    #[prost(message, repeated, tag = "1")]
    pub field_violations: Vec<FieldViolation>,
}

/// `google.rpc.BadRequest.FieldViolation`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FieldViolation {
    #[prost(string, tag = "1")]
    pub field: String,
    #[prost(string, tag = "2")]
    pub description: String,
    #[prost(string, tag = "3")]
    pub reason: String,
    #[prost(message, optional, tag = "4")]
    pub localized_message: Option<LocalizedMessage>,
}

/// The other `google.rpc` detail types (error_details.proto), which an app may send and
/// daprd writes as JSON for an HTTP caller.
mod rpc_details {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RetryInfo {
        #[prost(message, optional, tag = "1")]
        pub retry_delay: Option<prost_types::Duration>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DebugInfo {
        #[prost(string, repeated, tag = "1")]
        pub stack_entries: Vec<String>,
        #[prost(string, tag = "2")]
        pub detail: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct QuotaFailure {
        #[prost(message, repeated, tag = "1")]
        pub violations: Vec<QuotaViolation>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct QuotaViolation {
        #[prost(string, tag = "1")]
        pub subject: String,
        #[prost(string, tag = "2")]
        pub description: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PreconditionFailure {
        #[prost(message, repeated, tag = "1")]
        pub violations: Vec<PreconditionViolation>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PreconditionViolation {
        #[prost(string, tag = "1")]
        pub r#type: String,
        #[prost(string, tag = "2")]
        pub subject: String,
        #[prost(string, tag = "3")]
        pub description: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RequestInfo {
        #[prost(string, tag = "1")]
        pub request_id: String,
        #[prost(string, tag = "2")]
        pub serving_data: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Help {
        #[prost(message, repeated, tag = "1")]
        pub links: Vec<Link>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Link {
        #[prost(string, tag = "1")]
        pub description: String,
        #[prost(string, tag = "2")]
        pub url: String,
    }
}

/// `google.rpc.LocalizedMessage`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LocalizedMessage {
    #[prost(string, tag = "1")]
    pub locale: String,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// A `google.protobuf.Duration` as protojson writes it: seconds, with 0, 3, 6 or 9
/// fractional digits, and `s`.
fn duration_json(d: &prost_types::Duration) -> String {
    let negative = d.seconds < 0 || d.nanos < 0;
    let (seconds, nanos) = (d.seconds.unsigned_abs(), d.nanos.unsigned_abs());
    let sign = if negative { "-" } else { "" };
    if nanos == 0 {
        format!("{sign}{seconds}s")
    } else if nanos % 1_000_000 == 0 {
        format!("{sign}{seconds}.{:03}s", nanos / 1_000_000)
    } else if nanos % 1_000 == 0 {
        format!("{sign}{seconds}.{:06}s", nanos / 1_000)
    } else {
        format!("{sign}{seconds}.{nanos:09}s")
    }
}

/// A list of messages as protojson writes each, empty fields left out.
fn each<T>(items: Vec<T>, json: impl Fn(T) -> serde_json::Value) -> Vec<serde_json::Value> {
    items.into_iter().map(|i| without_empty(json(i))).collect()
}

/// A gRPC app's error status as daprd writes it for an HTTP caller: Go's protojson of the
/// `google.rpc.Status` (lowerCamelCase names, empty fields left out, each detail an object
/// with its `@type`). Every `google.rpc` detail type is written (daprd resolves them all);
/// one protojson cannot resolve in daprd (an app's own) is an error there and here.
pub fn rpc_status_json(status: &dapr::google::rpc::Status) -> Result<serde_json::Value, String> {
    let mut out = serde_json::Map::new();
    if status.code != 0 {
        out.insert("code".into(), status.code.into());
    }
    if !status.message.is_empty() {
        out.insert("message".into(), status.message.clone().into());
    }
    let details = status
        .details
        .iter()
        .map(any_json)
        .collect::<Result<Vec<_>, _>>()?;
    if !details.is_empty() {
        out.insert("details".into(), details.into());
    }
    Ok(out.into())
}

/// One detail as protojson writes an `Any`: `@type` beside the message's own fields.
fn any_json(any: &prost_types::Any) -> Result<serde_json::Value, String> {
    use prost::Message as _;
    let malformed = |e: prost::DecodeError| format!("proto: {}: {e}", any.type_url);
    let fields = match any.type_url.as_str() {
        "type.googleapis.com/google.rpc.ErrorInfo" => {
            let d = ErrorInfo::decode(any.value.as_slice()).map_err(malformed)?;
            serde_json::json!({"reason": d.reason, "domain": d.domain, "metadata": d.metadata})
        }
        "type.googleapis.com/google.rpc.ResourceInfo" => {
            let d = ResourceInfo::decode(any.value.as_slice()).map_err(malformed)?;
            serde_json::json!({
                "resourceType": d.resource_type,
                "resourceName": d.resource_name,
                "owner": d.owner,
                "description": d.description,
            })
        }
        "type.googleapis.com/google.rpc.BadRequest" => {
            let d = BadRequest::decode(any.value.as_slice()).map_err(malformed)?;
            let violations = each(d.field_violations, |v| {
                let localized = v.localized_message.map(|m| {
                    without_empty(serde_json::json!({"locale": m.locale, "message": m.message}))
                });
                serde_json::json!({"field": v.field, "description": v.description,
                    "reason": v.reason, "localizedMessage": localized.unwrap_or_default()})
            });
            serde_json::json!({ "fieldViolations": violations })
        }
        "type.googleapis.com/google.rpc.RetryInfo" => {
            let d = rpc_details::RetryInfo::decode(any.value.as_slice()).map_err(malformed)?;
            let delay = d
                .retry_delay
                .as_ref()
                .map(duration_json)
                .unwrap_or_default();
            serde_json::json!({ "retryDelay": delay })
        }
        "type.googleapis.com/google.rpc.DebugInfo" => {
            let d = rpc_details::DebugInfo::decode(any.value.as_slice()).map_err(malformed)?;
            serde_json::json!({"stackEntries": d.stack_entries, "detail": d.detail})
        }
        "type.googleapis.com/google.rpc.QuotaFailure" => {
            let d = rpc_details::QuotaFailure::decode(any.value.as_slice()).map_err(malformed)?;
            let violations = each(
                d.violations,
                |v| serde_json::json!({"subject": v.subject, "description": v.description}),
            );
            serde_json::json!({ "violations": violations })
        }
        "type.googleapis.com/google.rpc.PreconditionFailure" => {
            let d = rpc_details::PreconditionFailure::decode(any.value.as_slice())
                .map_err(malformed)?;
            let violations = each(d.violations, |v| {
                serde_json::json!({"type": v.r#type, "subject": v.subject,
                    "description": v.description})
            });
            serde_json::json!({ "violations": violations })
        }
        "type.googleapis.com/google.rpc.RequestInfo" => {
            let d = rpc_details::RequestInfo::decode(any.value.as_slice()).map_err(malformed)?;
            serde_json::json!({"requestId": d.request_id, "servingData": d.serving_data})
        }
        "type.googleapis.com/google.rpc.Help" => {
            let d = rpc_details::Help::decode(any.value.as_slice()).map_err(malformed)?;
            let links = each(
                d.links,
                |l| serde_json::json!({"description": l.description, "url": l.url}),
            );
            serde_json::json!({ "links": links })
        }
        "type.googleapis.com/google.rpc.LocalizedMessage" => {
            let d = LocalizedMessage::decode(any.value.as_slice()).map_err(malformed)?;
            serde_json::json!({"locale": d.locale, "message": d.message})
        }
        other => return Err(format!("unable to resolve {other:?}: \"not found\"")),
    };
    let mut fields = without_empty(fields);
    fields["@type"] = any.type_url.clone().into();
    Ok(fields)
}

/// An object without its empty strings, maps and lists and its absent messages (protojson
/// leaves them out).
fn without_empty(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(map) = v.as_object_mut() {
        map.retain(|_, f| match f {
            serde_json::Value::Null => false,
            serde_json::Value::String(s) => !s.is_empty(),
            serde_json::Value::Object(m) => !m.is_empty(),
            serde_json::Value::Array(a) => !a.is_empty(),
            _ => true,
        });
    }
    v
}

/// A gRPC status carrying `ErrorInfo{reason, domain: "dapr.io"}` in
/// `grpc-status-details-bin`, as daprd sends it.
pub fn status_with_reason(
    code: tonic::Code,
    message: String,
    reason: &str,
    metadata: std::collections::HashMap<String, String>,
) -> tonic::Status {
    status_with_details(code, message, None, None, reason, metadata)
}

/// The same, after a `BadRequest` and a `ResourceInfo` when they are given.
fn status_with_details(
    code: tonic::Code,
    message: String,
    violation: Option<BadRequest>,
    resource: Option<ResourceInfo>,
    reason: &str,
    metadata: std::collections::HashMap<String, String>,
) -> tonic::Status {
    use prost::Message as _;
    let info = ErrorInfo {
        reason: reason.to_string(),
        domain: "dapr.io".into(),
        metadata,
    };
    let mut details = Vec::new();
    if let Some(v) = violation {
        details.push(prost_types::Any {
            type_url: "type.googleapis.com/google.rpc.BadRequest".into(),
            value: v.encode_to_vec(),
        });
    }
    if let Some(r) = resource {
        details.push(prost_types::Any {
            type_url: "type.googleapis.com/google.rpc.ResourceInfo".into(),
            value: r.encode_to_vec(),
        });
    }
    details.push(prost_types::Any {
        type_url: "type.googleapis.com/google.rpc.ErrorInfo".into(),
        value: info.encode_to_vec(),
    });
    let status = dapr::google::rpc::Status {
        code: code as i32,
        message: message.clone(),
        details,
    };
    tonic::Status::with_details(code, message, status.encode_to_vec().into())
}

impl From<ApiError> for tonic::Status {
    fn from(err: ApiError) -> Self {
        // State errors carry a reason over gRPC (the rich reason, else the error code);
        // lock and invocation errors are a bare status, as in daprd.
        let reason = err.reason.or(err.grpc_reason).or_else(|| {
            (err.code.starts_with("ERR_STATE") || err.code == "ERR_NOT_SUPPORTED_STATE_OPERATION")
                .then_some(err.code)
        });
        match reason {
            Some(reason) if err.rich.is_some() => {
                let rich = err.rich.as_deref();
                let violation =
                    rich.and_then(|r| r.violation.as_ref())
                        .map(|(field, d)| BadRequest {
                            field_violations: vec![FieldViolation {
                                field: field.clone(),
                                description: d.clone(),
                                ..Default::default()
                            }],
                        });
                let resource = rich
                    .and_then(|r| r.resource.as_ref())
                    .map(|(kind, name, d)| ResourceInfo {
                        resource_type: kind.to_string(),
                        resource_name: name.clone(),
                        owner: String::new(),
                        description: d.clone(),
                    });
                let metadata = err.info_metadata().unwrap_or_default();
                status_with_details(err.grpc, err.message, violation, resource, reason, metadata)
            }
            Some(reason) => status_with_reason(err.grpc, err.message, reason, Default::default()),
            None => tonic::Status::new(err.grpc, err.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    fn any(type_url: &str, value: Vec<u8>) -> prost_types::Any {
        prost_types::Any {
            type_url: type_url.into(),
            value,
        }
    }

    #[test]
    fn an_rpc_status_is_written_as_protojson_writes_it() {
        let violation = BadRequest {
            field_violations: vec![FieldViolation {
                field: "key".into(),
                description: String::new(),
                reason: "TOO_LONG".into(),
                localized_message: Some(LocalizedMessage {
                    locale: "en".into(),
                    message: String::new(),
                }),
            }],
        };
        let retry = rpc_details::RetryInfo {
            retry_delay: Some(prost_types::Duration {
                seconds: 1,
                nanos: 500_000_000,
            }),
        };
        let info = ErrorInfo {
            reason: "R".into(),
            domain: String::new(),
            metadata: Default::default(),
        };
        let status = dapr::google::rpc::Status {
            code: 3,
            message: String::new(),
            details: vec![
                any(
                    "type.googleapis.com/google.rpc.BadRequest",
                    violation.encode_to_vec(),
                ),
                any(
                    "type.googleapis.com/google.rpc.ErrorInfo",
                    info.encode_to_vec(),
                ),
                any(
                    "type.googleapis.com/google.rpc.RetryInfo",
                    retry.encode_to_vec(),
                ),
            ],
        };
        assert_eq!(
            rpc_status_json(&status).unwrap(),
            serde_json::json!({"code": 3, "details": [
                {"@type": "type.googleapis.com/google.rpc.BadRequest",
                 "fieldViolations": [{"field": "key", "reason": "TOO_LONG",
                                      "localizedMessage": {"locale": "en"}}]},
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "R"},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.500s"},
            ]})
        );
        let plain = BadRequest {
            field_violations: vec![FieldViolation {
                field: "f".into(),
                ..Default::default()
            }],
        };
        let help = rpc_details::Help {
            links: vec![rpc_details::Link {
                description: String::new(),
                url: "https://example.test".into(),
            }],
        };
        let more = dapr::google::rpc::Status {
            code: 9,
            message: String::new(),
            details: vec![
                any(
                    "type.googleapis.com/google.rpc.BadRequest",
                    plain.encode_to_vec(),
                ),
                any("type.googleapis.com/google.rpc.Help", help.encode_to_vec()),
            ],
        };
        assert_eq!(
            rpc_status_json(&more).unwrap(),
            serde_json::json!({"code": 9, "details": [
                {"@type": "type.googleapis.com/google.rpc.BadRequest",
                 "fieldViolations": [{"field": "f"}]},
                {"@type": "type.googleapis.com/google.rpc.Help",
                 "links": [{"url": "https://example.test"}]},
            ]})
        );
        let bare = dapr::google::rpc::Status {
            code: 5,
            message: "gone".into(),
            details: vec![],
        };
        assert_eq!(
            rpc_status_json(&bare).unwrap(),
            serde_json::json!({"code": 5, "message": "gone"})
        );
    }

    #[test]
    fn durations_are_written_as_protojson_writes_them() {
        for (seconds, nanos, text) in [
            (3, 0, "3s"),
            (1, 500_000_000, "1.500s"),
            (0, 1_000, "0.000001s"),
            (0, 7, "0.000000007s"),
            (-2, -250_000_000, "-2.250s"),
        ] {
            let d = prost_types::Duration { seconds, nanos };
            assert_eq!(duration_json(&d), text);
        }
    }

    #[test]
    fn a_detail_of_an_unknown_type_or_broken_is_an_error() {
        for detail in [
            any("type.googleapis.com/acme.Private", vec![8, 1]),
            any("type.googleapis.com/google.rpc.ErrorInfo", vec![0xff]),
        ] {
            let status = dapr::google::rpc::Status {
                code: 13,
                message: "x".into(),
                details: vec![detail],
            };
            assert!(rpc_status_json(&status).is_err());
        }
    }
}
