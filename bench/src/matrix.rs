//! The configurations of the original study (plus Redis, ETag, Unix-socket, gRPC-API and
//! sidecar-only rows; the backend calls its sidecar over HTTP unless a row's id ends in
//! `-grpc`), and
//! how one row is run: start it, warm up, let the machine settle, constant-rate latency
//! runs, a max-throughput run (with the CPU every process spends on it), peak memory, stop.

use std::collections::BTreeMap;
use std::process::Command;

use serde::Serialize;

use crate::load::{self, Measured, Target};
use crate::procstat;
use crate::stack::{Running, bin, sidecar};
use testkit::{ComponentsDir, Pki, RedisServer, SidecarBuilder, free_port};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shape {
    /// The backend alone, answering without Dapr.
    BackendNoDapr,
    /// The backend alone beside its sidecar, client connected, no state access.
    BackendClientOnly,
    /// The backend alone beside its sidecar, full booking.
    BackendFull,
    /// frontend → sidecar → sidecar → backend, backend answering without state.
    ThroughNoState,
    /// frontend → sidecar → sidecar → backend, full booking.
    ThroughFull,
    /// A trivial app called directly and through two sidecars, at 1,000 req/s.
    Sidecars,
}

#[derive(Debug, Clone, Serialize)]
pub struct Original {
    pub max_rps: &'static str,
    pub latency_10: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub id: &'static str,
    pub title: &'static str,
    pub shape: Shape,
    pub backend_workers: usize,
    pub frontend_workers: usize,
    pub redis: bool,
    pub consistency: &'static str,
    /// SQLite's `synchronous` for the SQLite rows: FULL (the default) or NORMAL.
    pub sqlite_sync: &'static str,
    /// Every booking carries its own `Idempotency-Key`.
    pub keyed: bool,
    /// Each app reaches its sidecar's API on Unix domain sockets (`--unix-domain-socket`).
    pub unix_sockets: bool,
    /// The API the backend calls its sidecar on (`DAPR_API_PROTOCOL`): http (its default)
    /// or grpc.
    pub api: &'static str,
    /// mTLS between the two sidecars (certificates from `sidecar mint`).
    pub mtls: bool,
    /// Redis, the backend and the frontend on three hosts (`crate::hosts`).
    pub across_hosts: bool,
    pub original: Option<Original>,
}

const fn row(id: &'static str, title: &'static str, shape: Shape, be: usize, fe: usize) -> Row {
    Row {
        id,
        title,
        shape,
        backend_workers: be,
        frontend_workers: fe,
        redis: false,
        consistency: "lock",
        sqlite_sync: "FULL",
        keyed: false,
        unix_sockets: false,
        api: "http",
        mtls: false,
        across_hosts: false,
        original: None,
    }
}

fn orig(max_rps: &'static str, latency_10: &'static str) -> Option<Original> {
    Some(Original {
        max_rps,
        latency_10,
    })
}

/// Every row, in the order of the original table.
pub fn all_rows() -> Vec<Row> {
    use Shape::*;
    vec![
        Row {
            original: orig("~3.3k (wrk -t4 -c100)", "2.1–2.9 ms"),
            ..row(
                "backend-nodapr",
                "backend alone, no state access, no Dapr client",
                BackendNoDapr,
                1,
                0,
            )
        },
        Row {
            original: orig("~600 (wrk -t2 -c50)", "3.5–4.4 ms"),
            ..row(
                "backend-client",
                "backend alone, Dapr client connected, no state access",
                BackendClientOnly,
                1,
                0,
            )
        },
        Row {
            original: orig("~200", "8.6–9.5 ms"),
            ..row(
                "backend-full-w1",
                "backend alone, full booking through Dapr state",
                BackendFull,
                1,
                0,
            )
        },
        Row {
            original: orig("~380", "8.6–9.5 ms"),
            ..row(
                "backend-full-w2",
                "backend alone, full booking through Dapr state",
                BackendFull,
                2,
                0,
            )
        },
        Row {
            original: orig("~450", "9.8–10.8 ms"),
            ..row(
                "through-nostate-f1",
                "frontend + backend through Dapr, backend without state",
                ThroughNoState,
                1,
                1,
            )
        },
        Row {
            original: orig("~500", "9.8–10.8 ms"),
            ..row(
                "through-nostate-f2",
                "frontend + backend through Dapr, backend without state",
                ThroughNoState,
                1,
                2,
            )
        },
        Row {
            original: orig("~700", "9.8–10.8 ms"),
            ..row(
                "through-nostate-f4",
                "frontend + backend through Dapr, backend without state",
                ThroughNoState,
                1,
                4,
            )
        },
        Row {
            original: orig("~150", "16–19 ms"),
            ..row(
                "through-full-w1",
                "frontend + backend through Dapr, full booking",
                ThroughFull,
                1,
                1,
            )
        },
        Row {
            original: orig("~300", "16–19 ms"),
            ..row(
                "through-full-w2",
                "frontend + backend through Dapr, full booking",
                ThroughFull,
                2,
                2,
            )
        },
        Row {
            redis: true,
            ..row(
                "backend-full-redis",
                "backend alone, full booking, Redis state and lock",
                BackendFull,
                1,
                0,
            )
        },
        Row {
            redis: true,
            ..row(
                "through-full-redis-w1",
                "frontend + backend through Dapr, full booking, Redis state and lock",
                ThroughFull,
                1,
                1,
            )
        },
        Row {
            redis: true,
            ..row(
                "through-full-redis-w2",
                "frontend + backend through Dapr, full booking, Redis state and lock",
                ThroughFull,
                2,
                2,
            )
        },
        Row {
            sqlite_sync: "NORMAL",
            ..row(
                "through-full-sync-normal",
                "frontend + backend through Dapr, full booking, SQLite synchronous=NORMAL",
                ThroughFull,
                1,
                1,
            )
        },
        Row {
            api: "grpc",
            ..row(
                "through-full-w1-grpc",
                "frontend + backend through Dapr, full booking, backend on its sidecar's gRPC API",
                ThroughFull,
                1,
                1,
            )
        },
        Row {
            api: "grpc",
            sqlite_sync: "NORMAL",
            ..row(
                "through-full-sync-normal-grpc",
                "frontend + backend through Dapr, full booking, SQLite synchronous=NORMAL, gRPC API",
                ThroughFull,
                1,
                1,
            )
        },
        Row {
            api: "grpc",
            redis: true,
            ..row(
                "through-full-redis-w1-grpc",
                "frontend + backend through Dapr, full booking, Redis, backend on the gRPC API",
                ThroughFull,
                1,
                1,
            )
        },
        Row {
            unix_sockets: true,
            ..row(
                "through-full-uds",
                "frontend + backend through Dapr, full booking, apps on their sidecars' Unix domain sockets",
                ThroughFull,
                1,
                1,
            )
        },
        Row {
            unix_sockets: true,
            redis: true,
            ..row(
                "through-full-redis-uds",
                "frontend + backend through Dapr, full booking, Redis, apps on Unix domain sockets",
                ThroughFull,
                1,
                1,
            )
        },
        Row {
            keyed: true,
            ..row(
                "through-full-keyed",
                "frontend + backend through Dapr, full booking, each with an Idempotency-Key",
                ThroughFull,
                1,
                1,
            )
        },
        Row {
            consistency: "etag",
            ..row(
                "through-full-etag",
                "frontend + backend through Dapr, full booking, ETag consistency (no lock)",
                ThroughFull,
                1,
                1,
            )
        },
        Row {
            consistency: "etag",
            redis: true,
            ..row(
                "through-full-etag-redis",
                "frontend + backend through Dapr, full booking, ETag consistency (no lock), Redis",
                ThroughFull,
                1,
                1,
            )
        },
        Row {
            mtls: true,
            ..row(
                "through-full-mtls",
                "frontend + backend through Dapr, full booking, mTLS between the sidecars",
                ThroughFull,
                1,
                1,
            )
        },
        Row {
            redis: true,
            across_hosts: true,
            ..row(
                "hosts-full-redis",
                "frontend, backend and Redis on three hosts, mDNS between the sidecars, full booking",
                ThroughFull,
                1,
                1,
            )
        },
        Row {
            redis: true,
            across_hosts: true,
            mtls: true,
            ..row(
                "hosts-full-redis-mtls",
                "frontend, backend and Redis on three hosts, mDNS and mTLS between the sidecars, full booking",
                ThroughFull,
                1,
                1,
            )
        },
        row(
            "sidecars",
            "trivial app direct vs through two sidecars, 1,000 req/s",
            Sidecars,
            0,
            0,
        ),
        Row {
            mtls: true,
            ..row(
                "sidecars-mtls",
                "trivial app direct vs through two sidecars with mTLS between them, 1,000 req/s",
                Sidecars,
                0,
                0,
            )
        },
    ]
}

/// Seconds for each phase of a row.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Timing {
    pub warm: u64,
    pub max: u64,
    pub latency: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RateResult {
    pub rate: u32,
    pub measured: Measured,
    /// CPU per request of each process (and `total`) over this run. At 1,000/s it is the
    /// work per request; at 10/s background work (checkpoints, sweeps, timers) dominates.
    pub cpu_us_per_request: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SidecarResult {
    pub rate: u32,
    pub direct: Measured,
    pub through: Measured,
    pub added_p50_ms: f64,
    pub added_p90_ms: f64,
    pub added_p99_ms: f64,
    /// CPU of each sidecar per 1,000 req/s, in vCPU.
    pub vcpu_per_1000_rps: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RowResult {
    pub row: Row,
    pub max: Option<Measured>,
    pub cpu_us_per_request: BTreeMap<String, f64>,
    pub latency: Vec<RateResult>,
    pub peak_rss_mib: BTreeMap<String, f64>,
    pub sidecars: Option<SidecarResult>,
    pub error: Option<String>,
}

/// Flushes dirty pages to disk and lets background work (checkpoints) finish.
fn settle() {
    appkit::process::sync_filesystems();
    std::thread::sleep(std::time::Duration::from_millis(500));
}

/// The app command for `sidecar run`.
pub(crate) fn app_cmd(name: &str, workers: usize) -> anyhow::Result<Vec<String>> {
    Ok(vec![
        bin(name)?.display().to_string(),
        "--workers".into(),
        workers.to_string(),
        "--log-level".into(),
        "error".into(),
    ])
}

/// Runs one row; `say` prints progress lines.
pub fn run_row(
    row: &Row,
    t: Timing,
    seed: u64,
    say: &mut dyn FnMut(&str),
) -> anyhow::Result<RowResult> {
    let rt = appkit::process::runtime(1)?;
    let scratch = testkit::TempDir::new(&format!("bench-{}", row.id));
    if row.across_hosts {
        return crate::hosts::run_row(row, t, seed, &rt, &scratch, say);
    }
    let registry = scratch.path().join("registry");
    if row.unix_sockets {
        // The sockets go in the registry folder, which must exist before they are bound.
        std::fs::create_dir_all(&registry)?;
    }
    let redis = if row.redis {
        Some(rt.block_on(RedisServer::start())?)
    } else {
        None
    };
    let components = match &redis {
        Some(r) => ComponentsDir::redis(r.port, &[]),
        None => ComponentsDir::sqlite_with(
            &scratch.path().join("state.db"),
            &[("synchronous", row.sqlite_sync.to_string())],
        ),
    };
    // Sidecars with nothing to load get an empty folder, not ~/.dapr/components.
    let no_components = ComponentsDir::raw(&[]);
    let pki = if row.mtls {
        let apps = ["backend", "frontend", "trivial", "caller"];
        Some(Pki::new(&bin("sidecar")?, &apps)?)
    } else {
        None
    };
    let sidecar_of = |app_id: &str, resources: &std::path::Path| {
        sidecar(app_id, &registry, resources).map(|b| match &pki {
            Some(pki) => b.mtls(pki),
            None => b,
        })
    };
    let mut running = Running::default();
    if let Some(r) = &redis {
        running.measured.push(("redis-server".into(), r.pid()));
    }

    if row.shape == Shape::Sidecars {
        return run_sidecars(
            row,
            t,
            &rt,
            [
                sidecar_of("trivial", no_components.path())?,
                sidecar_of("caller", no_components.path())?,
            ],
            &mut running,
            say,
        );
    }

    let backend_port = free_port();
    let work = match row.shape {
        Shape::BackendNoDapr | Shape::ThroughNoState => "no-dapr",
        Shape::BackendClientOnly => "client-only",
        _ => "full",
    };
    let backend_env = [
        ("BACKEND_WORK", work.to_string()),
        ("CONSISTENCY", row.consistency.to_string()),
        ("DAPR_API_PROTOCOL", row.api.to_string()),
    ];
    if row.shape == Shape::BackendNoDapr {
        let mut cmd = Command::new(bin("backend")?);
        cmd.args([
            "--workers",
            &row.backend_workers.to_string(),
            "--log-level",
            "error",
        ])
        .env("APP_PORT", backend_port.to_string())
        .envs(backend_env.iter().map(|(k, v)| (*k, v.as_str())));
        running.app("backend", backend_port, &mut cmd)?;
    } else {
        let mut backend = sidecar_of("backend", components.path())?
            .app_port(backend_port)
            .command(&app_cmd("backend", row.backend_workers)?);
        if row.unix_sockets {
            backend = backend.unix_sockets(&registry);
        }
        for (k, v) in &backend_env {
            backend = backend.env(k, v);
        }
        running.start(&rt, backend, Some(backend_port))?;
    }
    let target = if matches!(row.shape, Shape::ThroughNoState | Shape::ThroughFull) {
        let frontend_port = free_port();
        let mut frontend = sidecar_of("frontend", no_components.path())?
            .app_port(frontend_port)
            .command(&app_cmd("frontend", row.frontend_workers)?);
        if row.unix_sockets {
            frontend = frontend.unix_sockets(&registry);
        }
        running.start(&rt, frontend, Some(frontend_port))?;
        Target::Frontend {
            port: frontend_port,
        }
    } else {
        Target::Backend { port: backend_port }
    };

    let result = measure(
        row,
        t,
        seed,
        &target,
        running,
        &scratch,
        say,
        Generator::Here,
    );
    drop(redis);
    result
}

/// Where the load generator runs: here, or on a host of the test bed (its network).
#[derive(Clone, Copy)]
pub enum Generator<'a> {
    Here,
    On(&'a tokio::runtime::Runtime, &'a testkit::Host),
}

impl Generator<'_> {
    pub fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        match self {
            Generator::Here => work(),
            Generator::On(rt, host) => rt.block_on(host.run(move || async move { work() }))?,
        }
    }
}

/// Warm-up, the constant-rate runs and the full-speed run of a running row, with the CPU
/// of every process it measures; stops the processes at the end.
#[allow(clippy::too_many_arguments)]
pub fn measure(
    row: &Row,
    t: Timing,
    seed: u64,
    target: &Target,
    running: Running,
    scratch: &testkit::TempDir,
    say: &mut dyn FnMut(&str),
    generator: Generator<'_>,
) -> anyhow::Result<RowResult> {
    let keyed = row.keyed;
    if t.warm > 0 {
        say(&format!("warm-up {} s", t.warm));
        let target = target.clone();
        generator.run(move || load::max_throughput(&target, t.warm, 50, seed + 1000, keyed))?;
    }
    // Latency first, on a settled machine: a full-speed run leaves hundreds of MB of dirty
    // pages (SQLite) whose writeback would stall the next run's requests.
    settle();
    let mut rates = vec![10];
    if row.shape == Shape::ThroughFull {
        rates.push(1000);
    }
    let mut latency = Vec::new();
    for rate in rates {
        if row.keyed && load::wrk2_path().is_none() {
            // oha sends one set of headers: every request would reuse one key.
            say("latency: skipped (keyed bookings need wrk2; oha cannot vary a header)");
            break;
        }
        let tool = if load::wrk2_path().is_some() {
            "wrk2"
        } else {
            "oha"
        };
        say(&format!("latency at {rate} req/s: {tool}, {} s", t.latency));
        let before = procstat::snapshot(&running.measured);
        let (target, scratch) = (target.clone(), scratch.path().to_path_buf());
        let m = generator.run(move || {
            let seed = seed + u64::from(rate);
            load::constant_rate(&target, rate, t.latency, seed, &scratch, keyed)
        })?;
        let cpu = procstat::per_request(&before, &running.measured, m.requests);
        say(&format!(
            "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {}, {:.0} µs CPU per request",
            m.p50,
            m.p90,
            m.p99,
            m.p999.map_or("-".into(), |v| format!("{v:.2} ms")),
            cpu["total"]
        ));
        latency.push(RateResult {
            rate,
            measured: m,
            cpu_us_per_request: cpu,
        });
    }

    say(&format!("max throughput: wrk -t2 -c50, {} s", t.max));
    let before = procstat::snapshot(&running.measured);
    let target = target.clone();
    let max = generator.run(move || load::max_throughput(&target, t.max, 50, seed, keyed))?;
    let cpu_us_per_request = procstat::per_request(&before, &running.measured, max.requests);
    let total = cpu_us_per_request["total"];
    say(&format!(
        "{:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {:.0} µs CPU per request",
        max.rps, max.p50, max.p99, total
    ));
    let peak_rss_mib = running.peak_rss();
    drop(running);
    Ok(RowResult {
        row: row.clone(),
        max: Some(max),
        cpu_us_per_request,
        latency,
        peak_rss_mib,
        sidecars: None,
        error: None,
    })
}

/// The row that isolates the sidecars, as Dapr's own performance tests do.
fn run_sidecars(
    row: &Row,
    t: Timing,
    rt: &tokio::runtime::Runtime,
    [trivial, caller]: [SidecarBuilder; 2],
    running: &mut Running,
    say: &mut dyn FnMut(&str),
) -> anyhow::Result<RowResult> {
    let app_port = free_port();
    let mut app = Command::new(bin("trivial-app")?);
    app.arg(app_port.to_string());
    running.app("app", app_port, &mut app)?;
    running.start(rt, trivial.app_port(app_port), None)?;
    let caller_http = running.start(rt, caller, None)?.http_port;
    let rate = 1000;
    let direct = Target::Get {
        url: format!("http://127.0.0.1:{app_port}/hello"),
    };
    let through = Target::Get {
        url: format!("http://127.0.0.1:{caller_http}/v1.0/invoke/trivial/method/hello"),
    };
    if t.warm > 0 {
        load::max_throughput(&through, t.warm, 16, 0, false)?;
    }
    settle();
    // GETs need no bodies, so no scratch folder.
    let at_rate =
        |target| load::constant_rate(target, rate, t.latency, 0, std::path::Path::new("."), false);
    say(&format!("direct at {rate} req/s, {} s", t.latency));
    let d = at_rate(&direct)?;
    say(&format!(
        "through two sidecars at {rate} req/s, {} s",
        t.latency
    ));
    let before = procstat::snapshot(&running.measured);
    let started = std::time::Instant::now();
    let v = at_rate(&through)?;
    let elapsed = started.elapsed().as_secs_f64();
    let after = procstat::snapshot(&running.measured);
    let vcpu: BTreeMap<String, f64> = procstat::spent(&before, &after)
        .into_iter()
        .filter(|(k, _)| k.ends_with("-sidecar"))
        .map(|(k, secs)| (k, secs / elapsed / (v.rps.max(1.0) / 1000.0)))
        .collect();
    say(&format!(
        "added p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms",
        v.p50 - d.p50,
        v.p90 - d.p90,
        v.p99 - d.p99
    ));
    let peak_rss_mib = running.peak_rss();
    Ok(RowResult {
        row: row.clone(),
        max: None,
        cpu_us_per_request: BTreeMap::new(),
        latency: Vec::new(),
        peak_rss_mib,
        sidecars: Some(SidecarResult {
            rate,
            added_p50_ms: v.p50 - d.p50,
            added_p90_ms: v.p90 - d.p90,
            added_p99_ms: v.p99 - d.p99,
            direct: d,
            through: v,
            vcpu_per_1000_rps: vcpu,
        }),
        error: None,
    })
}
