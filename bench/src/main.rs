//! `bench`: runs the study's configurations and writes `results.json`, `results.md`,
//! `latency.png` and `throughput.png`. Run it through `scripts/bench`, which builds the
//! release binaries first and runs from the repository root.

mod hosts;
mod load;
mod matrix;
mod procstat;
mod pubsub;
mod report;
mod stack;

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;

use crate::matrix::{RowResult, Timing, all_rows, run_row};
use crate::report::{Machine, Report};

#[derive(Parser, Debug)]
#[command(
    name = "bench",
    about = "Benchmark the hotel booking system configuration by configuration"
)]
struct Args {
    /// Short runs (3 s max-throughput, 4 s constant-rate): the whole matrix in under 3 minutes.
    #[arg(long)]
    quick: bool,
    /// About a second per run, for the smoke test.
    #[arg(long, conflicts_with = "quick")]
    tiny: bool,
    /// Only these rows (comma-separated ids); `--list` shows them.
    #[arg(long, value_delimiter = ',')]
    rows: Vec<String>,
    /// List the rows and exit.
    #[arg(long)]
    list: bool,
    /// Output folder (default: bench-results/<unix time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seed of the generated bookings.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Instead of the rows: publish-to-delivery latency of pub/sub (in memory, and on
    /// Redis between two sidecars) at this many messages/s.
    #[arg(long, value_name = "RATE")]
    pubsub: Option<u64>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rows = all_rows();
    if args.list {
        for r in &rows {
            println!("{:22} {}", r.id, r.title);
        }
        return Ok(());
    }
    if !args.rows.is_empty() {
        for id in &args.rows {
            anyhow::ensure!(
                rows.iter().any(|r| r.id == id),
                "no row {id:?}; --list shows them"
            );
        }
        rows.retain(|r| args.rows.iter().any(|id| id == r.id));
    }
    anyhow::ensure!(
        std::path::Path::new("workload.lua").exists(),
        "run from the repository root (scripts/bench does)"
    );
    let (mode, timing) = if args.tiny {
        (
            "tiny",
            Timing {
                warm: 0,
                max: 1,
                latency: 1,
            },
        )
    } else if args.quick {
        (
            "quick",
            Timing {
                warm: 1,
                max: 3,
                latency: 5,
            },
        )
    } else {
        (
            "default",
            Timing {
                warm: 2,
                max: 10,
                latency: 20,
            },
        )
    };
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from(format!("bench-results/{started_unix}")));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    if let Some(rate) = args.pubsub {
        let seconds = timing.latency;
        println!(
            "bench: pub/sub at {rate} messages/s, {seconds} s per row; results in {}",
            out.display()
        );
        let mut say = |msg: &str| println!("    {msg}");
        let results = pubsub::run(rate, seconds, &mut say)?;
        let md = pubsub::markdown(&results, &out)?;
        println!(
            "\n{md}\nmachine: {} ({} CPUs); build: {}",
            procstat::cpu_model(),
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            stack::build_kind()
        );
        return Ok(());
    }
    let wrk2 = load::wrk2_path().is_some();
    let machine = Machine {
        nproc: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        cpu_model: procstat::cpu_model(),
        generator_max: "wrk".into(),
        generator_constant_rate: if wrk2 {
            "wrk2 (./wrk2/wrk)".into()
        } else {
            "oha --latency-correction".into()
        },
        build: stack::build_kind(),
    };
    println!(
        "bench: {} rows, {mode} mode; constant-rate runs by {}; results in {}",
        rows.len(),
        machine.generator_constant_rate,
        out.display()
    );
    let begun = Instant::now();
    let mut results: Vec<RowResult> = Vec::new();
    let total = rows.len();
    for (i, row) in rows.iter().enumerate() {
        println!("[{}/{total}] {} ({})", i + 1, row.title, row.id);
        let mut say = |msg: &str| {
            println!("    {msg}");
            let _ = std::io::stdout().flush();
        };
        let result = run_row(row, timing, args.seed, &mut say).unwrap_or_else(|e| {
            println!("    FAILED: {e:#}");
            RowResult {
                row: row.clone(),
                max: None,
                cpu_us_per_request: Default::default(),
                latency: Vec::new(),
                peak_rss_mib: Default::default(),
                sidecars: None,
                error: Some(format!("{e:#}")),
            }
        });
        results.push(result);
    }
    let report = Report {
        started: format!("at unix time {started_unix}"),
        mode: mode.into(),
        timing,
        machine,
        rows: results,
    };
    std::fs::write(
        out.join("results.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    let md = report::markdown(&report);
    std::fs::write(out.join("results.md"), &md)?;
    report::plots(&report, &out)?;
    println!("\n{md}");
    println!(
        "bench: done in {:.0} s; wrote results.json, results.md, latency.png, throughput.png to {}",
        begun.elapsed().as_secs_f64(),
        out.display()
    );
    let failed = report.rows.iter().filter(|r| r.error.is_some()).count();
    anyhow::ensure!(failed == 0, "{failed} rows failed");
    Ok(())
}
