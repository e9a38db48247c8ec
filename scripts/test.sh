#!/usr/bin/env bash
# Sets up a fresh machine and runs every test: unit tests, and integration tests that mount real images
# (they need root and /dev/fuse, and fail rather than skip when CI=true). The integration tests run
# twice: on the classic /dev/fuse transport, then (where the kernel has FUSE over io_uring) with
# fuse.enable_uring turned on and every mount required to use io_uring (EXT4BOX_TRANSPORT=io_uring);
# the switch is put back as it was, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
sudo=""; [[ $(id -u) -eq 0 ]] || sudo=sudo
$sudo bash scripts/setup.sh
uring=/sys/module/fuse/parameters/enable_uring
$sudo env "PATH=$PATH" CI="${CI:-}" cargo test --release --locked -- --test-threads=2
if [[ -e $uring ]]; then
    old=$(cat "$uring")
    restore() { echo "$([[ $old == Y ]] && echo 1 || echo 0)" | $sudo tee "$uring" >/dev/null; }
    trap restore EXIT
    echo 1 | $sudo tee "$uring" >/dev/null
    echo "test.sh: the integration tests again, on FUSE over io_uring"
    $sudo env "PATH=$PATH" CI="${CI:-}" EXT4BOX_TRANSPORT=io_uring cargo test --release --locked --tests -- --test-threads=2
    restore
    trap - EXIT
elif [[ ${CI:-} == true ]]; then
    echo "test.sh: CI=true but this kernel has no FUSE over io_uring ($uring is missing): Linux 6.14+ needed" >&2
    exit 1
fi
# A bounded fuzz run of every target (20 s each): crashes, hangs and unbounded memory fail the run.
$sudo env "PATH=$PATH" bash scripts/fuzz-smoke.sh 20
