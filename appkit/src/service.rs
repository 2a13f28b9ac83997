//! How every service starts: `<workers> <log-level>` on the command line (uvicorn's level
//! words), logging, a tokio runtime sized to the workers, and shutdown on Ctrl-C/SIGTERM.

use clap::Args;
use tracing_subscriber::EnvFilter;

/// The flags both services take.
#[derive(Args, Debug, Clone)]
pub struct ServiceArgs {
    /// Tokio worker threads; 1 runs a single-threaded runtime.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// critical, error, warning, info, debug or trace (uvicorn's words).
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Write logs as JSON lines.
    #[arg(long, env = "LOG_JSON")]
    pub log_json: bool,
    /// Port to listen on (default: $APP_PORT, then the service's own default).
    #[arg(long)]
    pub port: Option<u16>,
    /// Address to listen on; 0.0.0.0 in a container.
    #[arg(long, env = "APP_HOST", default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
}

/// Maps uvicorn's level words onto `tracing` filter levels.
pub fn level_filter(level: &str) -> Option<&'static str> {
    Some(match level.to_ascii_lowercase().as_str() {
        "critical" | "error" => "error",
        "warning" | "warn" => "warn",
        "info" => "info",
        "debug" => "debug",
        "trace" => "trace",
        _ => return None,
    })
}

pub fn init_logging(args: &ServiceArgs) -> Result<(), String> {
    let level = level_filter(&args.log_level).ok_or_else(|| {
        format!(
            "unknown log level {:?}; use critical, error, warning, info, debug or trace",
            args.log_level
        )
    })?;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},h2=warn,hyper=warn,tower=warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_json {
        builder.json().init();
    } else {
        builder.with_ansi(false).init();
    }
    Ok(())
}

/// One worker: a current-thread runtime, the cheapest when a few busy processes share few
/// cores; more: a multi-thread runtime with that many workers.
pub fn runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uvicorn_words_map_to_tracing_levels() {
        assert_eq!(level_filter("critical"), Some("error"));
        assert_eq!(level_filter("WARNING"), Some("warn"));
        assert_eq!(level_filter("loud"), None);
    }
}
