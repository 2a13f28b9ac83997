//! The ledger check as a test sees it: the real commands a user runs after a load,
//! `sidecar dump-state` on the stack's components and `ledger --json` on its lines (the
//! rules live in `backend::ledger`), with the 201 answers the test's clients were given.

use std::path::Path;

use anyhow::Context as _;
use serde_json::Value;

use crate::process::TempDir;
use crate::stack::workspace_bin;

/// What `ledger --json` found. `violations` empty means the ledger is right.
#[derive(Debug)]
pub struct Verdict {
    pub violations: Vec<String>,
    pub oversold_nights: u64,
    /// Acknowledged (201) bookings missing or changed in the store.
    pub lost: u64,
    /// Stored reservations no acknowledged answer names.
    pub unheard: u64,
    /// Requests booked more than once (every test request has its own `user_id`).
    pub doubled: u64,
    /// The whole verdict.
    pub json: Value,
}

/// Checks the backend's store named by `components` against the hotels of `catalogue`
/// and the answers `acknowledged`.
pub async fn check_ledger(
    components: &Path,
    catalogue: &str,
    acknowledged: &[Value],
) -> anyhow::Result<Verdict> {
    check_ledger_and_events(components, catalogue, acknowledged, None).await
}

/// `check_ledger`, and with `events` (the notifier's inbox file) `ledger --events` too:
/// what was announced must be what committed.
pub async fn check_ledger_and_events(
    components: &Path,
    catalogue: &str,
    acknowledged: &[Value],
    events: Option<&Path>,
) -> anyhow::Result<Verdict> {
    let dir = TempDir::new("ledger");
    let dump = dir.path().join("state.jsonl");
    let out = tokio::process::Command::new(workspace_bin("sidecar"))
        .arg("dump-state")
        .arg("--resources-path")
        .arg(components)
        .args(["--app-id", "backend"])
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "sidecar dump-state: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&dump, &out.stdout)?;
    let answers = dir.path().join("acknowledged.jsonl");
    let lines: Vec<String> = acknowledged.iter().map(Value::to_string).collect();
    std::fs::write(&answers, lines.join("\n"))?;
    let mut ledger = tokio::process::Command::new(workspace_bin("ledger"));
    ledger
        .arg("--state")
        .arg(&dump)
        .arg("--acknowledged")
        .arg(&answers)
        .args(["--catalogue", catalogue, "--unique-users", "--json"]);
    if let Some(events) = events {
        ledger.arg("--events").arg(events);
    }
    let out = ledger.output().await?;
    // 0: right, 1: violated; anything else is the command failing.
    anyhow::ensure!(
        matches!(out.status.code(), Some(0 | 1)),
        "ledger: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).context("ledger --json output")?;
    let count = |field: &str| json[field].as_u64().unwrap_or(0);
    let verdict = Verdict {
        violations: json["violations"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect(),
        oversold_nights: count("oversold_nights"),
        lost: count("lost"),
        unheard: count("unheard"),
        doubled: count("doubled"),
        json: json.clone(),
    };
    anyhow::ensure!(
        verdict.violations.is_empty() == out.status.success(),
        "ledger's exit status disagrees with its verdict: {json}"
    );
    Ok(verdict)
}
