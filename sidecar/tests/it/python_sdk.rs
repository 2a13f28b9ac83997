//! The official Dapr Python SDK (`pip install "dapr[grpc]"`) against the sidecar: state with
//! ETags, transactions, locks, invocation and metadata from its client, and a gRPC app made
//! with its `dapr.ext.grpc` server behind `--app-protocol grpc`, invoked and subscribed to
//! a topic its client publishes to. The interpreter is `$DAPR_SDK_PYTHON`, or the
//! workspace's `.venv/bin/python` that `scripts/test` prepares.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use testkit::{ComponentsDir, SidecarBuilder, TempDir};

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("DAPR_SDK_PYTHON") {
        return PathBuf::from(p);
    }
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python"))
}

/// The interpreter, which must be able to import `module` of the SDK.
fn python_with(module: &str) -> PathBuf {
    let py = python();
    let has = Command::new(&py)
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has,
        "{} has no {module}: run scripts/test, or set DAPR_SDK_PYTHON",
        py.display()
    );
    py
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_works_against_the_sidecar() {
    let py = python_with("dapr.clients");

    let registry = TempDir::new("registry");
    let components = ComponentsDir::memory();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_sidecar"));
    let (_web, _www) = testkit::spawn_static_app(bin, "pyweb", registry.path())
        .await
        .unwrap();
    let client = SidecarBuilder::new(bin, "pyclient", registry.path())
        .resources(components.path())
        .spawn()
        .await
        .unwrap();
    testkit::fetch_hello_through(&client, "pyweb")
        .await
        .unwrap();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/sdk_check.py");
    let out = tokio::process::Command::new(&py)
        .arg(script)
        .env("DAPR_HTTP_PORT", client.http_port.to_string())
        .env("DAPR_GRPC_PORT", client.grpc_port.to_string())
        .env("DAPR_HEALTH_TIMEOUT", "10")
        .env("TARGET_APP", "pyweb")
        .env_remove("DAPR_API_TOKEN")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python SDK checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_app_made_with_the_python_sdk_is_invoked_through_the_sidecar() {
    let py = python_with("dapr.ext.grpc");
    let registry = TempDir::new("registry");
    let components = ComponentsDir::memory();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_sidecar"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/grpc_app.py");
    let py = py.display().to_string();
    let _app = SidecarBuilder::new(bin, "pygrpc", registry.path())
        .resources(components.path())
        .app_port(testkit::free_port())
        .flag("--app-protocol", "grpc")
        .command(&[py.as_str(), script])
        .spawn()
        .await
        .unwrap();
    let caller = SidecarBuilder::new(bin, "caller", registry.path())
        .resources(components.path())
        .spawn()
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/v1.0/invoke/pygrpc/method/echo", caller.http_url());
    // The interpreter takes a moment to import the SDK and listen.
    let seen = testkit::wait_until(
        "the Python app to answer",
        std::time::Duration::from_secs(30),
        || {
            let r = http.post(&url).json(&serde_json::json!({"n": 1})).send();
            async move {
                let r = r.await.ok().filter(|r| r.status() == 200)?;
                r.json::<serde_json::Value>().await.ok()
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(
        seen,
        serde_json::json!({"body": "{\"n\":1}", "content_type": "application/json", "caller": "caller"})
    );
    // A method the app does not have: the SDK says UNIMPLEMENTED, an HTTP caller gets 501.
    let r = http
        .post(format!(
            "{}/v1.0/invoke/pygrpc/method/nope",
            caller.http_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 501);
    let status: serde_json::Value = r.json().await.unwrap();
    assert_eq!(status["code"], 12, "{status}");

    // The other way round: the SDK's client invoking over gRPC (`InvokeService`), which it
    // does with DAPR_API_METHOD_INVOCATION_PROTOCOL=grpc, reaches the gRPC app too.
    let client = "from dapr.clients import DaprClient\nwith DaprClient() as d:\n    r = d.invoke_method('pygrpc', 'echo', data='{\"n\": 2}', content_type='application/json')\n    print(r.text())\n";
    let out = tokio::process::Command::new(&py)
        .args(["-c", client])
        .env("DAPR_GRPC_PORT", caller.grpc_port.to_string())
        .env("DAPR_HTTP_PORT", caller.http_port.to_string())
        .env("DAPR_API_METHOD_INVOCATION_PROTOCOL", "grpc")
        .env_remove("DAPR_API_TOKEN")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        answer,
        serde_json::json!({"body": "{\"n\": 2}", "content_type": "application/json", "caller": "caller"})
    );
}

/// Pub/sub with the Python SDK on both ends: `DaprClient.publish_event` (gRPC) publishes
/// (and `publish_events`, gRPC `BulkPublishEvent`, to a topic nobody hears),
/// a `dapr.ext.grpc` app subscribed through `ListTopicSubscriptions` receives each event by
/// `OnTopicEvent`; its DROP sends the event to its dead-letter topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_apps_publish_and_subscribe() {
    let py = python_with("dapr.ext.grpc");
    let registry = TempDir::new("registry");
    let components = ComponentsDir::memory_with_outbox("orders");
    let seen = TempDir::new("seen");
    let seen_file = seen.path().join("events.jsonl");
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_sidecar"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/grpc_app.py");
    let py = py.display().to_string();
    let sidecar = SidecarBuilder::new(bin, "pysub", registry.path())
        .resources(components.path())
        .app_port(testkit::free_port())
        .flag("--app-protocol", "grpc")
        .env("SEEN_FILE", &seen_file.display().to_string())
        .command(&[py.as_str(), script])
        .spawn()
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let metadata = format!("{}/v1.0/metadata", sidecar.http_url());
    // Subscribed once the interpreter has imported the SDK and listens.
    testkit::wait_until(
        "the Python app's subscriptions",
        Duration::from_secs(30),
        || {
            let r = http.get(&metadata).send();
            async move {
                let m: serde_json::Value = r.await.ok()?.json().await.ok()?;
                (m["subscriptions"].as_array()?.len() == 2).then_some(())
            }
        },
    )
    .await
    .unwrap();

    // Two publishes, then a transaction whose upsert the store's outbox publishes.
    let publisher = "import json\nfrom dapr.clients import DaprClient\nfrom dapr.clients.grpc._request import TransactionalStateOperation\nwith DaprClient() as d:\n    d.publish_event(pubsub_name='pubsub', topic_name='orders', data=json.dumps({'order': 7}), data_content_type='application/json')\n    d.publish_event(pubsub_name='pubsub', topic_name='orders', data='drop me')\n    d.execute_state_transaction(store_name='statestore', operations=[TransactionalStateOperation(key='order-9', data=json.dumps({'order': 9}), metadata={'contentType': 'application/json'})])\n    r = d.publish_events(pubsub_name='pubsub', topic_name='audit', data=['a', 'b'], data_content_type='text/plain')\n    assert not r.failed_entries, r.failed_entries\n";
    let out = std::process::Command::new(&py)
        .args(["-c", publisher])
        .env("DAPR_GRPC_PORT", sidecar.grpc_port.to_string())
        .env("DAPR_HTTP_PORT", sidecar.http_port.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut lines = testkit::wait_until(
        "four events at the app",
        Duration::from_secs(20),
        || async {
            let text = std::fs::read_to_string(&seen_file).unwrap_or_default();
            let lines: Vec<serde_json::Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            (lines.len() >= 4).then_some(lines)
        },
    )
    .await
    .unwrap();
    assert_eq!(lines.len(), 4, "{lines:?}");
    // The outbox's event: relayed on its own path, so its place among the others varies.
    let at = lines
        .iter()
        .position(|l| l["id"].as_str().is_some_and(|id| id.starts_with("outbox-")))
        .expect("the outbox event");
    let outboxed = lines.remove(at);
    assert_eq!(
        (
            &outboxed["topic"],
            &outboxed["data"],
            &outboxed["content_type"],
            &outboxed["source"]
        ),
        (
            &json!("orders"),
            &json!("{\"order\":9}"),
            &json!("application/json"),
            &json!("pysub")
        ),
        "{outboxed}"
    );
    assert_eq!(
        (
            &lines[0]["topic"],
            &lines[0]["data"],
            &lines[0]["content_type"]
        ),
        (
            &json!("orders"),
            &json!("{\"order\":7}"),
            &json!("application/json")
        )
    );
    assert_eq!(
        (&lines[0]["type"], &lines[0]["source"]),
        (&json!("com.dapr.event.sent"), &json!("pysub"))
    );
    assert_eq!(
        (&lines[1]["topic"], &lines[1]["data"]),
        (&json!("orders"), &json!("drop me"))
    );
    assert_eq!(
        (&lines[2]["topic"], &lines[2]["data"]),
        (&json!("dead"), &json!("drop me"))
    );
    assert_eq!(
        lines[1]["id"], lines[2]["id"],
        "the dead letter is the same event"
    );
}

/// Streaming subscriptions with the Python SDK: a client-only app (no port) subscribes to
/// `orders` (dead letters to `orders-dead`) and to `orders-dead` with
/// `DaprClient.subscribe_with_handler`; events published over HTTP reach it on its streams,
/// its RETRY comes again, its DROP reaches it once more from the dead-letter topic, and
/// once it closes its streams the metadata API lists none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_sdk_app_subscribes_over_streams() {
    let py = python_with("dapr.clients");
    let registry = TempDir::new("registry");
    let components = ComponentsDir::memory_with_outbox("unused");
    let seen = TempDir::new("seen");
    let seen_file = seen.path().join("events.jsonl");
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_sidecar"));
    let sidecar = SidecarBuilder::new(bin, "pystream", registry.path())
        .resources(components.path())
        .spawn()
        .await
        .unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/stream_subscriber.py"
    );
    let app = tokio::process::Command::new(&py)
        .arg(script)
        .env("DAPR_GRPC_PORT", sidecar.grpc_port.to_string())
        .env("DAPR_HTTP_PORT", sidecar.http_port.to_string())
        .env("SEEN_FILE", &seen_file)
        .env("EXPECTED", "6")
        .env_remove("DAPR_API_TOKEN")
        .kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let streams = || async {
        Some(
            sidecar
                .subscriptions()
                .await
                .ok()?
                .into_iter()
                .filter(|s| s["type"] == "STREAMING")
                .map(|s| (s["topic"].clone(), s["deadLetterTopic"].clone()))
                .collect::<Vec<_>>(),
        )
    };
    let mut open = testkit::wait_until("both streams", Duration::from_secs(30), || async {
        streams().await.filter(|s| s.len() == 2)
    })
    .await
    .unwrap();
    open.sort_by_key(|(t, _)| t.to_string());
    assert_eq!(
        open,
        [
            (json!("orders"), json!("orders-dead")),
            (json!("orders-dead"), json!(""))
        ]
    );

    for (body, content_type) in [
        ("first", "text/plain"),
        ("drop", "text/plain"),
        ("retry", "text/plain"),
        (r#"{"n":4}"#, "application/json"),
    ] {
        let status = sidecar.publish("pubsub", "orders", content_type, body);
        assert_eq!(status.await.unwrap(), 204);
    }
    let out = tokio::time::timeout(Duration::from_secs(90), app.wait_with_output())
        .await
        .expect("the app ends")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&seen_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let on = |topic: &str| -> Vec<serde_json::Value> {
        lines
            .iter()
            .filter(|l| l["topic"] == topic)
            .map(|l| l["data"].clone())
            .collect()
    };
    assert_eq!(
        on("orders"),
        [
            json!("first"),
            json!("drop"),
            json!("retry"),
            json!("retry"),
            json!({"n": 4})
        ],
        "{lines:?}"
    );
    assert_eq!(on("orders-dead"), [json!("drop")], "{lines:?}");
    let id_of = |topic: &str| {
        lines
            .iter()
            .find(|l| l["topic"] == topic && l["data"] == "drop")
            .map(|l| l["id"].clone())
    };
    assert_eq!(id_of("orders"), id_of("orders-dead"), "the same event");
    assert!(lines.iter().all(|l| l["pubsub"] == "pubsub"), "{lines:?}");
    testkit::wait_until("no stream left", Duration::from_secs(10), || async {
        streams().await.filter(Vec::is_empty)
    })
    .await
    .unwrap();
}
