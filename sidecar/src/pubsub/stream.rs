//! Streaming subscriptions (`SubscribeTopicEventsAlpha1`): an app that serves nothing opens
//! a gRPC stream, names a pub/sub and a topic in its first message, and is handed that
//! topic's messages on the stream, answering each by its event id. Delivery is the one an
//! app's route gets (`deliver`: one message at a time, retries, dead letters); the
//! subscription lives as long as its stream and the metadata API lists it as `STREAMING`,
//! as daprd does. As in daprd, an offer waits for its answer as long as the stream lasts,
//! and the subscription holds before the initial response is sent. A message under way
//! when the stream ends is not done: a durable component offers it again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use dapr::dapr::proto::runtime::v1::subscribe_topic_events_request_alpha1::SubscribeTopicEventsRequestType;
use dapr::dapr::proto::runtime::v1::subscribe_topic_events_response_alpha1::SubscribeTopicEventsResponseType;
use dapr::dapr::proto::runtime::v1::topic_event_response::TopicEventResponseStatus;
use dapr::dapr::proto::runtime::v1::{
    SubscribeTopicEventsRequestAlpha1, SubscribeTopicEventsResponseAlpha1,
    SubscribeTopicEventsResponseInitialAlpha1, TopicEventRequest,
};
use tokio::sync::{mpsc, oneshot};
use tonic::{Status, Streaming};

use super::Delivery;
use super::deliver::{self, Taker};
use super::routing::Routes;
use super::subscriptions::{Origin, Rule, Subscription};
use crate::api::Api;

/// What the app is sent on its stream.
pub type Outgoing = Result<SubscribeTopicEventsResponseAlpha1, Status>;

/// The streaming subscriptions open now, for the metadata API.
#[derive(Default)]
pub struct Streams {
    next: AtomicU64,
    open: Mutex<Vec<(u64, Subscription)>>,
}

impl Streams {
    pub fn list(&self) -> Vec<Subscription> {
        self.lock().iter().map(|(_, s)| s.clone()).collect()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<(u64, Subscription)>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A stream's place in [`Streams`], given up when the stream ends.
pub struct Listed {
    api: Arc<Api>,
    id: u64,
}

impl Listed {
    fn new(api: Arc<Api>, sub: Subscription) -> Self {
        let id = api.streams.next.fetch_add(1, Ordering::Relaxed);
        api.streams.lock().push((id, sub));
        Listed { api, id }
    }
}

impl Drop for Listed {
    fn drop(&mut self) {
        self.api.streams.lock().retain(|(id, _)| *id != self.id);
    }
}

/// Reads the stream's first message: the subscription it asks for, or the error the call
/// ends with (daprd's messages; plain errors there, so gRPC's `Unknown`).
pub async fn opening(
    api: &Api,
    incoming: &mut Streaming<SubscribeTopicEventsRequestAlpha1>,
) -> Result<Subscription, Status> {
    let first = tokio::select! {
        m = incoming.message() => m?,
        () = crate::server::stopped(api.shutdown.subscribe()) => {
            return Err(Status::unknown("api server closed"));
        }
    };
    let Some(SubscribeTopicEventsRequestType::InitialRequest(initial)) =
        first.and_then(|m| m.subscribe_topic_events_request_type)
    else {
        return Err(Status::unknown("initial request is required"));
    };
    if initial.pubsub_name.is_empty() {
        return Err(Status::unknown("pubsubName is required"));
    }
    if initial.topic.is_empty() {
        return Err(Status::unknown("topic is required"));
    }
    api.pubsub_for(&initial.pubsub_name, &Default::default())?;
    let sub = Subscription {
        pubsub: initial.pubsub_name,
        topic: initial.topic,
        // daprd routes every event of a stream to "/".
        rules: vec![Rule {
            condition: String::new(),
            path: "/".into(),
        }],
        dead_letter_topic: initial.dead_letter_topic.unwrap_or_default(),
        metadata: initial.metadata,
        origin: Origin::Streaming,
    };
    if !sub.dead_letter_topic.is_empty() && super::memory::hears(&sub.topic, &sub.dead_letter_topic)
    {
        return Err(Status::unknown(
            "a subscription may not hear its own dead-letter topic",
        ));
    }
    Ok(sub)
}

/// The subscription held: the topic's messages from now on, and the stream listed. Done
/// before the initial response, so nothing published after it is missed.
pub fn hold(
    api: &Arc<Api>,
    sub: &Subscription,
) -> Result<(mpsc::Receiver<Delivery>, Listed), Status> {
    let pubsub = api.pubsub_for(&sub.pubsub, &Default::default())?;
    let rx = pubsub.subscribe(&sub.topic);
    Ok((rx, Listed::new(api.clone(), sub.clone())))
}

/// The first message the app gets: the subscription holds.
pub fn initial_response() -> SubscribeTopicEventsResponseAlpha1 {
    SubscribeTopicEventsResponseAlpha1 {
        subscribe_topic_events_response_type: Some(
            SubscribeTopicEventsResponseType::InitialResponse(
                SubscribeTopicEventsResponseInitialAlpha1 {},
            ),
        ),
    }
}

/// The one event a stream waits for an answer to, and where its answer goes.
type Pending = Mutex<Option<(String, oneshot::Sender<i32>)>>;

/// One open stream as a taker of messages: events go out on `out`, and the app's answer to
/// the event under way comes back through `pending`.
pub struct Conn {
    out: mpsc::Sender<Outgoing>,
    pending: Arc<Pending>,
}

impl Conn {
    /// Sends `event` and waits for the app's answer to it, as long as the stream lasts;
    /// why there is none (the stream closed).
    pub async fn offer(
        &self,
        event: TopicEventRequest,
    ) -> Result<TopicEventResponseStatus, String> {
        let (tx, rx) = oneshot::channel();
        *self.pending.lock().unwrap_or_else(PoisonError::into_inner) = Some((event.id.clone(), tx));
        self.out
            .send(Ok(SubscribeTopicEventsResponseAlpha1 {
                subscribe_topic_events_response_type: Some(
                    SubscribeTopicEventsResponseType::EventMessage(event),
                ),
            }))
            .await
            .map_err(|_| "the stream is closed".to_string())?;
        rx.await
            .map(crate::appcallback::event_status)
            .map_err(|_| "the stream is closed".to_string())
    }
}

/// Reads the app's side of the stream: each answer to the event under way is handed on,
/// an answer to no such event is dropped (as daprd does); returns why it stopped.
async fn listen(
    mut incoming: Streaming<SubscribeTopicEventsRequestAlpha1>,
    pending: Arc<Pending>,
    out: mpsc::Sender<Outgoing>,
) -> &'static str {
    loop {
        match incoming.message().await {
            Ok(Some(m)) => match m.subscribe_topic_events_request_type {
                Some(SubscribeTopicEventsRequestType::EventProcessed(p)) => {
                    let mut slot = pending.lock().unwrap_or_else(PoisonError::into_inner);
                    match slot.take() {
                        Some((id, tx)) if id == p.id => {
                            let _ = tx.send(p.status.map_or(0, |s| s.status));
                        }
                        other => {
                            *slot = other;
                            tracing::debug!(event = %p.id, "an answer for an event not awaited; dropped");
                        }
                    }
                }
                // daprd: anything but an answer after the first message ends the stream.
                _ => {
                    let _ =
                        out.try_send(Err(Status::unknown("duplicate initial request received")));
                    return "the app sent a second initial request";
                }
            },
            Ok(None) => return "the app closed the stream",
            Err(_) => return "the stream broke",
        }
    }
}

/// Serves one stream until the app ends it, breaks the rules, or the sidecar stops: hands
/// it `sub`'s messages from `rx` and reads its answers.
pub async fn serve(
    api: Arc<Api>,
    sub: Subscription,
    (mut rx, listed): (mpsc::Receiver<Delivery>, Listed),
    incoming: Streaming<SubscribeTopicEventsRequestAlpha1>,
    out: mpsc::Sender<Outgoing>,
) {
    let _listed = listed;
    let routes = Routes::compile(&sub.rules).expect("a rule without a condition compiles");
    tracing::info!(pubsub = %sub.pubsub, topic = %sub.topic, "streaming subscription opened");
    let pending: Arc<Pending> = Arc::default();
    let mut listening = tokio::spawn(listen(incoming, pending.clone(), out.clone()));
    let reader = listening.abort_handle();
    let conn = Conn {
        out: out.clone(),
        pending,
    };
    let stop = api.shutdown.subscribe();
    let ended = async {
        tokio::select! {
            why = &mut listening => why.unwrap_or("the stream's reader failed"),
            () = crate::server::stopped(stop) => "the sidecar stops",
            () = out.closed() => "the stream is gone",
        }
    };
    tokio::pin!(ended);
    let why = loop {
        let delivery = tokio::select! {
            d = rx.recv() => d,
            why = &mut ended => break why,
        };
        let Some(delivery) = delivery else {
            break "the pub/sub stopped";
        };
        let finished = tokio::select! {
            f = deliver::handle(&api, &sub, &routes, &delivery, Taker::Stream(&conn)) => f,
            why = &mut ended => {
                delivery.release();
                break why;
            }
        };
        if finished {
            delivery.done().await;
        } else {
            delivery.release();
        }
    };
    reader.abort();
    if why == "the sidecar stops" {
        // As daprd ends it: the SDKs take this as the cue to open the stream again.
        let _ = out.try_send(Err(Status::unknown("api server closed")));
    }
    tracing::info!(pubsub = %sub.pubsub, topic = %sub.topic, reason = why, "streaming subscription closed");
}
