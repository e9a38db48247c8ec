//! The mount service (`ext4box serve --listen PATH`), exercised as users without privileges: a user
//! mounts an image they own on a directory they own, without sudo, writes, and unmounts; other users and
//! bad requests are refused with a reason, and the service keeps serving. Needs root (to run the
//! service and to switch users) and /dev/fuse.

use std::ffi::OsStr;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::common::*;
use ext4box::launcher::fd_socket;

const BIN: &str = env!("CARGO_BIN_EXE_ext4box");

struct Service {
    child: Child,
    sock: PathBuf,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_service(s: &Scratch) -> Service {
    let sock = s.path("ext4box.sock");
    let child = Command::new(BIN).arg("serve").arg("--listen").arg(&sock).stderr(Stdio::null()).spawn().unwrap();
    wait_until("the service to create its socket", Duration::from_secs(10), || sock.exists());
    Service { child, sock }
}

/// Runs `ext4box ARGS` as `uid` (numeric; no passwd entry needed), talking to `svc`.
fn as_user(uid: u32, svc: &Service, args: &[&OsStr]) -> Output {
    Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .arg(bin_in(svc.sock.parent().unwrap()))
        .args(args)
        .env("EXT4BOX_SERVICE_SOCKET", &svc.sock)
        .output()
        .unwrap()
}

/// An image and a mount point owned by `uid`, in a directory everyone may enter.
fn user_files(s: &Scratch, uid: u32, tag: &str) -> (PathBuf, PathBuf) {
    let img = s.path(&format!("{tag}.img"));
    mkfs(&img, 32 << 20, &[]);
    let mnt = s.mkdir(&format!("{tag}-mnt"));
    run_ok(Command::new("chown").arg(format!("{uid}:{uid}")).arg(&img).arg(&mnt));
    let mut p = s.path("");
    loop {
        let _ = Command::new("chmod").arg("o+x").arg(&p).status();
        if !p.pop() || p.as_os_str().is_empty() {
            break;
        }
    }
    (img, mnt)
}

#[test]
fn an_unprivileged_user_mounts_writes_and_unmounts_without_sudo() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("svc-user");
    let svc = start_service(&s);
    let (img, mnt) = user_files(&s, 65534, "nobody");
    let out = as_user(65534, &svc, &[OsStr::new("mount"), img.as_os_str(), mnt.as_os_str()]);
    assert!(out.status.success(), "mount through the service:\n{}", output_text(&out));
    let mi = mountinfo_entry(&mnt).expect("mounted");
    assert_eq!(mi.fstype, "fuse.ext4box");
    let opts: Vec<&str> = mi.mount_opts.split(',').collect();
    assert!(opts.contains(&"nosuid") && opts.contains(&"nodev"), "{mi:?}");
    assert!(mi.super_opts.contains("user_id=65534"), "the kernel must let only the caller in: {mi:?}");
    // The caller sees the files as theirs and can write.
    let w = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c"])
        .arg(format!("echo mine > {0}/mine && mkdir {0}/dir", mnt.display()))
        .status()
        .unwrap();
    assert!(w.success(), "the caller could not write to their own mount");
    // (Only the caller may enter the mount: even root is kept out without allow_other.)
    let owner = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "stat", "-c", "%u"])
        .arg(mnt.join("lost+found"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&owner.stdout).trim(), "65534", "files are presented as the caller's");
    // Another user may not unmount it.
    let out = as_user(1000, &svc, &[OsStr::new("unmount"), mnt.as_os_str()]);
    assert!(!out.status.success());
    assert!(output_text(&out).contains("not mounted by you"), "{}", output_text(&out));
    let pids = server_pids(&mnt);
    let out = as_user(65534, &svc, &[OsStr::new("unmount"), mnt.as_os_str()]);
    assert!(out.status.success(), "unmount through the service:\n{}", output_text(&out));
    assert!(mountinfo_entry(&mnt).is_none());
    assert!(pids.iter().all(|&p| !pid_alive(p)), "unmount returned before the server exited");
    assert_fsck_clean(&img);
    kernel_mount(&img, &mnt, "ro");
    assert_eq!(fs::read(mnt.join("mine")).unwrap(), b"mine\n");
    kernel_umount(&mnt);
}

/// Sends raw bytes and descriptors to the service; returns its reply.
fn raw(svc: &Service, header: &[u8], fds: &[i32]) -> String {
    let conn = fd_socket::connect(&svc.sock).unwrap();
    let _ = fd_socket::send(&conn, header, fds);
    read_reply(&conn)
}

fn read_reply(conn: &OwnedFd) -> String {
    let mut buf = [0u8; 4096];
    let n = unsafe { libc::read(conn.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    String::from_utf8_lossy(&buf[..n.max(0) as usize]).into_owned()
}

#[test]
fn bad_requests_get_a_reason_and_the_service_goes_on() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("svc-bad");
    let svc = start_service(&s);
    let (img, mnt) = user_files(&s, 65534, "nobody");
    let img_ro = fs::File::open(&img).unwrap();
    let mnt_fd = fs::File::open(&mnt).unwrap();
    let file_fd = fs::File::open(&img).unwrap();
    let mount_v1 = b"ext4box-request 2\n{\"op\":\"mount\",\"options\":\"\"}\n";
    let mount_ro = b"ext4box-request 2\n{\"op\":\"mount\",\"options\":\"ro\"}\n";
    let cases: Vec<(&str, Vec<u8>, Vec<i32>, &str)> = vec![
        ("garbage", b"hello".to_vec(), vec![], "version"),
        ("oversized", vec![b'x'; 8000], vec![], "too large"),
        ("unknown op", b"ext4box-request 2\n{\"op\":\"format\"}\n".to_vec(), vec![], "unknown variant `format`"),
        ("no descriptors", mount_v1.to_vec(), vec![], "two descriptors"),
        ("mount point is a file", mount_ro.to_vec(), vec![img_ro.as_raw_fd(), file_fd.as_raw_fd()], "not a directory"),
        ("image is a directory", mount_ro.to_vec(), vec![mnt_fd.as_raw_fd(), mnt_fd.as_raw_fd()], "regular file"),
        ("rw with a read-only image", mount_v1.to_vec(), vec![img_ro.as_raw_fd(), mnt_fd.as_raw_fd()], "writing"),
        (
            "unmount with a relative path",
            b"ext4box-request 2\n{\"op\":\"unmount\",\"path\":\"mnt\"}\n".to_vec(),
            vec![],
            "absolute path, not \"mnt\"",
        ),
    ];
    for (what, header, fds, word) in cases {
        let reply = raw(&svc, &header, &fds);
        assert!(reply.starts_with("E ") && reply.contains(word), "{what}: reply {reply:?}");
    }
    // A caller that connects and says nothing is dropped after a timeout; a caller that vanishes at once
    // costs nothing. Meanwhile and afterwards the service serves others.
    let silent = fd_socket::connect(&svc.sock).unwrap();
    drop(fd_socket::connect(&svc.sock).unwrap());
    // As a user who does not own the mount point: refused.
    let out = as_user(
        1000,
        &svc,
        &[OsStr::new("mount"), img.as_os_str(), mnt.as_os_str(), OsStr::new("-o"), OsStr::new("ro")],
    );
    assert!(!out.status.success());
    assert!(output_text(&out).contains("you own"), "{}", output_text(&out));
    // suid and dev need root.
    let out = as_user(
        65534,
        &svc,
        &[OsStr::new("mount"), img.as_os_str(), mnt.as_os_str(), OsStr::new("-o"), OsStr::new("suid")],
    );
    assert!(!out.status.success() && output_text(&out).contains("need root"), "{}", output_text(&out));
    // allow_root needs root too; a lock file would be created by the service, as root: refused.
    for (opts, word) in [("allow_root", "need root"), ("lockfile=/etc/owned", "lockfile")] {
        let out = as_user(
            65534,
            &svc,
            &[OsStr::new("mount"), img.as_os_str(), mnt.as_os_str(), OsStr::new("-o"), OsStr::new(opts)],
        );
        assert!(!out.status.success() && output_text(&out).contains(word), "-o {opts}: {}", output_text(&out));
    }
    assert!(!std::path::Path::new("/etc/owned").exists(), "the service created a caller's lock file");
    let reply = read_reply(&silent);
    assert!(
        reply.starts_with("E ") && reply.contains("timed out"),
        "a silent caller is answered with a timeout: {reply:?}"
    );
    // And a good request still works.
    let out = as_user(65534, &svc, &[OsStr::new("mount"), img.as_os_str(), mnt.as_os_str()]);
    assert!(out.status.success(), "{}", output_text(&out));
    let out = as_user(65534, &svc, &[OsStr::new("unmount"), mnt.as_os_str()]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert_fsck_clean(&img);
    let _ = Path::new("");
}

/// Socket activation as systemd does it: the listening socket arrives as descriptor 3 with LISTEN_FDS=1
/// and LISTEN_PID naming the service process.
#[test]
fn socket_activation_from_listen_fds() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    use std::os::unix::process::CommandExt;
    let s = Scratch::new("svc-activation");
    let sock = s.path("activated.sock");
    let listener = fd_socket::listen_on(&sock).unwrap();
    fs::set_permissions(&sock, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let raw = listener.as_raw_fd();
    let mut cmd = Command::new("sh");
    // LISTEN_PID must be the service's own pid: the shell sets it, then becomes the service.
    cmd.args(["-c", &format!("LISTEN_PID=$$ LISTEN_FDS=1 exec {BIN} serve")]).stderr(Stdio::null());
    unsafe {
        cmd.pre_exec(move || {
            if raw != 3 && libc::dup2(raw, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // dup2 onto itself keeps close-on-exec: clear it either way.
            if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    drop(listener);
    let svc = Service { child, sock };
    let (img, mnt) = user_files(&s, 65534, "nobody");
    let out = as_user(
        65534,
        &svc,
        &[OsStr::new("mount"), img.as_os_str(), mnt.as_os_str(), OsStr::new("-o"), OsStr::new("ro")],
    );
    assert!(out.status.success(), "mount through the socket-activated service:\n{}", output_text(&out));
    let out = as_user(65534, &svc, &[OsStr::new("unmount"), mnt.as_os_str()]);
    assert!(out.status.success(), "{}", output_text(&out));
}
