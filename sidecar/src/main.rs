//! `sidecar`: the binary. Parses flags, picks the runtime, and hands over to the launcher.

use clap::Parser;
use sidecar::cli::{Cli, Command, StoreArgs};

fn main() {
    let cli = Cli::parse();
    let args = match cli.command {
        Command::Run(args) => args,
        Command::ResetState(store) => offline("reset-state", store, sidecar::reset::run),
        Command::DumpState(store) => offline("dump-state", store, sidecar::dump::run),
    };
    sidecar::telemetry::init_logging(&args.log_level, args.log_as_json);
    // One thread serves best when a few busy processes share two cores (see DESIGN.md);
    // SIDECAR_WORKERS=N asks for a multi-thread runtime instead.
    let workers: usize = std::env::var("SIDECAR_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(1);
    let mut builder = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sidecar: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(async {
        match sidecar::launcher::run(args).await {
            Ok(code) => code,
            Err(e) => {
                tracing::error!("{e:#}");
                eprintln!("sidecar: {e:#}");
                1
            }
        }
    });
    drop(runtime);
    std::process::exit(code);
}

/// Runs a command on a stopped stack's stores, then exits.
fn offline<F: Future<Output = anyhow::Result<()>>>(
    name: &str,
    store: StoreArgs,
    command: impl FnOnce(StoreArgs) -> F,
) -> ! {
    sidecar::telemetry::init_logging(&store.log_level, false);
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(command(store)));
    let _ = std::io::Write::flush(&mut std::io::stdout());
    if let Err(e) = result {
        eprintln!("sidecar {name}: {e:#}");
        std::process::exit(1);
    }
    std::process::exit(0);
}
