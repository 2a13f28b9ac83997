//! An app written against the Rust `dapr` crate alone (`examples/dapr_crate_app.rs`), run by
//! `sidecar run --app-protocol grpc` as `dapr run` would run it: subscribed through the
//! crate's `AppCallbackService`, invoked by an HTTP caller through another sidecar, and its
//! client half (metadata, state with ETags, publish, invocation of the app, a transaction
//! with an outbox, a lock, an error's details) against the app's sidecar.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::{ComponentsDir, SidecarBuilder, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_sidecar");

/// The example, built beside the sidecar by `cargo test` / `cargo nextest` (examples are
/// compiled with the tests).
fn app_binary() -> PathBuf {
    let bin = PathBuf::from(BIN)
        .parent()
        .expect("the sidecar binary's folder")
        .join("examples/dapr_crate_app");
    assert!(
        bin.exists(),
        "{} is missing: cargo build -p sidecar --examples",
        bin.display()
    );
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_written_with_the_dapr_crate_runs_on_the_sidecar() {
    let registry = TempDir::new("registry");
    let components = ComponentsDir::memory_with_outbox("orders");
    let seen = TempDir::new("seen");
    let seen_file = seen.path().join("events.jsonl");
    let app = app_binary();
    let app_cmd = app.display().to_string();
    let sidecar = SidecarBuilder::new(BIN, "rsapp", registry.path())
        .resources(components.path())
        .app_port(testkit::free_port())
        .flag("--app-protocol", "grpc")
        .env("SEEN_FILE", &seen_file.display().to_string())
        .command(&[app_cmd.as_str(), "serve"])
        .spawn()
        .await
        .unwrap();
    sidecar.subscribed(Duration::from_secs(20)).await.unwrap();

    // Invoked by an HTTP caller through its own sidecar.
    let caller_components = ComponentsDir::memory();
    let caller = SidecarBuilder::new(BIN, "caller", registry.path())
        .resources(caller_components.path())
        .spawn()
        .await
        .unwrap();
    let r = reqwest::Client::new()
        .post(format!(
            "{}/v1.0/invoke/rsapp/method/echo",
            caller.http_url()
        ))
        .json(&json!({"n": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"body": "{\"n\":1}", "content_type": "application/json", "caller": "caller"})
    );

    // The client half, on the app's sidecar as `sidecar run` tells its app where it is.
    let out = tokio::process::Command::new(&app)
        .arg("check")
        .env("DAPR_GRPC_PORT", sidecar.grpc_port.to_string())
        .env("APP", "rsapp")
        .env_remove("DAPR_GRPC_ENDPOINT")
        .env_remove("DAPR_API_TOKEN")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "the dapr crate's checks failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Its two publishes and the transaction's outbox event reach the app's subscription.
    let lines = testkit::wait_until(
        "three events at the app",
        Duration::from_secs(20),
        || async {
            let text = std::fs::read_to_string(&seen_file).unwrap_or_default();
            // Whole lines only: the app may be writing the next one.
            let done = text.rfind('\n').map_or("", |end| &text[..end]);
            let lines: Vec<Value> = done
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            (lines.len() >= 3).then_some(lines)
        },
    )
    .await
    .unwrap();
    let mut got: Vec<(String, String, String)> = lines
        .iter()
        .map(|l| {
            assert_eq!(
                (&l["topic"], &l["source"]),
                (&json!("orders"), &json!("rsapp")),
                "{l}"
            );
            (
                l["data"].as_str().unwrap().to_string(),
                l["content_type"].as_str().unwrap().to_string(),
                l["type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    let event = |data: &str, content_type: &str| {
        (
            data.to_string(),
            content_type.to_string(),
            "com.dapr.event.sent".to_string(),
        )
    };
    assert_eq!(
        got,
        [
            event("drop me", "text/plain"),
            event("{\"order\":7}", "application/json"),
            event("{\"order\":9}", "application/json"),
        ]
    );
    assert!(
        lines
            .iter()
            .any(|l| l["id"].as_str().is_some_and(|id| id.starts_with("outbox-"))),
        "the transaction's event came through the outbox: {lines:?}"
    );
}
