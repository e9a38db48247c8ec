# shellcheck shell=bash
# bench/lib.sh — shared helpers for the ext4box benchmarks (read.sh, write.sh).
#
# Source it from a script that runs under `set -euo pipefail` as root:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# It provides:
#   logging ............ log, die
#   settings ........... BENCH_DIR, EXT4BOX, ROUNDS, SYSTEMS, ORDER, UNMOUNT_TIMEOUT (+ bench_check_env)
#   images ............. make_ext4_image IMG SIZE POPULATE_FN
#   mounts ............. fs_mount SYSTEM IMG MNT MODE, fs_unmount MNT, unmount_all
#                        (unmount_all is installed as an EXIT trap by bench_init)
#   caches/timing ...... drop_caches, time_cmd
#   systems ............ has_system, uses_ext4box_binary, selected_systems, round_systems
#   results ............ record, median, median_of, ratio, cmp_ge, fmt_cell,
#                        sandbox_cost, render_table, sandbox_report, bench_header
#
# Systems: "kernel" (loop mount), "fuse2fs" (e2fsprogs' FUSE driver), "ext4box"
# (sandboxed worker, the default), "nosandbox" (the same ext4box binary with
# --no-sandbox: the worker runs unconfined; comparing it with "ext4box" gives
# the cost of the sandbox), "nojournal" (ext4box on an image made without a
# journal, -O ^has_journal: comparing it with "ext4box" gives the cost of
# journaling; write.sh only).

# Decimal point in $EPOCHREALTIME and printf must be '.', sorting must be bytewise.
export LC_ALL=C

# ---------------------------------------------------------------- settings

BENCH_DIR=${BENCH_DIR:-/var/tmp/ext4box-bench}
EXT4BOX=${EXT4BOX:-/work/main/target/release/ext4box}
ROUNDS=${ROUNDS:-5}
UNMOUNT_TIMEOUT=${UNMOUNT_TIMEOUT:-600}   # seconds `ext4box unmount` may take
SYSTEMS=${SYSTEMS:-kernel fuse2fs ext4box}
ORDER=${ORDER:-fixed}     # fixed: SYSTEMS order every round; rotate: round r starts with the r-th system
ALL_SYSTEMS=(kernel fuse2fs ext4box uring nosandbox nojournal)   # also the order of the table's columns
SANDBOX_TARGET_PCT=3     # the sandbox should cost less than this (ext4box vs nosandbox)
JOURNAL_TARGET_PCT=20    # journaling should cost at most this (ext4box vs nojournal)

# ---------------------------------------------------------------- logging

# log writes to the script's original stderr (LOG_FD, saved by bench_init),
# so messages from the EXIT trap are seen even if it fires while stderr is
# redirected (e.g. to a phase's error file).
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&"${LOG_FD:-2}" || true; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- setup

# bench_check_env: validate settings and tools for the selected SYSTEMS.
bench_check_env() {
    [[ $EUID -eq 0 ]] || die "must run as root (loop mounts, drop_caches)"
    [[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer (got '$ROUNDS')"
    [[ $ORDER == fixed || $ORDER == rotate ]] || die "ORDER must be fixed or rotate (got '$ORDER')"
    local s
    for s in $SYSTEMS; do
        case $s in
            kernel)  ;;
            fuse2fs) command -v fuse2fs >/dev/null ||
                         die "fuse2fs not installed (apt-get install -y fuse2fs)" ;;
            uring)   [[ $(cat /sys/module/fuse/parameters/enable_uring 2>/dev/null) == Y ]] ||
                         die "uring (ext4box on FUSE over io_uring) needs: echo 1 > /sys/module/fuse/parameters/enable_uring"
                     [[ -x $EXT4BOX ]] || die "ext4box binary not found at $EXT4BOX" ;;
            ext4box|uring|nosandbox|nojournal)
                     [[ -x $EXT4BOX ]] ||
                         die "ext4box binary not found at $EXT4BOX (build it, or set EXT4BOX, or drop $s from SYSTEMS)" ;;
            *) die "unknown system '$s' in SYSTEMS (known: ${ALL_SYSTEMS[*]})" ;;
        esac
    done
    [[ $SYSTEMS =~ fuse2fs|ext4box|uring|nosandbox|nojournal ]] && { [[ -c /dev/fuse ]] || die "/dev/fuse missing"; }
    command -v mkfs.ext4 >/dev/null || die "mkfs.ext4 missing (apt-get install -y e2fsprogs)"
    return 0
}

# bench_init: create BENCH_DIR, validate, install the cleanup trap.
bench_init() {
    exec {LOG_FD}>&2
    bench_check_env
    mkdir -p "$BENCH_DIR"
    : >"$BENCH_DIR/fuse2fs.log"     # server logs, one run's worth
    : >"$BENCH_DIR/ext4box.log"
    : >"$BENCH_DIR/nosandbox.log"   # (its WARNING about running unconfined is expected)
    : >"$BENCH_DIR/nojournal.log"
    LOAD_AT_START=$(cut -d' ' -f1 /proc/loadavg)
    clear_stale_mounts
    trap unmount_all EXIT
    trap 'exit 129' HUP
    trap 'exit 130' INT
    trap 'exit 141' PIPE
    trap 'exit 143' TERM
}

# ---------------------------------------------------------------- systems

# has_system NAME: true if NAME is one of the words in SYSTEMS.
has_system() { [[ " $SYSTEMS " == *" $1 "* ]]; }

# uses_ext4box_binary: true if a selected system runs $EXT4BOX (ext4box or nosandbox).
uses_ext4box_binary() { has_system ext4box || has_system nosandbox || has_system nojournal; }

# selected_systems: the selected systems in table order (ALL_SYSTEMS order), one per line.
selected_systems() {
    local s
    for s in "${ALL_SYSTEMS[@]}"; do
        ! has_system "$s" || echo "$s"
    done
}

# round_systems ROUND: the systems in the order they run in round ROUND (1-based).
# ORDER=fixed: as in SYSTEMS. ORDER=rotate: SYSTEMS rotated left by ROUND-1,
# so that over the rounds every system runs in every position; this cancels
# position effects (e.g. the host's cache warmed by the system that ran just
# before), which matter when the difference looked for is a few percent.
round_systems() {
    local -a s
    read -ra s <<<"$SYSTEMS"
    local n=${#s[@]} i off=0
    [[ $ORDER != rotate ]] || off=$((($1 - 1) % n))
    for ((i = 0; i < n; i++)); do echo "${s[(i + off) % n]}"; done
}

# ---------------------------------------------------------------- caches and clock

# drop_caches: flush dirty data, then drop page cache, dentries and inodes.
drop_caches() {
    sync
    echo 3 > /proc/sys/vm/drop_caches
}

# time_cmd VAR CMD...: run CMD (in this shell), store its wall time in
# seconds in VAR, measured with bash 5's microsecond $EPOCHREALTIME.
# Returns CMD's exit status (so callers can `if time_cmd t ...; then`).
time_cmd() {
    local -n _out=$1; shift
    local t0 t1 rc=0
    t0=${EPOCHREALTIME/./}
    "$@" || rc=$?
    t1=${EPOCHREALTIME/./}
    _out=$(awk -v d=$((t1 - t0)) 'BEGIN { printf "%.6f", d / 1e6 }')
    return "$rc"
}

# ---------------------------------------------------------------- images

# make_ext4_image IMG SIZE POPULATE_FN
# Build IMG (sparse, SIZE as for truncate, 4 KiB blocks, otherwise mkfs.ext4
# defaults) unless it already exists. POPULATE_FN is called with the mount
# point of a read-write kernel loop mount of the new image. The image is
# built under a temporary name and renamed at the end, so an interrupted
# build never leaves a half-filled image behind as the cache.
make_ext4_image() {
    local img=$1 size=$2 populate=$3
    if [[ -f $img ]]; then
        log "using cached image $img"
        return 0
    fi
    local tmp=$img.tmp mnt=$BENCH_DIR/mnt/build
    log "building image $img ($size)"
    rm -f "$tmp"
    truncate -s "$size" "$tmp"
    mkfs.ext4 -q -F -b 4096 "$tmp"
    mkdir -p "$mnt"
    fs_mount kernel "$tmp" "$mnt" rw
    "$populate" "$mnt"
    fs_unmount "$mnt"
    local fsck
    fsck=$(e2fsck -fn "$tmp" 2>&1) || { echo "$fsck" >&2; die "e2fsck reports problems in freshly built $tmp"; }
    mv "$tmp" "$img"
    log "image ready: $img ($(du -h "$img" | cut -f1) allocated)"
}

# ---------------------------------------------------------------- mounts

declare -A MOUNT_SYSTEM=()   # mountpoint -> system that mounted it
declare -A MOUNT_PID=()      # mountpoint -> server pid (fuse2fs, which we start in foreground mode)

# pid_alive PID: true while PID runs (a zombie child, which `kill -0` would
# still report, counts as exited).
pid_alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }          # skip "pid (comm) "; the state letter follows
    [[ -n $stat && ${stat:0:1} != Z ]]
}

# wait_mounted MNT [PID]: wait up to 10 s for MNT to become a mount point;
# fail early if PID (the server) dies first.
wait_mounted() {
    local mnt=$1 pid=${2:-} i
    for ((i = 0; i < 1000; i++)); do
        mountpoint -q "$mnt" && return 0
        [[ -n $pid ]] && ! pid_alive "$pid" && return 1
        sleep 0.01
    done
    return 1
}

# wait_pid_exit PID: wait (up to 10 s) for a server process to exit.
wait_pid_exit() {
    local pid=$1 i
    for ((i = 0; i < 1000; i++)); do
        pid_alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.01
    done
    return 1
}

# fs_mount SYSTEM IMG MNT MODE   (MODE: ro or rw)
# Mount IMG on MNT with SYSTEM; returns once the mount is live.
fs_mount() {
    local sys=$1 img=$2 mnt=$3 mode=$4
    mkdir -p "$mnt"
    mountpoint -q "$mnt" && die "$mnt is already a mount point"
    case $sys in
        kernel)
            mount -t ext4 -o "loop,$mode" "$img" "$mnt"
            ;;
        fuse2fs)
            # -f keeps fuse2fs in the foreground so we own its pid and can
            # wait for it to exit after umount. Its default FUSE options are kept.
            fuse2fs "$img" "$mnt" -f -o "$mode" \
                </dev/null >>"$BENCH_DIR/fuse2fs.log" 2>&1 &
            local pid=$!
            wait_mounted "$mnt" "$pid" || {
                kill "$pid" 2>/dev/null || true
                die "fuse2fs failed to mount $img (see $BENCH_DIR/fuse2fs.log)"
            }
            MOUNT_PID[$mnt]=$pid
            ;;
        ext4box|uring|nosandbox|nojournal)
            # The CLI returns once the mount is live; the server daemonizes.
            # nosandbox: the same worker without confinement (prints a WARNING, expected).
            # ext4box is the classic /dev/fuse transport, uring FUSE over io_uring (no fallback).
            local extra=(); [[ $sys == nosandbox ]] && extra=(--no-sandbox)
            local transport=classic; [[ $sys == uring ]] && transport=io_uring
            "$EXT4BOX" mount "$img" "$mnt" -o "$mode,transport=$transport" "${extra[@]}" >>"$BENCH_DIR/$sys.log" 2>&1 ||
                die "$sys mount failed (see $BENCH_DIR/$sys.log)"
            mountpoint -q "$mnt" || die "$sys mount returned but $mnt is not mounted"
            ;;
        *) die "fs_mount: unknown system '$sys'" ;;
    esac
    MOUNT_SYSTEM[$mnt]=$sys
}

# fs_unmount MNT: unmount with the right tool and wait until the server
# (if any) has exited. Falls back to a lazy unmount if the normal one fails
# (or, for ext4box, takes more than UNMOUNT_TIMEOUT seconds); then it sets
# UNMOUNT_PROBLEM to a description, which callers may check (and clear).
UNMOUNT_PROBLEM=
fs_unmount() {
    local mnt=$1 sys=${MOUNT_SYSTEM[$1]:-}
    [[ -n $sys ]] || return 0
    case $sys in
        kernel)
            # the loop device auto-detaches on umount
            ! mountpoint -q "$mnt" || umount "$mnt" || umount -l "$mnt" ;;
        fuse2fs)
            # (the server may already be gone, e.g. after Ctrl-C reached it too)
            ! mountpoint -q "$mnt" || umount "$mnt" || umount -l "$mnt"
            local pid=${MOUNT_PID[$mnt]:-}
            if [[ -n $pid ]] && ! wait_pid_exit "$pid"; then
                UNMOUNT_PROBLEM="fuse2fs (pid $pid) still running 10 s after umount"
                log "warning: $UNMOUNT_PROBLEM; killing it"
                kill "$pid" 2>/dev/null || true
                wait_pid_exit "$pid" || true
            fi
            unset 'MOUNT_PID[$mnt]'
            ;;
        ext4box|uring|nosandbox|nojournal)
            # (bounded: an unmount that never returns is a bug to report, not a reason to hang)
            if ! timeout "$UNMOUNT_TIMEOUT" "$EXT4BOX" unmount "$mnt" >>"$BENCH_DIR/$sys.log" 2>&1; then
                UNMOUNT_PROBLEM="'ext4box unmount $mnt' ($sys) failed or took more than ${UNMOUNT_TIMEOUT}s (see $BENCH_DIR/$sys.log)"
                log "warning: $UNMOUNT_PROBLEM; lazy-unmounting"
                ! mountpoint -q "$mnt" || umount -l "$mnt"
            fi
            ;;
    esac
    unset 'MOUNT_SYSTEM[$mnt]'
}

# clear_stale_mounts: unmount leftovers under $BENCH_DIR/mnt from a run that
# was killed too hard to clean up (kill -9). Their FUSE servers, if any,
# exit by themselves once unmounted.
clear_stale_mounts() {
    local mnt
    for mnt in "$BENCH_DIR"/mnt/*/; do
        mnt=${mnt%/}
        if mountpoint -q "$mnt"; then
            log "unmounting stale mount $mnt"
            umount "$mnt" || umount -l "$mnt"
        fi
    done
}

# unmount_all: EXIT trap; unmount everything this script mounted.
unmount_all() {
    local rc=$? mnt
    trap '' PIPE                  # our stderr may be a closed pipe: keep going
    exec 2>&"${LOG_FD:-2}"
    for mnt in "${!MOUNT_SYSTEM[@]}"; do
        log "cleanup: unmounting $mnt (${MOUNT_SYSTEM[$mnt]})"
        fs_unmount "$mnt" || log "warning: could not unmount $mnt"
    done
    clear_stale_mounts            # anything half-mounted when a mount failed
    rm -f "$BENCH_DIR"/*.img.tmp
    return "$rc"
}

# ---------------------------------------------------------------- results

# Samples are kept as space-separated lists in RESULTS["system/phase"];
# failed runs are counted in FAILS["system/phase"].
declare -A RESULTS=() FAILS=()

# record SYSTEM PHASE SECONDS|FAIL — also appended to $RAW_FILE if set.
record() {
    local key=$1/$2
    if [[ $3 == FAIL ]]; then
        FAILS[$key]=$((${FAILS[$key]:-0} + 1))
    else
        RESULTS[$key]="${RESULTS[$key]:-} $3"
    fi
    [[ -z ${RAW_FILE:-} ]] || printf '%s\t%s\t%s\t%s\n' "${ROUND:-0}" "$1" "$2" "$3" >>"$RAW_FILE"
}

# median NUMBERS...: median (mean of the two middle values for even counts);
# prints nothing for an empty list.
median() {
    (($#)) || return 0
    printf '%s\n' "$@" | sort -g | awk '
        { v[NR] = $1 }
        END { printf "%.6f\n", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# median_of SYSTEM PHASE: median of recorded samples, or "" if none/any failed.
median_of() {
    local key=$1/$2
    [[ -z ${FAILS[$key]:-} ]] || return 0
    # shellcheck disable=SC2086  # word-splitting the sample list is intended
    median ${RESULTS[$key]:-}
}

# ratio A B: A/B to 2 decimals, "–" if either is missing or B is zero.
ratio() {
    [[ -n $1 && -n $2 ]] || { echo "–"; return; }
    awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "–"; else printf "%.2f\n", a / b }'
}

# cmp_ge A B: true if A >= B (floating point).
cmp_ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }

# fmt_cell SYSTEM PHASE [BYTES]: "1.234" or, with BYTES, "1.234 (870 MB/s)";
# "FAIL" if a run failed, "–" if the system was not run.
fmt_cell() {
    local sys=$1 phase=$2 bytes=${3:-} m
    if [[ -n ${FAILS[$sys/$phase]:-} ]]; then echo "FAIL"; return; fi
    m=$(median_of "$sys" "$phase")
    [[ -n $m ]] || { echo "–"; return; }
    if [[ -n $bytes ]]; then
        awk -v t="$m" -v b="$bytes" 'BEGIN { printf "%.3f (%.0f MB/s)\n", t, b / 1e6 / t }'
    else
        printf '%.3f\n' "$m"
    fi
}

# sandbox_cost SANDBOXED UNCONFINED: SANDBOXED/UNCONFINED - 1 as a signed
# percentage to 1 decimal ("+2.5%"), "–" if either is missing or zero.
sandbox_cost() {
    [[ -n $1 && -n $2 ]] || { echo "–"; return; }
    awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "–"; else printf "%+.1f%%\n", 100 * (a / b - 1) }'
}

# render_table PHASE[:BYTES]...
# Markdown table of medians over all rounds, one row per phase, one column
# per selected system (in ALL_SYSTEMS order). A ":BYTES" suffix on a phase
# adds throughput (MB = 10^6 bytes) to its cells. Ratio columns appear when
# both of their systems were run:
#   fuse2fs/ext4box > 1 means ext4box is faster than fuse2fs;
#   ext4box/kernel  > 1 means ext4box is slower than the kernel;
#   sandbox cost = ext4box/nosandbox - 1 (positive: the sandbox makes it slower).
render_table() {
    local spec phase bytes s row sep
    local -a systems
    mapfile -t systems < <(selected_systems)
    row="| phase |"; sep="|---|"
    for s in "${systems[@]}"; do row+=" $s (s) |"; sep+="---:|"; done
    if has_system fuse2fs && has_system ext4box; then row+=" fuse2fs/ext4box |"; sep+="---:|"; fi
    if has_system kernel && has_system ext4box; then row+=" ext4box/kernel |"; sep+="---:|"; fi
    if has_system kernel && has_system uring; then row+=" uring/kernel |"; sep+="---:|"; fi
    if has_system ext4box && has_system uring; then row+=" classic/uring |"; sep+="---:|"; fi
    if has_system ext4box && has_system nosandbox; then row+=" sandbox cost |"; sep+="---:|"; fi
    if has_system ext4box && has_system nojournal; then row+=" journal cost |"; sep+="---:|"; fi
    echo "$row"
    echo "$sep"
    for spec in "$@"; do
        phase=${spec%%:*}
        bytes=; [[ $spec == *:* ]] && bytes=${spec#*:}
        local k f e n
        k=$(median_of kernel "$phase")
        f=$(median_of fuse2fs "$phase")
        e=$(median_of ext4box "$phase")
        n=$(median_of nosandbox "$phase")
        local j; j=$(median_of nojournal "$phase")
        local u; u=$(median_of uring "$phase")
        row="| $phase |"
        for s in "${systems[@]}"; do row+=" $(fmt_cell "$s" "$phase" "$bytes") |"; done
        if has_system fuse2fs && has_system ext4box; then row+=" $(ratio "$f" "$e") |"; fi
        if has_system kernel && has_system ext4box; then row+=" $(ratio "$e" "$k") |"; fi
        if has_system kernel && has_system uring; then row+=" $(ratio "$u" "$k") |"; fi
        if has_system ext4box && has_system uring; then row+=" $(ratio "$e" "$u") |"; fi
        if has_system ext4box && has_system nosandbox; then row+=" $(sandbox_cost "$e" "$n") |"; fi
        if has_system ext4box && has_system nojournal; then row+=" $(sandbox_cost "$e" "$j") |"; fi
        echo "$row"
    done
}

# table_legend: one line explaining the ratio columns render_table shows.
table_legend() {
    local parts=()
    if has_system fuse2fs && has_system ext4box; then parts+=("fuse2fs/ext4box > 1: ext4box faster than fuse2fs"); fi
    if has_system kernel && has_system ext4box; then parts+=("ext4box/kernel > 1: ext4box slower than kernel"); fi
    if has_system kernel && has_system uring; then parts+=("uring/kernel > 1: ext4box on io_uring slower than kernel"); fi
    if has_system ext4box && has_system uring; then parts+=("classic/uring > 1: io_uring faster than classic /dev/fuse"); fi
    if has_system ext4box && has_system nosandbox; then parts+=("sandbox cost = ext4box/nosandbox - 1, from the medians (positive: the sandbox is slower)"); fi
    if has_system ext4box && has_system nojournal; then parts+=("journal cost = ext4box/nojournal - 1 (ext4box on an image without a journal), from the medians"); fi
    local p line=
    for p in "${parts[@]}"; do line+="${line:+; }$p"; done
    echo "${line:+$line. }MB = 10^6 bytes."
}

# sandbox_report PHASE[:BYTES]...: the sandbox's cost per phase against the
# target (< SANDBOX_TARGET_PCT %), from the medians, and the spread of the
# per-round costs (ext4box and nosandbox run back to back within a round, so
# the per-round pairs show how much of the difference is noise).
sandbox_report() {
    has_system ext4box && has_system nosandbox || return 0
    local spec phase e n v spread
    echo
    echo "Sandbox cost (ext4box vs nosandbox; target < ${SANDBOX_TARGET_PCT}% per phase):"
    echo
    for spec in "$@"; do
        phase=${spec%%:*}
        e=$(median_of ext4box "$phase"); n=$(median_of nosandbox "$phase")
        if [[ -z $e || -z $n ]]; then echo "- $phase: – (a run failed)"; continue; fi
        awk -v a="$e" -v b="$n" -v t="$SANDBOX_TARGET_PCT" 'BEGIN { exit !(b > 0 && 100 * (a / b - 1) < t) }' &&
            v=PASS || v=FAIL
        spread=$(awk -v es="${RESULTS[ext4box/$phase]}" -v ns="${RESULTS[nosandbox/$phase]}" 'BEGIN {
            ne = split(es, E, " "); nn = split(ns, N, " ")
            if (ne != nn || ne < 2) exit
            for (i = 1; i <= ne; i++) {
                c = (N[i] > 0) ? 100 * (E[i] / N[i] - 1) : 0
                if (i == 1 || c < lo) lo = c
                if (i == 1 || c > hi) hi = c
                s = s sprintf("%s%+.1f%%", (i > 1 ? ", " : ""), c)
            }
            printf "; per round: %s (range %+.1f%% .. %+.1f%%)", s, lo, hi
        }')
        echo "- $phase: $(sandbox_cost "$e" "$n"): $v$spread"
    done
}

# bench_header TITLE [METHOD]: a few lines describing the run, for the results
# file. METHOD says how phases start (default: read.sh's cold, fresh mounts).
# If EXT4BOX is a copy of the binary, EXT4BOX_SRC names the original.
bench_header() {
    local method=${2:-caches dropped and filesystem freshly mounted before every phase}
    echo "# $1"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "- host: $(uname -srm), $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM"
    echo "- systems: $SYSTEMS; rounds: $ROUNDS (medians shown); $method"
    [[ $ORDER != rotate ]] || echo "- order: rotated (round r starts with the r-th system of SYSTEMS)"
    [[ -z ${CLIENT_CPUS:-} ]] || echo "- timed commands pinned to CPU(s) $CLIENT_CPUS (taskset), on every system"
    echo "- 1-minute load average at the start: ${LOAD_AT_START:-?} ($(nproc) CPUs)"
    if has_system fuse2fs; then
        echo "- fuse2fs: $(dpkg-query -W -f '${Version}' fuse2fs 2>/dev/null || echo '?')"
    fi
    if uses_ext4box_binary; then
        local src=${EXT4BOX_SRC:-$EXT4BOX} rev dirty=
        rev=$(git -C "$(dirname "$src")" rev-parse --short HEAD 2>/dev/null || echo '?')
        [[ -z $(git -C "$(dirname "$src")" status --porcelain -uno 2>/dev/null) ]] ||
            dirty=", uncommitted changes in the work tree"
        echo "- ext4box: $src (git $rev$dirty; binary built $(date -u -r "$EXT4BOX" '+%Y-%m-%d %H:%M:%S UTC'), sha256 $(sha256sum "$EXT4BOX" | cut -c1-12))"
        ! has_system nosandbox || echo "- nosandbox: the same binary, mounted with --no-sandbox (worker not confined)"
        ! has_system nojournal || echo "- nojournal: the same binary on an image made with -O ^has_journal (no journal: writes go home directly)"
    fi
}
