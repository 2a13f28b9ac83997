//! Hostile input at the sidecar's API: values out of range and bodies past
//! `--max-body-size` get a clear 4xx (over gRPC an error status), nothing is half-written,
//! and the sidecar stays up.

use dapr::dapr::proto::common::v1::StateItem;
use dapr::dapr::proto::runtime::v1::{
    ExecuteStateTransactionRequest, SaveStateRequest, TransactionalStateOperation,
};
use serde_json::json;
use testkit::{ComponentsDir, SidecarBuilder, StoreKind, TempDir};

use crate::common::{OneSidecar, error_code, error_reason, for_each_store, one_sidecar};

/// Past `i64` in seconds, and past Dapr's 32-bit range.
const TOO_LONG: [&str; 2] = ["9223372036854775807", "2147483648"];

async fn assert_unwritten(s: &OneSidecar, keys: &[&str]) {
    for key in keys {
        let r = s.http_get(&format!("/v1.0/state/statestore/{key}")).await;
        assert_eq!(r.status(), 204, "{key} was written by a refused request");
    }
}

/// A TTL past Dapr's range in an item, in the query or in a transaction is a 400 that
/// writes nothing; gRPC says InvalidArgument; the longest TTL in range is taken.
async fn ttl_out_of_range_is_refused_whole(kind: StoreKind) {
    let s = one_sidecar(kind).await;
    for ttl in TOO_LONG {
        let item = json!({"key": "b", "value": 2, "metadata": {"ttlInSeconds": ttl}});
        let r = s
            .http_post(
                "/v1.0/state/statestore",
                &json!([{"key": "a", "value": 1}, item]),
            )
            .await;
        assert_eq!(
            error_code(r).await,
            (400, "ERR_MALFORMED_REQUEST".into()),
            "{ttl}"
        );
        let query = format!("/v1.0/state/statestore?metadata.ttlInSeconds={ttl}");
        let r = s
            .http_post(&query, &json!([{"key": "a", "value": 1}]))
            .await;
        assert_eq!(
            error_code(r).await,
            (400, "ERR_MALFORMED_REQUEST".into()),
            "{ttl}"
        );
        let tx = json!({"operations": [
            {"operation": "upsert", "request": {"key": "a", "value": 1}},
            {"operation": "upsert", "request": item},
        ]});
        let r = s.http_post("/v1.0/state/statestore/transaction", &tx).await;
        assert_eq!(
            error_code(r).await,
            (400, "ERR_MALFORMED_REQUEST".into()),
            "{ttl}"
        );
        assert_unwritten(&s, &["a", "b"]).await;

        let mut c = s.grpc().await;
        let err = c
            .save_state(SaveStateRequest {
                store_name: "statestore".into(),
                states: vec![StateItem {
                    key: "a".into(),
                    value: b"1".to_vec(),
                    metadata: [("ttlInSeconds".to_string(), ttl.to_string())].into(),
                    ..Default::default()
                }],
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{ttl}");
        assert_eq!(error_reason(&err).as_deref(), Some("ERR_STATE_SAVE"));
        let item = |key: &str, ttl: &str| StateItem {
            key: key.into(),
            value: b"1".to_vec(),
            metadata: [("ttlInSeconds".to_string(), ttl.to_string())].into(),
            ..Default::default()
        };
        let upsert = |request| TransactionalStateOperation {
            operation_type: "upsert".into(),
            request: Some(request),
        };
        let err = c
            .execute_state_transaction(ExecuteStateTransactionRequest {
                store_name: "statestore".into(),
                operations: vec![upsert(item("a", "60")), upsert(item("b", ttl))],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{ttl}");
        assert_eq!(error_reason(&err).as_deref(), Some("ERR_STATE_TRANSACTION"));
        assert_unwritten(&s, &["a", "b"]).await;
    }
    let longest = json!([{"key": "c", "value": 3, "metadata": {"ttlInSeconds": "2147483647"}}]);
    let r = s.http_post("/v1.0/state/statestore", &longest).await;
    assert_eq!(r.status(), 204);
    assert_eq!(s.http_get("/v1.0/state/statestore/c").await.status(), 200);
    assert_eq!(s.http_get("/v1.0/healthz/outbound").await.status(), 204);
}

for_each_store!(
    [memory => Memory, sqlite => Sqlite, redis => Redis],
    [ttl_out_of_range_is_refused_whole]
);

/// `--max-body-size` bounds what the API reads: a larger body is a 413 JSON error over
/// HTTP (state, transactions, locks, invocation) and an error status over gRPC, and the
/// sidecar goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_past_max_body_size_are_refused() {
    let registry = TempDir::new("registry");
    let components = ComponentsDir::memory();
    let s = SidecarBuilder::new(env!("CARGO_BIN_EXE_sidecar"), "app", registry.path())
        .resources(components.path())
        .flag("--max-body-size", "1Ki")
        .spawn()
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let big = "x".repeat(2048);
    let too_big = [
        (
            "/v1.0/state/statestore",
            json!([{"key": "a", "value": big}]),
        ),
        (
            "/v1.0/state/statestore/transaction",
            json!({"operations": [{"operation": "upsert", "request": {"key": "a", "value": big}}]}),
        ),
        (
            "/v1.0-alpha1/lock/lockstore",
            json!({"resourceId": big, "lockOwner": "o", "expiryInSeconds": 5}),
        ),
        ("/v1.0/invoke/app/method/echo", json!({"payload": big})),
    ];
    for (path, body) in too_big {
        let r = http
            .post(format!("{}{path}", s.http_url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(r).await, (413, "ERR_BODY_READ".into()), "{path}");
    }
    let r = http
        .post(format!("{}/v1.0/state/statestore", s.http_url()))
        .json(&json!([{"key": "a", "value": "small"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "a body within the limit is taken");

    let mut c = dapr::dapr::proto::runtime::v1::dapr_client::DaprClient::connect(s.grpc_url())
        .await
        .unwrap();
    let err = c
        .save_state(SaveStateRequest {
            store_name: "statestore".into(),
            states: vec![StateItem {
                key: "a".into(),
                value: big.into_bytes(),
                ..Default::default()
            }],
        })
        .await
        .unwrap_err();
    // tonic's codec answers OutOfRange where grpc-go (daprd) says ResourceExhausted.
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err}");
    let r = http
        .get(format!("{}/v1.0/state/statestore/a", s.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.text().await.unwrap(),
        "\"small\"",
        "the refused write left the value alone"
    );
}

/// An app's reply is read within `--max-body-size` too (daprd limits it as it limits
/// requests): one past it is an error, not memory taken without bound: to a gRPC caller
/// `ResourceExhausted`, to an HTTP caller a 500 `ERR_DIRECT_INVOKE`; one within it is
/// answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apps_reply_past_max_body_size_is_refused() {
    use dapr::dapr::proto::common::v1::{HttpExtension, InvokeRequest};
    use dapr::dapr::proto::runtime::v1::InvokeServiceRequest;

    let app_port = testkit::start_echo_app().await;
    let registry = TempDir::new("registry");
    let s = SidecarBuilder::new(env!("CARGO_BIN_EXE_sidecar"), "echo", registry.path())
        .app_port(app_port)
        .flag("--max-body-size", "1Ki")
        .spawn()
        .await
        .unwrap();
    let mut c = dapr::dapr::proto::runtime::v1::dapr_client::DaprClient::connect(s.grpc_url())
        .await
        .unwrap();
    // The echo app answers with the request's body and headers: a 900-byte request fits
    // the limit, the reply does not.
    let call = |size: usize| InvokeServiceRequest {
        id: "echo".into(),
        message: Some(InvokeRequest {
            method: "echo".into(),
            data: Some(prost_types::Any {
                type_url: String::new(),
                value: vec![b'x'; size],
            }),
            content_type: "text/plain".into(),
            // POST (Dapr's HTTPExtension.Verb numbering).
            http_extension: Some(HttpExtension {
                verb: 3,
                querystring: String::new(),
            }),
        }),
    };
    let err = c.invoke_service(call(900)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    let small = c.invoke_service(call(10)).await.unwrap().into_inner();
    assert!(small.data.is_some_and(|d| d.value.len() < 1024));

    // Through another sidecar: the callee's refusal keeps its code on the way back.
    let caller = SidecarBuilder::new(env!("CARGO_BIN_EXE_sidecar"), "caller", registry.path())
        .spawn()
        .await
        .unwrap();
    let mut c2 =
        dapr::dapr::proto::runtime::v1::dapr_client::DaprClient::connect(caller.grpc_url())
            .await
            .unwrap();
    let err = c2.invoke_service(call(900)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    assert!(
        err.message().contains("--max-body-size"),
        "{}",
        err.message()
    );

    let http = reqwest::Client::new();
    let call = |size: usize| {
        http.post(format!("{}/v1.0/invoke/echo/method/echo", s.http_url()))
            .body(vec![b'x'; size])
            .send()
    };
    let (status, code) = error_code(call(900).await.unwrap()).await;
    assert_eq!((status, code.as_str()), (500, "ERR_DIRECT_INVOKE"));
    let small = call(10).await.unwrap();
    assert_eq!(small.status(), 200);
    assert!(small.bytes().await.unwrap().len() < 1024);
}
