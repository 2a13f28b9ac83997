//! The fault suite: concurrent keyed bookings through the frontend, against two backend
//! replicas on one Redis (state and lock), while something breaks. Clients retry under the
//! same `Idempotency-Key` on every error and timeout, as a careful client would. Each case
//! ends with the ledger check on what Redis holds: no oversold night, no acknowledged
//! booking lost, no request booked twice.
//!
//! The backend announces its bookings (`BOOKING_EVENTS`) through its state store's outbox
//! on `pubsub.redis`, and the notifier keeps what it hears: after each case, the events
//! heard must be exactly what committed (`ledger --events`).
//!
//! The cases: a store that stalls past the lease, a replica paused (SIGSTOP) past its lease
//! while it holds the lock, `kill -9` of a replica and of a replica's sidecar (each then
//! restarted), Redis killed and restarted (append-only file on), the notifier and its
//! sidecar killed and restarted, and clients that time out and retry. Bounded: a few
//! seconds of load per case, loopback only.

use std::sync::Arc;
use std::time::Duration;

mod common;

use appkit::process::{Signal, send_signal};
use common::{
    assert_all_decided_and_the_ledger_right, backend_replica, booking, catalogue, day, keyed_load,
};
use serde_json::Value;
use test_case::test_case;
use testkit::{
    ComponentsDir, NotifierProcess, RedisServer, SidecarBuilder, SidecarProcess, TempDir,
    check_ledger, check_ledger_and_events,
};

/// Two backend replicas and a frontend, each beside its own sidecar, on one Redis.
/// Fields drop in order: Redis last, after every process that uses it.
struct FaultStack {
    components: ComponentsDir,
    registry: TempDir,
    catalogue: String,
    replicas: Vec<Replica>,
    _frontend: SidecarProcess,
    frontend_url: String,
    notifier: NotifierProcess,
    _catalogue_dir: TempDir,
    redis: RedisServer,
}

/// How long a pub/sub message a crashed sidecar held waits before another reads it.
const PROCESSING_TIMEOUT_MS: u64 = 5000;

struct Replica {
    sidecar: SidecarProcess,
    port: u16,
    env: Vec<(String, String)>,
    /// Apps left running when their sidecar was killed; killed with the replica.
    orphans: Vec<u32>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        for pid in &self.orphans {
            kill(Signal::Kill, *pid);
        }
    }
}

impl FaultStack {
    /// `env` goes to both replicas.
    async fn start(env: &[(&str, &str)]) -> FaultStack {
        let (catalogue_dir, catalogue) = catalogue();
        let redis = RedisServer::start_durable().await.unwrap();
        let components = ComponentsDir::redis_with_events(redis.port, PROCESSING_TIMEOUT_MS);
        let registry = TempDir::new("registry");
        let notifier = NotifierProcess::spawn(registry.path(), components.path())
            .await
            .unwrap();
        let frontend_port = testkit::free_port();
        let frontend_bin = testkit::workspace_bin("frontend").display().to_string();
        let frontend = SidecarBuilder::new(
            testkit::workspace_bin("sidecar"),
            "frontend",
            registry.path(),
        )
        .resources(components.path())
        .app_port(frontend_port)
        .env("REQUEST_TIMEOUT_MS", "3000")
        .command(&[&frontend_bin, "--log-level", "error"])
        .spawn()
        .await
        .unwrap();
        let mut stack = FaultStack {
            components,
            registry,
            catalogue,
            replicas: Vec::new(),
            _frontend: frontend,
            frontend_url: format!("http://127.0.0.1:{frontend_port}"),
            notifier,
            _catalogue_dir: catalogue_dir,
            redis,
        };
        for _ in 0..2 {
            let env = env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let r = stack.start_replica(env, testkit::free_port()).await;
            stack.replicas.push(r);
        }
        stack
    }

    async fn start_replica(&self, env: Vec<(String, String)>, port: u16) -> Replica {
        let mut all: Vec<(&str, &str)> = vec![
            ("HOTEL_CATALOGUE", self.catalogue.as_str()),
            ("LOCK_LEASE_SECONDS", "1"),
            ("REQUEST_TIMEOUT_MS", "3000"),
            ("BOOKING_EVENTS", "true"),
        ];
        all.extend(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let sidecar =
            backend_replica(self.registry.path(), self.components.path(), port, &all).await;
        Replica {
            sidecar,
            port,
            env,
            orphans: Vec::new(),
        }
    }

    /// `kill -9` of replica `i`'s backend (its `sidecar run` then stops too), and a new
    /// replica in its place.
    async fn crash_and_restart_backend(&mut self, i: usize) {
        let mut old = self.replicas.remove(i);
        for pid in old.sidecar.app_pids() {
            kill(Signal::Kill, pid);
        }
        old.sidecar.stop();
        let fresh = self
            .start_replica(std::mem::take(&mut old.env), old.port)
            .await;
        self.replicas.insert(i, fresh);
    }

    /// `kill -9` of replica `i`'s sidecar; its app stays up, and a new sidecar takes the
    /// old one's HTTP and gRPC ports, which the app reconnects to by itself: the app's
    /// state reads go through again before the fault is over.
    async fn crash_and_restart_sidecar(&mut self, i: usize) {
        let replica = &mut self.replicas[i];
        let (http_port, grpc, app_port) = (
            replica.sidecar.http_port,
            replica.sidecar.grpc_port,
            replica.port,
        );
        replica.orphans.extend(replica.sidecar.app_pids());
        replica.sidecar.kill().unwrap();
        replica.sidecar = SidecarBuilder::new(
            testkit::workspace_bin("sidecar"),
            "backend",
            self.registry.path(),
        )
        .resources(self.components.path())
        .app_port(app_port)
        .flag("--dapr-http-port", http_port)
        .flag("--dapr-grpc-port", grpc)
        .spawn()
        .await
        .unwrap();
        let http = reqwest::Client::new();
        let read = format!(
            "http://127.0.0.1:{app_port}/hotels/1/availability?check_in={}&check_out={}",
            day(0),
            day(1)
        );
        testkit::wait_until(
            "the orphaned backend to read through its new sidecar",
            Duration::from_secs(10),
            || {
                let r = http.get(&read).send();
                async move { r.await.ok().filter(|r| r.status() == 200).map(|_| ()) }
            },
        )
        .await
        .unwrap();
    }
}

fn kill(signal: Signal, pid: u32) {
    send_signal(pid, signal).unwrap();
}

/// Runs the load (`clients` clients, 20 bookings each) while `fault` acts on the stack,
/// then the ledger check.
async fn case<F, Fut>(
    name: &str,
    env: &[(&str, &str)],
    clients: usize,
    client_timeout: Duration,
    fault: F,
) where
    F: FnOnce(Arc<tokio::sync::Mutex<FaultStack>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let stack = Arc::new(tokio::sync::Mutex::new(FaultStack::start(env).await));
    let url = stack.lock().await.frontend_url.clone();
    let fault = tokio::spawn(fault(stack.clone()));
    let outcome = keyed_load(&url, clients, 20, client_timeout, Duration::from_secs(30)).await;
    assert!(
        fault.is_finished(),
        "{name}: the load ended before the fault did, so it did not run through it"
    );
    fault.await.unwrap();
    let stack = stack.lock().await;
    let verdict = check_ledger(
        stack.components.path(),
        &stack.catalogue,
        &outcome.acknowledged,
    )
    .await
    .unwrap();
    assert_all_decided_and_the_ledger_right(name, &outcome, &verdict, Duration::from_secs(30));
    the_events_heard_are_what_committed(name, &stack, &verdict, &outcome.acknowledged, 0).await;
}

/// Waits until the notifier has heard as many bookings as the store holds (`stored`: the
/// ledger's verdict on it, plus those `cancelled`) and then a second without news, then checks with `ledger --events` that
/// it heard exactly those. Events of a transaction in doubt wait for its marker, and those
/// a crashed sidecar held for the processing timeout: the wait allows for both. (An event
/// of a failed change later than that second would be missed here; the relay drops those
/// it knows failed at once, and waits for the marker of those in doubt.)
async fn the_events_heard_are_what_committed(
    name: &str,
    stack: &FaultStack,
    stored: &testkit::Verdict,
    acknowledged: &[Value],
    cancelled: usize,
) {
    let stored = stored.json["reservations"].as_u64().unwrap() as usize;
    let heard = stack
        .notifier
        .heard(
            stored + cancelled,
            cancelled,
            Duration::from_secs(40),
            Duration::from_secs(1),
        )
        .await;
    let verdict = check_ledger_and_events(
        stack.components.path(),
        &stack.catalogue,
        acknowledged,
        Some(&stack.notifier.inbox()),
    )
    .await
    .unwrap();
    eprintln!("{name}: events {}", verdict.json["events"]);
    assert!(
        verdict.violations.is_empty(),
        "{name}: {:?} (waiting: {heard:?})",
        verdict.violations
    );
    heard.unwrap();
}

/// Waits until some booking holds a hotel's lock in Redis.
async fn a_lock_is_held(redis: &RedisServer) {
    testkit::wait_until(
        "a booking to hold a lock",
        Duration::from_secs(10),
        || async {
            for hotel in 1..=3 {
                if redis
                    .exists(&format!("lock||backend||hotel-{hotel}"))
                    .await
                    .ok()?
                {
                    return Some(());
                }
            }
            None
        },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_stalls_past_the_lease() {
    case(
        "store stall",
        &[],
        6,
        Duration::from_secs(5),
        |stack| async move {
            let s = stack.lock().await;
            a_lock_is_held(&s.redis).await;
            // Writes stop for twice the lease while bookings hold locks.
            let r = s
                .redis
                .command(&["CLIENT", "PAUSE", "2000", "WRITE"])
                .await
                .unwrap();
            assert!(r.starts_with("+OK"), "{r}");
            // The fault lasts until a write goes through again.
            testkit::wait_until("writes to resume", Duration::from_secs(10), || async {
                let r = s.redis.command(&["SET", "fault-probe", "1"]).await.ok()?;
                r.starts_with("+OK").then_some(())
            })
            .await
            .unwrap();
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_paused_past_its_lease_while_holding_the_lock() {
    // Every booking lingers a little inside the lock, so a pause lands there.
    case(
        "SIGSTOP",
        &[("BACKEND_HOLD_LOCK_MS", "100")],
        6,
        Duration::from_secs(5),
        |stack| async move {
            let s = stack.lock().await;
            a_lock_is_held(&s.redis).await;
            let pids = s.replicas[0].sidecar.app_pids();
            for pid in &pids {
                kill(Signal::Stop, *pid);
            }
            // Past the 1 s lease: the others take the locks it held and go on.
            tokio::time::sleep(Duration::from_millis(2500)).await;
            for pid in &pids {
                kill(Signal::Cont, *pid);
            }
        },
    )
    .await;
}

/// What crashes (SIGKILL) while a booking holds a lock, and comes back.
#[derive(Clone, Copy)]
enum Crash {
    Backend,
    Sidecar,
    Redis,
    /// The notifier and its sidecar, once it has heard a few bookings.
    Notifier,
}

#[test_case("kill -9 backend", Crash::Backend ; "a_backend_killed_then_restarted")]
#[test_case("kill -9 sidecar", Crash::Sidecar ; "its_sidecar_killed_then_restarted")]
#[test_case("Redis restart", Crash::Redis ; "redis_killed_and_restarted")]
#[test_case("kill -9 notifier", Crash::Notifier ; "the_notifier_killed_then_restarted")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_mid_load(name: &str, crash: Crash) {
    case(
        name,
        &[],
        6,
        Duration::from_secs(5),
        move |stack| async move {
            let mut s = stack.lock().await;
            a_lock_is_held(&s.redis).await;
            match crash {
                Crash::Backend => s.crash_and_restart_backend(0).await,
                Crash::Sidecar => s.crash_and_restart_sidecar(0).await,
                Crash::Redis => s.redis.restart().await.unwrap(),
                Crash::Notifier => {
                    let few = Duration::from_secs(10);
                    s.notifier.heard(5, 0, few, Duration::ZERO).await.unwrap();
                    // Paused, so the crash surely leaves deliveries pending in its group.
                    s.notifier.pause().unwrap();
                    testkit::wait_until("a delivery to be pending", few, || async {
                        let r = s
                            .redis
                            .command(&["XPENDING", "bookings", "notifier"])
                            .await
                            .ok()?;
                        let pending: u64 =
                            r.lines().nth(1)?.strip_prefix(':')?.trim().parse().ok()?;
                        (pending > 0).then_some(())
                    })
                    .await
                    .unwrap();
                    s.notifier.crash_and_restart().await.unwrap();
                }
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_time_out_and_retry_under_their_keys() {
    // Bookings linger inside the lock longer than the clients wait, so requests time out
    // while bookings are being made, and are sent again under the same key.
    case(
        "client timeouts",
        &[("BACKEND_HOLD_LOCK_MS", "150")],
        6,
        Duration::from_millis(100),
        |_| async {},
    )
    .await;
}

/// Optimistic bookings (no lock) of the same rooms: many transactions fail on an ETag
/// after their events went to the outbox, and none of those may be announced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_that_fail_on_their_etags() {
    case(
        "ETag conflicts",
        &[("CONSISTENCY", "etag")],
        24,
        Duration::from_secs(5),
        |_| async {},
    )
    .await;
}

/// Without a fault, each kind of answer once: two bookings, a sold-out refusal, a keyed
/// booking sent twice, a keyed cancel sent twice, a cancel of what is gone. The notifier
/// hears each booking and the cancel once, and nothing of the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_committed_change_is_announced_once() {
    let stack = FaultStack::start(&[]).await;
    let http = reqwest::Client::new();
    let url = &stack.frontend_url;
    let send = async |req: reqwest::RequestBuilder| {
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    let book = |user: &str, hotel: u32, key: &str| {
        http.post(format!("{url}/book"))
            .header("Idempotency-Key", key)
            .json(&booking(hotel, user, &day(5), &day(6), 1))
    };
    let (status, last_room) = send(book("ann", 3, "k-ann")).await;
    assert_eq!(status, 201, "{last_room}");
    let (status, refused) = send(book("bob", 3, "k-bob")).await;
    assert_eq!(status, 409, "{refused}");
    let (status, first) = send(book("cy", 1, "k-cy")).await;
    assert_eq!(status, 201, "{first}");
    let (status, again) = send(book("cy", 1, "k-cy")).await;
    assert_eq!((status, &again), (201, &first));
    let cancel = format!("{url}/reservations/{}", last_room["id"].as_str().unwrap());
    for _ in 0..2 {
        let (status, body) = send(http.delete(&cancel).header("Idempotency-Key", "k-cancel")).await;
        assert_eq!((status, &body), (200, &last_room));
    }
    let (status, body) = send(http.delete(&cancel)).await;
    assert_eq!(status, 404, "{body}");

    let acknowledged = [first];
    let stored = check_ledger(stack.components.path(), &stack.catalogue, &acknowledged)
        .await
        .unwrap();
    the_events_heard_are_what_committed("no fault", &stack, &stored, &acknowledged, 1).await;
    let counts = stack.notifier.counts().await.unwrap();
    assert_eq!(
        (
            &counts["confirmed"],
            &counts["cancelled"],
            &counts["duplicates"]
        ),
        (&Value::from(2), &Value::from(1), &Value::from(0)),
        "each change published once: {counts}"
    );
}
