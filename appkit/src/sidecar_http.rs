//! The apps' HTTP line to their sidecar: hyper's pooled keep-alive HTTP/1.1 client over
//! loopback TCP or the sidecar's Unix domain socket (`DAPR_HTTP_ENDPOINT=unix:///path`).
//!
//! hyper directly rather than reqwest: reqwest parses each request's URL twice with the
//! `url` crate (for its redirect policy and its response), which measured 17.5% of the
//! backend's instructions per booking on the state path; the sidecar is on loopback and
//! never redirects, so none of what reqwest adds is needed here.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::settings::DaprSettings;

/// Where the connections go: a connector for hyper's client and for tonic's channel.
#[derive(Clone)]
pub(crate) enum Connector {
    Tcp(HttpConnector),
    Unix(Arc<PathBuf>),
}

/// One connection to the sidecar.
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

impl Connector {
    /// To the Unix domain socket at `path`, whatever the URI says.
    pub(crate) fn unix(path: PathBuf) -> Self {
        Connector::Unix(Arc::new(path))
    }
}

/// A pooled client of the sidecar's HTTP API, and the origin its URIs start with.
#[derive(Clone)]
pub struct SidecarHttp {
    client: Client<Connector, Full<Bytes>>,
    origin: String,
}

impl SidecarHttp {
    /// To the sidecar's HTTP port, or its socket when `settings` name one.
    pub fn new(settings: &DaprSettings) -> Self {
        let (connector, origin) = match &settings.http_socket {
            Some(path) => (
                Connector::unix(path.clone()),
                "http://localhost".to_string(),
            ),
            None => {
                let mut tcp = HttpConnector::new();
                tcp.set_nodelay(true);
                tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
                (
                    Connector::Tcp(tcp),
                    format!("http://127.0.0.1:{}", settings.http_port),
                )
            }
        };
        // The timer closes idle connections in the background; without one the idle
        // timeout is only checked when a connection is taken.
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1024)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        SidecarHttp { client, origin }
    }

    /// The URI of `path` (with its query, already percent-encoded) on the sidecar.
    pub fn uri(&self, path: &str) -> Result<Uri, http::uri::InvalidUri> {
        Uri::try_from(format!("{}{path}", self.origin))
    }

    /// Sends one request and reads its whole answer, within `left` when bounded.
    pub async fn exchange(
        &self,
        req: Request<Full<Bytes>>,
        left: Option<Duration>,
    ) -> Result<(http::response::Parts, Bytes), Failure> {
        let round_trip = async {
            let resp = self.client.request(req).await.map_err(Failure::Sending)?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map_err(Failure::Reading)?.to_bytes();
            Ok((parts, body))
        };
        match left {
            Some(left) => tokio::time::timeout(left, round_trip)
                .await
                .unwrap_or(Err(Failure::Late)),
            None => round_trip.await,
        }
    }
}

/// How an exchange with the sidecar failed.
#[derive(Debug)]
pub enum Failure {
    /// No whole answer within the time given.
    Late,
    /// The request did not go through (`is_connect()`: the sidecar was not reachable).
    Sending(hyper_util::client::legacy::Error),
    /// The answer broke off.
    Reading(hyper::Error),
}
