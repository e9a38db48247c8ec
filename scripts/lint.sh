#!/usr/bin/env bash
# scripts/lint.sh — the style checks CI runs before the tests:
#   - rustfmt (rustfmt.toml) over every crate file;
#   - clippy on every target with warnings as errors; clippy reads `rust-version` from Cargo.toml, so
#     its incompatible_msrv lint also refuses standard-library items newer than the declared version;
#   - rustdoc without warnings (broken or private intra-doc links);
#   - the declared rust-version holds for the dependencies too, as far as it can be known without that
#     toolchain (rustup cannot fetch one here; Debian ships 1.85, too old for imago, then 1.96 and newer):
#     no locked dependency declares a newer one, and those that declare none are compiled by clippy
#     with ours as their MSRV (scripts/msrv-wrapper.sh), so a standard-library item newer than ours
#     fails the check. What neither sees: a newer language feature (let chains: 1.88), trait impl
#     or const use in a dependency that declares no rust-version, and a dependency whose declared
#     rust-version is lower than what it really needs.
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
msrv=$(cargo metadata --locked --no-deps --format-version 1 | python3 -c '
import json, sys
meta = json.load(sys.stdin)
print(next(p for p in meta["packages"] if p["id"] in meta["workspace_members"])["rust_version"])')
conf=$(mktemp -d)
trap 'rm -rf "$conf"' EXIT
printf 'msrv = "%s"\n' "$msrv" > "$conf/clippy.toml"
# A fresh target directory each time: cargo does not replay a cached dependency's warnings, and the
# MSRV in clippy.toml is not part of its fingerprint.
log=$(CLIPPY_CONF_DIR=$conf EXT4BOX_CLIPPY_DRIVER=$(command -v clippy-driver) \
    RUSTC_WRAPPER=$PWD/scripts/msrv-wrapper.sh CARGO_TARGET_DIR=$conf/target \
    cargo check --release --locked --all-targets --color never 2>&1) || { echo "$log" >&2; exit 1; }
if grep -q 'current MSRV' <<<"$log"; then
    echo "$log" | grep -B1 -A3 'current MSRV' >&2
    echo "lint: dependencies that declare no rust-version use items newer than ours ($msrv)" >&2
    exit 1
fi
echo "lint: formatting, clippy, rustdoc and dependency rust-versions ($msrv) clean"
