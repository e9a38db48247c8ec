//! Discard: `fstrim MNT` (FITRIM through FUSE) punches the free blocks out of an image file, and
//! `-o discard` does it as each journal commit frees blocks, so a sparse image shrinks again. After each
//! test: unmount, `e2fsck -fn` clean, and the kernel reads back what was kept. Needs root, /dev/fuse and
//! fstrim (util-linux).

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Bytes the image file takes on disk.
fn allocated(img: &Path) -> u64 {
    fs::metadata(img).unwrap().blocks() * 512
}

const BIG: usize = 40 << 20;

/// A fresh image with a 40 MiB file and a small one, written by ext4box and unmounted.
fn image_with_big_file(s: &Scratch, mnt: &Path) -> std::path::PathBuf {
    let img = s.path("img");
    mkfs(&img, 128 << 20, &[]);
    let m = ext4box_mount_ok(&img, mnt, "");
    fs::write(mnt.join("big"), pseudo_random(1, BIG)).unwrap();
    fs::write(mnt.join("keep"), b"kept across the trim\n").unwrap();
    m.unmount();
    assert!(allocated(&img) > BIG as u64, "the image does not hold the file: {} bytes", allocated(&img));
    img
}

/// Waits until `cond`, making the journal commit (an fsync) each time: the removed file's blocks are
/// free once its last reference is forgotten and the commit that frees them is on disk.
fn until_committed(mnt: &Path, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    loop {
        fs::File::open(mnt.join("keep")).unwrap().sync_all().unwrap();
        if cond() {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn check_after(img: &Path, s: &Scratch) {
    assert_fsck_clean(img);
    let k = s.mkdir("kernel");
    kernel_mount(img, &k, "ro");
    assert_eq!(fs::read(k.join("keep")).unwrap(), b"kept across the trim\n");
    assert!(!k.join("big").exists());
    kernel_umount(&k);
}

#[test]
fn fstrim_gives_the_freed_space_back_to_the_image_file() {
    if !require_root_and_fuse() {
        return;
    }
    let s = Scratch::new("discard-fstrim");
    let mnt = s.mkdir("mnt");
    let img = image_with_big_file(&s, &mnt);
    let m = ext4box_mount_ok(&img, &mnt, "");
    let before = allocated(&img);
    let free_bytes = || statvfs(&mnt).map(|v| v.f_bfree * v.f_bsize).unwrap();
    let free_before = free_bytes();
    fs::remove_file(mnt.join("big")).unwrap();
    // Freed when the kernel forgets the file (FITRIM commits the journal itself, as `rm; fstrim` wants).
    until_committed(&mnt, "the removed file's blocks to be free", || free_bytes() >= free_before + BIG as u64);
    // Without discard the blocks stay allocated in the image file until a trim.
    assert!(allocated(&img) + (4 << 20) > before, "space came back without a trim or -o discard");
    let out = run_ok(Command::new("fstrim").arg("-v").arg(&mnt));
    let trimmed: u64 = out
        .split('(')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("fstrim -v said: {out}"));
    assert!(trimmed >= BIG as u64, "fstrim trimmed {trimmed} bytes: {out}");
    let after = allocated(&img);
    assert!(after + (BIG as u64) * 9 / 10 < before, "the image still takes {after} bytes (before the trim: {before})");
    assert_eq!(fs::read(mnt.join("keep")).unwrap(), b"kept across the trim\n");
    m.unmount();
    check_after(&img, &s);
}

#[test]
fn the_discard_option_punches_blocks_as_commits_free_them() {
    if !require_root_and_fuse() {
        return;
    }
    let s = Scratch::new("discard-online");
    let mnt = s.mkdir("mnt");
    let img = image_with_big_file(&s, &mnt);
    let m = ext4box_mount_ok(&img, &mnt, "discard");
    let before = allocated(&img);
    fs::remove_file(mnt.join("big")).unwrap();
    until_committed(&mnt, "the image file to shrink", || allocated(&img) + (BIG as u64) * 9 / 10 < before);
    m.unmount();
    check_after(&img, &s);
}

#[test]
fn fstrim_on_a_read_only_mount_is_refused() {
    if !require_root_and_fuse() {
        return;
    }
    let s = Scratch::new("discard-ro");
    let mnt = s.mkdir("mnt");
    let img = s.path("img");
    mkfs(&img, 32 << 20, &[]);
    let before = fs::read(&img).unwrap();
    let m = ext4box_mount_ok(&img, &mnt, "ro");
    let out = Command::new("fstrim").arg(&mnt).output().unwrap();
    assert!(!out.status.success(), "fstrim of a read-only mount succeeded:\n{}", output_text(&out));
    m.unmount();
    assert!(fs::read(&img).unwrap() == before, "a read-only mount's fstrim changed the image");
}
