//! Differential test of the write side: one seeded random sequence of operations (create, write at random
//! offsets, truncate, punch, rename with and without flags, link, unlink, mkdir, rmdir, symlink, xattrs,
//! chmod, chown, utimes) is applied to an ext4box mount and to a kernel ext4 mount of an identical image.
//! Every operation must give the same result (success or the same errno) on both, and at the end both
//! trees must be identical (names, types, sizes, contents, modes, owners, link counts, symlink targets,
//! xattrs). Then the ext4box image must be e2fsck-clean and the kernel must read back exactly what
//! ext4box showed.
//!
//! Reproduce a failure with `SEED=<seed> OPS=<n> cargo test --release --test differential -- <test>`.
//! Needs root and /dev/fuse.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::common::*;

/// xorshift64*: small, seedable, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One operation, on paths relative to the mount root.
#[derive(Debug, Clone)]
enum Op {
    Create(String, u32),
    Write(String, u64, usize, u64),
    Truncate(String, u64),
    Punch(String, u64, u64),
    Rename(String, String, u32),
    Link(String, String),
    Unlink(String),
    Mkdir(String, u32),
    Rmdir(String),
    Symlink(String, String),
    SetXattr(String, String, usize, u64),
    RemoveXattr(String, String),
    Chmod(String, u32),
    Chown(String, u32, u32),
    Utimes(String, i64, i64),
}

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn ret(r: libc::c_int) -> Result<(), i32> {
    if r == 0 { Ok(()) } else { Err(errno()) }
}

/// Applies `op` under `root`; returns Ok or the errno.
fn apply(root: &Path, op: &Op) -> Result<(), i32> {
    let p = |s: &str| root.join(s);
    // SAFETY: plain syscalls on NUL-terminated paths and valid buffers.
    unsafe {
        match op {
            Op::Create(f, mode) => {
                let fd = libc::open(c(&p(f)).as_ptr(), libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, *mode);
                if fd < 0 {
                    return Err(errno());
                }
                ret(libc::close(fd))
            }
            Op::Write(f, off, len, seed) => {
                let fd = libc::open(c(&p(f)).as_ptr(), libc::O_WRONLY | libc::O_NOFOLLOW);
                if fd < 0 {
                    return Err(errno());
                }
                let data = pseudo_random(*seed, *len);
                let n = libc::pwrite(fd, data.as_ptr().cast(), data.len(), *off as i64);
                let e = errno();
                libc::close(fd);
                if n < 0 { Err(e) } else { Ok(()) }
            }
            Op::Truncate(f, size) => ret(libc::truncate(c(&p(f)).as_ptr(), *size as i64)),
            Op::Punch(f, off, len) => {
                let fd = libc::open(c(&p(f)).as_ptr(), libc::O_WRONLY | libc::O_NOFOLLOW);
                if fd < 0 {
                    return Err(errno());
                }
                let r = libc::fallocate(
                    fd,
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    *off as i64,
                    *len as i64,
                );
                let e = errno();
                libc::close(fd);
                if r < 0 { Err(e) } else { Ok(()) }
            }
            Op::Rename(a, b, flags) => {
                let r = libc::syscall(
                    libc::SYS_renameat2,
                    libc::AT_FDCWD,
                    c(&p(a)).as_ptr(),
                    libc::AT_FDCWD,
                    c(&p(b)).as_ptr(),
                    *flags,
                );
                if r < 0 { Err(errno()) } else { Ok(()) }
            }
            Op::Link(a, b) => ret(libc::link(c(&p(a)).as_ptr(), c(&p(b)).as_ptr())),
            Op::Unlink(f) => ret(libc::unlink(c(&p(f)).as_ptr())),
            Op::Mkdir(d, mode) => ret(libc::mkdir(c(&p(d)).as_ptr(), *mode)),
            Op::Rmdir(d) => ret(libc::rmdir(c(&p(d)).as_ptr())),
            Op::Symlink(target, l) => {
                ret(libc::symlink(CString::new(target.as_str()).unwrap().as_ptr(), c(&p(l)).as_ptr()))
            }
            Op::SetXattr(f, name, len, seed) => {
                let v = pseudo_random(*seed, *len);
                let n = CString::new(name.as_str()).unwrap();
                ret(libc::lsetxattr(c(&p(f)).as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0))
            }
            Op::RemoveXattr(f, name) => {
                let n = CString::new(name.as_str()).unwrap();
                ret(libc::lremovexattr(c(&p(f)).as_ptr(), n.as_ptr()))
            }
            Op::Chmod(f, mode) => ret(libc::chmod(c(&p(f)).as_ptr(), *mode)),
            Op::Chown(f, u, g) => ret(libc::lchown(c(&p(f)).as_ptr(), *u, *g)),
            Op::Utimes(f, a, m) => {
                let ts = [
                    libc::timespec { tv_sec: *a / 1000, tv_nsec: (*a % 1000) * 1_000_000 + 123 },
                    libc::timespec { tv_sec: *m / 1000, tv_nsec: (*m % 1000) * 1_000_000 + 456 },
                ];
                ret(libc::utimensat(libc::AT_FDCWD, c(&p(f)).as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW))
            }
        }
    }
}

/// Generates operations over a small set of names, so that they collide (renames over existing names,
/// unlinks of directories, links to missing files): errors must match too.
struct Gen {
    rng: Rng,
    dirs: Vec<String>,
    files: Vec<String>,
    next: u64,
}

impl Gen {
    fn new(seed: u64) -> Gen {
        Gen { rng: Rng(seed | 1), dirs: vec![String::new()], files: Vec::new(), next: 0 }
    }

    fn pick<'a>(&mut self, v: &'a [String]) -> Option<&'a String> {
        if v.is_empty() { None } else { Some(&v[self.rng.below(v.len() as u64) as usize]) }
    }

    fn join(dir: &str, name: &str) -> String {
        if dir.is_empty() { name.to_string() } else { format!("{dir}/{name}") }
    }

    /// A new name in a random directory (sometimes long, so directories grow into htrees).
    fn new_path(&mut self) -> String {
        self.next += 1;
        let dir = self.pick(&self.dirs.clone()).cloned().unwrap_or_default();
        let name = if self.rng.chance(20) {
            format!("{}-{}", "long_name_".repeat(1 + self.rng.below(20) as usize), self.next)
        } else {
            format!("n{}", self.next)
        };
        Self::join(&dir, &name)
    }

    fn any_file(&mut self) -> String {
        let files = self.files.clone();
        match self.pick(&files) {
            Some(f) if !self.rng.chance(5) => f.clone(),
            _ => self.new_path(),
        }
    }

    fn any_dir(&mut self) -> String {
        let dirs = self.dirs.clone();
        match self.pick(&dirs) {
            Some(d) if !d.is_empty() && !self.rng.chance(5) => d.clone(),
            _ => self.new_path(),
        }
    }

    fn op(&mut self) -> Op {
        match self.rng.below(100) {
            0..=14 => Op::Create(self.new_path(), 0o600 + self.rng.below(0o177) as u32),
            15..=34 => {
                let f = self.any_file();
                let big = self.rng.chance(10);
                let off = if big { self.rng.below(8 << 20) } else { self.rng.below(64 << 10) };
                let len = 1 + self.rng.below(if big { 256 << 10 } else { 16 << 10 }) as usize;
                Op::Write(f, off, len, self.rng.next())
            }
            35..=41 => {
                let f = self.any_file();
                Op::Truncate(f, self.rng.below(96 << 10))
            }
            42..=45 => {
                let f = self.any_file();
                Op::Punch(f, self.rng.below(64 << 10), 1 + self.rng.below(32 << 10))
            }
            46..=54 => {
                let a = if self.rng.chance(25) { self.any_dir() } else { self.any_file() };
                let b = if self.rng.chance(50) {
                    self.new_path()
                } else if self.rng.chance(70) {
                    self.any_file()
                } else {
                    self.any_dir()
                };
                let flags = match self.rng.below(10) {
                    0 => 1, // RENAME_NOREPLACE
                    1 => 2, // RENAME_EXCHANGE
                    _ => 0,
                };
                Op::Rename(a, b, flags)
            }
            55..=59 => {
                let a = self.any_file();
                Op::Link(a, self.new_path())
            }
            60..=67 => Op::Unlink(self.any_file()),
            68..=74 => Op::Mkdir(self.new_path(), 0o700 + self.rng.below(0o77) as u32),
            75..=78 => Op::Rmdir(self.any_dir()),
            79..=83 => {
                let max = if self.rng.chance(50) { 59 } else { 1000 };
                let len = 1 + self.rng.below(max) as usize;
                let target: String = (0..len).map(|i| (b'a' + ((i as u64 + self.next) % 26) as u8) as char).collect();
                Op::Symlink(target, self.new_path())
            }
            84..=89 => {
                let f = if self.rng.chance(20) { self.any_dir() } else { self.any_file() };
                let name = format!("user.attr{}", self.rng.below(6));
                let max = if self.rng.chance(20) { 700 } else { 40 };
                let len = self.rng.below(max) as usize;
                Op::SetXattr(f, name, len, self.rng.next())
            }
            90..=91 => {
                let f = self.any_file();
                Op::RemoveXattr(f, format!("user.attr{}", self.rng.below(6)))
            }
            92..=94 => {
                let f = if self.rng.chance(30) { self.any_dir() } else { self.any_file() };
                Op::Chmod(f, 0o700 | self.rng.below(0o7777) as u32 & 0o6777)
            }
            95..=96 => {
                let f = self.any_file();
                Op::Chown(f, self.rng.below(3) as u32 * 1000, 100_000 + self.rng.below(3) as u32)
            }
            _ => {
                let f = self.any_file();
                let t = |r: &mut Rng| -(1i64 << 40) + r.below(1 << 43) as i64;
                Op::Utimes(f, t(&mut self.rng), t(&mut self.rng))
            }
        }
    }

    /// Keeps the model of existing names in step with an operation that succeeded.
    fn learn(&mut self, op: &Op, root: &Path) {
        let exists = |p: &str| std::fs::symlink_metadata(root.join(p)).ok();
        let mut refresh = |p: &String| {
            self.files.retain(|f| f != p && !f.starts_with(&format!("{p}/")));
            self.dirs.retain(|d| d != p && !d.starts_with(&format!("{p}/")));
        };
        match op {
            Op::Create(f, _) | Op::Symlink(_, f) | Op::Link(_, f) => self.files.push(f.clone()),
            Op::Mkdir(d, _) => self.dirs.push(d.clone()),
            Op::Unlink(f) | Op::Rmdir(f) => refresh(f),
            Op::Rename(a, b, _) => {
                refresh(a);
                refresh(b);
                // Re-scan both names (and what lies under them) from the tree itself.
                for p in [a, b] {
                    if let Some(m) = exists(p) {
                        if m.is_dir() {
                            for e in walk(&root.join(p), &WalkOpts::default()).entries {
                                let rel = if e.path.is_empty() {
                                    p.clone()
                                } else {
                                    format!("{p}/{}", String::from_utf8_lossy(&e.path))
                                };
                                match e.stat {
                                    Ok(ref s) if s.kind == "dir" => self.dirs.push(rel),
                                    _ => self.files.push(rel),
                                }
                            }
                        } else {
                            self.files.push(p.clone());
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// The walk with the fields that legitimately differ between two filesystems removed: inode numbers,
/// timestamps (set implicitly at different instants), directory sizes (block usage).
fn normalized(root: &Path) -> Walk {
    let mut w = walk(root, &WalkOpts::default());
    for e in &mut w.entries {
        e.dino = None;
        if let Ok(s) = &mut e.stat {
            s.ino = 0;
            s.atime = (0, 0);
            s.mtime = (0, 0);
            s.ctime = (0, 0);
            if s.kind == "dir" {
                s.size = 0;
            }
        }
        // lost+found and the root hold no test data; their sizes and times are not compared above anyway.
    }
    w
}

fn run(tag: &str, mkfs_args: &[&str], size: u64, seed: u64, ops: usize) {
    run_tuned(tag, mkfs_args, &[], size, seed, ops)
}

/// As [`run`], with `tune2fs ARGS` applied to ext4box's copy of the image only: for features the
/// kernel here cannot mount read-write (quota), which leave what programs see unchanged.
fn run_tuned(tag: &str, mkfs_args: &[&str], tune: &[&str], size: u64, seed: u64, ops: usize) {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let seed = std::env::var("SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(seed);
    let ops = std::env::var("OPS").ok().and_then(|s| s.parse().ok()).unwrap_or(ops);
    let scratch = Scratch::new(tag);
    let (kimg, eimg) = (scratch.path("kernel.img"), scratch.path("ext4box.img"));
    mkfs(&kimg, size, mkfs_args);
    std::fs::copy(&kimg, &eimg).unwrap();
    if !tune.is_empty() {
        run_ok(std::process::Command::new("tune2fs").args(tune).arg(&eimg));
    }
    let (kmnt, emnt) = (scratch.mkdir("k"), scratch.mkdir("e"));
    kernel_mount(&kimg, &kmnt, "");
    // noatime: the final walks read every file, and the comparison of what ext4box showed with what the
    // kernel reads back includes access times (relatime has a test of its own in write_semantics).
    let m = ext4box_mount_ok(&eimg, &emnt, "noatime");
    let small_inodes = run_ok(std::process::Command::new("dumpe2fs").arg("-h").arg(&kimg))
        .lines()
        .any(|l| l.starts_with("Inode size:") && l.trim_end().ends_with(" 128"));
    let mut g = Gen::new(seed);
    let mut log: Vec<String> = Vec::new();
    for i in 0..ops {
        let op = g.op();
        let rk = apply(&kmnt, &op);
        let re = apply(&emnt, &op);
        log.push(format!("{i}: {op:?} -> {rk:?}"));
        if let Ok(t) = std::env::var("TRACE") {
            if format!("{op:?}").contains(&t) {
                eprintln!("TRACE {}", log.last().unwrap());
            }
        }
        if rk != re {
            let tail = log.iter().rev().take(15).rev().cloned().collect::<Vec<_>>().join("\n");
            panic!(
                "{tag} seed {seed}: operation {i} {op:?}: kernel {rk:?}, ext4box {re:?}\nlast operations:\n{tail}\n\
                 reproduce: SEED={seed} OPS={} cargo test --release --test differential -- {tag}",
                i + 1
            );
        }
        if rk.is_ok() {
            g.learn(&op, &kmnt);
        }
        if let (Op::Utimes(f, ..), Ok(())) = (&op, &rk) {
            // Explicitly set times must match to the nanosecond (to the second with 128-byte inodes,
            // which have no room for nanoseconds: the kernel then shows nanoseconds it cannot store).
            let (a, b) = (lstat(&kmnt.join(f)).unwrap(), lstat(&emnt.join(f)).unwrap());
            let cut = |t: (i64, i64)| if small_inodes { (t.0, 0) } else { t };
            assert_eq!(
                (cut(a.atime), cut(a.mtime)),
                (cut(b.atime), cut(b.mtime)),
                "{tag} seed {seed} op {i}: utimes of {f}"
            );
        }
    }
    let kw = normalized(&kmnt);
    let ew = normalized(&emnt);
    assert_walks_equal("kernel", &kw, "ext4box", &ew);
    // Exactly what ext4box showed, inode numbers and times included, is what the kernel reads back.
    let shown = walk(&emnt, &WalkOpts::default());
    m.unmount();
    kernel_umount(&kmnt);
    // With quota, e2fsck also recomputes every id's usage and compares it with the quota files.
    assert_fsck_clean(&eimg);
    kernel_mount(&eimg, &kmnt, "ro");
    let back = walk(&kmnt, &WalkOpts::default());
    kernel_umount(&kmnt);
    assert_walks_equal("ext4box", &shown, "kernel reading the ext4box image", &back);
    eprintln!("{tag}: seed {seed}, {ops} operations, {} entries: identical", kw.entries.len());
}

#[test]
fn ext4_4k_debian_defaults() {
    run("diff-ext4-4k", &["-b", "4096"], 256 << 20, 0x5EED_0001, 6000);
}

#[test]
fn ext4_1k_upstream_defaults() {
    run("diff-ext4-1k", &["-b", "1024", "-O", "orphan_file,metadata_csum_seed"], 128 << 20, 0x5EED_0002, 6000);
}

#[test]
fn ext4_inline_data() {
    run("diff-inline", &["-O", "inline_data", "-I", "256"], 128 << 20, 0x5EED_0003, 4000);
}

#[test]
fn ext2_and_ext3_block_maps() {
    run("diff-ext2", &["-t", "ext2", "-b", "1024"], 128 << 20, 0x5EED_0004, 3000);
    run("diff-ext3", &["-t", "ext3"], 128 << 20, 0x5EED_0005, 3000);
}

#[test]
fn ext4_quota_user_group_project() {
    run_tuned(
        "diff-quota",
        &["-b", "4096", "-I", "256"],
        &["-O", "project,quota", "-Q", "usrquota,grpquota,prjquota"],
        128 << 20,
        0x5EED_0006,
        4000,
    );
}

#[test]
fn ext4_bigalloc_clusters() {
    run("diff-bigalloc-4k", &["-b", "4096", "-O", "bigalloc", "-C", "16384"], 512 << 20, 0x5EED_0007, 4000);
    run("diff-bigalloc-1k", &["-b", "1024", "-O", "bigalloc", "-C", "16384"], 256 << 20, 0x5EED_0008, 3000);
}
