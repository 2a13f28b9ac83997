//! What a booking promises when things go wrong: a key books once however often it is
//! sent, a stalled store answers 504 within the budget and loses nothing, and a lock holder
//! that outlives its lease cannot sell a room twice (with the proof that, without fencing,
//! it does). Every case ends with the ledger check on what the store holds.

use std::time::{Duration, Instant};

mod common;

use common::{backend_replica, book, booked, booking, catalogue, day, user_body};
use serde_json::{Value, json};
use test_case::test_case;
use testkit::{Stack, StoreFixture, StoreKind, TempDir, check_ledger};

async fn stack(kind: StoreKind, consistency: &str, budget_ms: &str) -> (Stack, TempDir) {
    stack_with(kind, consistency, budget_ms, "0", "http").await
}

/// With `hold_ms`, every booking lingers that long inside the lock before its commit;
/// the backend calls its sidecar's `api` (http or grpc).
async fn stack_with(
    kind: StoreKind,
    consistency: &str,
    budget_ms: &str,
    hold_ms: &str,
    api: &str,
) -> (Stack, TempDir) {
    let (dir, path) = catalogue();
    let s = Stack::builder(kind)
        .backend_env("HOTEL_CATALOGUE", &path)
        .backend_env("CONSISTENCY", consistency)
        .backend_env("BUSY_WAIT_MS", "30000")
        .backend_env("REQUEST_TIMEOUT_MS", budget_ms)
        .backend_env("BACKEND_HOLD_LOCK_MS", hold_ms)
        .backend_env("DAPR_API_PROTOCOL", api)
        .frontend_env("REQUEST_TIMEOUT_MS", budget_ms)
        .spawn()
        .await
        .expect("stack");
    (s, dir)
}

async fn book_keyed(http: &reqwest::Client, s: &Stack, body: &Value, key: &str) -> (u16, Value) {
    let r = http
        .post(format!("{}/book", s.frontend_url))
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn cancel_keyed(http: &reqwest::Client, s: &Stack, id: &str, key: &str) -> (u16, Value) {
    let r = http
        .delete(format!("{}/reservations/{id}", s.frontend_url))
        .header("Idempotency-Key", key)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[test_case(StoreKind::Redis, "lock" ; "redis_lock")]
#[test_case(StoreKind::Sqlite, "etag" ; "sqlite_etag")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_books_once(kind: StoreKind, consistency: &str) {
    let (s, _c) = stack(kind, consistency, "60000").await;
    let http = reqwest::Client::new();
    let body = booking(2, "ann", &day(0), &day(2), 1);

    let (status, first) = book_keyed(&http, &s, &body, "key-1").await;
    assert_eq!(status, 201, "{first}");
    let (status, again) = book_keyed(&http, &s, &body, "key-1").await;
    assert_eq!(
        (status, &again),
        (201, &first),
        "a repeat gets the first answer"
    );
    assert_eq!(booked(&http, &s, 2, &day(0), &day(2)).await, [1, 1]);

    // Sent many times at once (a client retrying while the first is in flight).
    let other = booking(2, "bob", &day(0), &day(2), 1);
    let answers = futures_util::future::join_all(
        (0..12)
            .map(|_| {
                let (http, s, other) = (&http, &s, &other);
                async move { book_keyed(http, s, other, "key-2").await }
            })
            .collect::<Vec<_>>(),
    )
    .await;
    let ids: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|(status, b)| {
            assert_eq!(*status, 201, "{b}");
            b["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one key, one booking: {ids:?}");
    assert_eq!(booked(&http, &s, 2, &day(0), &day(2)).await, [2, 2]);

    // The same key with another request is refused, and books nothing.
    let changed = booking(2, "ann", &day(0), &day(2), 2);
    let (status, err) = book_keyed(&http, &s, &changed, "key-1").await;
    assert_eq!(
        (status, err["error"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    let (status, err) = book_keyed(&http, &s, &body, "not a key").await;
    assert_eq!(
        (status, err["error"].as_str()),
        (400, Some("invalid_idempotency_key"))
    );
    assert_eq!(booked(&http, &s, 2, &day(0), &day(2)).await, [2, 2]);

    // A keyed cancellation answers the same twice and frees the nights once.
    let id = first["id"].as_str().unwrap();
    let (status, cancelled) = cancel_keyed(&http, &s, id, "cancel-1").await;
    assert_eq!(status, 200, "{cancelled}");
    let (status, again) = cancel_keyed(&http, &s, id, "cancel-1").await;
    assert_eq!((status, &again), (200, &cancelled));
    assert_eq!(booked(&http, &s, 2, &day(0), &day(2)).await, [1, 1]);
    let (status, _) = book(&http, &s, &booking(2, "cy", &day(0), &day(1), 4)).await;
    assert_eq!(status, 201, "the freed room is for sale again");
}

/// Redis stops taking writes just before a booking commits, for longer than the request
/// budget: the commit is sent and its answer never comes in time. The booking answers 504
/// "outcome unknown" within the budget instead of hanging. Redis then applies the queued
/// transaction, and a retry under the same key is answered from it: one booking, not two.
#[test_case("http" ; "http_api")]
#[test_case("grpc" ; "grpc_api")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_stalled_past_the_budget_is_read_back_not_redone(api: &str) {
    let (s, c) = stack_with(StoreKind::Redis, "lock", "1500", "500", api).await;
    let redis = s.store.redis.as_ref().unwrap();
    let http = reqwest::Client::new();
    let body = booking(2, "ann", &day(3), &day(4), 1);
    let first = tokio::spawn({
        let (http, url, body) = (http.clone(), s.frontend_url.clone(), body.clone());
        async move {
            let r = http
                .post(format!("{url}/book"))
                .header("Idempotency-Key", "stalled-1")
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    });
    // The booking holds the lock, has created its key's record (its last write before the
    // commit) and lingers 500 ms before the commit: stop writes now. The record is made in
    // two writes, as daprd makes it (the value, then its expiry): its create is over only
    // once it has a time to live; pausing writes between the two would stall the create,
    // not the commit.
    testkit::wait_until(
        "the booking's key record, with its expiry",
        Duration::from_secs(10),
        || async {
            let ttl = redis
                .command(&["TTL", "backend||idempotency-stalled-1"])
                .await
                .ok()?;
            // `:N` seconds left; `:-2` no such key, `:-1` no expiry yet.
            ttl.trim()
                .strip_prefix(':')?
                .parse::<i64>()
                .ok()
                .filter(|secs| *secs > 0)
        },
    )
    .await
    .unwrap();
    let pause = Duration::from_secs(4);
    let reply = redis
        .command(&["CLIENT", "PAUSE", &pause.as_millis().to_string(), "WRITE"])
        .await
        .unwrap();
    assert!(reply.starts_with("+OK"), "{reply}");
    let paused_at = Instant::now();
    let (status, err) = first.await.unwrap();
    assert_eq!(status, 504, "{err}");
    assert_eq!(err["error"], "outcome_unknown", "{err}");
    assert!(
        paused_at.elapsed() < pause,
        "the answer waited for the store to come back instead of the budget"
    );

    // Retry as a client would, under the same key, until the store is back and answers.
    let answer = testkit::wait_until(
        "a keyed retry to be answered",
        Duration::from_secs(30),
        || {
            let (http, s, body) = (&http, &s, &body);
            async move {
                let (status, b) = book_keyed(http, s, body, "stalled-1").await;
                assert!(matches!(status, 201 | 503 | 504), "{status} {b}");
                (status == 201).then_some(b)
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(
        booked(&http, &s, 2, &day(3), &day(4)).await,
        [1],
        "booked once"
    );
    let catalogue = c.path().join("hotels.csv").display().to_string();
    let verdict = check_ledger(s.store.components.path(), &catalogue, &[answer])
        .await
        .unwrap();
    assert!(verdict.violations.is_empty(), "{:?}", verdict.violations);
    assert_eq!(verdict.unheard, 0, "a booking no client heard of");
}

/// Replica A takes the lock on the one-room hotel, reads the night, then stalls past its
/// lease before committing (a pause inside the lock). Replica B, on the same Redis, takes
/// the freed lock and sells the room. Returns A's status and the ledger's verdict. State is
/// on `kind`: Redis, or one SQLite file both replicas share (the lock then on the Redis),
/// where the booking creates a missing night in its commit instead of before it.
async fn a_holder_outlives_its_lease(fencing: bool, kind: StoreKind) -> (u16, testkit::Verdict) {
    let (_dir, path) = catalogue();
    let store = StoreFixture::start(StoreKind::Redis).await.unwrap();
    let redis = store.redis.as_ref().unwrap();
    let registry = TempDir::new("registry");
    let data = TempDir::new("data");
    let shared_sqlite =
        testkit::ComponentsDir::sqlite_with_redis_lock(&data.path().join("state.db"), redis.port);
    let resources = match kind {
        StoreKind::Sqlite => shared_sqlite.path(),
        _ => store.components.path(),
    };
    let mut a_env = vec![
        ("HOTEL_CATALOGUE", path.as_str()),
        ("LOCK_LEASE_SECONDS", "1"),
        ("BACKEND_HOLD_LOCK_MS", "4000"),
        ("BUSY_WAIT_MS", "20000"),
        ("REQUEST_TIMEOUT_MS", "30000"),
    ];
    if !fencing {
        a_env.push(("BACKEND_UNSAFE_NO_FENCING", "true"));
    }
    let (a_port, b_port) = (testkit::free_port(), testkit::free_port());
    let _a = backend_replica(registry.path(), resources, a_port, &a_env).await;
    let mut b_env = vec![
        ("HOTEL_CATALOGUE", path.as_str()),
        ("LOCK_LEASE_SECONDS", "1"),
        ("REQUEST_TIMEOUT_MS", "20000"),
    ];
    if !fencing {
        b_env.push(("BACKEND_UNSAFE_NO_FENCING", "true"));
    }
    let _b = backend_replica(registry.path(), resources, b_port, &b_env).await;

    let http = reqwest::Client::new();
    let stay = user_body("a", &day(5), &day(6), 1);
    let slow = tokio::spawn(
        http.post(format!("http://127.0.0.1:{a_port}/book_hotel/3"))
            .json(&stay)
            .send(),
    );
    let lock = "lock||backend||hotel-3";
    testkit::wait_until("A to hold the lock", Duration::from_secs(10), || async {
        redis.exists(lock).await.ok().filter(|held| *held)
    })
    .await
    .unwrap();
    testkit::wait_until("A's lease to run out", Duration::from_secs(10), || async {
        redis.exists(lock).await.ok().filter(|held| !*held)
    })
    .await
    .unwrap();
    let r = http
        .post(format!("http://127.0.0.1:{b_port}/book_hotel/3"))
        .json(&user_body("b", &day(5), &day(6), 1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "B books the room A's lease let go of");
    let mut acknowledged = vec![r.json::<Value>().await.unwrap()];
    let r = slow.await.unwrap().unwrap();
    let a_status = r.status().as_u16();
    let a_body: Value = r.json().await.unwrap_or(Value::Null);
    if a_status == 201 {
        acknowledged.push(a_body);
    } else {
        assert_eq!(a_body["error"], json!("sold_out"), "{a_body}");
    }
    let verdict = check_ledger(resources, &path, &acknowledged).await.unwrap();
    (a_status, verdict)
}

#[test_case(StoreKind::Redis ; "redis")]
#[test_case(StoreKind::Sqlite ; "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_holder_past_its_lease_cannot_oversell(kind: StoreKind) {
    let (a_status, verdict) = a_holder_outlives_its_lease(true, kind).await;
    assert_eq!(a_status, 409, "the stalled holder finds the room sold");
    assert!(verdict.violations.is_empty(), "{:?}", verdict.violations);
    assert_eq!((verdict.lost, verdict.unheard), (0, 0));
}

/// The proof that the case above can fail: with fencing off on both replicas (the code
/// before it), the stalled holder commits over B's booking and both are told 201.
#[test_case(StoreKind::Redis ; "redis")]
#[test_case(StoreKind::Sqlite ; "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fencing_a_lock_holder_past_its_lease_oversells(kind: StoreKind) {
    let (a_status, verdict) = a_holder_outlives_its_lease(false, kind).await;
    assert_eq!(a_status, 201, "the stalled holder commits blind");
    assert!(verdict.oversold_nights > 0, "{verdict:?}");
}
