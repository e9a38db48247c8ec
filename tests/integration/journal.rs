//! Journal replay: images whose journal needs recovery, made dirty by the kernel itself
//! (EXT4_IOC_SHUTDOWN with the log flushed, then umount), and the `j_*` images of the e2fsprogs corpus.
//!
//! - `ro` replays into memory: the tree equals the kernel's view of a copy e2fsck replayed, and the image
//!   file is byte-for-byte unchanged.
//! - `rw` replays onto the image: afterwards `e2fsck -fn` is clean, needs_recovery is gone, and the kernel
//!   reads the same tree as from e2fsck's replay.
//! - A journal that cannot be replayed refuses the mount with one line; `ro,norecovery` still mounts.
//!
//! Needs root (loop mounts, the shutdown ioctl) and /dev/fuse.

use crate::common::*;
use std::fs::{self, File};
use std::path::Path;
use std::process::Command;

fn sha(path: &Path) -> u64 {
    hash_path(path)
}

fn e2fsck_replay(img: &Path) {
    let out = Command::new("e2fsck").arg("-fy").arg(img).output().unwrap();
    // 0: clean, 1: errors corrected (recovery itself counts as a correction).
    assert!(matches!(out.status.code(), Some(0 | 1)), "e2fsck -fy {img:?}:\n{}", output_text(&out));
}

/// Writes a workload on a kernel mount of `img`, shuts the filesystem down with the log flushed, and
/// keeps the image as it was at that moment: its journal holds committed transactions never checkpointed.
fn make_dirty(img: &Path, mnt: &Path, wrap: bool) {
    kernel_mount(img, mnt, "");
    let d = mnt.join("dir");
    fs::create_dir(&d).unwrap();
    for i in 0..300 {
        fs::write(d.join(format!("f{i}")), format!("file {i}\n").repeat(i % 7 + 1)).unwrap();
    }
    fs::write(mnt.join("big"), pseudo_random(7, 3 << 20)).unwrap();
    run_ok(&mut Command::new("sync"));
    // Changes after the sync live only in the journal.
    if wrap {
        // Transactions committed one by one (each fsync commits one) until the live part of the log
        // runs past the journal's end and on from its start.
        let mut r = 0;
        while !log_wraps(img) {
            assert!(r < 400, "the log never wrapped");
            let dir = mnt.join(format!("round{r}"));
            fs::create_dir(&dir).unwrap();
            for i in 0..100 {
                fs::write(dir.join(format!("f{i}")), format!("{r}/{i}\n")).unwrap();
            }
            File::open(dir.join("f0")).unwrap().sync_all().unwrap();
            r += 1;
        }
    }
    for i in (0..300).step_by(3) {
        fs::remove_file(d.join(format!("f{i}"))).unwrap();
    }
    fs::create_dir(mnt.join("later")).unwrap();
    fs::hard_link(mnt.join("big"), mnt.join("later/big2")).unwrap();
    fs::write(mnt.join("later/small"), b"after the sync\n").unwrap();
    set_xattr(&mnt.join("later/small"), "user.note", b"journaled").unwrap();
    fs::rename(d.join("f1"), mnt.join("later/renamed")).unwrap();
    // fsync commits the running transaction to the journal; the flusher writes blocks home only after
    // ~30 s, so until then these changes exist only in the log.
    File::open(mnt.join("later/small")).unwrap().sync_all().unwrap();
    kernel_crash(img, mnt, EXT4_GOING_FLAGS_LOGFLUSH);
}

/// Whether the live part of the log runs past the journal's end and on from its start, per debugfs.
fn log_wraps(img: &Path) -> bool {
    let out = run_ok(Command::new("debugfs").arg("-c").arg("-R").arg("logdump").arg(img));
    let blocks: Vec<u64> = out
        .lines()
        .filter(|l| l.starts_with("Found expected sequence"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    blocks.windows(2).any(|w| w[1] < w[0])
}

fn walk_of(mnt: &Path) -> Walk {
    walk(mnt, &WalkOpts::default())
}

/// The kernel's view of `img` after e2fsck replayed its journal.
fn reference_walk(img: &Path, mnt: &Path) -> Walk {
    e2fsck_replay(img);
    kernel_mount(img, mnt, "ro");
    let w = walk_of(mnt);
    kernel_umount(mnt);
    w
}

/// The checks every dirty image gets: `ro` in memory, `rw` onto the image.
fn check_replay(dirty: &Path, scratch: &Scratch, name: &str) {
    let kmnt = scratch.mkdir(&format!("{name}-k"));
    let emnt = scratch.mkdir(&format!("{name}-e"));
    let reference = scratch.path(&format!("{name}-ref.img"));
    fs::copy(dirty, &reference).unwrap();
    let expected = reference_walk(&reference, &kmnt);

    let ro = scratch.path(&format!("{name}-ro.img"));
    fs::copy(dirty, &ro).unwrap();
    let before = sha(&ro);
    let m = ext4box_mount_ok(&ro, &emnt, "ro");
    let seen = walk_of(&emnt);
    m.unmount();
    assert_walks_equal(&format!("{name}: e2fsck's replay"), &expected, &format!("{name}: ext4box ro"), &seen);
    assert_eq!(before, sha(&ro), "{name}: a read-only mount changed the image file");

    let rw = scratch.path(&format!("{name}-rw.img"));
    fs::copy(dirty, &rw).unwrap();
    let m = ext4box_mount_ok(&rw, &emnt, "rw");
    m.unmount();
    assert_fsck_clean(&rw);
    assert!(!fs_features(&rw).iter().any(|f| f == "needs_recovery"), "{name}: needs_recovery left set");
    kernel_mount(&rw, &kmnt, "ro");
    let after = walk_of(&kmnt);
    kernel_umount(&kmnt);
    assert_walks_equal(&format!("{name}: e2fsck's replay"), &expected, &format!("{name}: after ext4box rw"), &after);
}

#[test]
fn kernel_made_dirty_journals_replay_as_e2fsck_does() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let scratch = Scratch::new("journal-kernel");
    let kmnt = scratch.mkdir("make");
    // (name, mkfs arguments, whether the log must wrap)
    let shapes: [(&str, &[&str], bool); 5] = [
        ("4k-csum", &["-b", "4096"], false),
        ("1k-csum", &["-b", "1024"], false),
        ("4k-nocsum", &["-b", "4096", "-O", "^metadata_csum"], false),
        // ext3: no 64bit, so 32-bit block tags and no checksums.
        ("1k-ext3", &["-t", "ext3", "-b", "1024"], false),
        // The smallest journal (1024 blocks), committed to until its live part wraps past the end.
        ("1k-wrapped", &["-b", "1024", "-J", "size=1"], true),
    ];
    for (name, args, wrap) in shapes {
        let img = scratch.path(&format!("{name}.img"));
        mkfs(&img, 96 << 20, args);
        make_dirty(&img, &kmnt, wrap);
        if wrap {
            assert!(log_wraps(&img), "{name}: the crashed image's log does not wrap");
        }
        check_replay(&img, &scratch, name);
        // The journal mattered: without replay the image lacks the last changes.
        let emnt = scratch.mkdir(&format!("{name}-norecovery"));
        let m = ext4box_mount_ok(&img, &emnt, "ro,norecovery");
        let unreplayed = fs::read(emnt.join("later/small"));
        m.unmount();
        assert!(unreplayed.is_err(), "{name}: later/small is on the image without replay: the test replays nothing");
    }
}

fn corpus_image(name: &str, scratch: &Scratch) -> Option<std::path::PathBuf> {
    let gz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/e2fsprogs").join(format!("{name}.img.gz"));
    if !gz.exists() {
        assert!(!is_ci(), "CI=true but {gz:?} is missing");
        eprintln!("skipping {name}: {gz:?} is absent");
        return None;
    }
    let img = scratch.path(&format!("{name}.img"));
    let out = Command::new("sh").arg("-c").arg(format!("zcat '{}' > '{}'", gz.display(), img.display())).output();
    assert!(out.is_ok_and(|o| o.status.success()), "zcat {gz:?}");
    Some(img)
}

#[test]
fn corpus_journals_replay_as_e2fsck_does() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let scratch = Scratch::new("journal-corpus");
    // Checksum errors in a commit, descriptor, revoke or logged block: the replay stops where e2fsck stops.
    // f_jnl_64bit: a 64-bit journal holding a whole tree of 1,300 entries.
    for name in [
        "j_corrupt_commit_csum",
        "j_corrupt_descr_csum",
        "j_corrupt_journal_block",
        "j_corrupt_revoke_csum",
        "f_jnl_64bit",
    ] {
        let Some(img) = corpus_image(name, &scratch) else { continue };
        check_replay(&img, &scratch, name);
    }
}

#[test]
fn a_damaged_journal_refuses_replay_but_not_norecovery() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let scratch = Scratch::new("journal-damaged");
    let Some(img) = corpus_image("j_corrupt_sb_csum", &scratch) else { return };
    let mnt = scratch.mkdir("m");
    let before = sha(&img);
    for opts in ["ro", "rw"] {
        let out = ext4box_mount(&img, &mnt, opts);
        assert!(!out.status.success(), "-o {opts}: a journal with a bad superblock checksum was replayed");
        let lines = stderr_lines(&out);
        assert_eq!(lines.len(), 1, "-o {opts}: want one error line, got {lines:?}");
        assert!(lines[0].contains("journal") && lines[0].contains("norecovery"), "-o {opts}: {lines:?}");
        assert!(mountinfo_entry(&mnt).is_none());
    }
    let m = ext4box_mount_ok(&img, &mnt, "ro,norecovery");
    assert!(fs::read_dir(&mnt).unwrap().count() > 0);
    m.unmount();
    assert_eq!(before, sha(&img), "a refused or norecovery mount changed the image");
}

/// `commit=` is honoured: a directory made on a `commit=1` mount is in the log (a copy of the image taken
/// while still mounted replays to it) after a few seconds without any fsync, and on a `commit=60` mount
/// it is not yet. The kernel replays ext4box's log of that copy to the same tree as e2fsck does.
#[test]
fn commit_interval_commits_without_fsync_and_the_kernel_replays_the_log() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let scratch = Scratch::new("journal-commit");
    let mnt = scratch.mkdir("mnt");
    let kmnt = scratch.mkdir("kernel");
    for (interval, expect_committed) in [(1, true), (60, false)] {
        let img = scratch.path(&format!("commit{interval}.img"));
        mkfs(&img, 64 << 20, &[]);
        let m = ext4box_mount_ok(&img, &mnt, &format!("commit={interval}"));
        // An fsync first, so the copy below has a journal to replay whatever the interval.
        fs::write(mnt.join("first"), b"first").unwrap();
        File::open(mnt.join("first")).unwrap().sync_all().unwrap();
        fs::create_dir(mnt.join("made-later")).unwrap();
        fs::create_dir(mnt.join("made-later/inner")).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(3000));
        let copy = scratch.path(&format!("commit{interval}-crash.img"));
        fs::copy(&img, &copy).unwrap();
        m.unmount();
        assert_fsck_clean(&img);
        assert!(fs_features(&copy).iter().any(|f| f == "needs_recovery"), "a mounted image must need recovery");
        // The kernel replays the log ext4box wrote.
        let kcopy = scratch.path(&format!("commit{interval}-kernel.img"));
        fs::copy(&copy, &kcopy).unwrap();
        kernel_mount(&kcopy, &kmnt, "noatime"); // (read-write: a read-only loop device cannot be replayed)
        let by_kernel = walk(&kmnt, &WalkOpts::default());
        let present = kmnt.join("made-later/inner").is_dir();
        assert_eq!(fs::read(kmnt.join("first")).unwrap(), b"first", "commit={interval}: the fsynced file");
        kernel_umount(&kmnt);
        assert_fsck_clean(&kcopy);
        assert_eq!(present, expect_committed, "commit={interval}: made-later/inner after 3 s without fsync");
        // e2fsck's replay of the same copy gives the same tree.
        e2fsck_replay(&copy);
        assert_fsck_clean(&copy);
        kernel_mount(&copy, &kmnt, "ro");
        let by_e2fsck = walk(&kmnt, &WalkOpts::default());
        kernel_umount(&kmnt);
        assert_walks_equal("e2fsck's replay", &by_e2fsck, "the kernel's replay", &by_kernel);
    }
}

/// A crash with files unlinked while open leaves them on the orphan chain (or in the orphan file). The
/// kernel's read-write mount deletes them; ext4box's read-only mount does the same in memory: the free
/// counts are the kernel's after its recovery, and the image file is unchanged.
#[test]
fn a_read_only_mount_cleans_up_the_orphans_a_crash_left_in_memory() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let scratch = Scratch::new("journal-ro-orphans");
    let make = scratch.mkdir("make");
    for (name, args) in [
        ("chain", &["-b", "4096", "-O", "^orphan_file"][..]),
        ("orphan-file", &["-b", "1024", "-O", "orphan_file"][..]),
    ] {
        let img = scratch.path(&format!("{name}.img"));
        mkfs(&img, 64 << 20, args);
        kernel_mount(&img, &make, "");
        fs::write(make.join("keep"), b"kept\n").unwrap();
        for i in 0..3 {
            fs::write(make.join(format!("gone{i}")), pseudo_random(i, 4 << 20)).unwrap();
        }
        run_ok(&mut Command::new("sync"));
        // Unlinked while open, their unlink committed to the journal, their blocks still allocated.
        let held: Vec<File> = (0..3)
            .map(|i| {
                let p = make.join(format!("gone{i}"));
                let f = File::open(&p).unwrap();
                fs::remove_file(&p).unwrap();
                f
            })
            .collect();
        File::open(make.join("keep")).unwrap().sync_all().unwrap();
        kernel_shutdown(&make, EXT4_GOING_FLAGS_LOGFLUSH);
        let crashed = img.with_extension("crashed");
        fs::copy(&img, &crashed).unwrap();
        drop(held);
        kernel_umount(&make);
        fs::rename(&crashed, &img).unwrap();
        assert!(fs_features(&img).iter().any(|f| f == "needs_recovery"), "{name}: no journal to recover");

        // The kernel's view after its own recovery and orphan cleanup (on a copy: it writes).
        let reference = scratch.path(&format!("{name}-kernel.img"));
        fs::copy(&img, &reference).unwrap();
        kernel_mount(&reference, &make, "");
        let k = statvfs(&make).unwrap();
        kernel_umount(&make);

        let before = sha(&img);
        let emnt = scratch.mkdir(&format!("{name}-e"));
        let m = ext4box_mount_ok(&img, &emnt, "ro");
        let e = statvfs(&emnt).unwrap();
        assert_eq!(fs::read(emnt.join("keep")).unwrap(), b"kept\n");
        assert!(!emnt.join("gone0").exists());
        m.unmount();
        assert_eq!(
            (e.f_bfree, e.f_ffree),
            (k.f_bfree, k.f_ffree),
            "{name}: free blocks and inodes of ext4box's read-only mount, then the kernel's after recovery"
        );
        assert_eq!(before, sha(&img), "{name}: a read-only mount changed the image file");
        // The orphans' 12 MiB are used on the image as it is.
        let m = ext4box_mount_ok(&img, &emnt, "ro,norecovery");
        let unreplayed = statvfs(&emnt).unwrap();
        m.unmount();
        assert!(unreplayed.f_bfree < e.f_bfree, "{name}: the crash left no orphan blocks: the test cleans up nothing");
    }
}
