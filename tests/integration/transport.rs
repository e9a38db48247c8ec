//! The FUSE protocol layer end to end: O_TMPFILE, statx's birth time and attributes, and the choice of
//! transport, with each reason it falls back. Needs root and /dev/fuse; the io_uring cases turn
//! `fuse.enable_uring` (and `kernel.io_uring_disabled`) to what they need and back.

use crate::common::*;
use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";
const IO_URING_DISABLED: &str = "/proc/sys/kernel/io_uring_disabled";

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// An O_TMPFILE file in `dir`, open for reading and writing.
fn tmpfile(dir: &Path) -> fs::File {
    let fd = unsafe { libc::open(cstr(dir).as_ptr(), libc::O_TMPFILE | libc::O_RDWR, 0o640) };
    assert!(fd >= 0, "open(O_TMPFILE) in {dir:?}: {}", std::io::Error::last_os_error());
    unsafe { fs::File::from_raw_fd(fd) }
}

/// linkat(2) of an open file to `to`, through /proc/self/fd (as root may).
fn link_open_file(f: &fs::File, to: &Path) {
    use std::os::fd::AsRawFd;
    let from = CString::new(format!("/proc/self/fd/{}", f.as_raw_fd())).unwrap();
    let r = unsafe {
        libc::linkat(libc::AT_FDCWD, from.as_ptr(), libc::AT_FDCWD, cstr(to).as_ptr(), libc::AT_SYMLINK_FOLLOW)
    };
    assert_eq!(r, 0, "linkat to {to:?}: {}", std::io::Error::last_os_error());
}

fn free_inodes(img: &Path) -> u64 {
    let out = run_ok(Command::new("dumpe2fs").arg("-h").arg(img));
    out.lines()
        .find_map(|l| l.strip_prefix("Free inodes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no free inode count in dumpe2fs -h:\n{out}"))
}

#[test]
fn a_linked_tmpfile_is_a_file_and_an_unlinked_one_leaves_nothing() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("tmpfile");
    let img = s.path("image");
    mkfs(&img, 64 << 20, &[]);
    let before = free_inodes(&img);
    let mnt = s.mkdir("mnt");
    let m = ext4box_mount_ok(&img, &mnt, "");
    let data = pseudo_random(14, 300_000);
    {
        let mut f = tmpfile(&mnt);
        f.write_all(&data).unwrap();
        link_open_file(&f, &mnt.join("named"));
        assert_eq!(fs::metadata(mnt.join("named")).unwrap().len(), data.len() as u64);
    }
    {
        let mut f = tmpfile(&mnt);
        f.write_all(&pseudo_random(15, 1 << 20)).unwrap();
        f.sync_all().unwrap();
    }
    assert_eq!(fs::read(mnt.join("named")).unwrap(), data);
    m.unmount();
    assert_fsck_clean(&img);
    assert_eq!(free_inodes(&img), before - 1, "the linked tmpfile takes one inode, the unlinked one none");
    let k = s.mkdir("kernel");
    kernel_mount(&img, &k, "ro");
    let names: Vec<_> = fs::read_dir(&k).unwrap().map(|e| e.unwrap().file_name()).collect();
    let read = fs::read(k.join("named"));
    kernel_umount(&k);
    assert_eq!(read.unwrap(), data, "the kernel reads the linked tmpfile's data");
    assert_eq!(names.len(), 2, "lost+found and named only: {names:?}");
}

#[test]
fn a_tmpfile_held_across_sigkill_is_deleted_at_the_next_mount() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("tmpfile-kill");
    let img = s.path("image");
    mkfs(&img, 64 << 20, &[]);
    let before = free_inodes(&img);
    let mnt = s.mkdir("mnt");
    let m = ext4box_mount_ok(&img, &mnt, "");
    let mut f = tmpfile(&mnt);
    f.write_all(&pseudo_random(16, 200_000)).unwrap();
    f.sync_all().unwrap();
    for &pid in &m.pids {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    force_kill_mount(&mnt);
    drop(f);
    assert_ne!(free_inodes(&img), before, "the held tmpfile is allocated on the image after the kill");
    let m = ext4box_mount_ok(&img, &mnt, "");
    m.unmount();
    assert_fsck_clean(&img);
    assert_eq!(free_inodes(&img), before, "the next mount deletes the orphaned tmpfile");
}

fn statx(p: &Path) -> libc::statx {
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    let r = unsafe {
        libc::statx(libc::AT_FDCWD, cstr(p).as_ptr(), 0, libc::STATX_BASIC_STATS | libc::STATX_BTIME, &mut st)
    };
    assert_eq!(r, 0, "statx {p:?}: {}", std::io::Error::last_os_error());
    st
}

/// debugfs's `crtime: 0xSECONDS:EXTRA` as (seconds, nanoseconds).
fn debugfs_crtime(img: &Path, path: &str) -> (i64, u32) {
    let out = debugfs(img, &format!("stat {path}"));
    let field = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("crtime: 0x"))
        .unwrap_or_else(|| panic!("no crtime in debugfs stat {path}:\n{out}"));
    let (sec, extra) = field
        .split_whitespace()
        .next()
        .unwrap()
        .split_once(":0x")
        .or_else(|| field.split_whitespace().next().unwrap().split_once(':'))
        .unwrap();
    let sec = u32::from_str_radix(sec, 16).unwrap() as i32 as i64;
    let extra = u32::from_str_radix(extra.trim_start_matches("0x"), 16).unwrap();
    (sec + (i64::from(extra & 3) << 32), extra >> 2)
}

#[test]
fn statx_shows_the_crtime_debugfs_shows() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("statx");
    let img = s.path("image");
    mkfs(&img, 32 << 20, &[]);
    let mnt = s.mkdir("mnt");
    let m = ext4box_mount_ok(&img, &mnt, "");
    fs::write(mnt.join("f"), b"x").unwrap();
    fs::write(mnt.join("g"), b"y").unwrap();
    run_ok(Command::new("chattr").arg("+i").arg(mnt.join("g")));
    let f = statx(&mnt.join("f"));
    let g = statx(&mnt.join("g"));
    m.unmount();
    assert_ne!(f.stx_mask & libc::STATX_BTIME, 0, "statx reports a birth time");
    let (sec, nsec) = debugfs_crtime(&img, "/f");
    assert_eq!((f.stx_btime.tv_sec, f.stx_btime.tv_nsec), (sec, nsec), "btime is the inode's crtime");
    // The server also sends STATX_ATTR_IMMUTABLE and friends from the inode flags (`fuse::reply` tests
    // the encoding), but the kernel's FUSE (through 6.18) drops a reply's attributes: nothing to see here.
    let _ = g;
}

/// Sets a kernel switch for the guard's life and restores it after.
struct Switch {
    path: &'static str,
    old: String,
}

impl Switch {
    fn set(path: &'static str, value: &str) -> Switch {
        let old = fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}")).trim().to_string();
        fs::write(path, value).unwrap_or_else(|e| panic!("writing {value} to {path}: {e}"));
        Switch {
            path,
            old: if old == "Y" {
                "1".into()
            } else if old == "N" {
                "0".into()
            } else {
                old
            },
        }
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        let _ = fs::write(self.path, &self.old);
    }
}

/// Mounts with `--explain`, checks the transport line names `expected`, works the mount a little,
/// unmounts and checks the image.
fn mount_expecting(s: &Scratch, tag: &str, opts: &str, expected: &[&str]) {
    let img = s.path(&format!("{tag}.img"));
    mkfs(&img, 64 << 20, &[]);
    let mnt = s.mkdir(tag);
    let mut args: Vec<&std::ffi::OsStr> =
        vec!["mount".as_ref(), "--explain".as_ref(), img.as_os_str(), mnt.as_os_str()];
    if !opts.is_empty() {
        args.extend([std::ffi::OsStr::new("-o"), std::ffi::OsStr::new(opts)]);
    }
    // The suite's io_uring run sets EXT4BOX_TRANSPORT; these mounts choose for themselves.
    let out = run_timeout(
        Command::new(env!("CARGO_BIN_EXE_ext4box")).args(&args).env_remove("EXT4BOX_TRANSPORT"),
        Duration::from_secs(60),
    )
    .unwrap();
    let text = output_text(&out);
    assert!(out.status.success(), "{tag}: mount failed:\n{text}");
    let line =
        text.lines().find(|l| l.contains("transport:")).unwrap_or_else(|| panic!("{tag}: no transport line:\n{text}"));
    for word in expected {
        assert!(line.contains(word), "{tag}: the transport line does not say {word:?}: {line}");
    }
    let data = pseudo_random(17, 3 << 20);
    fs::write(mnt.join("data"), &data).unwrap();
    for i in 0..200 {
        fs::write(mnt.join(format!("f{i}")), i.to_string()).unwrap();
    }
    assert_eq!(fs::read_dir(&mnt).unwrap().count(), 202);
    assert_eq!(fs::read(mnt.join("data")).unwrap(), data);
    let out = ext4box_unmount(&mnt);
    assert!(out.status.success(), "{tag}: unmount:\n{}", output_text(&out));
    assert_fsck_clean(&img);
}

#[test]
fn the_transport_is_chosen_told_and_falls_back() {
    // It turns the kernel's switches, which every other test's mounts depend on.
    let Some(_machine) = require_root_and_fuse_alone() else {
        return;
    };
    let s = Scratch::new("transport");
    {
        let _off = Switch::set(ENABLE_URING, "0");
        mount_expecting(&s, "off", "", &["classic", "enable_uring is N"]);
        // Insisting on io_uring when the kernel has it off is one clear error, and no mount.
        let img = s.path("off.img");
        let mnt = s.mkdir("insist");
        let out = run_timeout(
            Command::new(env!("CARGO_BIN_EXE_ext4box"))
                .arg("mount")
                .arg(&img)
                .arg(&mnt)
                .args(["-o", "transport=io_uring"])
                .env_remove("EXT4BOX_TRANSPORT"),
            Duration::from_secs(60),
        )
        .unwrap();
        assert!(!out.status.success(), "transport=io_uring mounted with enable_uring off");
        let lines = stderr_lines(&out);
        assert_eq!(lines.len(), 1, "one error line: {lines:?}");
        assert!(lines[0].contains("transport=io_uring") && lines[0].contains("enable_uring"), "{lines:?}");
        assert!(mountinfo_entry(&mnt).is_none(), "a refused mount stays unmounted");
    }
    {
        let _on = Switch::set(ENABLE_URING, "1");
        mount_expecting(&s, "on", "", &["io_uring", "queues"]);
        mount_expecting(&s, "forced-classic", "transport=classic", &["classic", "-o transport=classic"]);
        // As in a container whose seccomp profile refuses io_uring_setup: here the sysctl does it.
        let _disabled = Switch::set(IO_URING_DISABLED, "2");
        mount_expecting(&s, "no-setup", "", &["classic", "io_uring_setup refused"]);
    }
}

#[test]
fn a_restricted_ring_accepts_nothing_but_fuse_commands_on_dev_fuse() {
    use io_uring::{opcode, types};
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    // The worker's rings are made this way before it confines itself; with seccomp allowing only
    // io_uring_enter on top, this is all a confined worker can do with them.
    let dev = fs::OpenOptions::new().read(true).write(true).open("/dev/fuse").unwrap();
    let mut ring = ext4box::fuse::uring::restricted_ring(&dev, 4).expect("a restricted ring");
    let mut buf = [0u8; 16];
    let attempts = [
        ("nop", opcode::Nop::new().build().user_data(1).into()),
        (
            "read of the fixed file",
            opcode::Read::new(types::Fixed(0), buf.as_mut_ptr(), 16).build().user_data(2).into(),
        ),
        (
            "read of a plain descriptor",
            opcode::Read::new(types::Fd(0), buf.as_mut_ptr(), 16).build().user_data(3).into(),
        ),
        ("uring_cmd without the fixed file", opcode::UringCmd80::new(types::Fd(0), 1).build().user_data(4)),
    ];
    for (what, sqe) in &attempts {
        unsafe { ring.submission().push(sqe).unwrap() };
        ring.submit_and_wait(1).unwrap();
        let cqe = ring.completion().next().expect("a completion");
        assert_eq!(cqe.result(), -libc::EACCES, "{what} on the restricted ring");
    }
}
