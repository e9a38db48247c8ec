#!/usr/bin/env bash
# bench/read.sh — read-only benchmark: kernel ext4 vs fuse2fs vs ext4box (vs nosandbox).
#
# Builds (once) an ext4 image holding a copy of /usr/include and a 1 GiB file
# of random data, then for ROUNDS rounds, for each system in SYSTEMS
# (interleaved: round 1 = kernel, fuse2fs, ext4box; round 2 = ...), runs each
# phase on a fresh read-only mount with dropped caches, and prints a markdown
# table of medians (also written to $BENCH_DIR/read-results.md).
#
# Environment:
#   BENCH_DIR  work dir for the image, mount points, logs, results
#              (default /var/tmp/ext4box-bench)
#   EXT4BOX    ext4box binary (default /work/main/target/release/ext4box)
#   ROUNDS     rounds (default 5)
#   ORDER      fixed (default: SYSTEMS order in every round) or rotate (round r starts with
#              the r-th system, to cancel position effects)
#   SYSTEMS    subset of "kernel fuse2fs ext4box uring nosandbox" (default: the first three;
#              ext4box = classic /dev/fuse, uring = FUSE over io_uring (needs fuse.enable_uring on);
#              nosandbox = ext4box mounted with --no-sandbox, to measure the sandbox's cost)
#
# Usage (as root):  ROUNDS=3 SYSTEMS="kernel fuse2fs" bench/read.sh
#                   SYSTEMS="ext4box nosandbox" bench/read.sh   # cost of the sandbox
set -euo pipefail

# shellcheck source=./lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMG=$BENCH_DIR/read-v1.img      # bump the suffix when the contents below change
IMG_SIZE=2G
BIG_BYTES=$((1 << 30))          # size of /big
RESULTS_MD=$BENCH_DIR/read-results.md
RAW_FILE=$BENCH_DIR/read-raw.tsv   # every sample: round, system, phase, seconds|FAIL

# Phases, in run order. Each phase_* function gets the mount point as $1;
# a non-zero status marks the run as failed.
PHASES=(find ls-lR stat read-all seqread)

# ---------------------------------------------------------------- image

populate_read_image() {
    local mnt=$1
    log "copying /usr/include ($(du -sh /usr/include | cut -f1))"
    cp -a /usr/include "$mnt/include"
    log "writing 1 GiB of random data to /big"
    head -c "$BIG_BYTES" /dev/urandom >"$mnt/big"
}

# ---------------------------------------------------------------- phases

# Entry count seen by `find`, per system; compared across systems as a
# cheap correctness check (counting costs a pipe to wc, same for everyone).
declare -A FIND_COUNT=()

phase_find() {
    local n
    n=$(find "$1" | wc -l) || return 1
    FIND_COUNT[$SYS]=$n
}

phase_ls-lR() { ls -lR "$1" >/dev/null; }

phase_stat() { find "$1" -exec stat {} + >/dev/null; }

phase_read-all() { find "$1/include" -type f -print0 | xargs -0 cat >/dev/null; }

phase_seqread() {
    # dd's summary (stderr) gives the bytes actually read: check it is all of /big.
    local out
    out=$(dd if="$1/big" of=/dev/null bs=1M 2>&1) || { echo "$out" >&2; return 1; }
    if ! [[ $out =~ ([0-9]+)\ bytes ]] || ((BASH_REMATCH[1] != BIG_BYTES)); then
        echo "seqread: short read: $out" >&2
        return 1
    fi
}

# run_phase SYSTEM PHASE: fresh mount, cold caches, timed phase, unmount.
run_phase() {
    local sys=$1 phase=$2 mnt=$BENCH_DIR/mnt/$1 err=$BENCH_DIR/phase.err t
    SYS=$sys
    fs_mount "$sys" "$IMG" "$mnt" ro
    drop_caches
    if time_cmd t "phase_$phase" "$mnt" 2>"$err"; then
        record "$sys" "$phase" "$t"
        log "round $ROUND/$ROUNDS  $(printf '%-8s %-9s %9.3f s' "$sys" "$phase" "$t")"
    else
        record "$sys" "$phase" FAIL
        log "round $ROUND/$ROUNDS  $sys $phase FAILED; stderr tail:"
        tail -n 5 "$err" >&2
    fi
    fs_unmount "$mnt"
}

# ---------------------------------------------------------------- report

# targets_report: check ext4box against the project's targets (see README).
targets_report() {
    has_system ext4box && { has_system kernel || has_system fuse2fs; } || return 0
    local phase k f e v
    echo
    echo "Targets (ext4box):"
    echo
    for phase in "${PHASES[@]}"; do
        k=$(median_of kernel "$phase"); f=$(median_of fuse2fs "$phase"); e=$(median_of ext4box "$phase")
        [[ -n $e ]] || { echo "- $phase: ext4box failed or missing"; continue; }
        if [[ -n $f ]]; then
            cmp_ge "$(ratio "$f" "$e")" 3 && v=PASS || v=FAIL
            echo "- $phase: >= 3x faster than fuse2fs: $v ($(ratio "$f" "$e")x)"
        fi
        [[ -n $k ]] || continue
        case $phase in
            find|ls-lR|stat)
                cmp_ge 2 "$(ratio "$e" "$k")" && v=PASS || v=FAIL
                echo "- $phase: within 2x of kernel: $v ($(ratio "$e" "$k")x kernel time)" ;;
            seqread)
                cmp_ge "$(ratio "$k" "$e")" 0.8 && v=PASS || v=FAIL
                echo "- $phase: >= 80% of kernel throughput: $v ($(awk -v k="$k" -v e="$e" 'BEGIN { printf "%.0f%%", 100 * k / e }'))" ;;
        esac
    done
}

# find_counts_agree: true if every system saw the same number of entries.
find_counts_agree() {
    (($(printf '%s\n' "${FIND_COUNT[@]}" | sort -u | wc -l) <= 1))
}

# consistency_report: say whether the systems agree on the entry count.
consistency_report() {
    local s
    ((${#FIND_COUNT[@]})) || return 0
    echo
    if find_counts_agree; then
        echo "All systems saw $(printf '%s\n' "${FIND_COUNT[@]}" | head -n 1) entries in find."
    else
        echo "WARNING: systems disagree on the entry count from find (timings are not comparable):"
        for s in "${!FIND_COUNT[@]}"; do echo "- $s: ${FIND_COUNT[$s]}"; done
    fi
}

# ---------------------------------------------------------------- main

bench_init
make_ext4_image "$IMG" "$IMG_SIZE" populate_read_image

printf 'round\tsystem\tphase\tseconds\n' >"$RAW_FILE"
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
    for sys in $(round_systems "$ROUND"); do
        for phase in "${PHASES[@]}"; do
            run_phase "$sys" "$phase"
        done
    done
done

{
    bench_header "ext4box read benchmark"
    echo "- image: $IMG (ext4, 4 KiB blocks; /include = copy of /usr/include, /big = 1 GiB random)"
    echo
    render_table find ls-lR stat read-all "seqread:$BIG_BYTES"
    echo
    table_legend
    consistency_report
    targets_report
    sandbox_report "${PHASES[@]}"
    echo
    echo "Raw samples: $RAW_FILE"
} | tee "$RESULTS_MD"
log "results written to $RESULTS_MD"

# Any failed run or disagreement makes the whole benchmark fail (after reporting).
((${#FAILS[@]} == 0)) || die "some runs failed (FAIL cells above)"
find_counts_agree || die "systems disagree on the entry count (see above)"
