#!/usr/bin/env bash
# Sets up a fresh machine and runs every test: unit tests, and integration tests that mount real images
# (they need root and /dev/fuse, and fail rather than skip when CI=true).
set -euo pipefail
cd "$(dirname "$0")/.."
sudo=""; [[ $(id -u) -eq 0 ]] || sudo=sudo
$sudo bash scripts/setup.sh
$sudo env "PATH=$PATH" CI="${CI:-}" cargo test --release --locked -- --test-threads=2
# A bounded fuzz run of every target (20 s each): crashes, hangs and unbounded memory fail the run.
$sudo env "PATH=$PATH" bash scripts/fuzz-smoke.sh 20
