//! The sandbox: the worker that parses the image runs unprivileged and confined (no capabilities,
//! no_new_privs, Landlock, seccomp), attempts a compromised worker would make fail for the reasons
//! claimed, a worker stopped and continued serves on, and a worker that dies (killed, or killed by
//! seccomp) leaves no dead mount behind and is reported. Needs root and /dev/fuse.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_ext4box");

#[test]
fn the_worker_of_a_live_mount_is_confined() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("sb-proc");
    let img = s.path("img");
    mkfs(&img, 32 << 20, &[]);
    let mnt = s.mkdir("mnt");
    let m = ext4box_mount_ok(&img, &mnt, "");
    fs::write(mnt.join("f"), b"served by a confined worker").unwrap();
    let pid = worker_pid(&mnt).expect("no ext4box worker serves the mount");
    for f in ["Uid", "Gid"] {
        let ids = proc_status_field(pid, f);
        assert!(ids.split_whitespace().all(|id| id != "0"), "{f} of the worker: {ids}");
    }
    for f in ["CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh"] {
        assert_eq!(proc_status_field(pid, f), "0000000000000000", "{f} of the worker");
    }
    assert_eq!(proc_status_field(pid, "NoNewPrivs"), "1");
    assert_eq!(proc_status_field(pid, "Seccomp"), "2", "seccomp filter mode");
    // The worker holds nothing but /dev/fuse, the image, its two pipes, /dev/null and, on the
    // io_uring transport, one ring per queue (one queue per possible CPU).
    let mut rings = 0;
    let mut others = Vec::new();
    for fd in fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        let target = fs::read_link(fd.path()).unwrap();
        if target.as_os_str() == "anon_inode:[io_uring]" {
            rings += 1;
        } else {
            others.push(target);
        }
    }
    assert!(others.len() <= 6, "the worker holds {others:?}");
    let uring = std::env::var("EXT4BOX_TRANSPORT").is_ok_and(|t| t == "io_uring");
    let queues = if uring {
        let list = fs::read_to_string("/sys/devices/system/cpu/possible").unwrap();
        ext4box::fuse::uring::possible_cpus(&list).unwrap()
    } else {
        0
    };
    assert_eq!(rings, queues, "io_uring instances held by the worker");
    // Each queue's thread runs on its queue's CPU (the kernel queues a request on its caller's CPU).
    let mut pinned = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let comm = fs::read_to_string(task.path().join("comm")).unwrap();
        if let Some(qid) = comm.trim().strip_prefix("fuse-uring-") {
            let status = fs::read_to_string(task.path().join("status")).unwrap();
            let cpus = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap().trim();
            assert_eq!(cpus, qid, "the CPUs queue {qid}'s thread may run on");
            pinned += 1;
        }
    }
    assert_eq!(pinned, queues, "queue threads");
    assert_eq!(fs::read(mnt.join("f")).unwrap(), b"served by a confined worker");
    m.unmount();
    assert_fsck_clean(&img);
}

/// Runs `ext4box sandbox-probe ATTEMPT PATH` (confined as the worker, or with `--no-sandbox`).
fn probe(attempt: &str, path: &Path, confined: bool) -> std::process::ExitStatus {
    let mut c = Command::new(BIN);
    c.args(["sandbox-probe", attempt]).arg(path).stdout(Stdio::null()).stderr(Stdio::null());
    if !confined {
        c.arg("--no-sandbox");
    }
    c.status().unwrap()
}

#[test]
fn what_a_compromised_worker_would_try_fails_for_the_reason_claimed() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("sb-probe");
    let file = s.path("secret");
    fs::write(&file, b"not for the worker").unwrap();
    let dir = s.mkdir("mnt-target");
    // Control runs without the sandbox: each attempt succeeds (the probe exits 0).
    for attempt in ["open", "socket", "execve", "ptrace", "mount"] {
        let path = if attempt == "mount" { &dir } else { &file };
        let st = probe(attempt, path, false);
        assert!(st.success(), "control run of {attempt} should succeed: {st:?}");
        if attempt == "mount" {
            kernel_umount(&dir);
        }
    }
    // Confined: opening a file is refused by Landlock (EACCES: the probe exits 13)...
    let st = probe("open", &file, true);
    assert_eq!(st.code(), Some(13), "open under the sandbox should fail with EACCES (Landlock): {st:?}");
    // ...and the calls outside the seccomp allow-list kill the process with SIGSYS.
    for attempt in ["socket", "execve", "ptrace", "mount"] {
        let path = if attempt == "mount" { &dir } else { &file };
        let st = probe(attempt, path, true);
        assert_eq!(st.signal(), Some(libc::SIGSYS), "{attempt} under the sandbox should be killed by seccomp: {st:?}");
    }
    assert!(mountinfo_entry(&dir).is_none(), "a confined mount attempt mounted something");
    // Writing to a descriptor it holds is what the worker does all day: allowed.
    assert!(probe("write", &file, true).success());
}

fn wait_gone(mnt: &Path) {
    wait_until("the mount of a dead worker to be detached", Duration::from_secs(10), || mountinfo_entry(mnt).is_none());
}

#[test]
fn a_killed_worker_leaves_no_stale_mount() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("sb-kill");
    let img = s.path("img");
    mkfs(&img, 32 << 20, &[]);
    let mnt = s.mkdir("mnt");
    // Background mount: the supervisor detaches the mount when its worker dies.
    let _m = ext4box_mount_ok(&img, &mnt, "");
    unsafe { libc::kill(worker_pid(&mnt).expect("no ext4box worker serves the mount"), libc::SIGKILL) };
    wait_gone(&mnt);
    // The mount point is usable again.
    let m = ext4box_mount_ok(&img, &mnt, "");
    m.unmount();
    // Foreground: the launcher exits non-zero with one message saying what happened.
    let child = Command::new(BIN)
        .args([OsStr::new("mount"), img.as_os_str(), mnt.as_os_str(), OsStr::new("--foreground")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the foreground mount to come up", Duration::from_secs(10), || mountinfo_entry(&mnt).is_some());
    std::thread::sleep(Duration::from_millis(200));
    unsafe { libc::kill(worker_pid(&mnt).expect("no ext4box worker serves the mount"), libc::SIGKILL) };
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "the launcher should exit non-zero when its worker dies");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("died") && err.contains("SIGKILL"), "launcher's message: {err}");
    wait_gone(&mnt);
    assert_fsck_clean(&img);
}

/// The state letter of every thread of `pid` (`R`, `S`, `T`, ...), from /proc/PID/task/*/stat; none
/// when the process is gone.
fn thread_states(pid: i32) -> Vec<char> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    tasks
        .flatten()
        .filter_map(|t| {
            let stat = fs::read_to_string(t.path().join("stat")).ok()?;
            stat[stat.rfind(')')? + 1..].trim_start().chars().next()
        })
        .collect()
}

/// A stop and a continue (SIGSTOP/SIGCONT, a debugger attaching, a cgroup freezer: podman pause) make
/// the kernel resume a thread's timed wait with restart_syscall; the allow-list must let it, or
/// the worker dies and takes the mount with it.
#[test]
fn a_stopped_and_continued_worker_serves_on() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("sb-stop");
    let img = s.path("img");
    mkfs(&img, 32 << 20, &[]);
    let mnt = s.mkdir("mnt");
    let m = ext4box_mount_ok(&img, &mnt, "");
    fs::write(mnt.join("before"), b"written before the stop").unwrap();
    let pid = worker_pid(&mnt).expect("no ext4box worker serves the mount");
    // The journal-commit thread sleeps 1 s at a time in a timed futex wait.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    wait_until("every thread of the worker to stop", Duration::from_secs(10), || {
        thread_states(pid).iter().all(|&c| c == 'T')
    });
    unsafe { libc::kill(pid, libc::SIGCONT) };
    // (A worker that died has no threads left: the check below says so.)
    wait_until("the worker's threads to run again", Duration::from_secs(10), || {
        thread_states(pid).iter().all(|&c| c != 'T')
    });
    // Past the point where a thread that took the restart would have been killed.
    std::thread::sleep(Duration::from_millis(300));
    assert!(m.alive(), "the worker died after SIGSTOP and SIGCONT (see the kernel log for type=1326)");
    assert_eq!(worker_pid(&mnt), Some(pid), "the worker of the mount");
    fs::write(mnt.join("after"), b"written after the continue").unwrap();
    assert_eq!(fs::read(mnt.join("before")).unwrap(), b"written before the stop");
    m.unmount();
    assert_fsck_clean(&img);
    let km = s.mkdir("km");
    kernel_mount(&img, &km, "ro");
    let read = (fs::read(km.join("before")), fs::read(km.join("after")));
    kernel_umount(&km);
    assert_eq!(read.0.unwrap(), b"written before the stop");
    assert_eq!(read.1.unwrap(), b"written after the continue");
}

#[test]
fn a_forbidden_system_call_kills_the_worker_and_is_reported() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("sb-sigsys");
    let img = s.path("img");
    mkfs(&img, 32 << 20, &[]);
    let mnt = s.mkdir("mnt");
    // A policy without pwrite64: the first write to the image kills the worker.
    let builtin = run_ok(Command::new(BIN).args(["policy", "check"]));
    assert!(builtin.contains("pwrite64"), "policy check should list pwrite64:\n{builtin}");
    let policy_path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("policy/{}.toml", std::env::consts::ARCH));
    let policy = fs::read_to_string(&policy_path).unwrap();
    let crippled: String = policy.lines().filter(|l| !l.contains("\"pwrite64\"")).map(|l| format!("{l}\n")).collect();
    let pfile = s.path("no-pwrite.toml");
    fs::write(&pfile, crippled).unwrap();
    // A read-write mount writes the superblock at once (not clean while mounted): the worker dies there.
    let out = Command::new(BIN)
        .args([OsStr::new("mount"), img.as_os_str(), mnt.as_os_str(), OsStr::new("--foreground")])
        .arg("--seccomp-policy")
        .arg(&pfile)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the mount should fail when its worker is killed");
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    assert!(lines[0].contains("SIGSYS"), "the launcher should name SIGSYS: {lines:?}");
    // The kernel logs seccomp kills; the launcher names the system call from that record (18 is
    // pwrite64 on x86_64).
    if std::env::consts::ARCH == "x86_64" {
        assert!(lines[0].contains("syscall 18"), "the launcher should name the system call: {lines:?}");
    }
    wait_gone(&mnt);
    let _ = Duration::ZERO;
    // The same policy serves a read-only mount, which never writes the image.
    let m = Command::new(BIN)
        .args([OsStr::new("mount"), img.as_os_str(), mnt.as_os_str(), OsStr::new("-o"), OsStr::new("ro")])
        .arg("--seccomp-policy")
        .arg(&pfile)
        .output()
        .unwrap();
    assert!(m.status.success(), "{}", output_text(&m));
    assert!(fs::read_dir(&mnt).is_ok());
    assert!(ext4box_unmount(&mnt).status.success());
}

#[test]
fn a_policy_that_does_not_parse_stops_the_mount() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("sb-badpolicy");
    let img = s.path("img");
    mkfs(&img, 32 << 20, &[]);
    let mnt = s.mkdir("mnt");
    let bad = s.path("bad.toml");
    fs::write(&bad, "[worker\nthis is not toml").unwrap();
    let out = Command::new(BIN)
        .args([OsStr::new("mount"), img.as_os_str(), mnt.as_os_str(), OsStr::new("--seccomp-policy"), bad.as_os_str()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    assert!(lines[0].contains("seccomp policy"), "{lines:?}");
    assert!(mountinfo_entry(&mnt).is_none(), "a bad policy must not leave a mount");
    let check = Command::new(BIN).args([OsStr::new("policy"), OsStr::new("check"), bad.as_os_str()]).output().unwrap();
    assert!(!check.status.success(), "policy check of a broken file must fail");
    // --no-sandbox exists for debugging, and says so loudly.
    let out = Command::new(BIN)
        .args([OsStr::new("mount"), img.as_os_str(), mnt.as_os_str(), OsStr::new("--no-sandbox")])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("WARNING"), "--no-sandbox must warn");
    assert!(ext4box_unmount(&mnt).status.success());
}
