//! The gRPC app channel: an app serving Dapr's `AppCallback` (written against the `dapr`
//! crate's generated service, as a Rust Dapr app is) behind `--app-protocol grpc`, invoked
//! by HTTP and gRPC callers through another sidecar; its error statuses, details too,
//! reach HTTP and gRPC callers as daprd gives them; a client-only app starts with any
//! protocol.

use dapr::dapr::proto::common::v1::{
    HttpExtension, InvokeRequest, InvokeResponse, http_extension::Verb,
};
use dapr::dapr::proto::runtime::v1 as rt;
use dapr::dapr::proto::runtime::v1::app_callback_health_check_server::{
    AppCallbackHealthCheck, AppCallbackHealthCheckServer,
};
use dapr::dapr::proto::runtime::v1::app_callback_server::{AppCallback, AppCallbackServer};
use dapr::dapr::proto::runtime::v1::dapr_client::DaprClient;
use serde_json::{Value, json};
use sidecar::transport::trailers::{Trailers, TrailersLayer};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use testkit::{ComponentsDir, SidecarBuilder, TempDir};
use tonic::{Request, Response, Status};

const BIN: &str = env!("CARGO_BIN_EXE_sidecar");

/// Answers `OnInvoke` with what it received, as JSON; method `missing` is NotFound with
/// an `ErrorInfo` and a `ResourceInfo`; method `odd` is Internal with a detail of a type
/// only the app knows. With `topics`, it subscribes to `orders` (dead letters to `dead`)
/// and to `dead`, keeps each event it is offered there, and answers an event on `orders`
/// by its data: `RETRY` to `retry` always, an `Unimplemented` status to `unimplemented`,
/// an `Internal` status to the first offer of `fail`, and `SUCCESS` otherwise; without,
/// it subscribes to nothing.
#[derive(Default)]
struct EchoApp {
    topics: Option<Offers>,
}

/// What an [`EchoApp`] was offered: (topic, data), in order.
type Offers = Arc<std::sync::Mutex<Vec<(String, String)>>>;

/// The details of `missing`'s error.
fn missing_status() -> dapr::google::rpc::Status {
    use prost::Message as _;
    use sidecar::errors::{ErrorInfo, ResourceInfo};
    let info = ErrorInfo {
        reason: "NO_SUCH_METHOD".into(),
        domain: "echo.test".into(),
        metadata: [("method".to_string(), "missing".to_string())].into(),
    };
    let resource = ResourceInfo {
        resource_type: "method".into(),
        resource_name: "missing".into(),
        owner: String::new(),
        description: String::new(),
    };
    dapr::google::rpc::Status {
        code: tonic::Code::NotFound as i32,
        message: "no such method".into(),
        details: vec![
            prost_types::Any {
                type_url: "type.googleapis.com/google.rpc.ErrorInfo".into(),
                value: info.encode_to_vec(),
            },
            prost_types::Any {
                type_url: "type.googleapis.com/google.rpc.ResourceInfo".into(),
                value: resource.encode_to_vec(),
            },
        ],
    }
}

#[tonic::async_trait]
impl AppCallback for EchoApp {
    async fn on_invoke(
        &self,
        request: Request<InvokeRequest>,
    ) -> Result<Response<InvokeResponse>, Status> {
        let caller = request
            .metadata()
            .get("dapr-caller-app-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        // Binary values as their bytes read as text.
        let metadata: serde_json::Map<String, Value> = request
            .metadata()
            .iter()
            .map(|kv| match kv {
                tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                    (k.to_string(), json!(v.to_str().unwrap_or_default()))
                }
                tonic::metadata::KeyAndValueRef::Binary(k, v) => (
                    k.to_string(),
                    json!(String::from_utf8_lossy(&v.to_bytes().unwrap_or_default())),
                ),
            })
            .collect();
        let req = request.into_inner();
        if req.method == "missing" {
            use prost::Message as _;
            let status = missing_status();
            let mut status = Status::with_details(
                tonic::Code::NotFound,
                status.message.clone(),
                status.encode_to_vec().into(),
            );
            status
                .metadata_mut()
                .insert("x-why", "gone".parse().unwrap());
            return Err(status);
        }
        if req.method == "meta" {
            let mut answer = Response::new(InvokeResponse {
                data: Some(prost_types::Any {
                    type_url: "type.googleapis.com/google.protobuf.StringValue".into(),
                    value: b"\n\x02ok".to_vec(),
                }),
                content_type: String::new(),
            });
            answer
                .metadata_mut()
                .insert("x-answer", "yes".parse().unwrap());
            // What only sidecars may say to each other: never taken from an app.
            for forged in ["dapr-internal-refused", "dapr-internal-grpc-status"] {
                answer.metadata_mut().insert(forged, "1".parse().unwrap());
            }
            answer.metadata_mut().insert_bin(
                "x-answer-bin",
                tonic::metadata::BinaryMetadataValue::from_bytes(b"\x01ok"),
            );
            let mut trailers = tonic::metadata::MetadataMap::new();
            trailers.insert("x-after", "done".parse().unwrap());
            trailers.insert_bin(
                "x-after-bin",
                tonic::metadata::BinaryMetadataValue::from_bytes(b"\x03"),
            );
            answer
                .extensions_mut()
                .insert(Trailers(trailers.into_headers()));
            return Ok(answer);
        }
        if req.method == "odd" {
            use prost::Message as _;
            let status = dapr::google::rpc::Status {
                code: tonic::Code::Internal as i32,
                message: "odd".into(),
                details: vec![prost_types::Any {
                    type_url: "type.googleapis.com/echo.Private".into(),
                    value: vec![8, 1],
                }],
            };
            return Err(Status::with_details(
                tonic::Code::Internal,
                "odd",
                status.encode_to_vec().into(),
            ));
        }
        let ext = req.http_extension.unwrap_or_default();
        let seen = json!({
            "method": req.method,
            "verb": Verb::try_from(ext.verb).map_or("?", |v| v.as_str_name()),
            "query": ext.querystring,
            "content_type": req.content_type,
            "body": String::from_utf8_lossy(&req.data.unwrap_or_default().value),
            "caller": caller,
            "metadata": metadata,
        });
        Ok(Response::new(InvokeResponse {
            data: Some(prost_types::Any {
                type_url: String::new(),
                value: seen.to_string().into_bytes(),
            }),
            content_type: "application/json".into(),
        }))
    }

    async fn list_topic_subscriptions(
        &self,
        _: Request<()>,
    ) -> Result<Response<rt::ListTopicSubscriptionsResponse>, Status> {
        let Some(_) = self.topics else {
            return Ok(Response::new(Default::default()));
        };
        let topic = |topic: &str, dead_letter: &str| rt::TopicSubscription {
            pubsub_name: "pubsub".into(),
            topic: topic.into(),
            dead_letter_topic: dead_letter.into(),
            ..Default::default()
        };
        Ok(Response::new(rt::ListTopicSubscriptionsResponse {
            subscriptions: vec![topic("orders", "dead"), topic("dead", "")],
        }))
    }

    async fn on_topic_event(
        &self,
        request: Request<rt::TopicEventRequest>,
    ) -> Result<Response<rt::TopicEventResponse>, Status> {
        use rt::topic_event_response::TopicEventResponseStatus as Answer;
        let Some(topics) = &self.topics else {
            return Err(Status::unimplemented("no topics"));
        };
        let event = request.into_inner();
        let data = String::from_utf8_lossy(&event.data).into_owned();
        let offers = {
            let mut seen = topics.lock().unwrap();
            seen.push((event.topic.clone(), data.clone()));
            seen.iter()
                .filter(|(t, d)| (t, d) == (&event.topic, &data))
                .count()
        };
        let answer = match (event.topic.as_str(), data.as_str()) {
            ("orders", "retry") => Answer::Retry,
            ("orders", "unimplemented") => return Err(Status::unimplemented("not this one")),
            ("orders", "fail") if offers == 1 => return Err(Status::internal("not yet")),
            _ => Answer::Success,
        };
        Ok(Response::new(rt::TopicEventResponse {
            status: answer as i32,
        }))
    }

    async fn list_input_bindings(
        &self,
        _: Request<()>,
    ) -> Result<Response<rt::ListInputBindingsResponse>, Status> {
        Ok(Response::new(Default::default()))
    }

    async fn on_binding_event(
        &self,
        _: Request<rt::BindingEventRequest>,
    ) -> Result<Response<rt::BindingEventResponse>, Status> {
        Err(Status::unimplemented("no bindings"))
    }

    async fn on_bulk_topic_event(
        &self,
        _: Request<rt::TopicEventBulkRequest>,
    ) -> Result<Response<rt::TopicEventBulkResponse>, Status> {
        Err(Status::unimplemented("no topics"))
    }

    async fn on_job_event(
        &self,
        _: Request<rt::JobEventRequest>,
    ) -> Result<Response<rt::JobEventResponse>, Status> {
        Err(Status::unimplemented("no jobs"))
    }
}

/// The echo app behind its sidecar (`grpcapp`, `--app-protocol grpc`).
async fn grpc_callee(registry: &TempDir, components: &ComponentsDir) -> testkit::SidecarProcess {
    SidecarBuilder::new(BIN, "grpcapp", registry.path())
        .resources(components.path())
        .app_port(start_grpc_app().await)
        .flag("--app-protocol", "grpc")
        .spawn()
        .await
        .unwrap()
}

/// Serves the echo app on a free port (in this process); returns the port.
async fn start_grpc_app() -> u16 {
    start_grpc_app_with(EchoApp::default(), None).await
}

/// Serves `echo`, with `AppCallbackHealthCheck` answering as `healthy` says when given.
async fn start_grpc_app_with(echo: EchoApp, healthy: Option<Arc<AtomicBool>>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(async move {
        // tonic gives a handler no other way to send trailers with an answer; the layer is
        // the sidecar's own, so a fault in it shows here as trailers that never arrive.
        let app = tonic::transport::Server::builder()
            .layer(TrailersLayer)
            .add_service(AppCallbackServer::new(echo));
        let _ = match healthy {
            Some(h) => {
                app.add_service(AppCallbackHealthCheckServer::new(Health(h)))
                    .serve_with_incoming(incoming)
                    .await
            }
            None => app.serve_with_incoming(incoming).await,
        };
    });
    port
}

/// `AppCallbackHealthCheck`: OK while the flag is up, else Unavailable.
struct Health(Arc<AtomicBool>);

#[tonic::async_trait]
impl AppCallbackHealthCheck for Health {
    async fn health_check(
        &self,
        _: Request<()>,
    ) -> Result<Response<rt::HealthCheckResponse>, Status> {
        if self.0.load(Ordering::SeqCst) {
            Ok(Response::new(rt::HealthCheckResponse {}))
        } else {
            Err(Status::unavailable("not now"))
        }
    }
}

/// With health checks, a gRPC app is probed through `AppCallbackHealthCheck`: called while
/// it answers OK, refused once it does not, and one that does not serve the health service
/// at all is never healthy (as with daprd).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_app_is_probed_through_its_health_check_service() {
    let registry = TempDir::new("registry");
    let components = ComponentsDir::memory();
    let healthy = Arc::new(AtomicBool::new(true));
    let probed = |id: &str, port: u16| {
        SidecarBuilder::new(BIN, id, registry.path())
            .resources(components.path())
            .app_port(port)
            .flag("--app-protocol", "grpc")
            .arg("--enable-app-health-check")
            .flag("--app-health-probe-interval", 1)
            .flag("--app-health-threshold", 1)
            .spawn()
    };
    let with_health = probed(
        "withhealth",
        start_grpc_app_with(EchoApp::default(), Some(healthy.clone())).await,
    )
    .await
    .unwrap();
    let without = probed("without", start_grpc_app().await).await.unwrap();
    let http = reqwest::Client::new();
    let call = |s: &testkit::SidecarProcess, id: &str| {
        http.post(format!("{}/v1.0/invoke/{id}/method/echo", s.http_url()))
            .send()
    };
    let answers = |status: u16| {
        move |r: Result<reqwest::Response, reqwest::Error>| {
            r.ok().filter(|r| r.status() == status).map(|_| ())
        }
    };
    testkit::wait_until("the app found healthy", Duration::from_secs(10), || {
        let r = call(&with_health, "withhealth");
        async move { answers(200)(r.await) }
    })
    .await
    .unwrap();
    healthy.store(false, Ordering::SeqCst);
    testkit::wait_until("the app found unhealthy", Duration::from_secs(10), || {
        let r = call(&with_health, "withhealth");
        async move { answers(500)(r.await) }
    })
    .await
    .unwrap();
    // Probed several times by now, never healthy: Unimplemented is a failed probe.
    let r = call(&without, "without").await.unwrap();
    assert_eq!(r.status(), 500);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .ends_with("app is not in a healthy state"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_app_is_invoked_by_http_and_grpc_callers() {
    let registry = TempDir::new("registry");
    let components = ComponentsDir::memory();
    let _callee = grpc_callee(&registry, &components).await;
    // A client-only app: any protocol Dapr knows, no port.
    let caller = SidecarBuilder::new(BIN, "caller", registry.path())
        .resources(components.path())
        .flag("--app-protocol", "grpc")
        .spawn()
        .await
        .unwrap();

    let http = reqwest::Client::new();
    let r = http
        .put(format!(
            "{}/v1.0/invoke/grpcapp/method/orders/7?x=1",
            caller.http_url()
        ))
        .json(&json!({"n": 1}))
        .header("accept", "application/json")
        .header("x-custom", "kept")
        // A `-bin` header becomes binary metadata of its text, undecoded (daprd tests the
        // suffix on Go's canonical `X-Thing-Bin`, which never matches).
        .header("x-thing-bin", "AWhp")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let mut seen: Value = r.json().await.unwrap();
    let metadata = seen["metadata"].take();
    seen.as_object_mut().unwrap().remove("metadata");
    assert_eq!(
        seen,
        json!({"method": "orders/7", "verb": "PUT", "query": "x=1",
               "content_type": "application/json", "body": "{\"n\":1}", "caller": "caller"})
    );
    // An HTTP caller's standard headers get daprd's `dapr-` prefix; others go as they are.
    assert_eq!(metadata["dapr-accept"], "application/json", "{metadata}");
    assert_eq!(
        metadata["dapr-content-type"], "application/json",
        "{metadata}"
    );
    assert_eq!(metadata["dapr-content-length"], "7", "{metadata}");
    assert_eq!(metadata["x-custom"], "kept", "{metadata}");
    assert_eq!(metadata["x-thing-bin"], "AWhp", "{metadata}");
    for unprefixed in ["accept", "content-length", "host", "dapr-host"] {
        assert!(
            metadata.get(unprefixed).is_none(),
            "{unprefixed}: {metadata}"
        );
    }

    // The app's error status, as daprd hands it to an HTTP caller.
    let r = http
        .post(format!(
            "{}/v1.0/invoke/grpcapp/method/missing",
            caller.http_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(
        r.headers().get("dapr-internal-grpc-status").is_none(),
        "the sidecars' own header stays between them"
    );
    let status: Value = r.json().await.unwrap();
    assert_eq!(
        status,
        json!({"code": 5, "message": "no such method", "details": [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "NO_SUCH_METHOD",
             "domain": "echo.test", "metadata": {"method": "missing"}},
            {"@type": "type.googleapis.com/google.rpc.ResourceInfo", "resourceType": "method",
             "resourceName": "missing"},
        ]}),
        "protojson of the app's status, empty fields left out"
    );
    // A detail daprd cannot write as JSON (its type is the app's own).
    let r = http
        .post(format!(
            "{}/v1.0/invoke/grpcapp/method/odd",
            caller.http_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    let error: Value = r.json().await.unwrap();
    assert_eq!(error["errorCode"], "ERR_MALFORMED_RESPONSE", "{error}");

    // A gRPC caller.
    let mut client = DaprClient::connect(caller.grpc_url()).await.unwrap();
    let mut request = tonic::Request::new(rt::InvokeServiceRequest {
        id: "grpcapp".into(),
        message: Some(InvokeRequest {
            method: "hello".into(),
            data: Some(prost_types::Any {
                type_url: String::new(),
                value: b"hi".to_vec(),
            }),
            content_type: "text/plain".into(),
            http_extension: Some(HttpExtension {
                verb: Verb::Post as i32,
                querystring: String::new(),
            }),
        }),
    });
    request
        .metadata_mut()
        .insert("accept", "text/plain".parse().unwrap());
    request.metadata_mut().insert_bin(
        "x-thing-bin",
        tonic::metadata::BinaryMetadataValue::from_bytes(b"\x02ho"),
    );
    let answer = client.invoke_service(request).await.unwrap().into_inner();
    let seen: Value = serde_json::from_slice(&answer.data.unwrap().value).unwrap();
    assert_eq!(seen["method"], "hello");
    assert_eq!(seen["body"], "hi");
    assert_eq!(seen["content_type"], "text/plain");
    assert_eq!(seen["caller"], "caller");
    // A gRPC caller's metadata goes as it is, binary values too.
    let metadata = &seen["metadata"];
    assert_eq!(metadata["accept"], "text/plain", "{metadata}");
    assert_eq!(metadata["x-thing-bin"], "\u{2}ho", "{metadata}");
    assert!(metadata.get("dapr-accept").is_none(), "{metadata}");
    assert!(
        metadata.get("dapr-internal-grpc-caller").is_none(),
        "{metadata}"
    );

    // A gRPC caller gets the app's error status itself, code and message.
    let err = client
        .invoke_service(rt::InvokeServiceRequest {
            id: "grpcapp".into(),
            message: Some(InvokeRequest {
                method: "missing".into(),
                data: None,
                content_type: String::new(),
                http_extension: None,
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (tonic::Code::NotFound, "no such method")
    );
    {
        use prost::Message as _;
        let details = dapr::google::rpc::Status::decode(err.details()).unwrap();
        assert_eq!(
            details,
            missing_status(),
            "the app's details, as it sent them"
        );
    }
    // Details of the app's own types too: a gRPC caller is given the status untouched.
    let err = client
        .invoke_service(rt::InvokeServiceRequest {
            id: "grpcapp".into(),
            message: Some(InvokeRequest {
                method: "odd".into(),
                data: None,
                content_type: String::new(),
                http_extension: None,
            }),
        })
        .await
        .unwrap_err();
    assert_eq!((err.code(), err.message()), (tonic::Code::Internal, "odd"));
    {
        use prost::Message as _;
        let details = dapr::google::rpc::Status::decode(err.details()).unwrap();
        assert_eq!(
            details.details[0].type_url,
            "type.googleapis.com/echo.Private"
        );
    }
}

/// One `InvokeService` call, its header metadata apart from its trailers (the generated
/// client merges them).
async fn invoke_apart(
    url: String,
    request: rt::InvokeServiceRequest,
) -> Result<
    (
        tonic::metadata::MetadataMap,
        InvokeResponse,
        tonic::metadata::MetadataMap,
    ),
    Status,
> {
    let channel = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<rt::InvokeServiceRequest, InvokeResponse>::default();
    let path = http::uri::PathAndQuery::from_static("/dapr.proto.runtime.v1.Dapr/InvokeService");
    let (headers, mut body, _) = grpc
        .server_streaming(Request::new(request), path, codec)
        .await?
        .into_parts();
    let message = body.message().await?.expect("a message");
    let trailers = body.trailers().await?.unwrap_or_default();
    Ok((headers, message, trailers))
}

fn call(method: &str) -> rt::InvokeServiceRequest {
    rt::InvokeServiceRequest {
        id: "grpcapp".into(),
        message: Some(InvokeRequest {
            method: method.into(),
            data: None,
            content_type: String::new(),
            http_extension: None,
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_apps_metadata_and_type_url_reach_its_callers_as_daprd_passes_them() {
    let registry = TempDir::new("registry");
    let components = ComponentsDir::memory();
    let callee = grpc_callee(&registry, &components).await;
    let caller = SidecarBuilder::new(BIN, "caller", registry.path())
        .resources(components.path())
        .spawn()
        .await
        .unwrap();

    // Through one sidecar (the app's own) and through two.
    for sidecar in [&callee, &caller] {
        // An HTTP caller: the app's text header metadata as headers; no binary metadata,
        // no trailers, nothing the sidecars say between themselves.
        let http = reqwest::Client::new();
        let r = http
            .post(format!(
                "{}/v1.0/invoke/grpcapp/method/meta",
                sidecar.http_url()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let headers = r.headers().clone();
        assert_eq!(headers["x-answer"], "yes", "{headers:?}");
        for absent in [
            "x-answer-bin",
            "x-after",
            "x-after-bin",
            "dapr-internal-grpc-answer",
            "dapr-internal-refused",
            "dapr-internal-grpc-status",
            "dapr-http-status",
        ] {
            assert!(headers.get(absent).is_none(), "{absent}: {headers:?}");
        }
        assert_eq!(r.bytes().await.unwrap(), &b"\n\x02ok"[..]);

        // A gRPC caller: header metadata as headers, trailers as trailers, binary values as
        // the app sent them, and the data's type URL.
        let (headers, answer, trailers) = invoke_apart(sidecar.grpc_url(), call("meta"))
            .await
            .unwrap();
        assert_eq!(headers.get("x-answer").unwrap(), "yes", "{headers:?}");
        assert_eq!(
            headers.get_bin("x-answer-bin").unwrap().to_bytes().unwrap(),
            &b"\x01ok"[..]
        );
        assert!(headers.get("x-after").is_none(), "{headers:?}");
        assert!(headers.get("dapr-http-status").is_none(), "{headers:?}");
        assert_eq!(trailers.get("x-after").unwrap(), "done", "{trailers:?}");
        assert_eq!(
            trailers.get_bin("x-after-bin").unwrap().to_bytes().unwrap(),
            &b"\x03"[..]
        );
        let data = answer.data.unwrap();
        assert_eq!(
            data.type_url,
            "type.googleapis.com/google.protobuf.StringValue"
        );
        assert_eq!(data.value, b"\n\x02ok");

        // An error's metadata goes with the app's status to a gRPC caller.
        let err = invoke_apart(sidecar.grpc_url(), call("missing"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        assert_eq!(err.metadata().get("x-why").unwrap(), "gone", "{err:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_port_with_a_protocol_this_sidecar_cannot_call_is_refused() {
    let registry = TempDir::new("registry");
    let started = SidecarBuilder::new(BIN, "secure", registry.path())
        .app_port(testkit::free_port())
        .flag("--app-protocol", "https")
        .spawn()
        .await;
    assert!(started.is_err());
}

/// A gRPC app's answers decide what becomes of its events: `RETRY` is offered again until
/// the attempts run out, then dead-lettered, and so is an error status (this sidecar's own
/// retries: daprd without a Resiliency policy offers once); an `Unimplemented` status
/// drops the event without a dead letter, as daprd's gRPC delivery does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_apps_answers_decide_what_becomes_of_its_events() {
    const ATTEMPTS: usize = sidecar::pubsub::deliver::ATTEMPTS as usize;
    let offers: Offers = Arc::default();
    let echo = EchoApp {
        topics: Some(offers.clone()),
    };
    let port = start_grpc_app_with(echo, None).await;
    let registry = TempDir::new("registry");
    let components = ComponentsDir::raw(&[(
        "pubsub.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: pubsub.in-memory\n  version: v1\n",
    )]);
    let sidecar = SidecarBuilder::new(BIN, "topics", registry.path())
        .resources(components.path())
        .app_port(port)
        .flag("--app-protocol", "grpc")
        .spawn()
        .await
        .unwrap();
    sidecar.subscribed(Duration::from_secs(10)).await.unwrap();
    // One at a time, in order: each is finished with before the next is offered.
    for data in ["unimplemented", "retry", "fail", "ok"] {
        let status = sidecar.publish("pubsub", "orders", "text/plain", data);
        assert_eq!(status.await.unwrap(), 204);
    }
    let all = testkit::wait_until(
        "the last event and a dead letter",
        Duration::from_secs(30),
        || async {
            let seen = offers.lock().unwrap().clone();
            (seen.iter().any(|o| o.1 == "ok") && seen.iter().any(|o| o.0 == "dead")).then_some(seen)
        },
    )
    .await
    .unwrap();
    let count = |topic: &str, data: &str| {
        all.iter()
            .filter(|o| (o.0.as_str(), o.1.as_str()) == (topic, data))
            .count()
    };
    assert_eq!(count("orders", "unimplemented"), 1, "{all:?}");
    assert_eq!(count("orders", "retry"), ATTEMPTS, "{all:?}");
    assert_eq!(count("orders", "fail"), 2, "{all:?}");
    assert_eq!(count("orders", "ok"), 1, "{all:?}");
    // The dead letter of `retry` is the first on `dead`: one of `unimplemented`, published
    // before it, would have come first.
    let dead: Vec<&str> = all
        .iter()
        .filter(|o| o.0 == "dead")
        .map(|o| o.1.as_str())
        .collect();
    assert_eq!(dead, ["retry"], "{all:?}");
}
