//! Service invocation: the caller's sidecar sends the request to the callee's sidecar
//! (found by name resolution, on its internal port), which calls its app; the app's
//! status, headers and body come back unchanged, as in Dapr.
//!
//! Both hops keep their HTTP/1.1 connections open (TCP_NODELAY): a connection per request
//! would add a handshake to every call. To peers, hyper_util's pooled client (many
//! origins, perhaps TLS); to the app, one origin, `appkit::origin`'s pool. Request bodies
//! are read whole (they are bounded by `--max-body-size`) so that a call to a peer whose
//! registration went stale can be retried once against a fresh lookup; so is an HTTP app's
//! answer, within the same limit (as daprd limits it), but for Server-Sent Events, which
//! go on as the app writes them (as daprd passes them on).
//!
//! Between sidecars the hop is plain HTTP carrying the registry's secret, or under mTLS
//! (`crate::mtls`) HTTPS where each end checks the other's certificate and the callee's
//! must name the app id the call is for.
//!
//! A call that says how long it has (`x-request-timeout-ms`, the time left, as this
//! project's services send it) is given up when that time is over, on each hop, with a
//! 504; the next hop is told a little less, so that it answers first. A stalled peer or
//! app never holds a call without end.

use std::sync::Arc;

use appkit::origin::{Failure, Origin};
use axum::body::Body;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::TokioExecutor;

use crate::apphealth::{AppHealth, HealthCheck};
use crate::errors::ApiError;
use crate::names::Names;
use crate::registry::Registry;

type TlsClient = Client<Bounded<hyper_rustls::HttpsConnector<HttpConnector>>, Full<Bytes>>;

/// The client for the hop to peer sidecars.
enum PeerClient {
    /// Plain HTTP; the registry's secret says the caller is a sidecar.
    Plain(Peers),
    /// mTLS: the certificates say who is at either end.
    Tls(Box<TlsClient>),
}

pub(crate) const CALLER: HeaderName = HeaderName::from_static("dapr-caller-app-id");
pub(crate) const CALLEE: HeaderName = HeaderName::from_static("dapr-callee-app-id");
pub(crate) const CALLER_NS: HeaderName = HeaderName::from_static("dapr-caller-namespace");
pub(crate) const API_TOKEN: HeaderName = appkit::token::HEADER_NAME;
/// On an answer from a gRPC app's error, between sidecars: its whole status (a
/// `google.rpc.Status`, base64), so a gRPC caller gets the app's status as it was (code,
/// message, details), as from daprd; never to an HTTP caller.
pub(crate) const APP_GRPC_STATUS: HeaderName = HeaderName::from_static("dapr-internal-grpc-status");
/// On every answer from a gRPC app, between sidecars: what a gRPC caller gets beside the
/// data and the header metadata, as base64 of JSON (`{"typeUrl": .., "trailers": [[name,
/// value]..]}`, binary values base64); never to an HTTP caller, which daprd gives neither.
pub(crate) const APP_GRPC_ANSWER: HeaderName = HeaderName::from_static("dapr-internal-grpc-answer");
/// On a call from a gRPC caller, between sidecars: its headers are the caller's metadata,
/// which a gRPC app is given as they are (an HTTP caller's standard headers get daprd's
/// `dapr-` prefix); never to an app.
pub(crate) const GRPC_CALLER: HeaderName = HeaderName::from_static("dapr-internal-grpc-caller");
const APP_ID: HeaderName = HeaderName::from_static("dapr-app-id");
/// The registry's secret, from the calling sidecar to the called one (never to an app).
pub const PEER_SECRET: HeaderName = HeaderName::from_static("dapr-internal-secret");
/// On a called sidecar's refusal of a call without the secret (never on an app's answer).
pub const PEER_REFUSED: HeaderName = HeaderName::from_static("dapr-internal-refused");
const TIMEOUT: HeaderName = appkit::request::TIMEOUT_HEADER;
/// What a hop keeps of a call's time before handing the rest on: time to answer.
const HANDOFF_MARGIN: std::time::Duration = std::time::Duration::from_millis(50);

/// Why a hop failed.
#[derive(Debug, thiserror::Error)]
enum SendError {
    /// To a peer, over mTLS.
    #[error("{}", chain(.0))]
    Client(#[from] hyper_util::client::legacy::Error),
    /// To a peer, over plain HTTP.
    #[error("{}", failure_text(.0))]
    Peer(Failure),
    /// To the app.
    #[error("{}", failure_text(.0))]
    App(Failure),
    #[error("no answer within the call's {0:?} (x-request-timeout-ms)")]
    Timeout(std::time::Duration),
}

impl SendError {
    fn is_connect(&self) -> bool {
        match self {
            SendError::Client(e) => e.is_connect(),
            SendError::App(f) | SendError::Peer(f) => matches!(f, Failure::Connecting(_)),
            SendError::Timeout(_) => false,
        }
    }

    /// The API error for a failed invocation of `app_id`.
    fn to_api(&self, app_id: &str) -> ApiError {
        let message = format!("failed to invoke, id: {app_id}, err: {self}");
        match self {
            SendError::Timeout(_) => ApiError::invoke_timeout(message),
            SendError::App(Failure::TooLarge(limit))
            | SendError::Peer(Failure::TooLarge(limit)) => {
                ApiError::reply_too_large(app_id, *limit)
            }
            SendError::Client(_) | SendError::App(_) | SendError::Peer(_) => {
                ApiError::direct_invoke(message)
            }
        }
    }
}

/// A failed exchange with hyper's causes, which say why (reset, refused, closed early).
fn failure_text(f: &Failure) -> String {
    match f {
        Failure::Sending(e) => chain(e),
        Failure::Reading(e) => format!("reading the answer: {}", chain(e)),
        other => other.to_string(),
    }
}

/// An error with its causes, which carry the reason (refused, reset, a certificate the
/// trust bundle does not vouch for).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Hop-by-hop headers, never forwarded in either direction. As `HeaderName`s: removing
/// by `&str` parses each name first, which measured 2% of the callee sidecar's
/// instructions per booking.
const HOP_BY_HOP: [HeaderName; 10] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
    header::TRAILER,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    HeaderName::from_static("http2-settings"),
];

/// Plain-HTTP peer sidecars, one pooled [`Origin`] for each address: hyper_util's
/// `Client` keys its one pool by scheme and authority, hashing them with SipHash when a
/// connection is taken and returned (about 4,000 instructions per booking in a frontend's
/// sidecar); few peers are known at once, so a short list is looked through instead.
struct Peers {
    connector: HttpConnector,
    /// `--max-body-size`, for their answers too.
    body_limit: usize,
    /// The last used last.
    known: std::sync::Mutex<Vec<(std::net::SocketAddr, Origin)>>,
}

/// Peers remembered at most; the least recently used is forgotten first (its connections
/// close once idle).
const MAX_PEERS: usize = 64;

impl Peers {
    fn origin(&self, addr: std::net::SocketAddr) -> Result<Origin, http::uri::InvalidUri> {
        let mut known = self
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(i) = known.iter().position(|(a, _)| *a == addr) {
            if i + 1 < known.len() {
                let used = known.remove(i);
                known.push(used);
            }
            return Ok(known[known.len() - 1].1.clone());
        }
        let origin = Origin::tcp_with(self.connector.clone(), &addr.ip().to_string(), addr.port())?
            .with_body_limit(self.body_limit);
        if known.len() >= MAX_PEERS {
            known.remove(0);
        }
        known.push((addr, origin.clone()));
        Ok(origin)
    }
}

/// The app channel, as `--app-protocol` says.
pub enum AppChannel {
    /// `http`: the app's origin.
    Http(Origin),
    /// `grpc`: the app's `AppCallback` service.
    Grpc(Box<crate::appcallback::GrpcApp>),
}

impl AppChannel {
    /// The channel to an app at `host:port` speaking `protocol` (`http` or `grpc`), with
    /// messages up to `max_body`.
    pub fn new(
        protocol: &str,
        host: &str,
        port: u16,
        max_body: usize,
    ) -> Result<AppChannel, AppChannelError> {
        Ok(match protocol.to_ascii_lowercase().as_str() {
            "grpc" => AppChannel::Grpc(Box::new(crate::appcallback::GrpcApp::new(
                host, port, max_body,
            )?)),
            _ => AppChannel::Http(Origin::tcp(host, port)?.with_body_limit(max_body)),
        })
    }
}

/// An app channel that cannot be made: the address does not form a URI.
#[derive(Debug, thiserror::Error)]
pub enum AppChannelError {
    #[error(transparent)]
    Grpc(#[from] tonic::transport::Error),
    #[error("the app's address: {0}")]
    Http(#[from] http::uri::InvalidUri),
}

pub struct Invoker {
    /// To peer sidecars, perhaps on other hosts: bounded connects, and a connection whose
    /// data goes unacknowledged is dropped, so a host cut off is noticed.
    peer_client: PeerClient,
    app_id: String,
    /// `dapr-caller-namespace` of the calls it makes: `NAMESPACE`, "default" when unset
    /// (daprd's `security.CurrentNamespace`).
    namespace: HeaderValue,
    /// How this sidecar reaches its app; none without `--app-port`.
    app: Option<AppChannel>,
    app_token: Option<HeaderValue>,
    /// Holds the peers' shared secret.
    registry: Arc<Registry>,
    names: Arc<Names>,
    max_body: usize,
    /// The app's health, when probed (`--enable-app-health-check`).
    health: AppHealth,
}

/// How long a connection to a peer sidecar may take: on a LAN an answer comes in
/// milliseconds, and a host that is cut off never answers at all.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a peer connection's data may go unacknowledged (`TCP_USER_TIMEOUT`) before
/// the connection is dropped: what bounds a call to a cut-off host that carries no
/// `x-request-timeout-ms` of its own.
const PEER_SILENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a connection to a peer, TLS handshake included, may take.
const TLS_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// A connector whose connections, handshake included, are made within `limit` or fail: a
/// peer that takes the TCP connection and then says nothing holds no call.
#[derive(Clone)]
struct Bounded<C> {
    inner: C,
    limit: std::time::Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<C> tower::Service<Uri> for Bounded<C>
where
    C: tower::Service<Uri> + Send + 'static,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (connecting, limit) = (self.inner.call(uri), self.limit);
        Box::pin(async move {
            match tokio::time::timeout(limit, connecting).await {
                Ok(connected) => connected.map_err(Into::into),
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {limit:?}"),
                )
                .into()),
            }
        })
    }
}

/// A call as the API received it, ready to be sent on.
pub struct Call {
    pub method: Method,
    /// The app-side path, starting with `/`.
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Call {
    /// The call an HTTP request makes, for the app's `path`; the body is read whole,
    /// within the invoker's size limit.
    pub async fn read(
        invoker: &Invoker,
        path: String,
        req: Request<Body>,
    ) -> Result<Call, ApiError> {
        let (parts, body) = req.into_parts();
        Ok(Call {
            method: parts.method,
            path,
            query: parts.uri.query().map(str::to_string),
            headers: parts.headers,
            body: invoker.read_body(body).await?,
        })
    }
}

/// A body read whole within `limit` (`--max-body-size`): the one reader of request bodies
/// and of an app's reply to a gRPC caller. Past the limit it is a 413, never held.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|e| ApiError::body_failed(&e, limit))
}

/// An answer's headers as daprd gives them to an HTTP caller (`InternalMetadataToHTTPHeader`):
/// no binary metadata and nothing between sidecars, and gRPC's own names behind `dapr-`
/// (`grpc-x` as `dapr-grpc-x`).
pub(crate) fn for_http_caller(headers: &mut HeaderMap) {
    headers.remove(&APP_GRPC_STATUS);
    headers.remove(&APP_GRPC_ANSWER);
    let odd: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().ends_with("-bin") || k.as_str().starts_with("grpc-"))
        .cloned()
        .collect();
    for name in odd {
        let values: Vec<HeaderValue> = headers.get_all(&name).iter().cloned().collect();
        headers.remove(&name);
        if name.as_str().ends_with("-bin") {
            continue;
        }
        if let Ok(prefixed) = HeaderName::from_bytes(format!("dapr-{name}").as_bytes()) {
            for v in values {
                headers.append(&prefixed, v);
            }
        }
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one look at each of their few names is cheaper than ten
    // hashed lookups (about 2,000 instructions per booking in a frontend's sidecar).
    if !headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for h in HOP_BY_HOP {
        headers.remove(h);
    }
}

/// The sidecar's own app, as the invoker reaches it.
pub struct AppLink {
    /// How; none without `--app-port`.
    pub channel: Option<AppChannel>,
    /// The token the app expects (`APP_API_TOKEN`).
    pub token: Option<String>,
    pub health: AppHealth,
}

impl Invoker {
    pub fn new(
        app_id: String,
        app: AppLink,
        registry: Arc<Registry>,
        names: Arc<Names>,
        max_body: usize,
        mtls: Option<rustls::ClientConfig>,
    ) -> Self {
        let AppLink {
            channel: app,
            token: app_token,
            health,
        } = app;
        let mut to_peers = HttpConnector::new();
        to_peers.set_nodelay(true);
        to_peers.set_connect_timeout(Some(CONNECT_TIMEOUT));
        to_peers.set_tcp_user_timeout(Some(PEER_SILENCE));
        to_peers.set_keepalive(Some(PEER_SILENCE));
        let peer_client = match mtls {
            None => PeerClient::Plain(Peers {
                connector: to_peers,
                body_limit: max_body,
                known: Default::default(),
            }),
            Some(tls) => {
                to_peers.enforce_http(false);
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(tls)
                    .https_only()
                    .with_server_name_resolver(crate::mtls::peer_server_name)
                    .enable_http1()
                    .wrap_connector(to_peers);
                PeerClient::Tls(Box::new(pooled(Bounded {
                    inner: connector,
                    limit: TLS_CONNECT_TIMEOUT,
                })))
            }
        };
        Invoker {
            peer_client,
            app_id,
            namespace: std::env::var("NAMESPACE")
                .ok()
                .and_then(|n| HeaderValue::from_str(&n).ok())
                .unwrap_or(HeaderValue::from_static("default")),
            app,
            app_token: app_token.and_then(|t| HeaderValue::from_str(&t).ok()),
            registry,
            names,
            max_body,
            health,
        }
    }

    pub fn health(&self) -> &AppHealth {
        &self.health
    }

    /// One health probe of the app (see `crate::apphealth`): why it failed, if it did.
    pub async fn probe_app(&self, check: &HealthCheck) -> Result<(), String> {
        let app = match &self.app {
            None => return Err("no app channel".into()),
            Some(AppChannel::Grpc(app)) => return app.health_check(check.timeout).await,
            Some(AppChannel::Http(app)) => app,
        };
        let uri = app.uri(&check.path).map_err(|e| e.to_string())?;
        let mut req = Request::new(Full::new(Bytes::new()));
        *req.uri_mut() = uri;
        match app.exchange(req, Some(check.timeout)).await {
            Ok((parts, _)) if parts.status.is_success() => Ok(()),
            Ok((parts, _)) => Err(format!(
                "health check failed with status code: {}",
                parts.status.as_u16()
            )),
            Err(Failure::Late) => Err(format!("no answer within {:?}", check.timeout)),
            // Read within --max-body-size like every answer of the app's: a health answer
            // that long fails the check, but it is not the network's doing.
            Err(e @ Failure::TooLarge(_)) => Err(format!("health check failed: {e}")),
            Err(e) => Err(format!("network error: {e}")),
        }
    }

    /// An invocation of this sidecar's own app: refused while the app is unhealthy (as
    /// daprd's app channel refuses it), else delivered.
    pub async fn serve(&self, call: Call) -> Result<Response<Body>, ApiError> {
        if !self.health.is_healthy() {
            return Err(ApiError::direct_invoke(format!(
                "failed to invoke, id: {}, err: app is not in a healthy state",
                self.app_id
            )));
        }
        self.deliver(call).await
    }

    /// How this sidecar reaches its app, if it has one.
    pub fn app(&self) -> Option<&AppChannel> {
        self.app.as_ref()
    }

    /// The token the app expects from its sidecar (`APP_API_TOKEN`).
    pub fn app_token(&self) -> Option<&HeaderValue> {
        self.app_token.as_ref()
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    async fn read_body(&self, body: Body) -> Result<Bytes, ApiError> {
        read_body(body, self.max_body).await
    }

    /// Invokes `method` on `target` (from this sidecar's API).
    pub async fn invoke(&self, target: &str, mut call: Call) -> Result<Response<Body>, ApiError> {
        for h in [
            &API_TOKEN,
            &APP_ID,
            &CALLER,
            &CALLEE,
            &CALLER_NS,
            &PEER_SECRET,
        ] {
            call.headers.remove(h);
        }
        strip_hop_by_hop(&mut call.headers);
        if let Ok(v) = HeaderValue::from_str(&self.app_id) {
            call.headers.insert(CALLER, v);
        }
        if let Ok(v) = HeaderValue::from_str(target) {
            call.headers.insert(CALLEE, v);
        }
        call.headers.insert(CALLER_NS, self.namespace.clone());
        // An app calling itself: straight to it, stamped as its own caller (as daprd's
        // invokeLocal does), never through a peer.
        if target == self.app_id {
            return self.serve(call).await;
        }
        if matches!(self.peer_client, PeerClient::Plain(_))
            && let Some(v) = self
                .registry
                .secret()
                .and_then(|s| HeaderValue::from_str(s).ok())
        {
            call.headers.insert(PEER_SECRET, v);
        }
        let fail = |e: &dyn std::fmt::Display| {
            ApiError::direct_invoke(format!("failed to invoke, id: {target}, err: {e}"))
        };
        let started = std::time::Instant::now();
        let budget = appkit::request::time_given(&call.headers);
        for attempt in 0..2 {
            let Some(addr) = self.names.resolve(target).await else {
                return Err(fail(&format!("couldn't find service: {target}")));
            };
            let sent = match &self.peer_client {
                PeerClient::Plain(peers) => {
                    let peer = peers.origin(addr).map_err(|e| fail(&e))?;
                    let uri =
                        target_uri("", &call.path, call.query.as_deref()).map_err(|e| fail(&e))?;
                    self.send_to(&peer, &call, uri, SendError::Peer).await
                }
                PeerClient::Tls(client) => {
                    // The app id before the address is the name its certificate must carry.
                    let base = format!("https://{target}@{addr}");
                    let uri = target_uri(&base, &call.path, call.query.as_deref())
                        .map_err(|e| fail(&e))?;
                    self.send(client, &call, uri).await
                }
            };
            match sent {
                Ok(resp) if resp.headers().contains_key(&PEER_REFUSED) => {
                    return Err(fail(&format!(
                        "the sidecar of {target} refused the call: it reads another registry \
                         secret (was {} replaced while sidecars ran?)",
                        self.registry.secret_file().display()
                    )));
                }
                Ok(resp) => return Ok(resp),
                Err(e) if e.is_connect() && attempt == 0 => {
                    tracing::debug!(target, %addr, error = %e, "peer sidecar unreachable; trying again");
                    self.names.failed(target, addr);
                    // The second try has what is left of the call's time, not all of it
                    // again; with next to nothing left, the call is over.
                    if let Some(given) = budget {
                        let left = given.saturating_sub(started.elapsed());
                        if left <= HANDOFF_MARGIN {
                            return Err(SendError::Timeout(given).to_api(target));
                        }
                        call.headers
                            .insert(TIMEOUT, HeaderValue::from(left.as_millis() as u64));
                    }
                }
                Err(e) => {
                    // Any failure of the hop itself (an app's error answer is not one)
                    // marks the instance, but a second try that ran out of the little time
                    // left says nothing about the instance it went to.
                    let cut_short = attempt > 0 && matches!(e, SendError::Timeout(_));
                    if !cut_short {
                        self.names.failed(target, addr);
                    }
                    return Err(e.to_api(target));
                }
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// Delivers a call to this sidecar's own app (the callee end of an invocation).
    pub async fn deliver(&self, mut call: Call) -> Result<Response<Body>, ApiError> {
        let Some(app) = &self.app else {
            return Err(ApiError::direct_invoke(format!(
                "failed to invoke, id: {}, err: app channel is not initialized (no --app-port)",
                self.app_id
            )));
        };
        strip_hop_by_hop(&mut call.headers);
        call.headers.remove(&API_TOKEN);
        call.headers.remove(&PEER_SECRET);
        if let Some(token) = &self.app_token {
            call.headers.insert(API_TOKEN, token.clone());
        }
        let app = match app {
            AppChannel::Http(app) => app,
            AppChannel::Grpc(grpc) => {
                // As a hop to a sidecar: the app must answer before this sidecar gives up.
                let limit = appkit::request::time_given(&call.headers)
                    .map(|d| d.saturating_sub(HANDOFF_MARGIN));
                return grpc.invoke(&call, limit, &self.app_id).await;
            }
        };
        call.headers.remove(&GRPC_CALLER);
        // Binary metadata is for gRPC apps: daprd gives an HTTP app none of it.
        let binary: Vec<HeaderName> = call
            .headers
            .keys()
            .filter(|k| k.as_str().ends_with("-bin"))
            .cloned()
            .collect();
        for name in binary {
            call.headers.remove(name);
        }
        let uri = target_uri("", &call.path, call.query.as_deref()).map_err(|e| {
            ApiError::direct_invoke(format!("failed to invoke, id: {}, err: {e}", self.app_id))
        })?;
        let mut resp = self
            .send_to(app, &call, uri, SendError::App)
            .await
            .map_err(|e| e.to_api(&self.app_id))?;
        // Only a sidecar may set these, never an HTTP app's answer: its own refusal, and a
        // gRPC app's status (an HTTP app's would reach a gRPC caller as its error).
        resp.headers_mut().remove(&PEER_REFUSED);
        resp.headers_mut().remove(&APP_GRPC_STATUS);
        resp.headers_mut().remove(&APP_GRPC_ANSWER);
        Ok(resp)
    }

    /// To a peer sidecar over mTLS.
    async fn send<C: Connect + Clone + Send + Sync + 'static>(
        &self,
        client: &Client<C, Full<Bytes>>,
        call: &Call,
        uri: Uri,
    ) -> Result<Response<Body>, SendError> {
        let (req, limit) = onward(call, uri);
        let resp = match limit {
            None => client.request(req).await?,
            Some(d) => tokio::time::timeout(d, client.request(req))
                .await
                .map_err(|_| SendError::Timeout(d))??,
        };
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, Body::new(body)))
    }

    /// To an origin over plain HTTP (this sidecar's HTTP app, or a peer sidecar; `hop` says
    /// which failed): its whole answer, within `--max-body-size`; for a call that asks for
    /// a stream of events, a successful answer goes on as it is written, with no limit on
    /// its length, as daprd passes Server-Sent Events on, and any other is read within the
    /// limit, as daprd reads it.
    async fn send_to(
        &self,
        origin: &Origin,
        call: &Call,
        uri: Uri,
        hop: fn(Failure) -> SendError,
    ) -> Result<Response<Body>, SendError> {
        let (req, limit) = onward(call, uri);
        let failed = |f| hop_failure(f, limit, hop);
        let (mut parts, body) = if wants_events(&call.headers) {
            let (parts, body) = origin
                .stream(req, limit)
                .await
                .map_err(failed)?
                .into_parts();
            let body = if parts.status.is_success() {
                Body::new(body)
            } else {
                let whole = appkit::origin::read_body(body, Some(self.max_body))
                    .await
                    .map_err(hop)?;
                Body::from(whole)
            };
            (parts, body)
        } else {
            let (parts, body) = origin.exchange(req, limit).await.map_err(failed)?;
            (parts, Body::from(body))
        };
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, body))
    }
}

/// A failed exchange as a failed hop (`hop`: to the app or a peer): too late is the call's
/// time run out.
fn hop_failure(
    f: Failure,
    limit: Option<std::time::Duration>,
    hop: fn(Failure) -> SendError,
) -> SendError {
    match (f, limit) {
        (Failure::Late, Some(d)) => SendError::Timeout(d),
        (f, _) => hop(f),
    }
}

/// Whether a call asks for Server-Sent Events: its `Accept` is `text/event-stream` and
/// nothing else (daprd's test, `sse.IsSSEHttpRequest`).
fn wants_events(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// The request a call makes on its next hop, to `uri`, and the time it has (from its
/// `x-request-timeout-ms`); the next hop is told a little less, so that it answers before
/// this one gives up.
fn onward(call: &Call, uri: Uri) -> (Request<Full<Bytes>>, Option<std::time::Duration>) {
    let mut req = Request::new(Full::new(call.body.clone()));
    *req.method_mut() = call.method.clone();
    *req.uri_mut() = uri;
    let limit = appkit::request::time_given(&call.headers);
    let headers = req.headers_mut();
    headers.clone_from(&call.headers);
    headers.remove(header::HOST);
    if let Some(d) = limit {
        let next = d.saturating_sub(HANDOFF_MARGIN).as_millis() as u64;
        headers.insert(TIMEOUT, HeaderValue::from(next));
    }
    (req, limit)
}

/// A keep-alive client over `connector`, with room in its pool for every connection a
/// burst opens (each is one call in flight on HTTP/1.1).
fn pooled<C: Connect + Clone>(connector: C) -> Client<C, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(connector)
}

fn target_uri(base: &str, path: &str, query: Option<&str>) -> Result<Uri, http::uri::InvalidUri> {
    let mut s = String::with_capacity(base.len() + path.len() + query.map_or(0, |q| q.len() + 1));
    s.push_str(base);
    s.push_str(path);
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        s.push('?');
        s.push_str(q);
    }
    s.parse()
}

/// Maps an app's HTTP status to the gRPC code Dapr uses when the two protocols meet.
pub fn grpc_code_for_http(status: StatusCode) -> tonic::Code {
    use tonic::Code;
    match status.as_u16() {
        200..=299 => Code::Ok,
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        408 => Code::Cancelled,
        409 => Code::AlreadyExists,
        429 => Code::ResourceExhausted,
        500 => Code::Unknown,
        501 => Code::Unimplemented,
        503 => Code::Unavailable,
        504 => Code::DeadlineExceeded,
        _ => Code::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("traceparent", HeaderValue::from_static("00-abc-def-01"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("traceparent"));
    }

    #[test]
    fn target_uri_keeps_query() {
        let u = target_uri("http://127.0.0.1:1", "/a/b", Some("x=1&y=2")).unwrap();
        assert_eq!(u.to_string(), "http://127.0.0.1:1/a/b?x=1&y=2");
    }
}
