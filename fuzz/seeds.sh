#!/usr/bin/env bash
# fuzz/seeds.sh — builds the seed corpora in fuzz/corpus/<target>/ from real images:
#   - small images made by mke2fs -d in the read-side shapes (1 KiB blocks, ext2 block maps, ext3,
#     ext4 with metadata_csum, inline_data, htree directories (e2fsck -D), many-extent files, bigalloc, xattrs and
#     ACLs, fast and slow symlinks), at most 2 MiB each so a run executes quickly;
#   - images whose journal needs recovery and whose orphan list is not empty, made by the kernel
#     itself (loop mount, writes, an open unlinked file, EXT4_IOC_SHUTDOWN with the log flushed);
#   - the damaged images of ../shared/corpus/e2fsprogs up to 2 MiB;
#   - for the byte parsers: superblocks, journal superblocks, MBR/GPT sectors (sfdisk), and example
#     handoff headers, service requests and option strings.
# Needs root (loop mounts) for the kernel-made images; without root those are left out, with a message.
set -euo pipefail
cd "$(dirname "$0")"
OUT=corpus
WORK=$(mktemp -d)
trap 'umount -q "$WORK/mnt" 2>/dev/null || true; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/mnt"
IMAGE_TARGETS=(group_desc inode extent_tree block_map dir_block htree xattr inline_data symlink journal orphan image_read image_write)
for t in "${IMAGE_TARGETS[@]}" superblock journal_superblock partition_table qcow2_image vmdk_image vhdx_image sparse_image handoff service_request mount_options fuse_request; do
    mkdir -p "$OUT/$t"
done

# A source tree with every kind of object.
tree() {
    local d=$1
    rm -rf "$d" && mkdir -p "$d/dir/sub" "$d/big-dir"
    echo hello >"$d/dir/hello"
    printf 'x%.0s' $(seq 1 100) >"$d/small"
    head -c 20000 /dev/urandom >"$d/dir/sub/data"
    for i in $(seq 1 160); do echo "$i" >"$d/big-dir/entry-with-a-longer-name-$i"; done
    ln -s dir/hello "$d/fast-link"
    ln -s "$(printf 'long/%.0s' $(seq 1 30))target" "$d/slow-link"
    # Many extents: every other block written.
    for i in $(seq 0 2 40); do dd if=/dev/urandom of="$d/sparse" bs=1024 seek="$i" count=1 conv=notrunc status=none; done
    setfattr -n user.colour -v blue "$d/dir/hello" 2>/dev/null || true
    setfattr -n user.big -v "$(head -c 600 /dev/zero | tr '\0' v)" "$d/small" 2>/dev/null || true
    setfacl -m u:1234:r "$d/dir" 2>/dev/null || true
}

n=0
image() { # NAME SIZE MKE2FS-ARGS...
    local name=$1 size=$2; shift 2
    local img="$WORK/$name.img"
    rm -f "$img"
    mke2fs -q -F "$@" -d "$WORK/src" "$img" "$size"
    e2fsck -fyD "$img" >/dev/null 2>&1 || true   # builds htree indexes for the big directory
    for t in "${IMAGE_TARGETS[@]}"; do cp "$img" "$OUT/$t/$name.img"; done
    n=$((n + 1))
}

tree "$WORK/src"
image ext4-1k 1M -t ext4 -b 1024 -O ^has_journal -N 256
image ext4-1k-csum-seed 3M -t ext4 -b 1024 -J size=1 -O metadata_csum_seed,orphan_file -N 256
image ext4-nocsum 1M -t ext4 -b 1024 -O ^has_journal,^metadata_csum -N 256
image ext4-inline 1M -t ext4 -b 1024 -O ^has_journal,inline_data -N 256 -I 256
image ext4-128-inodes 1M -t ext4 -b 1024 -O ^has_journal -I 128 -N 256
image ext2-blockmap 1M -t ext2 -b 1024 -N 256
image ext3-journal 3M -t ext3 -b 1024 -J size=1 -N 256
image ext4-journal 3M -t ext4 -b 1024 -J size=1 -N 256
image ext4-2k 2M -t ext4 -b 2048 -O ^has_journal -N 256
image ext4-mmp 1M -t ext4 -b 1024 -O ^has_journal,mmp -N 256
image ext4-ea-inode 1M -t ext4 -b 1024 -O ^has_journal,ea_inode -N 256
image ext4-casefold 1M -t ext4 -b 1024 -O ^has_journal,casefold -N 256
# The big directory made case-insensitive, its htree rebuilt on folded hashes.
debugfs -w -R "set_inode_field /big-dir flags 0x40081000" "$WORK/ext4-casefold.img" >/dev/null 2>&1 || true
e2fsck -fyD "$WORK/ext4-casefold.img" >/dev/null 2>&1 || true
for t in "${IMAGE_TARGETS[@]}"; do cp "$WORK/ext4-casefold.img" "$OUT/$t/ext4-casefold.img"; done
image ext4-quota 1M -t ext4 -b 1024 -O ^has_journal,quota,project -I 256 -N 256 -E quotatype=usrquota:grpquota:prjquota
image ext4-bigalloc 2M -t ext4 -b 1024 -O ^has_journal,bigalloc -C 4096 -N 256

# Kernel-made: a journal that needs recovery and an orphan list, as a crash leaves them; an encrypted tree.
if [[ $EUID -eq 0 ]]; then
    for kind in ext4 ext3; do
        img="$WORK/dirty-$kind.img"
        rm -f "$img"
        mke2fs -q -F -t "$kind" -b 1024 -J size=1 -N 256 "$img" 3M
        mount -o loop "$img" "$WORK/mnt"
        mkdir "$WORK/mnt/d" && for i in $(seq 1 40); do echo "$i" >"$WORK/mnt/d/f$i"; done
        sync -f "$WORK/mnt"
        for i in $(seq 41 80); do echo "$i" >"$WORK/mnt/d/f$i"; done
        rm -f "$WORK"/mnt/d/f1?
        python3 - "$WORK/mnt" <<'PY'
import fcntl, os, struct, sys
mnt = sys.argv[1]
keep = os.open(os.path.join(mnt, "d/open-unlinked"), os.O_CREAT | os.O_WRONLY)
os.write(keep, b"x" * 5000)
os.unlink(os.path.join(mnt, "d/open-unlinked"))
os.fsync(keep)
fd = os.open(mnt, os.O_RDONLY)
fcntl.ioctl(fd, 0x8004587D, struct.pack("I", 1))  # EXT4_IOC_SHUTDOWN, log flushed
PY
        umount "$WORK/mnt"
        for t in "${IMAGE_TARGETS[@]}"; do cp "$img" "$OUT/$t/dirty-$kind.img"; done
        n=$((n + 1))
    done
    # Fast commits after the last full commit (fsyncs, then a shutdown that does not flush the log).
    img="$WORK/dirty-fast-commit.img"
    rm -f "$img"
    mke2fs -q -F -t ext4 -b 1024 -J size=1 -O fast_commit -N 256 "$img" 3M
    mount -o loop "$img" "$WORK/mnt"
    mkdir "$WORK/mnt/d" && for i in $(seq 1 20); do echo "$i" >"$WORK/mnt/d/f$i"; done
    sync -f "$WORK/mnt"
    python3 - "$WORK/mnt" <<'PY'
import fcntl, os, struct, sys
mnt = sys.argv[1]
for i, size in enumerate([10, 3000, 20000]):
    with open(os.path.join(mnt, f"new{i}"), "wb") as f:
        f.write(os.urandom(size)); os.fsync(f.fileno())
with open(os.path.join(mnt, "d/f1"), "ab") as f:
    f.write(b"appended"); os.fsync(f.fileno())
fd = os.open(os.path.join(mnt, "new2"), os.O_RDWR); os.ftruncate(fd, 5000); os.fsync(fd); os.close(fd)
os.link(os.path.join(mnt, "new0"), os.path.join(mnt, "d/link"))
fd = os.open(os.path.join(mnt, "new0"), os.O_RDONLY); os.fsync(fd); os.close(fd)
fd = os.open(mnt, os.O_RDONLY)
fcntl.ioctl(fd, 0x8004587D, struct.pack("I", 2))  # EXT4_IOC_SHUTDOWN, log not flushed
PY
    umount "$WORK/mnt"
    for t in "${IMAGE_TARGETS[@]}"; do cp "$img" "$OUT/$t/dirty-fast-commit.img"; done
    n=$((n + 1))
    # An encrypted tree (e4crypt's v1 policy): names, symlink targets and contents are ciphertext on disk,
    # read as no-key names.
    img="$WORK/encrypt.img"
    rm -f "$img"
    mke2fs -q -F -t ext4 -b 1024 -O ^has_journal,encrypt -N 256 "$img" 1M
    mount -o loop "$img" "$WORK/mnt"
    mkdir "$WORK/mnt/s"
    echo fuzzing-passphrase | e4crypt add_key -S 0x0123456789abcdef "$WORK/mnt/s" >/dev/null
    mkdir "$WORK/mnt/s/big" && for i in $(seq 1 100); do echo "$i" >"$WORK/mnt/s/big/entry-$i"; done
    echo hello >"$WORK/mnt/s/hello"
    echo long >"$WORK/mnt/s/$(printf 'n%.0s' $(seq 1 200))"
    ln -s hello "$WORK/mnt/s/fast-link"
    ln -s "$(printf 'long/%.0s' $(seq 1 30))target" "$WORK/mnt/s/slow-link"
    umount "$WORK/mnt"
    for t in "${IMAGE_TARGETS[@]}"; do cp "$img" "$OUT/$t/encrypt.img"; done
    n=$((n + 1))
else
    echo "seeds: not root: the kernel-made dirty and encrypted images are left out" >&2
fi

# The e2fsprogs corpus, up to 2 MiB an image.
CORPUS=../../shared/corpus/e2fsprogs
if [[ -d $CORPUS ]]; then
    for gz in "$CORPUS"/*.img.gz; do
        size=$(zcat "$gz" | wc -c)
        ((size <= 2097152)) || continue
        base=$(basename "$gz" .img.gz)
        zcat "$gz" >"$WORK/c.img"
        for t in "${IMAGE_TARGETS[@]}"; do cp "$WORK/c.img" "$OUT/$t/corpus-$base.img"; done
        n=$((n + 1))
    done
fi

# Byte parsers.
for img in "$OUT"/image_read/*.img; do
    base=$(basename "$img" .img)
    dd if="$img" of="$OUT/superblock/$base" bs=1024 skip=1 count=1 status=none 2>/dev/null || true
    jblk=$(debugfs -R "bmap <8> 0" "$img" 2>/dev/null | tr -dc 0-9 || true)
    bs=$(dumpe2fs -h "$img" 2>/dev/null | awk -F: '/^Block size/ { gsub(/ /, "", $2); print $2 }' || true)
    if [[ -n $jblk && $jblk != 0 && -n $bs ]]; then
        dd if="$img" of="$OUT/journal_superblock/$base" bs="$bs" skip="$jblk" count=1 status=none 2>/dev/null || true
    fi
done
if command -v sfdisk >/dev/null; then
    for label in dos gpt; do
        disk="$WORK/disk-$label"
        rm -f "$disk" && truncate -s 8M "$disk"
        printf 'label: %s\nstart=2048, size=4096\nstart=8192, size=4096\n' "$label" | sfdisk -q "$disk" >/dev/null
        [[ $label == gpt ]] || printf 'start=12288, size=2048, type=5\n' | sfdisk -q --append "$disk" >/dev/null 2>&1 || true
        dd if="$disk" of="$OUT/partition_table/$label" bs=512 count=40 status=none
    done
fi
# qcow2 images made by qemu-img from small raw disks: v3 and v2, with and without compressed clusters,
# a small cluster size (deeper tables), and lazy refcounts (the dirty bit).
if command -v qemu-img >/dev/null; then
    raw="$WORK/qraw"
    rm -f "$raw" && truncate -s 2M "$raw"
    printf 'seed data %.0s' $(seq 1 2000) | dd of="$raw" bs=1 seek=65536 conv=notrunc status=none
    for v in "v3:-o compat=1.1" "v2:-o compat=0.10" "compressed:-c" "small-clusters:-o cluster_size=512" "lazy:-o lazy_refcounts=on"; do
        # shellcheck disable=SC2086
        qemu-img convert -q -O qcow2 ${v#*:} "$raw" "$OUT/qcow2_image/${v%%:*}"
    done
    qemu-img create -q -f qcow2 "$OUT/qcow2_image/empty" 1M
    # VMDK: monolithicSparse and streamOptimized (footer, compressed grains); VHDX: dynamic and fixed,
    # with the smallest log and blocks qemu-img makes (8 MiB images still: regions are MiB-aligned).
    for v in "sparse:-o subformat=monolithicSparse" "stream:-o subformat=streamOptimized"; do
        # shellcheck disable=SC2086
        qemu-img convert -q -O vmdk ${v#*:} "$raw" "$OUT/vmdk_image/${v%%:*}"
    done
    for v in "dynamic:-o subformat=dynamic,block_size=1M,log_size=1M" "fixed:-o subformat=fixed,log_size=1M"; do
        # shellcheck disable=SC2086
        qemu-img convert -q -O vhdx ${v#*:} "$raw" "$OUT/vhdx_image/${v%%:*}"
    done
fi
# Android sparse images made by img2simg: raw, fill and don't-care chunks.
if command -v img2simg >/dev/null; then
    raw="$WORK/sraw"
    rm -f "$raw" && truncate -s 1M "$raw"
    printf 'seed data %.0s' $(seq 1 2000) | dd of="$raw" bs=1 seek=65536 conv=notrunc status=none
    printf '\xaa\xbb\xcc\xdd%.0s' $(seq 1 1024) | dd of="$raw" bs=1 seek=262144 conv=notrunc status=none
    img2simg "$raw" "$OUT/sparse_image/simg" >/dev/null
    img2simg "$raw" "$OUT/sparse_image/small-blocks" 1024 >/dev/null
fi
printf '%s\n' 'ext4box-handoff 2' '{"offset":1048576,"read_only":true,"norecovery":false,"atime":"never","commit":5,"uid":7,"gid":8,"tuning":{"umask":18,"fakeroot":true,"errors":"remount-ro","partition":1,"transport":"classic","format":"qcow2","quota_limits":[true,false,true]}}' >"$OUT/handoff/full"
printf '%s\n' 'ext4box-handoff 2' '{"offset":0,"read_only":false,"norecovery":true,"atime":"relative","commit":5}' >"$OUT/handoff/minimal"
printf '%s\n' 'ext4box-request 2' '{"op":"mount","options":"ro,uid=1000"}' >"$OUT/service_request/mount"
printf '%s\n' 'ext4box-request 2' '{"op":"unmount","path":"/home/u/mnt"}' >"$OUT/service_request/unmount"
printf 'ro,norecovery,offset=1048576,allow_other,fsname=disk,noexec,x-systemd.automount' >"$OUT/mount_options/generic"
printf 'fakeroot,umask=027,uid=1000,gid=1000,errors=remount-ro,cache_size=8M,lockfile=/run/l,partition=2,minixdf,subtype=img,commit=30' >"$OUT/mount_options/fuse2fs"
# FUSE requests as the kernel frames them: LOOKUP, MKDIR, WRITE, RENAME2, BATCH_FORGET, SETXATTR.
python3 - "$OUT/fuse_request" <<'PY'
import struct, sys
def req(op, body, node=1):
    return struct.pack('<IIQQIIIHH', 40 + len(body), op, 7, node, 0, 0, 1, 0, 0) + body
seeds = {
    'lookup': req(1, b'name\0'),
    'mkdir': req(9, struct.pack('<II', 0o755, 0o22) + b'dir\0'),
    'write': req(16, struct.pack('<QQIIQII', 0, 4096, 5, 0, 0, 0, 0) + b'hello', 12),
    'rename2': req(45, struct.pack('<QII', 12, 1, 0) + b'a\0b\0'),
    'batch_forget': req(42, struct.pack('<II', 2, 0) + struct.pack('<QQQQ', 12, 1, 13, 2)),
    'setxattr': req(21, struct.pack('<II', 3, 0) + b'user.x\0abc'),
}
for name, data in seeds.items():
    open(f'{sys.argv[1]}/{name}', 'wb').write(data)
PY
echo "seeds: $n images in each image target's corpus, under $(pwd)/$OUT"
