//! Health, metadata, the API token, unknown routes, unimplemented gRPC methods, metrics and
//! shutdown.

use std::time::Duration;

use dapr::dapr::proto::runtime::v1::dapr_client::DaprClient;
use dapr::dapr::proto::runtime::v1::{GetMetadataRequest, GetSecretRequest, PublishEventRequest};
use serde_json::Value;
use testkit::{ComponentsDir, SidecarBuilder, StoreKind, TempDir};

use crate::common::{detail_types, error_reason, one_sidecar_with};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sidecar")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_waits_for_the_app_and_metadata_lists_components() {
    let registry = TempDir::new("registry");
    let components = ComponentsDir::memory();
    let app_port = testkit::free_port();
    let s = SidecarBuilder::new(bin(), "meta", registry.path())
        .resources(components.path())
        .app_port(app_port)
        .spawn()
        .await
        .unwrap();
    let r = reqwest::get(format!("{}/v1.0/healthz", s.http_url()))
        .await
        .unwrap();
    assert_eq!(r.status(), 500, "no app listening yet");
    assert_eq!(
        r.json::<Value>().await.unwrap()["errorCode"],
        "ERR_HEALTH_NOT_READY"
    );
    let _app = std::net::TcpListener::bind(("127.0.0.1", app_port)).unwrap();
    testkit::wait_until("healthz 204", Duration::from_secs(5), || async {
        let r = reqwest::get(format!("{}/v1.0/healthz", s.http_url()))
            .await
            .ok()?;
        (r.status() == 204).then_some(())
    })
    .await
    .unwrap();
    let r = reqwest::get(format!("{}/v1.0/healthz?appid=other", s.http_url()))
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["errorCode"],
        "ERR_HEALTH_APPID_NOT_MATCH"
    );

    let m: Value = reqwest::get(format!("{}/v1.0/metadata", s.http_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["id"], "meta");
    let names: Vec<&str> = m["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"statestore") && names.contains(&"lockstore"),
        "{m}"
    );
    assert_eq!(m["appConnectionProperties"]["port"], app_port);

    let mut c = DaprClient::connect(s.grpc_url()).await.unwrap();
    let gm = c
        .get_metadata(GetMetadataRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gm.id, "meta");
    let err = c
        .publish_event(PublishEventRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (tonic::Code::InvalidArgument, "pubsub name is empty")
    );
    // What this sidecar does not serve says so.
    let err = c.get_secret(GetSecretRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_token_is_required_except_for_health() {
    let one = one_sidecar_with(StoreKind::Memory, "locked", &[("DAPR_API_TOKEN", "s3cret")]).await;
    let s = &one.sidecar;
    // (path, token sent, status, body when it matters)
    let cases = [
        ("/v1.0/metadata", None, 401, Some("invalid api token\n")),
        ("/v1.0/metadata", Some("wrong"), 401, None),
        ("/v1.0/metadata", Some("s3cret"), 200, None),
        ("/v1.0/healthz", None, 204, None),
    ];
    for (path, token, status, body) in cases {
        let mut req = one.http.get(format!("{}{path}", s.http_url()));
        if let Some(token) = token {
            req = req.header("dapr-api-token", token);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), status, "{path} with {token:?}");
        if let Some(body) = body {
            assert_eq!(r.text().await.unwrap(), body);
        }
    }

    let mut c = DaprClient::connect(s.grpc_url()).await.unwrap();
    let err = c
        .get_metadata(GetMetadataRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut req = tonic::Request::new(GetMetadataRequest::default());
    req.metadata_mut()
        .insert("dapr-api-token", "s3cret".parse().unwrap());
    assert_eq!(c.get_metadata(req).await.unwrap().into_inner().id, "locked");

    let mut client = dapr::Client::from_options(
        dapr::client::ClientOptions::new()
            .with_address(s.grpc_url())
            .with_api_token("s3cret"),
    )
    .await
    .unwrap();
    client
        .save_state("statestore", "k", b"1".to_vec(), None, None, None)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_configuration() {
    let registry = TempDir::new("registry");
    let dir = TempDir::new("config");
    let on = dir.path().join("on.yaml");
    std::fs::write(&on, "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  metrics:\n    enabled: true\n").unwrap();
    // A sidecar with `config` that has served one call; and its metrics URL.
    let served_one_call = async |app_id: &str, config: String| {
        let port = testkit::free_port();
        let s = SidecarBuilder::new(bin(), app_id, registry.path())
            .flag("--config", config)
            .flag("--metrics-port", port)
            .spawn()
            .await
            .unwrap();
        reqwest::get(format!("{}/v1.0/metadata", s.http_url()))
            .await
            .unwrap();
        (s, format!("http://127.0.0.1:{port}/"))
    };
    let (_on, metrics) = served_one_call("metered", on.display().to_string()).await;
    let text = reqwest::get(metrics).await.unwrap().text().await.unwrap();
    assert!(
        text.contains("dapr_http_server_request_count{app_id=\"metered\""),
        "{text}"
    );

    let off = concat!(env!("CARGO_MANIFEST_DIR"), "/../config.yaml");
    let (_off, metrics) = served_one_call("quiet", off.to_string()).await;
    assert!(
        reqwest::get(metrics).await.is_err(),
        "metrics disabled: no listener"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_api_stops_the_sidecar() {
    let registry = TempDir::new("registry");
    let mut s = SidecarBuilder::new(bin(), "stopper", registry.path())
        .spawn()
        .await
        .unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/v1.0/shutdown", s.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let status = s
        .wait_for_exit(Duration::from_secs(10))
        .expect("the sidecar stops by itself");
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_errors_carry_dapr_error_info() {
    use dapr::dapr::proto::runtime::v1::GetStateRequest;
    let one = one_sidecar_with(StoreKind::Memory, "rich", &[("DAPR_API_TOKEN", "t")]).await;
    let s = &one.sidecar;
    let mut c = DaprClient::connect(s.grpc_url()).await.unwrap();
    let err = c
        .get_metadata(GetMetadataRequest::default())
        .await
        .unwrap_err();
    assert_eq!(error_reason(&err).as_deref(), Some("Unauthorized"));
    let mut req = tonic::Request::new(GetStateRequest {
        store_name: "nope".into(),
        key: "k".into(),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("dapr-api-token", "t".parse().unwrap());
    let err = c.get_state(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(error_reason(&err).as_deref(), Some("DAPR_STATE_NOT_FOUND"));

    // A save's own fault is named by the operation, as daprd names it.
    use dapr::dapr::proto::{common::v1::StateItem, runtime::v1::SaveStateRequest};
    let mut req = tonic::Request::new(SaveStateRequest {
        store_name: "statestore".into(),
        states: vec![StateItem::default()],
    });
    req.metadata_mut()
        .insert("dapr-api-token", "t".parse().unwrap());
    let err = c.save_state(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(error_reason(&err).as_deref(), Some("ERR_STATE_SAVE"));

    // An illegal key, as daprd's InvalidKeyName: the key as a field violation, the store as
    // the resource, then the reason.
    let mut req = tonic::Request::new(GetStateRequest {
        store_name: "statestore".into(),
        key: "a||b".into(),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("dapr-api-token", "t".parse().unwrap());
    let err = c.get_state(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        error_reason(&err).as_deref(),
        Some("DAPR_STATE_ILLEGAL_KEY")
    );
    assert_eq!(
        detail_types(&err),
        [
            "type.googleapis.com/google.rpc.BadRequest",
            "type.googleapis.com/google.rpc.ResourceInfo",
            "type.googleapis.com/google.rpc.ErrorInfo"
        ]
    );
    let st = <dapr::google::rpc::Status as prost::Message>::decode(err.details()).unwrap();
    let violation: sidecar::errors::BadRequest =
        prost::Message::decode(st.details[0].value.as_slice()).unwrap();
    let resource: sidecar::errors::ResourceInfo =
        prost::Message::decode(st.details[1].value.as_slice()).unwrap();
    assert_eq!(
        (
            violation.field_violations[0].field.as_str(),
            violation.field_violations[0].description.as_str()
        ),
        ("a||b", err.message())
    );
    assert_eq!(
        (
            resource.resource_type.as_str(),
            resource.resource_name.as_str()
        ),
        ("state", "statestore")
    );

    // The same over HTTP, in daprd's JSON: its HTTP handlers build the error again around
    // the first one's text, and a transaction's after clearing the key (no field then).
    let http = s.http_client();
    let get = http.get(format!("{}/v1.0/state/statestore/a%7C%7Cb", s.http_url()));
    let tx = http
        .post(format!(
            "{}/v1.0/state/statestore/transaction",
            s.http_url()
        ))
        .json(&serde_json::json!({"operations": [
            {"operation": "upsert", "request": {"key": "a||b", "value": 1}}]}));
    for (req, field) in [(get, Some("a||b")), (tx, None)] {
        let r = req.header("dapr-api-token", "t").send().await.unwrap();
        assert_eq!(r.status(), 400);
        let body: serde_json::Value = r.json().await.unwrap();
        let message = "api error: code = InvalidArgument desc = input key/keyPrefix 'a||b' can't contain '||'";
        assert_eq!(
            (&body["errorCode"], &body["message"]),
            (
                &serde_json::json!("ERR_MALFORMED_REQUEST"),
                &serde_json::json!(message)
            )
        );
        let mut violation = serde_json::json!({"description": message});
        if let Some(field) = field {
            violation["field"] = field.into();
        }
        assert_eq!(
            body["details"],
            serde_json::json!([
                {"@type": "type.googleapis.com/google.rpc.BadRequest",
                 "field_violations": [violation]},
                {"@type": "type.googleapis.com/google.rpc.ResourceInfo", "resource_type": "state",
                 "resource_name": "statestore", "owner": "", "description": ""},
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                 "reason": "DAPR_STATE_ILLEGAL_KEY", "domain": "dapr.io", "metadata": null},
            ])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_attributes_bulk_delete_and_grpc_shutdown() {
    use dapr::dapr::proto::common::v1::StateItem;
    use dapr::dapr::proto::runtime::v1::{
        DeleteBulkStateRequest, GetStateRequest, SaveStateRequest, SetMetadataRequest,
        ShutdownRequest,
    };
    let mut one = one_sidecar_with(StoreKind::Memory, "attrs", &[]).await;
    let (s, http) = (&mut one.sidecar, &one.http);
    let r = http
        .put(format!("{}/v1.0/metadata/color", s.http_url()))
        .body("blue")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let mut c = DaprClient::connect(s.grpc_url()).await.unwrap();
    c.set_metadata(SetMetadataRequest {
        key: "size".into(),
        value: "xl".into(),
    })
    .await
    .unwrap();
    let m: Value = testkit::get_json(http, format!("{}/v1.0/metadata", s.http_url())).await;
    assert_eq!(m["extended"]["color"], "blue");
    assert_eq!(m["extended"]["size"], "xl");

    let item = |k: &str| StateItem {
        key: k.into(),
        value: b"1".to_vec(),
        ..Default::default()
    };
    c.save_state(SaveStateRequest {
        store_name: "statestore".into(),
        states: vec![item("a"), item("b")],
    })
    .await
    .unwrap();
    c.delete_bulk_state(DeleteBulkStateRequest {
        store_name: "statestore".into(),
        states: vec![item("a"), item("b")],
    })
    .await
    .unwrap();
    for k in ["a", "b"] {
        let got = c
            .get_state(GetStateRequest {
                store_name: "statestore".into(),
                key: k.into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(got.into_inner().data.is_empty(), "{k} deleted");
    }

    c.shutdown(ShutdownRequest::default()).await.unwrap();
    drop(c);
    let status = s
        .wait_for_exit(Duration::from_secs(10))
        .expect("the sidecar stops by itself");
    assert!(status.success(), "{status}");
}

/// The HTTP API speaks HTTP/2 cleartext (prior knowledge) beside HTTP/1.1, as daprd's
/// does; with `DAPR_HTTP_DISABLE_H2C` truthy, as daprd reads it, HTTP/1.1 alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_speaks_h2c_unless_it_is_disabled() {
    let registry = TempDir::new("registry");
    for (disable, h2c) in [(None, Some(204)), (Some("true"), None)] {
        let mut builder = SidecarBuilder::new(bin(), "h2c", registry.path());
        if let Some(v) = disable {
            builder = builder.env("DAPR_HTTP_DISABLE_H2C", v);
        }
        let s = builder.spawn().await.unwrap();
        assert_eq!(h2c_healthz(s.http_port).await, h2c, "{disable:?}");
        let r = reqwest::get(format!("{}/v1.0/healthz", s.http_url()))
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "HTTP/1.1 either way ({disable:?})");
    }
}

/// `/v1.0/healthz` over HTTP/2 with prior knowledge: its status, none if refused.
async fn h2c_healthz(port: u16) -> Option<u16> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .ok()?;
    tokio::spawn(connection);
    let req = http::Request::get(format!("http://127.0.0.1:{port}/v1.0/healthz"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    // An HTTP/1.1 server answers the preface with an error and closes: bounded anyway.
    let answer = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .expect("an answer or a refusal within 10 s");
    Some(answer.ok()?.status().as_u16())
}

/// Each state store lists the capabilities daprd lists for the same component type
/// (components-contrib's `Features()`), over HTTP and gRPC alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_stores_list_daprds_capabilities() {
    let cases = [
        (
            StoreKind::Memory,
            &[
                "ETAG",
                "TRANSACTIONAL",
                "TTL",
                "DELETE_WITH_PREFIX",
                "KEYS_LIKE",
            ][..],
        ),
        (
            StoreKind::Sqlite,
            &["ETAG", "TRANSACTIONAL", "TTL", "KEYS_LIKE"][..],
        ),
        (
            StoreKind::Redis,
            &["ETAG", "TRANSACTIONAL", "TTL", "KEYS_LIKE"][..],
        ),
    ];
    for (kind, capabilities) in cases {
        let one = one_sidecar_with(kind, "caps", &[]).await;
        let m = one.sidecar.metadata().await.unwrap();
        let store = m["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "statestore")
            .cloned()
            .unwrap_or_else(|| panic!("no statestore: {m}"));
        assert_eq!(
            store["capabilities"],
            serde_json::json!(capabilities),
            "{m}"
        );
        let mut grpc = DaprClient::connect(one.sidecar.grpc_url()).await.unwrap();
        let gm = grpc
            .get_metadata(GetMetadataRequest::default())
            .await
            .unwrap()
            .into_inner();
        let store = gm
            .registered_components
            .iter()
            .find(|c| c.name == "statestore")
            .unwrap();
        assert_eq!(store.capabilities, capabilities, "{:?}", store.r#type);
    }
}
