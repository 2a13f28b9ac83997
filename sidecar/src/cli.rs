//! The command line: `sidecar run` (the sidecar's `Config`, plus logging, workers and the
//! app command) and the commands on a stopped stack's stores.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Config;

#[derive(Parser, Debug)]
#[command(
    name = "sidecar",
    version,
    about = "A Dapr-API-compatible sidecar with a `dapr run`-style launcher"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start a sidecar and, if given, the app command beside it (like `dapr run`).
    Run(Box<RunArgs>),
    /// Remove one app's keys and held locks from the stores of a resources folder.
    ResetState(StoreArgs),
    /// Print one app's state as JSON lines (`{"store","key","value"}`), e.g. for the
    /// booking ledger check after a load.
    DumpState(StoreArgs),
    /// Make a local certificate authority, or a certificate for one app signed by it, for
    /// mTLS between sidecars in development and tests.
    #[command(subcommand)]
    Mint(MintCommand),
}

#[derive(Subcommand, Debug)]
pub enum MintCommand {
    /// A new CA in a folder: `ca.pem` (the trust bundle for every sidecar) and `ca.key`.
    Ca {
        #[arg(long)]
        out: PathBuf,
        /// The SPIFFE trust domain the CA vouches for (Dapr's default: public).
        #[arg(long, default_value = "public")]
        trust_domain: String,
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// A certificate for one app id, signed by the CA in `--ca`: `<app-id>.pem` (with the
    /// CA's certificate after it) and `<app-id>.key`, in `--out`.
    App {
        #[arg(long)]
        ca: PathBuf,
        #[arg(short = 'a', long)]
        app_id: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "public")]
        trust_domain: String,
        /// Dapr's `NAMESPACE`.
        #[arg(long, env = "NAMESPACE", default_value = "default")]
        namespace: String,
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
}

/// The stores of a resources folder, seen from outside a running sidecar.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// Folders of component YAMLs naming the stores.
    #[arg(
        short = 'd',
        long = "resources-path",
        visible_alias = "components-path",
        required = true
    )]
    pub resources_path: Vec<PathBuf>,
    /// The app whose keys are meant (its key prefix).
    #[arg(short = 'a', long, default_value = "backend")]
    pub app_id: String,
    #[arg(long, default_value = "warn")]
    pub log_level: String,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The sidecar's own settings.
    #[command(flatten)]
    pub sidecar: Config,
    /// debug, info, warn, error, fatal or panic.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Write logs as JSON lines.
    #[arg(long)]
    pub log_as_json: bool,
    /// Tokio worker threads; 1 (the default) runs a single-threaded runtime, which serves
    /// best when a few busy processes share two cores.
    #[arg(long, env = "SIDECAR_WORKERS", default_value_t = 1)]
    pub workers: usize,
    /// The app command and its arguments (after the flags, with or without `--`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_command_follows_flags_with_or_without_dashes() {
        let a = Cli::parse_from([
            "sidecar",
            "run",
            "--app-id",
            "backend",
            "--app-port",
            "5001",
            "bash",
            "run_server.sh",
            "1",
            "critical",
        ]);
        let Command::Run(r) = a.command else {
            panic!("not run")
        };
        assert_eq!(r.command, ["bash", "run_server.sh", "1", "critical"]);
        let b = Cli::parse_from([
            "sidecar",
            "run",
            "-a",
            "x",
            "--components-path",
            "c",
            "--",
            "app",
            "--flag",
        ]);
        let Command::Run(r) = b.command else {
            panic!("not run")
        };
        assert_eq!(r.command, ["app", "--flag"]);
        assert_eq!(r.sidecar.resources_path, [PathBuf::from("c")]);
    }
}
