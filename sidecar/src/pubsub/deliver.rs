//! Delivering messages to the app. Once the app listens, the sidecar asks it what it
//! subscribes to (`GET /dapr/subscribe`), adds the declared `Subscription`s, and for each
//! subscription takes its topic's messages one at a time, in order: the route is the first
//! rule that matches, the message goes to the app as `POST <route>` with content type
//! `application/cloudevents+json` and the publisher's metadata as headers, and the app's
//! answer decides: `SUCCESS` (or any 2xx without a status) is done, `DROP` or a 404 drops
//! it, `RETRY`, another status or no answer delivers it again after a backoff, up to
//! [`ATTEMPTS`] times. A message dropped or out of attempts goes to the subscription's
//! dead-letter topic when it has one, else it is logged and gone.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::routing::Routes;
use super::subscriptions::{self, Subscription};
use super::{Delivery, Message, cloudevent};
use crate::api::Api;
use crate::invoke::{AppChannel, Call};
use dapr::dapr::proto::runtime::v1::topic_event_response::TopicEventResponseStatus;

/// How many times a message is offered to the app before it is given up.
pub const ATTEMPTS: u32 = 5;
/// The first wait before a message is offered again; it doubles each time, up to 5 s.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// How long the app may take over one message.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a dead letter may wait for room on its topic (daprd's bound too).
const DEAD_LETTER_TIMEOUT: Duration = Duration::from_secs(30);
/// Headers only a sidecar sets; a publisher's metadata never passes as them.
const SIDECAR_HEADERS: [&str; 5] = [
    "dapr-caller-app-id",
    "dapr-caller-namespace",
    "dapr-callee-app-id",
    "dapr-api-token",
    "x-request-timeout-ms",
];

/// Who a subscription's messages go to.
pub enum Taker<'a> {
    /// The app's route, over its channel.
    App,
    /// A stream the app opened.
    Stream(&'a super::stream::Conn),
}

/// Why one offer of a message did not succeed.
#[derive(Debug)]
enum Failure {
    /// Worth offering again.
    Retry(String),
    /// Not: the app refused it for good, or it cannot be delivered.
    Drop(String),
}

/// Asks the app for its subscriptions, merges the declared ones, and starts a consumer
/// for each; the subscriptions in force are kept for the metadata API.
pub async fn start(api: Arc<Api>, mut stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    let programmatic = tokio::select! {
        subs = ask_the_app(&api) => subs,
        _ = stop.changed() => return Vec::new(),
    };
    let all = subscriptions::merge(api.declared_subscriptions.clone(), programmatic);
    let mut tasks = Vec::new();
    let mut active = Vec::new();
    for sub in all {
        let Some(pubsub) = api.components.pubsub.get(&sub.pubsub) else {
            tracing::warn!(pubsub = %sub.pubsub, topic = %sub.topic, "subscription to a pub/sub that is not loaded; left out");
            continue;
        };
        if !sub.dead_letter_topic.is_empty()
            && super::memory::hears(&sub.topic, &sub.dead_letter_topic)
        {
            tracing::error!(pubsub = %sub.pubsub, topic = %sub.topic, dead_letter_topic = %sub.dead_letter_topic, "a subscription would hear its own dead letters; left out");
            continue;
        }
        let routes = match Routes::compile(&sub.rules) {
            Ok(r) => r,
            Err(why) => {
                tracing::error!(pubsub = %sub.pubsub, topic = %sub.topic, reason = %why, "a routing rule cannot be used; subscription left out");
                continue;
            }
        };
        let rx = pubsub.subscribe(&sub.topic);
        tracing::info!(pubsub = %sub.pubsub, topic = %sub.topic, origin = ?sub.origin, "subscribed");
        tasks.push(tokio::spawn(consume(
            api.clone(),
            sub.clone(),
            routes,
            rx,
            stop.clone(),
        )));
        active.push(sub);
    }
    if api.subscriptions.set(active).is_err() {
        tracing::error!("subscriptions were started twice; the first set stays listed");
    }
    tasks
}

/// The app's programmatic subscriptions: none when it has no HTTP channel, answers 404,
/// or answers something unreadable (logged).
async fn ask_the_app(api: &Api) -> Vec<Subscription> {
    if api.components.pubsub.is_empty() {
        return Vec::new();
    }
    match api.invoker.app() {
        None => return Vec::new(),
        Some(AppChannel::Grpc(app)) => {
            return app.subscriptions().await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "asking the app for its subscriptions failed");
                Vec::new()
            });
        }
        Some(AppChannel::Http(_)) => {}
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(id) = HeaderValue::from_str(api.app_id()) {
        headers.insert("dapr-app-id", id);
    }
    // The app may take the connection before its routes are ready: a failed call is
    // tried again for about 10 s, as daprd does.
    let mut wait = Duration::from_millis(500);
    let mut tries = 1;
    let answer = loop {
        let call = Call {
            method: Method::GET,
            path: "/dapr/subscribe".into(),
            query: None,
            headers: headers.clone(),
            body: Bytes::new(),
        };
        match tokio::time::timeout(DELIVERY_TIMEOUT, api.invoker.deliver(call)).await {
            Ok(Ok(r)) => break r,
            Ok(Err(e)) if tries < 8 => {
                tracing::debug!(error = %e, "asking the app for its subscriptions; trying again");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
                tries += 1;
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "asking the app for its subscriptions failed");
                return Vec::new();
            }
            Err(_) => {
                tracing::error!("the app did not answer GET /dapr/subscribe in time");
                return Vec::new();
            }
        }
    };
    let status = answer.status();
    let body = match crate::invoke::read_body(answer.into_body(), api.config.max_body_size).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "reading the app's subscriptions failed");
            return Vec::new();
        }
    };
    if status.as_u16() == 404 {
        tracing::debug!("the app has no programmatic subscriptions");
        return Vec::new();
    }
    if !status.is_success() {
        tracing::error!(%status, "the app answered GET /dapr/subscribe with an error");
        return Vec::new();
    }
    subscriptions::parse_programmatic(&body).unwrap_or_else(|e| {
        tracing::error!(error = %e, "the app's subscriptions are not valid JSON");
        Vec::new()
    })
}

/// Takes `sub`'s messages one at a time until the sidecar stops.
async fn consume(
    api: Arc<Api>,
    sub: Subscription,
    routes: Routes,
    mut rx: mpsc::Receiver<Delivery>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let Some(delivery) = Delivery::next(&mut rx, &mut stop).await else {
            return;
        };
        // A stop ends an offer or a backoff midway: the sidecar does not outlive its stop,
        // and a durable component offers the message again later.
        let finished = tokio::select! {
            f = handle(&api, &sub, &routes, &delivery, Taker::App) => f,
            _ = stop.changed() => return,
        };
        if finished {
            delivery.done().await;
        } else {
            delivery.release();
        }
    }
}

/// Offers `message` until it is taken or given up, then dead-letters what was given up;
/// false when a dead letter found no taker (the message is not finished). Each offer waits
/// until the app is healthy (with health checks): an unhealthy app is offered nothing, as
/// daprd stops its subscriptions, and waiting uses up none of the message's attempts; an
/// offer under way when the app turns unhealthy runs to its end. A stream the app opened
/// is offered messages whatever its health.
pub async fn handle(
    api: &Api,
    sub: &Subscription,
    routes: &Routes,
    delivery: &Delivery,
    taker: Taker<'_>,
) -> bool {
    let message = &delivery.message;
    // Read once: every offer sends the same event.
    let (ce, body) = match envelope(sub, message) {
        Ok(e) => e,
        Err(why) => return dead_letter(api, sub, message, &why).await,
    };
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1;
    let why = loop {
        let offered = match (routes.route(&ce), &taker) {
            (Ok(Some(path)), Taker::App) => {
                api.invoker.health().until_healthy().await;
                let _offering = delivery.offering();
                offer(api, sub, path, message, &ce, body.clone()).await
            }
            (Ok(Some(path)), Taker::Stream(conn)) => {
                let _offering = delivery.offering();
                offer_on_stream(conn, sub, path, &ce).await
            }
            // Not for the app: skipped, or sent to the dead-letter topic when there is one,
            // and taken either way (daprd's findMatchingRoute).
            (Ok(None), _) => {
                if sub.dead_letter_topic.is_empty() {
                    tracing::debug!(pubsub = %sub.pubsub, topic = %message.topic, "no routing rule holds for the event; skipped");
                } else {
                    dead_letter(api, sub, message, "no routing rule holds").await;
                }
                return true;
            }
            // daprd hands the error back to the component, which offers the event again:
            // here, like a failed offer.
            (Err(why), _) => Err(Failure::Retry(why)),
        };
        match offered {
            Ok(()) => return true,
            Err(Failure::Drop(why)) => break why,
            Err(Failure::Retry(why)) if attempt >= ATTEMPTS => {
                break format!("{why}; given up after {ATTEMPTS} attempts");
            }
            Err(Failure::Retry(why)) => {
                tracing::warn!(topic = %message.topic, attempt, reason = %why, "message to be delivered again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                attempt += 1;
            }
        }
    };
    dead_letter(api, sub, message, &why).await
}

/// Sends a message given up to the subscription's dead-letter topic, or drops it when it
/// has none; false when the dead-letter topic did not take it.
async fn dead_letter(api: &Api, sub: &Subscription, message: &Message, why: &str) -> bool {
    if sub.dead_letter_topic.is_empty() {
        tracing::error!(pubsub = %sub.pubsub, topic = %message.topic, reason = %why, "message dropped");
        return true;
    }
    let Some(pubsub) = api.components.pubsub.get(&sub.pubsub) else {
        return false;
    };
    tracing::warn!(topic = %message.topic, dead_letter_topic = %sub.dead_letter_topic, reason = %why, "message sent to the dead-letter topic");
    let letter = Message {
        topic: sub.dead_letter_topic.clone(),
        ..message.clone()
    };
    match pubsub.publish_within(letter, DEAD_LETTER_TIMEOUT).await {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "publishing to the dead-letter topic failed");
            false
        }
    }
}

/// The CloudEvent `message` is delivered as, and its bytes for an HTTP app; why it cannot
/// be delivered at all (not a CloudEvent, expired).
fn envelope(sub: &Subscription, message: &Message) -> Result<(Envelope, Bytes), String> {
    if sub.raw_payload() {
        let ce = cloudevent::from_raw(
            &message.data,
            &sub.pubsub,
            &message.topic,
            &message.metadata,
        );
        let body = serde_json::to_vec(&ce).expect("a JSON map serializes");
        return Ok((ce, Bytes::from(body)));
    }
    match serde_json::from_slice::<serde_json::Value>(&message.data) {
        Ok(serde_json::Value::Object(ce)) if cloudevent::expired(&ce) => {
            Err("the message expired".into())
        }
        Ok(serde_json::Value::Object(ce)) => Ok((ce, message.data.clone())),
        _ => Err("the message is not a CloudEvent".into()),
    }
}

type Envelope = serde_json::Map<String, serde_json::Value>;

/// One offer of `message` (as `ce`, and `body` for an HTTP app) to the app.
async fn offer(
    api: &Api,
    sub: &Subscription,
    path: &str,
    message: &Message,
    ce: &Envelope,
    body: Bytes,
) -> Result<(), Failure> {
    let mut headers = HeaderMap::new();
    for (k, v) in &message.metadata {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(k.as_str()),
            HeaderValue::try_from(v.as_str()),
        ) && name != header::CONTENT_TYPE
            && name != header::CONTENT_LENGTH
            && !SIDECAR_HEADERS.contains(&name.as_str())
        {
            headers.insert(name, value);
        }
    }
    if let Ok(v) = HeaderValue::try_from(sub.pubsub.as_str()) {
        headers.insert("pubsubname", v);
    }
    if let Some(AppChannel::Grpc(app)) = api.invoker.app() {
        if let Some(token) = api.invoker.app_token() {
            headers.insert(crate::invoke::API_TOKEN, token.clone());
        }
        let event = grpc_event(sub, path, ce)?;
        return match app.topic_event(event, &headers, DELIVERY_TIMEOUT).await {
            Ok(status) => judged(status),
            // daprd takes Unimplemented as "not for me": dropped, and not dead-lettered.
            Err(s) if s.code() == tonic::Code::Unimplemented => {
                tracing::warn!(topic = %message.topic, "the app does not take this event (Unimplemented); dropped");
                Ok(())
            }
            Err(s) => Err(Failure::Retry(format!("the app answered {s}"))),
        };
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(cloudevent::CLOUDEVENTS_JSON),
    );
    let call = Call {
        method: Method::POST,
        path: if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        },
        query: None,
        headers,
        body,
    };
    let answer = match tokio::time::timeout(DELIVERY_TIMEOUT, api.invoker.deliver(call)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(Failure::Retry(format!("calling the app failed: {e}"))),
        Err(_) => {
            return Err(Failure::Retry(format!(
                "no answer within {DELIVERY_TIMEOUT:?}"
            )));
        }
    };
    let status = answer.status();
    if status.as_u16() == 404 {
        return Err(Failure::Drop(format!("the app has no route {path} (404)")));
    }
    if !status.is_success() {
        return Err(Failure::Retry(format!("the app answered {status}")));
    }
    let body = crate::invoke::read_body(answer.into_body(), api.config.max_body_size)
        .await
        .map_err(|e| Failure::Retry(format!("reading the app's answer failed: {e}")))?;
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(default)]
        status: String,
    }
    match serde_json::from_slice::<Answer>(&body) {
        // An empty or unreadable body is a success, as in daprd.
        Err(_) => Ok(()),
        Ok(a) => match a.status.as_str() {
            "" | "SUCCESS" => Ok(()),
            "DROP" => Err(Failure::Drop("the app said DROP".into())),
            "RETRY" => Err(Failure::Retry("the app said RETRY".into())),
            other => Err(Failure::Retry(format!("the app said {other:?}"))),
        },
    }
}

/// An app's status for an event, as the outcome of its offer.
fn judged(status: TopicEventResponseStatus) -> Result<(), Failure> {
    match status {
        TopicEventResponseStatus::Success => Ok(()),
        TopicEventResponseStatus::Drop => Err(Failure::Drop("the app said DROP".into())),
        TopicEventResponseStatus::Retry => Err(Failure::Retry("the app said RETRY".into())),
    }
}

/// One offer of `message` (as `ce`) on a stream the app opened, waiting for its answer as
/// long as the stream lasts (daprd's streamer); an event that cannot be put in gRPC's shape
/// is given up, as for a gRPC app.
async fn offer_on_stream(
    conn: &super::stream::Conn,
    sub: &Subscription,
    path: &str,
    ce: &Envelope,
) -> Result<(), Failure> {
    let event = grpc_event(sub, path, ce)?;
    match conn.offer(event).await {
        Ok(status) => judged(status),
        Err(why) => Err(Failure::Retry(why)),
    }
}

/// The event as gRPC carries it; one that cannot be put in that shape (its `data_base64`
/// is not base64) can never be delivered, so it is given up.
fn grpc_event(
    sub: &Subscription,
    path: &str,
    ce: &Envelope,
) -> Result<dapr::dapr::proto::runtime::v1::TopicEventRequest, Failure> {
    crate::appcallback::topic_event_request(ce, &sub.pubsub, &sub.topic, path)
        .map_err(|s| Failure::Drop(format!("the event cannot be sent: {}", s.message())))
}
