//! App health checks (`--enable-app-health-check`), as daprd runs them: the app is probed at
//! once and then every interval (HTTP: `GET <path>`, healthy on any 2xx; gRPC:
//! `AppCallbackHealthCheck.HealthCheck`), each probe within its timeout. The app starts
//! unhealthy, becomes healthy with one good probe, and unhealthy again after `threshold`
//! failed probes in a row (daprd's flag says "consecutive"; its code counts failures since
//! the app was last found healthy, a difference only when probes alternate). While it is
//! unhealthy its subscriptions offer nothing (what is published for it waits) and calls to
//! it are refused with "app is not in a healthy state"; subscriptions start once it is
//! first healthy.

use std::time::Duration;

use tokio::sync::watch;

use crate::invoke::Invoker;

/// The probe's settings, from the `--app-health-*` flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// The HTTP app's health path, with its leading `/`.
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub threshold: u32,
}

/// Whether the app is healthy; always, without health checks.
pub struct AppHealth {
    check: Option<HealthCheck>,
    healthy: watch::Sender<bool>,
}

impl AppHealth {
    pub fn new(check: Option<HealthCheck>) -> AppHealth {
        let (healthy, _) = watch::channel(check.is_none());
        AppHealth { check, healthy }
    }

    pub fn check(&self) -> Option<&HealthCheck> {
        self.check.as_ref()
    }

    pub fn is_healthy(&self) -> bool {
        *self.healthy.borrow()
    }

    /// Resolves once the app is healthy (at once without health checks).
    pub async fn until_healthy(&self) {
        let mut rx = self.healthy.subscribe();
        let _ = rx.wait_for(|healthy| *healthy).await;
    }
}

/// Probes the app until `stop`, and says when its health changes.
pub async fn probe(invoker: &Invoker, mut stop: watch::Receiver<bool>) {
    let health = invoker.health();
    let Some(check) = health.check() else {
        return;
    };
    // Unhealthy until a probe says otherwise, as daprd starts.
    let mut failures = check.threshold;
    let mut ticks = tokio::time::interval(check.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => return,
        }
        let probed = tokio::select! {
            p = invoker.probe_app(check) => p,
            _ = stop.changed() => return,
        };
        match probed {
            Ok(()) => {
                if failures >= check.threshold {
                    tracing::info!("app entered healthy status");
                    health.healthy.send_replace(true);
                }
                failures = 0;
            }
            Err(why) => {
                failures = failures.saturating_add(1);
                if failures == check.threshold {
                    tracing::warn!(reason = %why, "app entered unhealthy status");
                    health.healthy.send_replace(false);
                } else {
                    tracing::debug!(reason = %why, failures, "app health probe failed");
                }
            }
        }
    }
}

/// A duration as Go's `time.Duration.String` writes it (`500ms`, `5s`, `1m30s`, `1.5s`): daprd
/// reports the probe's interval and timeout that way in its metadata.
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m) = (ms / 3_600_000, ms / 60_000 % 60);
    let (s, frac) = (ms / 1000 % 60, ms % 1000);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&s.to_string());
    if frac > 0 {
        out.push_str(format!(".{frac:03}").trim_end_matches('0'));
    }
    out.push('s');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_go_writes_them() {
        for (ms, go) in [
            (500, "500ms"),
            (1000, "1s"),
            (1500, "1.5s"),
            (5000, "5s"),
            (60_000, "1m0s"),
            (90_000, "1m30s"),
            (3_600_000, "1h0m0s"),
        ] {
            assert_eq!(go_duration(Duration::from_millis(ms)), go);
        }
    }
}
