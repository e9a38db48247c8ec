//! `fsync`: latency of a small durable write (create, write SIZE bytes, fsync) on the kernel's
//! ext4, ext4box (journaled) and ext4box on an image without a journal.
//!
//! For ROUNDS rounds, for each system: a fresh image (sparse 1 GiB, mkfs.ext4 -b 4096; -O
//! ^has_journal for "nojournal"), mounted read-write; N times: create MNT/fsync-NNNNN, write SIZE
//! bytes, fsync(2), close, with the write+fsync of each file timed by a monotonic clock in this
//! process; the files read back and compared (untimed); unmount; e2fsck -fn. Prints the median
//! over rounds of each round's median, p90 and p99 latency in milliseconds (also written to
//! BENCH_DIR/fsync-results.md).

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{self, Bench, die, log, median};
use crate::host;

pub fn run() -> bool {
    let b = Bench::init(3, "kernel ext4box nojournal");
    let n = common::env_count("N", 2000) as usize;
    let size = common::env_count("SIZE", 4096) as usize;
    // per system: each round's (median, p90, p99)
    let mut stats: BTreeMap<String, Vec<[f64; 3]>> = BTreeMap::new();
    for round in 1..=b.rounds {
        for sys in b.round_systems(round) {
            common::check_signal();
            let img = b.dir.join(format!("fsync-{sys}.img"));
            let mnt = b.mnt(&sys);
            let _ = fs::remove_file(&img);
            let args: &[&str] =
                if sys == "nojournal" { &["-b", "4096", "-O", "^has_journal"] } else { &["-b", "4096"] };
            host::mkfs(&img, 1 << 30, args);
            b.mount(&sys, &img, &mnt, "rw");
            let r = latencies(&mnt, n, size);
            if let Some(p) = common::unmount(&mnt) {
                die(&format!("{sys}: {p}"));
            }
            let [med, p90, p99, max] = r.unwrap_or_else(|e| die(&format!("{sys}: {e}")));
            let fsck = host::run_timeout(Command::new("e2fsck").arg("-fn").arg(&img), Duration::from_secs(600));
            if !fsck.is_ok_and(|o| o.status.success()) {
                die(&format!("{sys}: e2fsck -fn found errors after round {round} ({} kept)", img.display()));
            }
            log(&format!(
                "round {round}/{} {sys}: median {med:.3} ms, p90 {p90:.3} ms, p99 {p99:.3} ms, max {max:.3} ms",
                b.rounds
            ));
            stats.entry(sys.clone()).or_default().push([med, p90, p99]);
            let _ = fs::remove_file(&img);
        }
    }
    let mut out = b.header(
        &format!("fsync latency: create + write {size} bytes + fsync, {n} files per round"),
        "fresh image and mount every round",
    );
    out += "\n| system | median (ms) | p90 (ms) | p99 (ms) |\n|---|---:|---:|---:|\n";
    for sys in b.selected() {
        let v = &stats[sys];
        let m = |i: usize| median(&v.iter().map(|s| s[i]).collect::<Vec<_>>()).unwrap_or(f64::NAN);
        out += &format!("| {sys} | {:.3} | {:.3} | {:.3} |\n", m(0), m(1), m(2));
    }
    out += "\nMedians over rounds of each round's percentile.\n";
    common::tee(&out, &b.dir.join("fsync-results.md"));
    true
}

/// The bytes of file `i`.
fn content(i: usize, size: usize) -> Vec<u8> {
    (0..size).map(|j| ((i + j) % 251) as u8).collect()
}

/// N timed create+write+fsync; then every file read back. Returns median, p90, p99 and max in ms.
fn latencies(mnt: &Path, n: usize, size: usize) -> Result<[f64; 4], String> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let data = content(i, size);
        let path = mnt.join(format!("fsync-{i:05}"));
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&path)
            .map_err(|e| format!("create {}: {e}", path.display()))?;
        let t0 = Instant::now();
        f.write_all(&data).map_err(|e| format!("write {}: {e}", path.display()))?;
        f.sync_all().map_err(|e| format!("fsync {}: {e}", path.display()))?;
        samples.push(t0.elapsed().as_secs_f64());
    }
    for i in 0..n {
        let path = mnt.join(format!("fsync-{i:05}"));
        if fs::read(&path).map_err(|e| format!("read {}: {e}", path.display()))? != content(i, size) {
            return Err(format!("fsync-{i:05}: content differs"));
        }
    }
    samples.sort_by(f64::total_cmp);
    let pct = |p: f64| samples[((p * n as f64) as usize).min(n - 1)] * 1000.0;
    Ok([pct(0.5), pct(0.9), pct(0.99), samples[n - 1] * 1000.0])
}
