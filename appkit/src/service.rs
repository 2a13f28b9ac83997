//! The command line every service starts with: `<workers> <log-level>` (uvicorn's level
//! words), the listen address, JSON logs. Starting from it is `logging` and `process`.

use clap::Args;

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
