//! `sidecar run`: start the sidecar, then the app command with the environment `dapr run`
//! gives an app; forward Ctrl-C/SIGTERM to the app; when the app exits, stop the sidecar
//! and exit with the app's status. Without a command, run the sidecar until stopped.

use std::process::ExitStatus;
use std::time::Duration;

use anyhow::Context as _;
use appkit::process::{Signal, send_signal};
use tokio::process::Command;
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::RunArgs;
use crate::server::Sidecar;

/// How long the app gets between a forwarded signal and SIGKILL.
const APP_GRACE: Duration = Duration::from_secs(10);

fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Runs `sidecar run`; returns the process exit code.
pub async fn run(args: RunArgs) -> anyhow::Result<i32> {
    let opts = args.sidecar.clone();
    let sidecar = Sidecar::start(args.sidecar).await?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;

    if args.command.is_empty() {
        sidecar
            .serve(async {
                tokio::select! {
                    _ = sigint.recv() => {}
                    _ = sigterm.recv() => {}
                }
            })
            .await;
        return Ok(0);
    }

    let ports = sidecar.ports;
    let mut cmd = Command::new(&args.command[0]);
    cmd.args(&args.command[1..])
        .env("APP_ID", &opts.app_id)
        .env("APP_CHANNEL_ADDRESS", &opts.app_channel_address)
        .env("APP_PROTOCOL", &opts.app_protocol)
        // The sidecar's own key and certificates are not the app's.
        .env_remove("DAPR_CERT_CHAIN_FILE")
        .env_remove("DAPR_CERT_KEY_FILE")
        .env_remove("DAPR_TRUST_ANCHORS_FILE")
        .env_remove("DAPR_TRUST_ANCHORS");
    // On sockets there are no API ports: the app is given the sockets as endpoints
    // (`unix://` is the gRPC form Dapr's SDKs read; this project's apps read both).
    match (opts.api_socket("http"), opts.api_socket("grpc")) {
        (Some(http), Some(grpc)) => {
            cmd.env("DAPR_HTTP_ENDPOINT", format!("unix://{}", http.display()))
                .env("DAPR_GRPC_ENDPOINT", format!("unix://{}", grpc.display()));
        }
        _ => {
            cmd.env("DAPR_HTTP_PORT", ports.http.to_string())
                .env("DAPR_GRPC_PORT", ports.grpc.to_string())
                .env_remove("DAPR_HTTP_ENDPOINT")
                .env_remove("DAPR_GRPC_ENDPOINT");
        }
    }
    // The tokens reach the app as `dapr run` gives them, also when given as flags.
    if let Some(t) = opts.api_token() {
        cmd.env("DAPR_API_TOKEN", t);
    }
    if let Some(t) = opts.app_token() {
        cmd.env("APP_API_TOKEN", t);
    }
    if let Some(p) = opts.app_port() {
        cmd.env("APP_PORT", p.to_string());
    }
    if let Some(p) = ports.metrics {
        cmd.env("DAPR_METRICS_PORT", p.to_string());
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            sidecar.shutdown().await;
            return Err(e)
                .with_context(|| format!("starting the app command {:?}", args.command[0]));
        }
    };
    tracing::info!(pid = child.id(), command = ?args.command, "app started");

    let forward = |child: &tokio::process::Child, signal: Signal| {
        if let Some(pid) = child.id() {
            let _ = send_signal(pid, signal);
        }
    };
    let status = tokio::select! {
        status = child.wait() => Some(status?),
        _ = sigint.recv() => { forward(&child, Signal::Int); None }
        _ = sigterm.recv() => { forward(&child, Signal::Term); None }
        _ = sidecar.stop_requested() => { forward(&child, Signal::Term); None }
    };
    let status = match status {
        Some(s) => s,
        None => match tokio::time::timeout(APP_GRACE, child.wait()).await {
            Ok(s) => s?,
            Err(_) => {
                tracing::warn!("app did not exit within {APP_GRACE:?} of the signal; killing it");
                child.kill().await?;
                child.wait().await?
            }
        },
    };
    tracing::info!(code = exit_code(status), "app exited");
    sidecar.shutdown().await;
    Ok(exit_code(status))
}
