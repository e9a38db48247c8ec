#!/usr/bin/env bash
# scripts/lint.sh — the style checks CI runs before the tests:
#   - rustfmt (rustfmt.toml) over every crate file;
#   - clippy on every target with warnings as errors; clippy reads `rust-version` from Cargo.toml, so
#     its incompatible_msrv lint also refuses standard-library items newer than the declared version
#     (this machine has one toolchain and cannot fetch another, so there is no build on that version);
#   - rustdoc without warnings (broken or private intra-doc links).
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in rustfmt clippy-driver; do
    command -v "$tool" >/dev/null || { echo "lint: $tool is not installed (rustup component add ${tool%-driver})" >&2; exit 1; }
done
cargo fmt --all -- --check
cargo clippy --release --locked --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --release --locked --no-deps
echo "lint: formatting, clippy and rustdoc clean"
