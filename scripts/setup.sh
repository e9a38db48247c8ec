#!/usr/bin/env bash
# Installs what a fresh Debian/Ubuntu machine lacks to build ext4box and run its tests.
# Needs root (apt-get). Safe to run again: it installs only what is missing.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have mkfs.ext4 && have e2fsck && have debugfs || need+=(e2fsprogs)
have setfacl || need+=(acl)
have setfattr || need+=(attr)
have python3 || need+=(python3)
have podman || need+=(podman)      # the Containerfile test
have runc || need+=(runc)
have debootstrap || need+=(debootstrap)
have gcc || need+=(gcc)            # the linker for cargo
have cargo || need+=(cargo)        # only if no rustup toolchain is installed
have fusermount3 || need+=(fuse3)  # mounting without root
have fuse2fs || need+=(fuse2fs)    # the tests that compare with e2fsprogs' FUSE driver
have sfdisk || need+=(fdisk)       # partitioned disk images in the tests
have qemu-img || need+=(qemu-utils) # VM disk images (qcow2, VMDK, VHDX) in the tests
have img2simg || need+=(android-sdk-libsparse-utils) # Android sparse images in the tests
if ((${#need[@]})); then
    echo "setup: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi

# FUSE: the module and its device node.
if [[ ! -e /dev/fuse ]]; then
    modprobe fuse 2>/dev/null || true
fi
[[ -e /dev/fuse ]] || { echo "setup: /dev/fuse is missing and the fuse module could not be loaded" >&2; exit 1; }

# An ordinary user for the tests of mounting without root.
if ! id ext4box-test >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin ext4box-test
fi

# POSIX conformance tests: the Rust pjdfstest (from crates.io).
if ! command -v pjdfstest >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/pjdfstest" ]; then
    echo "setup: installing pjdfstest with cargo"
    cargo install pjdfstest --version 0.2.2 --locked --quiet
fi

# Fuzzing (the smoke run in scripts/test.sh): the nightly toolchain and cargo-fuzz.
if command -v rustup >/dev/null 2>&1 && ! rustup toolchain list | grep -q '^nightly'; then
    echo "setup: installing the nightly toolchain for cargo-fuzz"
    rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo-fuzz" ]; then
    echo "setup: installing cargo-fuzz"
    cargo install cargo-fuzz --version 0.13.2 --locked --quiet
fi

# ext4box needs Rust 1.87 or later (Cargo.toml's rust-version); Debian bookworm's and trixie's own are older.
ver=$(cargo --version | awk '{print $2}')
if [[ "$(printf '%s\n' 1.87.0 "$ver" | sort -V | head -1)" != 1.87.0 ]]; then
    echo "setup: cargo $ver is older than 1.87; install a newer toolchain with rustup" >&2
    exit 1
fi
