//! Logging setup: Dapr's `--log-level` words mapped onto `tracing` levels, text or JSON.

use tracing_subscriber::EnvFilter;

/// debug, info, warn, error, fatal, panic (Dapr's words); `RUST_LOG` overrides.
pub fn init_logging(level: &str, json: bool) {
    let level = match level.to_ascii_lowercase().as_str() {
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "fatal" | "panic" | "critical" => "error",
        "trace" => "trace",
        _ => "info",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},h2=warn,hyper=warn,tower=warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.with_ansi(false).init();
    }
}
