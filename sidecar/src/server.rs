//! Starting and stopping one sidecar: bind its listeners (a missing port means a free one),
//! load its components, serve the HTTP, gRPC, internal and metrics endpoints, register it
//! in the name registry, and shut all of it down gracefully.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::ServiceExt as _;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::Api;
use crate::components::Components;
use crate::config::Config;
use crate::invoke::{AppChannel, Invoker};
use crate::metrics::Metrics;
use crate::mtls::{Mtls, Peer, TlsListener};
use crate::names::{self, Names};
use crate::registry::{Entry, Registration, Registry};
use crate::resources::{self, Configuration, NameResolution};
use crate::trace::{TraceLayer, Tracer};
use crate::transport;
use crate::transport::trailers::TrailersLayer;

#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub http: u16,
    pub grpc: u16,
    pub internal: u16,
    pub metrics: Option<u16>,
}

/// A running sidecar: its servers serve from `build` on, until `shutdown`.
pub struct Sidecar {
    pub ports: Ports,
    pub api: Arc<Api>,
    tasks: Vec<JoinHandle<()>>,
    registration: Option<Registration>,
}

/// The sidecar's ports, bound before anything else is built (port 0: a free one).
pub struct Listeners {
    /// One for each `--dapr-listen-addresses` (the first decides a free port), or a socket.
    pub http: Vec<ApiListener>,
    pub grpc: Vec<ApiListener>,
    pub internal: TcpListener,
    /// Only when the Dapr Configuration enables metrics.
    pub metrics: Option<TcpListener>,
}

/// Where the app reaches the API: a TCP port, or a Unix domain socket (the file is
/// removed when the listener goes).
pub enum ApiListener {
    Tcp(TcpListener),
    Unix(UnixListener, SocketFile),
}

/// A socket file this sidecar made; removed when dropped.
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl ApiListener {
    /// On each listen address, the first with `port` (none: a free one), the others on
    /// the port the first got; or on the socket.
    async fn bind(
        config: &Config,
        port: Option<u16>,
        api: &str,
        what: &str,
    ) -> anyhow::Result<Vec<Self>> {
        if let Some(path) = config.api_socket(api) {
            return Ok(vec![bind_unix(&path, what)?]);
        }
        let mut port = port;
        let mut bound = Vec::new();
        for addr in &config.dapr_listen_addresses {
            let listener = bind(*addr, port, what).await?;
            port = Some(listener.local_addr()?.port());
            bound.push(ApiListener::Tcp(listener));
        }
        anyhow::ensure!(
            !bound.is_empty(),
            "--dapr-listen-addresses names no address"
        );
        Ok(bound)
    }

    /// The TCP port; 0 on a socket.
    fn port(&self) -> anyhow::Result<u16> {
        Ok(match self {
            ApiListener::Tcp(l) => l.local_addr()?.port(),
            ApiListener::Unix(..) => 0,
        })
    }
}

/// Binds a socket at `path` for this user only: made in a private folder beside it,
/// closed to `0600` there, then renamed into place, so no one can connect before it is
/// private. A socket left by a sidecar that is gone is replaced; a live one, or anything
/// that is not a socket, is refused.
fn bind_unix(path: &Path, what: &str) -> anyhow::Result<ApiListener> {
    use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, PermissionsExt as _};
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            anyhow::bail!(
                "{what} socket {} exists and is not a socket",
                path.display()
            );
        }
        // A local connect answers at once: refused (stale) or accepted (live).
        Ok(_) if std::os::unix::net::UnixStream::connect(path).is_ok() => {
            anyhow::bail!(
                "{what} socket {} is in use by another process",
                path.display()
            );
        }
        _ => {}
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let private = path.with_file_name(format!(".{name}.{}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .with_context(|| format!("making {}", private.display()))?;
    let made = private.join("socket");
    let bound = UnixListener::bind(&made)
        .with_context(|| format!("binding the {what} socket {}", path.display()))
        .and_then(|listener| {
            std::fs::set_permissions(&made, std::fs::Permissions::from_mode(0o600))?;
            std::fs::rename(&made, path)
                .with_context(|| format!("putting the {what} socket at {}", path.display()))?;
            Ok(listener)
        });
    let _ = std::fs::remove_file(&made);
    let _ = std::fs::remove_dir(&private);
    Ok(ApiListener::Unix(bound?, SocketFile(path.to_path_buf())))
}

impl Listeners {
    /// Binds the ports `config` names, or free ones; the metrics port when `configuration`
    /// enables metrics. The internal port listens on loopback with the local registry, and
    /// on all interfaces when peers on other hosts must reach it (mDNS, DNS), as daprd's.
    pub async fn bind(config: &Config, configuration: &Configuration) -> anyhow::Result<Listeners> {
        let addr = config
            .dapr_listen_addresses
            .first()
            .copied()
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let internal = config.dapr_internal_grpc_listen_address.unwrap_or(
            match configuration.name_resolution {
                NameResolution::Registry => IpAddr::V4(Ipv4Addr::LOCALHOST),
                _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            },
        );
        let metrics = configuration.metrics_enabled;
        Ok(Listeners {
            http: ApiListener::bind(config, config.dapr_http_port, "http", "Dapr HTTP").await?,
            grpc: ApiListener::bind(config, config.dapr_grpc_port, "grpc", "Dapr gRPC").await?,
            internal: bind(internal, config.dapr_internal_grpc_port, "internal").await?,
            metrics: if metrics {
                Some(bind(addr, config.metrics_port, "metrics").await?)
            } else {
                None
            },
        })
    }

    fn ports(&self) -> anyhow::Result<Ports> {
        let first = |l: &[ApiListener]| l.first().map_or(Ok(0), ApiListener::port);
        Ok(Ports {
            http: first(&self.http)?,
            grpc: first(&self.grpc)?,
            internal: self.internal.local_addr()?.port(),
            metrics: self
                .metrics
                .as_ref()
                .map(|l| l.local_addr().map(|a| a.port()))
                .transpose()?,
        })
    }
}

async fn bind(addr: IpAddr, port: Option<u16>, what: &str) -> anyhow::Result<TcpListener> {
    let sa = SocketAddr::new(addr, port.unwrap_or(0));
    appkit::server::listen(sa).with_context(|| format!("binding the {what} port {sa}"))
}

/// The Dapr Configuration `config` names (tracing, metrics), or the defaults.
pub fn load_configuration(config: &Config) -> anyhow::Result<Configuration> {
    match config.configuration_file() {
        Some(path) => Ok(resources::load_configuration(&path)?),
        None => Ok(Configuration::default()),
    }
}

pub(crate) async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// `router` behind the path normalization every listener applies before routing (a
/// router's own layers run after it has routed).
fn normalized(router: axum::Router) -> tower::util::MapRequest<axum::Router, NormalizePath> {
    tower::util::MapRequest::new(router, transport::http::normalize_path)
}

type NormalizePath = fn(axum::extract::Request) -> axum::extract::Request;

/// Serves the HTTP API: HTTP/1.1 and HTTP/2 cleartext (prior knowledge), as daprd serves
/// it; HTTP/1.1 alone when `DAPR_HTTP_DISABLE_H2C` is truthy, as daprd reads it.
fn serve_http(
    listener: ApiListener,
    router: axum::Router,
    rx: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let h2c = !std::env::var("DAPR_HTTP_DISABLE_H2C").is_ok_and(|v| crate::config::is_truthy(&v));
    let app = normalized(router);
    tokio::spawn(async move {
        let result = match (listener, h2c) {
            (ApiListener::Tcp(listener), false) => {
                appkit::server::serve_http1(appkit::server::nodelay(listener), app, stopped(rx))
                    .await;
                Ok(())
            }
            (ApiListener::Unix(listener, _file), false) => {
                appkit::server::serve_http1(listener, app, stopped(rx)).await;
                Ok(())
            }
            (ApiListener::Tcp(listener), true) => {
                axum::serve(appkit::server::nodelay(listener), app.into_make_service())
                    .with_graceful_shutdown(stopped(rx))
                    .await
            }
            (ApiListener::Unix(listener, _file), true) => {
                axum::serve(listener, app.into_make_service())
                    .with_graceful_shutdown(stopped(rx))
                    .await
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "HTTP server failed");
        }
    })
}

/// The internal port under mTLS: each request knows the verified peer it came from.
fn serve_mtls(
    listener: TlsListener,
    router: axum::Router,
    rx: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let app = normalized(router).into_make_service_with_connect_info::<Peer>();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stopped(rx))
            .await
        {
            tracing::error!(error = %e, "internal mTLS server failed");
        }
    })
}

impl Sidecar {
    /// Binds, builds and serves a sidecar for `config`, as `sidecar run` does.
    pub async fn start(config: Config) -> anyhow::Result<Sidecar> {
        config.check()?;
        let configuration = load_configuration(&config)?;
        let listeners = Listeners::bind(&config, &configuration).await?;
        Sidecar::build(config, configuration, listeners).await
    }

    /// Loads the components, wires the API and starts serving on `listeners`.
    pub async fn build(
        config: Config,
        configuration: Configuration,
        listeners: Listeners,
    ) -> anyhow::Result<Sidecar> {
        config.check()?;
        let specs = resources::load_components(&config.resources_paths(), &config.app_id)?;
        let declared_subscriptions =
            resources::load_subscriptions(&config.resources_paths(), &config.app_id)?;
        let ports = listeners.ports()?;
        let Listeners {
            http,
            grpc,
            internal,
            metrics: metrics_listener,
        } = listeners;
        let components = Components::load(&specs, &config.app_id).await?;
        refuse_memory_stores_across_hosts(&components, &configuration.name_resolution)?;
        let mtls = Mtls::from_config(&config, configuration.mtls_enabled)?;
        if let Some(m) = &mtls {
            tracing::info!(identity = %m.identity, "mTLS between sidecars is on");
        }
        let registry_dir = config.registry_dir();
        let registry = Arc::new(
            Registry::open(registry_dir.clone())
                .with_context(|| format!("opening the registry {}", registry_dir.display()))?,
        );
        let internal_addr = internal.local_addr()?;
        let own = SocketAddr::new(
            names::host_address(internal_addr.ip()),
            internal_addr.port(),
        );
        let names = Names::start(
            &configuration.name_resolution,
            registry.clone(),
            &config.app_id,
            own,
        )
        .context("starting name resolution")?;
        let app = crate::invoke::AppLink {
            channel: config
                .app_port()
                .map(|p| {
                    let address = &config.app_channel_address;
                    AppChannel::new(&config.app_protocol, address, p, config.max_body_size)
                })
                .transpose()
                .context("the app channel")?,
            token: config.app_token().map(str::to_string),
            health: crate::apphealth::AppHealth::new(config.app_health()),
        };
        let invoker = Invoker::new(
            config.app_id.clone(),
            app,
            registry.clone(),
            Arc::new(names),
            config.max_body_size,
            mtls.as_ref().map(|m| m.client.clone()),
        );
        let (shutdown, rx) = watch::channel(false);
        let api = Arc::new(Api {
            config: config.clone(),
            components,
            invoker,
            app_ready: AtomicBool::new(config.app_port().is_none()),
            extended: Default::default(),
            shutdown,
            declared_subscriptions,
            subscriptions: Default::default(),
            streams: Default::default(),
        });

        let mut tasks = Vec::new();
        // Outbox relays run whether or not there is an app (the events are the store's),
        // and listen before the API serves, so no transaction's event finds nobody.
        for (name, events) in crate::pubsub::outbox::subscribe(&api) {
            tasks.push(tokio::spawn(crate::pubsub::outbox::relay(
                api.clone(),
                name,
                events,
                rx.clone(),
            )));
        }
        let tracer = Tracer::new(
            configuration.sampling_rate,
            configuration.zipkin_endpoint.clone(),
            &config.app_id,
        );
        let traced = |router: axum::Router| match &tracer {
            Some(t) => router.layer(TraceLayer::new(t.clone())),
            None => router,
        };
        let mut router = traced(transport::http::router(api.clone()));
        if let Some(listener) = metrics_listener {
            let metrics = Metrics::new(&config.app_id);
            router = metrics.layer(router);
            tasks.push(serve_http(
                ApiListener::Tcp(listener),
                metrics.router(),
                rx.clone(),
            ));
        }
        for listener in http {
            tasks.push(serve_http(listener, router.clone(), rx.clone()));
        }
        let internal_router = traced(transport::internal::router(api.clone()));
        tasks.push(match &mtls {
            // Only sidecars call it, on HTTP/1.1.
            None => tokio::spawn(appkit::server::serve_http1(
                appkit::server::nodelay(internal),
                normalized(internal_router),
                stopped(rx.clone()),
            )),
            Some(m) => serve_mtls(
                TlsListener::new(internal, m.server.clone(), m.identity.clone())?,
                internal_router,
                rx.clone(),
            ),
        });
        for listener in grpc {
            tasks.push(serve_grpc(listener, &api, tracer.clone(), rx.clone()));
        }
        if let Some(app_port) = config.app_port() {
            let (api, host, stop) = (api.clone(), config.app_channel_address.clone(), rx.clone());
            tasks.push(tokio::spawn(async move {
                if wait_for_app(api.clone(), host, app_port, stop.clone()).await {
                    let probes = crate::apphealth::probe(&api.invoker, stop.clone());
                    // Subscriptions start once the app listens (and, with health checks,
                    // once it is healthy), as daprd's do.
                    let mut stopped = stop.clone();
                    let subscriptions = async {
                        tokio::select! {
                            () = api.invoker.health().until_healthy() => {}
                            _ = stopped.changed() => return,
                        }
                        futures_join(crate::pubsub::deliver::start(api.clone(), stop).await).await;
                    };
                    tokio::join!(probes, subscriptions);
                }
            }));
        }
        tasks.extend(sweep_memory_stores(&api, rx.clone()));

        // The servers run already: a failure from here on stops them before it returns.
        let registration = match register(&config, ports, &registry, &api) {
            Ok(r) => r,
            Err(e) => {
                api.request_shutdown();
                return Err(e);
            }
        };
        tracing::info!(
            app_id = %config.app_id,
            http_port = ports.http,
            grpc_port = ports.grpc,
            internal_port = ports.internal,
            metrics_port = ?ports.metrics,
            components = api.components.registered.len(),
            "dapr sidecar is up"
        );
        Ok(Sidecar {
            ports,
            api,
            tasks,
            registration,
        })
    }

    /// Serves until `shutdown` resolves or something asks the sidecar to stop, then stops.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::select! {
            () = shutdown => {}
            () = self.stop_requested() => {}
        }
        self.shutdown().await;
    }

    /// Resolves when something asked the sidecar to stop (`/v1.0/shutdown`, gRPC Shutdown).
    pub fn stop_requested(&self) -> impl std::future::Future<Output = ()> + use<> {
        stopped(self.api.shutdown.subscribe())
    }

    /// Stops listening, lets in-flight calls finish (for at most a few seconds), and
    /// removes the registration.
    pub async fn shutdown(mut self) {
        self.registration.take();
        self.api.invoker.names().withdraw();
        self.api.request_shutdown();
        let all = futures_join(std::mem::take(&mut self.tasks));
        if tokio::time::timeout(Duration::from_secs(5), all)
            .await
            .is_err()
        {
            tracing::warn!("sidecar servers did not stop within 5 s");
        }
        tracing::info!("dapr sidecar stopped");
    }
}

fn serve_grpc(
    listener: ApiListener,
    api: &Arc<Api>,
    tracer: Option<Arc<Tracer>>,
    rx: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let service = transport::grpc::service(api.clone());
    tokio::spawn(async move {
        let result = match listener {
            ApiListener::Tcp(listener) => {
                let incoming =
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                serve_grpc_on(incoming, service, tracer, rx).await
            }
            ApiListener::Unix(listener, _file) => {
                let incoming = futures_util::stream::unfold(listener, |l| async move {
                    Some((l.accept().await.map(|(stream, _)| stream), l))
                });
                serve_grpc_on(incoming, service, tracer, rx).await
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "gRPC server failed");
        }
    })
}

async fn serve_grpc_on<I, IO>(
    incoming: I,
    service: transport::grpc::Service,
    tracer: Option<Arc<Tracer>>,
    rx: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error>
where
    I: futures_util::Stream<Item = std::io::Result<IO>> + Send + 'static,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IO::ConnectInfo: Clone + Send + Sync + 'static,
{
    match tracer {
        Some(t) => {
            tonic::transport::Server::builder()
                .layer(TraceLayer::new(t))
                .layer(TrailersLayer)
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, stopped(rx))
                .await
        }
        None => {
            tonic::transport::Server::builder()
                .layer(TrailersLayer)
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, stopped(rx))
                .await
        }
    }
}

/// In-memory stores drop expired keys once a second; other stores expire keys themselves.
fn sweep_memory_stores(api: &Arc<Api>, mut stop: watch::Receiver<bool>) -> Option<JoinHandle<()>> {
    let any_memory = api
        .components
        .state
        .values()
        .any(|c| matches!(c.store, crate::state::StateStore::Memory(_)));
    let api = api.clone();
    any_memory.then(|| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => api.components.sweep(),
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        })
    })
}

/// Registers the sidecar under its app id (none without one), and refuses a second live
/// replica of an app whose stores are process-local.
fn register(
    config: &Config,
    ports: Ports,
    registry: &Registry,
    api: &Api,
) -> anyhow::Result<Option<Registration>> {
    if config.app_id.is_empty() {
        return Ok(None);
    }
    let registration = registry
        .register(&Entry {
            app_id: config.app_id.clone(),
            pid: std::process::id(),
            internal_port: ports.internal,
            http_port: ports.http,
            grpc_port: ports.grpc,
            app_port: config.app_port(),
            started: None,
        })
        .with_context(|| format!("registering in {}", registry.dir().display()))?;
    refuse_process_local_replicas(&api.components, registry, &config.app_id)?;
    Ok(Some(registration))
}

async fn futures_join(tasks: Vec<JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

/// Marks the app channel ready once the app's port accepts a connection, as daprd waits
/// for it before `/v1.0/healthz` says ready; false when the sidecar stopped first.
async fn wait_for_app(rt: Arc<Api>, host: String, port: u16, stop: watch::Receiver<bool>) -> bool {
    let mut logged = false;
    loop {
        if *stop.borrow() {
            return false;
        }
        if tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .is_ok()
        {
            rt.app_ready.store(true, Ordering::Release);
            tracing::info!(port, "app channel is ready");
            return true;
        }
        if !logged {
            tracing::info!(port, "waiting for the app to listen");
            logged = true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `lock.in-memory` or `state.in-memory` store lives in one sidecar's memory: two
/// sidecars of one app id (replicas, which invocation calls in turn) would each grant the
/// same lock, or keep counts of their own, and bookings would oversell without a word. So
/// a second live instance refuses to start. It checks after registering (its servers are
/// already up), so two that start at once both see each other and both stop.
fn refuse_process_local_replicas(
    components: &crate::components::Components,
    registry: &Registry,
    app_id: &str,
) -> anyhow::Result<()> {
    let local = in_memory(components);
    if local.is_empty() {
        return Ok(());
    }
    let me = std::process::id();
    let others: Vec<u32> = registry
        .entries(app_id)
        .into_iter()
        .map(|e| e.pid)
        .filter(|pid| *pid != me)
        .collect();
    if let Some(pid) = others.first() {
        anyhow::bail!(
            "component {:?} is in-memory: it lives in one sidecar's memory, and another \
             sidecar of app id {app_id:?} is already running (pid {pid}); two replicas would \
             not share it. Give every replica shared stores, e.g. \
             --resources-path components/redis (state.redis, lock.redis)",
            local.join(", ")
        );
    }
    Ok(())
}

/// The names of the lock and state components that live in this sidecar's memory.
fn in_memory(components: &crate::components::Components) -> Vec<&str> {
    let locks = components
        .lock
        .iter()
        .filter(|(_, c)| matches!(c.store, crate::lock::LockStore::Memory(_)))
        .map(|(name, _)| name.as_str());
    let states = components
        .state
        .iter()
        .filter(|(_, c)| matches!(c.store, crate::state::StateStore::Memory(_)))
        .map(|(name, _)| name.as_str());
    locks.chain(states).collect()
}

/// Name resolution across hosts (mDNS, DNS) exists for replicas on several machines, where
/// the registry folder cannot see them: a store in one sidecar's memory would then be one
/// replica's alone, unnoticed. Such components are refused there outright.
fn refuse_memory_stores_across_hosts(
    components: &crate::components::Components,
    resolution: &NameResolution,
) -> anyhow::Result<()> {
    let local = in_memory(components);
    anyhow::ensure!(
        *resolution == NameResolution::Registry || local.is_empty(),
        "component {:?} is in-memory: it lives in one sidecar's memory, which replicas on \
         other hosts (found by {resolution:?} name resolution) cannot share. Use shared \
         stores, e.g. state.redis and lock.redis",
        local.join(", ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket file a live process answers on is refused; one left by a process that is
    /// gone is replaced; ours is removed with its listener.
    #[tokio::test]
    async fn an_api_socket_replaces_a_stale_file_but_not_a_live_one() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = testkit::TempDir::new("sockets");
        let path = dir.path().join("dapr-app-http.socket");
        std::fs::write(&path, b"a file of the user's").unwrap();
        let err = bind_unix(&path, "Dapr HTTP").err().expect("a plain file");
        assert!(err.to_string().contains("not a socket"), "{err}");
        std::fs::remove_file(&path).unwrap();
        let live = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let err = bind_unix(&path, "Dapr HTTP").err().expect("a live socket");
        assert!(err.to_string().contains("in use"), "{err}");
        drop(live); // the file stays behind, as after a crash
        assert!(path.exists());
        let ours = bind_unix(&path, "Dapr HTTP").expect("a stale file is replaced");
        assert!(matches!(ours, ApiListener::Unix(..)));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "nothing else left beside it");
        drop(ours);
        assert!(!path.exists(), "removed with its listener");
    }
}
