//! What every phase shares: settings from the environment, logging, the systems and their mounts,
//! caches, samples and the markdown tables. The generic helpers (commands with time bounds, mkfs,
//! kernel mounts, /proc's mount table) are the tests' own, in `tests/shared/host.rs`.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::host;

/// Every system, in the order of the tables' columns.
pub const ALL_SYSTEMS: [&str; 7] = ["kernel", "fuse2fs", "fuse4fs", "ext4box", "uring", "nosandbox", "nojournal"];
/// The sandbox should cost less than this (ext4box vs nosandbox), in percent.
pub const SANDBOX_TARGET_PCT: f64 = 3.0;

// ---------------------------------------------------------------- logging

/// `[HH:MM:SS] msg` on stderr (local time, as the shell's `printf %(%H:%M:%S)T`).
pub fn log(msg: &str) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as libc::time_t;
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::localtime_r(&now, &mut tm) };
    eprintln!("[{:02}:{:02}:{:02}] {msg}", tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/// Logs `error: msg`, unmounts what the bench mounted, and exits 1.
pub fn die(msg: &str) -> ! {
    log(&format!("error: {msg}"));
    unmount_all();
    std::process::exit(1)
}

/// `YYYY-MM-DD HH:MM:SS UTC` of a time in seconds since the epoch.
pub fn utc(secs: i64) -> String {
    let t = secs as libc::time_t;
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::gmtime_r(&t, &mut tm) };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

pub fn now_utc() -> String {
    utc(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64))
}

// ---------------------------------------------------------------- signals

static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
}

/// HUP, INT, TERM: remembered, and acted on at the next [`check_signal`] (between steps), so that
/// the mounts are taken down; the commands a phase runs get the terminal's Ctrl-C themselves.
pub fn install_signal_handlers() {
    for sig in [libc::SIGHUP, libc::SIGINT, libc::SIGTERM] {
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// Exits (128 + signal, after unmounting) if a signal came.
pub fn check_signal() {
    let sig = SIGNAL.load(Ordering::SeqCst);
    if sig != 0 {
        log(&format!("interrupted by signal {sig}; cleaning up"));
        unmount_all();
        std::process::exit(128 + sig);
    }
}

// ---------------------------------------------------------------- settings

/// A variable of the environment, or its default.
pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_string())
}

/// A positive integer from the environment, or its default; anything else ends the run.
pub fn env_count(name: &str, default: u64) -> u64 {
    let v = env_or(name, &default.to_string());
    match v.parse::<u64>() {
        Ok(n) if n > 0 => n,
        _ => die(&format!("{name} must be a positive integer (got '{v}')")),
    }
}

/// `command -v NAME`: the first executable NAME on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| {
        let c = CString::new(p.as_os_str().as_bytes()).unwrap_or_default();
        p.is_file() && unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0
    })
}

/// Ends the run unless NAME is on PATH; `hint` says how to get it.
pub fn need(name: &str, hint: &str) {
    if which(name).is_none() {
        die(&format!("{name} not found on PATH ({hint})"));
    }
}

/// The settings every phase reads (BENCH_DIR, EXT4BOX, ROUNDS, SYSTEMS, ORDER, UNMOUNT_TIMEOUT).
pub struct Bench {
    pub dir: PathBuf,
    /// The ext4box binary the mounts run (a copy of `ext4box_src`).
    pub ext4box: PathBuf,
    pub ext4box_src: PathBuf,
    pub rounds: u32,
    /// As given in SYSTEMS (the order of a round).
    pub systems: Vec<String>,
    pub rotate: bool,
    pub unmount_timeout: Duration,
    pub load_at_start: String,
}

pub fn uses_ext4box_binary(sys: &str) -> bool {
    matches!(sys, "ext4box" | "uring" | "nosandbox" | "nojournal")
}

impl Bench {
    /// Reads and checks the settings, clears the servers' logs and stale mounts, copies the binary
    /// under test. `rounds` and `systems` are the phase's defaults for ROUNDS and SYSTEMS.
    pub fn init(rounds: u64, systems: &str) -> Bench {
        Bench::init_with(rounds, env_or("SYSTEMS", systems))
    }

    /// As [`Bench::init`], with SYSTEMS given (not read from the environment).
    pub fn init_with(rounds: u64, systems: String) -> Bench {
        if unsafe { libc::geteuid() } != 0 {
            die("must run as root (loop mounts, drop_caches)");
        }
        let dir = PathBuf::from(env_or("BENCH_DIR", "/var/tmp/ext4box-bench"));
        let rounds = env_count("ROUNDS", rounds) as u32;
        let order = env_or("ORDER", "fixed");
        if order != "fixed" && order != "rotate" {
            die(&format!("ORDER must be fixed or rotate (got '{order}')"));
        }
        let systems: Vec<String> = systems.split_whitespace().map(String::from).collect();
        let unmount_timeout = Duration::from_secs(env_count("UNMOUNT_TIMEOUT", 600));
        // The binary cargo built along with this bench (as for the tests), unless EXT4BOX names another.
        let ext4box_src = PathBuf::from(env_or("EXT4BOX", env!("CARGO_BIN_EXE_ext4box")));
        for s in &systems {
            match s.as_str() {
                "kernel" => {}
                "fuse2fs" => need("fuse2fs", "apt-get install -y fuse2fs, or drop fuse2fs from SYSTEMS"),
                "fuse4fs" => need("fuse4fs", "e2fsprogs 1.47.3 or later has it; or drop fuse4fs from SYSTEMS"),
                "ext4box" | "uring" | "nosandbox" | "nojournal" => {
                    if s == "uring"
                        && fs::read_to_string("/sys/module/fuse/parameters/enable_uring").unwrap_or_default().trim()
                            != "Y"
                    {
                        die(
                            "uring (ext4box on FUSE over io_uring) needs: echo 1 > /sys/module/fuse/parameters/enable_uring",
                        );
                    }
                    if !ext4box_src.is_file() {
                        die(&format!(
                            "ext4box binary not found at {} (set EXT4BOX, or drop {s} from SYSTEMS)",
                            ext4box_src.display()
                        ));
                    }
                }
                _ => die(&format!("unknown system '{s}' in SYSTEMS (known: {})", ALL_SYSTEMS.join(" "))),
            }
        }
        if systems.is_empty() {
            die("SYSTEMS is empty");
        }
        if systems.iter().any(|s| s != "kernel") && !Path::new("/dev/fuse").exists() {
            die("/dev/fuse missing");
        }
        need("mkfs.ext4", "apt-get install -y e2fsprogs");
        need("e2fsck", "apt-get install -y e2fsprogs");
        fs::create_dir_all(&dir).unwrap_or_else(|e| die(&format!("mkdir {}: {e}", dir.display())));
        let _ = DIR.set(dir.clone());
        for s in ["fuse2fs", "fuse4fs", "ext4box", "uring", "nosandbox", "nojournal"] {
            let _ = File::create(dir.join(format!("{s}.log"))); // one run's worth of each server's log
        }
        let load_at_start = loadavg();
        let mut bench = Bench {
            ext4box: ext4box_src.clone(),
            dir,
            ext4box_src,
            rounds,
            systems,
            rotate: order == "rotate",
            unmount_timeout,
            load_at_start,
        };
        bench.clear_stale_mounts();
        bench.snapshot_ext4box();
        bench
    }

    /// A copy of the binary under test, so that every round runs the same build even if cargo
    /// rebuilds it meanwhile (ext4box, uring, nosandbox and nojournal all run this one copy).
    fn snapshot_ext4box(&mut self) {
        if !self.systems.iter().any(|s| uses_ext4box_binary(s)) {
            return;
        }
        let tmp = self.dir.join("ext4box-under-test.tmp");
        let copy = self.dir.join("ext4box-under-test");
        fs::copy(&self.ext4box_src, &tmp)
            .and_then(|_| fs::rename(&tmp, &copy))
            .unwrap_or_else(|e| die(&format!("copy {} to {}: {e}", self.ext4box_src.display(), copy.display())));
        self.ext4box = copy;
        log(&format!("testing a copy of {} (sha256 {})", self.ext4box_src.display(), sha256_12(&self.ext4box)));
    }

    pub fn has(&self, sys: &str) -> bool {
        self.systems.iter().any(|s| s == sys)
    }

    /// The selected systems in table order.
    pub fn selected(&self) -> Vec<&'static str> {
        ALL_SYSTEMS.iter().copied().filter(|s| self.has(s)).collect()
    }

    /// The systems in the order they run in round `round` (1-based). ORDER=rotate: SYSTEMS rotated
    /// left by round-1, so that over the rounds every system runs in every position; this cancels
    /// position effects (e.g. the host's cache warmed by the system that ran just before).
    pub fn round_systems(&self, round: u32) -> Vec<String> {
        let n = self.systems.len();
        let off = if self.rotate { (round as usize - 1) % n } else { 0 };
        (0..n).map(|i| self.systems[(i + off) % n].clone()).collect()
    }

    pub fn mnt(&self, name: &str) -> PathBuf {
        self.dir.join("mnt").join(name)
    }

    pub fn log_file(&self, sys: &str) -> PathBuf {
        self.dir.join(format!("{sys}.log"))
    }

    /// Unmounts leftovers under BENCH_DIR/mnt from a run killed too hard to clean up.
    fn clear_stale_mounts(&self) {
        clear_stale_mounts(&self.dir.join("mnt"));
    }

    /// Lines describing the run, for the results file. `method` says how phases start.
    pub fn header(&self, title: &str, method: &str) -> String {
        let mut h = format!("# {title}\n\n- date: {}\n", now_utc());
        let uname = host::run_ok(Command::new("uname").arg("-srm"));
        let mem_kib: f64 = fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        let cpus = nproc();
        h += &format!("- host: {}, {cpus} CPUs, {:.1} GiB RAM\n", uname.trim(), mem_kib / 1048576.0);
        h += &format!("- systems: {}; rounds: {} (medians shown); {method}\n", self.systems.join(" "), self.rounds);
        if self.rotate {
            h += "- order: rotated (round r starts with the r-th system of SYSTEMS)\n";
        }
        let pinned = env_or("CLIENT_CPUS", "");
        if !pinned.is_empty() {
            h += &format!("- timed commands pinned to CPU(s) {pinned}, on every system\n");
        }
        h += &format!("- 1-minute load average at the start: {} ({cpus} CPUs)\n", self.load_at_start);
        for s in ["fuse2fs", "fuse4fs"] {
            if self.has(s) {
                let v = Command::new("dpkg-query")
                    .args(["-W", "-f", "${Version}", "fuse2fs"])
                    .output()
                    .ok()
                    .filter(|o| o.status.success())
                    .map_or("?".to_string(), |o| String::from_utf8_lossy(&o.stdout).into_owned());
                h += &format!("- {s}: {v}\n");
            }
        }
        if self.systems.iter().any(|s| uses_ext4box_binary(s)) {
            // The cargo-built binary comes from this checkout; another one (EXT4BOX) from its directory's.
            let cargo_built = self.ext4box_src == Path::new(env!("CARGO_BIN_EXE_ext4box"));
            let tree = if cargo_built {
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            } else {
                self.ext4box_src.parent().unwrap_or(Path::new(".")).to_path_buf()
            };
            let git = |args: &[&str]| {
                Command::new("git")
                    .arg("-C")
                    .arg(&tree)
                    .args(args)
                    .output()
                    .ok()
                    .filter(|o| o.status.success())
                    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            };
            let rev = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "?".into());
            let dirty = match git(&["status", "--porcelain", "-uno"]) {
                Some(s) if !s.is_empty() => ", uncommitted changes in the work tree",
                _ => "",
            };
            let built = fs::metadata(&self.ext4box_src)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or("?".to_string(), |d| utc(d.as_secs() as i64));
            h += &format!(
                "- ext4box: {} (git {rev}{dirty}; binary built {built}, sha256 {})\n",
                self.ext4box_src.display(),
                sha256_12(&self.ext4box)
            );
            if self.has("nosandbox") {
                h += "- nosandbox: the same binary, mounted with --no-sandbox (worker not confined)\n";
            }
            if self.has("nojournal") {
                h += "- nojournal: the same binary on an image made with -O ^has_journal (no journal: writes go home directly)\n";
            }
        }
        h
    }
}

pub fn nproc() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The 1-minute load average.
pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').next().unwrap_or("?").to_string()
}

/// The first 12 hex digits of a file's SHA-256.
pub fn sha256_12(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    match fs::read(path) {
        Ok(data) => Sha256::digest(&data).iter().take(6).map(|b| format!("{b:02x}")).collect(),
        Err(_) => "?".into(),
    }
}

// ---------------------------------------------------------------- caches, commands

/// Flush dirty data, then drop page cache, dentries and inodes.
pub fn drop_caches() {
    unsafe { libc::sync() };
    if let Err(e) = fs::write("/proc/sys/vm/drop_caches", "3") {
        die(&format!("drop_caches: {e}"));
    }
}

/// `cmd`'s status as an `Ok`, or a description of how it failed.
pub fn status_ok(cmd: &mut Command) -> Result<(), String> {
    match cmd.status() {
        Ok(st) if st.success() => Ok(()),
        Ok(st) => Err(format!("{cmd:?}: {st}")),
        Err(e) => Err(format!("{cmd:?}: {e}")),
    }
}

/// Opens `path` for appending (the servers' logs).
pub fn append(path: &Path) -> File {
    OpenOptions::new().create(true).append(true).open(path).unwrap_or_else(|e| die(&format!("{}: {e}", path.display())))
}

/// True while `mnt` is a mount point (from /proc/self/mountinfo: does not touch `mnt`, which may hang).
pub fn is_mounted(mnt: &Path) -> bool {
    host::mountinfo_entry(mnt).is_some()
}

/// `umount MNT`, and `umount -l MNT` if that fails.
pub fn umount_or_lazy(mnt: &Path) {
    let out = host::run_timeout(Command::new("umount").arg(mnt), Duration::from_secs(120));
    if !out.is_ok_and(|o| o.status.success()) {
        let _ = host::run_timeout(Command::new("umount").arg("-l").arg(mnt), Duration::from_secs(20));
    }
}

pub fn clear_stale_mounts(dir: &Path) {
    let mut stale = host::mounts_under(dir);
    stale.sort_by_key(|m| std::cmp::Reverse(m.mount_point.as_os_str().len()));
    for m in stale {
        log(&format!("unmounting stale mount {}", m.mount_point.display()));
        umount_or_lazy(&m.mount_point);
    }
}

/// Waits up to `limit` for a child to exit; true if it did.
pub fn wait_child(child: &mut Child, limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------- mounts

struct Mounted {
    sys: String,
    ext4box: PathBuf,
    log: PathBuf,
    timeout: Duration,
    /// fuse2fs/fuse4fs, which run in the foreground, so their exit can be waited for.
    server: Option<Child>,
}

/// Mount point -> how it was mounted: what [`unmount_all`] takes down at the end, on `die`, on a
/// signal and on a panic.
static MOUNTS: Mutex<BTreeMap<PathBuf, Mounted>> = Mutex::new(BTreeMap::new());

fn mounts() -> std::sync::MutexGuard<'static, BTreeMap<PathBuf, Mounted>> {
    MOUNTS.lock().unwrap_or_else(|p| p.into_inner())
}

impl Bench {
    /// Mounts `img` on `mnt` with `sys`, `mode` "ro" or "rw"; returns once the mount is live.
    pub fn mount(&self, sys: &str, img: &Path, mnt: &Path, mode: &str) {
        fs::create_dir_all(mnt).unwrap_or_else(|e| die(&format!("mkdir {}: {e}", mnt.display())));
        if is_mounted(mnt) {
            die(&format!("{} is already a mount point", mnt.display()));
        }
        let log = self.log_file(sys);
        let mut server = None;
        match sys {
            "kernel" => {
                if let Err(e) = status_ok(
                    Command::new("mount").args(["-t", "ext4", "-o", &format!("loop,{mode}")]).arg(img).arg(mnt),
                ) {
                    die(&format!("kernel mount failed: {e}"));
                }
            }
            "fuse2fs" | "fuse4fs" => {
                // -f keeps it in the foreground, so we own its pid and can wait for it to exit
                // after umount. Its default FUSE options are kept.
                let mut child = Command::new(sys)
                    .arg(img)
                    .arg(mnt)
                    .args(["-f", "-o", mode])
                    .stdin(Stdio::null())
                    .stdout(append(&log))
                    .stderr(append(&log))
                    .spawn()
                    .unwrap_or_else(|e| die(&format!("{sys}: {e}")));
                let start = Instant::now();
                while !is_mounted(mnt) {
                    let exited = matches!(child.try_wait(), Ok(Some(_)));
                    if exited || start.elapsed() > Duration::from_secs(10) {
                        let _ = child.kill();
                        let _ = child.wait();
                        die(&format!("{sys} failed to mount {} (see {})", img.display(), log.display()));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                server = Some(child);
            }
            _ => {
                // The CLI returns once the mount is live; the server daemonizes. ext4box is the
                // classic /dev/fuse transport, uring FUSE over io_uring (no fallback); nosandbox
                // the same worker without confinement (its WARNING is expected).
                let transport = if sys == "uring" { "io_uring" } else { "classic" };
                let mut cmd = Command::new(&self.ext4box);
                cmd.arg("mount").arg(img).arg(mnt).args(["-o", &format!("{mode},transport={transport}")]);
                if sys == "nosandbox" {
                    cmd.arg("--no-sandbox");
                }
                let out = host::run_timeout(&mut cmd, self.unmount_timeout);
                if let Ok(o) = &out {
                    let mut f = append(&log);
                    let _ = f.write_all(&o.stdout);
                    let _ = f.write_all(&o.stderr);
                }
                if !out.is_ok_and(|o| o.status.success()) {
                    die(&format!("{sys} mount failed (see {})", log.display()));
                }
                if !is_mounted(mnt) {
                    die(&format!("{sys} mount returned but {} is not mounted", mnt.display()));
                }
            }
        }
        mounts().insert(
            mnt.to_path_buf(),
            Mounted { sys: sys.to_string(), ext4box: self.ext4box.clone(), log, timeout: self.unmount_timeout, server },
        );
    }
}

/// Unmounts `mnt` with the right tool and waits until its server (if any) has exited. Falls back
/// to a lazy unmount if the normal one fails (or, for ext4box, takes longer than UNMOUNT_TIMEOUT);
/// then returns a description of the problem.
pub fn unmount(mnt: &Path) -> Option<String> {
    let m = mounts().remove(mnt)?;
    unmount_entry(mnt, m)
}

fn unmount_entry(mnt: &Path, mut m: Mounted) -> Option<String> {
    match m.sys.as_str() {
        "kernel" => {
            // the loop device auto-detaches on umount
            if is_mounted(mnt) {
                umount_or_lazy(mnt);
            }
            None
        }
        "fuse2fs" | "fuse4fs" => {
            if is_mounted(mnt) {
                umount_or_lazy(mnt);
            }
            let mut child = m.server.take()?;
            if wait_child(&mut child, Duration::from_secs(10)) {
                return None;
            }
            let problem = format!("{} (pid {}) still running 10 s after umount", m.sys, child.id());
            log(&format!("warning: {problem}; killing it"));
            let _ = child.kill();
            let _ = child.wait();
            Some(problem)
        }
        _ => {
            // (bounded: an unmount that never returns is a bug to report, not a reason to hang)
            let out = host::run_timeout(Command::new(&m.ext4box).arg("unmount").arg(mnt), m.timeout);
            if let Ok(o) = &out {
                let mut f = append(&m.log);
                let _ = f.write_all(&o.stdout);
                let _ = f.write_all(&o.stderr);
            }
            if out.is_ok_and(|o| o.status.success()) {
                return None;
            }
            let problem = format!(
                "'ext4box unmount {}' ({}) failed or took more than {}s (see {})",
                mnt.display(),
                m.sys,
                m.timeout.as_secs(),
                m.log.display()
            );
            log(&format!("warning: {problem}; lazy-unmounting"));
            if is_mounted(mnt) {
                let _ = host::run_timeout(Command::new("umount").arg("-l").arg(mnt), Duration::from_secs(20));
            }
            Some(problem)
        }
    }
}

/// The pid of the fuse2fs (or fuse4fs) server the bench started for `mnt`.
pub fn foreground_server(mnt: &Path) -> Option<i32> {
    mounts().get(mnt)?.server.as_ref().map(|c| c.id() as i32)
}

/// Forgets a mount taken down some other way (after a hang); returns its fuse2fs server, if any.
pub fn forget(mnt: &Path) -> Option<Child> {
    mounts().remove(mnt).and_then(|m| m.server)
}

/// BENCH_DIR, once a phase has started (for [`unmount_all`]).
static DIR: OnceLock<PathBuf> = OnceLock::new();

/// Unmounts everything the bench mounted, then anything half-mounted under BENCH_DIR/mnt (a mount
/// that failed), and removes a half-built image (`*.img.tmp`).
pub fn unmount_all() {
    let all = std::mem::take(&mut *mounts());
    for (mnt, m) in all {
        log(&format!("cleanup: unmounting {} ({})", mnt.display(), m.sys));
        if let Some(p) = unmount_entry(&mnt, m) {
            log(&format!("warning: {p}"));
        }
    }
    if let Some(dir) = DIR.get() {
        clear_stale_mounts(&dir.join("mnt"));
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().ends_with(".img.tmp") {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// Unmounts everything when dropped (at the end of `main`, and when a panic unwinds through it).
pub struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        unmount_all();
    }
}

// ---------------------------------------------------------------- results

/// Samples per (system, phase), failed runs counted apart; every sample also goes to a TSV file.
pub struct Results {
    samples: BTreeMap<(String, String), Vec<f64>>,
    fails: BTreeMap<(String, String), u32>,
    raw: File,
    pub raw_path: PathBuf,
    pub round: u32,
}

fn key(sys: &str, phase: &str) -> (String, String) {
    (sys.to_string(), phase.to_string())
}

/// Median (the mean of the two middle values for an even count); None for no values.
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 })
}

/// How a comparison column relates two systems' medians.
#[derive(Clone, Copy)]
enum Relation {
    /// `over / under`.
    Ratio,
    /// `over / under - 1`, as a percentage.
    Cost,
}

/// A column that compares two systems' medians per phase, shown when both ran.
struct Comparison {
    over: &'static str,
    under: &'static str,
    relation: Relation,
    title: &'static str,
    legend: &'static str,
}

/// The comparison columns, in the order the tables show them.
const COMPARISONS: [Comparison; 6] = [
    Comparison {
        over: "fuse2fs",
        under: "ext4box",
        relation: Relation::Ratio,
        title: "fuse2fs/ext4box",
        legend: "fuse2fs/ext4box > 1: ext4box faster than fuse2fs",
    },
    Comparison {
        over: "ext4box",
        under: "kernel",
        relation: Relation::Ratio,
        title: "ext4box/kernel",
        legend: "ext4box/kernel > 1: ext4box slower than kernel",
    },
    Comparison {
        over: "uring",
        under: "kernel",
        relation: Relation::Ratio,
        title: "uring/kernel",
        legend: "uring/kernel > 1: ext4box on io_uring slower than kernel",
    },
    Comparison {
        over: "ext4box",
        under: "uring",
        relation: Relation::Ratio,
        title: "classic/uring",
        legend: "classic/uring > 1: io_uring faster than classic /dev/fuse",
    },
    Comparison {
        over: "ext4box",
        under: "nosandbox",
        relation: Relation::Cost,
        title: "sandbox cost",
        legend: "sandbox cost = ext4box/nosandbox - 1, from the medians (positive: the sandbox is slower)",
    },
    Comparison {
        over: "ext4box",
        under: "nojournal",
        relation: Relation::Cost,
        title: "journal cost",
        legend: "journal cost = ext4box/nojournal - 1 (ext4box on an image without a journal), from the medians",
    },
];

/// a/b to 2 decimals, "–" if either is missing or b is zero.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => format!("{:.2}", a / b),
        _ => "–".into(),
    }
}

/// a/b - 1 as a signed percentage to 1 decimal ("+2.5%"), "–" if either is missing or b is zero.
pub fn cost(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => format!("{:+.1}%", 100.0 * (a / b - 1.0)),
        _ => "–".into(),
    }
}

impl Results {
    /// Starts `path` (a TSV of every sample: round, system, phase, seconds|FAIL).
    pub fn new(path: PathBuf) -> Results {
        let mut raw = File::create(&path).unwrap_or_else(|e| die(&format!("{}: {e}", path.display())));
        let _ = writeln!(raw, "round\tsystem\tphase\tseconds");
        Results { samples: BTreeMap::new(), fails: BTreeMap::new(), raw, raw_path: path, round: 0 }
    }

    /// A sample in seconds, or None for a failed run.
    pub fn record(&mut self, sys: &str, phase: &str, secs: Option<f64>) {
        let cell = match secs {
            Some(t) => {
                self.samples.entry(key(sys, phase)).or_default().push(t);
                format!("{t:.6}")
            }
            None => {
                *self.fails.entry(key(sys, phase)).or_default() += 1;
                "FAIL".into()
            }
        };
        let _ = writeln!(self.raw, "{}\t{sys}\t{phase}\t{cell}", self.round);
    }

    pub fn any_failed(&self) -> bool {
        !self.fails.is_empty()
    }

    pub fn samples(&self, sys: &str, phase: &str) -> &[f64] {
        self.samples.get(&key(sys, phase)).map_or(&[], |v| v.as_slice())
    }

    /// The median of the samples, or None if there are none or a run failed.
    pub fn median_of(&self, sys: &str, phase: &str) -> Option<f64> {
        if self.fails.contains_key(&key(sys, phase)) {
            return None;
        }
        median(self.samples(sys, phase))
    }

    /// "1.234" or, with bytes, "1.234 (870 MB/s)"; "FAIL" if a run failed, "–" if not run.
    fn cell(&self, sys: &str, phase: &str, bytes: Option<u64>) -> String {
        if self.fails.contains_key(&key(sys, phase)) {
            return "FAIL".into();
        }
        match (self.median_of(sys, phase), bytes) {
            (None, _) => "–".into(),
            (Some(m), Some(b)) => format!("{m:.3} ({:.0} MB/s)", b as f64 / 1e6 / m),
            (Some(m), None) => format!("{m:.3}"),
        }
    }

    /// The comparison columns whose two systems both ran, in [`COMPARISONS`]' order.
    fn ratio_columns(&self, b: &Bench) -> Vec<&'static Comparison> {
        COMPARISONS.iter().filter(|c| b.has(c.over) && b.has(c.under)).collect()
    }

    /// A comparison column's cell for `phase`.
    fn compare(&self, c: &Comparison, phase: &str) -> String {
        let (over, under) = (self.median_of(c.over, phase), self.median_of(c.under, phase));
        match c.relation {
            Relation::Ratio => ratio(over, under),
            Relation::Cost => cost(over, under),
        }
    }

    /// Markdown table of medians over all rounds: one row per phase (a byte count adds
    /// throughput, MB = 10^6 bytes), one column per selected system, then the ratio columns
    /// whose two systems both ran.
    pub fn table(&self, b: &Bench, phases: &[(&str, Option<u64>)]) -> String {
        let systems = b.selected();
        let cols = self.ratio_columns(b);
        let mut row = String::from("| phase |");
        let mut sep = String::from("|---|");
        for s in &systems {
            row += &format!(" {s} (s) |");
            sep += "---:|";
        }
        for c in &cols {
            row += &format!(" {} |", c.title);
            sep += "---:|";
        }
        let mut t = format!("{row}\n{sep}\n");
        for &(phase, bytes) in phases {
            let mut row = format!("| {phase} |");
            for s in &systems {
                row += &format!(" {} |", self.cell(s, phase, bytes));
            }
            for c in &cols {
                row += &format!(" {} |", self.compare(c, phase));
            }
            t += &row;
            t.push('\n');
        }
        t
    }

    /// One line explaining the ratio columns the table shows.
    pub fn legend(&self, b: &Bench) -> String {
        let parts: Vec<&str> = self.ratio_columns(b).iter().map(|c| c.legend).collect();
        if parts.is_empty() { "MB = 10^6 bytes.".into() } else { format!("{}. MB = 10^6 bytes.", parts.join("; ")) }
    }

    /// The sandbox's cost per phase against the target, from the medians, and the per-round
    /// costs (ext4box and nosandbox run back to back within a round, so the per-round pairs show
    /// how much of the difference is noise). Empty unless both ran.
    pub fn sandbox_report(&self, b: &Bench, phases: &[&str]) -> String {
        if !(b.has("ext4box") && b.has("nosandbox")) {
            return String::new();
        }
        let mut r = format!("\nSandbox cost (ext4box vs nosandbox; target < {SANDBOX_TARGET_PCT:.0}% per phase):\n\n");
        for &phase in phases {
            let (e, n) = (self.median_of("ext4box", phase), self.median_of("nosandbox", phase));
            let (Some(ev), Some(nv)) = (e, n) else {
                r += &format!("- {phase}: – (a run failed)\n");
                continue;
            };
            let v = if nv > 0.0 && 100.0 * (ev / nv - 1.0) < SANDBOX_TARGET_PCT { "PASS" } else { "FAIL" };
            let (es, ns) = (self.samples("ext4box", phase), self.samples("nosandbox", phase));
            let mut spread = String::new();
            if es.len() == ns.len() && es.len() >= 2 {
                let c: Vec<f64> =
                    es.iter().zip(ns).map(|(e, n)| if *n > 0.0 { 100.0 * (e / n - 1.0) } else { 0.0 }).collect();
                let lo = c.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = c.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let list: Vec<String> = c.iter().map(|x| format!("{x:+.1}%")).collect();
                spread = format!("; per round: {} (range {lo:+.1}% .. {hi:+.1}%)", list.join(", "));
            }
            r += &format!("- {phase}: {}: {v}{spread}\n", cost(e, n));
        }
        r
    }
}

/// Prints `text` on stdout and writes it to `path` (as `| tee FILE`).
pub fn tee(text: &str, path: &Path) {
    print!("{text}");
    let _ = std::io::stdout().flush();
    if let Err(e) = fs::write(path, text) {
        die(&format!("{}: {e}", path.display()));
    }
    log(&format!("results written to {}", path.display()));
}
