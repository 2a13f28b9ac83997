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
