//! Helpers shared by the integration tests (`tests/integration/common.rs` re-exports them) and the
//! benchmark (`bench/main.rs` includes this file too): commands with time bounds, scratch
//! directories, mounts and server processes as /proc shows them, images, and kernel and ext4box
//! mounts.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_ext4box");

/// Default time bound for one ext4box command (mount, unmount).
pub const CMD_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Commands with time bounds
// ---------------------------------------------------------------------------

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn unique_suffix() -> String {
    format!("{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst))
}

/// Runs a command with stdout/stderr sent to files (not pipes: a daemon that
/// inherits a pipe would keep us waiting for EOF), waiting at most `limit`.
/// On timeout the child (which we started) is killed and Err is returned.
pub fn run_timeout(cmd: &mut Command, limit: Duration) -> Result<Output, String> {
    let base = std::env::temp_dir().join(format!("ext4box-cmd-{}", unique_suffix()));
    let out_path = base.with_extension("out");
    let err_path = base.with_extension("err");
    let out_f = File::create(&out_path).map_err(|e| format!("create {out_path:?}: {e}"))?;
    let err_f = File::create(&err_path).map_err(|e| format!("create {err_path:?}: {e}"))?;
    let desc = format!("{cmd:?}");
    let mut child =
        cmd.stdin(Stdio::null()).stdout(out_f).stderr(err_f).spawn().map_err(|e| format!("spawn {desc}: {e}"))?;
    let start = Instant::now();
    let status: Option<ExitStatus> = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) => {}
            Err(e) => return Err(format!("wait {desc}: {e}")),
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = fs::read(&out_path).unwrap_or_default();
    let stderr = fs::read(&err_path).unwrap_or_default();
    let _ = fs::remove_file(&out_path);
    let _ = fs::remove_file(&err_path);
    match status {
        Some(status) => Ok(Output { status, stdout, stderr }),
        None => Err(format!(
            "command timed out after {limit:?}: {desc}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        )),
    }
}

/// Runs a command and panics unless it exits 0; returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let desc = format!("{cmd:?}");
    let out = run_timeout(cmd, Duration::from_secs(600)).unwrap_or_else(|e| panic!("{e}"));
    if !out.status.success() {
        panic!(
            "command failed ({}): {desc}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn output_text(out: &Output) -> String {
    format!(
        "status: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// stderr split into lines (a trailing newline does not make an extra line).
pub fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr).lines().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------
// Scratch directories
// ---------------------------------------------------------------------------

/// A per-test directory under the system temp dir. On drop: unmounts whatever
/// is still mounted below it (ext4box unmount, then `umount -l` as a last
/// resort), kills ext4box servers still serving below it, and removes it.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("e4b-{tag}-{}", unique_suffix()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {dir:?}: {e}"));
        Scratch { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Creates (and returns) a subdirectory, e.g. a mount point.
    pub fn mkdir(&self, name: &str) -> PathBuf {
        let p = self.dir.join(name);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {p:?}: {e}"));
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        cleanup_under(&self.dir);
        // A failed test's images are the evidence; keep them when asked.
        if std::thread::panicking() && std::env::var_os("E4B_KEEP_FAILED").is_some() {
            eprintln!("keeping {:?} (E4B_KEEP_FAILED)", self.dir);
            return;
        }
        let left = mounts_under(&self.dir);
        if left.is_empty() {
            let _ = fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("warning: leaving {:?}: still mounted: {left:?}", self.dir);
        }
    }
}

/// Unmounts everything below `dir`, deepest first.
pub fn cleanup_under(dir: &Path) {
    for _round in 0..3 {
        let mut mounts = mounts_under(dir);
        if mounts.is_empty() {
            break;
        }
        mounts.sort_by_key(|m| std::cmp::Reverse(m.mount_point.as_os_str().len()));
        for m in mounts {
            let mp = &m.mount_point;
            if m.fstype.starts_with("fuse") {
                let _ = run_timeout(Command::new(BIN).arg("unmount").arg(mp), Duration::from_secs(20));
                if mountinfo_entry(mp).is_some() {
                    for pid in server_pids(mp) {
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                    let _ = run_timeout(Command::new("umount").arg("-l").arg(mp), Duration::from_secs(20));
                }
            } else {
                let _ = run_timeout(Command::new("umount").arg(mp), Duration::from_secs(60));
                if mountinfo_entry(mp).is_some() {
                    let _ = run_timeout(Command::new("umount").arg("-l").arg(mp), Duration::from_secs(20));
                }
            }
        }
    }
    // Servers that lost their mount but did not exit.
    for pid in pids_with_arg_under(dir) {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

// ---------------------------------------------------------------------------
// /proc: mounts and server processes
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct MountInfo {
    pub mount_point: PathBuf,
    pub major: u32,
    pub minor: u32,
    pub mount_opts: String,
    pub fstype: String,
    pub source: String,
    pub super_opts: String,
}

fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct.iter().fold(0u32, |acc, &c| acc * 8 + (c - b'0') as u32);
                out.push(v as u8);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

pub fn mountinfo() -> Vec<MountInfo> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(sep) = f.iter().position(|x| *x == "-") else {
            continue;
        };
        if f.len() < 6 || sep + 3 > f.len() {
            continue;
        }
        let (maj, min) = f[2].split_once(':').unwrap_or(("0", "0"));
        v.push(MountInfo {
            mount_point: PathBuf::from(OsString::from_vec(unescape_mountinfo(f[4]))),
            major: maj.parse().unwrap_or(0),
            minor: min.parse().unwrap_or(0),
            mount_opts: f[5].to_string(),
            fstype: f[sep + 1].to_string(),
            source: String::from_utf8_lossy(&unescape_mountinfo(f[sep + 2])).into_owned(),
            super_opts: f.get(sep + 3).unwrap_or(&"").to_string(),
        });
    }
    v
}

/// The (last) mount at exactly this mount point, if any.
pub fn mountinfo_entry(mnt: &Path) -> Option<MountInfo> {
    mountinfo().into_iter().rev().find(|m| m.mount_point == mnt)
}

pub fn mounts_under(dir: &Path) -> Vec<MountInfo> {
    mountinfo().into_iter().filter(|m| m.mount_point.starts_with(dir)).collect()
}

fn bin_canonical() -> PathBuf {
    fs::canonicalize(BIN).unwrap_or_else(|_| PathBuf::from(BIN))
}

fn proc_cmdline(pid: i32) -> Vec<Vec<u8>> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| s.to_vec())
        .collect()
}

fn proc_is_ext4box(pid: i32) -> bool {
    let bin = bin_canonical();
    match fs::read_link(format!("/proc/{pid}/exe")) {
        Ok(exe) => {
            let e = exe.as_os_str().as_bytes();
            let b = bin.as_os_str().as_bytes();
            e == b || (e.starts_with(b) && e[b.len()..].starts_with(b" (deleted)"))
        }
        Err(_) => false,
    }
}

fn all_pids() -> Vec<i32> {
    let mut v = Vec::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
                v.push(pid);
            }
        }
    }
    v
}

/// Live (non-zombie) ext4box processes whose command line names `mnt`.
pub fn server_pids(mnt: &Path) -> Vec<i32> {
    let want = mnt.as_os_str().as_bytes();
    all_pids()
        .into_iter()
        .filter(|&pid| pid_alive(pid) && proc_is_ext4box(pid))
        .filter(|&pid| proc_cmdline(pid).iter().any(|a| a.as_slice() == want))
        .collect()
}

/// The worker (the process whose first argument is `worker`) serving `mnt`, if one lives.
pub fn worker_pid(mnt: &Path) -> Option<i32> {
    server_pids(mnt).into_iter().find(|&pid| proc_cmdline(pid).get(1).is_some_and(|a| a.as_slice() == b"worker"))
}

/// Field `name` (without its colon) of a `/proc/PID/status` text, trimmed; empty when absent.
pub fn status_field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

/// Field `name` of process `pid`'s `/proc/PID/status`.
pub fn proc_status_field(pid: i32, name: &str) -> String {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    let v = status_field(&s, name);
    assert!(!v.is_empty(), "no {name} in /proc/{pid}/status");
    v
}

fn pids_with_arg_under(dir: &Path) -> Vec<i32> {
    let d = dir.as_os_str().as_bytes();
    all_pids()
        .into_iter()
        .filter(|&pid| pid_alive(pid) && proc_is_ext4box(pid))
        .filter(|&pid| proc_cmdline(pid).iter().any(|a| a.starts_with(d)))
        .collect()
}

/// True if the process exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            // "pid (comm) S ..." — comm may contain spaces or parens.
            match s.rfind(')') {
                Some(i) => !matches!(s[i + 1..].trim_start().chars().next(), Some('Z') | Some('X')),
                None => false,
            }
        }
        Err(_) => false,
    }
}

/// Peak resident set size of a process, in KiB (VmHWM).
pub fn peak_rss_kib(pid: i32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    for l in s.lines() {
        if let Some(v) = l.strip_prefix("VmHWM:") {
            return v.trim().trim_end_matches("kB").trim().parse().ok();
        }
    }
    None
}

/// Emergency stop of a FUSE mount whose server hangs: kill its server
/// process(es) (which this test started), abort the connection if fusectl is
/// available, and detach the mount lazily.
pub fn force_kill_mount(mnt: &Path) {
    for pid in server_pids(mnt) {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    if let Some(m) = mountinfo_entry(mnt) {
        let dev = (m.major << 20) | m.minor; // fusectl names connections by dev number
        let abort = format!("/sys/fs/fuse/connections/{}/abort", dev);
        let _ = fs::write(&abort, b"1");
        let _ = fs::write(format!("/sys/fs/fuse/connections/{}/abort", m.minor), b"1");
    }
    let _ = run_timeout(Command::new("umount").arg("-l").arg(mnt), Duration::from_secs(20));
}

// ---------------------------------------------------------------------------
// Images and kernel mounts
// ---------------------------------------------------------------------------

/// Creates a sparse image file of `size` bytes and runs `mke2fs -F -q ARGS
/// IMG`. Without a `-t` in `args`, `-t ext4` is used.
pub fn mkfs(path: &Path, size: u64, args: &[&str]) {
    let f = File::create(path).unwrap_or_else(|e| panic!("create {path:?}: {e}"));
    f.set_len(size).unwrap();
    drop(f);
    let mut cmd = Command::new("mke2fs");
    cmd.arg("-F").arg("-q");
    if !args.contains(&"-t") {
        cmd.args(["-t", "ext4"]);
    }
    cmd.args(args).arg(path);
    run_ok(&mut cmd);
}

/// `mount -o loop,OPTS IMG MNT` (opts may be empty).
pub fn kernel_mount(img: &Path, mnt: &Path, opts: &str) {
    let o = if opts.is_empty() { "loop".to_string() } else { format!("loop,{opts}") };
    run_ok(Command::new("mount").arg("-o").arg(o).arg(img).arg(mnt));
}

/// `umount MNT`, retried for a few seconds: a process that another test
/// thread is spawning can briefly hold a copy of our descriptors.
pub fn kernel_umount(mnt: &Path) {
    let start = Instant::now();
    loop {
        let out =
            run_timeout(Command::new("umount").arg(mnt), Duration::from_secs(120)).unwrap_or_else(|e| panic!("{e}"));
        if out.status.success() {
            return;
        }
        if start.elapsed() > Duration::from_secs(10) {
            panic!("umount {mnt:?} failed:\n{}", output_text(&out));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------
// ext4box
// ---------------------------------------------------------------------------

pub fn ext4box(args: &[&OsStr], limit: Duration) -> Output {
    run_timeout(Command::new(BIN).args(args), limit).unwrap_or_else(|e| panic!("{e}"))
}

/// `ext4box mount IMG MNT [-o OPTS]` (no -o when opts is empty).
pub fn ext4box_mount(img: &Path, mnt: &Path, opts: &str) -> Output {
    let mut args: Vec<&OsStr> = vec![OsStr::new("mount"), img.as_os_str(), mnt.as_os_str()];
    if !opts.is_empty() {
        args.push(OsStr::new("-o"));
        args.push(OsStr::new(opts));
    }
    ext4box(&args, CMD_TIMEOUT)
}

pub fn ext4box_unmount(mnt: &Path) -> Output {
    ext4box(&[OsStr::new("unmount"), mnt.as_os_str()], CMD_TIMEOUT)
}
