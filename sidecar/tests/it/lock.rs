//! Distributed lock API against every lock store, over HTTP and gRPC.

use std::time::{Duration, Instant};

use dapr::dapr::proto::runtime::v1::{TryLockRequest, UnlockRequest};
use serde_json::{Value, json};
use testkit::{SidecarBuilder, StoreKind, TempDir};

use crate::common::{OneSidecar, error_code, for_each_store, one_sidecar};

impl OneSidecar {
    async fn call(&self, op: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!(
                "{}/v1.0-alpha1/{op}/lockstore",
                self.sidecar.http_url()
            ))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn lock(&self, resource: &str, owner: &str, expiry: i64) -> bool {
        let (status, body) = self
            .call(
                "lock",
                json!({"resourceId": resource, "lockOwner": owner, "expiryInSeconds": expiry}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["success"]
            .as_bool()
            .expect("success is a JSON boolean")
    }

    async fn unlock(&self, resource: &str, owner: &str) -> i64 {
        let (status, body) = self
            .call(
                "unlock",
                json!({"resourceId": resource, "lockOwner": owner}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["status"].as_i64().expect("status is a number")
    }
}

async fn http_lock_is_exclusive_and_owner_released(kind: StoreKind) {
    let s = one_sidecar(kind).await;
    assert!(s.lock("hotel-1", "a", 30).await);
    assert!(!s.lock("hotel-1", "b", 30).await, "held by a");
    assert!(!s.lock("hotel-1", "a", 30).await, "not reentrant");
    assert!(s.lock("hotel-2", "b", 30).await, "another resource is free");
    assert_eq!(s.unlock("hotel-1", "b").await, 2, "LOCK_BELONGS_TO_OTHERS");
    assert!(
        !s.lock("hotel-1", "b", 30).await,
        "a failed unlock changes nothing"
    );
    assert_eq!(s.unlock("hotel-1", "a").await, 0, "SUCCESS");
    assert_eq!(s.unlock("hotel-1", "a").await, 1, "LOCK_DOES_NOT_EXIST");
    assert!(s.lock("hotel-1", "b", 30).await, "free after release");
}

async fn http_lock_expires_after_its_lease(kind: StoreKind) {
    let s = one_sidecar(kind).await;
    let start = Instant::now();
    assert!(s.lock("r", "crashed-owner", 1).await);
    assert!(!s.lock("r", "next", 1).await);
    loop {
        if s.lock("r", "next", 5).await {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the lease of 1 s never ran out"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "released before its lease: {:?}",
        start.elapsed()
    );
    assert_eq!(
        s.unlock("r", "crashed-owner").await,
        2,
        "the old owner no longer holds it"
    );
}

async fn http_lock_validation(kind: StoreKind) {
    let s = one_sidecar(kind).await;
    // (store, body, status, errorCode), in daprd's order of checks.
    let cases = [
        (
            "lockstore",
            json!({"resourceId": "r", "lockOwner": "o", "expiryInSeconds": 0}),
            400,
            "ERR_MALFORMED_REQUEST",
        ),
        (
            "lockstore",
            json!({"resourceId": "r", "expiryInSeconds": 5}),
            400,
            "ERR_MALFORMED_REQUEST",
        ),
        (
            "nope",
            json!({"resourceId": "r", "lockOwner": "o", "expiryInSeconds": 5}),
            400,
            "ERR_LOCK_STORE_NOT_FOUND",
        ),
        (
            // Two faults: the expiry is checked before the store is looked up.
            "nope",
            json!({"resourceId": "r", "lockOwner": "o", "expiryInSeconds": 0}),
            400,
            "ERR_MALFORMED_REQUEST",
        ),
        (
            "lockstore",
            json!({"resourceId": "a||b", "lockOwner": "o", "expiryInSeconds": 5}),
            500,
            "ERR_TRY_LOCK",
        ),
    ];
    for (store, body, status, code) in cases {
        let r = s
            .http_post(&format!("/v1.0-alpha1/lock/{store}"), &body)
            .await;
        assert_eq!(error_code(r).await, (status, code.to_string()), "{body}");
    }
    let (status, body) = s
        .call(
            "lock",
            json!({"resource_id": "r", "lock_owner": "o", "expiry_in_seconds": 5}),
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"success": true})),
        "snake_case names are accepted"
    );
}

async fn grpc_lock(kind: StoreKind) {
    let s = one_sidecar(kind).await;
    let mut c = s.grpc().await;
    let req = |owner: &str| TryLockRequest {
        store_name: "lockstore".into(),
        resource_id: "g".into(),
        lock_owner: owner.into(),
        expiry_in_seconds: 30,
    };
    // (owner, taken) in turn, then (owner, unlock status): 0 released, 1 gone, 2 not yours.
    for (owner, taken) in [("a", true), ("b", false)] {
        let got = c.try_lock_alpha1(req(owner)).await.unwrap().into_inner();
        assert_eq!(got.success, taken, "try_lock by {owner}");
    }
    let unlock = |owner: &str| UnlockRequest {
        store_name: "lockstore".into(),
        resource_id: "g".into(),
        lock_owner: owner.into(),
    };
    for (owner, status) in [("b", 2), ("a", 0), ("a", 1)] {
        let got = c.unlock_alpha1(unlock(owner)).await.unwrap().into_inner();
        assert_eq!(got.status, status, "unlock by {owner}");
    }
    let mut bad = req("a");
    bad.expiry_in_seconds = -1;
    assert_eq!(
        c.try_lock_alpha1(bad).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    let mut unknown = req("a");
    unknown.store_name = "nope".into();
    assert_eq!(
        c.try_lock_alpha1(unknown).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
}

for_each_store!(
    [memory => Memory, redis => Redis],
    [
        http_lock_is_exclusive_and_owner_released,
        http_lock_expires_after_its_lease,
        http_lock_validation,
        grpc_lock,
    ]
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_lock_store_configured() {
    let registry = TempDir::new("registry");
    let empty = testkit::ComponentsDir::raw(&[]);
    let s = SidecarBuilder::new(env!("CARGO_BIN_EXE_sidecar"), "app", registry.path())
        .resources(empty.path())
        .spawn()
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let lock = http
        .post(format!("{}/v1.0-alpha1/lock/lockstore", s.http_url()))
        .json(&json!({"resourceId": "r", "lockOwner": "o", "expiryInSeconds": 5}));
    let get = http.get(format!("{}/v1.0/state/statestore/k", s.http_url()));
    for (req, code) in [
        (lock, "ERR_LOCK_STORE_NOT_CONFIGURED"),
        (get, "ERR_STATE_STORE_NOT_CONFIGURED"),
    ] {
        let r = req.send().await.unwrap();
        assert_eq!(error_code(r).await, (500, code.into()));
    }
}
