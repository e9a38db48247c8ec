//! The orphan file (`-O orphan_file`, upstream mke2fs's default since 1.47): files unlinked while open
//! are kept in its slots, as the kernel keeps them, and on the superblock's chain only when every slot
//! is taken; a mount processes both, including orphans the kernel left in a crash; `orphan_present`
//! is set while a read-write mount lasts and cleared by a clean unmount. After each: `e2fsck -fn`
//! clean and the kernel reads back what was kept. Needs root (loop mounts, the shutdown ioctl) and
//! /dev/fuse.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::process::Command;

use crate::common::*;

/// The orphan file's inode number, per debugfs.
fn orphan_file_inode(img: &Path) -> u32 {
    let stats = debugfs(img, "stats");
    let line = stats.lines().find_map(|l| l.strip_prefix("Orphan file inode:"));
    line.and_then(|n| n.trim().parse().ok()).unwrap_or_else(|| panic!("no orphan file in:\n{stats}"))
}

/// The inode numbers in taken slots of the orphan file (`debugfs cat`, the tail of each block left out).
fn orphan_file_entries(img: &Path, block_size: usize) -> Vec<u32> {
    let out = Command::new("debugfs").arg("-R").arg(format!("cat <{}>", orphan_file_inode(img))).arg(img).output();
    let bytes = out.unwrap().stdout;
    assert!(
        !bytes.is_empty() && bytes.len().is_multiple_of(block_size),
        "debugfs cat of the orphan file: {} bytes",
        bytes.len()
    );
    bytes
        .chunks(block_size)
        .flat_map(|b| b[..block_size - 8].chunks(4).map(|e| u32::from_le_bytes(e.try_into().unwrap())))
        .filter(|&n| n != 0)
        .collect()
}

fn has_feature(img: &Path, name: &str) -> bool {
    fs_features(img).iter().any(|f| f == name)
}

/// Kills the servers of `m` and detaches the mount: a crash of ext4box.
fn kill(m: Ext4boxMount) {
    for pid in &m.pids {
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    let start = std::time::Instant::now();
    while m.pids.iter().any(|&p| pid_alive(p)) {
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "the killed server is still alive");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    run_ok(Command::new("umount").arg("-l").arg(&m.mnt));
}

fn check_after(img: &Path, s: &Scratch, block_size: usize) {
    assert_fsck_clean(img);
    assert!(!has_feature(img, "orphan_present"), "a clean unmount left orphan_present set");
    assert!(orphan_file_entries(img, block_size).is_empty(), "a clean unmount left entries in the orphan file");
    assert!(!debugfs(img, "stats").contains("First orphan inode:"), "a clean unmount left the orphan chain");
    let k = s.mkdir("kernel");
    kernel_mount(img, &k, "ro");
    assert_eq!(fs::read(k.join("keep")).unwrap(), b"kept\n");
    kernel_umount(&k);
}

/// 300 files unlinked while open, on an orphan file of one 1 KiB block (254 slots): the slots fill
/// and the rest go on the chain. The server is killed with them open; the next mount deletes them all.
#[test]
fn unlinked_open_files_go_to_the_orphan_file_then_the_chain_and_a_crash_is_cleaned_up() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("orphan-file-crash");
    let img = s.path("img");
    mkfs(&img, 32 << 20, &["-b", "1024", "-O", "orphan_file", "-E", "orphan_file_size=1"]);
    let mnt = s.mkdir("mnt");
    let m = ext4box_mount_ok(&img, &mnt, "");
    fs::write(mnt.join("keep"), b"kept\n").unwrap();
    let (mut open, mut inos) = (Vec::new(), Vec::new());
    for i in 0..300 {
        let p = mnt.join(format!("victim{i}"));
        fs::write(&p, pseudo_random(i, 8192)).unwrap();
        open.push(File::open(&p).unwrap());
        inos.push(fs::metadata(&p).unwrap().ino());
        fs::remove_file(&p).unwrap();
    }
    // fsync commits the journal; committed blocks are written home at once.
    File::open(mnt.join("keep")).unwrap().sync_all().unwrap();
    assert!(has_feature(&img, "orphan_present"), "a read-write mount of an orphan_file image must say orphan_present");
    let entries = orphan_file_entries(&img, 1024);
    assert_eq!(entries.len(), 254, "the orphan file's slots: {entries:?}");
    assert!(entries.iter().all(|&e| inos.contains(&u64::from(e))), "{entries:?} are not the victims {inos:?}");
    assert!(debugfs(&img, "stats").contains("First orphan inode:"), "the orphans past the slots are not on the chain");
    kill(m);
    drop(open);
    let m = ext4box_mount_ok(&img, &mnt, "");
    assert_eq!(fs::read(mnt.join("keep")).unwrap(), b"kept\n");
    m.unmount();
    for ino in [inos[0], inos[253], inos[254], inos[299]] {
        assert!(!in_use(&img, ino), "orphan inode {ino} was not deleted");
    }
    check_after(&img, &s, 1024);
}

/// Whether inode `ino` is in use, per the inode bitmap (`debugfs testi`).
fn in_use(img: &Path, ino: u64) -> bool {
    let out = debugfs(img, &format!("testi <{ino}>"));
    assert!(out.contains("in use"), "debugfs testi <{ino}>: {out}");
    !out.contains("not in use")
}

/// A file unlinked while open and closed before the unmount leaves nothing behind; one still open at a
/// clean unmount is deleted then.
#[test]
fn a_clean_unmount_empties_the_orphan_file_and_clears_orphan_present() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("orphan-file-clean");
    let img = s.path("img");
    mkfs(&img, 64 << 20, &["-b", "4096", "-O", "orphan_file,metadata_csum_seed"]);
    let mnt = s.mkdir("mnt");
    let m = ext4box_mount_ok(&img, &mnt, "");
    fs::write(mnt.join("keep"), b"kept\n").unwrap();
    fs::write(mnt.join("closed"), pseudo_random(1, 1 << 20)).unwrap();
    let f = File::open(mnt.join("closed")).unwrap();
    fs::remove_file(mnt.join("closed")).unwrap();
    File::open(mnt.join("keep")).unwrap().sync_all().unwrap();
    assert_eq!(orphan_file_entries(&img, 4096).len(), 1, "the unlinked open file is not in the orphan file");
    drop(f);
    m.unmount();
    check_after(&img, &s, 4096);
}

/// `EXT4_IOC_SHUTDOWN`, and its flag that flushes the log but not the filesystem.
const EXT4_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587D;
const EXT4_GOING_FLAGS_LOGFLUSH: u32 = 1;

/// The kernel crashes (shutdown with the log flushed) with a file unlinked but open: its orphan file
/// holds the file, in the journal. ext4box replays the journal, deletes the orphan and stays
/// read-write (it used to mount such images read-only).
#[test]
fn orphans_the_kernel_left_in_the_orphan_file_are_deleted_at_mount() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("orphan-file-kernel");
    let img = s.path("img");
    mkfs(&img, 64 << 20, &["-b", "4096", "-O", "orphan_file"]);
    let k = s.mkdir("k");
    kernel_mount(&img, &k, "");
    fs::write(k.join("keep"), b"kept\n").unwrap();
    fs::write(k.join("victim"), pseudo_random(2, 4 << 20)).unwrap();
    run_ok(&mut Command::new("sync"));
    let victim = File::open(k.join("victim")).unwrap();
    let ino = victim.metadata().unwrap().ino();
    fs::remove_file(k.join("victim")).unwrap();
    File::open(k.join("keep")).unwrap().sync_all().unwrap();
    let f = File::open(&k).unwrap();
    let flag = EXT4_GOING_FLAGS_LOGFLUSH;
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), EXT4_IOC_SHUTDOWN as _, &flag) };
    assert_eq!(rc, 0, "EXT4_IOC_SHUTDOWN: {}", std::io::Error::last_os_error());
    drop(f);
    let crashed = img.with_extension("crashed");
    fs::copy(&img, &crashed).unwrap();
    drop(victim);
    kernel_umount(&k);
    fs::rename(&crashed, &img).unwrap();
    assert!(has_feature(&img, "orphan_present") && has_feature(&img, "needs_recovery"), "{:?}", fs_features(&img));

    let mnt = s.mkdir("mnt");
    let m = ext4box_mount_ok(&img, &mnt, "");
    // Read-write: a file is made and removed again (so that it does not take the orphan's number).
    fs::write(mnt.join("written-after"), b"read-write\n").expect("the mount must be read-write");
    fs::remove_file(mnt.join("written-after")).unwrap();
    m.unmount();
    assert!(!in_use(&img, ino), "the kernel's orphan (inode {ino}) was not deleted");
    check_after(&img, &s, 4096);
}
