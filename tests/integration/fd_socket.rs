//! The handoff over a Unix socket (`ext4box worker --fd-socket PATH` and `ext4box mount ... --fd-socket
//! PATH`): the privileged side and an unprivileged worker joined only by that socket, as a node agent
//! and an unprivileged container would be. Needs root (to mount, and to start the worker as nobody) and
//! /dev/fuse.

use std::ffi::OsStr;
use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_ext4box");

/// Starts `ext4box worker --fd-socket DIR/sock` as nobody; returns it once the socket exists.
fn start_worker(dir: &Path) -> (Child, PathBuf) {
    run_ok(Command::new("chown").arg("65534:65534").arg(dir));
    let sock = dir.join("sock");
    let child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin_in(dir))
        .args(["worker", "--fd-socket"])
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the worker to create its socket", Duration::from_secs(10), || sock.exists());
    (child, sock)
}

#[test]
fn privileged_side_and_unprivileged_worker_joined_only_by_a_socket() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("fdsock");
    let img = s.path("img");
    mkfs(&img, 32 << 20, &[]);
    let mnt = s.mkdir("mnt");
    let dir = s.mkdir("sockdir");
    let (mut worker, sock) = start_worker(&dir);
    let out = Command::new(BIN)
        .args([OsStr::new("mount"), img.as_os_str(), mnt.as_os_str(), OsStr::new("--fd-socket"), sock.as_os_str()])
        .output()
        .unwrap();
    assert!(out.status.success(), "mount with --fd-socket:\n{}", output_text(&out));
    assert_eq!(mountinfo_entry(&mnt).expect("mounted").fstype, "fuse.ext4box");
    // The worker is the unprivileged process that serves: nobody, no capabilities, confined.
    let pid = worker.id();
    assert!(proc_status_field(pid as i32, "Uid").split_whitespace().all(|u| u == "65534"));
    assert_eq!(proc_status_field(pid as i32, "CapEff"), "0000000000000000");
    assert_eq!(proc_status_field(pid as i32, "CapPrm"), "0000000000000000");
    assert_eq!(proc_status_field(pid as i32, "NoNewPrivs"), "1");
    assert_eq!(proc_status_field(pid as i32, "Seccomp"), "2");
    fs::write(mnt.join("through-the-socket"), b"written by a worker that holds no capability").unwrap();
    assert!(ext4box_unmount(&mnt).status.success());
    let st = worker.wait().unwrap();
    assert!(st.success(), "the worker should exit cleanly after the unmount: {st:?}");
    assert_fsck_clean(&img);
    kernel_mount(&img, &mnt, "ro");
    assert_eq!(fs::read(mnt.join("through-the-socket")).unwrap(), b"written by a worker that holds no capability");
    kernel_umount(&mnt);
}

/// Sends `header` with `fds` on a fresh connection to `sock`; returns the worker's reply.
fn raw_handoff(sock: &Path, header: &[u8], fds: &[i32]) -> String {
    let conn = ext4box::launcher::fd_socket::connect(sock).unwrap();
    ext4box::launcher::fd_socket::send(&conn, header, fds).unwrap();
    let mut buf = [0u8; 1024];
    let n = unsafe { libc::read(conn.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    String::from_utf8_lossy(&buf[..n.max(0) as usize]).into_owned()
}

#[test]
fn malformed_handoffs_are_refused_with_a_reason() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("fdsock-bad");
    let img = s.path("img");
    mkfs(&img, 16 << 20, &[]);
    let image = fs::File::open(&img).unwrap();
    let null = fs::File::open("/dev/null").unwrap();
    let good = br#"ext4box-handoff 2
{"offset":0,"read_only":true,"norecovery":false,"atime":"never","commit":5}
"#;
    let evil = br#"ext4box-handoff 2
{"offset":0,"read_only":true,"norecovery":false,"atime":"never","commit":5,"evil":1}
"#;
    let cases: Vec<(&str, Vec<u8>, Vec<i32>, &str)> = vec![
        ("unknown version", b"ext4box-handoff 9\n".to_vec(), vec![null.as_raw_fd(), image.as_raw_fd()], "version"),
        ("unknown key", evil.to_vec(), vec![null.as_raw_fd(), image.as_raw_fd()], "unknown field `evil`"),
        ("one descriptor", good.to_vec(), vec![image.as_raw_fd()], "descriptors"),
        ("not /dev/fuse", good.to_vec(), vec![null.as_raw_fd(), image.as_raw_fd()], "/dev/fuse"),
    ];
    for (what, header, fds, word) in cases {
        let dir = s.mkdir(&format!("sock-{}", what.replace(' ', "-")));
        let (mut worker, sock) = start_worker(&dir);
        let reply = raw_handoff(&sock, &header, &fds);
        assert!(reply.starts_with("E ") && reply.contains(word), "{what}: worker replied {reply:?}");
        let st = worker.wait().unwrap();
        assert!(!st.success(), "{what}: the worker should exit non-zero");
    }
}
