//! `pubsub.in-memory`: a bus inside this sidecar. Each subscription gets the messages of
//! its topic in publish order, one at a time; a publish waits while a subscriber's queue is
//! full (at most [`QUEUE`] messages, each up to `--max-body-size`), so a slow app slows its
//! publishers. Nothing outlives the process, and nothing is kept for a topic without
//! subscribers (as Dapr's).

use std::sync::Mutex;

use tokio::sync::mpsc;

use super::{Delivery, Message, PubSubError};

/// Messages a subscription may have waiting before publishers wait for it.
const QUEUE: usize = 64;

#[derive(Default)]
pub struct MemoryBus {
    /// (topic or `prefix*`, the subscription's queue)
    subscribers: Mutex<Vec<(String, mpsc::Sender<Delivery>)>>,
}

/// Whether a subscription to `pattern` hears `topic`: the same name, or for `prefix*` a
/// longer name that starts with the prefix.
pub fn hears(pattern: &str, topic: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => topic.len() > prefix.len() && topic.starts_with(prefix),
        None => pattern == topic,
    }
}

impl MemoryBus {
    pub fn new() -> Self {
        Self::default()
    }

    pub async fn publish(&self, message: Message) -> Result<(), PubSubError> {
        let queues: Vec<mpsc::Sender<Delivery>> = {
            let mut subs = self.subscribers.lock().expect("bus lock");
            subs.retain(|(_, q)| !q.is_closed());
            subs.iter()
                .filter(|(pattern, _)| hears(pattern, &message.topic))
                .map(|(_, q)| q.clone())
                .collect()
        };
        for q in queues {
            // A subscription that ended meanwhile just misses it.
            let _ = q.send(Delivery::unacknowledged(message.clone())).await;
        }
        Ok(())
    }

    pub fn subscribe(&self, topic: &str) -> mpsc::Receiver<Delivery> {
        let (tx, rx) = mpsc::channel(QUEUE);
        self.subscribers
            .lock()
            .expect("bus lock")
            .push((topic.to_string(), tx));
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_hear_longer_topics_only() {
        assert!(hears("orders", "orders"));
        assert!(!hears("orders", "orders.x"));
        assert!(hears("orders*", "orders.x"));
        assert!(!hears("orders*", "orders"));
        assert!(!hears("orders*", "order"));
    }

    #[tokio::test]
    async fn each_subscription_hears_its_topic_in_order() {
        let bus = MemoryBus::new();
        let mut a = bus.subscribe("t");
        let mut b = bus.subscribe("t*");
        let mut c = bus.subscribe("t");
        for (topic, n) in [("t", "1"), ("t.x", "2"), ("t", "3")] {
            let m = Message {
                topic: topic.into(),
                data: n.into(),
                metadata: Default::default(),
            };
            bus.publish(m).await.unwrap();
        }
        let got = |rx: &mut mpsc::Receiver<Delivery>| {
            let mut v = Vec::new();
            while let Ok(m) = rx.try_recv() {
                v.push(String::from_utf8(m.message.data.to_vec()).unwrap());
            }
            v
        };
        assert_eq!(got(&mut a), ["1", "3"]);
        assert_eq!(got(&mut b), ["2"]);
        assert_eq!(got(&mut c), ["1", "3"]);
    }
}
