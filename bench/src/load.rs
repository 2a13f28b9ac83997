//! Load generators: Debian's `wrk` with `workload.lua` for max-throughput runs; `./wrk2/wrk`
//! (constant rate, coordinated-omission corrected) when present, else `oha -q RATE
//! --latency-correction` for constant-rate latency runs. Each result says which tool made it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;

/// What one run measured. Latencies in milliseconds.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Measured {
    pub generator: String,
    pub requests: u64,
    pub rps: f64,
    /// Responses that were not 2xx, plus socket errors.
    pub errors: u64,
    pub p50: f64,
    pub p90: f64,
    pub p95: Option<f64>,
    pub p99: f64,
    pub p999: Option<f64>,
}

/// The request a run sends.
#[derive(Debug, Clone)]
pub enum Target {
    /// `POST /book` on the frontend, reservation.json bodies.
    Frontend { port: u16 },
    /// `POST /book_hotel/{id}` on the backend, user.json bodies.
    Backend { port: u16 },
    /// `GET` of a fixed URL (the trivial app, directly or through sidecars).
    Get { url: String },
}

impl Target {
    fn wrk_url(&self) -> String {
        match self {
            Target::Frontend { port } => format!("http://127.0.0.1:{port}/book"),
            Target::Backend { port } => format!("http://127.0.0.1:{port}/book_hotel"),
            Target::Get { url } => url.clone(),
        }
    }
}

pub fn wrk2_path() -> Option<PathBuf> {
    let p = PathBuf::from("wrk2/wrk");
    p.exists().then_some(p)
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("starting {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `wrk` at full speed for `secs`, `conns` connections on 2 threads; with `keyed`, every
/// booking carries its own `Idempotency-Key`.
pub fn max_throughput(
    target: &Target,
    secs: u64,
    conns: u32,
    seed: u64,
    keyed: bool,
) -> anyhow::Result<Measured> {
    let args = [
        "-t2",
        &format!("-c{conns}"),
        &format!("-d{secs}s"),
        "--latency",
        "--timeout",
        "10s",
    ];
    wrk((Path::new("wrk"), "wrk"), &args, target, seed, keyed)
}

/// A run of `generator` (wrk or wrk2, at `bin`): bookings come from workload.lua, GETs go
/// as they are.
fn wrk(
    (bin, generator): (&Path, &str),
    args: &[&str],
    target: &Target,
    seed: u64,
    keyed: bool,
) -> anyhow::Result<Measured> {
    let mut cmd = Command::new(bin);
    cmd.args(args);
    if !matches!(target, Target::Get { .. }) {
        cmd.args(["-s", "workload.lua"])
            .env("SEED", seed.to_string())
            .env("KEYED", if keyed { "1" } else { "0" });
    }
    cmd.arg(target.wrk_url());
    let out = run(&mut cmd, generator)?;
    parse_wrk(&out, generator)
}

/// A constant-rate run: wrk2 if `./wrk2/wrk` exists (at least 30 s: it calibrates for 10),
/// otherwise oha with latency correction.
pub fn constant_rate(
    target: &Target,
    rate: u32,
    secs: u64,
    seed: u64,
    scratch: &Path,
    keyed: bool,
) -> anyhow::Result<Measured> {
    let conns = if rate >= 200 { 16 } else { 1 };
    if let Some(wrk2) = wrk2_path() {
        let args = [
            "-t1",
            &format!("-c{conns}"),
            &format!("-d{}s", secs.max(30)),
            &format!("-R{rate}"),
            "--latency",
        ];
        return wrk((&wrk2, "wrk2"), &args, target, seed, keyed);
    }
    let mut cmd = Command::new("oha");
    cmd.args([
        "-z",
        &format!("{secs}s"),
        "-q",
        &rate.to_string(),
        "--latency-correction",
        "-c",
        &conns.to_string(),
    ])
    // -w: requests in flight at the deadline finish instead of counting as errors.
    .args(["-w", "--no-tui", "--output-format", "json"]);
    match target {
        Target::Get { url } => {
            cmd.arg(url);
        }
        Target::Frontend { .. } | Target::Backend { .. } => {
            let frontend = matches!(target, Target::Frontend { .. });
            let name = if frontend { "frontend" } else { "backend" };
            let bodies = scratch.join(format!("bodies-{name}-{seed}.txt"));
            let count = (u64::from(rate) * secs * 12 / 10).max(100);
            write_bodies(&bodies, count, seed, frontend)?;
            cmd.args(["-m", "POST", "-H", "content-type: application/json", "-Z"])
                .arg(&bodies);
            if let Target::Backend { port } = target {
                // The hotel is in the path: oha draws one of 1..99 per request.
                cmd.arg("--rand-regex-url")
                    .arg(format!("http://127.0.0.1:{port}/book_hotel/[1-9][0-9]?"));
            } else {
                cmd.arg(target.wrk_url());
            }
        }
    }
    let out = run(&mut cmd, "oha")?;
    parse_oha(&out)
}

/// Bookings like workload.lua's (hotels 1..300, stays of 1-3 nights within a year), one
/// JSON body per line, for oha's `-Z`.
fn write_bodies(path: &Path, n: u64, seed: u64, frontend: bool) -> anyhow::Result<()> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = String::with_capacity(n as usize * 160);
    for i in 0..n {
        let hotel = rng.u32(1..=300);
        let start = rng.i64(0..365);
        let nights = rng.i64(1..=3);
        let user = format!(
            r#"{{"user_id":"u-{seed}-{i}","name":"Load Test","check_in":"{}","check_out":"{}","rooms":1}}"#,
            day(start),
            day(start + nights)
        );
        if frontend {
            out.push_str(&format!(r#"{{"hotel_id":{hotel},"user":{user}}}"#));
        } else {
            out.push_str(&user);
        }
        out.push('\n');
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

/// Tomorrow (UTC) plus `offset` days, as YYYY-MM-DD: the stays of a load run never lie in
/// the past, which the services refuse.
fn day(offset: i64) -> String {
    let tomorrow = time::OffsetDateTime::now_utc().date() + time::Duration::days(1);
    (tomorrow + time::Duration::days(offset)).to_string()
}

/// A wrk/wrk2 latency value (`812.00us`, `1.49ms`, `2.00s`) in milliseconds.
fn wrk_ms(v: &str) -> Option<f64> {
    let v = v.trim();
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

/// Reads wrk's `--latency` distribution (or wrk2's HdrHistogram one), rate and errors.
pub fn parse_wrk(out: &str, generator: &str) -> anyhow::Result<Measured> {
    let mut m = Measured {
        generator: generator.into(),
        ..Default::default()
    };
    let mut pct = std::collections::HashMap::new();
    let mut in_recorded = generator != "wrk2";
    for line in out.lines() {
        let t = line.trim();
        if t.starts_with("Latency Distribution (HdrHistogram - Recorded") {
            in_recorded = true;
            continue;
        }
        if t.starts_with("Detailed Percentile")
            || t.starts_with("Latency Distribution (HdrHistogram - Uncorrected")
        {
            in_recorded = false;
        }
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            m.rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            m.errors += v.trim().parse::<u64>().unwrap_or(0);
        } else if let Some(rest) = t.strip_prefix("Socket errors:") {
            m.errors += rest
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        } else if t.contains(" requests in ") {
            m.requests = t
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        } else if in_recorded {
            let mut parts = t.split_whitespace();
            if let (Some(p), Some(v), None) = (parts.next(), parts.next(), parts.next())
                && let Some(p) = p.strip_suffix('%')
                && let (Ok(p), Some(v)) = (p.parse::<f64>(), wrk_ms(v))
            {
                pct.insert((p * 1000.0).round() as u64, v);
            }
        }
    }
    let get = |p: u64| pct.get(&p).copied();
    m.p50 = get(50_000).context("no 50% latency in the generator's output")?;
    m.p90 = get(90_000).context("no 90% latency in the generator's output")?;
    m.p99 = get(99_000).context("no 99% latency in the generator's output")?;
    m.p95 = get(95_000);
    m.p999 = get(99_900);
    if m.rps == 0.0 {
        bail!("no Requests/sec in the generator's output");
    }
    Ok(m)
}

pub fn parse_oha(out: &str) -> anyhow::Result<Measured> {
    let v: serde_json::Value = serde_json::from_str(out).context("oha's JSON")?;
    let p = &v["latencyPercentiles"];
    let ms = |k: &str| p[k].as_f64().map(|s| s * 1000.0);
    let total: u64 = v["statusCodeDistribution"].as_object().map_or(0, |m| {
        m.values().filter_map(serde_json::Value::as_u64).sum()
    });
    let ok: u64 = v["statusCodeDistribution"].as_object().map_or(0, |m| {
        m.iter()
            .filter(|(k, _)| k.starts_with('2'))
            .filter_map(|(_, n)| n.as_u64())
            .sum()
    });
    let failed: u64 = v["errorDistribution"].as_object().map_or(0, |m| {
        m.values().filter_map(serde_json::Value::as_u64).sum()
    });
    Ok(Measured {
        generator: "oha".into(),
        requests: total + failed,
        rps: v["summary"]["requestsPerSec"].as_f64().unwrap_or(0.0),
        errors: total - ok + failed,
        p50: ms("p50").context("no p50 in oha's output")?,
        p90: ms("p90").context("no p90 in oha's output")?,
        p95: ms("p95"),
        p99: ms("p99").context("no p99 in oha's output")?,
        p999: ms("p99.9"),
    })
}

/// Waits until a TCP port accepts connections.
pub fn wait_port(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("port {port} never opened");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_latency_output() {
        let out = "Running 10s test @ http://x\n  2 threads and 50 connections\n  Latency Distribution\n     50%  813.00us\n     75%    1.01ms\n     90%    1.20ms\n     99%    1.49ms\n  365138 requests in 10.00s, 30.99MB read\n  Non-2xx or 3xx responses: 12\nRequests/sec:  36513.77\n";
        let m = parse_wrk(out, "wrk").unwrap();
        assert_eq!(m.requests, 365_138);
        assert!((m.p50 - 0.813).abs() < 1e-9 && (m.p99 - 1.49).abs() < 1e-9);
        assert_eq!(m.errors, 12);
        assert!((m.rps - 36513.77).abs() < 1e-6);
    }

    #[test]
    fn days_count_from_tomorrow() {
        let tomorrow = time::OffsetDateTime::now_utc().date() + time::Duration::days(1);
        assert_eq!(day(0), tomorrow.to_string());
        assert_eq!(day(366), (tomorrow + time::Duration::days(366)).to_string());
        assert_eq!(day(0).len(), 10, "YYYY-MM-DD");
    }
}
