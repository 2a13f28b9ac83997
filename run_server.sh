#!/usr/bin/env bash
# Starts the backend: run_server.sh <workers> <log-level> (see scripts/run-service).
exec "$(dirname "$0")/scripts/run-service" backend "$@"
