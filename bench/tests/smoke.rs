//! Runs the harness on a tiny matrix (about a second per run) and checks that it writes a
//! well-formed results file, table and plots. It asserts no timing. The row across hosts
//! makes network namespaces: root only, as CI runs.

use std::path::Path;
use std::process::Command;

fn png_ok(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        path.display()
    );
    assert!(
        bytes.len() > 5_000,
        "{} is suspiciously small",
        path.display()
    );
}

/// Runs `bench --tiny <args> --out <a fresh folder named for this run>` from the
/// repository's root; the folder and what bench printed, once it succeeded.
fn tiny_bench(name: &str, args: &[&str]) -> (std::path::PathBuf, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = Command::new(env!("CARGO_BIN_EXE_bench"))
        .arg("--tiny")
        .args(args)
        .arg("--out")
        .arg(&out)
        .current_dir(root)
        .output()
        .expect("running bench");
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    (out, stdout)
}

#[test]
fn tiny_matrix_writes_results_table_and_plots() {
    let (out, stdout) = tiny_bench(
        "bench-smoke",
        &[
            "--rows",
            "backend-nodapr,through-full-w1,hosts-full-redis,hosts-full-redis-mtls,sidecars",
        ],
    );
    assert!(
        stdout.contains("[1/5]") && stdout.contains("[5/5]"),
        "a progress line per row:\n{stdout}"
    );

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 5);
    for r in &rows[..4] {
        assert!(r["error"].is_null(), "{r}");
        let max = &r["max"];
        assert!(
            max["rps"].as_f64().unwrap() > 0.0 && max["requests"].as_u64().unwrap() > 0,
            "{max}"
        );
        // Fast errors would look like speed: every booking must have been served.
        assert_eq!(max["errors"], 0, "{}: {max}", r["row"]["id"]);
        assert!(max["generator"] == "wrk");
        assert!(
            r["cpu_us_per_request"]["total"].as_f64().unwrap() > 0.0,
            "{r}"
        );
        let lat = &r["latency"][0]["measured"];
        assert!(
            lat["p50"].as_f64().unwrap() > 0.0
                && lat["p99"].as_f64().unwrap() >= lat["p50"].as_f64().unwrap()
        );
        assert!(r["peak_rss_mib"].as_object().is_some_and(|m| !m.is_empty()));
    }
    for r in &rows[1..4] {
        assert_eq!(
            r["latency"].as_array().unwrap().len(),
            2,
            "full booking through Dapr also runs at 1,000 req/s: {r}"
        );
    }
    for r in &rows[2..4] {
        let across = r["cpu_us_per_request"].as_object().unwrap();
        for process in [
            "redis-server",
            "backend-sidecar",
            "backend",
            "frontend-sidecar",
            "frontend",
        ] {
            assert!(
                across.contains_key(process),
                "every process on the hosts is measured: {across:?}"
            );
        }
    }
    let sc = &rows[4]["sidecars"];
    assert!(sc["through"]["p50"].as_f64().unwrap() > 0.0, "{sc}");
    assert!(
        sc["vcpu_per_1000_rps"]
            .as_object()
            .is_some_and(|m| m.len() == 2),
        "{sc}"
    );

    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(
        md.contains("| configuration | workers | max throughput, ours | original |"),
        "{md}"
    );
    assert!(
        md.contains("backend alone, no state access, no Dapr client") && md.contains("~3.3k"),
        "{md}"
    );
    assert!(md.contains("What the two sidecars add"), "{md}");
    png_ok(&out.join("latency.png"));
    png_ok(&out.join("throughput.png"));
    std::fs::remove_dir_all(&out).unwrap();
}

/// `bench --pubsub` at a low rate for about a second per row: both rows deliver every
/// message they published and write their table and results. It asserts no timing.
#[test]
fn pubsub_latency_run_writes_its_table() {
    let (out, _) = tiny_bench("bench-pubsub-smoke", &["--pubsub", "50"]);
    let rows: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("pubsub.json")).unwrap()).unwrap();
    let rows = rows.as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["row"].as_str().unwrap()).collect();
    assert_eq!(names, ["pubsub.in-memory", "pubsub.redis"]);
    for r in rows {
        let published = r["published"].as_u64().unwrap();
        assert!(published > 0, "{r}");
        assert_eq!(r["delivered"].as_u64(), Some(published), "{r}");
        let lat: Vec<f64> = r["latency_ms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert!(lat[0] > 0.0 && lat.windows(2).all(|w| w[0] <= w[1]), "{r}");
        // CPU time is counted in 10 ms ticks: a short run may show none.
        let cpu = r["sidecar_cpu_us"].as_f64().unwrap();
        assert!(cpu.is_finite() && cpu >= 0.0, "{r}");
    }
    let md = std::fs::read_to_string(out.join("pubsub.md")).unwrap();
    assert!(md.contains("| pubsub.redis | 50/s |"), "{md}");
    std::fs::remove_dir_all(&out).unwrap();
}
