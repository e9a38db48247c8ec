//! Multiple mount protection (`-O mmp`): a read-write mount takes the MMP block with the kernel's
//! sequence protocol, rewrites it every `s_mmp_update_interval` seconds with this host's name (so the
//! kernel, on this host or another, refuses to mount the image meanwhile), and releases it at unmount;
//! a mount after a crash waits out the interval before taking the image; a block e2fsck holds refuses
//! the mount; another node writing the block stops the mount's writes. After each: the block as the
//! protocol leaves it, and where the mount wrote, `e2fsck -fn` clean and the kernel reads back what was
//! written. Needs root (loop mounts) and /dev/fuse.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

const SEQ_CLEAN: u32 = 0xFF4D_4D50;
const SEQ_FSCK: u32 = 0xE24D_4D50;

/// The MMP record of `img`: where it is, and its fields.
struct Record {
    offset: u64,
    bytes: Vec<u8>,
}

impl Record {
    fn read(img: &Path) -> Record {
        let f = File::open(img).unwrap();
        let mut sb = vec![0u8; 1024];
        f.read_exact_at(&mut sb, 1024).unwrap();
        let block_size = 1024u64 << u32::from_le_bytes(sb[0x18..0x1C].try_into().unwrap());
        let block = u64::from_le_bytes(sb[0x168..0x170].try_into().unwrap());
        assert_ne!(block, 0, "{img:?} has no MMP block");
        let mut bytes = vec![0u8; 1024];
        f.read_exact_at(&mut bytes, block * block_size).unwrap();
        assert_eq!(u32::from_le_bytes(bytes[0..4].try_into().unwrap()), 0x004D_4D50, "MMP magic");
        Record { offset: block * block_size, bytes }
    }

    fn seq(&self) -> u32 {
        u32::from_le_bytes(self.bytes[4..8].try_into().unwrap())
    }

    fn time(&self) -> u64 {
        u64::from_le_bytes(self.bytes[8..16].try_into().unwrap())
    }

    fn name(&self, field: std::ops::Range<usize>) -> String {
        let raw = &self.bytes[field];
        String::from_utf8_lossy(&raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())]).into_owned()
    }

    fn node(&self) -> String {
        self.name(0x10..0x50)
    }

    fn device(&self) -> String {
        self.name(0x50..0x70)
    }

    /// Writes the record with `seq` and `node`, sealed with the image's metadata_csum seed, as another
    /// host (or e2fsck) would.
    fn write_as(img: &Path, seq: u32, node: &str) {
        let mut r = Record::read(img);
        r.bytes[4..8].copy_from_slice(&seq.to_le_bytes());
        r.bytes[0x10..0x50].fill(0);
        r.bytes[0x10..0x10 + node.len()].copy_from_slice(node.as_bytes());
        let f = fs::OpenOptions::new().read(true).write(true).open(img).unwrap();
        let mut uuid = [0u8; 16];
        f.read_exact_at(&mut uuid, 1024 + 0x68).unwrap();
        // The kernel's crc32c without the final inversion, as ext4 uses it: seed crc32c(~0, uuid).
        let raw = |seed: u32, data: &[u8]| !crc32c::crc32c_append(!seed, data);
        let sum = raw(raw(!0, &uuid), &r.bytes[..0x3FC]);
        r.bytes[0x3FC..].copy_from_slice(&sum.to_le_bytes());
        f.write_all_at(&r.bytes, r.offset).unwrap();
        f.sync_all().unwrap();
    }
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string()
}

/// An `mmp` image with one file, made by mke2fs (update interval 5 s).
fn mmp_image(s: &Scratch) -> std::path::PathBuf {
    let img = s.path("mmp.img");
    mkfs(&img, 32 << 20, &["-O", "mmp"]);
    assert!(fs_features(&img).iter().any(|f| f == "mmp"));
    assert_eq!(Record::read(&img).seq(), SEQ_CLEAN, "mke2fs leaves the MMP block clean");
    img
}

/// The kernel's own read-write mount of `img`; Ok when it mounted (then unmounted again).
fn kernel_rw_mount(img: &Path, mnt: &Path) -> Result<(), String> {
    let out = run_timeout(Command::new("mount").arg("-o").arg("loop").arg(img).arg(mnt), Duration::from_secs(120))?;
    if out.status.success() {
        kernel_umount(mnt);
        return Ok(());
    }
    Err(output_text(&out))
}

fn check_written(img: &Path, s: &Scratch, files: &[(&str, &[u8])]) {
    assert_fsck_clean(img);
    let k = s.mkdir("kernel");
    kernel_mount(img, &k, "ro");
    for (name, data) in files {
        assert_eq!(fs::read(k.join(name)).unwrap(), *data, "{name} as the kernel reads it");
    }
    kernel_umount(&k);
}

/// While ext4box has the image read-write, the block carries this host's name and a sequence that
/// moves every interval, and the kernel refuses a read-write mount of the image as "already active on
/// another node"; the unmount writes the clean sequence.
#[test]
fn a_mount_keeps_the_block_updated_the_kernel_stays_away_and_the_unmount_releases_it() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("mmp-mounted");
    let img = mmp_image(&s);
    let mnt = s.mkdir("mnt");
    let m = ext4box_mount_ok(&img, &mnt, "");
    fs::write(mnt.join("written"), b"while protected\n").unwrap();
    let first = Record::read(&img);
    assert!(first.seq() < SEQ_FSCK, "sequence while mounted: {:#x}", first.seq());
    assert_eq!(first.node(), hostname());
    assert_eq!(first.device(), "mmp.img");
    // The kernel reads the block, waits twice the check interval and finds it changed.
    let refused = kernel_rw_mount(&img, &s.mkdir("kernel-rw"));
    assert!(refused.is_err(), "the kernel mounted read-write an image ext4box had read-write");
    let later = Record::read(&img);
    assert_ne!(later.seq(), first.seq(), "the sequence did not move in 20 s");
    assert!(later.time() > first.time(), "the update time did not move");
    assert!(m.alive());
    assert_eq!(fs::read(mnt.join("written")).unwrap(), b"while protected\n");
    m.unmount();
    assert_eq!(Record::read(&img).seq(), SEQ_CLEAN, "the unmount did not release the MMP block");
    check_written(&img, &s, &[("written", b"while protected\n")]);
    assert_eq!(kernel_rw_mount(&img, &s.path("kernel-rw")), Ok(()), "the kernel cannot mount the released image");
}

/// A mount whose server was killed leaves the block taken; the next mount waits about twice the check
/// interval, sees nobody writing, and takes the image.
#[test]
fn after_a_crash_the_next_mount_waits_out_the_interval_then_takes_the_image() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("mmp-crash");
    let img = mmp_image(&s);
    let mnt = s.mkdir("mnt");
    let m = ext4box_mount_ok(&img, &mnt, "");
    fs::write(mnt.join("before"), b"before the crash\n").unwrap();
    File::open(mnt.join("before")).unwrap().sync_all().unwrap();
    for pid in &m.pids {
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    wait_until("the killed server to die", Duration::from_secs(10), || !m.pids.iter().any(|&p| pid_alive(p)));
    run_ok(Command::new("umount").arg("-l").arg(&mnt));
    let left = Record::read(&img);
    assert!(left.seq() < SEQ_FSCK, "a killed mount left sequence {:#x}", left.seq());
    let start = Instant::now();
    let m = ext4box_mount_ok(&img, &mnt, "");
    let waited = start.elapsed();
    // The check interval is at least 5 s: the wait is at least 2 * 5 + 1 s.
    assert!(waited >= Duration::from_secs(11), "the mount took a block left taken after {waited:?}");
    assert_eq!(fs::read(mnt.join("before")).unwrap(), b"before the crash\n");
    fs::write(mnt.join("after"), b"after the crash\n").unwrap();
    m.unmount();
    assert_eq!(Record::read(&img).seq(), SEQ_CLEAN);
    check_written(&img, &s, &[("before", b"before the crash\n"), ("after", b"after the crash\n")]);
}

/// A block e2fsck holds refuses a read-write mount with one line that says so, and leaves the block
/// as it was; a read-only mount does not take the block and goes ahead.
#[test]
fn a_block_held_by_e2fsck_refuses_the_mount_and_read_only_still_mounts() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("mmp-fsck");
    let img = mmp_image(&s);
    Record::write_as(&img, SEQ_FSCK, "checker");
    let mnt = s.mkdir("mnt");
    let out = ext4box_mount(&img, &mnt, "");
    assert!(!out.status.success(), "mounted an image e2fsck holds:\n{}", output_text(&out));
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "not one error line:\n{}", output_text(&out));
    assert!(lines[0].contains("e2fsck"), "the error does not say e2fsck has the image: {}", lines[0]);
    assert!(mountinfo_entry(&mnt).is_none());
    let after = Record::read(&img);
    assert_eq!((after.seq(), after.node()), (SEQ_FSCK, "checker".to_string()), "a refused mount wrote the block");
    let m = ext4box_mount_ok(&img, &mnt, "ro");
    assert!(fs::read_dir(&mnt).unwrap().any(|e| e.unwrap().file_name() == "lost+found"));
    m.unmount();
    assert_eq!(Record::read(&img).seq(), SEQ_FSCK, "a read-only mount wrote the block");
}

/// Another node writing the block while ext4box has the image read-write means that node has it: the
/// mount stops writing (EROFS) within an update interval, and leaves the block as that node wrote it.
#[test]
fn another_node_taking_the_block_stops_the_mounts_writes() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("mmp-taken");
    let img = mmp_image(&s);
    let mnt = s.mkdir("mnt");
    let m = ext4box_mount_ok(&img, &mnt, "");
    fs::write(mnt.join("mine"), b"written here\n").unwrap();
    // Right after one of our updates, so that the next one is seconds away.
    let ours = Record::read(&img);
    wait_until("the MMP block's next update", Duration::from_secs(20), || Record::read(&img).seq() != ours.seq());
    Record::write_as(&img, 0x1234, "other-host");
    let start = Instant::now();
    let errno = loop {
        match fs::write(mnt.join("more"), b"x") {
            Err(e) => break errno_of(&e),
            Ok(()) => {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "still writable 20 s after another node took the image"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    assert_eq!(errno, libc::EROFS, "writing after another node took the image");
    assert_eq!(fs::read(mnt.join("mine")).unwrap(), b"written here\n", "reads go on");
    m.unmount();
    let r = Record::read(&img);
    assert_eq!((r.seq(), r.node()), (0x1234, "other-host".to_string()), "the unmount overwrote the other node's block");
}
