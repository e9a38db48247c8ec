#!/usr/bin/env bash
# bench/formats.sh — sequential read and write of one large file through ext4box over each VM disk
# format it reads (raw, qcow2, VMDK sparse and streamOptimized, VHDX, Android sparse), cold cache.
#
# As root, with qemu-img (qemu-utils) and img2simg (android-sdk-libsparse-utils):
#   bench/formats.sh            # ROUNDS=3 MB=400 by default
# Reads: `cat MNT/file` after a fresh mount and dropped caches. Writes: `dd ... conv=fsync` of MB
# megabytes into a fresh image, for raw and qcow2 (the formats ext4box writes).
set -euo pipefail
ROUNDS=${ROUNDS:-3}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
MB=${MB:-400}
SYSTEMS=ext4box
bench_init
command -v qemu-img >/dev/null || die "qemu-img is missing (apt-get install qemu-utils)"
command -v img2simg >/dev/null || die "img2simg is missing (apt-get install android-sdk-libsparse-utils)"

W=$BENCH_DIR/formats
MNT=$BENCH_DIR/mnt/formats
rm -rf "$W"; mkdir -p "$W/tree" "$MNT"
head -c "$((MB * 1000000))" /dev/urandom >"$W/src"
cp "$W/src" "$W/tree/file"
mkfs.ext4 -q -F -d "$W/tree" "$W/read.raw" 1G
rm -rf "$W/tree"
qemu-img convert -O qcow2 "$W/read.raw" "$W/read.qcow2"
qemu-img convert -O vmdk "$W/read.raw" "$W/read.vmdk"
qemu-img convert -O vmdk -o subformat=streamOptimized "$W/read.raw" "$W/read-stream.vmdk"
qemu-img convert -O vhdx "$W/read.raw" "$W/read.vhdx"
img2simg "$W/read.raw" "$W/read.simg"
mkfs.ext4 -q -F "$W/empty.raw" 1G

READS=(read.raw read.qcow2 read.vmdk read-stream.vmdk read.vhdx read.simg)
WRITES=(raw qcow2)
declare -A SAMPLES
for ((round = 1; round <= ROUNDS; round++)); do
    log "round $round of $ROUNDS"
    for img in "${READS[@]}"; do
        fs_mount ext4box "$W/$img" "$MNT" ro
        drop_caches
        time_cmd t cat "$MNT/file" >/dev/null
        fs_unmount "$MNT"
        SAMPLES[$img]+=" $t"
    done
    for fmt in "${WRITES[@]}"; do
        cp --sparse=always "$W/empty.raw" "$W/w.img"
        [[ $fmt == raw ]] || { qemu-img convert -O "$fmt" "$W/empty.raw" "$W/w.img"; }
        fs_mount ext4box "$W/w.img" "$MNT" rw
        time_cmd t dd if="$W/src" of="$MNT/w" bs=1M conv=fsync status=none
        fs_unmount "$MNT"
        [[ $fmt == raw ]] || qemu-img check -q "$W/w.img" || die "qemu-img check failed on the $fmt image"
        rm -f "$W/w.img"
        SAMPLES[write-$fmt]+=" $t"
    done
done

printf '\n| %s MB file, cold cache | seconds (median of %s) | MB/s |\n|---|---|---|\n' "$MB" "$ROUNDS"
for key in "${READS[@]}" "${WRITES[@]/#/write-}"; do
    # shellcheck disable=SC2086  # the sample list is split on purpose
    log "samples, $key:${SAMPLES[$key]}"
    m=$(median ${SAMPLES[$key]})
    case $key in write-*) what="write, ${key#write-}" ;; *) what="read, ${key#read[.-]}" ;; esac
    printf '| %s | %.2f | %.0f |\n' "$what" "$m" "$(awk -v m="$m" -v mb="$MB" 'BEGIN { print mb / m }')"
done
rm -rf "$W"
