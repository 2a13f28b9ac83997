//! The rows across hosts: Redis, the backend and the frontend each on a host of its own
//! (network namespaces joined by a bridge, `testkit::Net`; needs root and iproute2), the
//! sidecars finding each other by mDNS, with or without mTLS between them, and the load
//! generated on the frontend's host. Measured as the loopback rows are, so
//! `through-full-redis-w1` is their twin on one host.

use std::time::Duration;

use anyhow::Context as _;
use testkit::{ComponentsDir, Host, Net, Pki, SidecarBuilder, SidecarProcess, TempDir};

use crate::load::{Target, wait_port};
use crate::matrix::{Generator, Row, RowResult, Timing, app_cmd, measure};
use crate::stack::{Running, bin};

const BACKEND_PORT: u16 = 5001;
const FRONTEND_PORT: u16 = 5002;

/// The benchmark configuration (tracing and metrics off) with mDNS name resolution.
const LAN: &str = "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: lan\nspec:\n  tracing:\n    samplingRate: \"0\"\n  metrics:\n    enabled: false\n  nameResolution:\n    component: mdns\n";

pub fn run_row(
    row: &Row,
    t: Timing,
    seed: u64,
    rt: &tokio::runtime::Runtime,
    scratch: &TempDir,
    say: &mut dyn FnMut(&str),
) -> anyhow::Result<RowResult> {
    let net = Net::new(&["redis", "backend", "frontend"])
        .context("the hosts rows need root and iproute2 (network namespaces)")?;
    let mut running = Running::default();

    let redis_host = net.host("redis");
    // As testkit's RedisServer for the loopback rows: nothing kept on disk.
    running.adopt_app(
        "redis-server",
        testkit::redis::spawn_on(redis_host, scratch.path(), false)?,
    );
    Generator::On(rt, redis_host).run(|| wait_port(6379, Duration::from_secs(30)))?;

    let components = ComponentsDir::redis_at(&format!("{}:6379", redis_host.ip), &[]);
    let no_components = ComponentsDir::raw(&[]);
    let config = scratch.path().join("lan.yaml");
    std::fs::write(&config, LAN)?;
    let pki = if row.mtls {
        Some(Pki::new(&bin("sidecar")?, &["backend", "frontend"])?)
    } else {
        None
    };
    let sidecar = |app_id: &str, resources: &std::path::Path, port: u16, workers: usize| {
        let dir = scratch.path().join(app_id);
        std::fs::create_dir_all(&dir)?;
        // Under mTLS each host keeps a registry of its own; without it, peers prove
        // themselves with a secret every host shares.
        let registry = match &pki {
            Some(_) => dir.join("registry"),
            None => net.registry(&dir)?,
        };
        let builder = SidecarBuilder::new(bin("sidecar")?, app_id, &registry)
            .resources(resources)
            .flag("--config", config.display())
            .app_port(port)
            .command(&app_cmd(app_id, workers)?);
        anyhow::Ok(match &pki {
            Some(pki) => builder.mtls(pki),
            None => builder,
        })
    };
    let mut backend = sidecar(
        "backend",
        components.path(),
        BACKEND_PORT,
        row.backend_workers,
    )?;
    for (k, v) in [
        ("BACKEND_WORK", "full"),
        ("CONSISTENCY", row.consistency),
        ("DAPR_API_PROTOCOL", row.api),
    ] {
        backend = backend.env(k, v);
    }
    say("starting Redis, the backend and the frontend on three hosts");
    let started = start_on(rt, net.host("backend"), backend, BACKEND_PORT)?;
    running.adopt(started, true);
    let frontend = sidecar(
        "frontend",
        no_components.path(),
        FRONTEND_PORT,
        row.frontend_workers,
    )?;
    let started = start_on(rt, net.host("frontend"), frontend, FRONTEND_PORT)?;
    running.adopt(started, true);

    let target = Target::Frontend {
        port: FRONTEND_PORT,
    };
    let generator = Generator::On(rt, net.host("frontend"));
    let result = measure(row, t, seed, &target, running, scratch, say, generator);
    // The processes are stopped (by `measure`) before the hosts go.
    drop(net);
    result
}

/// Starts a sidecar and its app on `host` and waits until the app listens there.
fn start_on(
    rt: &tokio::runtime::Runtime,
    host: &Host,
    builder: SidecarBuilder,
    app_port: u16,
) -> anyhow::Result<SidecarProcess> {
    rt.block_on(host.run(move || async move {
        let sidecar = builder.spawn().await?;
        wait_port(app_port, Duration::from_secs(60))
            .with_context(|| format!("{} never listened", sidecar.app_id))?;
        anyhow::Ok(sidecar)
    }))?
}
