//! What the backend's end-to-end test files share: a small catalogue, dates that never lie
//! in the past, booking bodies, a backend replica started beside its own sidecar, and a
//! load of keyed bookings that clients retry until each is decided.
#![allow(dead_code)] // each test file uses its own part

use std::path::Path;
use std::time::{Duration, Instant};

use appkit::wire::Day;
use serde_json::{Value, json};
use testkit::{SidecarBuilder, SidecarProcess, Stack, TempDir};

/// Hotel 1 sells 50 rooms a night, hotel 2 sells 5, hotel 3 one.
pub fn catalogue() -> (TempDir, String) {
    let dir = TempDir::new("catalogue");
    let path = dir.path().join("hotels.csv");
    std::fs::write(
        &path,
        "id,name,city,rooms\n1,Contested Hotel,Lisbon,50\n2,Tiny Inn,Porto,5\n3,Last Room Lodge,Faro,1\n",
    )
    .unwrap();
    let p = path.display().to_string();
    (dir, p)
}

/// A night `offset` days after a month from today (UTC), so stays never fall in the past.
pub fn day(offset: i64) -> String {
    Day::today().plus(30 + offset).unwrap().to_string()
}

/// A `reservation.json` body.
pub fn booking(hotel: u32, user: &str, check_in: &str, check_out: &str, rooms: u32) -> Value {
    json!({"hotel_id": hotel, "user": user_body(user, check_in, check_out, rooms)})
}

/// A `user.json` body.
pub fn user_body(user: &str, check_in: &str, check_out: &str, rooms: u32) -> Value {
    json!({"user_id": user, "name": "Test User", "check_in": check_in, "check_out": check_out, "rooms": rooms})
}

/// A backend (app id `backend`) started by its own `sidecar run` with the components in
/// `resources`, listening on `port` once this returns.
pub async fn backend_replica(
    registry: &Path,
    resources: &Path,
    port: u16,
    env: &[(&str, &str)],
) -> SidecarProcess {
    let backend_bin = testkit::workspace_bin("backend").display().to_string();
    let mut b = SidecarBuilder::new(testkit::workspace_bin("sidecar"), "backend", registry)
        .resources(resources)
        .app_port(port);
    for (k, v) in env {
        b = b.env(k, v);
    }
    let sidecar = b
        .command(&[&backend_bin, "--log-level", "warning"])
        .spawn()
        .await
        .unwrap();
    let http = reqwest::Client::new();
    testkit::wait_until("the backend to listen", Duration::from_secs(20), || {
        let r = http.get(format!("http://127.0.0.1:{port}/healthz")).send();
        async move { r.await.ok().filter(|r| r.status() == 204).map(|_| ()) }
    })
    .await
    .unwrap();
    sidecar
}

/// `POST /book` through the frontend: status and JSON body.
pub async fn book(http: &reqwest::Client, s: &Stack, body: &Value) -> (u16, Value) {
    let r = http
        .post(format!("{}/book", s.frontend_url))
        .json(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Booked rooms per night from the frontend's availability query.
pub async fn booked(
    http: &reqwest::Client,
    s: &Stack,
    hotel: u32,
    from: &str,
    to: &str,
) -> Vec<u64> {
    let r: Value = testkit::get_json(
        http,
        format!(
            "{}/hotels/{hotel}/availability?check_in={from}&check_out={to}",
            s.frontend_url
        ),
    )
    .await;
    r["nights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["booked"].as_u64().unwrap())
        .collect()
}

/// What the clients saw.
#[derive(Default)]
pub struct Outcome {
    pub acknowledged: Vec<Value>,
    pub sold_out: usize,
    pub retries: usize,
    pub gave_up: usize,
    pub unexpected: Vec<String>,
    /// The status of every attempt that failed (0: no answer in time), retried or not.
    pub errors: Vec<u16>,
}

/// `clients` clients, each sending `per_client` bookings one after another, each booking
/// with its own key and `user_id`, retried under that key after any error or timeout
/// until it is answered 201 or 409, for at most `give_up` per booking.
pub async fn keyed_load(
    url: &str,
    clients: usize,
    per_client: usize,
    client_timeout: Duration,
    give_up: Duration,
) -> Outcome {
    let http = reqwest::Client::builder()
        .timeout(client_timeout)
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (http, url) = (http.clone(), url.to_string());
            tokio::spawn(async move {
                let mut out = Outcome::default();
                for i in 0..per_client {
                    // Half to hotel 1 (50 rooms: writes all along), the rest to hotel 2
                    // (5 rooms) and hotel 3 (1 room): contention and sell-outs. Three
                    // nights.
                    let hotel = [1, 1, 2, 3][(c + i) % 4];
                    let night = ((c * 7 + i) % 3) as i64;
                    let user = format!("c{c}-{i}");
                    let body = booking(hotel, &user, &day(night), &day(night + 1), 1);
                    let key = format!("key-{user}");
                    let started = Instant::now();
                    loop {
                        let r = http
                            .post(format!("{url}/book"))
                            .header("Idempotency-Key", &key)
                            .json(&body)
                            .send()
                            .await;
                        let (status, answer) = match r {
                            Ok(r) => {
                                let s = r.status().as_u16();
                                (s, r.json::<Value>().await.unwrap_or(Value::Null))
                            }
                            Err(_) => (0, Value::Null),
                        };
                        match status {
                            201 => {
                                out.acknowledged.push(answer);
                                break;
                            }
                            409 => {
                                out.sold_out += 1;
                                break;
                            }
                            0 | 500..=599 => out.errors.push(status),
                            other => {
                                out.unexpected.push(format!("{other} {answer}"));
                                break;
                            }
                        }
                        if started.elapsed() > give_up {
                            out.gave_up += 1;
                            break;
                        }
                        out.retries += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                out
            })
        })
        .collect();
    let mut all = Outcome::default();
    for t in tasks {
        let o = t.await.unwrap();
        all.acknowledged.extend(o.acknowledged);
        all.sold_out += o.sold_out;
        all.retries += o.retries;
        all.gave_up += o.gave_up;
        all.unexpected.extend(o.unexpected);
        all.errors.extend(o.errors);
    }
    all
}

/// What a load through a fault must come to: every booking decided (201 or 409) within
/// `give_up`, nothing unexpected, and the ledger right: no oversold night, no acknowledged
/// booking lost, none made twice from one key.
pub fn assert_all_decided_and_the_ledger_right(
    name: &str,
    outcome: &Outcome,
    verdict: &testkit::Verdict,
    give_up: Duration,
) {
    // Each failed attempt's status and how often it came (0: no answer in time).
    let mut errors = std::collections::BTreeMap::<u16, usize>::new();
    for status in &outcome.errors {
        *errors.entry(*status).or_default() += 1;
    }
    eprintln!(
        "{name}: {} booked, {} sold out, {} retries (errors by status: {errors:?}), {} gave up, {} unheard; violations: {}",
        outcome.acknowledged.len(),
        outcome.sold_out,
        outcome.retries,
        outcome.gave_up,
        verdict.unheard,
        verdict.violations.len()
    );
    assert!(outcome.unexpected.is_empty(), "{:?}", outcome.unexpected);
    assert_eq!(
        outcome.gave_up, 0,
        "{name}: bookings left undecided after {give_up:?}"
    );
    assert!(
        verdict.violations.is_empty(),
        "{name}: {:?}",
        verdict.violations
    );
    assert_eq!(
        (verdict.oversold_nights, verdict.lost, verdict.doubled),
        (0, 0, 0)
    );
    assert!(
        !outcome.acknowledged.is_empty(),
        "{name}: nothing was booked, so nothing was tested"
    );
}
