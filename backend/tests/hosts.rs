//! The booking system across hosts (network namespaces on this machine: `testkit::Net`):
//! Redis on a host of its own, the frontend on another, two backend replicas on two more,
//! each service beside its own sidecar, the sidecars finding each other by mDNS. Keyed
//! bookings through the frontend reach both replicas; one replica's host is cut off in the
//! middle of the load and plugged back in, and serves again once the frontend's sidecar
//! stops passing it over. The ledger check ends it: no oversold night, no acknowledged
//! booking lost, none made twice from one key.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

mod common;

use common::{booking, catalogue, day, keyed_load};
use testkit::{ChildGuard, ComponentsDir, Host, Net, TempDir, check_ledger};

const MDNS: &str = "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: lan\nspec:\n  nameResolution:\n    component: mdns\n";

const SIDECAR_HTTP: u16 = 3500;
const METRICS: u16 = 9090;

/// `sidecar run` of `app` (the workspace binary of that name) on `host`, on port `port`,
/// with `env`; waits until the app answers its health check.
async fn service(
    net: &Net,
    host: &Host,
    dir: &Path,
    components: &Path,
    app: &str,
    port: u16,
    env: &[(&str, &str)],
) -> ChildGuard {
    let config = dir.join("config.yaml");
    std::fs::write(&config, MDNS).unwrap();
    let mut cmd = host.command(testkit::workspace_bin("sidecar"));
    cmd.args(["run", "--app-id", app, "--log-level", "warn"])
        .args(["--app-port", &port.to_string()])
        .args(["--dapr-http-port", &SIDECAR_HTTP.to_string()])
        .args(["--metrics-port", &METRICS.to_string()])
        .arg("--config")
        .arg(&config)
        .arg("--registry-dir")
        .arg(net.registry(dir).unwrap())
        .arg("--resources-path")
        .arg(components)
        .envs(env.iter().copied())
        .arg("--")
        .arg(testkit::workspace_bin(app))
        .args(["--log-level", "error"]);
    let child = ChildGuard::spawn(&format!("{app} on {}", host.name), &mut cmd).unwrap();
    host.wait_for(port, "/healthz", 204).await.unwrap();
    child
}

/// State and lock calls (POSTs) the backend on `host` has made to its sidecar, from the
/// sidecar's metrics: they come from bookings only (its other calls are GETs).
async fn calls_to_sidecar(host: &Host) -> u64 {
    host.run(|| async {
        let text = reqwest::get(format!("http://127.0.0.1:{METRICS}/"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with("dapr_http_server_request_count{"))
            .filter(|l| l.contains("method=\"POST\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_across_hosts_survive_a_replica_cut_off_mid_load() {
    let net = Net::new(&["redis", "frontend", "backend-1", "backend-2"])
        .expect("a test bed of network namespaces");
    let dirs: Vec<TempDir> = (0..4).map(|_| TempDir::new("host")).collect();
    let redis_host = net.host("redis");
    let redis_addr = format!("{}:6379", redis_host.ip);
    let mut redis = redis_host.command("redis-server");
    redis
        .args(["--bind", &redis_host.ip.to_string(), "--port", "6379"])
        .args(["--protected-mode", "no", "--save", ""])
        .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
        .arg(dirs[0].path())
        .stdout(std::process::Stdio::null());
    let _redis = ChildGuard::spawn("redis-server", &mut redis).unwrap();
    let components = ComponentsDir::redis_at(&redis_addr, &[]);
    let (_catalogue_dir, catalogue) = catalogue();
    let env = [
        ("HOTEL_CATALOGUE", catalogue.as_str()),
        ("LOCK_LEASE_SECONDS", "1"),
        ("REQUEST_TIMEOUT_MS", "3000"),
    ];
    let backends = [net.host("backend-1"), net.host("backend-2")];
    let mut _replicas = Vec::new();
    for (i, host) in backends.iter().enumerate() {
        let dir = dirs[2 + i].path();
        _replicas.push(service(&net, host, dir, components.path(), "backend", 5001, &env).await);
    }
    let frontend_host = net.host("frontend");
    let _frontend = service(
        &net,
        frontend_host,
        dirs[1].path(),
        components.path(),
        "frontend",
        5002,
        &env,
    )
    .await;
    let before = [
        calls_to_sidecar(backends[0]).await,
        calls_to_sidecar(backends[1]).await,
    ];

    // backend-1 is cut off a second into the load, and back four seconds later: longer
    // than any call waits (3 s), so calls to it fail and it is passed over. The load must
    // still be running at the cut; the reconnection may come after it.
    let was_cut = Arc::new(AtomicBool::new(false));
    let fault = {
        let (host, was_cut) = (backends[0].clone(), was_cut.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            host.cut().unwrap();
            was_cut.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(4)).await;
            host.reconnect().unwrap();
        })
    };
    let outcome = frontend_host
        .run(|| {
            keyed_load(
                "http://127.0.0.1:5002",
                6,
                50,
                Duration::from_secs(4),
                Duration::from_secs(40),
            )
        })
        .await
        .unwrap();
    assert!(
        was_cut.load(Ordering::SeqCst),
        "the load ended before backend-1 was cut off, so it did not run through the fault"
    );
    fault.await.unwrap();
    let after = [
        calls_to_sidecar(backends[0]).await,
        calls_to_sidecar(backends[1]).await,
    ];

    // Back on the switch, backend-1 serves again once it is no longer passed over. What it
    // had in hand when it was cut off finishes first (its calls resume): wait for quiet.
    let mut quiet = calls_to_sidecar(backends[0]).await;
    let waiting = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = calls_to_sidecar(backends[0]).await;
        if now == quiet {
            break;
        }
        quiet = now;
        assert!(
            waiting.elapsed() < Duration::from_secs(30),
            "backend-1 never went quiet"
        );
    }
    let mut acknowledged = outcome.acknowledged.clone();
    let mut n = 0;
    let back = std::time::Instant::now();
    while calls_to_sidecar(backends[0]).await == quiet {
        assert!(
            back.elapsed() < Duration::from_secs(40),
            "backend-1 never served again"
        );
        n += 1;
        let body = booking(1, &format!("after-{n}"), &day(5), &day(6), 1);
        let answer = frontend_host
            .run(move || async move {
                let r = reqwest::Client::new()
                    .post("http://127.0.0.1:5002/book")
                    .header("Idempotency-Key", format!("key-after-{n}"))
                    .json(&body)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                    .ok()?;
                if r.status() != 201 {
                    return None;
                }
                r.json::<serde_json::Value>().await.ok()
            })
            .await
            .unwrap();
        acknowledged.extend(answer);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("backend-1 served again {:?} after the load", back.elapsed());
    let components_dir = components.path().to_path_buf();
    let verdict = frontend_host
        .run(move || async move { check_ledger(&components_dir, &catalogue, &acknowledged).await })
        .await
        .unwrap()
        .unwrap();
    eprintln!(
        "across hosts: {} booked, {} sold out, {} retries, {} gave up; calls per replica {:?}; \
         violations: {}",
        outcome.acknowledged.len(),
        outcome.sold_out,
        outcome.retries,
        outcome.gave_up,
        [after[0] - before[0], after[1] - before[1]],
        verdict.violations.len()
    );
    assert!(
        after[0] > before[0] && after[1] > before[1],
        "both replicas served bookings"
    );
    assert!(outcome.unexpected.is_empty(), "{:?}", outcome.unexpected);
    assert_eq!(outcome.gave_up, 0, "bookings left undecided after 40 s");
    assert!(verdict.violations.is_empty(), "{:?}", verdict.violations);
    assert_eq!(
        (verdict.oversold_nights, verdict.lost, verdict.doubled),
        (0, 0, 0)
    );
    assert!(!outcome.acknowledged.is_empty(), "nothing was booked");
}
