//! `sidecar`: the binary. Parses flags, picks the runtime, and hands over to the launcher.

use clap::Parser;
use sidecar::cli::{Cli, Command, MintCommand, StoreArgs};

/// Every request allocates and frees buffers of a few KiB (HTTP/2 frames, codec and body
/// buffers); glibc's malloc served them at a measured 20% of the CPU per booking more
/// than mimalloc's per-size free lists do.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    let args = match cli.command {
        Command::Run(args) => *args,
        Command::ResetState(store) => offline("reset-state", store, sidecar::reset::run),
        Command::DumpState(store) => offline("dump-state", store, sidecar::dump::run),
        Command::Mint(what) => mint(what),
    };
    if let Err(e) = appkit::logging::init(&args.log_level, args.log_as_json) {
        eprintln!("sidecar: {e}");
        std::process::exit(1);
    }
    // One thread serves best when a few busy processes share two cores (see DESIGN.md).
    let runtime = match appkit::process::runtime(args.workers) {
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

/// Writes a CA or an app's certificate, says where, then exits.
fn mint(what: MintCommand) -> ! {
    let made = match what {
        MintCommand::Ca {
            out,
            trust_domain,
            days,
        } => sidecar::mint::mint_ca(&out, &trust_domain, days).map(|()| {
            let ca = out.join(sidecar::mint::CA_CERT);
            format!("CA for trust domain {trust_domain}: {}", ca.display())
        }),
        MintCommand::App {
            ca,
            app_id,
            out,
            trust_domain,
            namespace,
            days,
        } => sidecar::mint::mint_app(&ca, &out, &app_id, &trust_domain, &namespace, days).map(
            |(cert, key)| {
                let id = sidecar::mint::spiffe_id(&trust_domain, &namespace, &app_id);
                format!("{id}: {} and {}", cert.display(), key.display())
            },
        ),
    };
    match made {
        Ok(what) => {
            println!("{what}");
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("sidecar mint: {e}");
            std::process::exit(1);
        }
    }
}

/// Runs a command on a stopped stack's stores, then exits.
fn offline<F: Future<Output = anyhow::Result<()>>>(
    name: &str,
    store: StoreArgs,
    command: impl FnOnce(StoreArgs) -> F,
) -> ! {
    let result = appkit::logging::init(&store.log_level, false)
        .map_err(anyhow::Error::msg)
        .and_then(|()| Ok(appkit::process::runtime(1)?))
        .and_then(|rt| rt.block_on(command(store)));
    let _ = std::io::Write::flush(&mut std::io::stdout());
    if let Err(e) = result {
        eprintln!("sidecar {name}: {e:#}");
        std::process::exit(1);
    }
    std::process::exit(0);
}
