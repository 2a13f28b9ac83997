//! The booking system across hosts (network namespaces on this machine: `testkit::Net`):
//! Redis on a host of its own, the frontend on another, two backend replicas on two more,
//! each service beside its own sidecar, the sidecars finding each other by mDNS and calling
//! each other over mTLS (certificates from `sidecar mint`, given as daprd's environment; no
//! registry secret is shared). Keyed bookings through the frontend (clients retry under
//! their keys) while a host fails:
//! - a replica's host is cut off mid-load for longer than any call waits, plugged back in,
//!   and serves again once the frontend's sidecar stops passing it over;
//! - a replica's processes are killed (`kill -9`, sidecar and app) mid-load, restarted, and
//!   serve again;
//! - the Redis host is cut off mid-load: the clients hear that the store is out of reach
//!   (503 once the sidecars have heard nothing from Redis for a second; 504 for the calls
//!   already waiting on it when the cable was pulled), never a 500 and never silence, and
//!   every booking is decided once it is back;
//! - a sidecar with a certificate from another CA calls the backend: refused, nothing booked.
//!
//! Each ends with the ledger check: no oversold night, no acknowledged booking lost, none
//! made twice from one key.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod common;

use appkit::process::{Signal, children_of, send_signal};
use common::{
    Outcome, assert_all_decided_and_the_ledger_right, booking, catalogue, day, keyed_load,
    user_body,
};
use testkit::{ChildGuard, ComponentsDir, Host, Net, Pki, TempDir, Verdict, check_ledger};

const LAN: &str = "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: lan\nspec:\n  nameResolution:\n    component: mdns\n  mtls:\n    enabled: true\n";

const SIDECAR_HTTP: u16 = 3500;
const METRICS: u16 = 9090;
const BACKEND: u16 = 5001;
const FRONTEND: u16 = 5002;
/// How long a client keeps retrying one booking before it gives up.
const GIVE_UP: Duration = Duration::from_secs(40);

/// The four hosts and what runs on them.
/// Fields drop in this order: the processes stop before their namespaces and folders go.
struct Bed {
    /// backend-1's and backend-2's `sidecar run`.
    replicas: Mutex<Vec<Option<ChildGuard>>>,
    _frontend: ChildGuard,
    _redis: ChildGuard,
    net: Net,
    pki: Pki,
    components: ComponentsDir,
    catalogue: String,
    /// Each process's folder (config, registry), kept until the end.
    dirs: Mutex<Vec<TempDir>>,
    _catalogue_dir: TempDir,
}

impl Bed {
    async fn start() -> Bed {
        let net = Net::new(&["redis", "frontend", "backend-1", "backend-2"])
            .expect("a test bed of network namespaces");
        let data = TempDir::new("redis");
        let redis_host = net.host("redis");
        let redis = testkit::redis::spawn_on(redis_host, data.path(), true).unwrap();
        let components = ComponentsDir::redis_at(&format!("{}:6379", redis_host.ip), &[]);
        let (catalogue_dir, catalogue) = catalogue();
        let dirs = Mutex::new(vec![data]);
        let pki = Pki::new(&testkit::workspace_bin("sidecar"), &["frontend", "backend"]).unwrap();
        let frontend = service(&net, &pki, &dirs, "frontend", &components, &catalogue).await;
        let bed = Bed {
            _frontend: frontend,
            _redis: redis,
            replicas: Mutex::new(Vec::new()),
            net,
            pki,
            components,
            catalogue,
            dirs,
            _catalogue_dir: catalogue_dir,
        };
        for i in 0..2 {
            let replica = bed.start_replica(i).await;
            bed.replicas.lock().unwrap().push(Some(replica));
        }
        bed
    }

    fn backend(&self, i: usize) -> &Host {
        self.net.host(["backend-1", "backend-2"][i])
    }

    fn frontend(&self) -> &Host {
        self.net.host("frontend")
    }

    async fn start_replica(&self, i: usize) -> ChildGuard {
        let host = ["backend-1", "backend-2"][i];
        service(
            &self.net,
            &self.pki,
            &self.dirs,
            host,
            &self.components,
            &self.catalogue,
        )
        .await
    }

    /// `kill -9` of replica `i`'s sidecar and app; returns once both are gone.
    async fn crash(&self, i: usize) {
        let old = self.replicas.lock().unwrap()[i].take().unwrap();
        let pids: Vec<u32> = children_of(old.pid())
            .into_iter()
            .chain([old.pid()])
            .collect();
        for pid in &pids {
            send_signal(*pid, Signal::Kill).unwrap();
        }
        drop(old);
        testkit::wait_until(
            "the killed processes to be gone",
            Duration::from_secs(10),
            || {
                let gone = pids.iter().all(|p| gone(*p));
                async move { gone.then_some(()) }
            },
        )
        .await
        .unwrap();
    }

    async fn restart(&self, i: usize) {
        let fresh = self.start_replica(i).await;
        self.replicas.lock().unwrap()[i] = Some(fresh);
    }

    /// Waits until replica `i` serves new bookings again: once what it had in hand is over
    /// (its calls to its sidecar stop rising), a booking through the frontend during which
    /// they rise. Returns the bookings acknowledged on the way, for the ledger.
    async fn serves_again(&self, i: usize) -> Vec<serde_json::Value> {
        let replica = self.backend(i);
        let mut quiet = calls_to_sidecar(replica).await;
        let waiting = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = calls_to_sidecar(replica).await;
            if now == quiet {
                break;
            }
            quiet = now;
            assert!(
                waiting.elapsed() < Duration::from_secs(30),
                "replica {i} never went quiet"
            );
        }
        let mut acknowledged = Vec::new();
        for n in 0.. {
            assert!(
                waiting.elapsed() < Duration::from_secs(70),
                "replica {i} never served again"
            );
            let before = calls_to_sidecar(replica).await;
            let body = booking(1, &format!("again-{i}-{n}"), &day(5), &day(6), 1);
            let answer = self
                .frontend()
                .run(move || async move {
                    let r = reqwest::Client::new()
                        .post(format!("http://127.0.0.1:{FRONTEND}/book"))
                        .header("Idempotency-Key", format!("key-again-{i}-{n}"))
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
            if calls_to_sidecar(replica).await > before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        acknowledged
    }

    /// The keyed load through the frontend, from the frontend's host.
    async fn load(&self, per_client: usize) -> Outcome {
        self.frontend()
            .run(move || async move {
                let url = format!("http://127.0.0.1:{FRONTEND}");
                // Longer than the frontend's own 3 s: every attempt gets the frontend's answer.
                keyed_load(&url, 6, per_client, Duration::from_secs(6), GIVE_UP).await
            })
            .await
            .unwrap()
    }

    /// State and lock calls each replica has made to its sidecar (`calls_to_sidecar`).
    async fn calls_to_replicas(&self) -> [u64; 2] {
        [
            calls_to_sidecar(self.backend(0)).await,
            calls_to_sidecar(self.backend(1)).await,
        ]
    }

    /// The ledger check on what Redis holds, from the frontend's host.
    async fn ledger(&self, acknowledged: &[serde_json::Value]) -> Verdict {
        let (components, catalogue) =
            (self.components.path().to_path_buf(), self.catalogue.clone());
        let acknowledged = acknowledged.to_vec();
        self.frontend()
            .run(move || async move { check_ledger(&components, &catalogue, &acknowledged).await })
            .await
            .unwrap()
            .unwrap()
    }

    /// What every scenario asserts at the end.
    async fn check(&self, name: &str, outcome: &Outcome) {
        let verdict = self.ledger(&outcome.acknowledged).await;
        assert_all_decided_and_the_ledger_right(name, outcome, &verdict, GIVE_UP);
    }
}

/// `sidecar run` of `app` on `host` ("frontend", or "backend-N" for app `backend`), with
/// the test bed's components and catalogue; waits until the app answers its health check.
async fn service(
    net: &Net,
    pki: &Pki,
    dirs: &Mutex<Vec<TempDir>>,
    host: &str,
    components: &ComponentsDir,
    catalogue: &str,
) -> ChildGuard {
    let (app, port) = if host == "frontend" {
        ("frontend", FRONTEND)
    } else {
        ("backend", BACKEND)
    };
    let dir = TempDir::new(host);
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, LAN).unwrap();
    let host = net.host(host);
    let mut cmd = host.command(testkit::workspace_bin("sidecar"));
    cmd.args(["run", "--app-id", app, "--log-level", "warn"])
        .args(["--app-port", &port.to_string()])
        .args(["--dapr-http-port", &SIDECAR_HTTP.to_string()])
        .args(["--metrics-port", &METRICS.to_string()])
        .arg("--config")
        .arg(&config)
        // A registry of the host's own: under mTLS no secret needs sharing.
        .arg("--registry-dir")
        .arg(dir.path().join("registry"))
        .env("DAPR_CERT_CHAIN_FILE", pki.cert(app))
        .env("DAPR_CERT_KEY_FILE", pki.key(app))
        .env(
            "DAPR_TRUST_ANCHORS",
            std::fs::read_to_string(pki.ca()).unwrap(),
        )
        .arg("--resources-path")
        .arg(components.path())
        .env("HOTEL_CATALOGUE", catalogue)
        .env("LOCK_LEASE_SECONDS", "1")
        .env("REQUEST_TIMEOUT_MS", "3000")
        .arg("--")
        .arg(testkit::workspace_bin(app))
        .args(["--log-level", "error"]);
    let child = ChildGuard::spawn(&format!("{app} on {}", host.name), &mut cmd).unwrap();
    dirs.lock().unwrap().push(dir);
    host.wait_for(port, "/healthz", 204).await.unwrap();
    child
}

/// Whether process `pid` has ended: no longer there, or a zombie nobody has reaped yet
/// (the killed app's parent, its sidecar, died with it).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
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

/// How long a host stays cut off: longer than any call waits (3 s).
const CUT: Duration = Duration::from_secs(4);

/// Pulls `host`'s cable, marks it `cut`, and plugs it back in after `how_long`.
async fn cut_off_for(how_long: Duration, host: &Host, cut: &AtomicBool) {
    host.cut().unwrap();
    cut.store(true, Ordering::SeqCst);
    tokio::time::sleep(how_long).await;
    host.reconnect().unwrap();
}

/// Runs `fault` a second into the load; the load must still be running when it has acted
/// (`acted` set), and the fault is awaited to its end (a reconnection may come after the
/// load).
async fn during_load<F>(bed: &Bed, per_client: usize, acted: &AtomicBool, fault: F) -> Outcome
where
    F: Future<Output = ()>,
{
    let fault = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        fault.await;
    };
    let load = async {
        let outcome = bed.load(per_client).await;
        assert!(
            acted.load(Ordering::SeqCst),
            "the load ended before the fault acted, so it did not run through it"
        );
        outcome
    };
    let (outcome, ()) = tokio::join!(load, fault);
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_across_hosts_survive_a_replica_cut_off_mid_load() {
    let bed = Bed::start().await;
    let before = bed.calls_to_replicas().await;
    // Cut off for 4 s: longer than any call waits (3 s), so calls to it fail and it is
    // passed over.
    let cut = AtomicBool::new(false);
    // The cut comes once backend-1 has served a booking of the load: the frontend's
    // sidecar learns of each replica by mDNS, and on a busy machine the first second of
    // the load may go to backend-2 alone.
    let fault = async {
        testkit::wait_until(
            "backend-1 to serve a booking",
            Duration::from_secs(20),
            || async { (bed.calls_to_replicas().await[0] > before[0]).then_some(()) },
        )
        .await
        .unwrap();
        cut_off_for(CUT, bed.backend(0), &cut).await;
    };
    let outcome = during_load(&bed, 50, &cut, fault).await;
    let after = bed.calls_to_replicas().await;
    assert!(
        after[0] > before[0] && after[1] > before[1],
        "both replicas served bookings: {before:?} → {after:?}"
    );

    // Back on the switch, backend-1 serves again once it is no longer passed over.
    let mut outcome = outcome;
    outcome.acknowledged.extend(bed.serves_again(0).await);
    bed.check("a replica cut off", &outcome).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_across_hosts_survive_a_replica_killed_and_restarted() {
    let bed = Bed::start().await;
    let killed = AtomicBool::new(false);
    let mut outcome = during_load(&bed, 50, &killed, async {
        bed.crash(1).await;
        killed.store(true, Ordering::SeqCst);
        bed.restart(1).await;
    })
    .await;
    outcome.acknowledged.extend(bed.serves_again(1).await);
    bed.check("a replica killed and restarted", &outcome).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_across_hosts_wait_out_the_redis_host_cut_off() {
    let bed = Bed::start().await;
    let cut = AtomicBool::new(false);
    let outcome = during_load(
        &bed,
        50,
        &cut,
        cut_off_for(CUT, bed.net.host("redis"), &cut),
    )
    .await;
    // The calls in flight when the cable is pulled end at their deadline (504); once the
    // sidecars have heard nothing from Redis for a second, calls fail at once (503).
    assert!(
        outcome.errors.contains(&503),
        "no client was told at once that the store is out of reach: {:?}",
        outcome.errors
    );
    assert!(
        outcome.errors.iter().all(|s| [503, 504].contains(s)),
        "a store out of reach is a 503, or a 504 for a call already waiting on it, never \
         a 500: {:?}",
        outcome.errors
    );
    bed.check("the Redis host cut off", &outcome).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_with_another_cas_certificate_books_nothing() {
    let bed = Bed::start().await;
    let other = Pki::new(&testkit::workspace_bin("sidecar"), &["intruder"]).unwrap();
    // Beside the frontend, on its host: a sidecar of another trust.
    let dir = TempDir::new("intruder");
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, LAN).unwrap();
    let mut cmd = bed.frontend().command(testkit::workspace_bin("sidecar"));
    cmd.args(["run", "--app-id", "intruder", "--log-level", "error"])
        .args(["--dapr-http-port", "3600", "--metrics-port", "9091"])
        .arg("--config")
        .arg(&config)
        .arg("--registry-dir")
        .arg(dir.path().join("registry"))
        .arg("--resources-path")
        .arg(bed.components.path())
        .arg("--enable-mtls")
        .arg("--cert-chain-file")
        .arg(other.cert("intruder"))
        .arg("--cert-key-file")
        .arg(other.key("intruder"))
        // It trusts the backend's CA as well as its own: what refuses it is the backend.
        .env(
            "DAPR_TRUST_ANCHORS",
            std::fs::read_to_string(bed.pki.ca()).unwrap()
                + &std::fs::read_to_string(other.ca()).unwrap(),
        );
    let _intruder = ChildGuard::spawn("the intruder's sidecar", &mut cmd).unwrap();
    bed.frontend()
        .wait_for(3600, "/v1.0/healthz", 204)
        .await
        .unwrap();

    let before = bed.calls_to_replicas().await;
    let answers = bed
        .frontend()
        .run(|| async {
            let mut answers = Vec::new();
            for n in 0..20 {
                let body = user_body(&format!("intruder-{n}"), &day(1), &day(2), 1);
                let r = reqwest::Client::new()
                    .post("http://127.0.0.1:3600/v1.0/invoke/backend/method/book_hotel/1")
                    .json(&body)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                    .unwrap();
                answers.push((r.status().as_u16(), r.text().await.unwrap()));
            }
            answers
        })
        .await
        .unwrap();
    for (status, text) in &answers {
        assert_eq!(*status, 500, "{text}");
        assert!(
            text.contains("ERR_DIRECT_INVOKE") && text.contains("UnknownCA"),
            "refused by the backend's sidecar for its certificate: {text}"
        );
    }
    let after = bed.calls_to_replicas().await;
    assert_eq!(before, after, "no replica heard of the intruder's bookings");

    // The frontend, whose certificate the bundle vouches for, books on both replicas.
    let outcome = bed.load(20).await;
    let served = bed.calls_to_replicas().await;
    assert!(
        served[0] > after[0] && served[1] > after[1],
        "both replicas served the frontend: {after:?} → {served:?}"
    );
    bed.check("a sidecar of another CA", &outcome).await;
}
