//! `pubsub.redis`: topics as Redis Streams, laid out as Dapr's component lays them out, so
//! this sidecar and daprd can share one Redis. A publish is `XADD <topic> * data <bytes>
//! metadata <json>`; each app id reads through its own consumer group (`consumerID`, the
//! app id by default, which is also the consumer's name), created at the start of the
//! stream so a new app reads what was published before it came; a message is acknowledged
//! (`XACK`) once the app took it or it was given up, so one that was read but never
//! finished — the sidecar stopped or crashed midway — stays pending and is claimed again
//! (`XPENDING`/`XCLAIM`) once it has been idle for `processingTimeout`; what a sidecar's
//! app is being offered it keeps claimed, so a slow app is not delivered twice. At least once:
//! subscribers recognise repeats by the event's id.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redis::aio::ConnectionManager;
use redis::streams::{
    StreamClaimReply, StreamId, StreamPendingCountReply, StreamRangeReply, StreamReadReply,
};
use tokio::sync::mpsc;

use super::{Delivery, Message, PubSubError};
use crate::components::ComponentError;
use crate::components::redis::{Redis, Server};
use crate::resources::ComponentSpec;

/// How long one blocking read waits for new entries before it looks again; bounds how long
/// a subscription outlives its consumer.
const BLOCK: Duration = Duration::from_secs(1);
/// The wait before a failed read or group creation is tried again.
const PAUSE: Duration = Duration::from_secs(1);
/// The most entries a subscription reads at once and holds (each up to a message's size).
const MAX_QUEUE_DEPTH: u64 = 10_000;

/// The component's settings, with Dapr's names and defaults (the defaults are the ones in
/// Dapr's code: its metadata documentation swaps the two timeouts).
#[derive(Debug, Clone)]
struct Settings {
    /// The consumer group, and the consumer's name in it.
    consumer_id: String,
    /// How long a read message may stay unacknowledged before it is claimed again; zero
    /// turns claiming off.
    processing_timeout: Duration,
    /// How often pending messages are looked at; zero turns claiming off.
    redeliver_interval: Duration,
    /// Entries read at once, and queued for the app.
    queue_depth: usize,
    /// Trim streams to about this many entries on publish (`MAXLEN ~`).
    max_len_approx: Option<u64>,
    /// Or trim entries older than this on publish (`MINID ~`).
    stream_ttl: Option<Duration>,
}

pub struct RedisStreams {
    server: Server,
    redis: Redis,
    settings: Arc<Settings>,
    /// Per topic, the entries this sidecar's subscriptions of it hold: several of them
    /// (streams opened on one topic) read through the same group and consumer name, so
    /// none may claim what another still works on.
    held: Mutex<HashMap<String, Held>>,
}

/// Entries handed on and not yet done, by stream entry id.
type Held = Arc<Mutex<HashSet<String>>>;

/// A set of entry ids, whatever a panic elsewhere left it as: adding or removing an id
/// leaves no half-made state behind.
fn ids(set: &Mutex<HashSet<String>>) -> std::sync::MutexGuard<'_, HashSet<String>> {
    set.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A duration as Dapr's Redis components read one: a plain number is milliseconds, else a
/// Go duration (`15s`).
fn duration_ms(spec: &ComponentSpec, name: &str, default: Duration) -> Result<Duration, String> {
    match spec.meta(name) {
        None | Some("") => Ok(default),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(ms) => Ok(Duration::from_millis(ms)),
            Err(_) => crate::components::parse_duration(v)
                .ok_or_else(|| format!("{name}: {v:?} is not a duration")),
        },
    }
}

fn number(spec: &ComponentSpec, name: &str) -> Result<Option<u64>, String> {
    spec.meta(name)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.trim()
                .parse()
                .map_err(|_| format!("{name}: {v:?} is not a number"))
        })
        .transpose()
}

impl Settings {
    fn read(spec: &ComponentSpec, app_id: &str) -> Result<Settings, String> {
        let consumer_id = match spec.meta("consumerID").map(str::trim) {
            Some(id) if !id.is_empty() => id.to_string(),
            _ => app_id.to_string(),
        };
        let queue_depth = number(spec, "queueDepth")?.unwrap_or(100);
        if !(1..=MAX_QUEUE_DEPTH).contains(&queue_depth) {
            return Err(format!(
                "queueDepth must be between 1 and {MAX_QUEUE_DEPTH}"
            ));
        }
        Ok(Settings {
            consumer_id,
            processing_timeout: duration_ms(spec, "processingTimeout", Duration::from_secs(60))?,
            redeliver_interval: duration_ms(spec, "redeliverInterval", Duration::from_secs(15))?,
            queue_depth: usize::try_from(queue_depth).unwrap_or(usize::MAX),
            max_len_approx: number(spec, "maxLenApprox")?.filter(|n| *n > 0),
            stream_ttl: match spec.meta("streamTTL") {
                None | Some("") => None,
                Some(v) => Some(
                    crate::components::parse_duration(v)
                        .ok_or_else(|| format!("streamTTL: {v:?} is not a duration"))?,
                ),
            },
        })
    }
}

impl RedisStreams {
    pub async fn open(spec: &ComponentSpec, app_id: &str) -> Result<Self, ComponentError> {
        let fail = |m: String| crate::components::fail(spec, m);
        let settings = Settings::read(spec, app_id).map_err(fail)?;
        let server = crate::components::redis::settings(spec)?;
        let redis = server
            .connect()
            .await
            .map_err(|e| fail(format!("connecting to redis at {}: {e}", server.host)))?;
        Ok(RedisStreams {
            server,
            redis,
            settings: Arc::new(settings),
            held: Mutex::default(),
        })
    }

    pub async fn publish(&self, message: Message) -> Result<(), PubSubError> {
        let mut conn = self.redis.conn().map_err(|e| PubSubError(e.to_string()))?;
        let mut xadd = redis::cmd("XADD");
        xadd.arg(&message.topic);
        if let Some(n) = self.settings.max_len_approx {
            xadd.arg("MAXLEN").arg("~").arg(n);
        } else if let Some(ttl) = self.settings.stream_ttl {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let oldest = now.saturating_sub(ttl).as_millis();
            xadd.arg("MINID").arg("~").arg(oldest);
        }
        let metadata = serde_json::to_vec(&message.metadata).expect("a string map serializes");
        xadd.arg("*")
            .arg("data")
            .arg(message.data.as_ref())
            .arg("metadata")
            .arg(metadata);
        xadd.query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(|e| PubSubError(format!("redis XADD to {}: {e}", message.topic)))
    }

    /// The messages of `topic` for this app's consumer group: new ones as they come, and
    /// pending ones that waited longer than `processingTimeout`. Ends when the receiver is
    /// dropped.
    pub fn subscribe(&self, topic: &str) -> mpsc::Receiver<Delivery> {
        let (tx, rx) = mpsc::channel(self.settings.queue_depth);
        let stream = Arc::new(Stream {
            topic: topic.to_string(),
            settings: self.settings.clone(),
            redis: self.redis.clone(),
            held: self
                .held
                .lock()
                .expect("held entries by topic")
                .entry(topic.to_string())
                .or_default()
                .clone(),
            offering: Mutex::default(),
        });
        let reader = stream.clone();
        let server = self.server.clone();
        let reads = tx.clone();
        tokio::spawn(async move {
            // Its own connection: a blocking read would hold up every call behind it.
            let config = server
                .config
                .clone()
                .set_response_timeout(Some(BLOCK + Duration::from_secs(3)));
            let conn = loop {
                tokio::select! {
                    c = server.connection(config.clone()) => match c {
                        Ok(c) => break c,
                        Err(e) => {
                            tracing::warn!(topic = %reader.topic, error = %e, "connecting to redis to read a stream; trying again");
                            tokio::time::sleep(PAUSE).await;
                        }
                    },
                    () = reads.closed() => return,
                }
            };
            reader.read(conn, reads).await;
        });
        let settings = &self.settings;
        if !settings.processing_timeout.is_zero() {
            tokio::spawn(stream.clone().keep_offered(tx.clone()));
        }
        if !settings.processing_timeout.is_zero() && !settings.redeliver_interval.is_zero() {
            tokio::spawn(stream.reclaim(tx));
        }
        rx
    }
}

/// One subscription's stream and consumer group.
pub struct Stream {
    topic: String,
    settings: Arc<Settings>,
    /// The component's shared connection: group creation, claims, acknowledgements.
    redis: Redis,
    /// Entries handed on and not yet done: claiming them again would deliver them twice
    /// while this sidecar still works on them (they wait their turn, or the app is slow).
    held: Held,
    /// Of those, the ones being offered to the app now: only these are kept claimed
    /// against other replicas ([`Stream::keep_offered`]), not those waiting their turn or
    /// for an unhealthy app, which another replica may take over as with daprd.
    offering: Mutex<HashSet<String>>,
}

impl Stream {
    fn group(&self) -> &str {
        &self.settings.consumer_id
    }

    /// Creates the consumer group at the stream's start (and the stream), unless it exists.
    async fn create_group(&self) -> redis::RedisResult<()> {
        let mut conn = self.shared()?;
        let created = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.topic)
            .arg(self.group())
            .arg("0")
            .arg("MKSTREAM")
            .query_async::<()>(&mut conn)
            .await;
        match created {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    fn shared(&self) -> redis::RedisResult<ConnectionManager> {
        self.redis.conn().map_err(|e| {
            redis::RedisError::from((redis::ErrorKind::Io, "redis unreachable", e.to_string()))
        })
    }

    /// Reads new entries for the group and hands them on, in stream order.
    async fn read(self: Arc<Self>, mut conn: ConnectionManager, tx: mpsc::Sender<Delivery>) {
        let mut group_ready = false;
        while !tx.is_closed() {
            if !group_ready {
                match self.create_group().await {
                    Ok(()) => group_ready = true,
                    Err(e) => {
                        tracing::warn!(topic = %self.topic, group = %self.group(), error = %e, "creating the consumer group failed; trying again");
                        tokio::time::sleep(PAUSE).await;
                        continue;
                    }
                }
            }
            let mut xreadgroup = redis::cmd("XREADGROUP");
            xreadgroup
                .arg("GROUP")
                .arg(self.group())
                .arg(self.group())
                .arg("COUNT")
                // Read no more than there is room for: what waits here is not claimable.
                .arg(tx.capacity().max(1))
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&self.topic)
                .arg(">");
            let read = xreadgroup.query_async::<Option<StreamReadReply>>(&mut conn);
            let reply = tokio::select! {
                r = read => r,
                () = tx.closed() => return,
            };
            let entries = match reply {
                Ok(reply) => reply.map(|r| r.keys).unwrap_or_default(),
                Err(e) if e.code() == Some("NOGROUP") => {
                    // The stream or the group was deleted (e.g. the store was reset).
                    group_ready = false;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(topic = %self.topic, error = %e, "reading the stream failed; trying again");
                    tokio::time::sleep(PAUSE).await;
                    continue;
                }
            };
            for entry in entries.into_iter().flat_map(|k| k.ids) {
                if !self.hand_on(entry, &tx).await {
                    return;
                }
            }
        }
    }

    /// Keeps what this sidecar's app is being offered from looking idle. With daprd, an
    /// entry whose app takes longer than `processingTimeout` to answer is claimed by another
    /// replica of the app and delivered twice while the first still works on it; here the
    /// idle time of each entry under offer is reset (`XCLAIM .. 0 .. JUSTID` to the same
    /// consumer, which leaves its delivery count alone) three times per
    /// `processingTimeout`. Entries waiting their turn, or for an unhealthy app, are not
    /// kept; nor are a stopped sidecar's (crashed, stalled, cut off): those are claimed as
    /// before.
    async fn keep_offered(self: Arc<Self>, tx: mpsc::Sender<Delivery>) {
        let period = (self.settings.processing_timeout / 3).max(Duration::from_millis(50));
        let mut every = tokio::time::interval(period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = tx.closed() => return,
            }
            let offering: Vec<String> = ids(&self.offering).iter().cloned().collect();
            if offering.is_empty() {
                continue;
            }
            let refreshed = match self.shared() {
                Ok(mut conn) => {
                    redis::cmd("XCLAIM")
                        .arg(&self.topic)
                        .arg(self.group())
                        .arg(self.group())
                        .arg(0)
                        .arg(&offering)
                        .arg("JUSTID")
                        .query_async::<redis::Value>(&mut conn)
                        .await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = refreshed
                && e.code() != Some("NOGROUP")
            {
                tracing::warn!(topic = %self.topic, error = %e, "keeping offered messages claimed failed; another replica may claim them after processingTimeout");
            }
        }
    }

    /// Every `redeliverInterval`, claims what has waited unacknowledged for longer than
    /// `processingTimeout` and hands it on again.
    async fn reclaim(self: Arc<Self>, tx: mpsc::Sender<Delivery>) {
        let mut every = tokio::time::interval(self.settings.redeliver_interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = tx.closed() => return,
            }
            if let Err(e) = self.reclaim_once(&tx).await
                && e.code() != Some("NOGROUP")
            {
                tracing::warn!(topic = %self.topic, error = %e, "claiming pending messages failed");
            }
            if tx.is_closed() {
                return;
            }
        }
    }

    async fn reclaim_once(self: &Arc<Self>, tx: &mpsc::Sender<Delivery>) -> redis::RedisResult<()> {
        let mut conn = self.shared()?;
        let pending: StreamPendingCountReply = redis::cmd("XPENDING")
            .arg(&self.topic)
            .arg(self.group())
            .arg("-")
            .arg("+")
            .arg(self.settings.queue_depth)
            .query_async(&mut conn)
            .await?;
        let timeout = self.settings.processing_timeout.as_millis();
        let idle: Vec<String> = {
            let held = ids(&self.held);
            pending
                .ids
                .into_iter()
                .filter(|p| p.last_delivered_ms as u128 >= timeout && !held.contains(&p.id))
                .map(|p| p.id)
                .collect()
        };
        if idle.is_empty() {
            return Ok(());
        }
        let claimed: StreamClaimReply = redis::cmd("XCLAIM")
            .arg(&self.topic)
            .arg(self.group())
            .arg(self.group())
            .arg(timeout as u64)
            .arg(&idle)
            .query_async(&mut conn)
            .await?;
        // An entry XCLAIM did not return was deleted from the stream, or was claimed by
        // another sidecar of the app first: only a deleted one is acknowledged here.
        for id in idle
            .iter()
            .filter(|id| !claimed.ids.iter().any(|c| &c.id == *id))
        {
            let entry: StreamRangeReply = redis::cmd("XRANGE")
                .arg(&self.topic)
                .arg(id)
                .arg(id)
                .query_async(&mut conn)
                .await?;
            if entry.ids.is_empty() {
                self.ack(id).await;
            }
        }
        for entry in claimed.ids {
            tracing::info!(topic = %self.topic, id = %entry.id, "delivering a message again that waited unacknowledged");
            if !self.hand_on(entry, tx).await {
                break;
            }
        }
        Ok(())
    }

    /// Hands an entry to the subscription; false once nobody listens. An entry that is not
    /// a message (no `data` field) is acknowledged and skipped.
    async fn hand_on(self: &Arc<Self>, entry: StreamId, tx: &mpsc::Sender<Delivery>) -> bool {
        let id = entry.id.clone();
        let Some(message) = self.message(entry) else {
            tracing::error!(topic = %self.topic, %id, "stream entry without a data field; skipped");
            self.ack(&id).await;
            return true;
        };
        ids(&self.held).insert(id.clone());
        let delivery = Delivery {
            message,
            ack: super::Ack::Redis(Ack {
                stream: self.clone(),
                id,
            }),
        };
        tx.send(delivery).await.is_ok()
    }

    fn message(&self, entry: StreamId) -> Option<Message> {
        let mut map = entry.map;
        let data: Vec<u8> = redis::from_redis_value(map.remove("data")?).ok()?;
        let metadata = map
            .remove("metadata")
            .and_then(|v| redis::from_redis_value::<Vec<u8>>(v).ok())
            .and_then(|json| serde_json::from_slice::<HashMap<String, String>>(&json).ok())
            .unwrap_or_default();
        Some(Message {
            topic: self.topic.clone(),
            data: Bytes::from(data),
            metadata,
        })
    }

    async fn ack(&self, id: &str) {
        ids(&self.held).remove(id);
        let acked = match self.shared() {
            Ok(mut conn) => {
                redis::cmd("XACK")
                    .arg(&self.topic)
                    .arg(self.group())
                    .arg(id)
                    .query_async::<()>(&mut conn)
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = acked {
            // Not lost: it stays pending and is delivered again after processingTimeout.
            tracing::warn!(topic = %self.topic, %id, error = %e, "acknowledging a message failed");
        }
    }
}

/// Tells the stream a delivered message is done with.
pub struct Ack {
    stream: Arc<Stream>,
    id: String,
}

impl Ack {
    pub async fn done(self) {
        self.stream.ack(&self.id).await;
    }

    /// Marks the entry as being offered to the app until the mark is dropped.
    pub fn offering(&self) -> Offering {
        ids(&self.stream.offering).insert(self.id.clone());
        Offering {
            stream: self.stream.clone(),
            id: self.id.clone(),
        }
    }
}

/// An `Ack` dropped undone (the message not finished, or its subscription gone) leaves its
/// entry pending, to be claimed again after `processingTimeout`.
impl Drop for Ack {
    fn drop(&mut self) {
        ids(&self.stream.held).remove(&self.id);
    }
}

/// An entry under offer to the app: kept claimed while this lives.
pub struct Offering {
    stream: Arc<Stream>,
    id: String,
}

impl Drop for Offering {
    fn drop(&mut self) {
        ids(&self.stream.offering).remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(meta: &[(&str, &str)]) -> ComponentSpec {
        ComponentSpec {
            name: "pubsub".into(),
            kind: "pubsub.redis".into(),
            version: "v1".into(),
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
                .collect(),
            ignore_errors: false,
            scopes: vec![],
            file: "x.yaml".into(),
        }
    }

    #[test]
    fn settings_follow_daprs_code() {
        let s = Settings::read(&spec(&[]), "checkout").unwrap();
        assert_eq!(s.consumer_id, "checkout");
        assert_eq!(s.processing_timeout, Duration::from_secs(60));
        assert_eq!(s.redeliver_interval, Duration::from_secs(15));
        assert_eq!(s.queue_depth, 100);
        assert_eq!((s.max_len_approx, s.stream_ttl), (None, None));

        let s = Settings::read(
            &spec(&[
                ("consumerID", "shared"),
                ("processingTimeout", "1500"),
                ("redeliverInterval", "2s"),
                ("maxLenApprox", "1000"),
            ]),
            "checkout",
        )
        .unwrap();
        assert_eq!(s.consumer_id, "shared");
        assert_eq!(s.processing_timeout, Duration::from_millis(1500));
        assert_eq!(s.redeliver_interval, Duration::from_secs(2));
        assert_eq!(s.max_len_approx, Some(1000));

        for bad in [
            ("queueDepth", "0"),
            ("queueDepth", "many"),
            ("processingTimeout", "soon"),
        ] {
            assert!(
                Settings::read(&spec(&[bad]), "checkout").is_err(),
                "{bad:?}"
            );
        }
    }
}
