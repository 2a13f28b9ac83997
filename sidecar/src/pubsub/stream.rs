//! Streaming subscriptions (`SubscribeTopicEventsAlpha1`): an app that serves nothing opens
//! a gRPC stream, names a pub/sub and a topic in its first message, and is handed that
//! topic's messages on the stream, answering each by its event id. Delivery is the one an
//! app's route gets (`deliver`: one message at a time, retries, dead letters); the
//! subscription lives as long as its stream and the metadata API lists it as `STREAMING`,
//! as daprd does. A message under way when the stream ends is not done: a durable
//! component offers it again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dapr::dapr::proto::runtime::v1::subscribe_topic_events_request_alpha1::SubscribeTopicEventsRequestType;
use dapr::dapr::proto::runtime::v1::subscribe_topic_events_response_alpha1::SubscribeTopicEventsResponseType;
use dapr::dapr::proto::runtime::v1::topic_event_response::TopicEventResponseStatus;
use dapr::dapr::proto::runtime::v1::{
    SubscribeTopicEventsRequestAlpha1, SubscribeTopicEventsResponseAlpha1,
    SubscribeTopicEventsResponseInitialAlpha1, TopicEventRequest,
};
use tokio::sync::{mpsc, watch};
use tonic::{Status, Streaming};

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

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Subscription)>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A stream's place in [`Streams`], given up when the stream ends.
struct Listed {
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
    let mut stop = api.shutdown.subscribe();
    let first = tokio::select! {
        m = incoming.message() => m?,
        _ = stop.changed() => return Err(Status::unknown("api server closed")),
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

/// One open stream as a taker of messages: events go out on `out`, the app's answers come
/// in on `answers` (event id, status).
pub struct Conn {
    out: mpsc::Sender<Outgoing>,
    answers: tokio::sync::Mutex<mpsc::Receiver<(String, i32)>>,
}

impl Conn {
    /// Sends `event` and waits at most `limit` for the app's answer to it; why there is
    /// none (the stream closed, no answer in time).
    pub async fn offer(
        &self,
        event: TopicEventRequest,
        limit: Duration,
    ) -> Result<TopicEventResponseStatus, String> {
        let id = event.id.clone();
        let mut answers = self.answers.lock().await;
        self.out
            .send(Ok(SubscribeTopicEventsResponseAlpha1 {
                subscribe_topic_events_response_type: Some(
                    SubscribeTopicEventsResponseType::EventMessage(event),
                ),
            }))
            .await
            .map_err(|_| "the stream is closed".to_string())?;
        let answer = async {
            while let Some((answered, status)) = answers.recv().await {
                if answered == id {
                    return Ok(crate::appcallback::event_status(status));
                }
                // An answer that came after its offer timed out, or for no event.
                tracing::debug!(event = %answered, "an answer for an event not awaited; ignored");
            }
            Err("the stream is closed".to_string())
        };
        tokio::time::timeout(limit, answer)
            .await
            .unwrap_or_else(|_| Err(format!("no answer on the stream within {limit:?}")))
    }
}

/// Serves one stream until the app ends it, breaks the rules, or the sidecar stops: hands
/// it `sub`'s messages and reads its answers.
pub async fn serve(
    api: Arc<Api>,
    sub: Subscription,
    mut incoming: Streaming<SubscribeTopicEventsRequestAlpha1>,
    out: mpsc::Sender<Outgoing>,
) {
    let Some(pubsub) = api.components.pubsub.get(&sub.pubsub) else {
        return;
    };
    let routes = Routes::compile(&sub.rules).expect("a rule without a condition compiles");
    let mut rx = pubsub.subscribe(&sub.topic);
    tracing::info!(pubsub = %sub.pubsub, topic = %sub.topic, "streaming subscription opened");
    let _listed = Listed::new(api.clone(), sub.clone());
    let (answers_tx, answers_rx) = mpsc::channel(64);
    // Ends (drops its sender) when the app's side of the stream does.
    let (gone_tx, gone) = watch::channel(());
    let listener = {
        let out = out.clone();
        async move {
            let _gone = gone_tx;
            loop {
                match incoming.message().await {
                    Ok(Some(m)) => match m.subscribe_topic_events_request_type {
                        Some(SubscribeTopicEventsRequestType::EventProcessed(p)) => {
                            let status = p.status.map_or(0, |s| s.status);
                            if answers_tx.send((p.id, status)).await.is_err() {
                                return;
                            }
                        }
                        Some(SubscribeTopicEventsRequestType::InitialRequest(_)) => {
                            let _ = out
                                .send(Err(Status::unknown("duplicate initial request received")))
                                .await;
                            return;
                        }
                        None => {}
                    },
                    // The app closed its side, or the connection broke.
                    Ok(None) | Err(_) => return,
                }
            }
        }
    };
    let listening = tokio::spawn(listener);
    let conn = Conn {
        out: out.clone(),
        answers: tokio::sync::Mutex::new(answers_rx),
    };
    let mut stop = api.shutdown.subscribe();
    let ended = async {
        let mut gone = gone.clone();
        tokio::select! {
            _ = gone.changed() => "the app closed the stream",
            _ = stop.changed() => "the sidecar stops",
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
            f = deliver::handle(&api, &sub, &routes, &delivery.message, Taker::Stream(&conn)) => f,
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
    listening.abort();
    if why == "the sidecar stops" {
        // As daprd ends it: the SDKs take this as the cue to open the stream again.
        let _ = out.try_send(Err(Status::unknown("api server closed")));
    }
    tracing::info!(pubsub = %sub.pubsub, topic = %sub.topic, reason = why, "streaming subscription closed");
}
