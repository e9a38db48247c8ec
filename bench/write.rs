//! `write`: for ROUNDS rounds, for each phase group, for each system (interleaved: round 1 = tree on
//! kernel, fuse2fs, ext4box, then files on each, ...): a FRESH image (sparse 4 GiB, mkfs.ext4 -b
//! 4096), mounted read-write, the group's phases back to back on that mount, unmount, e2fsck -fn.
//! Prints a markdown table of medians, also written to BENCH_DIR/write-results.md.
//!
//! Groups (phases of a group share one fresh image and mount, in this order):
//!   tree   untar (tar -xf of /usr/include), rm-rf (rm -rf of that tree)
//!   files  create (10,000 empty files in 20 dirs), stat (warm), rename, unlink, deepstat
//!   seq    seqwrite (512 MiB in 1 MiB writes + fsync)
//! The operations themselves are in ops.rs, run as a child process that times them.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::common::{self, Bench, Results, die, log, ratio};
use crate::host;

const IMG_SIZE: u64 = 4 << 30;
const GROUPS: [(&str, &[&str]); 3] = [
    ("tree", &["untar", "rm-rf"]),
    ("files", &["create", "stat", "rename", "unlink", "deepstat"]),
    ("seq", &["seqwrite"]),
];
/// Table order.
const PHASES: [&str; 8] = ["untar", "create", "stat", "rename", "unlink", "deepstat", "rm-rf", "seqwrite"];

struct WriteBench {
    b: Bench,
    res: Results,
    tarball: PathBuf,
    seq_bytes: u64,
    full_sync: bool,
    cpus: String,
    timeout: Duration,
    /// The bench binary, which runs the operations (`op`).
    exe: PathBuf,
    /// One line per failure, with where to look and how to reproduce it.
    problems: Vec<String>,
    compiler_phases: u32,
    timed_phases: u32,
    /// 1-minute load average at the start of every group.
    loads: Vec<f64>,
}

pub fn run() -> bool {
    let b = Bench::init(3, "kernel fuse2fs ext4box");
    let sync = common::env_or("SYNC", "syncfs");
    if sync != "syncfs" && sync != "full" {
        die(&format!("SYNC must be syncfs or full (got '{sync}')"));
    }
    let timeout = Duration::from_secs(common::env_count("PHASE_TIMEOUT", 600));
    // SEQ_MB (default 512) shrinks seqwrite for a quick try.
    let seq_bytes = common::env_count("SEQ_MB", 512) << 20;
    common::need("tar", "apt-get install -y tar");
    common::need("dumpe2fs", "apt-get install -y e2fsprogs");
    let exe = std::env::current_exe().unwrap_or_else(|e| die(&format!("current_exe: {e}")));
    ensure_fusectl(&b);
    let tarball = b.dir.join("usr-include.tar");
    make_tarball(&tarball);
    let res = Results::new(b.dir.join("write-raw.tsv"));
    let mut w = WriteBench {
        b,
        res,
        tarball,
        seq_bytes,
        full_sync: sync == "full",
        cpus: common::env_or("CLIENT_CPUS", ""),
        timeout,
        exe,
        problems: Vec::new(),
        compiler_phases: 0,
        timed_phases: 0,
        loads: Vec::new(),
    };
    for round in 1..=w.b.rounds {
        w.res.round = round;
        for (group, phases) in GROUPS {
            for sys in w.b.round_systems(round) {
                common::check_signal();
                w.run_group(&sys, group, phases);
            }
        }
    }
    let out = w.report(&sync);
    common::tee(&out, &w.b.dir.join("write-results.md"));
    if w.res.any_failed() {
        log("error: some runs failed (FAIL cells above)");
        return false;
    }
    true
}

/// The FUSE control filesystem, through which a hung connection can be aborted.
fn ensure_fusectl(b: &Bench) {
    let conns = Path::new("/sys/fs/fuse/connections");
    if b.systems.iter().all(|s| s == "kernel") || common::is_mounted(conns) {
        return;
    }
    if common::status_ok(Command::new("mount").args(["-t", "fusectl", "fusectl"]).arg(conns).stderr(Stdio::null()))
        .is_err()
    {
        log("warning: cannot mount fusectl on /sys/fs/fuse/connections; a hung FUSE phase may not be recoverable");
    }
}

/// A tar of /usr/include, made once.
fn make_tarball(tarball: &Path) {
    if tarball.is_file() {
        log(&format!("using cached tarball {}", tarball.display()));
        return;
    }
    log(&format!("making {} from /usr/include", tarball.display()));
    let tmp = PathBuf::from(format!("{}.tmp", tarball.display()));
    if let Err(e) = common::status_ok(Command::new("tar").args(["-C", "/usr", "-cf"]).arg(&tmp).arg("include")) {
        die(&e);
    }
    fs::rename(&tmp, tarball).unwrap_or_else(|e| die(&format!("rename {}: {e}", tmp.display())));
}

/// Whether a compiler or linker runs beside the bench. The bench's own ancestors do not count: under
/// `cargo bench`, cargo is the bench's parent and idle.
fn compiler_running() -> bool {
    let Ok(rd) = fs::read_dir("/proc") else { return false };
    let ancestors: Vec<i32> =
        std::iter::successors(ppid(std::process::id().cast_signed()), |&p| ppid(p)).take_while(|&p| p > 0).collect();
    rd.flatten().filter_map(|e| Some((e.file_name().to_str()?.parse::<i32>().ok()?, e.path()))).any(|(pid, dir)| {
        let comm = fs::read_to_string(dir.join("comm")).unwrap_or_default();
        !ancestors.contains(&pid)
            && matches!(comm.trim(), "rustc" | "cargo" | "cc1" | "cc1plus" | "ld" | "ld.lld" | "ld.gold" | "collect2")
    })
}

/// The parent pid of a process, from /proc/PID/stat.
fn ppid(pid: i32) -> Option<i32> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 1..].split_whitespace().nth(1)?.parse().ok()
}

/// A process's descendants, deepest last.
fn descendants(pid: i32) -> Vec<i32> {
    let all: Vec<i32> = fs::read_dir("/proc")
        .map(|rd| rd.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for &c in &all {
            if ppid(c) == Some(p) {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out
}

enum Guarded {
    Done(ExitStatus),
    Hung(Child),
}

impl WriteBench {
    fn phase_arg(&self, phase: &str) -> Option<String> {
        match phase {
            "untar" => Some(self.tarball.display().to_string()),
            "seqwrite" | "seqverify" => Some(self.seq_bytes.to_string()),
            _ => None,
        }
    }

    fn problem(&mut self, text: String) {
        log(&format!("PROBLEM: {text}"));
        self.problems.push(text);
    }

    /// Runs `cmd` (stdout to `out`, stderr to `err`), waiting at most PHASE_TIMEOUT.
    fn run_guarded(&self, cmd: &mut Command, out: &Path, err: &Path) -> Guarded {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(File::create(out).unwrap_or_else(|e| die(&format!("{}: {e}", out.display()))))
            .stderr(File::create(err).unwrap_or_else(|e| die(&format!("{}: {e}", err.display()))))
            .spawn()
            .unwrap_or_else(|e| die(&format!("{cmd:?}: {e}")));
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Guarded::Done(st);
            }
            if start.elapsed() > self.timeout {
                return Guarded::Hung(child);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The operation `phase` as a command (the bench binary's `op`).
    fn op_cmd(&self, phase: &str, mnt: &Path, img: &Path, pinned: bool) -> Command {
        let mut c = Command::new(&self.exe);
        c.arg("op").arg(phase).arg(mnt);
        if let Some(a) = self.phase_arg(phase) {
            c.arg(a);
        }
        c.env("SYNC_IMAGE", if self.full_sync { img.as_os_str() } else { "".as_ref() });
        c.env("BENCH_CPUS", if pinned { self.cpus.as_str() } else { "" });
        c
    }

    /// Shell commands that redo `group` up to `upto` on a fresh image.
    fn repro(&self, sys: &str, group: &[&str], upto: &str) -> String {
        let e = self.b.ext4box_src.display();
        let (mount, unmount) = match sys {
            "kernel" => ("mount -o loop /tmp/x.img /tmp/m".to_string(), "umount /tmp/m".to_string()),
            "fuse2fs" | "fuse4fs" => {
                (format!("({sys} /tmp/x.img /tmp/m -f -o rw &) && sleep 1"), "umount /tmp/m".into())
            }
            "nosandbox" => (format!("{e} mount /tmp/x.img /tmp/m --no-sandbox"), format!("{e} unmount /tmp/m")),
            "uring" => (format!("{e} mount /tmp/x.img /tmp/m -o transport=io_uring"), format!("{e} unmount /tmp/m")),
            _ => (format!("{e} mount /tmp/x.img /tmp/m"), format!("{e} unmount /tmp/m")),
        };
        let extra = if sys == "nojournal" { " -O ^has_journal" } else { "" };
        let mut cmds = format!(
            "truncate -s {IMG_SIZE} /tmp/x.img && mkfs.ext4 -q -F -b 4096{extra} /tmp/x.img && mkdir -p /tmp/m && {mount}"
        );
        for &p in group {
            let sync_env = if self.full_sync { "SYNC_IMAGE=/tmp/x.img " } else { "" };
            let arg = self.phase_arg(p).map_or(String::new(), |a| format!(" {a}"));
            cmds += &format!(" && {sync_env}{} op {p} /tmp/m{arg}", self.exe.display());
            if p == upto {
                break;
            }
        }
        format!("{cmds}; {unmount}; e2fsck -fn /tmp/x.img")
    }

    /// `phase` has run for PHASE_TIMEOUT: saves what the stuck processes and the server are doing,
    /// then kills the stuck command (aborting the FUSE connection if a kill is not enough).
    /// Returns the file the state went to.
    fn handle_hang(&self, sys: &str, phase: &str, mnt: &Path, dev: &str, mut child: Child) -> PathBuf {
        let file = self.b.dir.join(format!("hang-r{}-{sys}-{phase}.txt", self.res.round));
        let pid = child.id() as i32;
        let mut procs = vec![pid];
        procs.extend(descendants(pid));
        let mut t = format!(
            "{phase} on {sys} ({}) still running after {}s, at {}\n\n",
            mnt.display(),
            self.timeout.as_secs(),
            common::now_utc()
        );
        t += "== stuck command and its children\n";
        for p in &procs {
            let ps =
                Command::new("ps").args(["-o", "pid=,stat=,wchan:32=,etime=,args=", "-p", &p.to_string()]).output();
            t += &ps.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
            for l in fs::read_to_string(format!("/proc/{p}/stack")).unwrap_or_default().lines() {
                t += &format!("    {l}\n");
            }
        }
        if let Some(spid) = server_pid(sys, dev).or_else(|| common::foreground_server(mnt)) {
            t += &format!("\n== server pid {spid}, per thread: tid state wchan, kernel stack\n");
            let tasks =
                fs::read_dir(format!("/proc/{spid}/task")).map(|rd| rd.flatten().collect()).unwrap_or(Vec::new());
            for task in tasks {
                let p = task.path();
                let stat = fs::read_to_string(p.join("stat")).unwrap_or_default();
                let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()).unwrap_or("?");
                let wchan = fs::read_to_string(p.join("wchan")).unwrap_or_default();
                t += &format!("{} {state} {wchan}\n", task.file_name().to_string_lossy());
                for l in fs::read_to_string(p.join("stack")).unwrap_or_default().lines() {
                    t += &format!("    {l}\n");
                }
            }
        }
        let conn = Path::new("/sys/fs/fuse/connections").join(dev.split(':').nth(1).unwrap_or("none"));
        if !dev.is_empty() && conn.is_dir() {
            let waiting = fs::read_to_string(conn.join("waiting")).unwrap_or_default();
            t += &format!("\n== FUSE connection {}: {} requests waiting\n", conn.display(), waiting.trim());
        }
        let _ = fs::write(&file, t);
        // A process waiting on a FUSE request the server never answers ignores even SIGKILL; then
        // only aborting the connection frees it.
        for p in &procs {
            unsafe { libc::kill(*p, libc::SIGKILL) };
        }
        if !common::wait_child(&mut child, Duration::from_secs(10)) && conn.is_dir() {
            log(&format!("aborting FUSE connection {} to free the stuck command", conn.display()));
            let _ = fs::write(conn.join("abort"), "1");
            if !common::wait_child(&mut child, Duration::from_secs(10)) {
                log(&format!("warning: pid {pid} still stuck"));
            }
        }
        file
    }

    /// One timed phase and its untimed check: Ok(seconds), Err(hung?) after recording the problem.
    fn run_phase(
        &mut self,
        sys: &str,
        group: &[&str],
        phase: &str,
        mnt: &Path,
        img: &Path,
        dev: &str,
    ) -> Result<f64, bool> {
        let (out, err) = (self.b.dir.join("phase.out"), self.b.dir.join("phase.err"));
        let round = self.res.round;
        let mut compiler = compiler_running();
        self.timed_phases += 1;
        let st = match self.run_guarded(&mut self.op_cmd(phase, mnt, img, true), &out, &err) {
            Guarded::Done(st) => st,
            Guarded::Hung(child) => {
                let file = self.handle_hang(sys, phase, mnt, dev, child);
                let text = format!(
                    "{sys}: {phase} hung (> {}s; round {round}). State of the stuck processes: {}. Repro: {}",
                    self.timeout.as_secs(),
                    file.display(),
                    self.repro(sys, group, phase)
                );
                self.problem(text);
                return Err(true);
            }
        };
        common::check_signal(); // (a Ctrl-C that stopped the phase is not the phase's failure)
        compiler |= compiler_running();
        if compiler {
            self.compiler_phases += 1;
        }
        let t = fs::read_to_string(&out).ok().and_then(|s| s.lines().last()?.trim().parse::<f64>().ok());
        let Some(t) = t.filter(|_| st.success()) else {
            let keep = self.b.dir.join(format!("fail-r{round}-{sys}-{phase}.err"));
            let _ = fs::copy(&err, &keep);
            let text = fs::read_to_string(&err).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(3)..].join(" ");
            let text = format!(
                "{sys}: {phase} failed ({st}; round {round}): {tail} (full stderr: {}). Repro: {}",
                keep.display(),
                self.repro(sys, group, phase)
            );
            self.problem(text);
            return Err(false);
        };
        log(&format!(
            "round {round}/{}  {sys:<8} {phase:<9} {t:9.3} s{}",
            self.b.rounds,
            if compiler { "  (a compiler was running)" } else { "" }
        ));

        // Untimed checks of what was written, read back through the filesystem after dropping
        // caches (so the data comes from the server or the disk, not the page cache).
        let (mut check, what) = match phase {
            "untar" => {
                let mut c = Command::new("tar");
                c.arg("-df").arg(&self.tarball).arg("-C").arg(mnt);
                (c, "tar --compare")
            }
            "seqwrite" => (self.op_cmd("seqverify", mnt, img, false), "read-back check"),
            _ => return Ok(t),
        };
        let shown = format!("{check:?}");
        common::drop_caches();
        match self.run_guarded(&mut check, &out, &err) {
            Guarded::Hung(child) => {
                let file = self.handle_hang(sys, &format!("{phase}-check"), mnt, dev, child);
                let text = format!(
                    "{sys}: the {what} after {phase} hung (> {}s; round {round}). State: {}. Repro: {}, then (before unmounting) {shown}",
                    self.timeout.as_secs(),
                    file.display(),
                    self.repro(sys, group, phase)
                );
                self.problem(text);
                Err(true)
            }
            Guarded::Done(st) if !st.success() => {
                let keep = self.b.dir.join(format!("fail-r{round}-{sys}-{phase}-check.txt"));
                let text = fs::read_to_string(&out).unwrap_or_default() + &fs::read_to_string(&err).unwrap_or_default();
                let _ = fs::write(&keep, &text);
                let head: Vec<&str> = text.lines().take(3).collect();
                let text = format!(
                    "{sys}: {phase} ran, but the {what} found differences (round {round}): {} (full output: {}). Repro: {}; echo 3 >/proc/sys/vm/drop_caches; {shown}",
                    head.join(" "),
                    keep.display(),
                    self.repro(sys, group, phase)
                );
                self.problem(text);
                Err(false)
            }
            Guarded::Done(_) => Ok(t),
        }
    }

    /// Fresh image, mount, the group's phases, unmount, e2fsck; records the samples.
    fn run_group(&mut self, sys: &str, group: &str, phases: &[&str]) {
        let round = self.res.round;
        let mnt = self.b.mnt(sys);
        let img = self.b.dir.join(format!("write-{sys}.img"));
        self.loads.push(common::loadavg().parse().unwrap_or(0.0));
        let _ = fs::remove_file(&img);
        let extra: &[&str] = if sys == "nojournal" { &["-b", "4096", "-O", "^has_journal"] } else { &["-b", "4096"] };
        host::mkfs(&img, IMG_SIZE, extra);
        self.b.mount(sys, &img, &mnt, "rw");
        let mi = host::mountinfo_entry(&mnt);
        let dev = mi.as_ref().map_or(String::new(), |m| format!("{}:{}", m.major, m.minor));
        let opts = mi.map_or(String::new(), |m| m.mount_opts);
        let mut failed = false;
        let mut hung = false;
        if !opts.starts_with("rw") {
            let log_file = self.b.log_file(sys);
            self.problem(format!(
                "{sys}: mounted read-only although rw was asked for (round {round}; mount options: {opts}; see {})",
                log_file.display()
            ));
            failed = true;
        }
        common::drop_caches();
        if group == "tree" {
            // the tarball is read from the page cache
            let _ = std::io::copy(&mut File::open(&self.tarball).unwrap(), &mut std::io::sink());
        }
        let mut times: BTreeMap<&str, f64> = BTreeMap::new();
        for &phase in phases {
            if failed {
                log(&format!(
                    "round {round}/{}  {sys} {phase} skipped (an earlier step of the group failed)",
                    self.b.rounds
                ));
                continue;
            }
            match self.run_phase(sys, phases, phase, &mnt, &img, &dev) {
                Ok(t) => {
                    times.insert(phase, t);
                }
                Err(h) => {
                    failed = true;
                    hung = h;
                }
            }
        }

        if hung {
            self.unmount_after_hang(sys, &mnt, &dev);
        } else if let Some(p) = common::unmount(&mnt) {
            self.problem(format!("{sys}: unmount after the {group} group (round {round}): {p}"));
            failed = true;
        }

        let last = phases[phases.len() - 1];
        let fsck_log = self.b.dir.join(format!("fsck-r{round}-{sys}-{group}.log"));
        let bad = self.b.dir.join(format!("bad-r{round}-{sys}-{group}.img"));
        let fsck = host::run_timeout(Command::new("e2fsck").arg("-fn").arg(&img), Duration::from_secs(600));
        let fsck_text = fsck.as_ref().map_or_else(|e| e.clone(), host::output_text);
        if !fsck.is_ok_and(|o| o.status.success()) {
            let _ = fs::write(&fsck_log, &fsck_text);
            let _ = fs::rename(&img, &bad);
            let mut summary: String = times.iter().map(|(p, t)| format!(", {p} took {t:.6} s")).collect();
            if hung {
                summary += "; expected: the server was killed after a hang";
            }
            let img_s = format!("{}:", img.display());
            let findings: Vec<&str> = fsck_text
                .lines()
                .filter(|l| {
                    !(l.starts_with("e2fsck ")
                        || l.starts_with("Pass ")
                        || l.starts_with(&img_s)
                        || l.starts_with("status:"))
                })
                .filter(|l| !matches!(l.trim(), "stdout:" | "stderr:" | ""))
                .take(4)
                .collect();
            self.problem(format!(
                "{sys}: e2fsck -fn found problems after the {group} group (round {round}{summary}): {} (full output: {}; image kept as {}). Repro: {}",
                findings.join(" "),
                fsck_log.display(),
                bad.display(),
                self.repro(sys, phases, last)
            ));
            failed = true;
        } else {
            let dump = Command::new("dumpe2fs").arg("-h").arg(&img).stderr(Stdio::null()).output();
            let dump = dump.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
            let state = dump
                .lines()
                .find(|l| l.starts_with("Filesystem state:"))
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default();
            if !hung && !state.ends_with(" clean") {
                let _ = fs::rename(&img, &bad);
                self.problem(format!(
                    "{sys}: after the {group} group (round {round}) e2fsck found no errors, but the superblock does not say the filesystem was cleanly unmounted (dumpe2fs -h: '{}'; image kept as {}). Repro: {}; dumpe2fs -h /tmp/x.img | grep state",
                    if state.is_empty() { "no state line" } else { &state },
                    bad.display(),
                    self.repro(sys, phases, last)
                ));
                failed = true;
            } else {
                let _ = fs::remove_file(&img);
            }
        }

        for &phase in phases {
            let t = times.get(phase).copied().filter(|_| !failed);
            self.res.record(sys, phase, t);
        }
    }

    /// Takes down a mount whose server may be stuck.
    fn unmount_after_hang(&mut self, sys: &str, mnt: &Path, dev: &str) {
        if sys == "kernel" {
            let _ = common::unmount(mnt);
            return;
        }
        let spid = server_pid(sys, dev);
        let fuse2fs = common::forget(mnt);
        if let Some(minor) = dev.split(':').nth(1) {
            let _ = fs::write(format!("/sys/fs/fuse/connections/{minor}/abort"), "1");
        }
        let _ = host::run_timeout(Command::new("umount").arg("-l").arg(mnt), Duration::from_secs(20));
        if let Some(mut child) = fuse2fs {
            if !common::wait_child(&mut child, Duration::from_secs(10)) {
                log(&format!("server pid {} still running after the connection was aborted; killing it", child.id()));
                let _ = child.kill();
                let _ = child.wait();
            }
        } else if let Some(pid) = spid {
            let start = Instant::now();
            while host::pid_alive(pid) && start.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(10));
            }
            if host::pid_alive(pid) {
                log(&format!("server pid {pid} still running after the connection was aborted; killing it"));
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }

    fn report(&self, sync: &str) -> String {
        let b = &self.b;
        let mut o = b.header(
            "ext4box write benchmark",
            "a fresh image and mount per system, phase group and round; caches dropped once after mounting, then the group's phases run back to back (warm)",
        );
        o += "- image: sparse 4G file, `mkfs.ext4 -b 4096` (defaults otherwise), new for every group; after every unmount e2fsck -fn must find no errors and the state must be clean\n";
        let sync_text = if sync == "full" {
            "syncfs(2) on the mount, then fsync(2) of the image file"
        } else {
            "syncfs(2) on the mount (`sync -f MNT`)"
        };
        o += &format!(
            "- sync at the end of untar, create, rename, unlink, rm-rf: {sync_text}; seqwrite ends with fsync(2) of the file\n"
        );
        let entries = Command::new("tar")
            .arg("-tf")
            .arg(&self.tarball)
            .output()
            .map_or(0, |out| out.stdout.iter().filter(|&&c| c == b'\n').count());
        let mib = fs::metadata(&self.tarball).map_or(0, |m| m.len().div_ceil(1 << 20));
        o += &format!(
            "- tarball: {} ({entries} entries, {mib} MiB), read from the page cache\n",
            self.tarball.display()
        );
        if self.seq_bytes != 512 << 20 {
            o += &format!("- seqwrite: {} MiB (SEQ_MB)\n", self.seq_bytes >> 20);
        }
        o += "\n";
        let rows: Vec<(&str, Option<u64>)> =
            PHASES.iter().map(|&p| (p, (p == "seqwrite").then_some(self.seq_bytes))).collect();
        o += &self.res.table(b, &rows);
        o += &format!("\n{}\n", self.res.legend(b));
        o += "FAIL: the phase failed, hung, or was skipped after an earlier failure in its group, or e2fsck found the image unclean afterwards.\n\n";
        let mut loads = self.loads.clone();
        loads.sort_by(f64::total_cmp);
        if !loads.is_empty() {
            o += &format!(
                "Machine load: 1-minute load average at the start of each group: min {:.2}, median {:.2}, max {:.2} ({} CPUs).\n",
                loads[0],
                loads[loads.len().div_ceil(2) - 1],
                loads[loads.len() - 1],
                common::nproc()
            );
        }
        if self.compiler_phases > 0 {
            o += &format!(
                "A compiler (cargo/rustc/cc/ld) was running during {} of {} timed phases; those timings may be inflated.\n",
                self.compiler_phases, self.timed_phases
            );
        }
        o += "\n";
        if self.problems.is_empty() {
            o += "No problems: every phase ran, every check passed, every image was clean (e2fsck -fn).\n";
        } else {
            o += "Problems:\n\n";
            for p in &self.problems {
                o += &format!("- {p}\n");
            }
        }
        o += &self.targets();
        o += &self.res.sandbox_report(b, &PHASES);
        o += &format!("\nRaw samples: {}\n", self.res.raw_path.display());
        o
    }

    /// ext4box against the write targets (see README).
    fn targets(&self) -> String {
        let (b, res) = (&self.b, &self.res);
        if !(b.has("ext4box") && (b.has("kernel") || b.has("fuse2fs"))) {
            return String::new();
        }
        let pass = |ok: bool| if ok { "PASS" } else { "FAIL" };
        let q = |a: f64, b: f64| format!("{:.2}", a / b).parse::<f64>().unwrap_or(f64::NAN);
        let mut r = String::from("\nTargets (ext4box):\n\n");
        for phase in PHASES {
            let (k, f, e) =
                (res.median_of("kernel", phase), res.median_of("fuse2fs", phase), res.median_of("ext4box", phase));
            let Some(ev) = e else {
                r += &format!("- {phase}: FAIL (ext4box failed)\n");
                continue;
            };
            if phase == "seqwrite" {
                match k {
                    None => r += &format!("- {phase}: >= 80% of kernel throughput: – (no kernel result)\n"),
                    Some(kv) => {
                        r += &format!(
                            "- {phase}: >= 80% of kernel throughput: {} ({:.0}%)\n",
                            pass(q(kv, ev) >= 0.8),
                            100.0 * kv / ev
                        )
                    }
                }
                continue;
            }
            match f {
                Some(fv) => {
                    r += &format!(
                        "- {phase}: >= 5x faster than fuse2fs: {} ({}x)\n",
                        pass(q(fv, ev) >= 5.0),
                        ratio(f, e)
                    )
                }
                None => r += &format!("- {phase}: >= 5x faster than fuse2fs: – (no fuse2fs result)\n"),
            }
            match k {
                Some(kv) => {
                    r += &format!(
                        "- {phase}: within 2x of kernel: {} ({}x kernel time)\n",
                        pass(q(ev, kv) <= 2.0),
                        ratio(e, k)
                    )
                }
                None => r += &format!("- {phase}: within 2x of kernel: – (no kernel result)\n"),
            }
        }
        r
    }
}

/// The pid of the ext4box server behind a FUSE connection (`major:minor`), as it records it in
/// /run/ext4box (root's registry).
fn server_pid(sys: &str, dev: &str) -> Option<i32> {
    if !common::uses_ext4box_binary(sys) || dev.is_empty() {
        return None;
    }
    // (the file holds the pid, then the owner's uid)
    fs::read_to_string(format!("/run/ext4box/{dev}")).ok()?.lines().next()?.trim().parse().ok()
}
