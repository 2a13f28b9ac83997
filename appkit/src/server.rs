//! Serving a router on HTTP/1.1 alone, for listeners only sidecars and HTTP/1.1 clients
//! call (the apps' ports, the sidecars' internal port, a sidecar's API with
//! `DAPR_HTTP_DISABLE_H2C`). `axum::serve` speaks both HTTP/1.1
//! and HTTP/2 and first reads each connection's opening bytes to tell them apart, then
//! wraps every read and write to hand those bytes back: work each request pays for on a
//! line where HTTP/2 never comes. Shutdown is graceful as with `axum::serve`: no new
//! connections, each open one finishes the request it is serving and closes (however long
//! that takes; the requests carry their own deadlines). Like `axum::serve`, no timeout on
//! reading a request's head: the callers are sidecars and load generators on loopback.

use std::convert::Infallible;
use std::future::Future;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use axum::serve::{Listener, ListenerExt as _, TapIo};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// A TCP listener on `addr` whose queue of connections not yet accepted is as long as the
/// system allows (`net.core.somaxconn`, as Go's listeners and so daprd's take it), not the
/// 128 of `tokio::net::TcpListener::bind`: a burst of hundreds of callers at once (a
/// sidecar's peers, a load test) overflowed 128 while the runtime was busy, and Linux
/// then drops the handshake, so the caller's connect waits out a 1 s retransmission and
/// a connect deadline of 1 or 2 s fails.
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(max_backlog())
}

/// `net.core.somaxconn`, or 4,096 (its default since Linux 5.4) where it cannot be read.
fn max_backlog() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096)
}

/// `listener` with `TCP_NODELAY` on each connection: requests and answers are small, and
/// waiting to fill a segment only adds latency.
pub fn nodelay(listener: TcpListener) -> TapIo<TcpListener, fn(&mut TcpStream)> {
    listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    })
}

/// Serves `service` (a router, perhaps behind a layer) on `listener` until `shutdown`
/// resolves, then lets the open connections finish what they are serving. A failed
/// accept (out of file descriptors, most likely) is retried after a pause, as
/// `axum::serve` does.
pub async fn serve_http1<L, S>(mut listener: L, service: S, shutdown: impl Future<Output = ()>)
where
    L: Listener,
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let (stop, stopping) = watch::channel(());
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            (stream, _) = listener.accept() => stream,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            () = &mut shutdown => break,
        };
        // As axum::serve hands requests on: the body as axum's.
        let service = TowerToHyperService::new(tower::util::MapRequest::new(
            service.clone(),
            |r: hyper::Request<Incoming>| r.map(Body::new),
        ));
        let mut stopping = stopping.clone();
        connections.spawn(async move {
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stopping.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    drop(listener);
    let _ = stop.send(());
    while connections.join_next().await.is_some() {}
}
