//! The timed operations of the write phases, one per call (`op OP MNT [ARG]`), in a child process
//! of the bench so that one that hangs on a mount can be killed:
//!
//! ```text
//! untar TARBALL   tar -xf TARBALL -C MNT, then sync
//! create          mkdir MNT/d00..d19, then create 500 empty files in each (f000..f499), then sync
//! stat            stat(2) each of those 10,000 files (warm, no sync)
//! rename          rename each fNNN to gNNN in its directory, then sync
//! unlink          unlink each gNNN, then sync
//! deepstat        (untimed: mkdir MNT/deep01/.../deep20, create "leaf" there, sync)
//!                 then stat(2) that leaf 20,000 times (no sync)
//! rm-rf           rm -rf MNT/include, then sync
//! seqwrite BYTES  write BYTES to MNT/seq.bin in 1 MiB chunks, then fsync
//! seqverify BYTES (untimed check) read MNT/seq.bin back and compare with what seqwrite wrote
//! ```
//!
//! The timed part is measured here with a monotonic clock, so the process's start is not counted.
//! On success the elapsed seconds are printed on stdout; checks after the timed part (directory
//! listings, file sizes) make the call fail if the result is wrong.
//!
//! "sync" is syncfs(2) on MNT, as `sync -f MNT` does, then fsync(2) of MNT itself: syncfs on a FUSE
//! mount does not reach the server, the directory's fsync does (ext4box commits its journal then,
//! as the kernel's syncfs commits its own). If $SYNC_IMAGE names a file (the image behind MNT), it
//! is fsync(2)ed afterwards too, so that what a FUSE server has written to the image is on disk.
//! $BENCH_CPUS (a CPU list, as taskset's) pins this process and the commands it runs.
//!
//! Sizes come from the environment, to shrink them for a quick try: N_DIRS (20), FILES_PER_DIR
//! (500), DEEP_LEVELS (20), DEEP_STATS (20000).

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// seqwrite's write size.
pub const CHUNK: usize = 1 << 20;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Sizes {
    dirs: usize,
    files: usize,
    deep_levels: usize,
    deep_stats: usize,
}

type R<T> = Result<T, String>;

fn ctx<T>(r: io::Result<T>, what: impl FnOnce() -> String) -> R<T> {
    r.map_err(|e| format!("{}: {e}", what()))
}

/// syncfs(2) and fsync(2) of the mount's root, then fsync(2) of $SYNC_IMAGE if set.
fn sync(mnt: &Path) -> R<()> {
    let d = ctx(File::open(mnt), || format!("open {}", mnt.display()))?;
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(format!("syncfs({}): {}", mnt.display(), io::Error::last_os_error()));
    }
    ctx(d.sync_all(), || format!("fsync({})", mnt.display()))?;
    if let Some(img) = std::env::var_os("SYNC_IMAGE").filter(|v| !v.is_empty()) {
        let f = ctx(File::open(&img), || format!("open {img:?}"))?;
        ctx(f.sync_all(), || format!("fsync({img:?})"))?;
    }
    Ok(())
}

/// stat(2), as a program calls it (not statx with the extra fields std asks for).
fn stat(p: &CString) -> R<()> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::stat(p.as_ptr(), &mut st) } != 0 {
        return Err(format!("stat {p:?}: {}", io::Error::last_os_error()));
    }
    Ok(())
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("NUL in path")
}

impl Sizes {
    fn dirs(&self, mnt: &Path) -> Vec<PathBuf> {
        (0..self.dirs).map(|i| mnt.join(format!("d{i:02}"))).collect()
    }

    fn files(&self, mnt: &Path, prefix: &str) -> Vec<PathBuf> {
        self.dirs(mnt).iter().flat_map(|d| (0..self.files).map(move |j| d.join(format!("{prefix}{j:03}")))).collect()
    }

    /// Every directory must hold exactly the files `prefix`000.. (none for `None`).
    fn expect_listing(&self, mnt: &Path, prefix: Option<&str>) -> R<()> {
        let want: Vec<String> = prefix.map_or(Vec::new(), |p| (0..self.files).map(|j| format!("{p}{j:03}")).collect());
        for d in self.dirs(mnt) {
            let mut got = Vec::new();
            for e in ctx(fs::read_dir(&d), || format!("readdir {}", d.display()))? {
                got.push(ctx(e, || format!("readdir {}", d.display()))?.file_name().to_string_lossy().into_owned());
            }
            got.sort();
            if got != want {
                let extra: Vec<&String> = got.iter().filter(|g| !want.contains(g)).take(5).collect();
                let missing: Vec<&String> = want.iter().filter(|w| !got.contains(w)).take(5).collect();
                return Err(format!(
                    "{}: {} entries, expected {}; extra {extra:?}, missing {missing:?}",
                    d.display(),
                    got.len(),
                    want.len()
                ));
            }
        }
        Ok(())
    }

    fn deep_leaf(&self, mnt: &Path) -> PathBuf {
        let mut p = mnt.to_path_buf();
        for i in 1..=self.deep_levels {
            p.push(format!("deep{i:02}"));
        }
        p.join("leaf")
    }
}

/// The 1 MiB chunk seqwrite repeats (chunk i carries i in its first 8 bytes, so a misplaced chunk
/// is caught): bytes of a fixed xorshift64 stream.
pub fn pattern() -> Vec<u8> {
    let mut x = 4096u64;
    let mut v = Vec::with_capacity(CHUNK);
    while v.len() < CHUNK {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v
}

fn run(cmd: &mut Command) -> R<()> {
    match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("{cmd:?} exited with {s}")),
        Err(e) => Err(format!("{cmd:?}: {e}")),
    }
}

/// Pins this process (and so what it starts) to a CPU list such as "0" or "0,2-3".
fn pin(list: &str) -> R<()> {
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for part in list.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (usize, usize) = match (a.trim().parse(), b.trim().parse()) {
            (Ok(a), Ok(b)) if a <= b && b < libc::CPU_SETSIZE as usize => (a, b),
            _ => return Err(format!("bad CPU list '{list}'")),
        };
        for c in a..=b {
            unsafe { libc::CPU_SET(c, &mut set) };
        }
    }
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(format!("sched_setaffinity({list}): {}", io::Error::last_os_error()));
    }
    Ok(())
}

/// `op OP MNT [ARG]`: runs OP, prints the seconds its timed part took; the exit status.
pub fn main(args: &[String]) -> i32 {
    match op(args) {
        Ok(Some(t)) => {
            println!("{t:.6}");
            0
        }
        Ok(None) => 0,
        Err(e) => {
            eprintln!("ops: {e}");
            1
        }
    }
}

fn op(args: &[String]) -> R<Option<f64>> {
    let [op, mnt, rest @ ..] = args else {
        return Err("usage: op OP MNT [ARG]".into());
    };
    let mnt = Path::new(mnt.trim_end_matches('/'));
    let arg = rest.first();
    let bytes = || -> R<usize> { arg.and_then(|a| a.parse().ok()).ok_or_else(|| format!("{op} needs BYTES")) };
    let z = Sizes {
        dirs: env_num("N_DIRS", 20),
        files: env_num("FILES_PER_DIR", 500),
        deep_levels: env_num("DEEP_LEVELS", 20),
        deep_stats: env_num("DEEP_STATS", 20000),
    };
    if let Some(cpus) = std::env::var("BENCH_CPUS").ok().filter(|c| !c.is_empty()) {
        pin(&cpus)?;
    }
    let t0;
    let t = match op.as_str() {
        "untar" => {
            let tarball = arg.ok_or("untar needs TARBALL")?;
            t0 = Instant::now();
            run(Command::new("tar").arg("-xf").arg(tarball).arg("-C").arg(mnt))?;
            sync(mnt)?;
            t0.elapsed()
        }
        "create" => {
            let (dirs, paths) = (z.dirs(mnt), z.files(mnt, "f"));
            let mut o = OpenOptions::new();
            o.write(true).create_new(true).mode(0o644);
            t0 = Instant::now();
            for d in &dirs {
                ctx(fs::create_dir(d), || format!("mkdir {}", d.display()))?;
            }
            for p in &paths {
                drop(ctx(o.open(p), || format!("create {}", p.display()))?);
            }
            sync(mnt)?;
            let t = t0.elapsed();
            z.expect_listing(mnt, Some("f"))?;
            t
        }
        "stat" => {
            let paths: Vec<CString> = z.files(mnt, "f").iter().map(|p| cstr(p)).collect();
            t0 = Instant::now();
            for p in &paths {
                stat(p)?;
            }
            t0.elapsed()
        }
        "rename" => {
            let pairs: Vec<(PathBuf, PathBuf)> = z.files(mnt, "f").into_iter().zip(z.files(mnt, "g")).collect();
            t0 = Instant::now();
            for (a, b) in &pairs {
                ctx(fs::rename(a, b), || format!("rename {}", a.display()))?;
            }
            sync(mnt)?;
            let t = t0.elapsed();
            z.expect_listing(mnt, Some("g"))?;
            t
        }
        "unlink" => {
            let paths = z.files(mnt, "g");
            t0 = Instant::now();
            for p in &paths {
                ctx(fs::remove_file(p), || format!("unlink {}", p.display()))?;
            }
            sync(mnt)?;
            let t = t0.elapsed();
            z.expect_listing(mnt, None)?;
            t
        }
        "deepstat" => {
            let leaf = z.deep_leaf(mnt);
            let parent = leaf.parent().unwrap();
            ctx(fs::create_dir_all(parent), || format!("mkdir -p {}", parent.display()))?;
            drop(ctx(OpenOptions::new().write(true).create_new(true).mode(0o644).open(&leaf), || {
                format!("create {}", leaf.display())
            })?);
            sync(mnt)?;
            let c = cstr(&leaf);
            t0 = Instant::now();
            for _ in 0..z.deep_stats {
                stat(&c)?;
            }
            t0.elapsed()
        }
        "rm-rf" => {
            let tree = mnt.join("include");
            t0 = Instant::now();
            run(Command::new("rm").arg("-rf").arg(&tree))?;
            sync(mnt)?;
            let t = t0.elapsed();
            if fs::symlink_metadata(&tree).is_ok() {
                return Err(format!("{} still exists after rm -rf", tree.display()));
            }
            t
        }
        "seqwrite" => {
            let total = bytes()?;
            let mut buf = pattern();
            let path = mnt.join("seq.bin");
            t0 = Instant::now();
            let mut f =
                ctx(OpenOptions::new().write(true).create(true).truncate(true).mode(0o644).open(&path), || {
                    format!("create {}", path.display())
                })?;
            for i in 0..total / CHUNK {
                buf[..8].copy_from_slice(&(i as u64).to_le_bytes());
                ctx(f.write_all(&buf), || format!("write {}", path.display()))?;
            }
            ctx(f.sync_all(), || format!("fsync {}", path.display()))?;
            drop(f);
            t0.elapsed()
        }
        "seqverify" => {
            let total = bytes()?;
            let path = mnt.join("seq.bin");
            let size = ctx(fs::metadata(&path), || format!("stat {}", path.display()))?.len();
            if size != total as u64 {
                return Err(format!("seq.bin is {size} bytes, expected {total}"));
            }
            let mut want = pattern();
            let mut got = vec![0u8; CHUNK];
            let mut f = ctx(File::open(&path), || format!("open {}", path.display()))?;
            for i in 0..total / CHUNK {
                want[..8].copy_from_slice(&(i as u64).to_le_bytes());
                ctx(f.read_exact(&mut got), || format!("read {} (chunk {i})", path.display()))?;
                if got != want {
                    let bad = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(0);
                    return Err(format!("seq.bin differs at byte {} (chunk {i})", i * CHUNK + bad));
                }
            }
            return Ok(None);
        }
        _ => return Err(format!("unknown op '{op}'")),
    };
    Ok(Some(t.as_secs_f64()))
}
