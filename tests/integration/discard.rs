//! Discard: `fstrim MNT` (FITRIM through FUSE) punches the free blocks out of an image file, and
//! `-o discard` does it as each journal commit frees blocks, so a sparse image shrinks again. After each
//! test: unmount, `e2fsck -fn` clean, and the kernel reads back what was kept. Needs root, /dev/fuse and
//! fstrim (util-linux).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::*;

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
    wait_until(what, Duration::from_secs(20), || {
        fs::File::open(mnt.join("keep")).unwrap().sync_all().unwrap();
        cond()
    });
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
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
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
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
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
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
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

/// Sectors a block device has discarded so far (`/sys/block/NAME/stat`, the 14th field).
fn discarded_sectors(dev: &str) -> u64 {
    let name = Path::new(dev).file_name().unwrap().to_str().unwrap();
    let stat = fs::read_to_string(format!("/sys/block/{name}/stat")).unwrap();
    stat.split_whitespace().nth(13).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{name} stat: {stat}"))
}

/// A block device (a loop device over a sparse image, which turns discards into holes in it) gets
/// BLKDISCARD only when the mount says `discard`: then as commits free blocks and on fstrim, and
/// without it fstrim is refused and nothing reaches the device.
#[test]
fn a_block_device_gets_blkdiscard_only_with_the_discard_option() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("discard-blockdev");
    let mnt = s.mkdir("mnt");
    let img = image_with_big_file(&s, &mnt);
    let dev = run_ok(Command::new("losetup").args(["-f", "--show"]).arg(&img)).trim().to_string();
    struct Loop(String);
    impl Drop for Loop {
        fn drop(&mut self) {
            let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
        }
    }
    let _loop = Loop(dev.clone());
    let free_bytes = || statvfs(&mnt).map(|v| v.f_bfree * v.f_bsize).unwrap();

    let m = ext4box_mount_ok(Path::new(&dev), &mnt, "");
    let (sectors, before) = (discarded_sectors(&dev), allocated(&img));
    let free_before = free_bytes();
    fs::remove_file(mnt.join("big")).unwrap();
    until_committed(&mnt, "the removed file's blocks to be free", || free_bytes() >= free_before + BIG as u64);
    let out = Command::new("fstrim").arg(&mnt).output().unwrap();
    assert!(!out.status.success(), "fstrim of a block device without -o discard succeeded:\n{}", output_text(&out));
    m.unmount();
    assert_eq!(discarded_sectors(&dev), sectors, "a discard reached the block device without -o discard");
    assert!(allocated(&img) + (4 << 20) > before, "the loop device's image shrank without -o discard");

    let m = ext4box_mount_ok(Path::new(&dev), &mnt, "discard");
    fs::write(mnt.join("big"), pseudo_random(2, BIG)).unwrap();
    fs::File::open(mnt.join("big")).unwrap().sync_all().unwrap();
    let (sectors, before) = (discarded_sectors(&dev), allocated(&img));
    fs::remove_file(mnt.join("big")).unwrap();
    until_committed(&mnt, "the freed blocks to be discarded", || {
        discarded_sectors(&dev) >= sectors + (BIG as u64 / 512) * 9 / 10
    });
    assert!(allocated(&img) + (BIG as u64) * 9 / 10 < before, "the loop device's image did not shrink");
    let out = run_ok(Command::new("fstrim").arg("-v").arg(&mnt));
    assert!(out.contains("trimmed"), "fstrim -v said: {out}");
    m.unmount();
    assert_fsck_clean(Path::new(&dev));
    drop(_loop);
    check_after(&img, &s);
}

/// A qcow2 image (v3, and v2 as `compat=0.10`) made from the image with the big file.
fn qcow2_of(raw: &Path, s: &Scratch, compat: &str) -> std::path::PathBuf {
    let img = s.path(&format!("img-{compat}.qcow2"));
    let o = format!("compat={compat}");
    run_ok(Command::new("qemu-img").args(["convert", "-O", "qcow2", "-o", &o]).arg(raw).arg(&img));
    img
}

/// After a qcow2 image was trimmed: `qemu-img check` clean, and its raw form passes e2fsck and reads
/// back in the kernel.
fn check_qcow2_after(img: &Path, s: &Scratch) {
    let out = Command::new("qemu-img").arg("check").arg(img).output().unwrap();
    assert!(out.status.success(), "qemu-img check failed:\n{}", output_text(&out));
    let raw = s.path("back.raw");
    run_ok(Command::new("qemu-img").args(["convert", "-O", "raw"]).arg(img).arg(&raw));
    check_after(&raw, s);
    fs::remove_file(raw).unwrap();
}

#[test]
fn fstrim_and_discard_free_the_clusters_of_a_qcow2_image() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("discard-qcow2");
    let mnt = s.mkdir("mnt");
    let raw = image_with_big_file(&s, &mnt);
    for compat in ["1.1", "0.10"] {
        // fstrim.
        let img = qcow2_of(&raw, &s, compat);
        let m = ext4box_mount_ok(&img, &mnt, "");
        let before = allocated(&img);
        let free_bytes = || statvfs(&mnt).map(|v| v.f_bfree * v.f_bsize).unwrap();
        let free_before = free_bytes();
        fs::remove_file(mnt.join("big")).unwrap();
        until_committed(&mnt, "the removed file's blocks to be free", || free_bytes() >= free_before + BIG as u64);
        let out = run_ok(Command::new("fstrim").arg("-v").arg(&mnt));
        assert!(out.contains("trimmed"), "fstrim -v said: {out}");
        assert_eq!(fs::read(mnt.join("keep")).unwrap(), b"kept across the trim\n");
        m.unmount();
        let after = allocated(&img);
        assert!(
            after + (BIG as u64) * 9 / 10 < before,
            "qcow2 {compat}: the image still takes {after} bytes after fstrim (before: {before})"
        );
        let map = run_ok(Command::new("qemu-img").args(["map", "--output=json"]).arg(&img));
        let data_bytes: u64 = map
            .lines()
            .filter(|l| l.contains("\"data\": true"))
            .filter_map(|l| l.split("\"length\": ").nth(1)?.split(',').next()?.trim().parse::<u64>().ok())
            .sum();
        assert!(data_bytes < (BIG as u64) / 2, "qcow2 {compat}: {data_bytes} bytes still mapped as data:\n{map}");
        check_qcow2_after(&img, &s);
        fs::remove_file(&img).unwrap();

        // -o discard.
        let img = qcow2_of(&raw, &s, compat);
        let m = ext4box_mount_ok(&img, &mnt, "discard");
        let before = allocated(&img);
        fs::remove_file(mnt.join("big")).unwrap();
        until_committed(&mnt, "the qcow2 image to shrink", || allocated(&img) + (BIG as u64) * 9 / 10 < before);
        // Space freed and written again stays consistent: the clusters are reused.
        fs::write(mnt.join("again"), pseudo_random(2, 8 << 20)).unwrap();
        m.unmount();
        let m = ext4box_mount_ok(&img, &mnt, "ro");
        assert!(fs::read(mnt.join("again")).unwrap() == pseudo_random(2, 8 << 20), "qcow2 {compat}: rewritten data");
        m.unmount();
        let out = Command::new("qemu-img").arg("check").arg(&img).output().unwrap();
        assert!(out.status.success(), "qcow2 {compat}: qemu-img check failed:\n{}", output_text(&out));
        fs::remove_file(&img).unwrap();
    }
}
