//! What the backend's end-to-end test files share: a small catalogue, dates that never lie
//! in the past, booking bodies, and a backend replica started beside its own sidecar.
#![allow(dead_code)] // each test file uses its own part

use std::path::Path;
use std::time::Duration;

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
