//! How Dapr reaches the notifier: `GET /dapr/subscribe` names the topic, `POST
//! /events/bookings` takes each message (a CloudEvent) and answers Dapr's way: `SUCCESS`
//! once the event is on disk (or when the message is not a booking event), `DROP` for a
//! message no retry can make readable, and a 500 (which Dapr retries) when it could not be
//! kept. `GET /notifications` counts what was heard.

use std::sync::Arc;

use appkit::error::AppError;
use appkit::http::{healthz, method_not_allowed, not_found, with_app_token};
use appkit::wire::BookingEvent;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::inbox::{Counts, Inbox};

/// Where Dapr delivers the topic's messages.
pub const ROUTE: &str = "/events/bookings";

#[derive(Clone)]
pub struct Notifier {
    pub inbox: Inbox,
    /// The pub/sub component and topic the backend's outbox publishes to.
    pub pubsub: Arc<str>,
    pub topic: Arc<str>,
    /// `APP_API_TOKEN`: with it, only the sidecar (which sends it) may call the app.
    pub app_token: Option<Arc<str>>,
}

pub fn app(notifier: Notifier) -> Router {
    let r = Router::new()
        .route("/dapr/subscribe", get(subscriptions))
        .route(ROUTE, post(event))
        .route("/notifications", get(counts))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    with_app_token(r, notifier.app_token.clone()).with_state(notifier)
}

async fn subscriptions(State(n): State<Notifier>) -> Json<Value> {
    Json(json!([{"pubsubname": &*n.pubsub, "topic": &*n.topic, "route": ROUTE}]))
}

async fn counts(State(n): State<Notifier>) -> Json<Counts> {
    Json(n.inbox.counts())
}

/// The parts of a CloudEvent the notifier reads.
#[derive(Deserialize)]
struct Envelope {
    id: String,
    #[serde(default)]
    data: Value,
}

/// What a message's `data` turned out to be.
enum Message {
    Event(BookingEvent),
    /// Not a booking event: another write of the booking's transaction.
    Other,
    /// Says it is a booking event, but is not one.
    Unreadable(String),
}

fn read(data: Value) -> Message {
    // An event published as text (without its JSON content type) is read all the same.
    let data = match data {
        Value::String(text) => serde_json::from_str(&text).unwrap_or(Value::Null),
        other => other,
    };
    let is_event = data
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| t.starts_with("booking."));
    if !is_event {
        return Message::Other;
    }
    serde_json::from_value(data).map_or_else(|e| Message::Unreadable(e.to_string()), Message::Event)
}

fn status(word: &str) -> Response {
    Json(json!({ "status": word })).into_response()
}

async fn event(State(n): State<Notifier>, body: Bytes) -> Result<Response, AppError> {
    let envelope: Envelope = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "dropping a message that is not a CloudEvent");
            return Ok(status("DROP"));
        }
    };
    match read(envelope.data) {
        Message::Event(event) => {
            let kept = n.inbox.keep(&envelope.id, event).await.map_err(|e| {
                tracing::error!(error = %e, id = %envelope.id, "an event could not be kept");
                AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "not_kept", e.to_string())
            })?;
            tracing::debug!(id = %envelope.id, ?kept, "booking event");
            Ok(status("SUCCESS"))
        }
        Message::Other => {
            n.inbox.ignored();
            Ok(status("SUCCESS"))
        }
        Message::Unreadable(reason) => {
            // Retrying cannot make it readable, and Dapr without a resiliency policy
            // drops a retried message too; say so loudly.
            tracing::error!(id = %envelope.id, %reason, "dropping an unreadable booking event");
            Ok(status("DROP"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_booking_events_count() {
        let reservation = json!({"id": "a", "hotel_id": 1, "user_id": "u", "name": "N",
            "check_in": "2027-12-01", "check_out": "2027-12-02", "rooms": 1,
            "created_at": "2027-11-01T00:00:00Z"});
        let event = json!({"type": "booking.confirmed", "reservation": reservation, "at": "x"});
        assert!(matches!(read(event.clone()), Message::Event(_)));
        assert!(matches!(
            read(Value::String(event.to_string())),
            Message::Event(_)
        ));
        // The other writes of a booking's transaction, as daprd and this sidecar publish them.
        for other in [
            json!({"booked": 3}),
            json!("map[booked:3]"),
            json!({"request": {}}),
            Value::Null,
        ] {
            assert!(matches!(read(other), Message::Other));
        }
        assert!(matches!(
            read(json!({"type": "booking.confirmed", "reservation": {"id": 1}})),
            Message::Unreadable(_)
        ));
    }
}
