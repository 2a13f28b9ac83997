//! The state outbox, as Dapr defines it: a state store with `outboxPublishPubsub` and
//! `outboxPublishTopic` publishes every upsert of a transaction exactly when the
//! transaction commits. Before the transaction runs, each upsert's event goes to an
//! internal topic (`<namespace><app id><topic>outbox` on `outboxPubsub`, by default the
//! publishing pub/sub), and a marker key `outbox-<uuid>` joins the transaction; the relay
//! subscribed to the internal topic passes an event on to the real topic once its marker is
//! in the store, then deletes the marker. A transaction that fails leaves no marker, so its
//! events are never passed on. An upsert with `outbox.projection: true` metadata is not
//! written: it is the event's payload for the upsert of the same key.
//!
//! Beyond daprd: the sidecar that ran a transaction remembers its outcome for a while, so
//! its relay passes a committed event on at once and drops a failed one at once (daprd
//! waits a second, then reads the marker); an event whose outcome it does not know (another
//! replica's, or one the store's answer left in doubt) waits for its marker as in daprd.
//! And the relay runs from the sidecar's start, whatever its app's health: daprd
//! subscribes its outbox topics only once the app is first healthy, so events of
//! transactions already committed (by the app while its health checks still fail, or
//! left by a replica that stopped) wait on the app's health; they are the store's, and
//! passing them on needs nothing of the app.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch};

use super::cloudevent::{self, Publish};
use super::{Delivery, Message, meta};
use crate::components::StateComponent;
use crate::config::is_truthy;
use crate::state::{SetRequest, TxOperation};

/// How long the relay looks for an event's marker before it gives the event up.
const MARKER_WAIT: Duration = Duration::from_secs(10);
/// How long a transaction's outcome is remembered.
const REMEMBER: Duration = Duration::from_secs(60);
/// How long passing an event on may take before it is left for redelivery.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// A state store's outbox settings.
#[derive(Debug)]
pub struct Outbox {
    pub publish_pubsub: String,
    pub publish_topic: String,
    /// Where events wait for their transaction (`outboxPubsub`).
    pub internal_pubsub: String,
    pub internal_topic: String,
    /// `outboxDiscardWhenMissingState`.
    discard_when_missing: bool,
    /// Transactions' outcomes by marker key: committed or not.
    outcomes: Mutex<HashMap<String, (bool, Instant)>>,
}

/// What the outbox adds to one transaction: the events to publish first, the markers to
/// write with it.
pub struct Prepared {
    pub events: Vec<Message>,
    pub markers: Vec<String>,
}

/// One upsert of a transaction as the outbox sees it.
pub struct Upsert<'a> {
    pub key: &'a str,
    pub value: &'a [u8],
    /// The value is JSON text (HTTP), not raw bytes (gRPC).
    pub json: bool,
    pub metadata: &'a HashMap<String, String>,
}

impl Upsert<'_> {
    /// Whether this upsert is only the payload of another's event.
    pub fn is_projection(&self) -> bool {
        meta(self.metadata, "outbox.projection").is_some_and(is_truthy)
    }
}

impl Outbox {
    /// The outbox a state store's metadata asks for, if any.
    pub fn from_metadata(
        get: impl Fn(&str) -> Option<String>,
        app_id: &str,
    ) -> Result<Option<Outbox>, String> {
        let (pubsub, topic) = match (get("outboxPublishPubsub"), get("outboxPublishTopic")) {
            (None, None) => return Ok(None),
            (Some(p), Some(t)) if !p.is_empty() && !t.is_empty() => (p, t),
            _ => {
                return Err(
                    "outboxPublishPubsub and outboxPublishTopic must be given together".into(),
                );
            }
        };
        let namespace = std::env::var("NAMESPACE")
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        Ok(Some(Outbox {
            internal_pubsub: get("outboxPubsub")
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| pubsub.clone()),
            internal_topic: format!("{namespace}{app_id}{topic}outbox"),
            discard_when_missing: get("outboxDiscardWhenMissingState")
                .is_some_and(|v| is_truthy(&v)),
            publish_pubsub: pubsub,
            publish_topic: topic,
            outcomes: Mutex::default(),
        }))
    }

    /// The events and markers for a transaction's upserts (projections already set apart).
    pub fn prepare(
        &self,
        app_id: &str,
        upserts: &[Upsert<'_>],
        projections: &[Upsert<'_>],
    ) -> Prepared {
        let mut prepared = Prepared {
            events: Vec::with_capacity(upserts.len()),
            markers: Vec::with_capacity(upserts.len()),
        };
        for op in upserts {
            let payload = projections.iter().find(|p| p.key == op.key).unwrap_or(op);
            let marker = format!("outbox-{}", uuid::Uuid::new_v4());
            let ce = self.event(app_id, &marker, op, payload);
            prepared.events.push(Message {
                topic: self.internal_topic.clone(),
                data: Bytes::from(
                    serde_json::to_vec(&Value::Object(ce)).expect("a JSON map serializes"),
                ),
                metadata: HashMap::new(),
            });
            prepared.markers.push(marker);
        }
        prepared
    }

    /// The CloudEvent daprd makes for an upsert: its id is the marker; the data is the
    /// payload's value (the upsert's own, or its projection's: a JSON string as its text;
    /// other JSON as JSON when the payload's `contentType` says `application/json`, else as
    /// its text); the upsert's metadata joins the event's fields.
    fn event(
        &self,
        app_id: &str,
        marker: &str,
        op: &Upsert<'_>,
        payload: &Upsert<'_>,
    ) -> Map<String, Value> {
        let declared = meta(payload.metadata, "contentType").unwrap_or("");
        let is_json = cloudevent::media_type(declared) == "application/json";
        let data: Vec<u8> = match serde_json::from_slice::<Value>(payload.value) {
            Ok(Value::String(s)) if payload.json && !is_json => s.into_bytes(),
            _ => payload.value.to_vec(),
        };
        let overrides = HashMap::from([("cloudevent.id".to_string(), marker.to_string())]);
        let mut ce = cloudevent::built(&Publish {
            app_id,
            pubsub: &self.internal_pubsub,
            topic: "",
            content_type: declared,
            data: &data,
            metadata: &overrides,
            traceparent: "",
        });
        for (k, v) in op.metadata {
            if k != "data" && k != "id" {
                ce.insert(k.clone(), Value::String(v.clone()));
            }
        }
        ce
    }

    /// Notes how the transaction with these markers ended: `Some(committed)`, or `None`
    /// when the store's answer leaves it in doubt.
    pub fn settled(&self, markers: &[String], committed: Option<bool>) {
        let Some(committed) = committed else { return };
        let now = Instant::now();
        let mut outcomes = self.outcomes.lock().expect("outbox outcomes");
        outcomes.retain(|_, (_, at)| now.duration_since(*at) < REMEMBER);
        for m in markers {
            outcomes.insert(m.clone(), (committed, now));
        }
    }

    /// The outcome of the marker's transaction, if this sidecar knows it (read once).
    fn outcome(&self, marker: &str) -> Option<bool> {
        let mut outcomes = self.outcomes.lock().expect("outbox outcomes");
        outcomes.remove(marker).map(|(committed, _)| committed)
    }
}

/// The marker writes that join a transaction.
pub fn marker_writes(markers: &[String]) -> impl Iterator<Item = TxOperation> + '_ {
    markers.iter().map(|key| {
        TxOperation::Upsert(SetRequest {
            key: key.clone(),
            value: Bytes::from_static(b"\"0\""),
            etag: None,
            concurrency: crate::state::Concurrency::Unspecified,
            ttl: None,
        })
    })
}

/// What became of one event.
enum Relayed {
    /// Passed on, or given up for good: acknowledge it.
    Done,
    /// Not now (the store or the pub/sub failed): leave it for redelivery.
    Later,
}

/// Each outbox's store and the events of its internal topic.
pub fn subscribe(api: &crate::api::Api) -> Vec<(String, mpsc::Receiver<Delivery>)> {
    let mut relays = Vec::new();
    for (name, store) in &api.components.state {
        let Some(outbox) = &store.outbox else {
            continue;
        };
        // Checked at load: the outbox's pub/subs are loaded.
        let Some(internal) = api.components.pubsub.get(&outbox.internal_pubsub) else {
            continue;
        };
        tracing::info!(store = %name, pubsub = %outbox.internal_pubsub, topic = %outbox.internal_topic, "outbox relay listening");
        relays.push((name.clone(), internal.subscribe(&outbox.internal_topic)));
    }
    relays
}

/// Passes the internal topic's events on as their transactions commit, until `stop`. Each
/// event is worked on by itself, so one waiting for its transaction holds up no other (and
/// the relay keeps taking events while a transaction still publishes its own).
pub async fn relay(
    api: Arc<crate::api::Api>,
    store_name: String,
    mut events: mpsc::Receiver<Delivery>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let Some(delivery) = Delivery::next(&mut events, &mut stop).await else {
            return;
        };
        let api = api.clone();
        let store_name = store_name.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = relay_one(&api, &store_name, delivery) => {}
                _ = stop.changed() => {}
            }
        });
    }
}

async fn relay_one(api: &crate::api::Api, store_name: &str, delivery: Delivery) {
    let Some(store) = api.components.state.get(store_name) else {
        return;
    };
    let Some(outbox) = store.outbox.as_ref() else {
        return;
    };
    match pass_on(api, store, outbox, &delivery.message).await {
        Relayed::Done => delivery.done().await,
        Relayed::Later => delivery.release(),
    }
}

async fn pass_on(
    api: &crate::api::Api,
    store: &StateComponent,
    outbox: &Outbox,
    message: &Message,
) -> Relayed {
    let Ok(Value::Object(mut ce)) = serde_json::from_slice::<Value>(&message.data) else {
        tracing::error!(topic = %message.topic, "an outbox event that is not a CloudEvent; dropped");
        return Relayed::Done;
    };
    let Some(marker) = ce.get("id").and_then(Value::as_str).map(str::to_string) else {
        tracing::error!(topic = %message.topic, "an outbox event without an id; dropped");
        return Relayed::Done;
    };
    match wait_for_marker(store, outbox, &marker).await {
        Marker::Committed => {}
        Marker::Failed => {
            tracing::debug!(%marker, "outbox event of a transaction that failed; not published");
            return Relayed::Done;
        }
        Marker::Missing if outbox.discard_when_missing => {
            tracing::warn!(%marker, "outbox event whose marker never came; discarded");
            return Relayed::Done;
        }
        Marker::Missing => {
            tracing::warn!(%marker, "outbox event whose marker has not come; left for redelivery");
            return Relayed::Later;
        }
        Marker::Unknown => return Relayed::Later,
    }
    let Some(publish) = api.components.pubsub.get(&outbox.publish_pubsub) else {
        return Relayed::Later;
    };
    ce.insert("topic".into(), Value::String(outbox.publish_topic.clone()));
    ce.insert(
        "pubsubname".into(),
        Value::String(outbox.publish_pubsub.clone()),
    );
    let event = Message {
        topic: outbox.publish_topic.clone(),
        data: Bytes::from(serde_json::to_vec(&Value::Object(ce)).expect("a JSON map serializes")),
        metadata: HashMap::new(),
    };
    if let Err(e) = publish.publish_within(event, PUBLISH_TIMEOUT).await {
        tracing::warn!(%marker, error = %e, "passing an outbox event on failed; it will be offered again");
        return Relayed::Later;
    }
    let delete = [TxOperation::Delete(crate::state::DeleteRequest {
        key: marker.clone(),
        etag: None,
        concurrency: crate::state::Concurrency::Unspecified,
    })];
    if let Err(e) = store.store.multi(&delete).await {
        // Harmless: a marker left behind only costs a key.
        tracing::warn!(%marker, error = %e, "deleting an outbox marker failed");
    }
    Relayed::Done
}

/// What became of an event's transaction.
enum Marker {
    Committed,
    /// This sidecar saw it fail.
    Failed,
    /// No marker within [`MARKER_WAIT`].
    Missing,
    /// The store could not say.
    Unknown,
}

/// Whether the marker's transaction committed: at once when this sidecar ran it, else by
/// looking for the marker until [`MARKER_WAIT`] has passed.
async fn wait_for_marker(store: &StateComponent, outbox: &Outbox, marker: &str) -> Marker {
    let known = |committed: bool| {
        if committed {
            Marker::Committed
        } else {
            Marker::Failed
        }
    };
    if let Some(committed) = outbox.outcome(marker) {
        return known(committed);
    }
    let deadline = Instant::now() + MARKER_WAIT;
    let mut pause = Duration::from_millis(5);
    loop {
        match store.store.get(marker).await {
            Ok(Some(_)) => return Marker::Committed,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(%marker, error = %e, "reading an outbox marker failed");
                return Marker::Unknown;
            }
        }
        if let Some(committed) = outbox.outcome(marker) {
            return known(committed);
        }
        if Instant::now() + pause > deadline {
            return Marker::Missing;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}
