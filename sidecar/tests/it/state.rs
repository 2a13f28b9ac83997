//! State API against every store kind, over HTTP and gRPC, with the real `sidecar` binary.

use dapr::dapr::proto::common::v1::{Etag, StateItem, StateOptions};
use dapr::dapr::proto::runtime::v1::{
    DeleteStateRequest, ExecuteStateTransactionRequest, GetBulkStateRequest, GetStateRequest,
    SaveStateRequest, TransactionalStateOperation,
};
use serde_json::{Value, json};
use testkit::{SidecarBuilder, StoreFixture, StoreKind, TempDir};

use crate::common::{OneSidecar, error_code, for_each_store, one_sidecar};

impl OneSidecar {
    async fn delete(&self, key: &str, if_match: Option<&str>) -> reqwest::Response {
        let mut req = self
            .http
            .delete(self.url(&format!("/v1.0/state/statestore/{key}")));
        if let Some(etag) = if_match {
            req = req.header("If-Match", etag);
        }
        req.send().await.unwrap()
    }

    async fn save(&self, body: Value) -> reqwest::Response {
        self.http_post("/v1.0/state/statestore", &body).await
    }

    async fn get(&self, key: &str) -> (u16, Option<String>, String) {
        let r = self
            .http_get(&format!("/v1.0/state/statestore/{key}"))
            .await;
        let status = r.status().as_u16();
        let etag = r
            .headers()
            .get("etag")
            .map(|v| v.to_str().unwrap().to_string());
        (status, etag, r.text().await.unwrap())
    }
}

async fn http_save_get_and_etags(kind: StoreKind) {
    let s = one_sidecar(kind).await;
    assert_eq!(
        s.save(json!([{"key": "k", "value": {"n": 1}}]))
            .await
            .status(),
        204
    );
    let (status, etag1, body) = s.get("k").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"n": 1})
    );
    let etag1 = etag1.expect("a GET of an existing key returns an ETag");

    assert_eq!(
        s.save(json!([{"key": "k", "value": {"n": 2}, "etag": etag1}]))
            .await
            .status(),
        204
    );
    let (_, etag2, body) = s.get("k").await;
    let etag2 = etag2.unwrap();
    assert_ne!(etag1, etag2, "a write changes the ETag");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"n": 2})
    );

    let stale = s.save(json!([{"key": "k", "value": 3, "etag": etag1, "options": {"concurrency": "first-write"}}])).await;
    assert_eq!(error_code(stale).await, (409, "ERR_STATE_SAVE".into()));
    let (_, _, body) = s.get("k").await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"n": 2}),
        "a refused save changes nothing"
    );

    let del = s.delete("k", Some(&etag1)).await;
    assert_eq!(error_code(del).await, (409, "ERR_STATE_DELETE".into()));
    let del = s.delete("k", Some(&etag2)).await;
    assert_eq!(del.status(), 204);
    assert_eq!(s.get("k").await.0, 204);
    let del = s.delete("never", None).await;
    assert_eq!(
        del.status(),
        204,
        "deleting a missing key without an ETag succeeds"
    );
    // Trailing slash is tolerated as daprd tolerates it.
    let r = s.http_get("/v1.0/state/statestore/never/").await;
    assert_eq!(r.status(), 204);
}

async fn http_bulk_get(kind: StoreKind) {
    let s = one_sidecar(kind).await;
    s.save(json!([{"key": "a", "value": "x"}, {"key": "c", "value": [1, 2]}]))
        .await;
    let r = s
        .http_post(
            "/v1.0/state/statestore/bulk",
            &json!({"keys": ["a", "b", "c"]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let items: Vec<Value> = r.json().await.unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["key"], "a");
    assert_eq!(items[0]["data"], "x");
    assert!(items[0]["etag"].is_string());
    assert_eq!(
        items[1],
        json!({"key": "b"}),
        "a missing key has no data and no etag"
    );
    assert_eq!(items[2]["data"], json!([1, 2]));
    let r = s
        .http_post("/v1.0/state/statestore/bulk", &json!({"keys": []}))
        .await;
    assert_eq!(r.json::<Value>().await.unwrap(), json!([]));
}

async fn http_transaction_all_or_nothing(kind: StoreKind) {
    let s = one_sidecar(kind).await;
    s.save(json!([{"key": "x", "value": 1}])).await;
    let (_, etag, _) = s.get("x").await;
    let etag = etag.unwrap();
    let bad = json!({"operations": [
        {"operation": "upsert", "request": {"key": "y", "value": "new"}},
        {"operation": "upsert", "request": {"key": "x", "value": 2, "etag": "999999"}},
    ]});
    let r = s
        .http_post("/v1.0/state/statestore/transaction", &bad)
        .await;
    assert_eq!(error_code(r).await, (500, "ERR_STATE_TRANSACTION".into()));
    assert_eq!(
        s.get("y").await.0,
        204,
        "a failed transaction writes nothing"
    );
    assert_eq!(s.get("x").await.2, "1");

    let good = json!({"operations": [
        {"operation": "upsert", "request": {"key": "y", "value": "new"}},
        {"operation": "delete", "request": {"key": "x", "etag": etag}},
    ]});
    let r = s
        .http_post("/v1.0/state/statestore/transaction", &good)
        .await;
    assert_eq!(r.status(), 204);
    assert_eq!(s.get("y").await.2, "\"new\"");
    assert_eq!(s.get("x").await.0, 204);
}

async fn http_errors(kind: StoreKind) {
    let s = one_sidecar(kind).await;
    let r = s.http_post("/v1.0/state/nope", &json!([])).await;
    assert_eq!(
        error_code(r).await,
        (400, "ERR_STATE_STORE_NOT_FOUND".into())
    );
    let r = s
        .http
        .post(s.url("/v1.0/state/statestore"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, (400, "ERR_MALFORMED_REQUEST".into()));
    let r = s.save(json!([{"value": 1}])).await;
    assert_eq!(error_code(r).await, (400, "ERR_MALFORMED_REQUEST".into()));
    let r = s.save(json!([{"key": "a||b", "value": 1}])).await;
    assert_eq!(error_code(r).await, (400, "ERR_MALFORMED_REQUEST".into()));
    let r = s.save(json!([])).await;
    assert_eq!(r.status(), 204);
    let tx = json!({"operations": [{"operation": "merge", "request": {"key": "a"}}]});
    let r = s.http_post("/v1.0/state/statestore/transaction", &tx).await;
    assert_eq!(
        error_code(r).await,
        (400, "ERR_NOT_SUPPORTED_STATE_OPERATION".into())
    );
}

/// With two faults in one request, the one daprd meets first is answered: an unknown
/// transaction operation before an illegal key (DAPR_API.md §3.5), and each item's own
/// faults in item order.
async fn http_faults_answer_in_daprd_order(kind: StoreKind) {
    let s = one_sidecar(kind).await;
    let cases = [
        (
            "transaction",
            json!({"operations": [
                {"operation": "upsert", "request": {"key": "a||b", "value": 1}},
                {"operation": "merge", "request": {"key": "a"}}]}),
            (400, "ERR_NOT_SUPPORTED_STATE_OPERATION"),
        ),
        (
            "transaction",
            json!({"operations": [
                {"operation": "merge", "request": {"key": "a"}},
                {"operation": "delete", "request": {"key": "b", "options": {"concurrency": "bogus"}}}]}),
            (400, "ERR_NOT_SUPPORTED_STATE_OPERATION"),
        ),
        (
            "",
            json!([
                {"key": "a", "value": 1, "metadata": {"ttlInSeconds": "x"}},
                {"key": "b", "value": 1, "options": {"concurrency": "bogus"}}]),
            (400, "ERR_MALFORMED_REQUEST"),
        ),
    ];
    for (path, body, (status, code)) in cases {
        let url = if path.is_empty() {
            s.url("/v1.0/state/statestore")
        } else {
            s.url(&format!("/v1.0/state/statestore/{path}"))
        };
        let r = s.http.post(url).json(&body).send().await.unwrap();
        assert_eq!(error_code(r).await, (status, code.to_string()), "{body}");
    }
}

fn item(key: &str, value: &[u8], etag: Option<&str>) -> StateItem {
    StateItem {
        key: key.into(),
        value: value.to_vec(),
        etag: etag.map(|e| Etag { value: e.into() }),
        options: Some(StateOptions {
            concurrency: 1,
            consistency: 0,
        }),
        ..Default::default()
    }
}

fn get_req(store: &str, key: &str) -> GetStateRequest {
    GetStateRequest {
        store_name: store.into(),
        key: key.into(),
        ..Default::default()
    }
}

fn save_req(states: Vec<StateItem>) -> SaveStateRequest {
    SaveStateRequest {
        store_name: "statestore".into(),
        states,
    }
}

async fn grpc_state(kind: StoreKind) {
    let s = one_sidecar(kind).await;
    let mut c = s.grpc().await;
    let store = || "statestore".to_string();
    c.save_state(save_req(vec![item("g", b"raw-bytes", None)]))
        .await
        .unwrap();
    let got = c
        .get_state(get_req("statestore", "g"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.data, b"raw-bytes", "gRPC values are raw bytes");
    assert!(!got.etag.is_empty());

    c.save_state(save_req(vec![item("g", b"v2", Some(&got.etag))]))
        .await
        .unwrap();
    let err = c
        .save_state(save_req(vec![item("g", b"v3", Some(&got.etag))]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Aborted, "stale ETag: {err:?}");

    let missing = c
        .get_state(get_req("statestore", "none"))
        .await
        .unwrap()
        .into_inner();
    assert!(
        missing.data.is_empty() && missing.etag.is_empty(),
        "a missing key is OK with empty data"
    );

    let op = |kind: &str, it: StateItem| TransactionalStateOperation {
        operation_type: kind.into(),
        request: Some(it),
    };
    let err = c
        .execute_state_transaction(ExecuteStateTransactionRequest {
            store_name: store(),
            operations: vec![
                op("upsert", item("t1", b"1", None)),
                op("upsert", item("g", b"x", Some("12345"))),
            ],
            metadata: Default::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Internal);
    let t1 = c
        .get_state(get_req("statestore", "t1"))
        .await
        .unwrap()
        .into_inner();
    assert!(t1.data.is_empty(), "failed transaction wrote t1");

    let bulk = c
        .get_bulk_state(GetBulkStateRequest {
            store_name: store(),
            keys: vec!["g".into(), "t1".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bulk.items.len(), 2);
    assert_eq!(bulk.items[0].data, b"v2");
    assert!(bulk.items[1].data.is_empty());

    let etag = c
        .get_state(get_req("statestore", "g"))
        .await
        .unwrap()
        .into_inner()
        .etag;
    let err = c
        .delete_state(DeleteStateRequest {
            store_name: store(),
            key: "g".into(),
            etag: Some(Etag {
                value: got.etag.clone(),
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Aborted);
    c.delete_state(DeleteStateRequest {
        store_name: store(),
        key: "g".into(),
        etag: Some(Etag { value: etag }),
        ..Default::default()
    })
    .await
    .unwrap();

    let err = c.get_state(get_req("nope", "g")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // HTTP stores JSON text, which gRPC reads back byte for byte.
    s.save(json!([{"key": "h", "value": "hi"}])).await;
    let h = c
        .get_state(get_req("statestore", "h"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.data, b"\"hi\"");
}

/// The Rust `dapr` crate's own high-level client, unchanged.
async fn dapr_crate_client(kind: StoreKind) {
    let s = one_sidecar(kind).await;
    let mut client = dapr::Client::connect_with_address(s.sidecar.grpc_url())
        .await
        .expect("dapr::Client");
    client
        .save_state(
            "statestore",
            "crate-key",
            b"{\"v\":1}".to_vec(),
            None,
            None,
            None,
        )
        .await
        .unwrap();
    let read = async |c: &mut dapr::Client<dapr::client::TonicClientWithAuth>| {
        c.get_state("statestore", "crate-key", None)
            .await
            .unwrap()
            .data
    };
    assert_eq!(read(&mut client).await, b"{\"v\":1}");
    client
        .delete_state("statestore", "crate-key", None)
        .await
        .unwrap();
    assert!(read(&mut client).await.is_empty());
    let meta = client.get_metadata().await.unwrap();
    assert_eq!(meta.id, "app");
    assert!(
        meta.registered_components
            .iter()
            .any(|c| c.name == "statestore")
    );
}

for_each_store!(
    [memory => Memory, sqlite => Sqlite, sqlite_normal => SqliteNormal, redis => Redis],
    [
        http_save_get_and_etags,
        http_bulk_get,
        http_transaction_all_or_nothing,
        http_errors,
        http_faults_answer_in_daprd_order,
        grpc_state,
        dapr_crate_client,
    ]
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_layout_matches_dapr() {
    let s = one_sidecar(StoreKind::Redis).await;
    let redis = s.fixture.redis.as_ref().unwrap();
    s.save(json!([{"key": "k", "value": {"a": 1}}])).await;
    let raw = redis.command(&["HGET", "app||k", "data"]).await.unwrap();
    assert!(raw.contains("{\"a\":1}"), "{raw}");
    let version = redis.command(&["HGET", "app||k", "version"]).await.unwrap();
    assert!(
        version.contains("\r\n1\r\n"),
        "first write is version 1: {version}"
    );
    assert_eq!(
        s.get("k").await.1.as_deref(),
        Some("1"),
        "the ETag is the version"
    );

    // A key written by real daprd (same layout) reads back with its version as ETag.
    redis
        .command(&[
            "HSET",
            "app||external",
            "data",
            "\"from-daprd\"",
            "version",
            "7",
        ])
        .await
        .unwrap();
    let (status, etag, body) = s.get("external").await;
    assert_eq!(
        (status, etag.as_deref(), body.as_str()),
        (200, Some("7"), "\"from-daprd\"")
    );

    // Redis accepts an ETag on a missing key (creates it), refuses a non-numeric one with 400.
    assert_eq!(
        s.save(json!([{"key": "fresh", "value": 1, "etag": "5"}]))
            .await
            .status(),
        204
    );
    let r = s
        .save(json!([{"key": "fresh", "value": 1, "etag": "abc"}]))
        .await;
    assert_eq!(error_code(r).await, (400, "ERR_STATE_SAVE".into()));

    let r = s
        .http_post(
            "/v1.0-alpha1/lock/lockstore",
            &json!({"resourceId": "r", "lockOwner": "me", "expiryInSeconds": 30}),
        )
        .await;
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"success": true}));
    let owner = redis.command(&["GET", "lock||app||r"]).await.unwrap();
    assert!(owner.contains("me"), "{owner}");
    let ttl = redis.command(&["TTL", "lock||app||r"]).await.unwrap();
    assert!(
        ttl.starts_with(':') && !ttl.starts_with(":-"),
        "lock has an expiry: {ttl}"
    );
}

/// A Redis that stops answering (connections open, nothing comes back, as across a cut
/// cable) is noticed: state and lock calls then fail at once with a 500 that says Redis is
/// unreachable, instead of each waiting out `readTimeout` (3 s, longer than these calls
/// may wait, so without the watch every one ends 504); once Redis answers again, so do
/// the calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_redis_fails_calls_at_once_and_recovers() {
    let s = one_sidecar(StoreKind::Redis).await;
    let redis = s.fixture.redis.as_ref().unwrap();
    let call = |path: &'static str, body: Option<Value>| {
        let mut req = match &body {
            Some(b) => s.http.post(s.url(path)).json(b),
            None => s.http.get(s.url(path)),
        };
        req = req.header("x-request-timeout-ms", "2000");
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        }
    };
    let lock = json!({"resourceId": "r", "lockOwner": "o", "expiryInSeconds": 5});
    assert_eq!(call("/v1.0/state/statestore/k", None).await.0, 204);

    let silenced = redis.silence();
    let seen = std::sync::Mutex::new(Vec::new());
    testkit::wait_until(
        "state calls failing at once while Redis is silent",
        std::time::Duration::from_secs(20),
        || async {
            let answer = call("/v1.0/state/statestore/k", None).await;
            let refused = answer.0 == 500 && answer.1.contains("unreachable");
            seen.lock().unwrap().push(answer);
            refused.then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", seen.lock().unwrap()));
    let (status, body) = call("/v1.0-alpha1/lock/lockstore", Some(lock.clone())).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("ERR_TRY_LOCK") && body.contains("unreachable"),
        "{body}"
    );
    let (status, body) = call(
        "/v1.0/state/statestore",
        Some(json!([{"key": "k", "value": 1}])),
    )
    .await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("ERR_STATE_SAVE") && body.contains("unreachable"),
        "{body}"
    );

    drop(silenced);
    testkit::wait_until(
        "state calls answered once Redis answers again",
        std::time::Duration::from_secs(20),
        || async { (call("/v1.0/state/statestore/k", None).await.0 == 204).then_some(()) },
    )
    .await
    .unwrap();
    let (status, body) = call("/v1.0-alpha1/lock/lockstore", Some(lock)).await;
    assert_eq!((status, body.as_str()), (200, r#"{"success":true}"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_ttl_expires_keys() {
    let s = one_sidecar(StoreKind::Memory).await;
    let r = s
        .save(json!([{"key": "t", "value": 1, "metadata": {"ttlInSeconds": "1"}}]))
        .await;
    assert_eq!(r.status(), 204);
    let r = s.http_get("/v1.0/state/statestore/t").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("metadata.ttlexpiretime"));
    testkit::wait_until(
        "the key to expire",
        std::time::Duration::from_secs(5),
        || async { (s.get("t").await.0 == 204).then_some(()) },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_data_survives_a_restart() {
    let fixture = StoreFixture::start(StoreKind::Sqlite).await.unwrap();
    let registry = TempDir::new("registry");
    let start = || {
        SidecarBuilder::new(env!("CARGO_BIN_EXE_sidecar"), "app", registry.path())
            .resources(fixture.components.path())
            .spawn()
    };
    let http = reqwest::Client::new();
    let mut first = start().await.unwrap();
    let r = http
        .post(format!("{}/v1.0/state/statestore", first.http_url()))
        .json(&json!([{"key": "durable", "value": {"booked": 3}}, {"key": "bin", "value": "x"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let status = first.stop().unwrap();
    assert!(
        status.success(),
        "sidecar exits cleanly on SIGTERM: {status}"
    );

    let second = start().await.unwrap();
    let r = http
        .get(format!(
            "{}/v1.0/state/statestore/durable",
            second.http_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"booked": 3}));
}

/// `dump-state` and `reset-state` read a store from outside its sidecar: each sees one
/// app's keys only (its prefix), values as JSON or, for raw bytes, base64; a reset leaves
/// the other app's keys alone.
async fn offline_commands_see_one_apps_keys(kind: StoreKind) {
    let s = one_sidecar(kind).await;
    let other = SidecarBuilder::new(env!("CARGO_BIN_EXE_sidecar"), "other", s.registry.path())
        .resources(s.fixture.components.path())
        .spawn()
        .await
        .unwrap();
    let r = s
        .save(json!([{"key": "night", "value": {"booked": 2}}, {"key": "name", "value": "x"}]))
        .await;
    assert_eq!(r.status(), 204);
    let mut c = s.grpc().await;
    c.save_state(save_req(vec![item("raw", &[0, 159, 1], None)]))
        .await
        .unwrap();
    let r = s
        .http
        .post(format!("{}/v1.0/state/statestore", other.http_url()))
        .json(&json!([{"key": "night", "value": {"booked": 9}}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    let offline = |command: &str, app: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sidecar"))
            .arg(command)
            .arg("--resources-path")
            .arg(s.fixture.components.path())
            .args(["--app-id", app])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let lines = |text: String| -> Vec<Value> {
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    assert_eq!(
        lines(offline("dump-state", "app")),
        [
            json!({"store": "statestore", "key": "name", "value": "x"}),
            json!({"store": "statestore", "key": "night", "value": {"booked": 2}}),
            json!({"store": "statestore", "key": "raw", "value_base64": "AJ8B"}),
        ],
        "{kind:?}"
    );
    let said = offline("reset-state", "app");
    assert!(said.contains("removed 3 keys"), "{said}");
    assert_eq!(lines(offline("dump-state", "app")), Vec::<Value>::new());
    assert_eq!(
        lines(offline("dump-state", "other")),
        [json!({"store": "statestore", "key": "night", "value": {"booked": 9}})]
    );
}

/// A components folder whose SQLite file is not there is refused by the offline commands,
/// which create nothing: an empty store made by mistake would read as a clean one.
#[test]
fn offline_commands_refuse_a_missing_database() {
    let dir = TempDir::new("missing");
    let components = testkit::ComponentsDir::sqlite(&dir.path().join("nope/state.db"));
    for command in ["dump-state", "reset-state"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sidecar"))
            .arg(command)
            .arg("--resources-path")
            .arg(components.path())
            .args(["--app-id", "backend"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{command}: {err}");
        assert!(err.contains("no SQLite database"), "{command}: {err}");
        assert!(
            !dir.path().join("nope").exists(),
            "{command} created a folder"
        );
    }
}

for_each_store!(
    [offline_sqlite => Sqlite, offline_redis => Redis],
    [offline_commands_see_one_apps_keys]
);
