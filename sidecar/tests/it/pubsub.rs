//! Pub/sub on `pubsub.in-memory`: an app subscribes programmatically (`GET /dapr/subscribe`)
//! and declaratively (a `Subscription` resource); messages published over HTTP and gRPC
//! reach it as daprd's CloudEvents, in order; its answers decide (`RETRY` is delivered
//! again, `DROP` goes to the dead-letter topic); errors and metadata as daprd gives them.
//! On `pubsub.redis`, messages pass between sidecars through Redis Streams laid out as
//! Dapr's component lays them out, and one whose delivery was cut short by a crash is
//! delivered again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::redis_pubsub;
use axum::Router;
use axum::extract::{Request, State};
use axum::response::IntoResponse;
use dapr::dapr::proto::runtime::v1::dapr_client::DaprClient;
use dapr::dapr::proto::runtime::v1::{
    BulkPublishRequest, BulkPublishRequestEntry, GetMetadataRequest, PublishEventRequest,
    PubsubSubscriptionType,
};
use serde_json::{Value, json};
use testkit::{ComponentsDir, RedisServer, SidecarBuilder, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_sidecar");

const PUBSUB: &str = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: pubsub.in-memory\n  version: v1\n";

const DECLARED: &str = "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: declared\nspec:\n  pubsubname: pubsub\n  topic: declared\n  routes:\n    default: /declared\n---\napiVersion: dapr.io/v1alpha1\nkind: Subscription\nmetadata:\n  name: elsewhere\nspec:\n  pubsubname: pubsub\n  topic: elsewhere\n  route: /declared\nscopes:\n- another-app\n";

/// What the app received: (path, the `content-type` and `pubsubname` headers, the `shop`
/// header a publisher's metadata may set, body).
type Seen = Arc<Mutex<Vec<(String, String, String, String, Value)>>>;

/// Subscribes to `orders` (dead letters to `dead`), `dead`, and `raw` asking for the
/// publishers' bytes as they are (`rawPayload`); answers `RETRY` to the first two offers
/// of a message whose data is `"retry twice"` and to every offer of `"never"`, `DROP` to
/// `"drop me"`, and with `hang`, never answers `"hang"`.
async fn subscriber_app(seen: Seen, hang: bool) -> u16 {
    async fn subscribe() -> impl IntoResponse {
        axum::Json(json!([
            {"pubsubname": "pubsub", "topic": "orders", "route": "/orders", "deadLetterTopic": "dead"},
            {"pubsubname": "pubsub", "topic": "dead", "routes": {"default": "/dead"}},
            {"pubsubname": "pubsub", "topic": "raw", "route": "/raw", "metadata": {"rawPayload": "true"}},
        ]))
    }
    async fn receive(State((seen, hang)): State<(Seen, bool)>, req: Request) -> axum::Json<Value> {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        let ce: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let header = |n: &str| {
            parts
                .headers
                .get(n)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default()
        };
        let hangs = hang && ce["data"] == "hang";
        let offers = {
            let mut seen = seen.lock().unwrap();
            seen.push((
                parts.uri.path().to_string(),
                header("content-type"),
                header("pubsubname"),
                header("shop"),
                ce.clone(),
            ));
            seen.iter().filter(|s| s.4["id"] == ce["id"]).count()
        };
        if hangs {
            std::future::pending::<()>().await;
        }
        let status = match ce["data"].as_str() {
            Some("retry twice") if offers <= 2 => "RETRY",
            Some("never") => "RETRY",
            Some("drop me") if parts.uri.path() == "/orders" => "DROP",
            _ => "SUCCESS",
        };
        axum::Json(json!({ "status": status }))
    }
    let app = Router::new()
        .route("/dapr/subscribe", axum::routing::get(subscribe))
        .fallback(receive)
        .with_state((seen, hang));
    testkit::serve(app).await
}

/// App `checkout`: a [`subscriber_app`] and the resource files its sidecars load; a
/// sidecar for it can be started, killed and started again.
struct Checkout {
    seen: Seen,
    port: u16,
    components: ComponentsDir,
    registry: TempDir,
}

impl Checkout {
    async fn new(files: &[(&str, &str)]) -> Checkout {
        let seen: Seen = Arc::default();
        let port = subscriber_app(seen.clone(), false).await;
        Checkout {
            seen,
            port,
            components: ComponentsDir::raw(files),
            registry: TempDir::new("registry"),
        }
    }

    async fn sidecar(&self) -> testkit::SidecarProcess {
        SidecarBuilder::new(BIN, "checkout", self.registry.path())
            .resources(self.components.path())
            .app_port(self.port)
            .spawn()
            .await
            .unwrap()
    }
}

/// A sidecar for app `checkout` with these resource files, beside a [`subscriber_app`];
/// what the app receives, the sidecar, and the app (to keep while it runs).
async fn subscribed_sidecar(files: &[(&str, &str)]) -> (Seen, testkit::SidecarProcess, Checkout) {
    let app = Checkout::new(files).await;
    let sidecar = app.sidecar().await;
    (app.seen.clone(), sidecar, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_messages_reach_the_subscribers_as_cloudevents() {
    let (seen, sidecar, _dirs) =
        subscribed_sidecar(&[("pubsub.yaml", PUBSUB), ("subscriptions.yaml", DECLARED)]).await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", sidecar.http_url());

    // The subscriptions in force: the app's and the declared one for this app only.
    let subscriptions = testkit::wait_until(
        "subscriptions in force",
        Duration::from_secs(10),
        || async {
            let m: Value = http
                .get(url("/v1.0/metadata"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            m.get("subscriptions").cloned()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        subscriptions,
        json!([
            {"pubsubname": "pubsub", "topic": "declared", "rules": [{"path": "/declared"}], "deadLetterTopic": "", "type": "DECLARATIVE"},
            {"pubsubname": "pubsub", "topic": "orders", "rules": [{"path": "/orders"}], "deadLetterTopic": "dead", "type": "PROGRAMMATIC"},
            {"pubsubname": "pubsub", "topic": "dead", "rules": [{"path": "/dead"}], "deadLetterTopic": "", "type": "PROGRAMMATIC"},
            {"pubsubname": "pubsub", "topic": "raw", "rules": [{"path": "/raw"}], "deadLetterTopic": "", "type": "PROGRAMMATIC", "metadata": {"rawPayload": "true"}},
        ])
    );
    let m: Value = testkit::get_json(&http, url("/v1.0/metadata")).await;
    assert_eq!(
        m["components"],
        json!([{"name": "pubsub", "type": "pubsub.in-memory", "version": "v1", "capabilities": ["SUBSCRIBE_WILDCARDS"]}])
    );
    // The same over gRPC, as the SDKs read it.
    let mut grpc = DaprClient::connect(sidecar.grpc_url()).await.unwrap();
    let m = grpc
        .get_metadata(GetMetadataRequest::default())
        .await
        .unwrap()
        .into_inner();
    let components: Vec<(&str, &str, &[String])> = m
        .registered_components
        .iter()
        .map(|c| (c.name.as_str(), c.r#type.as_str(), &c.capabilities[..]))
        .collect();
    assert_eq!(
        components,
        [(
            "pubsub",
            "pubsub.in-memory",
            &["SUBSCRIBE_WILDCARDS".to_string()][..]
        )]
    );
    let raw = m
        .subscriptions
        .iter()
        .find(|s| s.topic == "raw")
        .expect("the raw subscription");
    assert_eq!(
        raw.metadata.get("rawPayload").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        (
            raw.r#type,
            raw.rules.as_ref().map(|r| r.rules[0].path.as_str())
        ),
        (PubsubSubscriptionType::Programmatic as i32, Some("/raw"))
    );

    // Over HTTP: JSON, then text with metadata; in order.
    let r = http
        .post(url("/v1.0/publish/pubsub/orders"))
        .json(&json!({"order": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = http
        .post(url("/v1.0/publish/pubsub/orders?metadata.cloudevent.type=order.placed&metadata.ttlInSeconds=60&metadata.shop=north"))
        .header("content-type", "text/plain")
        .body("two")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // Over gRPC, as the SDKs publish.
    grpc.publish_event(PublishEventRequest {
        pubsub_name: "pubsub".into(),
        topic: "declared".into(),
        data: b"three".to_vec(),
        data_content_type: String::new(),
        metadata: Default::default(),
    })
    .await
    .unwrap();
    // RETRY twice, then taken; DROP goes to the dead-letter topic.
    for data in ["retry twice", "drop me"] {
        let status = sidecar.publish("pubsub", "orders", "text/plain", data);
        assert_eq!(status.await.unwrap(), 204);
    }

    let all = testkit::wait_until("every delivery", Duration::from_secs(20), || async {
        let s = seen.lock().unwrap().clone();
        (s.iter().any(|d| d.0 == "/dead") && s.iter().any(|d| d.0 == "/declared")).then_some(s)
    })
    .await
    .unwrap();
    let at = |path: &str| -> Vec<Value> {
        all.iter()
            .filter(|d| d.0 == path)
            .map(|d| d.4.clone())
            .collect()
    };
    let orders = at("/orders");
    let data: Vec<&Value> = orders.iter().map(|ce| &ce["data"]).collect();
    assert_eq!(
        data,
        [
            &json!({"order": 1}),
            &json!("two"),
            &json!("retry twice"),
            &json!("retry twice"),
            &json!("retry twice"),
            &json!("drop me")
        ]
    );
    for (path, content_type, pubsub, _, _) in &all {
        assert_eq!(
            (content_type.as_str(), pubsub.as_str()),
            ("application/cloudevents+json", "pubsub"),
            "{path}"
        );
    }
    // The publisher's metadata reaches the subscriber as headers.
    let shops: Vec<&str> = all
        .iter()
        .filter(|d| d.0 == "/orders")
        .map(|d| d.3.as_str())
        .collect();
    assert_eq!(shops[..2], ["", "north"]);
    let first = &orders[0];
    assert_eq!(first["source"], "checkout");
    assert_eq!(first["type"], "com.dapr.event.sent");
    assert_eq!(first["datacontenttype"], "application/json");
    assert_eq!(
        (&first["topic"], &first["pubsubname"], &first["specversion"]),
        (&json!("orders"), &json!("pubsub"), &json!("1.0"))
    );
    let second = &orders[1];
    assert_eq!(second["type"], "order.placed");
    assert_eq!(second["datacontenttype"], "text/plain");
    assert!(second["expiration"].is_string(), "{second}");
    assert_ne!(first["id"], second["id"]);
    let declared = at("/declared");
    assert_eq!(declared.len(), 1);
    assert_eq!(
        (&declared[0]["data"], &declared[0]["datacontenttype"]),
        (&json!("three"), &json!("text/plain"))
    );
    let dead = at("/dead");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["data"], "drop me");
    assert_eq!(
        dead[0]["topic"], "orders",
        "a dead letter keeps its envelope"
    );
}

/// A subscription with `rawPayload` gets whatever was published as daprd hands it over:
/// the publisher's bytes (a raw publish) or the CloudEvent the sidecar built (a plain one),
/// base64 in `data_base64` of an envelope of its own. A message the app answers `RETRY` to
/// every time is offered exactly `ATTEMPTS` times, then goes to the dead-letter topic (this
/// sidecar's own retries: daprd without a Resiliency policy offers it once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_payloads_arrive_as_daprd_sends_them_and_retries_run_out_into_the_dead_letter_topic() {
    use base64::Engine as _;
    const ATTEMPTS: usize = sidecar::pubsub::deliver::ATTEMPTS as usize;
    let (seen, sidecar, _dirs) = subscribed_sidecar(&[("pubsub.yaml", PUBSUB)]).await;
    let publish = async |topic: &str, content_type: &str, body: Vec<u8>| {
        sidecar
            .publish("pubsub", topic, content_type, body)
            .await
            .unwrap()
    };
    sidecar.subscribed(Duration::from_secs(10)).await.unwrap();

    let bytes = vec![0u8, 0x9f, 0x92, 0x96, b'r'];
    let status = publish(
        "raw?metadata.rawPayload=true",
        "application/octet-stream",
        bytes.clone(),
    )
    .await;
    assert_eq!(status, 204);
    let status = publish("raw", "application/json", br#"{"n":2}"#.to_vec()).await;
    assert_eq!(status, 204);
    let status = publish("orders", "text/plain", b"never".to_vec()).await;
    assert_eq!(status, 204);

    let all = testkit::wait_until(
        "two raw events and a dead letter",
        Duration::from_secs(30),
        || async {
            let s = seen.lock().unwrap().clone();
            let raw = s.iter().filter(|d| d.0 == "/raw").count();
            (raw >= 2 && s.iter().any(|d| d.0 == "/dead")).then_some(s)
        },
    )
    .await
    .unwrap();
    let raw: Vec<&(String, String, String, String, Value)> =
        all.iter().filter(|d| d.0 == "/raw").collect();
    assert_eq!(raw.len(), 2, "{raw:?}");
    let decode = |ce: &Value| {
        base64::engine::general_purpose::STANDARD
            .decode(
                ce["data_base64"]
                    .as_str()
                    .unwrap_or_else(|| panic!("data_base64 in {ce}")),
            )
            .unwrap()
    };
    for (_, content_type, pubsub, _, ce) in &raw {
        assert_eq!(
            (content_type.as_str(), pubsub.as_str()),
            ("application/cloudevents+json", "pubsub")
        );
        assert_eq!(
            (
                &ce["datacontenttype"],
                &ce["topic"],
                &ce["pubsubname"],
                &ce["specversion"]
            ),
            (
                &json!("application/octet-stream"),
                &json!("raw"),
                &json!("pubsub"),
                &json!("1.0")
            ),
            "{ce}"
        );
        assert!(ce.get("data").is_none(), "{ce}");
    }
    assert_eq!(
        decode(&raw[0].4),
        bytes,
        "the publisher's bytes, as they were"
    );
    let inner: Value = serde_json::from_slice(&decode(&raw[1].4)).unwrap();
    assert_eq!(
        (&inner["data"], &inner["source"], &inner["topic"]),
        (&json!({"n": 2}), &json!("checkout"), &json!("raw")),
        "a plain publish's own CloudEvent: {inner}"
    );
    assert_ne!(raw[0].4["id"], raw[1].4["id"]);

    let offers = all
        .iter()
        .filter(|d| d.0 == "/orders" && d.4["data"] == "never")
        .count();
    assert_eq!(
        offers, ATTEMPTS,
        "offered {offers} times before the dead letter"
    );
    let dead: Vec<&Value> = all
        .iter()
        .filter(|d| d.0 == "/dead")
        .map(|d| &d.4)
        .collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        (&dead[0]["data"], &dead[0]["topic"]),
        (&json!("never"), &json!("orders"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_errors_are_daprds() {
    let components = ComponentsDir::raw(&[("pubsub.yaml", PUBSUB)]);
    let registry = TempDir::new("registry");
    let sidecar = SidecarBuilder::new(BIN, "checkout", registry.path())
        .resources(components.path())
        .spawn()
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let post = |path: &str, content_type: &'static str, body: &'static str| {
        let req = http
            .post(format!("{}{path}", sidecar.http_url()))
            .header("content-type", content_type)
            .body(body);
        async move {
            let r = req.send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, body) = post("/v1.0/publish/pubsub/", "text/plain", "x").await;
    assert_eq!(
        (status, &body["errorCode"], &body["message"]),
        (
            404,
            &json!("ERR_TOPIC_NAME_EMPTY"),
            &json!("topic is empty in pubsub pubsub")
        ),
        "{body}"
    );
    let (status, body) = post("/v1.0/publish/nope/orders", "text/plain", "x").await;
    assert_eq!(
        (status, &body["errorCode"]),
        (404, &json!("ERR_PUBSUB_NOT_FOUND")),
        "{body}"
    );
    assert_eq!(body["message"], "pubsub nope is not found");
    assert_eq!(
        body["details"][0]["reason"], "DAPR_PUBSUB_NOT_FOUND",
        "{body}"
    );
    // daprd builds the map from the request's metadata: `{}` when there is none.
    assert_eq!(body["details"][0]["metadata"], json!({}), "{body}");
    let (status, body) = post(
        "/v1.0/publish/pubsub/orders?metadata.rawPayload=maybe",
        "text/plain",
        "x",
    )
    .await;
    assert_eq!(
        (status, &body["errorCode"]),
        (400, &json!("ERR_PUBSUB_REQUEST_METADATA")),
        "{body}"
    );
    assert_eq!(body["details"][0]["resource_name"], "pubsub", "{body}");
    let (status, body) = post(
        "/v1.0/publish/pubsub/orders",
        "application/cloudevents+json",
        "[1]",
    )
    .await;
    assert_eq!(
        (status, &body["errorCode"]),
        (500, &json!("ERR_PUBSUB_CLOUD_EVENTS_SER")),
        "{body}"
    );
    let (status, _) = post(
        "/v1.0/publish/pubsub/orders?metadata.rawPayload=true",
        "application/octet-stream",
        "raw",
    )
    .await;
    assert_eq!(status, 204);

    let mut grpc = DaprClient::connect(sidecar.grpc_url()).await.unwrap();
    let err = grpc
        .publish_event(PublishEventRequest {
            pubsub_name: "pubsub".into(),
            topic: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(err.message(), "topic is empty in pubsub pubsub");
}

/// The paths and data an app received, in order.
fn received(seen: &Seen) -> Vec<(String, Value)> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|d| (d.0.clone(), d.4["data"].clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_streams_carry_messages_between_sidecars_and_survive_a_crash() {
    let redis = RedisServer::start().await.unwrap();
    let pubsub = redis_pubsub("pubsub", redis.port);
    let components = ComponentsDir::raw(&[("pubsub.yaml", &pubsub)]);
    let registry = TempDir::new("registry");
    let publisher = SidecarBuilder::new(BIN, "checkout", registry.path())
        .resources(components.path())
        .spawn()
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let publish = |data: &'static str| {
        let req = http
            .post(format!(
                "{}/v1.0/publish/pubsub/orders?metadata.shop=north",
                publisher.http_url()
            ))
            .header("content-type", "text/plain")
            .body(data);
        async move { assert_eq!(req.send().await.unwrap().status(), 204) }
    };

    // Published before any subscriber exists: the stream keeps it, in Dapr's layout.
    publish("early").await;
    let entries = redis
        .command(&["XRANGE", "orders", "-", "+"])
        .await
        .unwrap();
    for part in [
        "data",
        "metadata",
        r#"{"shop":"north"}"#,
        r#""data":"early""#,
    ] {
        assert!(entries.contains(part), "{part} not in {entries:?}");
    }

    // A subscriber that hangs on "hang"; it reads through its app id's consumer group.
    let first: Seen = Arc::default();
    let port = subscriber_app(first.clone(), true).await;
    let mut shipping = SidecarBuilder::new(BIN, "shipping", registry.path())
        .resources(components.path())
        .app_port(port)
        .spawn()
        .await
        .unwrap();
    testkit::wait_until("the early message", Duration::from_secs(10), || async {
        received(&first)
            .contains(&("/orders".into(), json!("early")))
            .then_some(())
    })
    .await
    .unwrap();
    assert_eq!(first.lock().unwrap()[0].3, "north", "metadata as headers");
    let groups = redis.command(&["XINFO", "GROUPS", "orders"]).await.unwrap();
    assert!(groups.contains("shipping"), "{groups:?}");

    // It crashes while the app holds "hang": the message was read but never finished.
    publish("hang").await;
    testkit::wait_until("the hanging offer", Duration::from_secs(10), || async {
        received(&first)
            .contains(&("/orders".into(), json!("hang")))
            .then_some(())
    })
    .await
    .unwrap();
    appkit::process::send_signal(shipping.pid(), appkit::process::Signal::Kill).unwrap();
    assert!(shipping.wait_for_exit(Duration::from_secs(10)).is_some());
    publish("after").await;

    // A new sidecar for the same app id takes the new message at once and, once the
    // unfinished one has been idle for processingTimeout, that one too; not the one its
    // predecessor acknowledged.
    let second: Seen = Arc::default();
    let port = subscriber_app(second.clone(), false).await;
    let _shipping = SidecarBuilder::new(BIN, "shipping", registry.path())
        .resources(components.path())
        .app_port(port)
        .spawn()
        .await
        .unwrap();
    let got = testkit::wait_until("both messages", Duration::from_secs(20), || async {
        let got = received(&second);
        (got.contains(&("/orders".into(), json!("hang")))
            && got.contains(&("/orders".into(), json!("after"))))
        .then_some(got)
    })
    .await
    .unwrap();
    assert!(!got.iter().any(|(_, d)| d == "early"), "{got:?}");
    // Nothing is left pending once the app took them.
    testkit::wait_until("no pending entries", Duration::from_secs(10), || {
        none_pending_in(&redis, "orders", "shipping")
    })
    .await
    .unwrap();
}

const OUTBOX_STORE: &str = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\nspec:\n  type: state.in-memory\n  version: v1\n  metadata:\n  - name: outboxPublishPubsub\n    value: pubsub\n  - name: outboxPublishTopic\n    value: orders\n  - name: keyPrefix\n    value: none\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_publishes_exactly_what_commits() {
    let (seen, sidecar, _dirs) =
        subscribed_sidecar(&[("pubsub.yaml", PUBSUB), ("state.yaml", OUTBOX_STORE)]).await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", sidecar.http_url());
    let transact = |ops: Value| {
        let req = http
            .post(url("/v1.0/state/statestore/transaction"))
            .json(&json!({ "operations": ops }));
        async move { req.send().await.unwrap().status().as_u16() }
    };

    // A plain upsert and a delete: one event, the value as JSON.
    let status = transact(json!([
        {"operation": "upsert", "request": {"key": "order-1", "value": {"rooms": 1}, "metadata": {"contentType": "application/json"}}},
        {"operation": "delete", "request": {"key": "nothing"}},
    ]))
    .await;
    assert_eq!(status, 204);
    // A failed transaction (wrong ETag) publishes nothing.
    let status = transact(json!([
        {"operation": "upsert", "request": {"key": "order-1", "value": {"rooms": 9}, "etag": "999", "metadata": {"contentType": "application/json"}}},
    ]))
    .await;
    assert_eq!(status, 500, "daprd's ERR_STATE_TRANSACTION");
    // A projection: the event carries the summary, the store keeps the whole.
    let status = transact(json!([
        {"operation": "upsert", "request": {"key": "order-2", "value": {"rooms": 2, "card": "secret"}}},
        {"operation": "upsert", "request": {"key": "order-2", "value": {"rooms": 2}, "metadata": {"outbox.projection": "true", "contentType": "application/json"}}},
    ]))
    .await;
    assert_eq!(status, 204);

    let events = testkit::wait_until("both events", Duration::from_secs(20), || async {
        let got: Vec<Value> = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|d| d.0 == "/orders")
            .map(|d| d.4.clone())
            .collect();
        got.iter()
            .any(|ce| ce["data"] == json!({"rooms": 2}))
            .then_some(got)
    })
    .await
    .unwrap();
    // Events are relayed each by itself: their order may vary.
    let mut data: Vec<String> = events.iter().map(|ce| ce["data"].to_string()).collect();
    data.sort();
    assert_eq!(data, [r#"{"rooms":1}"#, r#"{"rooms":2}"#], "{events:?}");
    for ce in &events {
        assert!(ce["id"].as_str().unwrap().starts_with("outbox-"), "{ce}");
        assert_eq!(
            (&ce["source"], &ce["topic"], &ce["pubsubname"]),
            (&json!("checkout"), &json!("orders"), &json!("pubsub")),
        );
    }
    let stored: Value = testkit::get_json(&http, url("/v1.0/state/statestore/order-2")).await;
    assert_eq!(stored, json!({"rooms": 2, "card": "secret"}));
    // The markers (keys as given: this store has no key prefix) are gone once their
    // events were passed on.
    testkit::wait_until("markers deleted", Duration::from_secs(10), || async {
        let mut left = 0;
        for ce in &events {
            let r = http
                .get(url(&format!(
                    "/v1.0/state/statestore/{}",
                    ce["id"].as_str()?
                )))
                .send()
                .await
                .ok()?;
            left += usize::from(r.status() != 204);
        }
        (left == 0).then_some(())
    })
    .await
    .unwrap();
}

/// `pubsub.redis` named `name` on the Redis at `port`; what a crashed sidecar held is read
/// again after 1.5 s.
/// `state.sqlite` in `db` (waiting up to a minute for a busy database) whose transactions
/// publish to topic `orders` of `pubsub` through its outbox, with `extra` metadata.
fn sqlite_outbox(db: &std::path::Path, extra: &[(&str, &str)]) -> String {
    let mut s = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\nspec:\n  type: state.sqlite\n  version: v1\n  metadata:\n  - name: connectionString\n    value: \"{}\"\n  - name: busyTimeout\n    value: 60s\n  - name: outboxPublishPubsub\n    value: pubsub\n  - name: outboxPublishTopic\n    value: orders\n",
        db.display()
    );
    for (k, v) in extra {
        s += &format!("  - name: {k}\n    value: \"{v}\"\n");
    }
    s
}

/// No entry of `stream` is pending in the `checkout` group.
async fn none_pending(redis: &RedisServer, stream: &str) -> Option<()> {
    none_pending_in(redis, stream, "checkout").await
}

/// No entry of `stream` is pending in consumer group `group`.
async fn none_pending_in(redis: &RedisServer, stream: &str, group: &str) -> Option<()> {
    let r = redis.command(&["XPENDING", stream, group]).await.ok()?;
    r.starts_with("*4\r\n:0\r\n").then_some(())
}

/// The `order` of every event the subscriber heard on `orders`, sorted.
fn orders_heard(seen: &Seen) -> Vec<String> {
    let mut got: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|d| d.0 == "/orders")
        .map(|d| d.4["data"]["order"].to_string())
        .collect();
    got.sort();
    got
}

/// A transaction of one order, published as JSON.
fn order(key: &str) -> Value {
    json!({"operations": [{"operation": "upsert", "request": {
        "key": key, "value": {"order": key}, "metadata": {"contentType": "application/json"}}}]})
}

/// Holds the SQLite write lock of `db` from another connection until the sender is used
/// (or dropped); returns once it is held.
fn hold_database(
    db: &std::path::Path,
) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (locked_tx, locked) = std::sync::mpsc::channel::<()>();
    let db = db.to_path_buf();
    let writer = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        locked_tx.send(()).unwrap();
        let _ = held.recv_timeout(Duration::from_secs(60));
        conn.execute_batch("ROLLBACK").unwrap();
    });
    locked.recv().unwrap();
    (release, writer)
}

/// The outbox on `pubsub.redis` with a SQLite store: a sidecar killed after its
/// transaction's event went to the internal topic, while the transaction waits for the
/// database, leaves an event whose marker never comes. The next sidecar of the app reads
/// it again after the processing timeout and drops it (`outboxDiscardWhenMissingState`):
/// never published. A transaction after that commits, and its event is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_of_a_transaction_cut_short_by_a_crash_is_never_published() {
    let redis = RedisServer::start().await.unwrap();
    let data = TempDir::new("data");
    let db = data.path().join("state.db");
    let pubsub = redis_pubsub("pubsub", redis.port);
    let store = sqlite_outbox(&db, &[("outboxDiscardWhenMissingState", "true")]);
    let app = Checkout::new(&[("pubsub.yaml", &pubsub), ("state.yaml", &store)]).await;
    let seen = &app.seen;
    let mut first = app.sidecar().await;
    let http = reqwest::Client::new();
    // A first transaction makes the database (and its table) before the lock is taken.
    let tx_url = format!("{}/v1.0/state/statestore/transaction", first.http_url());
    let r = http
        .post(&tx_url)
        .json(&order("warm-up"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let internal = "defaultcheckoutordersoutbox";
    // The warm-up's event is delivered and every step of it acknowledged before the crash
    // (else its redelivery, which is right, would be counted below).
    testkit::wait_until("the warm-up delivered", Duration::from_secs(20), || async {
        if orders_heard(seen).is_empty() {
            return None;
        }
        none_pending(&redis, internal).await?;
        none_pending(&redis, "orders").await
    })
    .await
    .unwrap();

    // Another writer holds the database: the next transaction waits in it.
    let (release, writer) = hold_database(&db);
    let cut_short = tokio::spawn(http.post(&tx_url).json(&order("lost")).send());
    // Its event is on the internal topic (the warm-up's was the first).
    testkit::wait_until(
        "the event on the internal topic",
        Duration::from_secs(10),
        || async {
            let r = redis.command(&["XLEN", internal]).await.ok()?;
            let n: u64 = r.trim().strip_prefix(':')?.parse().ok()?;
            (n >= 2).then_some(())
        },
    )
    .await
    .unwrap();
    first.kill().unwrap();
    assert!(
        cut_short.await.unwrap().is_err(),
        "the sidecar died before answering"
    );
    release.send(()).unwrap();
    writer.join().unwrap();

    // The next sidecar of the app reads the event again, finds no marker, and drops it.
    let second = app.sidecar().await;
    testkit::wait_until(
        "the event to be read again and dropped",
        Duration::from_secs(40),
        || none_pending(&redis, internal),
    )
    .await
    .unwrap();
    // A transaction now commits, and its event is the only one besides the warm-up's.
    let tx_url = format!("{}/v1.0/state/statestore/transaction", second.http_url());
    let r = http
        .post(&tx_url)
        .json(&order("kept"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let orders = testkit::wait_until("the committed event", Duration::from_secs(20), || async {
        let got = orders_heard(seen);
        got.contains(&r#""kept""#.to_string()).then_some(got)
    })
    .await
    .unwrap();
    assert_eq!(orders, [r#""kept""#, r#""warm-up""#]);
    let lost = http
        .get(format!("{}/v1.0/state/statestore/lost", second.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(lost.status(), 204, "the cut-short transaction never ran");
}

/// The other half: a transaction that committed, whose sidecar died before it could pass
/// the event on (the topic's Redis paused its writes), is published by the next sidecar of
/// the app, which finds its marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_of_a_commit_whose_sidecar_died_before_relaying_is_published() {
    // The outbox's own topic on one Redis, the topic subscribers hear on another.
    let (inner, outer) = (
        RedisServer::start().await.unwrap(),
        RedisServer::start().await.unwrap(),
    );
    let data = TempDir::new("data");
    let db = data.path().join("state.db");
    let store = sqlite_outbox(&db, &[("outboxPubsub", "internal")]);
    let app = Checkout::new(&[
        ("internal.yaml", &redis_pubsub("internal", inner.port)),
        ("pubsub.yaml", &redis_pubsub("pubsub", outer.port)),
        ("state.yaml", &store),
    ])
    .await;
    let seen = &app.seen;
    let mut first = app.sidecar().await;
    let http = reqwest::Client::new();
    let tx_url = format!("{}/v1.0/state/statestore/transaction", first.http_url());
    // The subscribers' Redis takes no writes: the relay cannot pass the event on.
    let r = outer
        .command(&["CLIENT", "PAUSE", "60000", "WRITE"])
        .await
        .unwrap();
    assert!(r.starts_with("+OK"), "{r}");
    let r = http
        .post(&tx_url)
        .json(&order("paid"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "committed");
    let internal = "defaultcheckoutordersoutbox";
    // The relay has read the event (it is pending) and cannot publish it.
    testkit::wait_until(
        "the relay to hold the event",
        Duration::from_secs(10),
        || async { none_pending(&inner, internal).await.is_none().then_some(()) },
    )
    .await
    .unwrap();
    first.kill().unwrap();
    let r = outer.command(&["CLIENT", "UNPAUSE"]).await.unwrap();
    assert!(r.starts_with("+OK"), "{r}");
    assert!(
        orders_heard(seen).is_empty(),
        "nothing passed on before the crash"
    );

    // The next sidecar of the app reads it again, finds its marker, and passes it on.
    let _second = app.sidecar().await;
    let orders = testkit::wait_until("the committed event", Duration::from_secs(30), || async {
        let got = orders_heard(seen);
        (!got.is_empty()).then_some(got)
    })
    .await
    .unwrap();
    assert!(orders.iter().all(|o| o == r#""paid""#), "{orders:?}");
    testkit::wait_until("the event settled", Duration::from_secs(20), || {
        none_pending(&inner, internal)
    })
    .await
    .unwrap();
}

/// Bulk publish over HTTP, as daprd reads its body: each entry's event by its content type
/// (JSON as JSON, text as a string, binary as base64 text), each published as its own
/// CloudEvent (an entry's own metadata over the request's); a body or entry it cannot read
/// is refused before anything is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_publish_sends_each_entry_as_its_own_event() {
    let (seen, sidecar, _dirs) = subscribed_sidecar(&[("pubsub.yaml", PUBSUB)]).await;
    let http = reqwest::Client::new();
    let bulk = |pubsub: &str, body: Value| {
        let url = format!(
            "{}/v1.0-alpha1/publish/bulk/{pubsub}/orders?metadata.shop=all",
            sidecar.http_url()
        );
        let req = http.post(url).json(&body);
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, body) = bulk(
        "pubsub",
        json!([
            {"entryId": "1", "event": {"order": 1}, "contentType": "application/json"},
            {"entryId": "2", "event": "two", "contentType": "text/plain", "metadata": {"shop": "own"}},
            {"entryId": "3", "event": "AAEC", "contentType": "application/octet-stream"},
        ]),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    // What `/orders` received: the `shop` header and the CloudEvent of each.
    let orders = || -> Vec<(String, Value)> {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|d| d.0 == "/orders")
            .map(|d| (d.3.clone(), d.4.clone()))
            .collect()
    };
    let events = testkit::wait_until("three events", Duration::from_secs(10), || async {
        let got = orders();
        (got.len() >= 3).then_some(got)
    })
    .await
    .unwrap();
    let find = |data: &str, value: Value| {
        events
            .iter()
            .find(|(_, ce)| ce[data] == value)
            .unwrap_or_else(|| panic!("no event with {data} {value}: {events:?}"))
            .clone()
    };
    let (shop, one) = find("data", json!({"order": 1}));
    assert_eq!(
        (shop.as_str(), &one["datacontenttype"]),
        ("", &json!("application/json"))
    );
    // Only an entry with metadata of its own gets the request's too (daprd's rule).
    let (shop, two) = find("data", json!("two"));
    assert_eq!(
        (shop.as_str(), &two["datacontenttype"]),
        ("own", &json!("text/plain"))
    );
    let (_, three) = find("data_base64", json!("AAEC"));
    assert_eq!(three["datacontenttype"], "application/octet-stream");
    let ids: std::collections::HashSet<&str> = [&one, &two, &three]
        .iter()
        .map(|ce| ce["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "each entry its own CloudEvent");

    // The same over gRPC (`BulkPublishEvent`; the Alpha1 name the SDKs still call is below).
    let mut grpc = DaprClient::connect(sidecar.grpc_url()).await.unwrap();
    let entry =
        |id: &str, event: &[u8], content_type: &str, shop: Option<&str>| BulkPublishRequestEntry {
            entry_id: id.into(),
            event: event.to_vec(),
            content_type: content_type.into(),
            metadata: shop
                .map(|s| [("shop".to_string(), s.to_string())].into())
                .unwrap_or_default(),
        };
    let answer = grpc
        .bulk_publish_event(BulkPublishRequest {
            pubsub_name: "pubsub".into(),
            topic: "orders".into(),
            entries: vec![
                entry("g1", br#"{"order":9}"#, "application/json", None),
                entry("g2", b"gee", "text/plain", Some("grpc")),
            ],
            metadata: [("shop".to_string(), "all".to_string())].into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(answer.failed_entries.is_empty(), "{answer:?}");
    let events = testkit::wait_until("two more events", Duration::from_secs(10), || async {
        let mut got = orders();
        let more = got.split_off(got.len().min(3));
        (more.len() >= 2).then_some(more)
    })
    .await
    .unwrap();
    let mut got: Vec<(&str, &Value, &Value)> = events
        .iter()
        .map(|(shop, ce)| (shop.as_str(), &ce["data"], &ce["datacontenttype"]))
        .collect();
    // Entries are published side by side: in no set order.
    got.sort_by_key(|g| g.0);
    assert_eq!(
        got,
        [
            ("", &json!({"order": 9}), &json!("application/json")),
            ("grpc", &json!("gee"), &json!("text/plain"))
        ]
    );

    // Refused before anything is published: daprd's code, reason and status for each.
    let cases = [
        (
            "pubsub",
            json!({"not": "a list"}),
            400,
            "DAPR_PUBSUB_UNMARSHAL_EVENTS",
        ),
        (
            "pubsub",
            json!([{"entryId": "1", "event": {"a": 1}, "contentType": "text/plain"}]),
            400,
            "DAPR_PUBSUB_MARSHAL_ENVELOPE",
        ),
        (
            "pubsub",
            json!([{"event": "x", "contentType": "text/plain"}]),
            400,
            "DAPR_PUBSUB_MARSHAL_EVENTS",
        ),
        (
            "pubsub",
            json!([{"entryId": "1", "event": "x", "contentType": "text/plain"},
            {"entryId": "1", "event": "y", "contentType": "text/plain"}]),
            400,
            "DAPR_PUBSUB_MARSHAL_EVENTS",
        ),
        ("nope", json!([]), 404, "DAPR_PUBSUB_NOT_FOUND"),
    ];
    for (pubsub, body, want, reason) in cases {
        let (status, answer) = bulk(pubsub, body.clone()).await;
        assert_eq!(status, want, "{body}: {answer}");
        let code = if reason == "DAPR_PUBSUB_NOT_FOUND" {
            "ERR_PUBSUB_NOT_FOUND"
        } else {
            "ERR_PUBSUB_EVENTS_SER"
        };
        assert_eq!(answer["errorCode"], code, "{body}: {answer}");
        let info = answer["details"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["reason"].is_string()))
            .cloned()
            .unwrap_or_default();
        assert_eq!(info["reason"], reason, "{body}: {answer}");
    }
    // A last bulk: the in-memory bus delivers in order, so once its event is in, anything
    // a refused bulk had published would be in too.
    let (status, _) = bulk(
        "pubsub",
        json!([{"entryId": "last", "event": "last", "contentType": "text/plain"}]),
    )
    .await;
    assert_eq!(status, 204);
    let all = testkit::wait_until("the last event", Duration::from_secs(10), || async {
        let got = orders();
        got.iter()
            .any(|(_, ce)| ce["data"] == "last")
            .then_some(got)
    })
    .await
    .unwrap();
    assert_eq!(
        all.len(),
        6,
        "nothing of a refused bulk was published: {all:?}"
    );
}

/// Routing rules, as daprd applies them: each event goes to the path of the first rule
/// whose CEL `match` holds for it (`event.type`, `event.data.*`), else to the default route;
/// with no rule holding and no default it is not for the app (to the dead-letter topic when
/// there is one); a subscription whose match is not valid CEL is left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_rules_choose_the_path_by_the_event() {
    type Routed = Arc<Mutex<Vec<(String, Value)>>>;
    async fn subscribe() -> axum::Json<Value> {
        axum::Json(json!([
            {"pubsubname": "pubsub", "topic": "widgets", "routes": {
                "rules": [
                    {"match": "event.type == \"widget\" && event.data.price > 100", "path": "/big"},
                    {"match": "event.data.price > 10", "path": "/medium"}],
                "default": "/rest"}},
            {"pubsubname": "pubsub", "topic": "gadgets", "deadLetterTopic": "unrouted",
             "routes": {"rules": [{"match": "event.data.kind == \"red\"", "path": "/red"}]}},
            {"pubsubname": "pubsub", "topic": "unrouted", "route": "/unrouted"},
            {"pubsubname": "pubsub", "topic": "picky",
             "routes": {"rules": [{"match": "event.data.kind == \"red\"", "path": "/picked"}]}},
            {"pubsubname": "pubsub", "topic": "broken",
             "routes": {"rules": [{"match": "event.type ==", "path": "/never"}]}},
        ]))
    }
    async fn receive(State(routed): State<Routed>, req: Request) -> axum::Json<Value> {
        let path = req.uri().path().to_string();
        let body = axum::body::to_bytes(req.into_body(), 1 << 20)
            .await
            .unwrap();
        let ce: Value = serde_json::from_slice(&body).unwrap();
        routed.lock().unwrap().push((path, ce["data"].clone()));
        axum::Json(json!({"status": "SUCCESS"}))
    }
    let routed = Routed::default();
    let app = Router::new()
        .route("/dapr/subscribe", axum::routing::get(subscribe))
        .fallback(receive)
        .with_state(routed.clone());
    let port = testkit::serve(app).await;

    let registry = TempDir::new("registry");
    let components = ComponentsDir::raw(&[("pubsub.yaml", PUBSUB)]);
    let sidecar = SidecarBuilder::new(BIN, "router", registry.path())
        .resources(components.path())
        .app_port(port)
        .spawn()
        .await
        .unwrap();
    sidecar.subscribed(Duration::from_secs(10)).await.unwrap();
    let http = reqwest::Client::new();
    let metadata = sidecar.metadata().await.unwrap();
    let topics: Vec<&str> = metadata["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["topic"].as_str().unwrap())
        .collect();
    assert_eq!(
        topics,
        ["widgets", "gadgets", "unrouted", "picky"],
        "{metadata}"
    );

    for (query, data) in [
        (
            "widgets?metadata.cloudevent.type=widget",
            json!({"price": 150}),
        ),
        ("widgets", json!({"price": 150})),
        ("widgets", json!({"price": 5})),
        ("gadgets", json!({"kind": "red"})),
        ("gadgets", json!({"kind": "blue"})),
        // No rule holds and no dead-letter topic: skipped, and the next one comes through.
        ("picky", json!({"kind": "blue"})),
        ("picky", json!({"kind": "red"})),
    ] {
        let r = http
            .post(format!(
                "{}/v1.0/publish/pubsub/{query}",
                sidecar.http_url()
            ))
            .json(&data)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    let mut got = testkit::wait_until("six deliveries", Duration::from_secs(10), || async {
        let got = routed.lock().unwrap().clone();
        (got.len() >= 6).then_some(got)
    })
    .await
    .unwrap();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        [
            ("/big".to_string(), json!({"price": 150})),
            ("/medium".to_string(), json!({"price": 150})),
            ("/picked".to_string(), json!({"kind": "red"})),
            ("/red".to_string(), json!({"kind": "red"})),
            ("/rest".to_string(), json!({"price": 5})),
            ("/unrouted".to_string(), json!({"kind": "blue"})),
        ]
    );
}

/// A bulk publish some of whose entries the component refuses (Redis past its
/// `maxmemory`, refusing writes): the answer names exactly the entries that were not
/// published, each with the component's error, as daprd's 500 `failedEntries`; every
/// other entry is in the stream, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_publish_names_exactly_the_entries_the_component_refused() {
    let redis = RedisServer::start().await.unwrap();
    let components = ComponentsDir::raw(&[("pubsub.yaml", &redis_pubsub("pubsub", redis.port))]);
    let registry = TempDir::new("registry");
    let publisher = SidecarBuilder::new(BIN, "checkout", registry.path())
        .resources(components.path())
        .spawn()
        .await
        .unwrap();
    // Room for a few entries, not for all of them.
    let info = redis.command(&["INFO", "memory"]).await.unwrap();
    let used: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory in INFO");
    const ENTRIES: usize = 40;
    const PAD: usize = 100 << 10;
    let limit = (used + 5 * PAD as u64).to_string();
    redis
        .command(&["CONFIG", "SET", "maxmemory", &limit])
        .await
        .unwrap();
    let entries: Vec<Value> = (0..ENTRIES)
        .map(|i| {
            json!({"entryId": format!("e{i}"), "contentType": "application/json",
                   "event": {"entry": format!("e{i}"), "pad": "x".repeat(PAD)}})
        })
        .collect();
    let r = reqwest::Client::new()
        .post(format!(
            "{}/v1.0-alpha1/publish/bulk/pubsub/orders",
            publisher.http_url()
        ))
        .json(&entries)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(
        answer["errorCode"], "ERR_PUBSUB_PUBLISH_MESSAGE",
        "{answer}"
    );
    let failed = answer["failedEntries"].as_array().expect("failedEntries");
    for f in failed {
        assert!(
            f["error"].as_str().unwrap_or_default().contains("OOM"),
            "the component's own error: {f}"
        );
    }
    let failed: std::collections::BTreeSet<&str> = failed
        .iter()
        .filter_map(|f| f["entryId"].as_str())
        .collect();
    // Over gRPC daprd answers any failed entry with the error alone (no failed entries
    // listed): the component's error, as `Internal`. Redis refuses every write now.
    redis
        .command(&["CONFIG", "SET", "maxmemory", "1"])
        .await
        .unwrap();
    let mut grpc = DaprClient::connect(publisher.grpc_url()).await.unwrap();
    #[allow(deprecated)] // the name the Python SDK calls
    let err = grpc
        .bulk_publish_event_alpha1(BulkPublishRequest {
            pubsub_name: "pubsub".into(),
            topic: "orders".into(),
            entries: vec![BulkPublishRequestEntry {
                entry_id: "g".into(),
                event: format!(r#"{{"entry":"g","pad":"{}"}}"#, "x".repeat(PAD)).into_bytes(),
                content_type: "application/json".into(),
                metadata: Default::default(),
            }],
            metadata: Default::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Internal, "{err:?}");
    assert!(
        err.message()
            .starts_with("error when publishing to topic orders in pubsub pubsub:")
            && err.message().contains("OOM"),
        "{err:?}"
    );

    // What the stream holds, read with the limit lifted.
    redis
        .command(&["CONFIG", "SET", "maxmemory", "0"])
        .await
        .unwrap();
    let client = redis::Client::open(format!("redis://127.0.0.1:{}", redis.port)).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let range: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("orders")
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut published = std::collections::BTreeMap::<String, usize>::new();
    for entry in &range.ids {
        let data: String = entry.get("data").expect("a data field");
        let event: Value = serde_json::from_str(&data).unwrap();
        let id = event["data"]["entry"].as_str().unwrap().to_string();
        *published.entry(id).or_default() += 1;
    }
    assert!(
        !failed.is_empty() && !published.is_empty(),
        "a partial failure: {} failed, {} published",
        failed.len(),
        published.len()
    );
    assert_eq!(
        published.get("g"),
        None,
        "the refused gRPC entry is not in the stream"
    );
    for i in 0..ENTRIES {
        let id = format!("e{i}");
        let times = published.get(&id).copied().unwrap_or(0);
        if failed.contains(id.as_str()) {
            assert_eq!(times, 0, "{id} was named failed but published");
        } else {
            assert_eq!(times, 1, "{id}: not named failed, published {times} times");
        }
    }
}

/// Two replicas of one app on `pubsub.redis`, their app slower than `processingTimeout`:
/// the replica offering a message keeps it claimed while its app works, so the other never
/// takes it over, and it is delivered once. (daprd's component delivers it twice.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_a_slow_app_still_works_on_is_not_delivered_again() {
    // Kept claimed every second against a 3 s timeout: only a stall of 2 s would let the
    // other replica claim it.
    const WORK: Duration = Duration::from_secs(7);
    async fn subscribe() -> impl IntoResponse {
        axum::Json(json!([{"pubsubname": "pubsub", "topic": "orders", "route": "/orders"}]))
    }
    async fn slow(
        State(seen): State<Arc<Mutex<Vec<Value>>>>,
        body: axum::body::Bytes,
    ) -> axum::Json<Value> {
        seen.lock()
            .unwrap()
            .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
        tokio::time::sleep(WORK).await;
        axum::Json(json!({"status": "SUCCESS"}))
    }
    let redis = RedisServer::start().await.unwrap();
    let pubsub = redis_pubsub("pubsub", redis.port).replace(
        "processingTimeout\n    value: \"1500\"",
        "processingTimeout\n    value: \"3000\"",
    );
    assert!(pubsub.contains("\"3000\""), "{pubsub}");
    let components = ComponentsDir::raw(&[("pubsub.yaml", &pubsub)]);
    let registry = TempDir::new("registry");
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let app = Router::new()
            .route("/dapr/subscribe", axum::routing::get(subscribe))
            .route("/orders", axum::routing::post(slow))
            .with_state(seen.clone());
        let port = testkit::serve(app).await;
        replicas.push(
            SidecarBuilder::new(BIN, "shipping", registry.path())
                .resources(components.path())
                .app_port(port)
                .spawn()
                .await
                .unwrap(),
        );
    }
    // Both replicas subscribed, and reading through the group, before the message comes.
    // (The app's subscriptions come in one answer: any listed means `orders` is.)
    for replica in &replicas {
        replica.subscribed(Duration::from_secs(10)).await.unwrap();
    }
    testkit::wait_until("the shipping group", Duration::from_secs(10), || async {
        let groups = redis.command(&["XINFO", "GROUPS", "orders"]).await.ok()?;
        groups.contains("shipping").then_some(())
    })
    .await
    .unwrap();
    let status = replicas[0].publish("pubsub", "orders", "text/plain", "slow");
    assert_eq!(status.await.unwrap(), 204);
    // Done once the app answered and the message is acknowledged: nothing pending.
    testkit::wait_until("the message delivered", Duration::from_secs(10), || async {
        (!seen.lock().unwrap().is_empty()).then_some(())
    })
    .await
    .unwrap();
    testkit::wait_until("nothing pending", Duration::from_secs(30), || {
        none_pending_in(&redis, "orders", "shipping")
    })
    .await
    .unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "delivered more than once: {seen:?}");
}
