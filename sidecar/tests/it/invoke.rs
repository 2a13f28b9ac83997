//! Service invocation through two real sidecars to a real app, over HTTP and gRPC.

use dapr::dapr::proto::common::v1::{HttpExtension, InvokeRequest};
use dapr::dapr::proto::runtime::v1::InvokeServiceRequest;
use dapr::dapr::proto::runtime::v1::dapr_client::DaprClient;
use reqwest::Method;
use serde_json::{Value, json};
use testkit::{ComponentsDir, SidecarBuilder, SidecarProcess, TempDir};

use crate::common::error_code;

struct Pair {
    caller: SidecarProcess,
    callee: SidecarProcess,
    http: reqwest::Client,
    registry: TempDir,
    _components: ComponentsDir,
}

impl Pair {
    /// A request to the calling sidecar with `headers` and no body, answered.
    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self.to_caller(method, path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.unwrap()
    }

    /// A request to the calling sidecar's HTTP API.
    fn to_caller(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.caller.http_url()))
    }
}

async fn pair(callee_env: &[(&str, &str)]) -> Pair {
    pair_to(testkit::start_echo_app().await, callee_env).await
}

/// The pair with the callee's app on `app_port`.
async fn pair_to(app_port: u16, callee_env: &[(&str, &str)]) -> Pair {
    let registry = TempDir::new("registry");
    let components = ComponentsDir::memory();
    let bin = env!("CARGO_BIN_EXE_sidecar");
    let mut callee = SidecarBuilder::new(bin, "backend", registry.path())
        .resources(components.path())
        .app_port(app_port);
    for (k, v) in callee_env {
        callee = callee.env(k, v);
    }
    let callee = callee.spawn().await.unwrap();
    let caller = SidecarBuilder::new(bin, "frontend", registry.path())
        .resources(components.path())
        .spawn()
        .await
        .unwrap();
    Pair {
        caller,
        callee,
        http: reqwest::Client::new(),
        registry,
        _components: components,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_passes_verb_path_query_headers_and_body() {
    let p = pair(&[]).await;
    for method in ["POST", "PUT", "DELETE", "PATCH", "GET"] {
        let path = "/v1.0/invoke/backend/method/book_hotel/42?x=1&y=two";
        let r = p
            .to_caller(method.parse().unwrap(), path)
            .header(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .header("x-custom", "kept")
            .header("content-type", "application/json")
            .body(r#"{"user":"ann"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{method}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["method"], method);
        assert_eq!(e["path"], "/book_hotel/42");
        assert_eq!(e["query"], "x=1&y=two");
        assert_eq!(e["body"], r#"{"user":"ann"}"#);
        let h = &e["headers"];
        assert_eq!(
            h["traceparent"],
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        assert_eq!(h["x-custom"], "kept");
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["dapr-caller-app-id"], "frontend");
        assert_eq!(h["dapr-callee-app-id"], "backend");
        // daprd's namespace without NAMESPACE set.
        assert_eq!(h["dapr-caller-namespace"], "default");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_errors_pass_through_unwrapped() {
    let p = pair(&[]).await;
    let r = p
        .send(Method::GET, "/v1.0/invoke/backend/method/status/404", &[])
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-app"], "yes");
    // As daprd hands an answer's headers to an HTTP caller: gRPC's names behind `dapr-`,
    // no binary metadata.
    assert_eq!(r.headers()["dapr-grpc-note"], "app");
    assert!(r.headers().get("grpc-note").is_none());
    assert!(r.headers().get("x-note-bin").is_none());
    assert_eq!(r.text().await.unwrap(), "app says 404 Not Found");
    let r = p
        .send(Method::POST, "/v1.0/invoke/backend/method/status/503", &[])
        .await;
    assert_eq!(r.status(), 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_form_and_unknown_targets() {
    let p = pair(&[]).await;
    let r = p
        .send(Method::GET, "/any/path?q=1", &[("dapr-app-id", "backend")])
        .await;
    assert_eq!(r.status(), 200);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["path"], "/any/path");
    assert_eq!(e["query"], "q=1");
    assert!(
        e["headers"].get("dapr-app-id").is_none(),
        "dapr-app-id is removed before forwarding"
    );

    let r = p
        .send(Method::GET, "/v1.0/invoke/nobody/method/x", &[])
        .await;
    assert_eq!(error_code(r).await, (500, "ERR_DIRECT_INVOKE".into()));
    let r = p.send(Method::GET, "/not/a/route", &[]).await;
    assert_eq!(error_code(r).await, (404, "ERR_DIRECT_INVOKE".into()));
}

/// The method path reaches the app as it was sent, by either form of call: what is
/// percent-encoded stays encoded, so `%3F` never becomes a query nor `%2F..` a dot segment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_method_path_reaches_the_app_as_sent() {
    let p = pair(&[]).await;
    let method = "/a%3Fb/c%2F..%2Fd%20e";
    let by_path = p
        .send(
            Method::GET,
            &format!("/v1.0/invoke/backend/method{method}"),
            &[],
        )
        .await;
    let by_header = p
        .send(Method::GET, method, &[("dapr-app-id", "backend")])
        .await;
    for (form, r) in [("path", by_path), ("header", by_header)] {
        let e: Value = r.json().await.unwrap();
        assert_eq!(
            (&e["path"], &e["query"]),
            (&json!(method), &Value::Null),
            "{form}"
        );
    }
}

/// The callee's internal port takes calls only with the registry's secret, which the
/// calling sidecar adds and the app never sees: a local client that finds the port cannot
/// reach the app, and cannot pose as a caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_internal_port_takes_calls_only_from_peers() {
    let p = pair(&[]).await;
    let entry = std::fs::read_dir(p.registry.path())
        .unwrap()
        .filter_map(Result::ok)
        .find(|f| f.file_name().to_string_lossy().starts_with("backend."))
        .expect("the callee's registration");
    let entry: Value = serde_json::from_slice(&std::fs::read(entry.path()).unwrap()).unwrap();
    let internal = format!("http://127.0.0.1:{}/x", entry["internalPort"]);
    for secret in [None, Some("guess"), Some("")] {
        let mut req = p
            .http
            .get(&internal)
            .header("dapr-caller-app-id", "frontend");
        if let Some(s) = secret {
            req = req.header("dapr-internal-secret", s);
        }
        let r = req.send().await.unwrap();
        assert_eq!(
            error_code(r).await,
            (401, "ERR_DIRECT_INVOKE".into()),
            "{secret:?}"
        );
    }
    // Through the public API, a client's own caller id and secret are dropped: the app is
    // told the caller the sidecar vouches for, and never sees a secret.
    let forged = [
        ("dapr-caller-app-id", "evil"),
        ("dapr-internal-secret", "x"),
    ];
    let r = p
        .send(Method::GET, "/v1.0/invoke/backend/method/x", &forged)
        .await;
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["headers"]["dapr-caller-app-id"], "frontend", "{e}");
    assert!(e["headers"].get("dapr-internal-secret").is_none(), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stacks_with_different_registries_do_not_see_each_other() {
    let p = pair(&[]).await;
    let other_registry = TempDir::new("registry");
    let stranger = SidecarBuilder::new(
        env!("CARGO_BIN_EXE_sidecar"),
        "frontend",
        other_registry.path(),
    )
    .spawn()
    .await
    .unwrap();
    let r = p
        .http
        .get(format!(
            "{}/v1.0/invoke/backend/method/x",
            stranger.http_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        500,
        "a sidecar of another stack must not reach this backend"
    );
    let r = p
        .send(Method::GET, "/v1.0/invoke/backend/method/x", &[])
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_invoke_service() {
    let p = pair(&[]).await;
    let mut c = DaprClient::connect(p.caller.grpc_url()).await.unwrap();
    let req = |method: &str| InvokeServiceRequest {
        id: "backend".into(),
        message: Some(InvokeRequest {
            method: method.into(),
            data: Some(prost_any(b"payload")),
            content_type: "text/plain".into(),
            http_extension: Some(HttpExtension {
                verb: 4,
                querystring: "a=b".into(),
            }),
        }),
    };
    let resp = c.invoke_service(req("echo/me")).await.unwrap();
    // The app's headers as metadata, its standard HTTP ones behind `dapr-` (daprd's
    // `InternalMetadataToGrpcMetadata`), and its HTTP status.
    let md = resp.metadata();
    assert_eq!(md.get("dapr-content-type").unwrap(), "application/json");
    assert_eq!(md.get("dapr-http-status").unwrap(), "200");
    assert!(md.get("traceparent").is_none(), "{md:?}");
    let resp = resp.into_inner();
    assert_eq!(resp.content_type, "application/json");
    let e: Value = serde_json::from_slice(&resp.data.unwrap().value).unwrap();
    assert_eq!(e["method"], "PUT");
    assert_eq!(e["path"], "/echo/me");
    assert_eq!(e["query"], "a=b");
    assert_eq!(e["body"], "payload");
    // A method is text: what would change the path's meaning is sent encoded.
    let resp = c
        .invoke_service(req("a?x=1/b c#d"))
        .await
        .unwrap()
        .into_inner();
    let e: Value = serde_json::from_slice(&resp.data.unwrap().value).unwrap();
    assert_eq!(
        (&e["path"], &e["query"]),
        (&json!("/a%3Fx=1/b%20c%23d"), &json!("a=b"))
    );
    let err = c.invoke_service(req("status/404")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let md = err.metadata();
    assert_eq!(md.get("x-app").unwrap(), "yes", "{md:?}");
    assert_eq!(md.get("dapr-http-status").unwrap(), "404");
    assert_eq!(
        md.get_bin("x-note-bin").unwrap().to_bytes().unwrap(),
        &[1u8][..],
        "binary metadata as its bytes"
    );
}

fn prost_any(bytes: &[u8]) -> prost_types::Any {
    prost_types::Any {
        type_url: String::new(),
        value: bytes.to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_api_token_is_sent_to_the_app_and_caller_token_is_not() {
    let p = pair(&[("APP_API_TOKEN", "app-secret")]).await;
    let r = p
        .send(
            Method::GET,
            "/v1.0/invoke/backend/method/x",
            &[("dapr-api-token", "caller-token")],
        )
        .await;
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["headers"]["dapr-api-token"], "app-secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_started_by_sidecar_run_is_reachable_from_another_sidecar() {
    let registry = TempDir::new("registry");
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_sidecar"));
    let (_web, _www) = testkit::spawn_static_app(bin, "web", registry.path())
        .await
        .unwrap();
    let caller = SidecarBuilder::new(bin, "client", registry.path())
        .spawn()
        .await
        .unwrap();
    let body = testkit::fetch_hello_through(&caller, "web").await.unwrap();
    assert_eq!(body, testkit::HELLO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoking_the_own_app_id_reaches_the_app_as_its_own_caller() {
    let p = pair(&[]).await;
    // Without its registration the app id cannot be found as a peer: a call that still
    // arrives took no peer hop.
    for entry in std::fs::read_dir(p.registry.path()).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name().to_string_lossy().starts_with("backend.") {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }
    let r = p
        .send(Method::GET, "/v1.0/invoke/backend/method/self", &[])
        .await;
    assert_eq!(r.status(), 500, "the peer cannot be found any more");
    let own = format!("{}/v1.0/invoke/backend/method/self", p.callee.http_url());
    let r = p
        .http
        .get(own)
        .header("dapr-caller-app-id", "spoofed")
        .header("dapr-caller-namespace", "spoofed")
        .send()
        .await
        .unwrap();
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["path"], "/self");
    // daprd's invokeLocal: the identity headers stamped again, caller = callee = the app.
    assert_eq!(
        (
            &e["headers"]["dapr-caller-app-id"],
            &e["headers"]["dapr-callee-app-id"],
            &e["headers"]["dapr-caller-namespace"]
        ),
        (&json!("backend"), &json!("backend"), &json!("default")),
        "{e}"
    );
}

/// A call that says how long it has (`x-request-timeout-ms`) is given up with a 504 when
/// the app behind the other sidecar takes the connection and never answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_time_runs_out_is_a_504() {
    // The kernel accepts connections into the backlog; nobody ever reads them.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let p = pair_to(silent.local_addr().unwrap().port(), &[]).await;
    let started = std::time::Instant::now();
    let r = p
        .to_caller(Method::POST, "/v1.0/invoke/backend/method/book")
        .header("x-request-timeout-ms", "300")
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .expect("an answer, not a hang");
    assert_eq!(r.status(), 504);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errorCode"], "ERR_DIRECT_INVOKE", "{body}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "answered when the app gave up, not when the call's time ran out"
    );
    drop(silent);
}

/// Where the SSE app's open stream takes its next chunks; dropped, the stream ends.
type Events =
    std::sync::Arc<std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<&'static str>>>>;

/// An app answering `GET /events` with Server-Sent Events: the first at once, the rest
/// when the test sends them through [`Events`].
async fn start_sse_app(events: Events) -> u16 {
    async fn stream(
        axum::extract::State(events): axum::extract::State<Events>,
    ) -> axum::response::Response {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tx.send("data: one\n\n").unwrap();
        *events.lock().unwrap() = Some(tx);
        let body = futures_util::stream::unfold(rx, |mut rx| async move {
            let chunk = rx.recv().await?;
            Some((Ok::<_, std::io::Error>(chunk), rx))
        });
        axum::response::Response::builder()
            .header("content-type", "text/event-stream")
            .body(axum::body::Body::from_stream(body))
            .unwrap()
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new()
        .route("/events", axum::routing::get(stream))
        .with_state(events);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

/// A call that asks for Server-Sent Events (`Accept: text/event-stream`) gets them as the
/// app writes them, through both sidecars, as daprd passes them on: the first event
/// arrives while the app still holds its stream open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_pass_through_as_the_app_writes_them() {
    let events = Events::default();
    let p = pair_to(start_sse_app(events.clone()).await, &[]).await;
    // A sidecar that held the answer until the app ended it would never send its head.
    let answer = p.send(
        Method::GET,
        "/v1.0/invoke/backend/method/events",
        &[("accept", "text/event-stream")],
    );
    let mut r = tokio::time::timeout(std::time::Duration::from_secs(10), answer)
        .await
        .expect("the answer's head arrives while the app's stream is open");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut seen = Vec::new();
    while !seen.ends_with(b"data: one\n\n") {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), r.chunk())
            .await
            .expect("the first event arrives while the app's stream is open")
            .unwrap()
            .expect("the stream is still open");
        seen.extend_from_slice(&chunk);
    }
    let more = events.lock().unwrap().take().unwrap();
    more.send("data: two\n\n").unwrap();
    drop(more);
    let rest = tokio::time::timeout(std::time::Duration::from_secs(10), r.bytes())
        .await
        .expect("the stream ends when the app ends it")
        .unwrap();
    assert_eq!(rest, "data: two\n\n");
}

/// An app that is not listening: the caller gets 500 `ERR_DIRECT_INVOKE` naming the app id,
/// as from daprd (whose callee answers `Internal`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_is_not_listening_is_a_failed_invocation() {
    let p = pair_to(testkit::free_port(), &[]).await;
    let r = p
        .send(Method::POST, "/v1.0/invoke/backend/method/anything", &[])
        .await;
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["errorCode"], "ERR_DIRECT_INVOKE", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with("failed to invoke, id: backend, err: "),
        "{message}"
    );
}

/// An HTTP app cannot make up the status a gRPC caller gets: the header in which sidecars
/// pass a gRPC app's status on is taken off an HTTP app's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_app_cannot_forge_a_grpc_callers_status() {
    use base64::Engine as _;
    use prost::Message as _;
    let forged = dapr::google::rpc::Status {
        code: tonic::Code::PermissionDenied as i32,
        message: "forged".into(),
        details: vec![],
    };
    let header = base64::engine::general_purpose::STANDARD.encode(forged.encode_to_vec());
    let app = axum::Router::new().fallback(move || {
        let header = header.clone();
        async move { ([("dapr-internal-grpc-status", header)], "ok") }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let p = pair_to(port, &[]).await;
    let mut c = DaprClient::connect(p.caller.grpc_url()).await.unwrap();
    let answer = c
        .invoke_service(InvokeServiceRequest {
            id: "backend".into(),
            message: Some(InvokeRequest {
                method: "anything".into(),
                data: None,
                content_type: String::new(),
                http_extension: Some(HttpExtension {
                    verb: 3,
                    querystring: String::new(),
                }),
            }),
        })
        .await
        .expect("the app's answer, not the status it wrote in a header")
        .into_inner();
    assert_eq!(answer.data.unwrap().value, b"ok");
}
