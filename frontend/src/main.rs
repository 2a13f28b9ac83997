//! `frontend`: the public booking API on :5002.

use anyhow::Context as _;
use appkit::process::{runtime, shutdown_signal};
use appkit::service::ServiceArgs;
use appkit::settings::{DaprSettings, app_port};
use clap::Parser;
use frontend::invoke::Backend;
use frontend::routes::app;

/// Every request allocates and frees buffers of a few KiB (HTTP/2 frames, codec and body
/// buffers); glibc's malloc served them at a measured 20% of the CPU per booking more
/// than mimalloc's per-size free lists do.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "frontend", about = "Hotel booking frontend (a Dapr app)")]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
    /// The most time one request may take, in milliseconds (a caller's
    /// `x-request-timeout-ms` can only shorten it); past it the answer is 504.
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = 5000)]
    request_timeout_ms: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    appkit::logging::init(&args.service.log_level, args.service.log_json)
        .map_err(anyhow::Error::msg)?;
    let settings = DaprSettings::from_env();
    let port = args.service.port.unwrap_or_else(|| app_port(5002));
    runtime(args.service.workers)?.block_on(async move {
        let budget = std::time::Duration::from_millis(args.request_timeout_ms.max(1));
        let backend = Backend::new(&settings, budget)?;
        let listener = appkit::server::listen((args.service.host, port).into())
            .with_context(|| format!("binding {}:{port}", args.service.host))?;
        tracing::info!(port, dapr_http_port = settings.http_port, dapr_http_socket = ?settings.http_socket, backend = %settings.backend_app_id, "frontend listening");
        appkit::server::serve_http1(appkit::server::nodelay(listener), app(backend), shutdown_signal()).await;
        Ok(())
    })
}
