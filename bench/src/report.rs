//! What a run leaves behind: `results.json` (everything measured), `results.md` (the
//! original study's table with our numbers beside its own) and two PNG plots.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use plotters::prelude::*;
use serde::Serialize;

use crate::matrix::{RowResult, Shape, Timing};

#[derive(Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub generator_max: String,
    pub generator_constant_rate: String,
    /// How the measured binaries were built: `release`, or `release + PGO` (with what
    /// `scripts/build --pgo` trained them on).
    pub build: String,
}

#[derive(Serialize)]
pub struct Report {
    pub started: String,
    pub mode: String,
    pub timing: Timing,
    pub machine: Machine,
    pub rows: Vec<RowResult>,
}

fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

fn workers(r: &RowResult) -> String {
    match r.row.shape {
        Shape::BackendNoDapr | Shape::BackendClientOnly | Shape::BackendFull => {
            r.row.backend_workers.to_string()
        }
        Shape::ThroughNoState | Shape::ThroughFull => format!(
            "frontend {}, backend {}",
            r.row.frontend_workers, r.row.backend_workers
        ),
        Shape::Sidecars => "1 each".into(),
    }
}

pub fn markdown(rep: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Benchmark results\n");
    let _ = writeln!(
        s,
        "Run {} ({} mode: {} s max-throughput runs, {} s constant-rate runs, {} s warm-up) on {} cores ({}). \
         Build: {}. Tracing at samplingRate \"0\", metrics off (`config.yaml`). SQLite state and the in-process lock unless the row says otherwise.\n",
        rep.started,
        rep.mode,
        rep.timing.max,
        rep.timing.latency,
        rep.timing.warm,
        rep.machine.nproc,
        rep.machine.cpu_model,
        rep.machine.build
    );
    let _ = writeln!(
        s,
        "| configuration | workers | max throughput, ours | original | p50–p95 at 10 req/s, ours | original | p50 / p99 at 1,000 req/s | CPU per request | peak memory |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for r in rep.rows.iter().filter(|r| r.row.shape != Shape::Sidecars) {
        if let Some(e) = &r.error {
            let _ = writeln!(
                s,
                "| {} | {} | failed: {} | | | | | | |",
                r.row.title,
                workers(r),
                e.replace('|', "/")
            );
            continue;
        }
        let max = r.max.as_ref().map_or("—".into(), |m| {
            format!(
                "{:.0} req/s ({}, {:.2}% errors)",
                m.rps,
                m.generator,
                100.0 * m.errors as f64 / m.requests.max(1) as f64
            )
        });
        let at = |rate: u32| {
            r.latency
                .iter()
                .find(|l| l.rate == rate)
                .map(|l| &l.measured)
        };
        let l10 = at(10).map_or("—".into(), |m| {
            format!(
                "{}–{} ms ({})",
                ms(m.p50),
                ms(m.p95.unwrap_or(m.p90)),
                m.generator
            )
        });
        let l1000 = at(1000).map_or("—".into(), |m| {
            format!("{} / {} ms ({})", ms(m.p50), ms(m.p99), m.generator)
        });
        let cpu = r
            .cpu_us_per_request
            .get("total")
            .map_or("—".into(), |c| format!("{c:.0} µs"));
        let mem = r
            .peak_rss_mib
            .iter()
            .map(|(k, v)| format!("{k} {v:.0}"))
            .collect::<Vec<_>>()
            .join(", ");
        let (omax, olat) = r
            .row
            .original
            .as_ref()
            .map_or(("—", "—"), |o| (o.max_rps, o.latency_10));
        let _ = writeln!(
            s,
            "| {} | {} | {max} | {omax} | {l10} | {olat} | {l1000} | {cpu} | {mem} MiB |",
            r.row.title,
            workers(r)
        );
    }
    let _ = writeln!(
        s,
        "\n## Latency in detail (constant rate, corrected for coordinated omission)\n"
    );
    let _ = writeln!(
        s,
        "| configuration | id | rate | p50 | p90 | p95 | p99 | p99.9 | errors | generator | CPU µs per request (per process) |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
    let opt = |v: Option<f64>| v.map_or("—".into(), |v| format!("{} ms", ms(v)));
    for r in &rep.rows {
        for l in &r.latency {
            let m = &l.measured;
            let cpu = &l.cpu_us_per_request;
            let each: Vec<String> = cpu
                .iter()
                .filter(|(k, _)| *k != "total")
                .map(|(k, v)| format!("{k} {v:.0}"))
                .collect();
            let cpu = cpu
                .get("total")
                .map_or("—".into(), |t| format!("{t:.0} ({})", each.join(", ")));
            let _ = writeln!(
                s,
                "| {} | {} | {} req/s | {} ms | {} ms | {} | {} ms | {} | {} of {} | {} | {cpu} |",
                r.row.title,
                r.row.id,
                l.rate,
                ms(m.p50),
                ms(m.p90),
                opt(m.p95),
                ms(m.p99),
                opt(m.p999),
                m.errors,
                m.requests,
                m.generator
            );
        }
    }
    for r in rep.rows.iter().filter(|r| r.row.shape == Shape::Sidecars) {
        let _ = writeln!(
            s,
            "\n## What the two sidecars add (`{}`: one invocation, trivial app{})\n",
            r.row.id,
            if r.row.mtls {
                ", mTLS between the sidecars"
            } else {
                ""
            }
        );
        match (&r.sidecars, &r.error) {
            (Some(sc), _) => {
                let _ = writeln!(
                    s,
                    "| at {} req/s ({}) | p50 | p90 | p99 |",
                    sc.rate, sc.through.generator
                );
                let _ = writeln!(s, "|---|---|---|---|");
                let _ = writeln!(
                    s,
                    "| app called directly | {} ms | {} ms | {} ms |",
                    ms(sc.direct.p50),
                    ms(sc.direct.p90),
                    ms(sc.direct.p99)
                );
                let _ = writeln!(
                    s,
                    "| through two sidecars | {} ms | {} ms | {} ms |",
                    ms(sc.through.p50),
                    ms(sc.through.p90),
                    ms(sc.through.p99)
                );
                let _ = writeln!(
                    s,
                    "| added by the sidecars | {:+.3} ms | {:+.3} ms | {:+.3} ms |",
                    sc.added_p50_ms, sc.added_p90_ms, sc.added_p99_ms
                );
                let _ = writeln!(
                    s,
                    "| Dapr's published figures (v1.0, Kubernetes, mTLS, tracing 0.1) | not published | +1.40 ms | +2.10 ms |"
                );
                let cpu = sc
                    .vcpu_per_1000_rps
                    .iter()
                    .map(|(k, v)| format!("{k} {v:.3}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let _ = writeln!(
                    s,
                    "\nCPU per sidecar per 1,000 req/s: {cpu} vCPU (Dapr publishes 0.48 vCPU)."
                );
            }
            (None, Some(e)) => {
                let _ = writeln!(s, "failed: {e}");
            }
            (None, None) => {}
        }
    }
    let _ = writeln!(
        s,
        "\nCPU per request is the CPU time (user + system, from /proc) every process of the configuration spent during the max-throughput run, divided by the requests it served; the load generator's own CPU is not included but runs on the same cores."
    );
    s
}

/// Registers a TrueType font for the plots' text; `None` when the machine has none.
fn load_font() -> Option<()> {
    let candidates = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    ];
    let bytes = candidates.iter().find_map(|p| std::fs::read(p).ok())?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).ok()
}

pub fn plots(rep: &Report, dir: &Path) -> anyhow::Result<()> {
    load_font().context(
        "no TrueType font found for the plots (Debian: apt-get install fonts-dejavu-core)",
    )?;
    latency_plot(rep, &dir.join("latency.png"))?;
    throughput_plot(rep, &dir.join("throughput.png"))?;
    Ok(())
}

/// Per configuration (one line each, top to bottom): p50, p95 and p99 at 10 req/s.
fn latency_plot(rep: &Report, path: &Path) -> anyhow::Result<()> {
    let rows: Vec<(&RowResult, &crate::load::Measured)> = rep
        .rows
        .iter()
        .filter_map(|r| Some((r, &r.latency.iter().find(|l| l.rate == 10)?.measured)))
        .collect();
    let n = rows.len().max(1);
    let root = BitMapBackend::new(path, (1100, 120 + 42 * n as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let right = rows.iter().map(|(_, m)| m.p99).fold(1.0f64, f64::max) * 1.15;
    let labels: Vec<String> = rows.iter().map(|(r, _)| r.row.id.to_string()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Latency at a constant 10 req/s (p50, p95, p99)",
            ("sans-serif", 24),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(170)
        .build_cartesian_2d(0f64..right, (n as f64 - 0.5)..-0.5f64)?;
    chart
        .configure_mesh()
        .y_labels(n)
        .y_label_formatter(&|y| {
            let i = y.round();
            if (y - i).abs() < 1e-6 && i >= 0.0 {
                labels.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_label_style(("sans-serif", 15))
        .disable_y_mesh()
        .x_desc("milliseconds")
        .draw()?;
    chart.draw_series(rows.iter().enumerate().map(|(i, (_, m))| {
        PathElement::new(
            vec![(m.p50, i as f64), (m.p99, i as f64)],
            BLACK.mix(0.4).stroke_width(3),
        )
    }))?;
    type Pick = fn(&crate::load::Measured) -> f64;
    let series: [(&str, RGBColor, Pick); 3] = [
        ("p50", BLUE, |m| m.p50),
        ("p95", GREEN, |m| m.p95.unwrap_or(m.p90)),
        ("p99", RED, |m| m.p99),
    ];
    for (name, color, pick) in series {
        chart
            .draw_series(
                rows.iter()
                    .enumerate()
                    .map(|(i, (_, m))| Circle::new((pick(m), i as f64), 6, color.filled())),
            )?
            .label(name)
            .legend(move |(x, y)| Circle::new((x + 10, y), 6, color.filled()));
    }
    legend_and_present(&root, &mut chart, SeriesLabelPosition::LowerRight)
}

/// Both plots end alike: the legend on a light box in `corner`, then the file written.
fn legend_and_present<'a, CT: CoordTranslate>(
    root: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    chart: &mut ChartContext<'a, BitMapBackend<'a>, CT>,
    corner: SeriesLabelPosition,
) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .position(corner)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// "~3.3k (wrk ...)" or "~380": the original's number, for plotting beside ours.
fn original_rps(s: &str) -> Option<f64> {
    let t = s.trim_start_matches('~');
    let end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let n: f64 = t[..end].parse().ok()?;
    Some(if t[end..].starts_with('k') {
        n * 1000.0
    } else {
        n
    })
}

/// Max throughput against workers, ours (solid) and the original study's (dashed), on a
/// log scale so that both show.
fn throughput_plot(rep: &Report, path: &Path) -> anyhow::Result<()> {
    type Pick = fn(&RowResult) -> usize;
    let families: [(&str, Shape, Pick); 3] = [
        ("backend alone, full booking", Shape::BackendFull, |r| {
            r.row.backend_workers
        }),
        (
            "frontend + backend, no state (frontend workers)",
            Shape::ThroughNoState,
            |r| r.row.frontend_workers,
        ),
        (
            "frontend + backend, full booking",
            Shape::ThroughFull,
            |r| r.row.backend_workers,
        ),
    ];
    let colors = [BLUE, GREEN, RED];
    let in_family = |r: &&RowResult, shape: Shape| {
        r.row.shape == shape && !r.row.redis && r.row.consistency == "lock"
    };
    let top = rep
        .rows
        .iter()
        .filter(|r| families.iter().any(|(_, s, _)| in_family(r, *s)))
        .filter_map(|r| r.max.as_ref().map(|m| m.rps))
        .fold(1000.0f64, f64::max)
        * 2.0;
    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Max throughput vs workers: ours (solid) and the original (dashed)",
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(0.5f64..4.5f64, (50f64..top).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(4)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .x_desc("workers (tokio worker threads; the original: uvicorn workers)")
        .y_desc("requests per second (log scale)")
        .draw()?;
    for ((name, shape, workers), color) in families.into_iter().zip(colors) {
        let rows: Vec<&RowResult> = rep.rows.iter().filter(|r| in_family(r, shape)).collect();
        let mut ours: Vec<(f64, f64)> = rows
            .iter()
            .filter_map(|r| Some((workers(r) as f64, r.max.as_ref()?.rps)))
            .collect();
        let mut theirs: Vec<(f64, f64)> = rows
            .iter()
            .filter_map(|r| {
                Some((
                    workers(r) as f64,
                    original_rps(r.row.original.as_ref()?.max_rps)?,
                ))
            })
            .collect();
        ours.sort_by(|a, b| a.0.total_cmp(&b.0));
        theirs.sort_by(|a, b| a.0.total_cmp(&b.0));
        if ours.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(ours.clone(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(ours.into_iter().map(|p| Circle::new(p, 5, color.filled())))?;
        chart.draw_series(DashedLineSeries::new(
            theirs.clone(),
            6,
            4,
            color.stroke_width(2),
        ))?;
        chart.draw_series(
            theirs
                .into_iter()
                .map(|p| Circle::new(p, 4, color.stroke_width(2))),
        )?;
    }
    legend_and_present(&root, &mut chart, SeriesLabelPosition::MiddleRight)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_numbers_parse() {
        assert_eq!(original_rps("~3.3k (wrk -t4 -c100)"), Some(3300.0));
        assert_eq!(original_rps("~380"), Some(380.0));
    }
}
