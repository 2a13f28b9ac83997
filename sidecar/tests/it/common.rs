//! Fixtures the sidecar's tests share: one `sidecar run` process on a store of each kind.

use dapr::dapr::proto::runtime::v1::dapr_client::DaprClient;
use testkit::{SidecarBuilder, SidecarProcess, StoreFixture, StoreKind, TempDir};

/// Makes a test of each `async fn name(StoreKind)` listed, once per store, in a module per
/// store: `for_each_store!([memory => Memory, redis => Redis], [a_test, another]);`.
macro_rules! for_each_store {
    ([$($module:ident => $kind:ident),* $(,)?], $tests:tt) => {
        $( for_each_store!(@module $module, $kind, $tests); )*
    };
    (@module $module:ident, $kind:ident, [$($test:ident),* $(,)?]) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(testkit::StoreKind::$kind).await;
                }
            )*
        }
    };
}
pub(crate) use for_each_store;

/// One sidecar (no app) on a fresh store of one kind.
pub struct OneSidecar {
    pub fixture: StoreFixture,
    pub sidecar: SidecarProcess,
    pub http: reqwest::Client,
    pub registry: TempDir,
}

pub async fn one_sidecar(kind: StoreKind) -> OneSidecar {
    one_sidecar_with(kind, "app", &[]).await
}

/// One sidecar for `app_id` with `env` set (e.g. `DAPR_API_TOKEN`).
pub async fn one_sidecar_with(kind: StoreKind, app_id: &str, env: &[(&str, &str)]) -> OneSidecar {
    let fixture = StoreFixture::start(kind).await.expect("store fixture");
    let registry = TempDir::new("registry");
    let mut builder = SidecarBuilder::new(env!("CARGO_BIN_EXE_sidecar"), app_id, registry.path())
        .resources(fixture.components.path());
    for (k, v) in env {
        builder = builder.env(k, v);
    }
    let sidecar = builder.spawn().await.expect("sidecar");
    OneSidecar {
        fixture,
        sidecar,
        http: reqwest::Client::new(),
        registry,
    }
}

impl OneSidecar {
    /// The sidecar's HTTP API at `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sidecar.http_url())
    }

    /// GET on the sidecar's HTTP API.
    pub async fn http_get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    /// POST of a JSON body on the sidecar's HTTP API.
    pub async fn http_post(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn grpc(&self) -> DaprClient<tonic::transport::Channel> {
        DaprClient::connect(self.sidecar.grpc_url())
            .await
            .expect("grpc connect")
    }
}

/// The status and Dapr `errorCode` of an error answer.
pub async fn error_code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap_or(serde_json::Value::Null);
    (
        status,
        body["errorCode"].as_str().unwrap_or_default().to_string(),
    )
}

/// The `ErrorInfo.reason` a gRPC status carries in `grpc-status-details-bin`, if any. The
/// `ErrorInfo` comes last, after any other detail (as daprd sends them).
pub fn error_reason(status: &tonic::Status) -> Option<String> {
    use prost::Message as _;
    let st = dapr::google::rpc::Status::decode(status.details()).ok()?;
    let any = st.details.last()?;
    assert_eq!(any.type_url, "type.googleapis.com/google.rpc.ErrorInfo");
    let info = sidecar::errors::ErrorInfo::decode(any.value.as_slice()).ok()?;
    assert_eq!(info.domain, "dapr.io");
    Some(info.reason)
}

/// The type URLs of the details a gRPC status carries, in order.
pub fn detail_types(status: &tonic::Status) -> Vec<String> {
    use prost::Message as _;
    dapr::google::rpc::Status::decode(status.details())
        .map(|st| st.details.into_iter().map(|d| d.type_url).collect())
        .unwrap_or_default()
}

/// A `pubsub.redis` component `name` on the Redis at `port` that offers an unfinished
/// message again soon: idle for 1.5 s, looked for every 0.3 s.
pub fn redis_pubsub(name: &str, port: u16) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: pubsub.redis\n  version: v1\n  metadata:\n  - name: redisHost\n    value: 127.0.0.1:{port}\n  - name: processingTimeout\n    value: \"1500\"\n  - name: redeliverInterval\n    value: 300ms\n"
    )
}
