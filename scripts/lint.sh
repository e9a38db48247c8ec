#!/usr/bin/env bash
# scripts/lint.sh — the style checks CI runs before the tests:
#   - rustfmt (rustfmt.toml) over every crate file;
#   - clippy on every target with warnings as errors; clippy reads `rust-version` from Cargo.toml, so
#     its incompatible_msrv lint also refuses standard-library items newer than the declared version
#     (no build on that version itself: rustup cannot fetch a toolchain here, and Debian ships 1.85, too
#     old for imago, and 1.97);
#   - rustdoc without warnings (broken or private intra-doc links);
#   - no locked dependency declares a rust-version newer than ours (what a build on the declared
#     version would find first, short of the toolchain itself).
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in rustfmt clippy-driver; do
    command -v "$tool" >/dev/null || { echo "lint: $tool is not installed (rustup component add ${tool%-driver})" >&2; exit 1; }
done
cargo fmt --all -- --check
cargo clippy --release --locked --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --release --locked --no-deps
cargo metadata --locked --format-version 1 | python3 -c '
import json, sys
meta = json.load(sys.stdin)
def version(v):
    parts = [int(x) for x in v.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))
ours = next(p for p in meta["packages"] if p["id"] in meta["workspace_members"])
used = {node["id"] for node in meta["resolve"]["nodes"]}
newer = ["%s %s (rust-version %s)" % (p["name"], p["version"], p["rust_version"]) for p in meta["packages"]
         if p["id"] in used and p.get("rust_version") and version(p["rust_version"]) > version(ours["rust_version"])]
if newer:
    sys.exit("lint: dependencies newer than our rust-version %s: %s" % (ours["rust_version"], ", ".join(newer)))
'
echo "lint: formatting, clippy, rustdoc and dependency rust-versions clean"
