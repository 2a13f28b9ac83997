//! Pooled keep-alive HTTP/1.1 connections (hyper's own) to one origin: the apps' line to
//! their sidecar, over loopback TCP or the sidecar's Unix domain socket
//! (`DAPR_HTTP_ENDPOINT=unix:///path`), and a sidecar's line to its HTTP app.
//!
//! hyper directly rather than reqwest: reqwest parses each request's URL twice with the
//! `url` crate (for its redirect policy and its response), which measured 17.5% of the
//! backend's instructions per booking on the state path; both ends are on loopback and
//! never redirect, so none of what reqwest adds is needed here.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;

use crate::settings::DaprSettings;

/// Where the connections go: a connector for hyper's client and for tonic's channel.
#[derive(Clone)]
pub(crate) enum Connector {
    Tcp(HttpConnector),
    Unix(Arc<PathBuf>),
}

/// One connection to the origin.
pub(crate) enum Conn {
    Tcp(TokioIo<tokio::net::TcpStream>),
    Unix(TokioIo<tokio::net::UnixStream>),
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_flush(cx),
            Conn::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Tcp(s) => s.is_write_vectored(),
            Conn::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<Conn>> + Send>>;

impl tower::Service<Uri> for Connector {
    type Response = Conn;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Connector::Tcp(c) => c.poll_ready(cx).map_err(io::Error::other),
            Connector::Unix(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, uri: Uri) -> Connecting {
        match self {
            Connector::Tcp(c) => {
                let connecting = c.call(uri);
                Box::pin(async move { Ok(Conn::Tcp(connecting.await.map_err(io::Error::other)?)) })
            }
            Connector::Unix(path) => {
                let path = path.clone();
                Box::pin(async move {
                    let stream = tokio::time::timeout(
                        CONNECT_TIMEOUT,
                        tokio::net::UnixStream::connect(path.as_path()),
                    )
                    .await
                    .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
                    Ok(Conn::Unix(TokioIo::new(stream)))
                })
            }
        }
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// `host:port` as a URI's authority: an IPv6 address in brackets.
pub fn authority(host: &str, port: u16) -> String {
    match host.parse::<std::net::Ipv6Addr>() {
        Ok(v6) => format!("[{v6}]:{port}"),
        Err(_) => format!("{host}:{port}"),
    }
}

impl Connector {
    /// To the Unix domain socket at `path`, whatever the URI says.
    pub(crate) fn unix(path: PathBuf) -> Self {
        Connector::Unix(Arc::new(path))
    }
}

/// A pooled HTTP/1.1 client of one origin (a sidecar's API, an app): keep-alive
/// connections, the idle ones on a stack (the last used is taken first; those idle past
/// [`IDLE_TIMEOUT`] are closed when a connection is next taken, not in the background).
/// Cloning it shares the pool.
///
/// Not hyper_util's pooled `Client`: it keys its pool by scheme and authority and hashes
/// the authority byte by byte with SipHash three times per request (taking and returning
/// a connection), which measured 6% of the backend's instructions per booking, and it
/// rebuilds every request's target and `Host`; with one origin there is nothing to key.
#[derive(Clone)]
pub struct Origin {
    pool: Arc<Pool>,
    /// The most an answer's body may hold, when bounded.
    body_limit: Option<usize>,
}

struct Pool {
    connector: Connector,
    /// What the connector is given: the origin's address (ignored for a Unix socket).
    address: Uri,
    /// Every request's `Host`.
    host: HeaderValue,
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    sender: SendRequest<Full<Bytes>>,
    since: Instant,
}

/// An idle connection older than this is closed rather than used (the origin may have
/// dropped it).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept at most; more are closed when returned.
const MAX_IDLE: usize = 1024;

impl Origin {
    /// To the sidecar's HTTP port, or its socket when `settings` name one.
    pub fn sidecar(settings: &DaprSettings) -> Self {
        match &settings.http_socket {
            Some(path) => Origin::new(Connector::unix(path.clone()), "localhost".to_string())
                .expect("localhost forms a URI"),
            None => Origin::tcp("127.0.0.1", settings.http_port)
                .expect("a loopback address and a port form a URI"),
        }
    }

    /// To `host:port` over TCP (`TCP_NODELAY`; connecting takes at most
    /// [`CONNECT_TIMEOUT`]); an IPv6 address is bracketed.
    pub fn tcp(host: &str, port: u16) -> Result<Self, http::uri::InvalidUri> {
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        Origin::tcp_with(tcp, host, port)
    }

    /// To `host:port` over TCP, connecting as `tcp` is set up (its timeouts, keep-alive).
    pub fn tcp_with(
        tcp: HttpConnector,
        host: &str,
        port: u16,
    ) -> Result<Self, http::uri::InvalidUri> {
        Origin::new(Connector::Tcp(tcp), authority(host, port))
    }

    fn new(connector: Connector, authority: String) -> Result<Self, http::uri::InvalidUri> {
        let address = Uri::try_from(format!("http://{authority}"))?;
        // What a URI's authority may hold is visible ASCII, which a header may hold too.
        let host = HeaderValue::try_from(authority).expect("a URI's authority is a header");
        Ok(Origin {
            pool: Arc::new(Pool {
                connector,
                address,
                host,
                idle: Mutex::new(Vec::new()),
            }),
            body_limit: None,
        })
    }

    /// The same origin, its answers' bodies held to `limit` bytes: a longer one is
    /// [`Failure::TooLarge`].
    pub fn with_body_limit(self, limit: usize) -> Self {
        Origin {
            body_limit: Some(limit),
            ..self
        }
    }

    /// The request target of `path` (with its query, already percent-encoded) on the
    /// origin: origin-form, as the request line carries it.
    pub fn uri(&self, path: &str) -> Result<Uri, http::uri::InvalidUri> {
        Uri::try_from(path)
    }

    /// Sends one request and reads its whole answer, within `left` when bounded. A request
    /// that a reused connection could not take (the origin had closed it) goes once more
    /// on a new connection: it was never sent.
    pub async fn exchange(
        &self,
        mut req: Request<Full<Bytes>>,
        left: Option<Duration>,
    ) -> Result<(http::response::Parts, Bytes), Failure> {
        req.headers_mut()
            .insert(http::header::HOST, self.pool.host.clone());
        let round_trip = async {
            let (mut sender, mut reused) = self.pool.take().await?;
            // A kept connection takes the next request once done with the last answer.
            if reused && sender.ready().await.is_err() {
                (sender, reused) = (self.pool.connect().await?, false);
            }
            let resp = match sender.try_send_request(req).await {
                Ok(resp) => resp,
                Err(mut e) => match e.take_message() {
                    Some(req) if reused => {
                        sender = self.pool.connect().await?;
                        sender.send_request(req).await.map_err(Failure::Sending)?
                    }
                    _ => return Err(Failure::Sending(e.into_error())),
                },
            };
            let (parts, body) = resp.into_parts();
            let body = read_body(body, self.body_limit).await?;
            self.pool.put(sender);
            Ok((parts, body))
        };
        within(left, round_trip).await
    }

    /// Sends one request and hands back its answer as it comes, its head within `left`
    /// when bounded, its body without a limit (a stream of events, say). The connection
    /// carries only this exchange: it closes when the body ends or is dropped.
    pub async fn stream(
        &self,
        mut req: Request<Full<Bytes>>,
        left: Option<Duration>,
    ) -> Result<http::Response<hyper::body::Incoming>, Failure> {
        req.headers_mut()
            .insert(http::header::HOST, self.pool.host.clone());
        let head = async {
            let mut sender = self.pool.connect().await?;
            sender.send_request(req).await.map_err(Failure::Sending)
        };
        within(left, head).await
    }
}

/// A whole answer's body, within `limit` bytes when bounded.
pub async fn read_body(
    body: hyper::body::Incoming,
    limit: Option<usize>,
) -> Result<Bytes, Failure> {
    let Some(limit) = limit else {
        return Ok(body.collect().await.map_err(Failure::Reading)?.to_bytes());
    };
    let whole = http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| match e.downcast::<hyper::Error>() {
            Ok(e) => Failure::Reading(*e),
            Err(_) => Failure::TooLarge(limit),
        })?;
    Ok(whole.to_bytes())
}

/// `exchange` done within `left` when bounded; past it, [`Failure::Late`].
async fn within<T>(
    left: Option<Duration>,
    exchange: impl Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    match left {
        Some(left) => tokio::time::timeout(left, exchange)
            .await
            .unwrap_or(Err(Failure::Late)),
        None => exchange.await,
    }
}

impl Pool {
    /// An idle connection (true: reused) or a new one.
    async fn take(&self) -> Result<(SendRequest<Full<Bytes>>, bool), Failure> {
        loop {
            let idle = {
                let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
                // The oldest are at the bottom: close those idle too long.
                let expired = idle.partition_point(|c| c.since.elapsed() >= IDLE_TIMEOUT);
                idle.drain(..expired);
                idle.pop()
            };
            match idle {
                Some(c) if !c.sender.is_closed() => return Ok((c.sender, true)),
                // Closed by the origin.
                Some(_) => continue,
                None => return Ok((self.connect().await?, false)),
            }
        }
    }

    /// A new connection, its driving task spawned.
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, Failure> {
        let io = tower::ServiceExt::oneshot(self.connector.clone(), self.address.clone())
            .await
            .map_err(Failure::Connecting)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(Failure::Sending)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "a pooled HTTP/1.1 connection ended");
            }
        });
        Ok(sender)
    }

    /// Keeps a connection whose exchange is over for the next request.
    fn put(&self, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }
}

/// How an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// No whole answer within the time given.
    #[error("no answer in time")]
    Late,
    /// No connection: the origin is not reachable.
    #[error("connecting: {0}")]
    Connecting(io::Error),
    /// The request did not go through, or its answer did not come.
    #[error("{0}")]
    Sending(hyper::Error),
    /// The answer broke off.
    #[error("reading the answer: {0}")]
    Reading(hyper::Error),
    /// The answer's body was longer than the origin's limit (in bytes).
    #[error("the answer's body is larger than {0} bytes")]
    TooLarge(usize),
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;

    /// A server on a free loopback port answering `ok` to each request; with `once`, it
    /// answers `connection: close` and closes each connection after its first answer.
    /// Counts the connections it accepted.
    async fn server(once: bool) -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        let Ok(n) = s.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            let answer: &[u8] = if once {
                                b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"
                            } else {
                                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                            };
                            if s.write_all(answer).await.is_err() || once {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (port, accepted)
    }

    fn line(port: u16) -> Origin {
        Origin::sidecar(&DaprSettings {
            http_port: port,
            http_socket: None,
            grpc_endpoint: String::new(),
            grpc_socket: None,
            api_token: None,
            app_token: None,
            statestore: String::new(),
            lockstore: String::new(),
            backend_app_id: String::new(),
            api_protocol: Default::default(),
        })
    }

    async fn get(line: &Origin) -> Bytes {
        let req = Request::get(line.uri("/v1.0/healthz").unwrap())
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (parts, body) = line
            .exchange(req, Some(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(parts.status, 200);
        body
    }

    #[tokio::test]
    async fn a_kept_connection_serves_the_next_request() {
        let (port, accepted) = server(false).await;
        let line = line(port);
        for _ in 0..3 {
            assert_eq!(get(&line).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    /// Whether the pool sees the connection closed when it takes it, or while waiting for
    /// it to be ready, a new one serves the request. (The other path, a request handed
    /// back by a connection that closed just as it was given, is not reproduced here.)
    #[tokio::test]
    async fn a_connection_the_sidecar_closed_is_replaced() {
        let (port, accepted) = server(true).await;
        let line = line(port);
        for _ in 0..3 {
            assert_eq!(get(&line).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }
}
