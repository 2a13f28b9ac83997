//! Publish-to-delivery latency of pub/sub at a constant rate (`bench --pubsub`): messages
//! published through one sidecar's HTTP API, delivered by a sidecar to an app in this
//! process, which reads each message's scheduled send time from its data. Two rows:
//! `pubsub.in-memory` (one sidecar: Dapr's in-memory pub/sub does not leave its process)
//! and `pubsub.redis` between two sidecars on one Redis (Streams, a consumer group per app).
//! Latency counts from when the publish call began: each call runs on its own task at its
//! due time, so a slow call never holds the next ones back (the tokio timer's 1 ms grain
//! only moves when a message goes out, not how long it takes to arrive).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::{Value, json};
use testkit::{ComponentsDir, RedisServer, TempDir};

use crate::procstat;
use crate::stack::{Running, sidecar};

/// What one row measured.
#[derive(Debug, Serialize)]
pub struct PubSubResult {
    pub row: &'static str,
    pub rate: u64,
    pub published: u64,
    pub delivered: u64,
    /// Publish-to-delivery latency percentiles in ms: p50, p90, p99, p99.9, max.
    pub latency_ms: [f64; 5],
    /// The publish call's own latency, p50 and p99, in ms.
    pub publish_ms: [f64; 2],
    /// CPU of the sidecars per message, µs.
    pub sidecar_cpu_us: f64,
}

#[derive(Clone)]
struct Heard {
    base: Instant,
    /// (when the message was due, its latency), µs.
    latencies_us: Arc<Mutex<Vec<(u64, u64)>>>,
}

impl Heard {
    fn taken(&self) -> Vec<(u64, u64)> {
        self.latencies_us
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

async fn deliver(State(h): State<Heard>, body: Bytes) -> Json<Value> {
    let now = h.base.elapsed().as_micros() as u64;
    let ce = serde_json::from_slice::<Value>(&body).unwrap_or_default();
    let at = |field: &str| ce["data"][field].as_u64();
    if let (Some(due), Some(sent)) = (at("due_us"), at("sent_us")) {
        h.latencies_us
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((due, now.saturating_sub(sent)));
    }
    Json(json!({"status": "SUCCESS"}))
}

/// Runs both rows for `seconds` each (after a second of warm-up) at `rate` messages/s.
pub fn run(
    rate: u64,
    seconds: u64,
    say: &mut dyn FnMut(&str),
) -> anyhow::Result<Vec<PubSubResult>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut results = Vec::new();
    for row in ["pubsub.in-memory", "pubsub.redis"] {
        say(&format!("{row}: {rate} messages/s for {seconds} s"));
        let r = run_row(&rt, row, rate, seconds)?;
        say(&format!(
            "{row}: {} of {} delivered; p50 {:.2} / p99 {:.2} / p99.9 {:.2} ms; sidecars {:.0} µs CPU per message",
            r.delivered,
            r.published,
            r.latency_ms[0],
            r.latency_ms[2],
            r.latency_ms[3],
            r.sidecar_cpu_us
        ));
        results.push(r);
    }
    Ok(results)
}

fn component(kind: &str, meta: &str) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: {kind}\n  version: v1\n  metadata:{meta}\n"
    )
}

fn run_row(
    rt: &tokio::runtime::Runtime,
    row: &'static str,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<PubSubResult> {
    let base = Instant::now();
    let heard = Heard {
        base,
        latencies_us: Arc::default(),
    };
    let app = axum::Router::new()
        .route(
            "/dapr/subscribe",
            get(|| async {
                Json(json!([{"pubsubname": "pubsub", "topic": "bench", "route": "/in"}]))
            }),
        )
        .route("/in", post(deliver))
        .with_state(heard.clone());
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let app_port = listener.local_addr()?.port();
    rt.spawn(async move { axum::serve(listener, app).await });

    let redis = match row {
        "pubsub.redis" => Some(rt.block_on(RedisServer::start())?),
        _ => None,
    };
    let file = match &redis {
        Some(r) => component(
            "pubsub.redis",
            &format!("\n  - name: redisHost\n    value: 127.0.0.1:{}", r.port),
        ),
        None => component("pubsub.in-memory", " []"),
    };
    let components = ComponentsDir::raw(&[("pubsub.yaml", &file)]);
    let registry = TempDir::new("registry");
    let mut running = Running::default();
    let subscriber = running.start(
        rt,
        sidecar("subscriber", registry.path(), components.path())?.app_port(app_port),
        None,
    )?;
    rt.block_on(subscriber.subscribed(Duration::from_secs(20)))?;
    let (sub_url, http) = (subscriber.http_url(), subscriber.http_client());
    let publisher_url = if redis.is_some() {
        running
            .start(
                rt,
                sidecar("publisher", registry.path(), components.path())?,
                None,
            )?
            .http_url()
    } else {
        sub_url.clone()
    };
    let url = format!("{publisher_url}/v1.0/publish/pubsub/bench");
    let total = rate * (1 + seconds);
    let before = procstat::snapshot(&running.measured);
    let (mut publish_us, measured_from) = rt.block_on(publish(&http, &url, base, rate, total))?;
    let delivered = rt.block_on(testkit::wait_until(
        "the last messages",
        Duration::from_secs(30),
        || {
            let n = heard.taken().len() as u64;
            async move { (n >= total).then_some(n) }
        },
    ));
    let cpu = procstat::per_request(&before, &running.measured, total);
    drop(running);
    let all = heard.taken();
    let delivered = delivered.unwrap_or(all.len() as u64);
    // The first second of due times is the warm-up.
    let mut measured: Vec<u64> = all
        .into_iter()
        .filter(|(due, _)| *due >= measured_from)
        .map(|(_, latency)| latency)
        .collect();
    measured.sort_unstable();
    publish_us.sort_unstable();
    Ok(PubSubResult {
        row,
        rate,
        published: total,
        delivered,
        latency_ms: [0.5, 0.9, 0.99, 0.999, 1.0].map(|q| percentile_ms(&measured, q)),
        publish_ms: [0.5, 0.99].map(|q| percentile_ms(&publish_us, q)),
        sidecar_cpu_us: cpu.get("total").copied().unwrap_or_default(),
    })
}

/// Publishes `total` messages at `rate`, each carrying the µs since `base` it was due at
/// and its call began; returns each publish call's latency (µs) and the due time the measured part
/// starts at (after the first second).
async fn publish(
    http: &reqwest::Client,
    url: &str,
    base: Instant,
    rate: u64,
    total: u64,
) -> anyhow::Result<(Vec<u64>, u64)> {
    let period = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let start = Instant::now() + Duration::from_millis(10);
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..total {
        let due = start + period * u32::try_from(n)?;
        tokio::time::sleep_until(due.into()).await;
        let due_us = (due - base).as_micros() as u64;
        let (http, url) = (http.clone(), url.to_string());
        calls.spawn(async move {
            let sent = Instant::now();
            let sent_us = (sent - base).as_micros() as u64;
            let body = json!({"n": n, "due_us": due_us, "sent_us": sent_us});
            let req = http.post(url).header("content-type", "application/json");
            let ok = req
                .body(body.to_string())
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            (ok, sent.elapsed().as_micros() as u64)
        });
    }
    let mut latencies = Vec::with_capacity(total as usize);
    let mut failed = 0;
    while let Some(call) = calls.join_next().await {
        let (ok, us) = call?;
        failed += u64::from(!ok);
        latencies.push(us);
    }
    anyhow::ensure!(failed == 0, "{failed} of {total} publishes failed");
    Ok((latencies, (start - base).as_micros() as u64 + 1_000_000))
}

fn percentile_ms(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

/// The rows as a Markdown table.
pub fn markdown(results: &[PubSubResult], out: &Path) -> anyhow::Result<String> {
    let mut md = String::from(
        "| pub/sub | rate | delivered | p50 | p90 | p99 | p99.9 | max (ms) | publish p50 / p99 (ms) | sidecars CPU per message |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in results {
        let [p50, p90, p99, p999, max] = r.latency_ms;
        md += &format!(
            "| {} | {}/s | {} of {} | {p50:.2} | {p90:.2} | {p99:.2} | {p999:.2} | {max:.2} | {:.2} / {:.2} | {:.0} µs |\n",
            r.row,
            r.rate,
            r.delivered,
            r.published,
            r.publish_ms[0],
            r.publish_ms[1],
            r.sidecar_cpu_us
        );
    }
    std::fs::write(out.join("pubsub.md"), &md).context("writing pubsub.md")?;
    std::fs::write(out.join("pubsub.json"), serde_json::to_vec_pretty(results)?)
        .context("writing pubsub.json")?;
    Ok(md)
}
