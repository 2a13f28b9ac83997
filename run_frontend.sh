#!/usr/bin/env bash
# Starts the frontend: run_frontend.sh <workers> <log-level> (see scripts/run-service).
exec "$(dirname "$0")/scripts/run-service" frontend "$@"
