#!/usr/bin/env bash
# bench/write.sh — write benchmark: kernel ext4 vs fuse2fs vs ext4box (vs nosandbox).
#
# For ROUNDS rounds, for each phase group, for each system in SYSTEMS (interleaved: round 1 =
# tree on kernel, fuse2fs, ext4box, then files on kernel, fuse2fs, ext4box, ...), makes a FRESH
# image (sparse 4 GiB file, mkfs.ext4 -b 4096), mounts it read-write, runs the group's phases
# back to back on that mount, unmounts, and checks the image with e2fsck -fn. Prints a markdown
# table of medians (also written to $BENCH_DIR/write-results.md).
#
# Phase groups (phases of a group share one fresh image and one mount, in this order):
#   tree   untar (tar -xf of /usr/include), rm-rf (rm -rf of that tree)
#   files  create (10,000 empty files in 20 dirs), stat (warm), rename, unlink, deepstat
#   seq    seqwrite (512 MiB in 1 MiB writes + fsync)
# The operations themselves are in write_ops.py, which times them (see there).
#
# Environment:
#   BENCH_DIR      work dir for images, tarball, mount points, logs, results
#                  (default /var/tmp/ext4box-bench)
#   EXT4BOX        ext4box binary (default /work/main/target/release/ext4box); copied at start,
#                  so a rebuild during the run does not mix two versions
#   ROUNDS         rounds (default 3)
#   ORDER          fixed (default: SYSTEMS order in every round) or rotate (round r starts with
#                  the r-th system, to cancel position effects)
#   SYSTEMS        subset of "kernel fuse2fs ext4box uring nosandbox nojournal" (default: the first three;
#                  ext4box = the classic /dev/fuse transport, uring = FUSE over io_uring, which needs
#                  fuse.enable_uring on: echo 1 > /sys/module/fuse/parameters/enable_uring;
#                  nosandbox = ext4box mounted with --no-sandbox, to measure the sandbox's cost;
#                  nojournal = ext4box on an image made with -O ^has_journal, the cost of journaling)
#   SYNC           what a phase's closing "sync" is: syncfs (default: syncfs(2) on the mount, as
#                  `sync -f MNT`) or full (syncfs, then fsync(2) of the image file)
#   PHASE_TIMEOUT  seconds before a phase counts as hung (default 600)
#   CLIENT_CPUS    if set (as "0"), every timed phase runs under `taskset -c CLIENT_CPUS`, for every
#                  system: the scheduler then cannot move the caller between CPUs (see README.md,
#                  "The transport")
#
# Usage (as root):  ROUNDS=1 SYSTEMS="kernel ext4box" bench/write.sh
#                   SYSTEMS="ext4box nosandbox" bench/write.sh   # cost of the sandbox
set -euo pipefail

ROUNDS=${ROUNDS:-3}
# shellcheck source=./lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OPS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/write_ops.py
IMG_SIZE=4G
TARBALL=$BENCH_DIR/usr-include.tar   # tar of /usr/include, made once
SEQ_BYTES=$((512 << 20))
SYNC=${SYNC:-syncfs}
CLIENT_CPUS=${CLIENT_CPUS:-}
PHASE_TIMEOUT=${PHASE_TIMEOUT:-600}
RESULTS_MD=$BENCH_DIR/write-results.md
RAW_FILE=$BENCH_DIR/write-raw.tsv   # every sample: round, system, phase, seconds|FAIL

GROUPS_ORDER=(tree files seq)
declare -A GROUP_PHASES=(
    [tree]="untar rm-rf"
    [files]="create stat rename unlink deepstat"
    [seq]="seqwrite"
)
PHASES=(untar create stat rename unlink deepstat rm-rf seqwrite)   # table order
METADATA_PHASES=(untar create stat rename unlink deepstat rm-rf)

PROBLEMS=()          # one line per failure, with where to look and how to reproduce
COMPILER_PHASES=0    # timed phases during which a compiler was running on this machine
TIMED_PHASES=0
LOADS=()             # 1-minute load average at the start of every group
declare -A MOUNT_DEV=()   # mountpoint -> "major:minor" (names the FUSE connection)

# ---------------------------------------------------------------- setup

# ensure_fusectl: the FUSE control filesystem, through which a hung connection can be aborted.
ensure_fusectl() {
    [[ $SYSTEMS =~ fuse2fs|ext4box|uring|nosandbox|nojournal ]] || return 0
    mountpoint -q /sys/fs/fuse/connections && return 0
    mount -t fusectl fusectl /sys/fs/fuse/connections 2>/dev/null ||
        log "warning: cannot mount fusectl on /sys/fs/fuse/connections; a hung FUSE phase may not be recoverable"
}

check_write_env() {
    [[ $SYNC == syncfs || $SYNC == full ]] || die "SYNC must be syncfs or full (got '$SYNC')"
    [[ $PHASE_TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "PHASE_TIMEOUT must be a positive integer"
    command -v python3 >/dev/null || die "python3 missing"
    command -v e2fsck >/dev/null || die "e2fsck missing (apt-get install -y e2fsprogs)"
    [[ -f $OPS ]] || die "$OPS missing"
}

# wait_for_ext4box: a rebuild may remove the binary for a while; wait up to 10 minutes.
wait_for_ext4box() {
    uses_ext4box_binary || return 0
    local i=0
    while [[ ! -x $EXT4BOX ]] && ((i++ < 120)); do
        ((i % 12 != 1)) || log "waiting for $EXT4BOX (being rebuilt?)"
        sleep 5
    done
}

# snapshot_ext4box: copy the binary under test, so that every round runs the same build
# (ext4box and nosandbox both run this one copy).
snapshot_ext4box() {
    uses_ext4box_binary || return 0
    EXT4BOX_SRC=$EXT4BOX
    cp -p "$EXT4BOX" "$BENCH_DIR/ext4box-under-test.tmp"
    mv "$BENCH_DIR/ext4box-under-test.tmp" "$BENCH_DIR/ext4box-under-test"
    EXT4BOX=$BENCH_DIR/ext4box-under-test
    log "testing a copy of $EXT4BOX_SRC (sha256 $(sha256sum "$EXT4BOX" | cut -c1-12))"
}

make_tarball() {
    [[ -f $TARBALL ]] && { log "using cached tarball $TARBALL"; return 0; }
    log "making $TARBALL from /usr/include"
    tar -C /usr -cf "$TARBALL.tmp" include
    mv "$TARBALL.tmp" "$TARBALL"
}

# ---------------------------------------------------------------- helpers

# mount_field MNT N: field N of MNT's line in /proc/self/mountinfo (read without touching MNT,
# which may hang if its server does).
mount_field() {
    local mnt
    mnt=$(realpath -s "$1")
    awk -v m="$mnt" -v n="$2" '$5 == m { v = $n } END { print v }' /proc/self/mountinfo
}

# server_pid SYSTEM MNT: pid of the FUSE server behind MNT, if known.
server_pid() {
    case $1 in
        fuse2fs) echo "${MOUNT_PID[$2]:-}" ;;
        ext4box|uring|nosandbox|nojournal) cat "/run/ext4box/${MOUNT_DEV[$2]:-none}" 2>/dev/null || true ;;
    esac
}

# descendants PID: PID's descendants, deepest last.
descendants() {
    local c
    for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do
        echo "$c"
        descendants "$c"
    done
}

compiler_running() {
    local f comm
    for f in /proc/[0-9]*/comm; do
        read -r comm 2>/dev/null <"$f" || continue
        case $comm in rustc|cargo|cc1|cc1plus|ld|ld.lld|ld.gold|collect2) return 0 ;; esac
    done
    return 1
}

# run_guarded OUT ERR CMD...: run CMD in the background (stdout > OUT, stderr > ERR) and wait
# at most PHASE_TIMEOUT seconds. Returns CMD's status, or 124 if it is still running (its pid
# is in GUARDED_PID; the caller deals with it).
run_guarded() {
    local out=$1 err=$2 spid finished='' rc=0
    shift 2
    "$@" >"$out" 2>"$err" &
    GUARDED_PID=$!
    sleep "$PHASE_TIMEOUT" &
    spid=$!
    wait -n -p finished "$GUARDED_PID" "$spid" || rc=$?
    if [[ $finished == "$GUARDED_PID" ]]; then
        kill "$spid" 2>/dev/null || true
        wait "$spid" 2>/dev/null || true
        return "$rc"
    fi
    return 124
}

# problem TEXT: remember a failure for the report (and log it now).
problem() {
    PROBLEMS+=("$1")
    log "PROBLEM: $1"
}

# repro SYSTEM GROUP PHASE: shell commands that redo GROUP up to PHASE on a fresh image.
repro() {
    local sys=$1 group=$2 upto=$3 p arg cmds mount unmount
    case $sys in
        kernel)  mount="mount -o loop /tmp/x.img /tmp/m"; unmount="umount /tmp/m" ;;
        fuse2fs) mount="(fuse2fs /tmp/x.img /tmp/m -f -o rw &) && sleep 1"; unmount="umount /tmp/m" ;;
        ext4box) mount="${EXT4BOX_SRC:-$EXT4BOX} mount /tmp/x.img /tmp/m"; unmount="${EXT4BOX_SRC:-$EXT4BOX} unmount /tmp/m" ;;
        nosandbox) mount="${EXT4BOX_SRC:-$EXT4BOX} mount /tmp/x.img /tmp/m --no-sandbox"; unmount="${EXT4BOX_SRC:-$EXT4BOX} unmount /tmp/m" ;;
        nojournal) mount="${EXT4BOX_SRC:-$EXT4BOX} mount /tmp/x.img /tmp/m"; unmount="${EXT4BOX_SRC:-$EXT4BOX} unmount /tmp/m" ;;
    esac
    local mkfs_extra=; [[ $sys != nojournal ]] || mkfs_extra=" -O ^has_journal"
    cmds="truncate -s $IMG_SIZE /tmp/x.img && mkfs.ext4 -q -F -b 4096$mkfs_extra /tmp/x.img && mkdir -p /tmp/m && $mount"
    for p in ${GROUP_PHASES[$group]}; do
        arg=$(phase_arg "$p")
        cmds+=" && ${SYNC_ENV:+SYNC_IMAGE=/tmp/x.img }python3 $OPS $p /tmp/m${arg:+ $arg}"
        [[ $p != "$upto" ]] || break
    done
    echo "$cmds; $unmount; e2fsck -fn /tmp/x.img"
}

phase_arg() {
    case $1 in
        untar) echo "$TARBALL" ;;
        seqwrite|seqverify) echo "$SEQ_BYTES" ;;
    esac
}

# ---------------------------------------------------------------- hangs

# handle_hang SYSTEM PHASE MNT: GUARDED_PID has run for PHASE_TIMEOUT seconds. Save what the
# stuck processes and the server are doing, then kill the stuck command (aborting the FUSE
# connection if a kill is not enough).
handle_hang() {
    local sys=$1 phase=$2 mnt=$3 file=$BENCH_DIR/hang-r$ROUND-$1-$2.txt p t spid dev
    local procs
    mapfile -t procs < <(echo "$GUARDED_PID"; descendants "$GUARDED_PID")
    spid=$(server_pid "$sys" "$mnt")
    dev=${MOUNT_DEV[$mnt]:-}
    {
        echo "$phase on $sys ($mnt) still running after ${PHASE_TIMEOUT}s, at $(date -u '+%F %T UTC')"
        echo
        echo "== stuck command and its children"
        for p in "${procs[@]}"; do
            ps -o pid=,stat=,wchan:32=,etime=,args= -p "$p" || true
            sed 's/^/    /' "/proc/$p/stack" 2>/dev/null || true
        done
        if [[ -n $spid ]]; then
            echo
            echo "== server pid $spid, per thread: tid state wchan, kernel stack"
            for t in /proc/"$spid"/task/*; do
                echo "$(basename "$t") $(cut -d' ' -f3 "$t/stat" 2>/dev/null) $(cat "$t/wchan" 2>/dev/null)"
                sed 's/^/    /' "$t/stack" 2>/dev/null || true
            done
        fi
        if [[ -n $dev && -d /sys/fs/fuse/connections/${dev#*:} ]]; then
            echo
            echo "== FUSE connection ${dev#*:}: $(cat "/sys/fs/fuse/connections/${dev#*:}/waiting") requests waiting"
        fi
    } >"$file" 2>&1
    # Stop the stuck command; a process waiting on a FUSE request the server never answers
    # ignores even SIGKILL, and then only aborting the connection frees it.
    for p in "${procs[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    if ! wait_pid_exit "$GUARDED_PID" && [[ -n $dev ]]; then
        log "aborting FUSE connection ${dev#*:} to free the stuck command"
        echo 1 2>/dev/null >"/sys/fs/fuse/connections/${dev#*:}/abort" || true
        wait_pid_exit "$GUARDED_PID" || log "warning: pid $GUARDED_PID still stuck"
    fi
    HANG_FILE=$file
}

# unmount_after_hang SYSTEM MNT: take down a mount whose server may be stuck.
unmount_after_hang() {
    local sys=$1 mnt=$2 spid dev=${MOUNT_DEV[$2]:-}
    if [[ $sys == kernel ]]; then
        fs_unmount "$mnt"
        return
    fi
    spid=$(server_pid "$sys" "$mnt")
    [[ -z $dev ]] || echo 1 2>/dev/null >"/sys/fs/fuse/connections/${dev#*:}/abort" || true
    umount -l "$mnt" 2>/dev/null || true
    if [[ -n $spid ]] && ! wait_pid_exit "$spid"; then
        log "server pid $spid still running after the connection was aborted; killing it"
        kill -KILL "$spid" 2>/dev/null || true
        wait_pid_exit "$spid" || true
    fi
    unset 'MOUNT_SYSTEM[$mnt]' 'MOUNT_PID[$mnt]'
}

# ---------------------------------------------------------------- phases

# run_phase SYSTEM GROUP PHASE MNT IMG: run one timed phase and its untimed check. Sets PHASE_T
# to the seconds taken. Returns 0 if it worked, 1 if it failed, 2 if it hung (and was killed).
run_phase() {
    local sys=$1 group=$2 phase=$3 mnt=$4 img=$5 out=$BENCH_DIR/phase.out err=$BENCH_DIR/phase.err
    local arg rc=0 compiler=
    arg=$(phase_arg "$phase")
    compiler_running && compiler=1
    TIMED_PHASES=$((TIMED_PHASES + 1))
    local pin=(); [[ -z $CLIENT_CPUS ]] || pin=(taskset -c "$CLIENT_CPUS")
    run_guarded "$out" "$err" env "SYNC_IMAGE=${SYNC_ENV:+$img}" \
        "${pin[@]}" python3 "$OPS" "$phase" "$mnt" ${arg:+"$arg"} || rc=$?
    if ((rc == 124)); then
        handle_hang "$sys" "$phase" "$mnt"
        problem "$sys: $phase hung (> ${PHASE_TIMEOUT}s; round $ROUND). State of the stuck processes: $HANG_FILE. Repro: $(repro "$sys" "$group" "$phase")"
        return 2
    fi
    compiler_running && compiler=1
    [[ -z $compiler ]] || COMPILER_PHASES=$((COMPILER_PHASES + 1))
    if ((rc != 0)) || ! PHASE_T=$(tail -n 1 "$out") || ! [[ $PHASE_T =~ ^[0-9]+\.[0-9]+$ ]]; then
        cp "$err" "$BENCH_DIR/fail-r$ROUND-$sys-$phase.err"
        problem "$sys: $phase failed (exit status $rc; round $ROUND): $(tail -n 3 "$err" | tr '\n' ' ')(full stderr: $BENCH_DIR/fail-r$ROUND-$sys-$phase.err). Repro: $(repro "$sys" "$group" "$phase")"
        return 1
    fi
    log "round $ROUND/$ROUNDS  $(printf '%-8s %-9s %9.3f s' "$sys" "$phase" "$PHASE_T")${compiler:+  (a compiler was running)}"

    # Untimed checks of what was written, read back through the filesystem after dropping
    # caches (so the data comes from the server or the disk, not the page cache).
    local check=() what=
    case $phase in
        untar)    check=(tar -df "$TARBALL" -C "$mnt"); what="tar --compare" ;;
        seqwrite) check=(python3 "$OPS" seqverify "$mnt" "$SEQ_BYTES"); what="read-back check" ;;
        *)        return 0 ;;
    esac
    drop_caches
    rc=0
    run_guarded "$out" "$err" "${check[@]}" || rc=$?
    if ((rc == 124)); then
        handle_hang "$sys" "$phase-check" "$mnt"
        problem "$sys: the $what after $phase hung (> ${PHASE_TIMEOUT}s; round $ROUND). State: $HANG_FILE. Repro: $(repro "$sys" "$group" "$phase"), then (before unmounting) ${check[*]}"
        return 2
    elif ((rc != 0)); then
        cat "$out" "$err" >"$BENCH_DIR/fail-r$ROUND-$sys-$phase-check.txt"
        problem "$sys: $phase ran, but the $what found differences (round $ROUND): $(cat "$out" "$err" | head -n 3 | tr '\n' ' ')(full output: $BENCH_DIR/fail-r$ROUND-$sys-$phase-check.txt). Repro: $(repro "$sys" "$group" "$phase"); echo 3 >/proc/sys/vm/drop_caches; ${check[*]//$mnt//tmp/m}"
        return 1
    fi
    return 0
}

# run_group SYSTEM GROUP: fresh image, mount, the group's phases, unmount, e2fsck; record.
run_group() {
    local sys=$1 group=$2 mnt=$BENCH_DIR/mnt/$1 img=$BENCH_DIR/write-$1.img
    local phases phase st failed='' hung='' fsck_log state=
    read -ra phases <<<"${GROUP_PHASES[$group]}"
    declare -A times=()

    LOADS+=("$(cut -d' ' -f1 /proc/loadavg)")
    rm -f "$img"
    truncate -s "$IMG_SIZE" "$img"
    local mkfs_extra=(); [[ $sys != nojournal ]] || mkfs_extra=(-O ^has_journal)
    mkfs.ext4 -q -F -b 4096 "${mkfs_extra[@]}" "$img"
    fs_mount "$sys" "$img" "$mnt" rw
    MOUNT_DEV[$mnt]=$(mount_field "$mnt" 3)
    if [[ $(mount_field "$mnt" 6) != rw* ]]; then
        problem "$sys: mounted read-only although rw was asked for (round $ROUND; mount options: $(mount_field "$mnt" 6); see $BENCH_DIR/$sys.log)"
        failed=1
    fi
    drop_caches
    [[ $group != tree ]] || cat "$TARBALL" >/dev/null   # the tarball is read from the page cache

    for phase in "${phases[@]}"; do
        if [[ -n $failed ]]; then
            log "round $ROUND/$ROUNDS  $sys $phase skipped (an earlier step of the group failed)"
            continue
        fi
        st=0
        run_phase "$sys" "$group" "$phase" "$mnt" "$img" || st=$?
        case $st in
            0) times[$phase]=$PHASE_T ;;
            2) hung=1; failed=1 ;;
            *) failed=1 ;;
        esac
    done

    if [[ -n $hung ]]; then
        unmount_after_hang "$sys" "$mnt"
    else
        fs_unmount "$mnt"
        if [[ -n $UNMOUNT_PROBLEM ]]; then
            problem "$sys: unmount after the $group group (round $ROUND): $UNMOUNT_PROBLEM"
            UNMOUNT_PROBLEM=
            failed=1
        fi
    fi

    fsck_log=$BENCH_DIR/fsck-r$ROUND-$sys-$group.log
    if ! e2fsck -fn "$img" >"$fsck_log" 2>&1; then
        mv "$img" "$BENCH_DIR/bad-r$ROUND-$sys-$group.img"
        local summary=
        for phase in "${phases[@]}"; do
            [[ -z ${times[$phase]:-} ]] || summary+=", $phase took ${times[$phase]} s"
        done
        [[ -z $hung ]] || summary+="; expected: the server was killed after a hang"
        problem "$sys: e2fsck -fn found problems after the $group group (round $ROUND$summary): $(grep -v -E -e '^(e2fsck [0-9]|Pass [0-9])' -e "^$img:" "$fsck_log" | head -n 4 | tr '\n' ' ')(full output: $fsck_log; image kept as $BENCH_DIR/bad-r$ROUND-$sys-$group.img). Repro: $(repro "$sys" "$group" "${phases[-1]}")"
        failed=1
    elif state=$(dumpe2fs -h "$img" 2>/dev/null | grep '^Filesystem state:' | tr -s ' ' || true)
         [[ -z $hung && $state != *' clean' ]]; then
        mv "$img" "$BENCH_DIR/bad-r$ROUND-$sys-$group.img"
        problem "$sys: after the $group group (round $ROUND) e2fsck found no errors, but the superblock does not say the filesystem was cleanly unmounted (dumpe2fs -h: '${state:-no state line}'; image kept as $BENCH_DIR/bad-r$ROUND-$sys-$group.img). Repro: $(repro "$sys" "$group" "${phases[-1]}"); dumpe2fs -h /tmp/x.img | grep state"
        failed=1
    else
        rm -f "$fsck_log" "$img"
    fi

    for phase in "${phases[@]}"; do
        if [[ -n $failed || -z ${times[$phase]:-} ]]; then
            record "$sys" "$phase" FAIL
        else
            record "$sys" "$phase" "${times[$phase]}"
        fi
    done
}

# ---------------------------------------------------------------- report

pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f%%", 100 * a / b }'; }

# targets_report: check ext4box against the write targets (see README).
targets_report() {
    has_system ext4box && { has_system kernel || has_system fuse2fs; } || return 0
    local phase k f e v
    echo
    echo "Targets (ext4box):"
    echo
    for phase in "${METADATA_PHASES[@]}" seqwrite; do
        k=$(median_of kernel "$phase"); f=$(median_of fuse2fs "$phase"); e=$(median_of ext4box "$phase")
        [[ -n $e ]] || { echo "- $phase: FAIL (ext4box failed)"; continue; }
        if [[ $phase == seqwrite ]]; then
            [[ -n $k ]] || { echo "- $phase: >= 80% of kernel throughput: – (no kernel result)"; continue; }
            cmp_ge "$(ratio "$k" "$e")" 0.8 && v=PASS || v=FAIL
            echo "- $phase: >= 80% of kernel throughput: $v ($(pct "$k" "$e"))"
            continue
        fi
        if [[ -n $f ]]; then
            cmp_ge "$(ratio "$f" "$e")" 5 && v=PASS || v=FAIL
            echo "- $phase: >= 5x faster than fuse2fs: $v ($(ratio "$f" "$e")x)"
        else
            echo "- $phase: >= 5x faster than fuse2fs: – (no fuse2fs result)"
        fi
        if [[ -n $k ]]; then
            cmp_ge 2 "$(ratio "$e" "$k")" && v=PASS || v=FAIL
            echo "- $phase: within 2x of kernel: $v ($(ratio "$e" "$k")x kernel time)"
        else
            echo "- $phase: within 2x of kernel: – (no kernel result)"
        fi
    done
}

problems_report() {
    echo
    if ((${#PROBLEMS[@]} == 0)); then
        echo "No problems: every phase ran, every check passed, every image was clean (e2fsck -fn)."
        return
    fi
    echo "Problems:"
    echo
    local p
    for p in "${PROBLEMS[@]}"; do echo "- $p"; done
}

# write_cleanup: EXIT trap; stop a phase still running (e.g. after Ctrl-C), then unmount all.
GUARDED_PID=
write_cleanup() {
    local rc=$? p
    if [[ -n $GUARDED_PID ]] && pid_alive "$GUARDED_PID"; then
        log "cleanup: stopping the running phase (pid $GUARDED_PID)"
        for p in "$GUARDED_PID" $(descendants "$GUARDED_PID"); do kill -KILL "$p" 2>/dev/null || true; done
        wait_pid_exit "$GUARDED_PID" || true
    fi
    set +e                        # (exiting anyway; unmount_all reads the status from $?)
    (exit "$rc")
    unmount_all
}

# ---------------------------------------------------------------- main

wait_for_ext4box
bench_init
trap write_cleanup EXIT
check_write_env
ensure_fusectl
snapshot_ext4box
make_tarball
SYNC_ENV=; [[ $SYNC == full ]] && SYNC_ENV=1
export LC_ALL

printf 'round\tsystem\tphase\tseconds\n' >"$RAW_FILE"
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
    for group in "${GROUPS_ORDER[@]}"; do
        for sys in $(round_systems "$ROUND"); do
            run_group "$sys" "$group"
        done
    done
done

case $SYNC in
    syncfs) sync_text="syncfs(2) on the mount (\`sync -f MNT\`)" ;;
    full)   sync_text="syncfs(2) on the mount, then fsync(2) of the image file" ;;
esac
{
    bench_header "ext4box write benchmark" \
        "a fresh image and mount per system, phase group and round; caches dropped once after mounting, then the group's phases run back to back (warm)"
    echo "- image: sparse $IMG_SIZE file, \`mkfs.ext4 -b 4096\` (defaults otherwise), new for every group; after every unmount e2fsck -fn must find no errors and the state must be clean"
    echo "- sync at the end of untar, create, rename, unlink, rm-rf: $sync_text; seqwrite ends with fsync(2) of the file"
    echo "- tarball: $TARBALL ($(tar -tf "$TARBALL" | wc -l) entries, $(du -m "$TARBALL" | cut -f1) MiB), read from the page cache"
    echo
    render_table "${PHASES[@]/%seqwrite/seqwrite:$SEQ_BYTES}"
    echo
    table_legend
    echo "FAIL: the phase failed, hung, or was skipped after an earlier failure in its group, or e2fsck found the image unclean afterwards."
    echo
    echo "Machine load: 1-minute load average at the start of each group: $(printf '%s\n' "${LOADS[@]}" | sort -g | awk '{ v[NR] = $1 } END { printf "min %s, median %s, max %s", v[1], v[int((NR + 1) / 2)], v[NR] }') ($(nproc) CPUs)."
    if ((COMPILER_PHASES)); then
        echo "A compiler (cargo/rustc/cc/ld) was running during $COMPILER_PHASES of $TIMED_PHASES timed phases; those timings may be inflated."
    fi
    problems_report
    targets_report
    sandbox_report "${PHASES[@]}"
    echo
    echo "Raw samples: $RAW_FILE"
} | tee "$RESULTS_MD"
log "results written to $RESULTS_MD"

((${#FAILS[@]} == 0)) || die "some runs failed (FAIL cells above)"
