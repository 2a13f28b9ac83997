//! Streaming subscriptions (`SubscribeTopicEventsAlpha1`) on `pubsub.redis`, spoken with
//! the `dapr` crate's generated client: the stream opens with an initial response, carries
//! the topic's events, takes the app's answers by event id, is listed as `STREAMING` while
//! it lasts; an event left unanswered when a stream closes is offered again on the next
//! stream of the same app id, one answered `RETRY` again on the same stream. A stream
//! that does not open with its initial request, or names a pub/sub that is not loaded,
//! ends with daprd's errors.

use std::time::Duration;

use crate::common::redis_pubsub;
use dapr::dapr::proto::runtime::v1::dapr_client::DaprClient;
use dapr::dapr::proto::runtime::v1::subscribe_topic_events_request_alpha1::SubscribeTopicEventsRequestType as Req;
use dapr::dapr::proto::runtime::v1::subscribe_topic_events_response_alpha1::SubscribeTopicEventsResponseType as Resp;
use dapr::dapr::proto::runtime::v1::topic_event_response::TopicEventResponseStatus;
use dapr::dapr::proto::runtime::v1::{
    SubscribeTopicEventsRequestAlpha1, SubscribeTopicEventsRequestInitialAlpha1,
    SubscribeTopicEventsRequestProcessedAlpha1, SubscribeTopicEventsResponseAlpha1,
    TopicEventRequest, TopicEventResponse,
};
use testkit::{ComponentsDir, RedisServer, SidecarBuilder, SidecarProcess, TempDir};
use tokio::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_sidecar");

/// One stream from the app's side: what it sends, what it receives.
struct Stream {
    send: mpsc::Sender<SubscribeTopicEventsRequestAlpha1>,
    events: tonic::Streaming<SubscribeTopicEventsResponseAlpha1>,
}

/// A stream just opened: where the app's messages go, and the sidecar's answers.
type Opened = (
    mpsc::Sender<SubscribeTopicEventsRequestAlpha1>,
    tonic::Streaming<SubscribeTopicEventsResponseAlpha1>,
);

/// Opens a stream whose first message is `first`; the call's answer (its headers), or
/// the status it ended with at once.
async fn open(sidecar: &SidecarProcess, first: Req) -> Result<Opened, tonic::Status> {
    let mut client = DaprClient::connect(sidecar.grpc_url()).await.unwrap();
    let (send, rx) = mpsc::channel(16);
    send.send(SubscribeTopicEventsRequestAlpha1 {
        subscribe_topic_events_request_type: Some(first),
    })
    .await
    .unwrap();
    let outgoing =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let events = client
        .subscribe_topic_events_alpha1(outgoing)
        .await?
        .into_inner();
    Ok((send, events))
}

impl Stream {
    /// A stream subscribed to `topic` of `pubsub`, past its initial response.
    async fn subscribe(sidecar: &SidecarProcess, topic: &str) -> Stream {
        let (send, mut events) = open(
            sidecar,
            Req::InitialRequest(SubscribeTopicEventsRequestInitialAlpha1 {
                pubsub_name: "pubsub".into(),
                topic: topic.into(),
                metadata: Default::default(),
                dead_letter_topic: None,
            }),
        )
        .await
        .unwrap();
        let first = events.message().await.unwrap().unwrap();
        assert!(
            matches!(
                first.subscribe_topic_events_response_type,
                Some(Resp::InitialResponse(_))
            ),
            "{first:?}"
        );
        Stream { send, events }
    }

    /// The next event, waiting at most `limit`.
    async fn next_event(&mut self, limit: Duration) -> TopicEventRequest {
        let m = tokio::time::timeout(limit, self.events.message())
            .await
            .expect("an event in time")
            .unwrap()
            .expect("the stream is open");
        match m.subscribe_topic_events_response_type {
            Some(Resp::EventMessage(e)) => e,
            other => panic!("not an event: {other:?}"),
        }
    }

    async fn answer(&self, event: &TopicEventRequest, status: TopicEventResponseStatus) {
        self.send
            .send(SubscribeTopicEventsRequestAlpha1 {
                subscribe_topic_events_request_type: Some(Req::EventProcessed(
                    SubscribeTopicEventsRequestProcessedAlpha1 {
                        id: event.id.clone(),
                        status: Some(TopicEventResponse {
                            status: status as i32,
                        }),
                    },
                )),
            })
            .await
            .unwrap();
    }
}

fn data(event: &TopicEventRequest) -> String {
    String::from_utf8(event.data.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_takes_a_topic_and_what_it_left_unanswered_comes_again() {
    let redis = RedisServer::start().await.unwrap();
    let pubsub = redis_pubsub("pubsub", redis.port);
    let components = ComponentsDir::raw(&[("pubsub.yaml", &pubsub)]);
    let registry = TempDir::new("registry");
    // An app that serves nothing: it only opens streams.
    let sidecar = SidecarBuilder::new(BIN, "listener", registry.path())
        .resources(components.path())
        .spawn()
        .await
        .unwrap();
    let publish = async |text: &'static str| {
        let status = sidecar.publish("pubsub", "orders", "text/plain", text);
        assert_eq!(status.await.unwrap(), 204);
    };

    let mut first = Stream::subscribe(&sidecar, "orders").await;
    let subs = sidecar.subscriptions().await.unwrap();
    assert_eq!(subs.len(), 1, "{subs:?}");
    assert_eq!(
        (&subs[0]["pubsubname"], &subs[0]["topic"], &subs[0]["type"]),
        (&"pubsub".into(), &"orders".into(), &"STREAMING".into())
    );
    assert_eq!(subs[0]["rules"], serde_json::json!([{"path": "/"}]));

    publish("one").await;
    let one = first.next_event(Duration::from_secs(10)).await;
    assert_eq!(
        (
            data(&one).as_str(),
            one.topic.as_str(),
            one.pubsub_name.as_str()
        ),
        ("one", "orders", "pubsub")
    );
    assert_eq!(
        (
            one.data_content_type.as_str(),
            one.source.as_str(),
            one.path.as_str()
        ),
        ("text/plain", "listener", "/")
    );
    first.answer(&one, TopicEventResponseStatus::Success).await;

    // Received, never answered: the stream closes with it unfinished.
    publish("two").await;
    let two = first.next_event(Duration::from_secs(10)).await;
    assert_eq!(data(&two), "two");
    drop(first);
    testkit::wait_until("the stream's end", Duration::from_secs(10), || async {
        sidecar.subscriptions().await.ok()?.is_empty().then_some(())
    })
    .await
    .unwrap();

    // The next stream of the app id gets it once it has been idle for processingTimeout;
    // not the one answered. A RETRY offers it again on the same stream.
    let mut second = Stream::subscribe(&sidecar, "orders").await;
    let again = second.next_event(Duration::from_secs(15)).await;
    assert_eq!((data(&again), &again.id), ("two".to_string(), &two.id));
    second.answer(&again, TopicEventResponseStatus::Retry).await;
    let retried = second.next_event(Duration::from_secs(10)).await;
    assert_eq!(retried.id, two.id);
    second
        .answer(&retried, TopicEventResponseStatus::Success)
        .await;
    testkit::wait_until("no pending entries", Duration::from_secs(10), || async {
        let pending = redis
            .command(&["XPENDING", "orders", "listener"])
            .await
            .ok()?;
        pending.starts_with("*4\r\n:0\r\n").then_some(())
    })
    .await
    .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), second.events.message())
            .await
            .is_err(),
        "nothing more is offered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_does_not_open_as_daprs_do_is_refused() {
    let components = ComponentsDir::memory();
    let registry = TempDir::new("registry");
    let sidecar = SidecarBuilder::new(BIN, "listener", registry.path())
        .resources(components.path())
        .spawn()
        .await
        .unwrap();
    let ended = |r: Result<Opened, tonic::Status>| async move {
        match r {
            Err(s) => s,
            Ok((send, mut events)) => {
                let _open = send;
                match events.message().await {
                    Err(s) => s,
                    Ok(m) => panic!("the stream went on: {m:?}"),
                }
            }
        }
    };
    let s = ended(
        open(
            &sidecar,
            Req::EventProcessed(SubscribeTopicEventsRequestProcessedAlpha1::default()),
        )
        .await,
    )
    .await;
    assert_eq!(
        (s.code(), s.message()),
        (tonic::Code::Unknown, "initial request is required")
    );
    let initial = |pubsub: &str, topic: &str| {
        Req::InitialRequest(SubscribeTopicEventsRequestInitialAlpha1 {
            pubsub_name: pubsub.into(),
            topic: topic.into(),
            metadata: Default::default(),
            dead_letter_topic: None,
        })
    };
    let s = ended(open(&sidecar, initial("pubsub", "")).await).await;
    assert_eq!(
        (s.code(), s.message()),
        (tonic::Code::Unknown, "topic is required")
    );
    let s = ended(open(&sidecar, initial("nope", "orders")).await).await;
    assert_eq!(
        (s.code(), s.message()),
        (tonic::Code::InvalidArgument, "pubsub nope is not found")
    );
    assert!(sidecar.subscriptions().await.unwrap().is_empty());
}
