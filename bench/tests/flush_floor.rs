//! `flush-floor` counts what it did the way `scripts/against-probe` reads it: every write
//! made, one flush each inline, none unsynced, shared ones when handed off; it leaves no
//! file behind and refuses bad arguments with a message. It asserts no timing.

use std::process::{Command, Output};

fn flush_floor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flush-floor"))
        .args(args)
        .output()
        .expect("running flush-floor")
}

/// The numbers of the one line it prints: writes, flushes, then p50, p99, p99.9 and max.
fn counts(out: &Output) -> (u64, u64, [f64; 4]) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "flush-floor failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let word_after = |w: &str| -> &str {
        let at = stdout
            .find(w)
            .unwrap_or_else(|| panic!("no {w:?} in {stdout}"));
        stdout[at + w.len()..].split_whitespace().next().unwrap()
    };
    let writes = stdout
        .split("): ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of writes in {stdout}"));
    let flushes = word_after("/s, ").parse().unwrap();
    let ms = |w: &str| -> f64 { word_after(w).parse().unwrap() };
    (
        writes,
        flushes,
        [ms("p50 "), ms("p99 "), ms("p99.9 "), ms("max ")],
    )
}

#[test]
fn counts_every_write_and_each_flush_and_leaves_nothing_behind() {
    let dir = testkit::TempDir::new("flush-floor");
    let at = dir.path().to_str().unwrap();
    for (mode, expect_flushes) in [
        ("inline", Some(200)),
        ("unsynced", Some(0)),
        ("handoff", None),
    ] {
        let (writes, flushes, q) = counts(&flush_floor(&[at, mode, "200", "1", "4096"]));
        assert_eq!(writes, 200, "{mode}: every write due in a second at 200/s");
        match expect_flushes {
            Some(n) => assert_eq!(flushes, n, "{mode}"),
            // Writes that queue while the thread flushes share its next flush.
            None => assert!((1..=200).contains(&flushes), "handoff: {flushes} flushes"),
        }
        assert!(
            q.windows(2).all(|w| w[0] <= w[1]),
            "{mode}: quantiles out of order: {q:?}"
        );
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
}

#[test]
fn bad_arguments_are_refused_with_the_usage() {
    let dir = testkit::TempDir::new("flush-floor-args");
    let at = dir.path().to_str().unwrap();
    for args in [
        vec![],
        vec![at, "sideways"],
        vec![at, "inline", "0"],
        vec![at, "inline", "fast"],
        vec![at, "inline", "10", "1", "99999999"],
        vec!["/nonexistent/dir", "inline", "10", "1"],
    ] {
        let out = flush_floor(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(
            stderr.contains("flush-floor DIR") || stderr.contains("/nonexistent/dir"),
            "{args:?} says neither the usage nor the path: {stderr}"
        );
    }
}
