#!/usr/bin/env python3
"""bench/fsync.py: latency of a small durable write.

    python3 bench/fsync.py MNT N SIZE

N times: create MNT/fsync-NNNNN, write SIZE bytes, fsync(2), close. The write+fsync of each file is
timed with a monotonic clock; prints "median p90 p99 max" in milliseconds on one line. The files
are read back afterwards (untimed) and compared, so a wrong result fails the call.
"""

import os
import sys
import time


def main():
    mnt, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    samples = []
    for i in range(n):
        data = bytes((i + j) % 251 for j in range(size))
        path = os.path.join(mnt, f"fsync-{i:05d}")
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        try:
            t0 = time.monotonic()
            os.write(fd, data)
            os.fsync(fd)
            samples.append(time.monotonic() - t0)
        finally:
            os.close(fd)
    for i in range(n):
        with open(os.path.join(mnt, f"fsync-{i:05d}"), "rb") as f:
            if f.read() != bytes((i + j) % 251 for j in range(size)):
                sys.exit(f"fsync-{i:05d}: content differs")
    samples.sort()

    def pct(p):
        return samples[min(len(samples) - 1, int(p * len(samples)))] * 1000

    print(f"{pct(0.5):.3f} {pct(0.9):.3f} {pct(0.99):.3f} {samples[-1] * 1000:.3f}")


if __name__ == "__main__":
    main()
