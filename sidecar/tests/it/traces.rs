//! Tracing from the Configuration: with samplingRate "1" and a Zipkin endpoint, one trace
//! runs caller sidecar → callee sidecar → app, and both sidecars export their spans.

use std::time::Duration;

use serde_json::Value;
use testkit::{SidecarBuilder, TempDir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_spans_both_sidecars_and_reaches_the_app() {
    let (zipkin_port, spans) = testkit::start_collector().await;
    let app_port = testkit::start_echo_app().await;
    let dir = TempDir::new("config");
    let config = dir.path().join("tracing.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: t\nspec:\n  tracing:\n    samplingRate: \"1\"\n    zipkin:\n      endpointAddress: http://127.0.0.1:{zipkin_port}/api/v2/spans\n  metrics:\n    enabled: false\n"
        ),
    )
    .unwrap();
    let registry = TempDir::new("registry");
    let bin = env!("CARGO_BIN_EXE_sidecar");
    let config_arg = config.display().to_string();
    let _callee = SidecarBuilder::new(bin, "backend", registry.path())
        .app_port(app_port)
        .flag("--config", config_arg.clone())
        .spawn()
        .await
        .unwrap();
    let caller = SidecarBuilder::new(bin, "frontend", registry.path())
        .flag("--config", config_arg)
        .spawn()
        .await
        .unwrap();

    let echo: Value = reqwest::get(format!(
        "{}/v1.0/invoke/backend/method/traced",
        caller.http_url()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let tp = echo["headers"]["traceparent"]
        .as_str()
        .expect("the app receives a traceparent")
        .to_string();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4);
    let (trace_id, app_parent) = (parts[1].to_string(), parts[2].to_string());
    assert_eq!(parts[3], "01", "sampled");

    let found = testkit::wait_until("spans from both sidecars", Duration::from_secs(10), || {
        let all = spans.all();
        let trace_id = trace_id.clone();
        async move {
            let mine: Vec<Value> = all
                .into_iter()
                .filter(|s| s["traceId"] == trace_id.as_str())
                .collect();
            let from = |svc: &str| {
                mine.iter()
                    .find(|s| {
                        s["localEndpoint"]["serviceName"] == svc
                            && s["name"].as_str().is_some_and(|n| n.contains("traced"))
                    })
                    .cloned()
            };
            Some((from("frontend")?, from("backend")?))
        }
    })
    .await
    .unwrap();
    let (front, back) = found;
    assert_eq!(
        back["parentId"], front["id"],
        "the callee's span is a child of the caller's"
    );
    assert_eq!(
        back["id"].as_str().unwrap(),
        app_parent,
        "the app's parent is the callee sidecar's span"
    );
    assert!(
        front.get("parentId").is_none(),
        "a new trace starts at the caller"
    );
}
