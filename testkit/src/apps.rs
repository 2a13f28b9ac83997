//! Small in-process HTTP apps for tests: an echo app that answers with what it received,
//! and a collector that keeps every JSON body posted to it (a stand-in Zipkin).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Answers `{method, path, query, headers, body}`; `/status/N` answers status N with
/// headers `x-app: yes`, `grpc-note: app` and `x-note-bin: AQ==` (names gRPC reserves or
/// marks binary) and body `app says <status>`.
async fn echo(req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 4 << 20)
        .await
        .unwrap_or_default();
    if let Some(code) = parts.uri.path().strip_prefix("/status/") {
        let code = StatusCode::from_u16(code.parse().unwrap_or(500))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = [
            ("x-app", "yes"),
            ("grpc-note", "app"),
            ("x-note-bin", "AQ=="),
        ];
        return (code, headers, format!("app says {code}")).into_response();
    }
    let headers: HashMap<String, String> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                v.to_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    axum::Json(json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    }))
    .into_response()
}

/// Serves `router` on a free loopback port (in this process, on the test's runtime);
/// returns the port.
pub async fn serve(router: Router) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding an app port");
    let port = listener.local_addr().expect("local addr").port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    port
}

/// Starts the echo app on a free port (in this process, on the test's runtime).
pub async fn start_echo_app() -> u16 {
    serve(Router::new().fallback(echo)).await
}

/// Every JSON value POSTed to a collector, in arrival order.
#[derive(Clone, Default)]
pub struct Collected(Arc<Mutex<Vec<Value>>>);

impl Collected {
    pub fn all(&self) -> Vec<Value> {
        self.0.lock().unwrap().clone()
    }
}

async fn collect(State(c): State<Collected>, body: axum::body::Bytes) -> StatusCode {
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(items)) => c.0.lock().unwrap().extend(items),
        Ok(v) => c.0.lock().unwrap().push(v),
        Err(_) => return StatusCode::BAD_REQUEST,
    }
    StatusCode::ACCEPTED
}

/// Starts a collector; returns its port and what it has received.
pub async fn start_collector() -> (u16, Collected) {
    let c = Collected::default();
    let port = serve(Router::new().fallback(collect).with_state(c.clone())).await;
    (port, c)
}

/// The text `hello.txt` holds in [`spawn_static_app`].
pub const HELLO: &str = "hello from the app\n";

/// A real app process started by `sidecar run`: `python3 -m http.server` serving a folder
/// with `hello.txt`. Returns the sidecar (which owns the app) and the folder.
pub async fn spawn_static_app(
    sidecar_bin: &std::path::Path,
    app_id: &str,
    registry: &std::path::Path,
) -> anyhow::Result<(crate::SidecarProcess, crate::TempDir)> {
    let www = crate::TempDir::new("www");
    std::fs::write(www.path().join("hello.txt"), HELLO)?;
    let port = crate::free_port().to_string();
    let dir = www.path().display().to_string();
    let sidecar = crate::SidecarBuilder::new(sidecar_bin, app_id, registry)
        .app_port(port.parse()?)
        .command(&[
            "python3",
            "-m",
            "http.server",
            &port,
            "--bind",
            "127.0.0.1",
            "--directory",
            &dir,
        ])
        .spawn()
        .await?;
    Ok((sidecar, www))
}

/// Polls `GET /v1.0/invoke/{app_id}/method/hello.txt` on `caller` until the app answers 200;
/// returns the body.
pub async fn fetch_hello_through(
    caller: &crate::SidecarProcess,
    app_id: &str,
) -> anyhow::Result<String> {
    let http = reqwest::Client::new();
    let url = format!(
        "{}/v1.0/invoke/{app_id}/method/hello.txt",
        caller.http_url()
    );
    crate::wait_until(
        "the app behind sidecar run",
        std::time::Duration::from_secs(20),
        || {
            let req = http.get(&url).send();
            async move {
                let r = req.await.ok()?;
                if r.status() != 200 {
                    return None;
                }
                r.text().await.ok()
            }
        },
    )
    .await
}
