//! Options that must be accepted, and what they promise: generic mount(8)
//! options, fsname, --foreground, allow_other / default_permissions, and a
//! mount that really is read-only.

use crate::common::*;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn image_with_files(s: &Scratch) -> PathBuf {
    let img = s.path("image");
    mkfs(&img, 32 << 20, &[]);
    let pm = s.mkdir("populate");
    kernel_mount(&img, &pm, "rw");
    fs::write(pm.join("public"), b"readable by all\n").unwrap();
    fs::write(pm.join("private"), b"root only\n").unwrap();
    fs::set_permissions(pm.join("public"), std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    fs::set_permissions(pm.join("private"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    fs::create_dir(pm.join("dir")).unwrap();
    kernel_umount(&pm);
    img
}

fn mount_opts(mnt: &Path) -> Vec<String> {
    let m = mountinfo_entry(mnt).expect("mounted");
    m.mount_opts.split(',').map(|s| s.to_string()).collect()
}

#[test]
fn generic_options_are_accepted_and_applied() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("opt-generic");
    let img = image_with_files(&s);
    let mnt = s.mkdir("mnt");
    let m = ext4box_mount_ok(&img, &mnt, "ro,defaults,relatime,noatime,nosuid,nodev,noexec,fsname=my-test-image");
    let mi = mountinfo_entry(&mnt).unwrap();
    assert_eq!(mi.source, "my-test-image", "fsname= should name the mount's source: {mi:?}");
    let opts = mount_opts(&mnt);
    for want in ["ro", "nosuid", "nodev", "noexec"] {
        assert!(opts.iter().any(|o| o == want), "requested {want} missing from the mount's options {opts:?}");
    }
    assert_eq!(fs::read(mnt.join("public")).unwrap(), b"readable by all\n");
    m.unmount();

    // Plain mount: read-write is the default, and nosuid,nodev are applied unless asked otherwise.
    let m = ext4box_mount_ok(&img, &mnt, "");
    let opts = mount_opts(&mnt);
    assert!(opts.iter().any(|o| o == "rw"), "a default ext4box mount is not read-write in mountinfo: {opts:?}");
    for want in ["nosuid", "nodev"] {
        assert!(opts.iter().any(|o| o == want), "default {want} missing from the mount's options {opts:?}");
    }
    m.unmount();
    assert_fsck_clean(&img);
}

#[test]
fn the_mount_is_read_only() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("opt-readonly");
    let img = image_with_files(&s);
    let before = hash_path(&img);
    let mnt = s.mkdir("mnt");
    let m = ext4box_mount_ok(&img, &mnt, "ro");
    let mnt2 = mnt.clone();
    let errors = with_timeout("write attempts", Duration::from_secs(60), &mnt, move || {
        let mut v: Vec<(&str, Option<i32>)> = Vec::new();
        let e = |r: std::io::Result<()>| r.err().map(|e| errno_of(&e));
        v.push(("create", e(fs::write(mnt2.join("new-file"), b"x"))));
        v.push((
            "open existing for writing",
            e(fs::OpenOptions::new().write(true).open(mnt2.join("public")).map(|_| ())),
        ));
        v.push((
            "truncate",
            e(fs::OpenOptions::new().write(true).truncate(true).open(mnt2.join("public")).map(|_| ())),
        ));
        v.push(("mkdir", e(fs::create_dir(mnt2.join("new-dir")))));
        v.push(("unlink", e(fs::remove_file(mnt2.join("public")))));
        v.push(("rmdir", e(fs::remove_dir(mnt2.join("dir")))));
        v.push(("rename", e(fs::rename(mnt2.join("public"), mnt2.join("renamed")))));
        v.push((
            "chmod",
            e(fs::set_permissions(mnt2.join("public"), std::os::unix::fs::PermissionsExt::from_mode(0o777))),
        ));
        v.push(("symlink", e(std::os::unix::fs::symlink("x", mnt2.join("new-link")))));
        v.push(("setxattr", e(set_xattr(&mnt2.join("public"), "user.x", b"y"))));
        v
    });
    for (op, err) in &errors {
        assert_eq!(*err, Some(libc::EROFS), "{op} on the ext4box mount: expected EROFS, got {err:?}");
    }
    assert_eq!(fs::read(mnt.join("public")).unwrap(), b"readable by all\n");
    m.unmount();
    assert_eq!(hash_path(&img), before, "the image changed under a read-only mount");
}

#[test]
fn foreground_mode_serves_until_unmounted() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("opt-foreground");
    let img = image_with_files(&s);
    let mnt = s.mkdir("mnt");
    let mut child = ext4box_foreground(&img, &mnt, "ro", &s.path("log"))
        .unwrap_or_else(|st| panic!("ext4box mount --foreground exited ({st}) without mounting"));
    assert_eq!(fs::read(mnt.join("public")).unwrap(), b"readable by all\n");
    assert!(child.try_wait().unwrap().is_none(), "--foreground returned while the mount is live");
    let out = ext4box(&[OsStr::new("unmount"), mnt.as_os_str()], CMD_TIMEOUT);
    assert!(out.status.success(), "unmount of a --foreground mount:\n{}", output_text(&out));
    // unmount returns only after the server has exited: the foreground
    // process is the server, so it must be finished (or finish at once).
    let start = Instant::now();
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > Duration::from_secs(2) {
            let _ = child.kill();
            panic!("ext4box mount --foreground still runs 2 s after ext4box unmount returned");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(st.success(), "--foreground server exited with {st} after a clean unmount");
    assert!(mountinfo_entry(&mnt).is_none());
}

/// Runs `cat PATH` as the user nobody; Ok(bytes) or Err(stderr).
fn cat_as_nobody(p: &Path) -> Result<Vec<u8>, String> {
    let out = run_timeout(Command::new("runuser").args(["-u", "nobody", "--", "cat"]).arg(p), Duration::from_secs(30))
        .unwrap();
    if out.status.success() { Ok(out.stdout) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
}

#[test]
fn allow_other_and_default_permissions() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    if Command::new("runuser").arg("--help").output().is_err() {
        panic!("runuser is missing");
    }
    let s = Scratch::new("opt-allow-other");
    let img = image_with_files(&s);
    // The walk from / to the mount point must be open to nobody.
    fs::set_permissions(&s.dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mnt = s.mkdir("mnt");
    fs::set_permissions(&mnt, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let m = ext4box_mount_ok(&img, &mnt, "ro");
    let r = cat_as_nobody(&mnt.join("public"));
    assert!(r.is_err(), "without allow_other another user read the mount: {r:?}");
    m.unmount();

    let m = ext4box_mount_ok(&img, &mnt, "ro,allow_other,default_permissions");
    assert_eq!(
        cat_as_nobody(&mnt.join("public")).as_deref(),
        Ok(&b"readable by all\n"[..]),
        "allow_other: nobody reads a 0644 file"
    );
    let r = cat_as_nobody(&mnt.join("private"));
    assert!(r.is_err(), "default_permissions: nobody read a 0600 root file: {r:?}");
    assert!(r.unwrap_err().contains("Permission denied"), "expected EACCES");
    m.unmount();
}

fn dev_of(mnt: &Path) -> (u32, u32) {
    let m = mountinfo_entry(mnt).expect("mounted");
    (m.major, m.minor)
}

/// Starts `ext4box unmount MNT` and reports whether it is still running
/// after `wait` (it should be, while its server is stopped).
fn unmount_in_background(mnt: &Path) -> std::process::Child {
    Command::new(BIN)
        .arg("unmount")
        .arg(mnt)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn wait_child(c: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            return Some(st);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `ext4box unmount` returns only after the server has exited, also when
/// the mount's device number was used before by another ext4box mount whose
/// server exited meanwhile. (FUSE device numbers are reused at once.) The
/// servers are paused with SIGSTOP to make the interleaving deterministic.
#[test]
fn unmount_waits_for_its_server_after_device_number_reuse() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("opt-devreuse");
    let img_a = image_with_files(&s);
    let img_b = s.path("image-b");
    fs::copy(&img_a, &img_b).unwrap();
    let ma = s.mkdir("a");
    let mb = s.mkdir("b");
    for attempt in 0..5 {
        let a = ext4box_mount_ok(&img_a, &ma, "ro");
        let dev_a = dev_of(&ma);
        // A's server is paused, then its unmount starts: the mount goes away
        // (freeing the device number) while A's server has not exited.
        for &p in &a.pids {
            unsafe { libc::kill(p, libc::SIGSTOP) };
        }
        let mut ua = unmount_in_background(&ma);
        let start = Instant::now();
        while mountinfo_entry(&ma).is_some() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(mountinfo_entry(&ma).is_none(), "unmount did not detach {ma:?}");
        assert!(
            wait_child(&mut ua, Duration::from_millis(300)).is_none(),
            "ext4box unmount returned while its server was stopped"
        );
        // B mounts, likely on the device number A had.
        let b = ext4box_mount_ok(&img_b, &mb, "ro");
        let reused = dev_of(&mb) == dev_a;
        // A's server finishes and exits; A's unmount returns.
        for &p in &a.pids {
            unsafe { libc::kill(p, libc::SIGCONT) };
        }
        let st = wait_child(&mut ua, Duration::from_secs(30)).expect("unmount of A did not return");
        assert!(st.success(), "unmount of A: {st}");
        // Now B: with its server paused, its unmount must not return.
        for &p in &b.pids {
            unsafe { libc::kill(p, libc::SIGSTOP) };
        }
        let mut ub = unmount_in_background(&mb);
        let early = wait_child(&mut ub, Duration::from_secs(1));
        let b_alive: Vec<i32> = b.pids.iter().copied().filter(|&p| pid_alive(p)).collect();
        for &p in &b.pids {
            unsafe { libc::kill(p, libc::SIGCONT) };
        }
        let st = wait_child(&mut ub, Duration::from_secs(30)).expect("unmount of B did not return");
        assert!(st.success(), "unmount of B: {st}");
        if !reused {
            eprintln!("attempt {attempt}: B did not get A's device number {dev_a:?}; retrying");
            assert!(early.is_none(), "ext4box unmount returned while its server (stopped) still ran");
            continue;
        }
        assert!(
            early.is_none(),
            "ext4box unmount of B returned ({:?}) while B's server {b_alive:?} was still running (stopped); \
             B reused device number {dev_a:?} of an earlier ext4box mount",
            early
        );
        return;
    }
    eprintln!("inconclusive: no device number reuse in 5 attempts");
}

/// Runs `cat PATH` as uid:gid (no supplementary groups); Ok(bytes) or Err(stderr).
fn cat_as(uid: u32, gid: u32, p: &Path) -> Result<Vec<u8>, String> {
    let out = run_timeout(
        Command::new("setpriv")
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .arg("--clear-groups")
            .arg("cat")
            .arg(p),
        Duration::from_secs(30),
    )
    .unwrap();
    if out.status.success() { Ok(out.stdout) } else { Err(String::from_utf8_lossy(&out.stderr).trim().to_string()) }
}

fn acl_xattr(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// With allow_other, access decisions follow the file's POSIX ACLs as on a
/// kernel mount: a named user granted read by the ACL reads a 0600 file;
/// a named user denied by the ACL and an unnamed user do not.
#[test]
fn posix_acls_are_enforced_like_the_kernel() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("opt-acl");
    let img = s.path("image");
    mkfs(&img, 32 << 20, &[]);
    let pm = s.mkdir("populate");
    kernel_mount(&img, &pm, "rw");
    let f = pm.join("secret");
    fs::write(&f, b"acl says 2001 may read\n").unwrap();
    fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    // u::rw-, u:2001:r--, u:2002:---, g::---, m::r--, o::---
    set_xattr(
        &f,
        "system.posix_acl_access",
        &acl_xattr(&[
            (0x01, 6, u32::MAX),
            (0x02, 4, 2001),
            (0x02, 0, 2002),
            (0x04, 0, u32::MAX),
            (0x10, 4, u32::MAX),
            (0x20, 0, u32::MAX),
        ]),
    )
    .unwrap();
    let d = pm.join("dir");
    fs::create_dir(&d).unwrap();
    fs::write(d.join("inside"), b"inside\n").unwrap();
    fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    // The directory: only 2001 may search it (through the ACL).
    set_xattr(
        &d,
        "system.posix_acl_access",
        &acl_xattr(&[
            (0x01, 7, u32::MAX),
            (0x02, 5, 2001),
            (0x04, 0, u32::MAX),
            (0x10, 5, u32::MAX),
            (0x20, 0, u32::MAX),
        ]),
    )
    .unwrap();
    kernel_umount(&pm);
    fs::set_permissions(&s.dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let km = s.mkdir("kernel");
    let em = s.mkdir("ext4box");
    fs::set_permissions(&km, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    fs::set_permissions(&em, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    kernel_mount(&img, &km, "ro");
    let m = ext4box_mount_ok(&img, &em, "ro,allow_other");
    let mut bad = Vec::new();
    let mut granted = 0;
    for (uid, gid) in [(2001u32, 2001u32), (2002, 2002), (2003, 2003)] {
        for rel in ["secret", "dir/inside"] {
            let k = cat_as(uid, gid, &km.join(rel));
            let e = cat_as(uid, gid, &em.join(rel));
            granted += k.is_ok() as usize;
            if k.is_ok() != e.is_ok() || k.as_ref().ok() != e.as_ref().ok() {
                bad.push(format!("uid {uid} reading {rel}: kernel {k:?}, ext4box {e:?}"));
            }
        }
    }
    m.unmount();
    kernel_umount(&km);
    assert_eq!(granted, 2, "setup: the kernel should grant exactly uid 2001 its two reads");
    assert!(bad.is_empty(), "access decisions differ from the kernel's:\n{}", bad.join("\n"));
}

/// After the server died (here: killed), `ext4box unmount` still removes
/// the dead mount, and the image can be mounted again.
#[test]
fn unmount_after_the_server_died() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("opt-dead-server");
    let img = image_with_files(&s);
    let mnt = s.mkdir("mnt");
    let m = ext4box_mount_ok(&img, &mnt, "ro");
    for &p in &m.pids {
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    wait_until("the killed server to die", Duration::from_secs(10), || !m.pids.iter().any(|&p| pid_alive(p)));
    let e = fs::metadata(mnt.join("public")).err().and_then(|e| e.raw_os_error());
    // On io_uring the kernel ends a request it was handing to a dead server's ring with ECANCELED
    // (fuse_uring_send_in_task, IO_URING_F_TASK_DEAD).
    let uring = std::env::var("EXT4BOX_TRANSPORT").is_ok_and(|t| t == "io_uring");
    assert!(
        matches!(e, Some(libc::ENOTCONN) | Some(libc::ECONNABORTED)) || (uring && e == Some(libc::ECANCELED)),
        "a mount whose server died should answer ENOTCONN or ECONNABORTED (or ECANCELED on io_uring), got {e:?}"
    );
    let out = ext4box(&[OsStr::new("unmount"), mnt.as_os_str()], CMD_TIMEOUT);
    assert!(out.status.success(), "ext4box unmount of a mount whose server died:\n{}", output_text(&out));
    assert!(mountinfo_entry(&mnt).is_none(), "the dead mount is still listed");
    let again = ext4box_mount_ok(&img, &mnt, "ro");
    assert_eq!(fs::read(mnt.join("public")).unwrap(), b"readable by all\n");
    again.unmount();
}

/// A block device is mounted as `fuseblk.ext4box` (the kernel holds the device exclusively for the
/// mount's life), written through, and a second mount of it is refused with one line.
#[test]
fn block_device_mounts_as_fuseblk() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("opt-blockdev");
    let img = s.path("disk.img");
    mkfs(&img, 32 << 20, &[]);
    let dev = run_ok(Command::new("losetup").args(["-f", "--show"]).arg(&img)).trim().to_string();
    struct Loop(String);
    impl Drop for Loop {
        fn drop(&mut self) {
            let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
        }
    }
    let _loop = Loop(dev.clone());
    let (mnt, mnt2) = (s.mkdir("mnt"), s.mkdir("mnt2"));
    let m = ext4box_mount_ok(Path::new(&dev), &mnt, "");
    assert_eq!(mountinfo_entry(&mnt).unwrap().fstype, "fuseblk.ext4box");
    fs::write(mnt.join("on-a-block-device"), b"yes").unwrap();
    let out = ext4box_mount(Path::new(&dev), &mnt2, "");
    assert!(!out.status.success(), "a second mount of a mounted block device must fail");
    assert_eq!(stderr_lines(&out).len(), 1, "{}", output_text(&out));
    assert!(stderr_lines(&out)[0].contains("busy"), "{}", output_text(&out));
    m.unmount();
    assert_fsck_clean(Path::new(&dev));
}

/// A pipe whose write end crosses exec (the test plays a caller that hands it to ext4box).
fn inheritable_pipe() -> (fs::File, i32) {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), 0) }, 0);
    unsafe { libc::fcntl(fds[0], libc::F_SETFD, libc::FD_CLOEXEC) };
    (unsafe { fs::File::from_raw_fd(fds[0]) }, fds[1])
}

/// Everything written to `r` until its end of file, read on a thread so that a descriptor left open by
/// mistake fails the test instead of hanging it.
fn read_to_eof(mut r: fs::File, limit: Duration) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut r, &mut s);
        let _ = tx.send(s);
    });
    rx.recv_timeout(limit).expect("the notify pipe never reached end of file: someone kept it open")
}

/// `notify_pipe=FD`: the caller's descriptor gets READY=1 once the mount is live and is closed (no
/// process of the mount keeps it); a mount that fails closes it unwritten.
#[test]
fn notify_pipe_says_ready_once_the_mount_is_live() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("opt-notify-pipe");
    let img = image_with_files(&s);
    let mnt = s.mkdir("mnt");
    let (r, w) = inheritable_pipe();
    let child = Command::new(BIN)
        .args([OsStr::new("mount"), img.as_os_str(), mnt.as_os_str(), OsStr::new("-o")])
        .arg(format!("ro,notify_pipe={w}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    unsafe { libc::close(w) };
    let said = read_to_eof(r, CMD_TIMEOUT);
    assert_eq!(said, "READY=1\n");
    assert!(mountinfo_entry(&mnt).is_some(), "READY=1 came before the mount was live");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(fs::read(mnt.join("public")).unwrap(), b"readable by all\n");
    let m = Ext4boxMount::adopt(&mnt);
    m.unmount();

    let (r, w) = inheritable_pipe();
    let out = Command::new(BIN)
        .args([OsStr::new("mount"), s.path("no-such-image").as_os_str(), mnt.as_os_str(), OsStr::new("-o")])
        .arg(format!("ro,notify_pipe={w}"))
        .output()
        .unwrap();
    unsafe { libc::close(w) };
    assert!(!out.status.success());
    assert_eq!(read_to_eof(r, CMD_TIMEOUT), "", "a failed mount must close the pipe unwritten");
    let out = ext4box_mount(Path::new("/proc/self/fd/7"), &mnt, "ro,notify_pipe=7");
    assert!(!out.status.success() && output_text(&out).contains("is the image"), "{}", output_text(&out));
    let out = ext4box_mount(&img, &mnt, "ro,notify_pipe=999");
    assert!(!out.status.success() && output_text(&out).contains("notify_pipe=999"), "{}", output_text(&out));
    assert!(mountinfo_entry(&mnt).is_none());
}

/// Under systemd (`Type=notify`, `ext4box -f`): READY=1 on $NOTIFY_SOCKET once the mount is live.
#[test]
fn systemd_is_notified_when_a_foreground_mount_is_live() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("opt-sd-notify");
    let img = image_with_files(&s);
    let mnt = s.mkdir("mnt");
    let sock = s.path("notify");
    let listener = std::os::unix::net::UnixDatagram::bind(&sock).unwrap();
    listener.set_read_timeout(Some(CMD_TIMEOUT)).unwrap();
    let mut child = Command::new(BIN)
        .args([
            OsStr::new("mount"),
            OsStr::new("-f"),
            img.as_os_str(),
            mnt.as_os_str(),
            OsStr::new("-o"),
            OsStr::new("ro"),
        ])
        .env("NOTIFY_SOCKET", &sock)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = listener.recv(&mut buf).expect("no notification from the foreground mount");
    assert_eq!(&buf[..n], b"READY=1");
    assert!(mountinfo_entry(&mnt).is_some(), "READY=1 came before the mount was live");
    let out = ext4box(&[OsStr::new("unmount"), mnt.as_os_str()], CMD_TIMEOUT);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(child.wait().unwrap().success(), "the foreground mount did not end cleanly");
}

/// `lockfile=` left behind by a killed mount (its pid is gone) is taken over with one line; the file then
/// names the process that will remove it, which lives as long as the mount, and is gone after it.
#[test]
fn a_stale_lockfile_is_taken_over() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("opt-stale-lockfile");
    let img = image_with_files(&s);
    let mnt = s.mkdir("mnt");
    let lock = s.path("lock");
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    fs::write(&lock, format!("{dead}\n")).unwrap();
    let out = ext4box_mount(&img, &mnt, &format!("ro,lockfile={}", lock.display()));
    assert!(out.status.success(), "{}", output_text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.lines().count() == 1 && err.contains("taking it over"), "{err}");
    let m = Ext4boxMount::adopt(&mnt);
    let owner: i32 = fs::read_to_string(&lock).unwrap().trim().parse().unwrap();
    assert!(
        m.pids.contains(&owner) && pid_alive(owner),
        "lock file names {owner}, not a live process of the mount {:?}",
        m.pids
    );
    // A live mount's lock file is not stale: a second mount naming it is refused.
    let mnt2 = s.mkdir("mnt2");
    let out = ext4box_mount(&img, &mnt2, &format!("ro,lockfile={}", lock.display()));
    assert!(!out.status.success() && output_text(&out).contains("in use"), "{}", output_text(&out));
    m.unmount();
    assert!(!lock.exists(), "the lock file outlived the mount");
}

/// A mount point given as `/dev/fd/N`, an open /dev/fuse descriptor the caller has mounted already (as
/// Apptainer and libfuse 3.3+ callers do): ext4box serves it, confined, mounts nothing itself, and ends
/// when the caller unmounts. The test plays the caller: it opens /dev/fuse and mounts with mount(2).
#[test]
fn serves_a_fuse_descriptor_the_caller_mounted() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let s = Scratch::new("opt-given-fd");
    let img = image_with_files(&s);
    let mnt = s.mkdir("mnt");
    // Inherited by ext4box: no close-on-exec.
    let fuse = fs::OpenOptions::new().read(true).write(true).open("/dev/fuse").unwrap();
    let fd = fuse.as_raw_fd();
    unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    let c = |b: &[u8]| std::ffi::CString::new(b).unwrap();
    let (src, tgt, fstype) = (c(img.as_os_str().as_bytes()), c(mnt.as_os_str().as_bytes()), c(b"fuse.apptainer"));
    let data = c(format!("fd={fd},rootmode=40000,user_id=0,group_id=0").as_bytes());
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_RDONLY;
    let rc = unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), fstype.as_ptr(), flags, data.as_ptr().cast()) };
    assert_eq!(rc, 0, "the test's own mount(2): {}", std::io::Error::last_os_error());
    let given = format!("/dev/fd/{fd}");
    let (r, w) = inheritable_pipe();
    let child = Command::new(BIN)
        .args([OsStr::new("mount"), OsStr::new("-f"), img.as_os_str(), OsStr::new(&given), OsStr::new("-o")])
        .arg(format!("ro,notify_pipe={w}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    unsafe { libc::close(w) };
    drop(fuse);
    assert_eq!(read_to_eof(r, CMD_TIMEOUT), "READY=1\n", "no readiness from the server of a given descriptor");
    assert_eq!(fs::read(mnt.join("public")).unwrap(), b"readable by all\n");
    // ext4box mounted nothing: the one mount is the caller's, with the caller's type.
    let mi = mountinfo_entry(&mnt).expect("the caller's mount is gone");
    assert_eq!(mi.fstype, "fuse.apptainer");
    let listed = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert_eq!(
        listed
            .lines()
            .filter(|l| l.contains(" fuse.ext4box "))
            .filter(|l| l.contains(&*s.path("").to_string_lossy()))
            .count(),
        0
    );
    // The worker that serves it is confined as always.
    let worker = fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                c.split(|&b| b == 0).any(|a| a == b"worker") && c.windows(given.len()).any(|w| w == given.as_bytes())
            })
        })
        .expect("no ext4box worker serving the given descriptor");
    let status = fs::read_to_string(format!("/proc/{worker}/status")).unwrap();
    assert!(
        status.lines().any(|l| l.starts_with("Seccomp:") && l.ends_with('2')),
        "worker not under seccomp:\n{status}"
    );
    // The caller unmounts; the server sees the end and exits cleanly.
    assert_eq!(unsafe { libc::umount2(tgt.as_ptr(), 0) }, 0, "{}", std::io::Error::last_os_error());
    let out = with_timeout("the server's exit after the caller's unmount", CMD_TIMEOUT, &mnt, move || {
        child.wait_with_output().unwrap()
    });
    assert!(out.status.success(), "ext4box serving a given descriptor ended badly:\n{}", output_text(&out));

    // A descriptor that is not /dev/fuse is a mount point like any other: refused unless a directory.
    let f = fs::File::open(&img).unwrap();
    let out = ext4box_mount(&img, Path::new(&format!("/proc/self/fd/{}", f.as_raw_fd())), "ro");
    assert!(!out.status.success(), "{}", output_text(&out));
}
