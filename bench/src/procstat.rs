//! What each process of a configuration spends, read from /proc: CPU time (user + system)
//! and peak resident memory (VmHWM).

use std::collections::BTreeMap;

/// CPU seconds used so far by `pid`, or `None` once it is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let (user, system) = appkit::process::cpu_times(pid)?;
    Some(user + system)
}

/// Peak resident set size of `pid` in MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// CPU seconds of each named process at one moment.
pub type Snapshot = BTreeMap<String, f64>;

pub fn snapshot(procs: &[(String, u32)]) -> Snapshot {
    procs
        .iter()
        .filter_map(|(name, pid)| Some((name.clone(), cpu_seconds(*pid)?)))
        .collect()
}

/// CPU seconds spent between two snapshots, per process.
pub fn spent(before: &Snapshot, after: &Snapshot) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), (v - before.get(k)?).max(0.0))))
        .collect()
}

/// CPU microseconds per request of each process since `before`, and their `total`.
pub fn per_request(
    before: &Snapshot,
    procs: &[(String, u32)],
    requests: u64,
) -> BTreeMap<String, f64> {
    let mut us: BTreeMap<String, f64> = spent(before, &snapshot(procs))
        .into_iter()
        .map(|(k, secs)| (k, secs * 1e6 / requests.max(1) as f64))
        .collect();
    let total = us.values().sum();
    us.insert("total".into(), total);
    us
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(cpu_seconds(me).is_some());
        assert!(peak_rss_mib(me).unwrap() > 0.0);
    }
}
