//! A Dapr app written against the Rust `dapr` crate alone, as a Rust user writes one, for the
//! test that runs it with `sidecar run` in place of `dapr run` (`tests/it/dapr_crate.rs`).
//! Nothing of this workspace is used: what works here works for any app on the crate.
//!
//! `dapr_crate_app serve` (started by `sidecar run --app-protocol grpc`): the crate's
//! `AppCallbackService` on `APP_PORT` subscribed to topic `orders` of pub/sub `pubsub`, each
//! event appended to `SEEN_FILE` as a JSON line, one whose data is `drop me` answered DROP;
//! method `echo` answers with what it was sent and by whom (the crate's service leaves
//! `OnInvoke` to the app).
//!
//! `dapr_crate_app check` (with `DAPR_GRPC_PORT`, as `sidecar run` sets it for its app): the
//! crate's `Client` reads the metadata, saves and reads state with ETags, publishes, and
//! invokes app `APP` through its sidecar; its generated client runs a transaction whose upsert
//! the store's outbox publishes, takes and frees a lock, and reads the details of an illegal
//! key's error. Prints `all checks passed`, or fails with what differed.

use std::collections::HashMap;
use std::io::Write as _;

use dapr::appcallback::{
    AppCallbackService, Handler, HandlerMethod, InvokeRequest, InvokeResponse, TopicEventRequest,
    TopicEventResponse,
};
use dapr::dapr::proto::common::v1::{Etag, StateItem, StateOptions, state_options};
use dapr::dapr::proto::runtime::v1 as rt;
use dapr::dapr::proto::runtime::v1::app_callback_server::{AppCallback, AppCallbackServer};
use dapr::dapr::proto::runtime::v1::dapr_client::DaprClient;
use dapr::dapr::proto::runtime::v1::topic_event_response::TopicEventResponseStatus;
use tonic::{Request, Response, Status};

type Checked = Result<(), Box<dyn std::error::Error>>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Checked {
    match std::env::args().nth(1).as_deref() {
        Some("serve") | None => serve().await,
        Some("check") => {
            check().await?;
            println!("all checks passed");
            Ok(())
        }
        Some(other) => Err(format!("unknown mode {other:?}: serve or check").into()),
    }
}

/// The app: the crate's service for topics, the app's own `OnInvoke`.
struct App {
    topics: AppCallbackService,
}

async fn serve() -> Checked {
    let port: u16 = std::env::var("APP_PORT")?.parse()?;
    let mut topics = AppCallbackService::new();
    topics.add_handler(Handler {
        pub_sub_name: "pubsub".into(),
        topic: "orders".into(),
        handler: Box::new(Keep),
    });
    tonic::transport::Server::builder()
        .add_service(AppCallbackServer::new(App { topics }))
        .serve(([127, 0, 0, 1], port).into())
        .await?;
    Ok(())
}

/// Appends each event of `orders` to `SEEN_FILE`; drops `drop me`.
struct Keep;

#[tonic::async_trait]
impl HandlerMethod for Keep {
    async fn handler(
        &self,
        event: TopicEventRequest,
    ) -> Result<Response<TopicEventResponse>, Status> {
        let line = serde_json::json!({
            "topic": event.topic,
            "id": event.id,
            "type": event.r#type,
            "source": event.source,
            "content_type": event.data_content_type,
            "data": String::from_utf8_lossy(&event.data),
        });
        let path = std::env::var("SEEN_FILE").map_err(|e| Status::internal(e.to_string()))?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Status::internal(e.to_string()))?;
        // One write for the whole line: a reader never sees half of it.
        file.write_all(format!("{line}\n").as_bytes())
            .map_err(|e| Status::internal(e.to_string()))?;
        let status = if event.data == b"drop me" {
            TopicEventResponseStatus::Drop
        } else {
            TopicEventResponseStatus::Success
        };
        Ok(Response::new(TopicEventResponse {
            status: status as i32,
        }))
    }
}

#[tonic::async_trait]
impl AppCallback for App {
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
        let req = request.into_inner();
        if req.method != "echo" {
            return Err(Status::unimplemented(format!("no method {}", req.method)));
        }
        let seen = serde_json::json!({
            "body": String::from_utf8_lossy(&req.data.unwrap_or_default().value),
            "content_type": req.content_type,
            "caller": caller,
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
        request: Request<()>,
    ) -> Result<Response<rt::ListTopicSubscriptionsResponse>, Status> {
        self.topics.list_topic_subscriptions(request).await
    }

    async fn on_topic_event(
        &self,
        request: Request<TopicEventRequest>,
    ) -> Result<Response<TopicEventResponse>, Status> {
        self.topics.on_topic_event(request).await
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
        request: Request<rt::TopicEventBulkRequest>,
    ) -> Result<Response<rt::TopicEventBulkResponse>, Status> {
        self.topics.on_bulk_topic_event(request).await
    }

    async fn on_job_event(
        &self,
        request: Request<rt::JobEventRequest>,
    ) -> Result<Response<rt::JobEventResponse>, Status> {
        self.topics.on_job_event(request).await
    }
}

fn ensure(ok: bool, what: impl std::fmt::Display) -> Checked {
    if ok {
        Ok(())
    } else {
        Err(what.to_string().into())
    }
}

/// `google.rpc.ErrorInfo`, which the crate does not generate: an app decodes it itself.
#[derive(Clone, PartialEq, prost::Message)]
struct ErrorInfo {
    #[prost(string, tag = "1")]
    reason: String,
    #[prost(string, tag = "2")]
    domain: String,
    #[prost(map = "string, string", tag = "3")]
    metadata: HashMap<String, String>,
}

async fn check() -> Checked {
    let app = std::env::var("APP")?;
    let mut client = dapr::Client::new().await?;

    let metadata = client.get_metadata().await?;
    let mut components: Vec<_> = metadata
        .registered_components
        .iter()
        .map(|c| format!("{}={}", c.name, c.r#type))
        .collect();
    components.sort();
    ensure(
        components
            == [
                "lockstore=lock.in-memory",
                "pubsub=pubsub.in-memory",
                "statestore=state.in-memory",
            ],
        format!("components {components:?}"),
    )?;

    // State with ETags: a write with the current ETag wins, one with an old ETag fails.
    client
        .save_state("statestore", "room-1", b"free".to_vec(), None, None, None)
        .await?;
    let first = client.get_state("statestore", "room-1", None).await?;
    ensure(first.data == b"free", "room-1 as saved")?;
    let first_write = Some(StateOptions {
        concurrency: state_options::StateConcurrency::ConcurrencyFirstWrite as i32,
        ..Default::default()
    });
    let etag = |value: &str| {
        Some(Etag {
            value: value.to_string(),
        })
    };
    client
        .save_state(
            "statestore",
            "room-1",
            b"taken".to_vec(),
            etag(&first.etag),
            None,
            first_write,
        )
        .await?;
    let stale = client
        .save_state(
            "statestore",
            "room-1",
            b"again".to_vec(),
            etag(&first.etag),
            None,
            first_write,
        )
        .await;
    ensure(stale.is_err(), "a write with an old ETag was taken")?;
    let now = client.get_state("statestore", "room-1", None).await?;
    ensure(
        now.data == b"taken" && now.etag != first.etag,
        "room-1 after the writes",
    )?;

    client
        .publish_event(
            "pubsub",
            "orders",
            "application/json",
            br#"{"order":7}"#.to_vec(),
            None,
        )
        .await?;
    client
        .publish_event("pubsub", "orders", "text/plain", b"drop me".to_vec(), None)
        .await?;

    let echoed = client
        .invoke_service(
            app.as_str(),
            "echo",
            Some(prost_types::Any {
                type_url: String::new(),
                value: b"hello".to_vec(),
            }),
        )
        .await?;
    let seen: serde_json::Value = serde_json::from_slice(&echoed.data.unwrap_or_default().value)?;
    ensure(
        seen["body"] == "hello" && seen["caller"] == app.as_str(),
        format!("echo answered {seen}"),
    )?;

    // What the crate's Client does not wrap, its generated client does.
    let port = std::env::var("DAPR_GRPC_PORT")?;
    let mut raw = DaprClient::connect(format!("http://127.0.0.1:{port}")).await?;
    raw.execute_state_transaction(rt::ExecuteStateTransactionRequest {
        store_name: "statestore".into(),
        operations: vec![rt::TransactionalStateOperation {
            operation_type: "upsert".into(),
            request: Some(StateItem {
                key: "order-9".into(),
                value: br#"{"order":9}"#.to_vec(),
                metadata: HashMap::from([("contentType".into(), "application/json".into())]),
                ..Default::default()
            }),
        }],
        metadata: HashMap::new(),
    })
    .await?;

    let lock = |owner: &str| rt::TryLockRequest {
        store_name: "lockstore".into(),
        resource_id: "room-1".into(),
        lock_owner: owner.into(),
        expiry_in_seconds: 30,
    };
    let unlock = |owner: &str| rt::UnlockRequest {
        store_name: "lockstore".into(),
        resource_id: "room-1".into(),
        lock_owner: owner.into(),
    };
    ensure(
        raw.try_lock_alpha1(lock("a")).await?.into_inner().success,
        "lock for a",
    )?;
    ensure(
        !raw.try_lock_alpha1(lock("b")).await?.into_inner().success,
        "lock also for b",
    )?;
    let status = raw.unlock_alpha1(unlock("b")).await?.into_inner().status;
    ensure(
        status == rt::unlock_response::Status::LockBelongsToOthers as i32,
        format!("unlock by b: {status}"),
    )?;
    let status = raw.unlock_alpha1(unlock("a")).await?.into_inner().status;
    ensure(
        status == rt::unlock_response::Status::Success as i32,
        "unlock by a",
    )?;

    // An illegal key: InvalidArgument, its reason in an ErrorInfo among the details.
    let err = raw
        .get_state(rt::GetStateRequest {
            store_name: "statestore".into(),
            key: "a||b".into(),
            ..Default::default()
        })
        .await
        .expect_err("an illegal key was read");
    ensure(
        err.code() == tonic::Code::InvalidArgument,
        format!("illegal key: {:?}", err.code()),
    )?;
    let details = <dapr::google::rpc::Status as prost::Message>::decode(err.details())?;
    let info = details
        .details
        .iter()
        .find(|d| d.type_url == "type.googleapis.com/google.rpc.ErrorInfo")
        .ok_or("no ErrorInfo")?;
    let info = <ErrorInfo as prost::Message>::decode(info.value.as_slice())?;
    ensure(
        info.reason == "DAPR_STATE_ILLEGAL_KEY" && info.domain == "dapr.io",
        format!("ErrorInfo {info:?}"),
    )?;
    Ok(())
}
