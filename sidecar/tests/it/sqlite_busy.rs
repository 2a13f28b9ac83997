//! A busy SQLite database (another process holding its write lock) makes only the state
//! calls wait: the sidecar's health, its locks and its other work go on meanwhile; and a
//! state call whose caller's time (`x-request-timeout-ms`) runs out while it waits is
//! answered 504 and never runs.

use std::time::Duration;

use serde_json::json;
use testkit::{ComponentsDir, SidecarBuilder, TempDir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_database_stalls_nothing_else() {
    let data = TempDir::new("data");
    let db = data.path().join("state.db");
    // A busy timeout far longer than the test: the write waits until the lock is let go.
    let statestore = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\nspec:\n  type: state.sqlite\n  version: v1\n  metadata:\n  - name: connectionString\n    value: \"{}\"\n  - name: busyTimeout\n    value: \"60s\"\n",
        db.display()
    );
    let lockstore = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: lockstore\nspec:\n  type: lock.in-memory\n  version: v1\n  metadata: []\n";
    let components = ComponentsDir::raw(&[
        ("statestore.yaml", &statestore),
        ("lockstore.yaml", lockstore),
    ]);
    let registry = TempDir::new("registry");
    let sidecar = SidecarBuilder::new(env!("CARGO_BIN_EXE_sidecar"), "app", registry.path())
        .resources(components.path())
        .spawn()
        .await
        .unwrap();
    let url = |p: &str| format!("{}{p}", sidecar.http_url());
    let http = reqwest::Client::new();
    let save_k = |value: i32| {
        http.post(url("/v1.0/state/statestore"))
            .json(&json!([{"key": "k", "value": value}]))
            .send()
    };
    assert_eq!(save_k(1).await.unwrap().status(), 204);

    // Another writer takes the database's write lock and keeps it.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (locked_tx, locked) = std::sync::mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        locked_tx.send(()).unwrap();
        let _ = held.recv_timeout(Duration::from_secs(30));
        conn.execute_batch("ROLLBACK").unwrap();
    });
    locked.recv().unwrap();

    // A write now waits for the database...
    let save = tokio::spawn(save_k(2));
    // Wait until it has reached the store: a read of the same store then queues behind
    // it (the write waits on the lock; a read alone would not).
    testkit::wait_until(
        "the write to hold the store's thread",
        Duration::from_secs(10),
        || {
            let read = http
                .get(url("/v1.0/state/statestore/k"))
                .timeout(Duration::from_millis(300))
                .send();
            async move {
                read.await
                    .err()
                    .filter(reqwest::Error::is_timeout)
                    .map(|_| ())
            }
        },
    )
    .await
    .unwrap();
    // ...while health and locks answer.
    let r = http
        .get(url("/v1.0/healthz/outbound"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = http
        .post(url("/v1.0-alpha1/lock/lockstore"))
        .json(&json!({"resourceId": "r", "lockOwner": "me", "expiryInSeconds": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["success"],
        true
    );
    assert!(
        !save.is_finished(),
        "the write finished before health and lock answered: the busy database held them up"
    );
    // A write queued behind the waiting one, whose caller gives it 200 ms.
    let r = http
        .post(url("/v1.0/state/statestore"))
        .header("x-request-timeout-ms", "200")
        .json(&json!([{"key": "k", "value": 99}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errorCode"], "ERR_DEADLINE_EXCEEDED", "{body}");
    release.send(()).unwrap();
    writer.join().unwrap();
    let r = save.await.unwrap().unwrap();
    assert_eq!(
        r.status(),
        204,
        "the write went through once the lock was let go"
    );
    let k: serde_json::Value = testkit::get_json(&http, url("/v1.0/state/statestore/k")).await;
    assert_eq!(k, 2, "the write whose caller had given up never ran");
    assert_eq!(
        save_k(3).await.unwrap().status(),
        204,
        "the store works again once the lock is gone"
    );
}
