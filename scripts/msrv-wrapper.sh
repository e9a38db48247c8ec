#!/bin/sh
# scripts/msrv-wrapper.sh — cargo's RUSTC_WRAPPER for the rust-version check in scripts/lint.sh.
# A dependency that declares no rust-version promises nothing, so it is compiled by clippy with our
# declared version as its MSRV (CLIPPY_CONF_DIR holds that clippy.toml) and incompatible_msrv forced on
# past cargo's --cap-lints: every standard-library item it uses that is newer than our rust-version is
# reported. Dependencies that declare one are compiled as usual (lint.sh checks theirs is not newer
# than ours), and so is ext4box itself (the ordinary clippy run checks it against Cargo.toml).
# Called as: msrv-wrapper.sh RUSTC ARGS...
if [ -z "${CARGO_PKG_RUST_VERSION:-}" ] && [ -z "${CARGO_PRIMARY_PACKAGE:-}" ]; then
    exec "${EXT4BOX_CLIPPY_DRIVER:?set by scripts/lint.sh: the clippy-driver to run}" "$@" --force-warn clippy::incompatible_msrv
fi
exec "$@"
