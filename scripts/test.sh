#!/usr/bin/env bash
# Sets up what is missing, builds, and runs every test (release profile, shared with
# the demo so native dependencies compile once).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --release --locked --no-fail-fast "$@"
else
  exec cargo test --release --locked --no-fail-fast "$@"
fi
