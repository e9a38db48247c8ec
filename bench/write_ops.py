#!/usr/bin/env python3
"""bench/write_ops.py: the timed operations of bench/write.sh, one per call.

    python3 bench/write_ops.py OP MNT [ARG]

OP is one of:

    untar TARBALL   tar -xf TARBALL -C MNT, then sync
    create          mkdir MNT/d00..d19, then create 500 empty files in each (f000..f499), then sync
    stat            os.stat() each of those 10,000 files (warm, no sync)
    rename          rename each fNNN to gNNN in its directory, then sync
    unlink          unlink each gNNN, then sync
    deepstat        (untimed: mkdir MNT/deep01/.../deep20, create "leaf" there, sync)
                    then os.stat() that leaf 20,000 times (no sync)
    rm-rf           rm -rf MNT/include, then sync
    seqwrite BYTES  write BYTES to MNT/seq.bin in 1 MiB chunks, then fsync
    seqverify BYTES (untimed check) read MNT/seq.bin back and compare with what seqwrite wrote

The timed part of each operation is measured here with a monotonic clock, so Python's start-up
(tens of ms) is not counted. On success the elapsed seconds are printed on stdout; checks that run
after the timed part (directory listings, file sizes) make the call fail if the result is wrong.

"sync" is syncfs(2) on MNT, as `sync -f MNT` does, then fsync(2) of MNT itself: syncfs on a FUSE
mount does not reach the server, the directory's fsync does (ext4box commits its journal then, as
the kernel's syncfs commits its own). If $SYNC_IMAGE names a file (the image behind MNT), it is also
fsync(2)ed afterwards, so that what a FUSE server has written to the image is on disk too.

Sizes come from the environment so write.sh can shrink them for a smoke test:
N_DIRS (20), FILES_PER_DIR (500), DEEP_LEVELS (20), DEEP_STATS (20000).
"""

import ctypes
import os
import random
import subprocess
import sys
import time

N_DIRS = int(os.environ.get("N_DIRS", "20"))
FILES_PER_DIR = int(os.environ.get("FILES_PER_DIR", "500"))
DEEP_LEVELS = int(os.environ.get("DEEP_LEVELS", "20"))
DEEP_STATS = int(os.environ.get("DEEP_STATS", "20000"))
CHUNK = 1 << 20

libc = ctypes.CDLL(None, use_errno=True)


def fail(msg):
    print(f"write_ops: {msg}", file=sys.stderr)
    sys.exit(1)


def sync(mnt):
    fd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if libc.syncfs(fd) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"syncfs({mnt}): {os.strerror(e)}")
        os.fsync(fd)
    finally:
        os.close(fd)
    image = os.environ.get("SYNC_IMAGE")
    if image:
        fd = os.open(image, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def dirs(mnt):
    return [f"{mnt}/d{i:02d}" for i in range(N_DIRS)]


def files(mnt, prefix):
    return [f"{d}/{prefix}{j:03d}" for d in dirs(mnt) for j in range(FILES_PER_DIR)]


def expect_listing(mnt, prefix):
    want = sorted(f"{prefix}{j:03d}" for j in range(FILES_PER_DIR)) if prefix else []
    for d in dirs(mnt):
        got = sorted(os.listdir(d))
        if got != want:
            extra = sorted(set(got) - set(want))[:5]
            missing = sorted(set(want) - set(got))[:5]
            fail(f"{d}: {len(got)} entries, expected {len(want)}; extra {extra}, missing {missing}")


def deep_leaf(mnt):
    return mnt + "".join(f"/deep{i:02d}" for i in range(1, DEEP_LEVELS + 1)) + "/leaf"


def pattern():
    """The 1 MiB chunk seqwrite repeats (chunk i carries i in its first 8 bytes)."""
    return bytearray(random.Random(4096).randbytes(CHUNK))


def run(cmd):
    r = subprocess.run(cmd)
    if r.returncode != 0:
        fail(f"{' '.join(cmd)} exited with status {r.returncode}")


def main():
    if len(sys.argv) < 3:
        fail(f"usage: {sys.argv[0]} OP MNT [ARG]")
    op, mnt, arg = sys.argv[1], sys.argv[2].rstrip("/"), (sys.argv[3] if len(sys.argv) > 3 else None)
    clock = time.perf_counter

    if op == "untar":
        t0 = clock()
        run(["tar", "-xf", arg, "-C", mnt])
        sync(mnt)
        t = clock() - t0

    elif op == "create":
        ds, paths = dirs(mnt), files(mnt, "f")
        flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC
        t0 = clock()
        for d in ds:
            os.mkdir(d)
        for p in paths:
            os.close(os.open(p, flags, 0o644))
        sync(mnt)
        t = clock() - t0
        expect_listing(mnt, "f")

    elif op == "stat":
        paths = files(mnt, "f")
        t0 = clock()
        for p in paths:
            os.stat(p)
        t = clock() - t0

    elif op == "rename":
        pairs = list(zip(files(mnt, "f"), files(mnt, "g")))
        t0 = clock()
        for a, b in pairs:
            os.rename(a, b)
        sync(mnt)
        t = clock() - t0
        expect_listing(mnt, "g")

    elif op == "unlink":
        paths = files(mnt, "g")
        t0 = clock()
        for p in paths:
            os.unlink(p)
        sync(mnt)
        t = clock() - t0
        expect_listing(mnt, None)

    elif op == "deepstat":
        leaf = deep_leaf(mnt)
        os.makedirs(os.path.dirname(leaf))
        os.close(os.open(leaf, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        sync(mnt)
        t0 = clock()
        for _ in range(DEEP_STATS):
            os.stat(leaf)
        t = clock() - t0

    elif op == "rm-rf":
        t0 = clock()
        run(["rm", "-rf", f"{mnt}/include"])
        sync(mnt)
        t = clock() - t0
        if os.path.lexists(f"{mnt}/include"):
            fail(f"{mnt}/include still exists after rm -rf")

    elif op == "seqwrite":
        total = int(arg)
        buf = pattern()
        view = memoryview(buf)
        t0 = clock()
        fd = os.open(f"{mnt}/seq.bin", os.O_CREAT | os.O_TRUNC | os.O_WRONLY | os.O_CLOEXEC, 0o644)
        for i in range(total // CHUNK):
            buf[:8] = i.to_bytes(8, "little")
            off = 0
            while off < CHUNK:
                off += os.write(fd, view[off:])
        os.fsync(fd)
        os.close(fd)
        t = clock() - t0

    elif op == "seqverify":
        total = int(arg)
        size = os.stat(f"{mnt}/seq.bin").st_size
        if size != total:
            fail(f"seq.bin is {size} bytes, expected {total}")
        buf = pattern()
        with open(f"{mnt}/seq.bin", "rb", buffering=0) as f:
            for i in range(total // CHUNK):
                buf[:8] = i.to_bytes(8, "little")
                got = f.read(CHUNK)
                while len(got) < CHUNK:
                    more = f.read(CHUNK - len(got))
                    if not more:
                        break
                    got += more
                if got != buf:
                    bad = next((k for k in range(len(got)) if got[k] != buf[k]), len(got))
                    fail(f"seq.bin differs at byte {i * CHUNK + bad} (chunk {i})")
        return

    else:
        fail(f"unknown op {op!r}")

    print(f"{t:.6f}")


if __name__ == "__main__":
    main()
