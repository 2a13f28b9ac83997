//! Pub/sub: the components that carry messages (`pubsub.in-memory`, `pubsub.redis` on
//! Redis Streams), the CloudEvents envelope a publish is wrapped in (`cloudevent`), the
//! subscriptions an app asks for or the resources declare (`subscriptions`), and the
//! delivery of each message to the app's route with retries and a dead-letter topic
//! (`deliver`), or to a stream the app opened (`stream`).

pub mod cloudevent;
pub mod deliver;
pub mod memory;
pub mod outbox;
pub mod redis;
pub mod routing;
pub mod stream;
pub mod subscriptions;

use std::collections::HashMap;

use bytes::Bytes;
use tokio::sync::mpsc;

/// One message as a component carries it: the bytes published (an envelope, or a raw
/// payload), and the publisher's metadata, which reaches the subscriber as headers.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub data: Bytes,
    pub metadata: HashMap<String, String>,
}

/// A message handed to a subscription, with the way to tell its component it is done.
pub struct Delivery {
    pub message: Message,
    ack: Ack,
}

enum Ack {
    /// The component forgets a message once handed on.
    Nothing,
    Redis(redis::Ack),
}

impl Delivery {
    /// The next delivery from `rx`, or `None` once its component is gone or the sidecar
    /// stops.
    pub async fn next(
        rx: &mut mpsc::Receiver<Delivery>,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Option<Delivery> {
        tokio::select! {
            d = rx.recv() => d,
            _ = stop.changed() => None,
        }
    }

    /// A message its component needs no word about.
    pub fn unacknowledged(message: Message) -> Self {
        Delivery {
            message,
            ack: Ack::Nothing,
        }
    }

    /// The message was taken, or given up (and dead-lettered): the component may forget it.
    /// Not called when delivery was cut short (the sidecar stopping): a durable component
    /// then offers it again.
    pub async fn done(self) {
        match self.ack {
            Ack::Nothing => {}
            Ack::Redis(ack) => ack.done().await,
        }
    }

    /// Marks the message as being offered to the app until the mark is dropped: a
    /// component that lets another replica claim a message left idle keeps this one.
    pub fn offering(&self) -> Option<redis::Offering> {
        match &self.ack {
            Ack::Nothing => None,
            Ack::Redis(ack) => Some(ack.offering()),
        }
    }

    /// The message could not be finished now (e.g. its dead letter found no taker): a
    /// durable component offers it again later; an in-memory one has forgotten it.
    pub fn release(self) {
        match self.ack {
            Ack::Nothing => {
                tracing::error!(topic = %self.message.topic, "message lost: its pub/sub keeps nothing to offer again");
            }
            // Dropped undone: left pending, to be claimed again.
            Ack::Redis(_) => {}
        }
    }
}

/// A metadata value by name, regardless of case (Dapr decodes these case-insensitively).
pub fn meta<'a>(metadata: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    metadata
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A component's failure to take a message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PubSubError(pub String);

/// A loaded pub/sub component.
pub enum PubSub {
    Memory(memory::MemoryBus),
    Redis(Box<redis::RedisStreams>),
}

impl PubSub {
    /// Dapr's feature names for the metadata API.
    pub fn capabilities(&self) -> &'static [&'static str] {
        match self {
            PubSub::Memory(_) => &["SUBSCRIBE_WILDCARDS"],
            PubSub::Redis(_) => &[],
        }
    }

    /// Publishes, waiting at most `limit` for the component to take the message (an
    /// in-memory bus waits while a subscriber's queue is full).
    pub async fn publish_within(
        &self,
        message: Message,
        limit: std::time::Duration,
    ) -> Result<(), PubSubError> {
        tokio::time::timeout(limit, self.publish(message))
            .await
            .unwrap_or_else(|_| {
                Err(PubSubError(format!(
                    "the component took no message for {limit:?} (its subscribers' queues are full)"
                )))
            })
    }

    pub async fn publish(&self, message: Message) -> Result<(), PubSubError> {
        match self {
            PubSub::Memory(bus) => bus.publish(message).await,
            PubSub::Redis(streams) => streams.publish(message).await,
        }
    }

    /// The messages of `topic` for this app: in memory, those published from now on
    /// (`topic*`: every topic it starts); on Redis, every one its group has not taken yet.
    pub fn subscribe(&self, topic: &str) -> mpsc::Receiver<Delivery> {
        match self {
            PubSub::Memory(bus) => bus.subscribe(topic),
            PubSub::Redis(streams) => streams.subscribe(topic),
        }
    }
}
