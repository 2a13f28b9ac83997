//! Starting and stopping one sidecar: bind its listeners (a missing port means a free one),
//! load its components, serve the HTTP, gRPC, internal and metrics endpoints, register it
//! in the name registry, and shut all of it down gracefully.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::ServiceExt as _;
use axum::serve::ListenerExt as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{Api, AppInfo};
use crate::components::Components;
use crate::invoke::Invoker;
use crate::metrics::Metrics;
use crate::registry::{Entry, Registration, Registry};
use crate::resources::{self, Configuration};
use crate::trace::{TraceLayer, Tracer};
use crate::transport;

/// Everything a sidecar needs to start; the launcher fills it from `dapr run` flags.
#[derive(Debug, Clone)]
pub struct Options {
    pub app_id: String,
    pub app_port: Option<u16>,
    pub app_protocol: String,
    pub app_channel_address: String,
    pub http_port: Option<u16>,
    pub grpc_port: Option<u16>,
    pub internal_port: Option<u16>,
    pub metrics_port: Option<u16>,
    pub resources_paths: Vec<PathBuf>,
    pub config: Option<PathBuf>,
    pub api_token: Option<String>,
    pub app_token: Option<String>,
    pub registry_dir: PathBuf,
    pub enable_api_logging: bool,
    pub max_body_size: usize,
    pub listen_address: IpAddr,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            app_id: String::new(),
            app_port: None,
            app_protocol: "http".into(),
            app_channel_address: "127.0.0.1".into(),
            http_port: None,
            grpc_port: None,
            internal_port: None,
            metrics_port: None,
            resources_paths: Vec::new(),
            config: None,
            api_token: None,
            app_token: None,
            registry_dir: crate::registry::default_dir(),
            enable_api_logging: false,
            max_body_size: 4 << 20,
            listen_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub http: u16,
    pub grpc: u16,
    pub internal: u16,
    pub metrics: Option<u16>,
}

pub struct Sidecar {
    pub ports: Ports,
    pub runtime: Arc<Api>,
    pub config: Configuration,
    tasks: Vec<JoinHandle<()>>,
    registration: Option<Registration>,
}

async fn bind(addr: IpAddr, port: Option<u16>, what: &str) -> anyhow::Result<TcpListener> {
    let sa = SocketAddr::new(addr, port.unwrap_or(0));
    TcpListener::bind(sa)
        .await
        .with_context(|| format!("binding the {what} port {sa}"))
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    rx: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let svc = tower::util::MapRequestLayer::new(transport::http::normalize_path);
    let app = tower::Layer::layer(&svc, router);
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app.into_make_service())
            .with_graceful_shutdown(stopped(rx))
            .await
        {
            tracing::error!(error = %e, "HTTP server failed");
        }
    })
}

impl Sidecar {
    pub async fn start(opts: Options) -> anyhow::Result<Sidecar> {
        if opts.app_protocol != "http" {
            anyhow::bail!(
                "--app-protocol {} is not supported; this sidecar calls apps over http",
                opts.app_protocol
            );
        }
        if opts.app_id.contains('.') {
            anyhow::bail!("--app-id {:?} must not contain dots", opts.app_id);
        }
        let config = match &opts.config {
            Some(path) => resources::load_configuration(path)?,
            None => Configuration::default(),
        };
        let specs = resources::load_components(&opts.resources_paths, &opts.app_id)?;

        let addr = opts.listen_address;
        let http = bind(addr, opts.http_port, "Dapr HTTP").await?;
        let grpc = bind(addr, opts.grpc_port, "Dapr gRPC").await?;
        let internal = bind(addr, opts.internal_port, "internal").await?;
        let metrics_listener = if config.metrics_enabled {
            Some(bind(addr, opts.metrics_port, "metrics").await?)
        } else {
            None
        };
        let ports = Ports {
            http: http.local_addr()?.port(),
            grpc: grpc.local_addr()?.port(),
            internal: internal.local_addr()?.port(),
            metrics: metrics_listener
                .as_ref()
                .map(|l| l.local_addr().map(|a| a.port()))
                .transpose()?,
        };

        let components = Components::load(&specs, &opts.app_id).await?;
        let registry = Arc::new(Registry::new(opts.registry_dir.clone()));
        let invoker = Invoker::new(
            opts.app_id.clone(),
            opts.app_port.map(|p| (opts.app_channel_address.clone(), p)),
            opts.app_token.clone(),
            registry.clone(),
            opts.max_body_size,
        );
        let (shutdown, rx) = watch::channel(false);
        let runtime = Arc::new(Api {
            info: AppInfo {
                app_id: opts.app_id.clone(),
                app_port: opts.app_port,
                app_protocol: opts.app_protocol.clone(),
                app_channel_address: opts.app_channel_address.clone(),
                api_token: opts.api_token.clone(),
                enable_api_logging: opts.enable_api_logging,
            },
            components,
            invoker,
            app_ready: AtomicBool::new(opts.app_port.is_none()),
            extended: Default::default(),
            shutdown,
        });

        let mut tasks = Vec::new();
        let tracer = Tracer::new(
            config.sampling_rate,
            config.zipkin_endpoint.clone(),
            &opts.app_id,
        );
        let traced = |router: axum::Router| match &tracer {
            Some(t) => router.layer(TraceLayer::new(t.clone())),
            None => router,
        };
        let mut router = traced(transport::http::router(runtime.clone()));
        if let Some(listener) = metrics_listener {
            let metrics = Metrics::new(&opts.app_id);
            router = metrics.layer(router);
            tasks.push(serve_http(listener, metrics.router(), rx.clone()));
        }
        tasks.push(serve_http(http, router, rx.clone()));
        tasks.push(serve_http(
            internal,
            traced(transport::internal::router(runtime.clone())),
            rx.clone(),
        ));
        let grpc_rx = rx.clone();
        let grpc_service = transport::grpc::service(runtime.clone());
        let grpc_tracer = tracer.clone();
        tasks.push(tokio::spawn(async move {
            let incoming =
                tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true));
            let result = match grpc_tracer {
                Some(t) => {
                    tonic::transport::Server::builder()
                        .layer(TraceLayer::new(t))
                        .add_service(grpc_service)
                        .serve_with_incoming_shutdown(incoming, stopped(grpc_rx))
                        .await
                }
                None => {
                    tonic::transport::Server::builder()
                        .add_service(grpc_service)
                        .serve_with_incoming_shutdown(incoming, stopped(grpc_rx))
                        .await
                }
            };
            if let Err(e) = result {
                tracing::error!(error = %e, "gRPC server failed");
            }
        }));
        if let Some(app_port) = opts.app_port {
            tasks.push(tokio::spawn(wait_for_app(
                runtime.clone(),
                opts.app_channel_address.clone(),
                app_port,
                rx.clone(),
            )));
        }
        if runtime
            .components
            .state
            .values()
            .any(|c| matches!(c.store, crate::state::StateStore::Memory(_)))
        {
            let rt = runtime.clone();
            let mut stop = rx.clone();
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tokio::select! {
                        _ = tick.tick() => rt.components.sweep(),
                        _ = stop.wait_for(|s| *s) => break,
                    }
                }
            }));
        }

        let registration = if opts.app_id.is_empty() {
            None
        } else {
            Some(
                registry
                    .register(&Entry {
                        app_id: opts.app_id.clone(),
                        pid: std::process::id(),
                        internal_port: ports.internal,
                        http_port: ports.http,
                        grpc_port: ports.grpc,
                        app_port: opts.app_port,
                    })
                    .with_context(|| format!("registering in {}", registry.dir().display()))?,
            )
        };
        if registration.is_some() {
            refuse_process_local_replicas(&runtime.components, &registry, &opts.app_id)?;
        }
        tracing::info!(
            app_id = %opts.app_id,
            http_port = ports.http,
            grpc_port = ports.grpc,
            internal_port = ports.internal,
            metrics_port = ?ports.metrics,
            components = runtime.components.registered.len(),
            "dapr sidecar is up"
        );
        Ok(Sidecar {
            ports,
            runtime,
            config,
            tasks,
            registration,
        })
    }

    /// Resolves when something asked the sidecar to stop (`/v1.0/shutdown`, gRPC Shutdown).
    pub fn stop_requested(&self) -> impl std::future::Future<Output = ()> + use<> {
        stopped(self.runtime.shutdown.subscribe())
    }

    /// Stops listening, lets in-flight calls finish (for at most a few seconds), and
    /// removes the registration.
    pub async fn shutdown(mut self) {
        self.registration.take();
        self.runtime.request_shutdown();
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

async fn futures_join(tasks: Vec<JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

/// Marks the app channel ready once the app's port accepts a connection, as daprd waits
/// for it before `/v1.0/healthz` says ready.
async fn wait_for_app(rt: Arc<Api>, host: String, port: u16, stop: watch::Receiver<bool>) {
    let mut logged = false;
    loop {
        if *stop.borrow() {
            return;
        }
        if tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .is_ok()
        {
            rt.app_ready.store(true, Ordering::Release);
            tracing::info!(port, "app channel is ready");
            return;
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
    let local: Vec<&str> = locks.chain(states).collect();
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
