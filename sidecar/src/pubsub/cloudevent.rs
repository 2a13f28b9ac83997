//! The CloudEvents 1.0 envelope a publish is wrapped in, built as daprd builds it: `id`,
//! `source` (the app id), `type` `com.dapr.event.sent`, `specversion`, `datacontenttype`,
//! `topic`, `pubsubname`, the trace fields, `time`, and the payload as `data` (JSON kept
//! as JSON, anything else as a string) or `data_base64` (binary). `cloudevent.*` metadata
//! overrides the first fields; an app's own CloudEvent is kept, with topic and pub/sub set.
//! `ttlInSeconds` adds `expiration`, after which a subscriber drops the message.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::meta;

pub const EVENT_TYPE: &str = "com.dapr.event.sent";
pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";

/// What a publish says, for its envelope.
pub struct Publish<'a> {
    pub app_id: &'a str,
    pub pubsub: &'a str,
    pub topic: &'a str,
    /// The request's content type as given (may be empty).
    pub content_type: &'a str,
    pub data: &'a [u8],
    /// The request's `metadata.*` values.
    pub metadata: &'a HashMap<String, String>,
    /// The caller's W3C `traceparent`, if any.
    pub traceparent: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The app said `application/cloudevents+json` and sent something else.
    #[error("cannot create cloudevent: {0}")]
    NotACloudEvent(String),
}

/// The media type without parameters, lower-cased.
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Now as RFC 3339 in UTC, to the second (`2026-11-27T10:42:33Z`), as daprd writes `time`.
pub fn now_rfc3339() -> String {
    rfc3339(OffsetDateTime::now_utc())
}

fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_default()
}

/// The message's time to live from `ttlInSeconds` (or `ttl`): whole seconds or a Go
/// duration; none when absent, zero or unreadable (daprd ignores those too).
pub fn ttl(metadata: &HashMap<String, String>) -> Option<Duration> {
    let v = meta(metadata, "ttlInSeconds").or_else(|| meta(metadata, "ttl"))?;
    let d = match v.trim().parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => crate::components::parse_duration(v)?,
    };
    (!d.is_zero()).then_some(d)
}

/// The envelope's JSON for `p`.
pub fn envelope(p: &Publish<'_>) -> Result<Vec<u8>, EnvelopeError> {
    let mut ce = if media_type(p.content_type) == CLOUDEVENTS_JSON {
        from_app(p)?
    } else {
        built(p)
    };
    if let Some(ttl) = ttl(p.metadata) {
        let at = OffsetDateTime::now_utc() + ttl;
        ce.insert("expiration".into(), Value::String(rfc3339(at)));
    }
    Ok(serde_json::to_vec(&Value::Object(ce)).expect("a JSON map serializes"))
}

/// The envelope daprd makes around a payload.
pub fn built(p: &Publish<'_>) -> Map<String, Value> {
    let over = |name: &str| meta(p.metadata, &format!("cloudevent.{name}"));
    let mut ce = Map::new();
    let content_type = if p.content_type.is_empty() {
        "text/plain"
    } else {
        p.content_type
    };
    match media_type(content_type).as_str() {
        "application/json" => {
            let data = serde_json::from_slice::<Value>(p.data)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(p.data).into_owned()));
            ce.insert("data".into(), data);
        }
        "application/octet-stream" | "application/cloudevents+protobuf" => {
            let b64 = base64::engine::general_purpose::STANDARD.encode(p.data);
            ce.insert("data_base64".into(), Value::String(b64));
        }
        _ => {
            let text = String::from_utf8_lossy(p.data).into_owned();
            ce.insert("data".into(), Value::String(text));
        }
    }
    let s = |v: &str| Value::String(v.to_string());
    ce.insert("datacontenttype".into(), s(content_type));
    let id = over("id").map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string);
    ce.insert("id".into(), Value::String(id));
    ce.insert("pubsubname".into(), s(p.pubsub));
    let source = over("source").unwrap_or(p.app_id);
    ce.insert(
        "source".into(),
        s(if source.is_empty() { "Dapr" } else { source }),
    );
    ce.insert("specversion".into(), s("1.0"));
    if let Some(subject) = over("subject") {
        ce.insert("subject".into(), s(subject));
    }
    ce.insert("time".into(), Value::String(now_rfc3339()));
    ce.insert("topic".into(), s(p.topic));
    let trace = over("traceparent")
        .or_else(|| over("traceid"))
        .unwrap_or(p.traceparent);
    ce.insert("traceid".into(), s(trace));
    ce.insert("traceparent".into(), s(trace));
    ce.insert("tracestate".into(), s(over("tracestate").unwrap_or("")));
    ce.insert("type".into(), s(over("type").unwrap_or(EVENT_TYPE)));
    ce
}

/// An app's own CloudEvent, kept as it is but for the fields daprd sets or fills in.
fn from_app(p: &Publish<'_>) -> Result<Map<String, Value>, EnvelopeError> {
    let mut ce = match serde_json::from_slice::<Value>(p.data) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(EnvelopeError::NotACloudEvent("not a JSON object".into())),
        Err(e) => return Err(EnvelopeError::NotACloudEvent(e.to_string())),
    };
    let s = |v: &str| Value::String(v.to_string());
    ce.entry("time")
        .or_insert_with(|| Value::String(now_rfc3339()));
    if !ce.contains_key("traceid") {
        ce.insert("traceid".into(), s(p.traceparent));
        ce.insert("traceparent".into(), s(p.traceparent));
    }
    ce.entry("tracestate").or_insert_with(|| s(""));
    ce.insert("topic".into(), s(p.topic));
    ce.insert("pubsubname".into(), s(p.pubsub));
    for (field, default) in [
        ("source", "Dapr"),
        ("type", EVENT_TYPE),
        ("specversion", "1.0"),
    ] {
        if ce.get(field).is_none_or(Value::is_null) {
            ce.insert(field.into(), s(default));
        }
    }
    Ok(ce)
}

/// Whether an envelope's `expiration` has passed.
pub fn expired(ce: &Map<String, Value>) -> bool {
    ce.get("expiration")
        .and_then(Value::as_str)
        .and_then(|e| OffsetDateTime::parse(e, &Rfc3339).ok())
        .is_some_and(|at| at < OffsetDateTime::now_utc())
}

/// The envelope daprd gives a subscription that asked for raw payloads: the bytes as
/// `data_base64` of a new CloudEvent.
pub fn from_raw(
    raw: &[u8],
    pubsub: &str,
    topic: &str,
    metadata: &HashMap<String, String>,
) -> Map<String, Value> {
    let s = |v: &str| Value::String(v.to_string());
    let mut ce = Map::new();
    ce.insert(
        "data_base64".into(),
        Value::String(base64::engine::general_purpose::STANDARD.encode(raw)),
    );
    ce.insert("datacontenttype".into(), s("application/octet-stream"));
    ce.insert("id".into(), Value::String(uuid::Uuid::new_v4().to_string()));
    ce.insert("pubsubname".into(), s(pubsub));
    ce.insert("source".into(), s("Dapr"));
    ce.insert("specversion".into(), s("1.0"));
    ce.insert("topic".into(), s(topic));
    for field in ["traceid", "traceparent", "tracestate"] {
        if let Some(v) = meta(metadata, field) {
            ce.insert(field.into(), s(v));
        }
    }
    ce.insert("type".into(), s(EVENT_TYPE));
    ce
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish<'a>(
        content_type: &'a str,
        data: &'a [u8],
        metadata: &'a HashMap<String, String>,
    ) -> Value {
        let p = Publish {
            app_id: "checkout",
            pubsub: "pubsub",
            topic: "orders",
            content_type,
            data,
            metadata,
            traceparent: "",
        };
        serde_json::from_slice(&envelope(&p).unwrap()).unwrap()
    }

    #[test]
    fn payloads_are_wrapped_as_daprd_wraps_them() {
        let none = HashMap::new();
        let ce = publish("application/json", br#"{"n": 1}"#, &none);
        assert_eq!(ce["data"], serde_json::json!({"n": 1}));
        assert_eq!(ce["datacontenttype"], "application/json");
        assert_eq!(ce["source"], "checkout");
        assert_eq!(ce["type"], EVENT_TYPE);
        assert_eq!(ce["specversion"], "1.0");
        assert_eq!(
            (&ce["topic"], &ce["pubsubname"]),
            (&"orders".into(), &"pubsub".into())
        );
        assert_eq!(
            (&ce["traceid"], &ce["traceparent"]),
            (&"".into(), &"".into())
        );
        assert!(uuid::Uuid::parse_str(ce["id"].as_str().unwrap()).is_ok());
        let time = ce["time"].as_str().unwrap();
        assert!(
            OffsetDateTime::parse(time, &Rfc3339).is_ok() && time.ends_with('Z'),
            "{time}"
        );
        assert!(ce.get("expiration").is_none());

        // No content type: text, even when it reads as JSON.
        let ce = publish("", br#"{"n": 1}"#, &none);
        assert_eq!(
            (&ce["data"], &ce["datacontenttype"]),
            (&r#"{"n": 1}"#.into(), &"text/plain".into())
        );
        // JSON that is not: a string.
        assert_eq!(
            publish("application/json", b"{oops", &none)["data"],
            "{oops"
        );
        // Binary: base64, no `data`.
        let ce = publish("application/octet-stream", &[0, 255], &none);
        assert_eq!(ce["data_base64"], "AP8=");
        assert!(ce.get("data").is_none());
    }

    #[test]
    fn metadata_overrides_fields_and_sets_an_expiration() {
        let m: HashMap<String, String> = [
            ("cloudevent.id", "my-id"),
            ("cloudevent.type", "order.placed"),
            ("cloudevent.source", "shop"),
            ("ttlInSeconds", "60"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let ce = publish("text/plain", b"hi", &m);
        assert_eq!(
            (&ce["id"], &ce["type"], &ce["source"]),
            (&"my-id".into(), &"order.placed".into(), &"shop".into())
        );
        let ce = ce.as_object().unwrap().clone();
        assert!(!expired(&ce));
        let mut past = ce.clone();
        past.insert("expiration".into(), "2020-01-01T00:00:00Z".into());
        assert!(expired(&past));
    }

    #[test]
    fn an_apps_cloudevent_is_kept_with_topic_and_pubsub_set() {
        let none = HashMap::new();
        let ce = publish(
            CLOUDEVENTS_JSON,
            br#"{"id": "a", "topic": "elsewhere", "data": {"x": 1}, "custom": true}"#,
            &none,
        );
        assert_eq!(ce["id"], "a");
        assert_eq!(ce["topic"], "orders");
        assert_eq!(ce["custom"], true);
        assert_eq!(ce["type"], EVENT_TYPE);
        assert!(ce.get("datacontenttype").is_none());
        let p = Publish {
            app_id: "a",
            pubsub: "p",
            topic: "t",
            content_type: CLOUDEVENTS_JSON,
            data: b"[1]",
            metadata: &none,
            traceparent: "",
        };
        assert!(envelope(&p).is_err());
    }
}
