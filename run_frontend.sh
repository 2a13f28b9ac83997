#!/usr/bin/env bash
# Starts the frontend: run_frontend.sh <workers> <log-level>
#   workers: tokio worker threads (1 = a single-threaded runtime)
#   log-level: critical, error, warning, info, debug or trace (uvicorn's words)
# Meant to run under `dapr run` or `sidecar run`, which set APP_PORT and the Dapr ports.
# Builds the release binaries first with scripts/build (the one build every script shares,
# so a no-op when they are fresh; cargo shows its progress when it does build); with
# BIN_DIR set, runs $BIN_DIR/frontend as it is.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ -n "${BIN_DIR:-}" ]; then
  bin="$BIN_DIR/frontend"
else
  "$here/scripts/build"
  bin="$here/target/release/frontend"
fi
exec "$bin" --workers "${1:-1}" --log-level "${2:-info}"
