//! End-to-end: two `sidecar run`s, the frontend and the backend, booking through
//! `POST /book` on SQLite and on a real Redis.

use std::time::{Duration, Instant};

mod common;

use common::{book, booked, booking, catalogue, day};
use reqwest::Method;
use serde_json::{Value, json};
use test_case::test_case;
use testkit::{Stack, StoreKind, TempDir};

async fn stack(kind: StoreKind, consistency: &str) -> (Stack, TempDir) {
    stack_on(kind, consistency, false, "http").await
}

/// The stack, with each app on its sidecar's Unix domain sockets when `unix`, and the
/// backend calling its sidecar's `api` (grpc or http).
async fn stack_on(kind: StoreKind, consistency: &str, unix: bool, api: &str) -> (Stack, TempDir) {
    let (dir, path) = catalogue();
    let builder = if unix {
        Stack::builder(kind).unix_sockets()
    } else {
        Stack::builder(kind)
    };
    let s = builder
        .backend_env("HOTEL_CATALOGUE", &path)
        .backend_env("CONSISTENCY", consistency)
        .backend_env("DAPR_API_PROTOCOL", api)
        // Correctness, not speed, is under test: let a slow or busy machine take its time
        // (500 bookings queueing on one lock take about 20 s in a debug build).
        .backend_env("BUSY_WAIT_MS", "120000")
        .backend_env("REQUEST_TIMEOUT_MS", "150000")
        .frontend_env("REQUEST_TIMEOUT_MS", "150000")
        .spawn()
        .await
        .expect("stack");
    (s, dir)
}

#[test_case(StoreKind::Sqlite, false, "http" ; "sqlite")]
#[test_case(StoreKind::SqliteNormal, false, "http" ; "sqlite_normal")]
#[test_case(StoreKind::Redis, false, "http" ; "redis")]
#[test_case(StoreKind::Sqlite, true, "http" ; "sqlite_unix_sockets")]
#[test_case(StoreKind::Sqlite, false, "grpc" ; "sqlite_grpc_api")]
#[test_case(StoreKind::Redis, false, "grpc" ; "redis_grpc_api")]
#[test_case(StoreKind::Sqlite, true, "grpc" ; "sqlite_grpc_api_unix_sockets")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roundtrip(kind: StoreKind, unix: bool, api: &str) {
    let (mut s, _c) = stack_on(kind, "lock", unix, api).await;
    let sockets = unix.then(|| api_sockets_only(&s));
    let http = reqwest::Client::new();
    let (status, r) = book(&http, &s, &booking(2, "ann", &day(0), &day(2), 2)).await;
    assert_eq!(status, 201, "{r}");
    let id = r["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 36, "a UUID");
    assert_eq!(
        (r["hotel_id"].as_u64(), r["rooms"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(r["check_in"], day(0).as_str());
    assert!(r["created_at"].as_str().unwrap().starts_with("20"));

    let got: Value =
        testkit::get_json(&http, format!("{}/reservations/{id}", s.frontend_url)).await;
    assert_eq!(got, r, "read back as booked");
    assert_eq!(booked(&http, &s, 2, &day(-1), &day(3)).await, [0, 2, 2, 0]);

    // The backend's own route (user.json shape) books too.
    let direct = http
        .post(format!("{}/book_hotel/2", s.backend_url))
        .json(&json!({"user_id": "bob", "name": "Bob", "check_in": day(1), "check_out": day(2), "rooms": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 201);
    let (status, err) = book(&http, &s, &booking(2, "cy", &day(0), &day(2), 1)).await;
    assert_eq!(status, 409, "5 rooms: 2 + 3 taken on 12-02");
    assert_eq!(err["error"], "sold_out");
    assert!(
        err["message"].as_str().unwrap().contains(&day(1)),
        "names the night: {err}"
    );

    let reservation = format!("{}/reservations/{id}", s.frontend_url);
    let status = |method| {
        let r = http.request(method, &reservation).send();
        async move { r.await.unwrap().status().as_u16() }
    };
    assert_eq!(status(Method::DELETE).await, 200, "cancelled");
    assert_eq!(status(Method::GET).await, 404, "gone");
    assert_eq!(
        booked(&http, &s, 2, &day(0), &day(2)).await,
        [0, 3],
        "cancel frees the nights"
    );
    assert_eq!(status(Method::DELETE).await, 404, "cancelled once");
    if let Some(sockets) = sockets {
        s.backend_sidecar.stop();
        for socket in sockets {
            assert!(!socket.exists(), "{} is removed at exit", socket.display());
        }
    }
}

/// On `--unix-domain-socket` the backend's sidecar serves its API on two private sockets
/// named as daprd names them, and on no TCP port; its sockets.
fn api_sockets_only(s: &Stack) -> Vec<std::path::PathBuf> {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    let sidecar = &s.backend_sidecar;
    assert_eq!(
        (sidecar.http_port, sidecar.grpc_port),
        (0, 0),
        "no API ports"
    );
    let http = sidecar.http_socket.clone().expect("an HTTP socket");
    let grpc = http.with_file_name("dapr-backend-grpc.socket");
    assert_eq!(http.file_name().unwrap(), "dapr-backend-http.socket");
    for socket in [&http, &grpc] {
        let meta = std::fs::metadata(socket).unwrap();
        assert!(meta.file_type().is_socket(), "{}", socket.display());
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "{}",
            socket.display()
        );
    }
    vec![http, grpc]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_right_4xx() {
    let (s, _c) = stack(StoreKind::Sqlite, "lock").await;
    let http = reqwest::Client::new();
    let post = |body: Vec<u8>| {
        let req = http
            .post(format!("{}/book", s.frontend_url))
            .header("content-type", "application/json")
            .body(body);
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            (
                status,
                v["error"].as_str().unwrap_or("<not json>").to_string(),
            )
        }
    };
    let case = |v: Value| serde_json::to_vec(&v).unwrap();
    // (status, error code, body), each refused by the frontend before any work.
    #[rustfmt::skip]
    let cases = [
        (400, "invalid_json", b"not json".to_vec()),
        (400, "invalid_field", case(json!({"hotel_id": 1}))),
        (400, "invalid_field", case(json!({"hotel_id": "x", "user": {}}))),
        (400, "invalid_dates", case(booking(1, "u", &day(2), &day(0), 1))),
        (400, "invalid_dates", case(booking(1, "u", &day(0), &day(0), 1))),
        // A stay that started in the past (UTC).
        (400, "invalid_dates", case(booking(1, "u", &day(-31), &day(-29), 1))),
        (400, "invalid_field", case(booking(1, "u", "2026-13-01", &day(1), 1))),
        (400, "invalid_rooms", case(booking(1, "u", &day(0), &day(1), 0))),
        (400, "invalid_rooms", case(booking(1, "u", &day(0), &day(1), 1_000_000))),
        (404, "hotel_not_found", case(booking(999, "u", &day(0), &day(1), 1))),
    ];
    for (status, code, body) in cases {
        let shown = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(post(body).await, (status, code.to_string()), "{shown}");
    }
    // The backend refuses a past stay too.
    let r = http
        .post(format!("{}/book_hotel/1", s.backend_url))
        .json(&json!({"user_id": "u", "name": "N", "check_in": day(-31), "check_out": day(-29), "rooms": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_dates");
    let mut huge = case(booking(1, "u", &day(0), &day(1), 1));
    huge.extend(std::iter::repeat_n(b' ', 2 << 20));
    let port: u16 = s.frontend_url.rsplit(':').next().unwrap().parse().unwrap();
    let (status, body) = testkit::post_reading_early(port, "/book", "application/json", huge)
        .await
        .unwrap();
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    assert_eq!((status, &body["error"]), (413, &json!("body_too_large")));

    // The backend itself, as real Dapr would reach it, answers the same way; and the
    // frontend's other routes. (status, error code, method, url)
    let (backend, frontend) = (&s.backend_url, &s.frontend_url);
    #[rustfmt::skip]
    let routes = [
        (400, "invalid_hotel_id", Method::POST, format!("{backend}/book_hotel/abc")),
        (404, "hotel_not_found", Method::POST, format!("{backend}/book_hotel/999")),
        (404, "reservation_not_found", Method::GET, format!("{frontend}/reservations/not-a-uuid")),
        (400, "invalid_field", Method::GET, format!("{frontend}/hotels/1/availability?check_in={}", day(0))),
        (404, "not_found", Method::GET, format!("{frontend}/nowhere")),
    ];
    for (status, code, method, url) in routes {
        let r = http
            .request(method, &url)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        let got = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!((got, body["error"].as_str()), (status, Some(code)), "{url}");
    }
}

/// 500 concurrent one-night bookings of a hotel with 50 rooms: the ids booked, the clear
/// refusals, and any other answer (status and body, to say what went wrong).
async fn contend(s: &Stack) -> (Vec<String>, usize, Vec<(u16, Value)>) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(600)
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..500 {
        let http = http.clone();
        let url = format!("{}/book", s.frontend_url);
        let body = booking(1, &format!("user-{i}"), &day(23), &day(24), 1);
        tasks.push(tokio::spawn(async move {
            let r = http.post(url).json(&body).send().await.unwrap();
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            (status, v)
        }));
    }
    let (mut ids, mut refused, mut odd) = (Vec::new(), 0, Vec::new());
    for t in tasks {
        let (status, v) = t.await.unwrap();
        match status {
            201 => ids.push(v["id"].as_str().unwrap().to_string()),
            409 | 503 => {
                assert!(
                    matches!(v["error"].as_str(), Some("sold_out" | "busy")),
                    "a clear refusal: {v}"
                );
                refused += 1;
            }
            other => odd.push((other, v)),
        }
    }
    (ids, refused, odd)
}

#[test_case(StoreKind::Sqlite, "lock" ; "lock_sqlite")]
#[test_case(StoreKind::Redis, "lock" ; "lock_redis")]
#[test_case(StoreKind::Sqlite, "etag" ; "etag_sqlite")]
#[test_case(StoreKind::Redis, "etag" ; "etag_redis")]
#[test_case(StoreKind::SqliteNormal, "lock" ; "lock_sqlite_normal")]
#[test_case(StoreKind::SqliteNormal, "etag" ; "etag_sqlite_normal")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_oversell(kind: StoreKind, consistency: &str) {
    no_oversell_on(kind, consistency, "http").await;
}

#[test_case(StoreKind::Sqlite, "lock" ; "lock_sqlite")]
#[test_case(StoreKind::Redis, "etag" ; "etag_redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_oversell_over_the_grpc_api(kind: StoreKind, consistency: &str) {
    no_oversell_on(kind, consistency, "grpc").await;
}

async fn no_oversell_on(kind: StoreKind, consistency: &str, api: &str) {
    let (s, _c) = stack_on(kind, consistency, false, api).await;
    let (ids, refused, odd) = contend(&s).await;
    assert!(odd.is_empty(), "unexpected statuses: {odd:?}");
    assert_eq!(ids.len(), 50, "exactly the capacity is sold");
    assert_eq!(refused, 450);
    let http = reqwest::Client::new();
    assert_eq!(
        booked(&http, &s, 1, &day(23), &day(24)).await,
        [50],
        "the stored count agrees"
    );
    for id in &ids {
        let r = http
            .get(format!("{}/reservations/{id}", s.frontend_url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "every acknowledged booking is stored");
    }
}

/// The same load without protection goes wrong: more sold than the hotel has, or a stored
/// count that disagrees with what was acknowledged. (This is why the tests above can fail.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_mode_can_oversell() {
    let (s, _c) = stack(StoreKind::Sqlite, "none").await;
    let (ids, _, odd) = contend(&s).await;
    assert!(odd.is_empty(), "{odd:?}");
    let http = reqwest::Client::new();
    let count = booked(&http, &s, 1, &day(23), &day(24)).await[0] as usize;
    assert!(
        ids.len() > 50 || count != ids.len(),
        "no protection yet consistent: {} sold, {count} counted",
        ids.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_down_gives_a_clear_5xx() {
    let (mut s, _c) = stack(StoreKind::Redis, "lock").await;
    drop(s.store.redis.take());
    let http = reqwest::Client::new();
    let started = Instant::now();
    let (status, body) = book(&http, &s, &booking(2, "ann", &day(0), &day(1), 1)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "store_unavailable", "{body}");
    assert!(body["message"].is_string(), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "fails in bounded time"
    );
}

/// A backend killed with SIGKILL while it holds the lock on a hotel (a Redis lock, which
/// outlives it) blocks that hotel only until the lease runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_lock_holder_blocks_only_for_the_lease() {
    let (_dir, path) = catalogue();
    let store = testkit::StoreFixture::start(StoreKind::Redis)
        .await
        .unwrap();
    let redis = store.redis.as_ref().unwrap();
    let registry = TempDir::new("registry");
    let backend_bin = testkit::workspace_bin("backend").display().to_string();
    let start = |hold_ms: &str, port: u16| {
        testkit::SidecarBuilder::new(
            testkit::workspace_bin("sidecar"),
            "backend",
            registry.path(),
        )
        .resources(store.components.path())
        .app_port(port)
        .env("HOTEL_CATALOGUE", &path)
        .env("LOCK_LEASE_SECONDS", "2")
        .env("BUSY_WAIT_MS", "10000")
        .env("BACKEND_HOLD_LOCK_MS", hold_ms)
        .command(&[&backend_bin, "--log-level", "warning"])
        .spawn()
    };
    let http = reqwest::Client::new();
    let user =
        json!({"user_id": "u", "name": "N", "check_in": day(0), "check_out": day(1), "rooms": 1});

    // `sidecar run` is ready before its app is: wait for the backend itself.
    let listening = async |port: u16| {
        testkit::wait_until("the backend to listen", Duration::from_secs(20), || {
            let r = http.get(format!("http://127.0.0.1:{port}/healthz")).send();
            async move { r.await.ok().map(|_| ()) }
        })
        .await
        .unwrap();
    };
    let port = testkit::free_port();
    let mut doomed = start("60000", port).await.unwrap();
    listening(port).await;
    let stuck = tokio::spawn(
        http.post(format!("http://127.0.0.1:{port}/book_hotel/1"))
            .json(&user)
            .send(),
    );
    testkit::wait_until("the lock to be held", Duration::from_secs(10), || async {
        redis
            .exists("lock||backend||hotel-1")
            .await
            .ok()
            .filter(|held| *held)
            .map(|_| ())
    })
    .await
    .unwrap();
    let held_at = Instant::now();
    for pid in doomed.app_pids() {
        appkit::process::send_signal(pid, appkit::process::Signal::Kill).unwrap();
    }
    let _ = stuck.await;
    doomed.stop();
    assert!(
        redis.exists("lock||backend||hotel-1").await.unwrap(),
        "the lock was gone as soon as its holder died: nothing left to wait out"
    );

    let port = testkit::free_port();
    let _fresh = start("0", port).await.unwrap();
    listening(port).await;
    let r = http
        .post(format!("http://127.0.0.1:{port}/book_hotel/1"))
        .json(&user)
        .send()
        .await
        .unwrap();
    let waited = held_at.elapsed();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    assert!(
        waited >= Duration::from_secs(1),
        "the dead holder's lock did not block at all ({waited:?})"
    );
    assert!(
        waited < Duration::from_secs(5),
        "blocked {waited:?}, beyond the 2 s lease"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_down_gives_a_clear_502() {
    let (mut s, _c) = stack(StoreKind::Sqlite, "lock").await;
    let http = reqwest::Client::new();
    let (status, _) = book(&http, &s, &booking(2, "ann", &day(0), &day(1), 1)).await;
    assert_eq!(status, 201);
    s.backend_sidecar.stop();
    let (status, body) = book(&http, &s, &booking(2, "bob", &day(0), &day(1), 1)).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "backend_unavailable", "{body}");
}
