//! A trivial HTTP app for measuring what the sidecars add: every request gets `200 ok`.
//! `trivial-app <port>` (default: $APP_PORT or 7000); the harness runs it for the sidecar row.

use axum::Router;
use axum::serve::ListenerExt as _;

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("APP_PORT").ok())
        .and_then(|p| p.parse().ok())
        .unwrap_or(7000);
    appkit::process::runtime(1)?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let app = Router::new().fallback(|| async { "ok" });
        // Stops on SIGTERM as the services do (an instrumented build writes its profile
        // only on a normal exit).
        axum::serve(listener, app)
            .with_graceful_shutdown(appkit::process::shutdown_signal())
            .await
    })
}
