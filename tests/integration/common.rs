//! Shared helpers for the integration tests: privilege checks, scratch
//! directories with cleanup, image creation, kernel and ext4box mounts, and a
//! tree walker that records everything a reader of a mount can observe. The generic ones (commands
//! with time bounds, scratch directories, /proc, mkfs, kernel and ext4box mounts) are in
//! `tests/shared/host.rs`, which the benchmark (`bench/`) includes too; they are re-exported here.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

#[path = "../shared/host.rs"]
mod host;
pub use host::*;

// ---------------------------------------------------------------------------
// Privileges
// ---------------------------------------------------------------------------

/// True when the test can run: root and /dev/fuse. Otherwise panics under
/// CI=true, or prints a message and returns false (the test then returns).
/// A test's hold on the machine. Every mounting test holds it shared; the few that turn machine-wide
/// switches (`fuse.enable_uring`, `kernel.io_uring_disabled`, helper links in /sbin) or copy the mount
/// namespace (`as_user`'s `unshare -m`, a container: the copy keeps other tests' FUSE mounts alive past
/// their unmount) hold it alone, so no other test's mount runs meanwhile. One test binary runs every module's tests side
/// by side, so this is what keeps them apart.
pub enum Machine {
    Shared { _held: RwLockReadGuard<'static, ()> },
    Alone { _held: RwLockWriteGuard<'static, ()> },
}

static MACHINE: RwLock<()> = RwLock::new(());

/// The machine, shared, when this process is root and has /dev/fuse; otherwise `None` after saying
/// why (and a panic under CI=true, where nothing may skip itself).
pub fn require_root_and_fuse() -> Option<Machine> {
    root_and_fuse().then(|| Machine::Shared { _held: MACHINE.read().unwrap_or_else(|p| p.into_inner()) })
}

/// As [`require_root_and_fuse`], with the machine held alone: for tests that turn machine-wide switches.
pub fn require_root_and_fuse_alone() -> Option<Machine> {
    root_and_fuse().then(|| Machine::Alone { _held: MACHINE.write().unwrap_or_else(|p| p.into_inner()) })
}

fn root_and_fuse() -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    let fuse = Path::new("/dev/fuse").exists();
    if root && fuse {
        return true;
    }
    let why = format!("needs root and /dev/fuse (euid 0: {root}, /dev/fuse present: {fuse})");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true but this test {why}");
    }
    eprintln!("skipping: {why}");
    false
}

pub fn is_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

// ---------------------------------------------------------------------------
// Images and kernel mounts
// ---------------------------------------------------------------------------

/// `EXT4_IOC_SHUTDOWN` (`_IOR('X', 125, __u32)`) and its flags: flush the log first (the running
/// transaction becomes a full commit), or stop with the log as it is (what fsync made durable only).
pub const EXT4_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587D;
pub const EXT4_GOING_FLAGS_LOGFLUSH: u32 = 1;
pub const EXT4_GOING_FLAGS_NOLOGFLUSH: u32 = 2;

/// Stops the kernel's ext4 mounted at `mnt` as a crash would (`EXT4_IOC_SHUTDOWN` with `flag`):
/// nothing more reaches the image.
pub fn kernel_shutdown(mnt: &Path, flag: u32) {
    let f = File::open(mnt).unwrap();
    let rc = unsafe { libc::ioctl(std::os::unix::io::AsRawFd::as_raw_fd(&f), EXT4_IOC_SHUTDOWN as _, &flag) };
    assert_eq!(rc, 0, "EXT4_IOC_SHUTDOWN: {}", io::Error::last_os_error());
}

/// [`kernel_shutdown`], then `img` kept as the crash left it: copied before the umount (which would
/// write the committed blocks home) and put back after. Its journal must need recovery.
pub fn kernel_crash(img: &Path, mnt: &Path, flag: u32) {
    kernel_shutdown(mnt, flag);
    let crashed = img.with_extension("crashed");
    fs::copy(img, &crashed).unwrap();
    kernel_umount(mnt);
    fs::rename(&crashed, img).unwrap();
    assert!(fs_features(img).iter().any(|f| f == "needs_recovery"), "the shutdown left no journal to recover");
}

/// Polls `cond` every 20 ms until it holds, and fails the test, naming `what`, after `limit`: for what
/// the kernel or a server does asynchronously (a forget, a socket made, a process gone).
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `e2fsck -fn IMG` must report a clean filesystem.
pub fn assert_fsck_clean(img: &Path) {
    let out = run_timeout(Command::new("e2fsck").arg("-fn").arg(img), Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "e2fsck -fn {img:?} is not clean (test setup problem):\n{}", output_text(&out));
}

/// Output of `debugfs -R CMD IMG` (stdout).
pub fn debugfs(img: &Path, cmd: &str) -> String {
    run_ok(Command::new("debugfs").arg("-R").arg(cmd).arg(img))
}

/// `debugfs -w -R CMD IMG`.
pub fn debugfs_w(img: &Path, cmd: &str) -> String {
    run_ok(Command::new("debugfs").arg("-w").arg("-R").arg(cmd).arg(img))
}

/// The inode number of a path inside an image, from `debugfs stat`.
pub fn debugfs_inode(img: &Path, path: &str) -> u64 {
    let s = debugfs(img, &format!("stat \"{path}\""));
    let rest = s.split("Inode:").nth(1).unwrap_or_else(|| panic!("no Inode: in debugfs stat {path}: {s}"));
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

/// The "Filesystem features:" line of dumpe2fs -h.
pub fn fs_features(img: &Path) -> Vec<String> {
    let s = run_ok(Command::new("dumpe2fs").arg("-h").arg(img));
    s.lines()
        .find_map(|l| l.strip_prefix("Filesystem features:"))
        .unwrap_or("")
        .split_whitespace()
        .map(|s| s.to_string())
        .collect()
}

// ---------------------------------------------------------------------------
// ext4box
// ---------------------------------------------------------------------------

/// `ext4box mount IMG MNT -o OPTS --foreground` with stderr (the server's log) going to `log`: the
/// running launcher once the mount is live, or its exit status when it ended without mounting.
pub fn ext4box_foreground(img: &Path, mnt: &Path, opts: &str, log: &Path) -> Result<std::process::Child, ExitStatus> {
    let mut child = Command::new(BIN)
        .arg("mount")
        .arg(img)
        .arg(mnt)
        .args(["-o", opts, "--foreground"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    loop {
        // The mount exists before the worker has read the image, and goes away again when it refuses it:
        // served means a stat of the root was answered (an error of a damaged root counts) while the
        // mount is still there.
        let answered = || fs::metadata(mnt).err().and_then(|e| e.raw_os_error()) != Some(libc::ENOTCONN);
        if mountinfo_entry(mnt).is_some() && answered() && mountinfo_entry(mnt).is_some() {
            return Ok(child);
        }
        if let Some(st) = child.try_wait().unwrap() {
            return Err(st);
        }
        assert!(start.elapsed() < CMD_TIMEOUT, "ext4box mount --foreground {img:?}: no mount after {CMD_TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A live ext4box mount and the server processes serving it.
pub struct Ext4boxMount {
    pub mnt: PathBuf,
    pub pids: Vec<i32>,
}

/// Mounts with ext4box and checks the mount is live: exit 0, the mount point is in mountinfo as
/// fstype fuse.ext4box (fuseblk.ext4box for a block device), and a server process serves it.
pub fn ext4box_mount_ok(img: &Path, mnt: &Path, opts: &str) -> Ext4boxMount {
    let out = ext4box_mount(img, mnt, opts);
    assert!(out.status.success(), "ext4box mount {img:?} {mnt:?} -o {opts:?} failed:\n{}", output_text(&out));
    let mi = mountinfo_entry(mnt)
        .unwrap_or_else(|| panic!("ext4box mount returned 0 but {mnt:?} is not in /proc/self/mountinfo"));
    use std::os::unix::fs::FileTypeExt;
    let block_device = fs::metadata(img).is_ok_and(|m| m.file_type().is_block_device());
    let fstype = if block_device { "fuseblk.ext4box" } else { "fuse.ext4box" };
    assert_eq!(mi.fstype, fstype, "fstype of the ext4box mount at {mnt:?} (mountinfo: {mi:?})");
    let pids = server_pids(mnt);
    assert!(!pids.is_empty(), "no live ext4box server process whose command line names {mnt:?} after mount");
    Ext4boxMount { mnt: mnt.to_path_buf(), pids }
}

impl Ext4boxMount {
    /// The mount at `mnt`, made some other way than `ext4box_mount_ok` (it must be live).
    pub fn adopt(mnt: &Path) -> Ext4boxMount {
        assert!(mountinfo_entry(mnt).is_some(), "{mnt:?} is not mounted");
        let pids = server_pids(mnt);
        assert!(!pids.is_empty(), "no live ext4box server process whose command line names {mnt:?}");
        Ext4boxMount { mnt: mnt.to_path_buf(), pids }
    }

    /// True while the mount is listed and every server process lives.
    pub fn alive(&self) -> bool {
        mountinfo_entry(&self.mnt).is_some() && self.pids.iter().all(|&p| pid_alive(p))
    }

    /// `ext4box unmount`: exit 0, the mount is gone, and every server process
    /// has exited by the time the command returns.
    pub fn unmount(self) {
        let out = ext4box_unmount(&self.mnt);
        assert!(out.status.success(), "ext4box unmount {:?} failed:\n{}", self.mnt, output_text(&out));
        let still: Vec<i32> = self.pids.iter().copied().filter(|&p| pid_alive(p)).collect();
        assert!(still.is_empty(), "ext4box unmount {:?} returned but server process(es) {still:?} still run", self.mnt);
        assert!(
            mountinfo_entry(&self.mnt).is_none(),
            "ext4box unmount {:?} returned 0 but the mount is still listed",
            self.mnt
        );
    }
}

/// Runs `f` on another thread; if it does not finish within `limit`, kills
/// the ext4box mount at `mnt` (so the stuck thread gets an error) and panics.
pub fn with_timeout<T: Send + 'static>(
    what: &str,
    limit: Duration,
    mnt: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        let r = f();
        let _ = tx.send(());
        r
    });
    match rx.recv_timeout(limit) {
        Ok(()) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The closure panicked.
            match h.join() {
                Ok(r) => r,
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            force_kill_mount(mnt);
            panic!("{what} did not finish within {limit:?} (mount {mnt:?}); server killed");
        }
    }
}

// ---------------------------------------------------------------------------
// Hashing (fast, non-cryptographic, deterministic)
// ---------------------------------------------------------------------------

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;
const P4: u64 = 0x85EB_CA77_C2B2_AE63;

fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Hash of one byte slice: four lanes of 64-bit words, then the tail.
pub fn hash_bytes(data: &[u8]) -> u64 {
    let mut l = [P1, P2, P3, P4];
    let mut chunks = data.chunks_exact(32);
    for c in &mut chunks {
        for k in 0..4 {
            let w = u64::from_le_bytes(c[k * 8..k * 8 + 8].try_into().unwrap());
            l[k] = (l[k] ^ w).wrapping_mul(P2).rotate_left(31).wrapping_mul(P1);
        }
    }
    let mut h = l[0].rotate_left(1) ^ l[1].rotate_left(7) ^ l[2].rotate_left(12) ^ l[3].rotate_left(18);
    for (i, &b) in chunks.remainder().iter().enumerate() {
        h = (h ^ ((b as u64) << ((i % 8) * 8))).wrapping_mul(P3);
    }
    mix64(h ^ (data.len() as u64).wrapping_mul(P4))
}

const CHUNK: usize = 1 << 20;
static ZERO_CHUNK: [u8; CHUNK] = [0u8; CHUNK];
static ZERO_CHUNK_HASH: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// Length and hash of a regular file's contents, read fully (up to `cap`
/// bytes) in 1 MiB chunks; the hash depends only on the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Content {
    pub len: u64,
    pub hash: u64,
    pub capped: bool,
}

pub fn hash_file(path: &Path, cap: u64) -> Result<Content, i32> {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| errno_of(&e))?;
    let mut buf = vec![0u8; CHUNK];
    let mut h = P4;
    let mut len = 0u64;
    let mut capped = false;
    loop {
        // Fill the chunk completely (short reads must not change the hash).
        let mut n = 0;
        while n < CHUNK {
            match f.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(errno_of(&e)),
            }
        }
        if n == 0 {
            break;
        }
        // Slice equality is a memcmp even in unoptimized test builds, so
        // holes (all-zero chunks) cost next to nothing to hash.
        let hb = if n == CHUNK && buf[..] == ZERO_CHUNK[..] {
            *ZERO_CHUNK_HASH.get_or_init(|| hash_bytes(&ZERO_CHUNK[..]))
        } else {
            hash_bytes(&buf[..n])
        };
        h = mix64(h ^ hb).wrapping_add(P1);
        len += n as u64;
        if n < CHUNK {
            break;
        }
        if len >= cap {
            capped = true;
            break;
        }
    }
    // Drop the cached pages: some files are large and sparse.
    unsafe {
        use std::os::fd::AsRawFd;
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
    Ok(Content { len, hash: mix64(h ^ len), capped })
}

/// Hash of a whole file read through the normal path (e.g. an image).
pub fn hash_path(path: &Path) -> u64 {
    let c = hash_file(path, u64::MAX).unwrap_or_else(|e| panic!("read {path:?}: errno {e}"));
    c.hash
}

/// Deterministic pseudo-random bytes (xorshift64*).
/// xorshift64*: the next number of a reproducible stream kept in `state`.
pub fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state | 1;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(P1) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(len);
    v
}

// ---------------------------------------------------------------------------
// xattrs through libc
// ---------------------------------------------------------------------------

pub fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

pub fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("NUL in path")
}

/// llistxattr: the names, in the order given.
pub fn list_xattrs(p: &Path) -> Result<Vec<Vec<u8>>, i32> {
    let c = cpath(p);
    for _ in 0..8 {
        let n = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
        if n < 0 {
            return Err(errno());
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        // Exactly the size announced: a server that under-reports fails here.
        let mut buf = vec![0u8; n as usize];
        let m = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
        if m < 0 {
            let e = errno();
            if e == libc::ERANGE {
                continue;
            }
            return Err(e);
        }
        buf.truncate(m as usize);
        return Ok(buf.split(|&b| b == 0).filter(|s| !s.is_empty()).map(|s| s.to_vec()).collect());
    }
    Err(libc::ERANGE)
}

/// lgetxattr of one name.
pub fn get_xattr(p: &Path, name: &[u8]) -> Result<Vec<u8>, i32> {
    let c = cpath(p);
    let n = CString::new(name).map_err(|_| libc::EINVAL)?;
    for _ in 0..8 {
        let sz = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
        if sz < 0 {
            return Err(errno());
        }
        let mut buf = vec![0u8; sz as usize];
        let m = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
        if m < 0 {
            let e = errno();
            if e == libc::ERANGE {
                continue;
            }
            return Err(e);
        }
        buf.truncate(m as usize);
        return Ok(buf);
    }
    Err(libc::ERANGE)
}

/// `lremovexattr(2)`.
pub fn remove_xattr(p: &Path, name: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let name = std::ffi::CString::new(name).unwrap();
    if unsafe { libc::lremovexattr(path.as_ptr(), name.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

pub fn set_xattr(p: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let c = cpath(p);
    let n = CString::new(name).unwrap();
    let r = unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), value.as_ptr() as *const libc::c_void, value.len(), 0) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The tree walker
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub nlink: u64,
    pub atime: (i64, i64),
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    pub ino: u64,
    pub rdev: u64,
}

pub fn kind_of_mode(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "file",
        libc::S_IFDIR => "dir",
        libc::S_IFLNK => "symlink",
        libc::S_IFCHR => "chardev",
        libc::S_IFBLK => "blockdev",
        libc::S_IFIFO => "fifo",
        libc::S_IFSOCK => "socket",
        _ => "unknown",
    }
}

fn kind_of_ft(ft: &fs::FileType) -> &'static str {
    if ft.is_file() {
        "file"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_char_device() {
        "chardev"
    } else if ft.is_block_device() {
        "blockdev"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else {
        "unknown"
    }
}

pub fn lstat(p: &Path) -> Result<Stat, i32> {
    let m = fs::symlink_metadata(p).map_err(|e| errno_of(&e))?;
    Ok(Stat {
        kind: kind_of_mode(m.mode()),
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        size: m.size(),
        nlink: m.nlink(),
        atime: (m.atime(), m.atime_nsec()),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
        ino: m.ino(),
        rdev: m.rdev(),
    })
}

pub type Xattrs = Vec<(Vec<u8>, Result<Vec<u8>, i32>)>;

/// One object of a walked tree. Every observation is kept with its error, so
/// a walk of a damaged image records errors instead of failing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the walk's root; empty for the root itself.
    pub path: Vec<u8>,
    /// d_type and d_ino as the parent's readdir reported them (None for the root).
    pub dtype: Option<&'static str>,
    pub dino: Option<u64>,
    pub stat: Result<Stat, i32>,
    pub link: Option<Result<Vec<u8>, i32>>,
    pub xattrs: Result<Xattrs, i32>,
    pub content: Option<Result<Content, i32>>,
    /// For directories: number of children read, or the readdir error.
    pub children: Option<Result<usize, i32>>,
}

impl Entry {
    /// Number of failed observations in this entry.
    pub fn errors(&self) -> Vec<(&'static str, i32)> {
        let mut v = Vec::new();
        if let Err(e) = &self.stat {
            v.push(("lstat", *e));
        }
        if let Some(Err(e)) = &self.link {
            v.push(("readlink", *e));
        }
        match &self.xattrs {
            Err(e) => v.push(("listxattr", *e)),
            Ok(xs) => {
                for (_, r) in xs {
                    if let Err(e) = r {
                        v.push(("getxattr", *e));
                    }
                }
            }
        }
        if let Some(Err(e)) = &self.content {
            v.push(("read", *e));
        }
        if let Some(Err(e)) = &self.children {
            v.push(("readdir", *e));
        }
        v
    }
}

#[derive(Debug, Clone)]
pub struct WalkOpts {
    pub max_depth: usize,
    pub max_entries: usize,
    /// Per-file read limit in bytes.
    pub read_cap: u64,
    pub deadline: Option<Instant>,
}

impl Default for WalkOpts {
    fn default() -> Self {
        WalkOpts { max_depth: 64, max_entries: 100_000, read_cap: u64::MAX, deadline: None }
    }
}

#[derive(Debug, Clone)]
pub struct Walk {
    pub entries: Vec<Entry>,
    /// Why the walk stopped early, if it did (limits, deadline).
    pub truncated: Option<String>,
}

impl Walk {
    pub fn error_count(&self) -> usize {
        self.entries.iter().map(|e| e.errors().len()).sum()
    }
}

fn join_rel(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() { root.to_path_buf() } else { root.join(OsStr::from_bytes(rel)) }
}

pub fn read_xattrs(p: &Path) -> Result<Xattrs, i32> {
    let mut names = list_xattrs(p)?;
    names.sort();
    Ok(names
        .into_iter()
        .map(|n| {
            let v = get_xattr(p, &n);
            (n, v)
        })
        .collect())
}

/// Walks `root` without following symlinks: readdir every directory, lstat
/// everything, readlink symlinks, read regular files fully, list and read
/// xattrs. The result is sorted by path.
pub fn walk(root: &Path, opts: &WalkOpts) -> Walk {
    let mut entries = Vec::new();
    let mut truncated = None;
    // (relative path, depth, d_type, d_ino)
    type Pending = (Vec<u8>, usize, Option<&'static str>, Option<u64>);
    let mut stack: Vec<Pending> = vec![(Vec::new(), 0, None, None)];
    while let Some((rel, depth, dtype, dino)) = stack.pop() {
        if let Some(d) = opts.deadline {
            if Instant::now() > d {
                truncated = Some(format!("deadline passed after {} entries", entries.len()));
                break;
            }
        }
        if entries.len() >= opts.max_entries {
            truncated = Some(format!("entry limit {} reached", opts.max_entries));
            break;
        }
        let p = join_rel(root, &rel);
        let stat = lstat(&p);
        let kind = stat.as_ref().map(|s| s.kind).ok().or(dtype);
        let link = (kind == Some("symlink"))
            .then(|| fs::read_link(&p).map(|t| t.into_os_string().into_vec()).map_err(|e| errno_of(&e)));
        let xattrs = read_xattrs(&p);
        let content = (kind == Some("file")).then(|| hash_file(&p, opts.read_cap));
        let mut children = None;
        if kind == Some("dir") {
            let mut count = 0usize;
            let r = (|| -> Result<usize, i32> {
                let rd = fs::read_dir(&p).map_err(|e| errno_of(&e))?;
                for de in rd {
                    let de = de.map_err(|e| errno_of(&e))?;
                    count += 1;
                    if depth + 1 > opts.max_depth {
                        if truncated.is_none() {
                            truncated = Some(format!("depth limit {} reached at {:?}", opts.max_depth, p));
                        }
                        continue;
                    }
                    if count > opts.max_entries {
                        break;
                    }
                    let name = de.file_name().into_vec();
                    let mut child = rel.clone();
                    if !child.is_empty() {
                        child.push(b'/');
                    }
                    child.extend_from_slice(&name);
                    let dt = de.file_type().ok().map(|ft| kind_of_ft(&ft));
                    use std::os::unix::fs::DirEntryExt;
                    stack.push((child, depth + 1, dt, Some(de.ino())));
                }
                Ok(count)
            })();
            children = Some(r);
        }
        entries.push(Entry { path: rel, dtype, dino, stat, link, xattrs, content, children });
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Walk { entries, truncated }
}

// ---------------------------------------------------------------------------
// Comparing walks
// ---------------------------------------------------------------------------

/// Printable form of bytes: ASCII as is, others as \xNN, long ones cut.
pub fn esc(b: &[u8]) -> String {
    let mut s = String::new();
    for &c in b.iter().take(100) {
        if (0x20..0x7f).contains(&c) && c != b'\\' {
            s.push(c as char);
        } else {
            s.push_str(&format!("\\x{c:02x}"));
        }
    }
    if b.len() > 100 {
        s.push_str(&format!("...({} bytes)", b.len()));
    }
    s
}

fn err_name(e: i32) -> String {
    let s = io::Error::from_raw_os_error(e).to_string();
    format!("errno {e} ({s})")
}

fn res<T>(r: &Result<T, i32>, f: impl Fn(&T) -> String) -> String {
    match r {
        Ok(v) => f(v),
        Err(e) => format!("ERROR {}", err_name(*e)),
    }
}

fn ts(t: (i64, i64)) -> String {
    format!("{}.{:09}", t.0, t.1)
}

/// The fields of an entry as (name, printable value) pairs, for diffs.
pub fn fields(e: &Entry) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = Vec::new();
    v.push(("d_type".into(), format!("{:?}", e.dtype)));
    v.push(("d_ino".into(), format!("{:?}", e.dino)));
    match &e.stat {
        Ok(s) => {
            v.push(("type".into(), s.kind.into()));
            v.push(("mode".into(), format!("{:o}", s.mode)));
            v.push(("uid".into(), s.uid.to_string()));
            v.push(("gid".into(), s.gid.to_string()));
            v.push(("size".into(), s.size.to_string()));
            v.push(("nlink".into(), s.nlink.to_string()));
            v.push(("atime".into(), ts(s.atime)));
            v.push(("mtime".into(), ts(s.mtime)));
            v.push(("ctime".into(), ts(s.ctime)));
            v.push(("ino".into(), s.ino.to_string()));
            v.push(("rdev".into(), format!("{:#x}", s.rdev)));
        }
        Err(err) => v.push(("lstat".into(), format!("ERROR {}", err_name(*err)))),
    }
    if let Some(l) = &e.link {
        v.push(("symlink target".into(), res(l, |t| format!("{:?} (len {})", esc(t), t.len()))));
    }
    match &e.xattrs {
        Ok(xs) => {
            v.push(("xattr names".into(), xs.iter().map(|(n, _)| esc(n)).collect::<Vec<_>>().join(", ")));
            for (n, val) in xs {
                v.push((format!("xattr {}", esc(n)), res(val, |b| format!("{} bytes: {:?}", b.len(), esc(b)))));
            }
        }
        Err(err) => v.push(("listxattr".into(), format!("ERROR {}", err_name(*err)))),
    }
    if let Some(c) = &e.content {
        v.push((
            "content".into(),
            res(c, |c| format!("{} bytes, hash {:016x}{}", c.len, c.hash, if c.capped { " (capped)" } else { "" })),
        ));
    }
    if let Some(c) = &e.children {
        v.push(("readdir".into(), res(c, |n| format!("{n} entries"))));
    }
    v
}

/// Compares two walks entry by entry; on mismatch prints the first
/// differences (path by path, field by field) and panics.
pub fn assert_walks_equal(expected_name: &str, expected: &Walk, actual_name: &str, actual: &Walk) {
    assert!(expected.truncated.is_none(), "{expected_name} walk stopped early: {:?}", expected.truncated);
    assert!(actual.truncated.is_none(), "{actual_name} walk stopped early: {:?}", actual.truncated);
    let a: BTreeMap<&[u8], &Entry> = expected.entries.iter().map(|e| (e.path.as_slice(), e)).collect();
    let b: BTreeMap<&[u8], &Entry> = actual.entries.iter().map(|e| (e.path.as_slice(), e)).collect();
    let mut paths: Vec<&[u8]> = a.keys().chain(b.keys()).copied().collect();
    paths.sort();
    paths.dedup();
    let mut report = String::new();
    let mut ndiff = 0usize;
    let mut shown = 0usize;
    for p in paths {
        let shown_path = if p.is_empty() { "/".to_string() } else { format!("/{}", esc(p)) };
        let diff: Vec<String> = match (a.get(p), b.get(p)) {
            (Some(_), None) => vec![format!("  only in {expected_name}")],
            (None, Some(_)) => vec![format!("  only in {actual_name}")],
            (Some(x), Some(y)) if x == y => continue,
            (Some(x), Some(y)) => {
                let fx = fields(x);
                let fy = fields(y);
                let mut names: Vec<&String> = fx.iter().map(|(n, _)| n).collect();
                for (n, _) in &fy {
                    if !names.contains(&n) {
                        names.push(n);
                    }
                }
                let get = |f: &Vec<(String, String)>, n: &String| {
                    f.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()).unwrap_or_else(|| "(absent)".into())
                };
                names
                    .into_iter()
                    .filter_map(|n| {
                        let vx = get(&fx, n);
                        let vy = get(&fy, n);
                        (vx != vy).then(|| format!("  {n}:\n    - {expected_name}: {vx}\n    + {actual_name}: {vy}"))
                    })
                    .collect()
            }
            (None, None) => unreachable!(),
        };
        ndiff += 1;
        if shown < 25 {
            shown += 1;
            report.push_str(&format!("{shown_path}\n{}\n", diff.join("\n")));
        }
    }
    if ndiff > 0 {
        eprintln!(
            "=== walks differ: {ndiff} path(s) ({} entries in {expected_name}, {} in {actual_name}); first {shown}:\n{report}",
            expected.entries.len(),
            actual.entries.len()
        );
        panic!(
            "{expected_name} and {actual_name} walks differ at {ndiff} path(s); first:\n{}",
            report.lines().take(12).collect::<Vec<_>>().join("\n")
        );
    }
}

/// A directory's entries as `getdents` gives them: (name, d_ino, d_type), or the errno.
pub type RawDir = Result<Vec<(Vec<u8>, u64, u8)>, i32>;

/// All entries of a directory as getdents reports them, "." and ".."
/// included: (name, d_ino, d_type), sorted by name.
pub fn raw_readdir(p: &Path) -> RawDir {
    let c = cpath(p);
    let d = unsafe { libc::opendir(c.as_ptr()) };
    if d.is_null() {
        return Err(errno());
    }
    let mut v = Vec::new();
    let r = loop {
        unsafe { *libc::__errno_location() = 0 };
        let e = unsafe { libc::readdir64(d) };
        if e.is_null() {
            let en = errno();
            break if en == 0 { Ok(()) } else { Err(en) };
        }
        let e = unsafe { &*e };
        let name = unsafe { std::ffi::CStr::from_ptr(e.d_name.as_ptr()) }.to_bytes().to_vec();
        v.push((name, e.d_ino, e.d_type));
    };
    unsafe { libc::closedir(d) };
    r?;
    v.sort();
    Ok(v)
}

/// Writes a partition table onto `disk` with sfdisk (Debian's fdisk package), from sfdisk's script
/// format (`label: gpt\nstart=2048, size=65536, type=linux\n`).
pub fn sfdisk(disk: &Path, table: &str) {
    let mut child = Command::new("sfdisk")
        .arg("--quiet")
        .arg(disk)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("sfdisk (Debian's fdisk package)");
    io::Write::write_all(child.stdin.as_mut().unwrap(), table.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "sfdisk failed on {disk:?}");
}

/// statvfs of a path.
pub fn statvfs(p: &Path) -> Result<libc::statvfs, i32> {
    let c = cpath(p);
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(errno());
    }
    Ok(st)
}

/// Extra comparisons of two mounts of the same image, after a full walk:
/// lstat again (reading must not have changed anything, atime included),
/// getdents (d_ino and d_type of every name; "." and ".." are left to a test
/// of their own), and getxattr of a name that does not exist. Returns the
/// differences.
pub fn compare_again(walked: &Walk, a_root: &Path, b_root: &Path, max_dirs: usize) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut dirs = 0;
    for e in &walked.entries {
        let pa = join_rel(a_root, &e.path);
        let pb = join_rel(b_root, &e.path);
        let shown = format!("/{}", esc(&e.path));
        let (sa, sb) = (lstat(&pa), lstat(&pb));
        if sa != sb {
            diffs.push(format!("{shown}: second lstat differs:\n    - {sa:?}\n    + {sb:?}"));
        }
        if let Ok(st) = &e.stat {
            if st.kind == "dir" && dirs < max_dirs {
                dirs += 1;
                let no_dots = |r: RawDir| {
                    r.map(|v| v.into_iter().filter(|(n, _, _)| n != b"." && n != b"..").collect::<Vec<_>>())
                };
                let (ra, rb) = (no_dots(raw_readdir(&pa)), no_dots(raw_readdir(&pb)));
                if ra != rb {
                    let fmt = |r: &RawDir| match r {
                        Ok(v) => format!("{} entries", v.len()),
                        Err(e) => format!("ERROR {e}"),
                    };
                    let first = match (&ra, &rb) {
                        (Ok(x), Ok(y)) => x
                            .iter()
                            .zip(y.iter())
                            .find(|(p, q)| p != q)
                            .map(|(p, q)| {
                                format!(
                                    "; first difference: ({}, {}, {}) vs ({}, {}, {})",
                                    esc(&p.0),
                                    p.1,
                                    p.2,
                                    esc(&q.0),
                                    q.1,
                                    q.2
                                )
                            })
                            .unwrap_or_default(),
                        _ => String::new(),
                    };
                    diffs.push(format!("{shown}: getdents differs: {} vs {}{first}", fmt(&ra), fmt(&rb)));
                }
            }
        }
        let (xa, xb) = (get_xattr(&pa, b"user.no-such-attribute"), get_xattr(&pb, b"user.no-such-attribute"));
        if xa != xb {
            diffs.push(format!("{shown}: getxattr of a missing name: {xa:?} vs {xb:?}"));
        }
    }
    diffs
}

// ---- Running as an ordinary user (tests of mounting without root) ----

pub const TEST_USER: &str = "ext4box-test";

/// The test user's uid and gid, or `None` (then the test says so; under CI it fails).
pub fn test_user() -> Option<(u32, u32)> {
    let out = std::process::Command::new("id").arg(TEST_USER).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let num = |key: &str| text.split(key).nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok();
    match (out.status.success(), num("uid="), num("gid=")) {
        (true, Some(u), Some(g)) => Some((u, g)),
        _ => {
            assert!(!is_ci(), "user {TEST_USER} is missing: scripts/setup.sh makes it");
            eprintln!("user {TEST_USER} is missing (scripts/setup.sh makes it): skipped");
            None
        }
    }
}

/// A copy of the ext4box binary in `dir` (made once), for running as another user: the checkout may sit
/// where other users cannot enter (a root user's home is 0700). `dir` itself must be enterable.
pub fn bin_in(dir: &Path) -> PathBuf {
    let bin = dir.join("ext4box");
    if !bin.exists() {
        std::fs::copy(env!("CARGO_BIN_EXE_ext4box"), &bin).unwrap();
        std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    bin
}

/// Runs `script` (bash) as the test user, in a private mount namespace whose /dev/fuse is 0666. `$B` is
/// a copy of the ext4box binary in the scratch directory ([`bin_in`]). The namespace starts as a copy of
/// every mount of the moment, other tests' FUSE mounts too, and keeps them alive until it ends: hold the
/// machine alone ([`require_root_and_fuse_alone`]).
pub fn as_user(scratch: &Scratch, script: &str, wrap: &str) -> std::process::Output {
    let bin = bin_in(&scratch.path(""));
    let file = scratch.path("script.sh");
    std::fs::write(&file, format!("set -u\nB={}\ncd {}\n{script}\n", bin.display(), scratch.path("").display()))
        .unwrap();
    let node = scratch.path("fuse-node");
    let outer = format!(
        "rm -f {node} && mknod {node} c 10 229 && chmod 666 {node} && mount --bind {node} /dev/fuse && \
         runuser -u {TEST_USER} -- {wrap} bash {file}",
        node = node.display(),
        file = file.display()
    );
    std::process::Command::new("unshare").args(["-m", "--propagation", "private", "sh", "-c", &outer]).output().unwrap()
}

/// Gives the scratch directory and `paths` in it to the test user.
pub fn hand_to_user(scratch: &Scratch, paths: &[&Path], (uid, gid): (u32, u32)) {
    for p in std::iter::once(scratch.path("").as_path()).chain(paths.iter().copied()) {
        std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
    }
}
