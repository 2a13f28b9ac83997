//! Sidecars on several hosts (network namespaces on this machine: `testkit::Net`), finding
//! each other by mDNS as `dapr run` does across a LAN, or by DNS names as on Kubernetes or
//! compose (there with mTLS between the sidecars): calls to an app with two instances reach
//! both; when one host is cut off, every call goes to the other within a bounded time; when
//! it comes back, both serve again.

use std::path::Path;
use std::time::{Duration, Instant};

use testkit::{ChildGuard, Host, Net, Pki, TempDir};

const MDNS: &str = "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: lan\nspec:\n  nameResolution:\n    component: mdns\n";

/// Kubernetes' resolver with compose's names: `<app-id>-dapr` on the shared internal port.
const DNS: &str = "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: compose\nspec:\n  nameResolution:\n    component: kubernetes\n    configuration:\n      template: \"{{.ID}}-dapr\"\n";

/// The internal port every sidecar uses under DNS names, as on Kubernetes.
const INTERNAL: &str = "50002";

/// `sidecar run` on `host` for `app_id` with the Configuration `configuration` (and a
/// static app saying the host's name, when `serves`), its HTTP API on `http_port`, its
/// internal port on 50002, mTLS with the app's certificate when `pki` is given; waits for
/// its health inside the host.
async fn start(
    net: &Net,
    host: &Host,
    dir: &Path,
    (configuration, pki): (&str, Option<&Pki>),
    app_id: &str,
    http_port: u16,
    serves: bool,
) -> ChildGuard {
    let config = dir.join("config.yaml");
    std::fs::write(&config, configuration).unwrap();
    let components = dir.join("components");
    std::fs::create_dir(&components).unwrap();
    let mut cmd = host.command(env!("CARGO_BIN_EXE_sidecar"));
    cmd.args(["run", "--app-id", app_id, "--log-level", "warn"])
        .args(["--dapr-http-port", &http_port.to_string()])
        .args(["--dapr-internal-grpc-port", INTERNAL])
        .arg("--config")
        .arg(&config)
        .arg("--registry-dir")
        .arg(net.registry(dir).unwrap())
        .arg("--resources-path")
        .arg(&components);
    if let Some(pki) = pki {
        cmd.args(pki.flags(app_id));
    }
    if serves {
        let www = dir.join("www");
        std::fs::create_dir(&www).unwrap();
        std::fs::write(www.join("who.txt"), &host.name).unwrap();
        cmd.args([
            "--app-port",
            "8000",
            "--",
            "python3",
            "-m",
            "http.server",
            "8000",
        ])
        .args(["--bind", "127.0.0.1", "--directory"])
        .arg(&www);
    }
    let child = ChildGuard::spawn(&format!("sidecar on {}", host.name), &mut cmd).unwrap();
    host.wait_for(http_port, "/v1.0/healthz", 204)
        .await
        .unwrap();
    child
}

/// `n` calls of `who.txt` on app `web` through the caller's sidecar, each given `limit`;
/// the answers in order ("b1", "b2", or the error status), each with how long it took.
async fn timed(caller: &Host, port: u16, n: usize, limit: Duration) -> Vec<(String, Duration)> {
    caller
        .run(move || async move {
            let http = reqwest::Client::new();
            let mut out = Vec::new();
            for _ in 0..n {
                let started = Instant::now();
                let r = http
                    .get(format!(
                        "http://127.0.0.1:{port}/v1.0/invoke/web/method/who.txt"
                    ))
                    .header("x-request-timeout-ms", limit.as_millis().to_string())
                    .timeout(limit + Duration::from_secs(2))
                    .send()
                    .await;
                let answer = match r {
                    Ok(r) if r.status() == 200 => r.text().await.unwrap_or_default(),
                    Ok(r) => r.status().to_string(),
                    Err(e) => format!("error: {e}"),
                };
                out.push((answer, started.elapsed()));
            }
            out
        })
        .await
        .unwrap()
}

/// The answers alone.
async fn who(caller: &Host, port: u16, n: usize, limit: Duration) -> Vec<String> {
    let calls = timed(caller, port, n, limit).await;
    calls.into_iter().map(|(answer, _)| answer).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_found_by_mdns_share_calls_and_a_cut_off_one_is_passed_over() {
    let net = Net::new(&["caller", "b1", "b2"]).expect("a test bed of network namespaces");
    replicas_share_calls_and_a_cut_off_one_is_passed_over(&net, (MDNS, None)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_found_by_dns_names_over_mtls_share_calls_and_a_cut_off_one_is_passed_over() {
    let net = Net::new(&["caller", "b1", "b2"]).expect("a test bed of network namespaces");
    // One name, two addresses, as a headless service or compose's replicas give.
    net.hosts_file(&[("web-dapr", "b1"), ("web-dapr", "b2")])
        .unwrap();
    let pki = Pki::new(Path::new(env!("CARGO_BIN_EXE_sidecar")), &["web", "caller"]).unwrap();
    replicas_share_calls_and_a_cut_off_one_is_passed_over(&net, (DNS, Some(&pki))).await;
}

async fn replicas_share_calls_and_a_cut_off_one_is_passed_over(
    net: &Net,
    configuration: (&str, Option<&Pki>),
) {
    let port = 3500;
    let mut running = Vec::new();
    // Two instances of app `web` that say which host they are on, and a caller without app.
    for (host, app, serves) in [
        ("b1", "web", true),
        ("b2", "web", true),
        ("caller", "caller", false),
    ] {
        let dir = TempDir::new("host");
        let sidecar = start(
            net,
            net.host(host),
            dir.path(),
            configuration,
            app,
            port,
            serves,
        )
        .await;
        running.push((sidecar, dir));
    }
    let caller = net.host("caller");
    // Each call's time: room for a connection that is not made (1 s) and a second try.
    let limit = Duration::from_secs(3);

    // Both instances are heard of (mDNS), then called in turn.
    testkit::wait_until(
        "calls to reach both hosts",
        Duration::from_secs(20),
        || async {
            let seen = who(caller, port, 4, limit).await;
            (seen.contains(&"b1".to_string()) && seen.contains(&"b2".to_string())).then_some(())
        },
    )
    .await
    .unwrap();
    let seen = who(caller, port, 20, limit).await;
    let to = |h: &str| seen.iter().filter(|s| *s == h).count();
    assert_eq!((to("b1"), to("b2")), (10, 10), "{seen:?}");

    // b1 is cut off: after at most a call or two that fail, every call goes to b2 and
    // b2 alone. A call that tried b1 first still ends at b2 (the caller's sidecar moves on
    // when a connection is not made within its 1 s), but only after that second; so a
    // call that went to b2 alone is one that took well under it.
    net.host("b1").cut().unwrap();
    let cut = Instant::now();
    let mut failed = 0;
    let settled = loop {
        let calls = timed(caller, port, 10, limit).await;
        if calls
            .iter()
            .all(|(s, took)| s == "b2" && *took < Duration::from_millis(500))
        {
            break cut.elapsed();
        }
        failed += calls.iter().filter(|(s, _)| s != "b2" && s != "b1").count();
        assert!(
            cut.elapsed() < Duration::from_secs(15),
            "calls still try the cut-off host: {calls:?}"
        );
    };
    eprintln!("b1 cut off: every call to b2 alone after {settled:?}, {failed} failed on the way");
    assert!(
        failed <= 2,
        "{failed} calls failed before b1 was passed over"
    );

    // b1 is back: within the time a failed instance is passed over, both serve again.
    net.host("b1").reconnect().unwrap();
    testkit::wait_until(
        "calls to reach b1 again",
        Duration::from_secs(30),
        || async {
            who(caller, port, 4, limit)
                .await
                .contains(&"b1".to_string())
                .then_some(())
        },
    )
    .await
    .unwrap();
}

/// Name resolution across hosts exists for replicas on several machines, which a store in
/// one sidecar's memory cannot serve: such a sidecar does not start (and announces nothing).
#[tokio::test]
async fn in_memory_stores_are_refused_with_name_resolution_across_hosts() {
    let dir = TempDir::new("mdns-memory");
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, MDNS).unwrap();
    let components = testkit::ComponentsDir::memory();
    let registry = TempDir::new("registry");
    // Bounded: a sidecar that starts after all is stopped when the guard drops.
    let started =
        testkit::SidecarBuilder::new(env!("CARGO_BIN_EXE_sidecar"), "backend", registry.path())
            .resources(components.path())
            .flag("--config", config.display())
            .spawn()
            .await;
    let err = started
        .err()
        .expect("the sidecar started with an in-memory store");
    assert!(err.to_string().contains("exited before serving"), "{err}");
}
