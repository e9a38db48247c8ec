#!/usr/bin/env bash
# Sets up a fresh machine, builds ext4box, and runs its demo: a sample image built with mkfs.ext4 -d,
# mounted read-only, listed, and unmounted. Mounting needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
sudo=""; [[ $(id -u) -eq 0 ]] || sudo=sudo
$sudo bash scripts/setup.sh
cargo build --release --quiet
$sudo ./target/release/ext4box demo
