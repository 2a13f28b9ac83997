//! App health checks (`--enable-app-health-check`): an HTTP app that reports itself unhealthy
//! is, after the threshold's failed probes, offered no events (they wait) and not invoked
//! (500 "app is not in a healthy state"); once a probe finds it healthy again, what waited is
//! delivered and calls reach it. The metadata API shows the probe's settings as daprd does.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::{Value, json};
use testkit::{ComponentsDir, SidecarBuilder, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_sidecar");

/// What the app saw: its health as it answered each probe, and each event with whether the
/// app was healthy when it came.
#[derive(Default)]
struct App {
    healthy: AtomicBool,
    probes: AtomicUsize,
    events: Mutex<Vec<(String, bool)>>,
}

async fn start(app: Arc<App>) -> u16 {
    async fn healthz(State(app): State<Arc<App>>) -> StatusCode {
        app.probes.fetch_add(1, Ordering::SeqCst);
        if app.healthy.load(Ordering::SeqCst) {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
    async fn subscribe() -> axum::Json<Value> {
        axum::Json(json!([{"pubsubname": "pubsub", "topic": "orders", "route": "/orders"}]))
    }
    async fn orders(State(app): State<Arc<App>>, axum::Json(ce): axum::Json<Value>) -> StatusCode {
        let healthy = app.healthy.load(Ordering::SeqCst);
        let data = ce["data"].as_str().unwrap_or_default().to_string();
        app.events.lock().unwrap().push((data, healthy));
        StatusCode::OK
    }
    let router = axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/dapr/subscribe", get(subscribe))
        .route("/orders", post(orders))
        .route("/echo", post(|| async { "echo" }))
        .with_state(app);
    testkit::serve(router).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_app_gets_no_events_and_no_calls_until_it_is_healthy_again() {
    let app = Arc::new(App::default());
    app.healthy.store(true, Ordering::SeqCst);
    let port = start(app.clone()).await;
    let registry = TempDir::new("registry");
    let components = ComponentsDir::raw(&[(
        "pubsub.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: pubsub.in-memory\n  version: v1\n",
    )]);
    let sidecar = SidecarBuilder::new(BIN, "probed", registry.path())
        .resources(components.path())
        .app_port(port)
        .arg("--enable-app-health-check")
        .flag("--app-health-probe-interval", 1)
        .flag("--app-health-probe-timeout", 200)
        .flag("--app-health-threshold", 2)
        .spawn()
        .await
        .unwrap();
    sidecar.subscribed(Duration::from_secs(10)).await.unwrap();
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", sidecar.http_url());

    let metadata = sidecar.metadata().await.unwrap();
    assert_eq!(
        metadata["appConnectionProperties"]["health"],
        json!({"healthCheckPath": "/healthz", "healthProbeInterval": "1s",
               "healthProbeTimeout": "200ms", "healthThreshold": 2})
    );
    let publish = |data: &'static str| sidecar.publish("pubsub", "orders", "text/plain", data);
    let invoke = || http.post(url("/v1.0/invoke/probed/method/echo")).send();
    let events = || app.events.lock().unwrap().clone();

    assert_eq!(publish("first").await.unwrap(), 204);
    testkit::wait_until("the first event", Duration::from_secs(10), || async {
        (!events().is_empty()).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(invoke().await.unwrap().status(), 200);

    // Unhealthy: once the sidecar has seen it (two failed probes), calls are refused.
    app.healthy.store(false, Ordering::SeqCst);
    let refused: Value = testkit::wait_until("calls refused", Duration::from_secs(10), || async {
        let r = invoke().await.ok()?;
        if r.status() != 500 {
            return None;
        }
        r.json().await.ok()
    })
    .await
    .unwrap();
    assert_eq!(refused["errorCode"], "ERR_DIRECT_INVOKE", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .ends_with("app is not in a healthy state"),
        "{refused}"
    );
    assert_eq!(publish("while unhealthy").await.unwrap(), 204);
    // Two more probes: time enough for an event offered at once to have arrived.
    let probes = app.probes.load(Ordering::SeqCst);
    testkit::wait_until("two more probes", Duration::from_secs(10), || async {
        (app.probes.load(Ordering::SeqCst) >= probes + 2).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(
        events(),
        [("first".to_string(), true)],
        "offered while unhealthy"
    );

    // Healthy again: what waited is delivered, calls go through.
    app.healthy.store(true, Ordering::SeqCst);
    testkit::wait_until("the waiting event", Duration::from_secs(10), || async {
        (events().len() == 2).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(
        events(),
        [
            ("first".to_string(), true),
            ("while unhealthy".to_string(), true)
        ]
    );
    assert_eq!(invoke().await.unwrap().status(), 200);
}

/// A flag daprd refuses is refused before anything starts.
#[test]
fn a_probe_timeout_longer_than_its_interval_is_refused() {
    let registry = TempDir::new("registry");
    let (status, stderr) = SidecarBuilder::new(BIN, "probed", registry.path())
        .app_port(testkit::free_port())
        .arg("--enable-app-health-check")
        .flag("--app-health-probe-interval", 1)
        .flag("--app-health-probe-timeout", 1500)
        .run_to_end()
        .unwrap();
    assert!(!status.success());
    assert!(stderr.contains("--app-health-probe-timeout"), "{stderr}");
}
