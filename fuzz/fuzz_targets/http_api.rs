//! The sidecar's HTTP API on the state and lock routes, in process over in-memory stores:
//! the first byte picks the route, the rest is the body. Any body gets an answer, and every
//! error answer is Dapr's JSON (`errorCode`, `message`), never a panic.
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Method, Request};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt as _;

mod harness;

const ROUTES: [(&str, &str); 6] = [
    ("POST", "/v1.0/state/statestore"),
    ("POST", "/v1.0/state/statestore?metadata.ttlInSeconds=5"),
    ("POST", "/v1.0/state/statestore/bulk"),
    ("POST", "/v1.0/state/statestore/transaction"),
    ("POST", "/v1.0-alpha1/lock/lockstore"),
    ("POST", "/v1.0-alpha1/unlock/lockstore"),
];

fuzz_target!(|data: &[u8]| {
    static HARNESS: OnceLock<harness::Harness> = OnceLock::new();
    let h = HARNESS.get_or_init(harness::Harness::start);
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let (method, path) = ROUTES[usize::from(pick) % ROUTES.len()];
    let req = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_vec()))
        .unwrap();
    let router = sidecar::transport::http::router(h.api.clone());
    h.runtime.block_on(async {
        let resp = router.oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        if status.is_client_error() || status.is_server_error() {
            let v: serde_json::Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {bytes:?}"));
            assert!(v["errorCode"].is_string(), "{status}: {v}");
        }
    });
});
