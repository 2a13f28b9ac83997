//! A sidecar built and served inside the test process: `Config` in code, listeners on
//! port 0, `Sidecar::build`, then `serve` until the API's own shutdown call ends it.

use std::time::Duration;

use serde_json::{Value, json};
use sidecar::config::Config;
use sidecar::server::{Listeners, Sidecar, load_configuration};
use testkit::{ComponentsDir, TempDir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_serves_in_process_on_free_ports_and_stops_when_asked() {
    let components = ComponentsDir::memory();
    let registry = TempDir::new("registry");
    let mut config = Config::for_app("inproc");
    config.resources_path = vec![components.path().to_path_buf()];
    config.registry_dir = Some(registry.path().to_path_buf());
    let mut configuration = load_configuration(&config).unwrap();
    configuration.metrics_enabled = false;
    let listeners = Listeners::bind(&config, &configuration).await.unwrap();
    let sidecar = Sidecar::build(config, configuration, listeners)
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{}", sidecar.ports.http);
    let served = tokio::spawn(sidecar.serve(std::future::pending()));

    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/v1.0/state/statestore"))
        .json(&json!([{"key": "k", "value": {"n": 1}}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let got: Value = testkit::get_json(&http, format!("{base}/v1.0/state/statestore/k")).await;
    assert_eq!(got, json!({"n": 1}));
    let meta: Value = testkit::get_json(&http, format!("{base}/v1.0/metadata")).await;
    assert_eq!(meta["id"], "inproc");

    let r = http
        .post(format!("{base}/v1.0/shutdown"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .expect("serve returns once the API asked it to stop")
        .unwrap();
    assert!(
        http.get(format!("{base}/v1.0/healthz/outbound"))
            .send()
            .await
            .is_err(),
        "the port is closed"
    );
}
