#!/usr/bin/env bash
# bench/fsync.sh — latency of a small durable write (create, write SIZE bytes, fsync) on the kernel's
# ext4, ext4box (journaled) and ext4box on an image without a journal.
#
# For ROUNDS rounds, for each system in SYSTEMS, makes a fresh image (sparse 1 GiB, mkfs.ext4 -b 4096;
# -O ^has_journal for "nojournal"), mounts it read-write, runs bench/fsync.py (N files), unmounts, and
# checks the image with e2fsck -fn. Prints the median over rounds of each round's median, p90 and p99
# latency in milliseconds (also written to $BENCH_DIR/fsync-results.md).
#
# Environment: BENCH_DIR, EXT4BOX, ROUNDS (default 3), SYSTEMS (default "kernel ext4box nojournal"),
#              N (files per round, default 2000), SIZE (bytes per file, default 4096).
# Usage (as root): bench/fsync.sh
set -euo pipefail

ROUNDS=${ROUNDS:-3}
SYSTEMS=${SYSTEMS:-kernel ext4box nojournal}
# shellcheck source=./lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PY=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/fsync.py
N=${N:-2000}
SIZE=${SIZE:-4096}
RESULTS_MD=$BENCH_DIR/fsync-results.md

bench_init
declare -A MED=() P90=() P99=()
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
    for sys in $(round_systems "$ROUND"); do
        img=$BENCH_DIR/fsync-$sys.img mnt=$BENCH_DIR/mnt/$sys
        rm -f "$img"
        truncate -s 1G "$img"
        extra=(); [[ $sys != nojournal ]] || extra=(-O ^has_journal)
        mkfs.ext4 -q -F -b 4096 "${extra[@]}" "$img"
        fs_mount "$sys" "$img" "$mnt" rw
        read -r med p90 p99 max < <(python3 "$PY" "$mnt" "$N" "$SIZE") || die "$sys: fsync.py failed"
        fs_unmount "$mnt"
        e2fsck -fn "$img" >/dev/null 2>&1 || die "$sys: e2fsck -fn found errors after round $ROUND ($img kept)"
        log "round $ROUND/$ROUNDS $sys: median ${med} ms, p90 ${p90} ms, p99 ${p99} ms, max ${max} ms"
        MED[$sys]+=" $med"; P90[$sys]+=" $p90"; P99[$sys]+=" $p99"
        rm -f "$img"
    done
done
{
    bench_header "fsync latency: create + write $SIZE bytes + fsync, $N files per round" \
        "fresh image and mount every round"
    echo
    echo "| system | median (ms) | p90 (ms) | p99 (ms) |"
    echo "|---|---:|---:|---:|"
    for sys in $(selected_systems); do
        # shellcheck disable=SC2086  # word-splitting the sample lists is intended
        printf '| %s | %.3f | %.3f | %.3f |\n' "$sys" "$(median ${MED[$sys]})" "$(median ${P90[$sys]})" "$(median ${P99[$sys]})"
    done
    echo
    echo "Medians over rounds of each round's percentile."
} | tee "$RESULTS_MD"
