//! Fast-commit replay: images made with `mkfs.ext4 -O fast_commit`, written by the kernel with an
//! fsync-heavy workload after a sync (so the last changes live only in fast commits), then shut down
//! with the log flushed. debugfs must show live fast commits (tid one past the last full commit); the
//! kernel's own replay of a copy is the reference (e2fsprogs 1.47's e2fsck cannot replay some of them).
//!
//! - `ro` replays into memory: the tree equals the kernel's, the image file is unchanged.
//! - `rw` replays onto the image: `e2fsck -fn` is clean, needs_recovery is gone, the kernel reads the
//!   same tree; a file written after the replay is there too.
//!
//! Needs root (loop mounts, the shutdown ioctl) and /dev/fuse.

use crate::common::*;
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

fn write_synced(path: &Path, data: &[u8]) {
    let mut f = File::create(path).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

/// Changes each made durable by its own fsync: fast commits, unless the kernel falls back to a full one.
fn fsync_workload(mnt: &Path) {
    // First what makes the next commit a full one (an unlink, a directory's fsync).
    fs::remove_file(mnt.join("old/f2")).unwrap();
    File::open(mnt.join("old")).unwrap().sync_all().unwrap();
    write_synced(&mnt.join("new-small"), b"hello, fast commit\n");
    write_synced(&mnt.join("new-big"), &pseudo_random(1, 200_000));
    let mut f = OpenOptions::new().append(true).open(mnt.join("old/f1")).unwrap();
    f.write_all(b"appended after the sync\n").unwrap();
    f.sync_all().unwrap();
    let f = OpenOptions::new().write(true).open(mnt.join("old/big")).unwrap();
    f.write_all_at(&pseudo_random(2, 12_000), 50_000).unwrap();
    f.sync_all().unwrap();
    let f = OpenOptions::new().write(true).open(mnt.join("old/shrink")).unwrap();
    f.set_len(10_000).unwrap();
    f.sync_all().unwrap();
    let mut f = File::create(mnt.join("sparse")).unwrap();
    f.seek(SeekFrom::Start(3 << 20)).unwrap();
    f.write_all(b"the tail of a sparse file").unwrap();
    f.sync_all().unwrap();
    fs::hard_link(mnt.join("new-small"), mnt.join("old/hard")).unwrap();
    File::open(mnt.join("new-small")).unwrap().sync_all().unwrap();
    for i in 0..20 {
        write_synced(&mnt.join(format!("old/many{i}")), &pseudo_random(10 + i, (i as usize) * 1500));
    }
    let f = OpenOptions::new().write(true).open(mnt.join("new-big")).unwrap();
    f.set_len(70_000).unwrap();
    f.write_all_at(b"rewritten", 1000).unwrap();
    f.sync_all().unwrap();
    // A new directory (its parent gains a link) with a file in it.
    fs::create_dir(mnt.join("old/newdir")).unwrap();
    write_synced(&mnt.join("old/newdir/inner"), b"in a directory made under fast commits\n");
    // A directory removed (its parent loses a link), then another file's fsync.
    fs::remove_dir(mnt.join("old/empty-dir")).unwrap();
    write_synced(&mnt.join("old/after-rmdir"), b"synced after an rmdir\n");
}

/// A kernel-written fast_commit image whose last changes are only in fast commits.
fn make_dirty(img: &Path, mnt: &Path) {
    kernel_mount(img, mnt, "");
    fs::create_dir(mnt.join("old")).unwrap();
    fs::create_dir(mnt.join("old/empty-dir")).unwrap();
    for i in 1..=3 {
        fs::write(mnt.join(format!("old/f{i}")), format!("old file {i}\n")).unwrap();
    }
    fs::write(mnt.join("old/big"), pseudo_random(3, 400_000)).unwrap();
    fs::write(mnt.join("old/shrink"), pseudo_random(4, 300_000)).unwrap();
    run_ok(&mut Command::new("sync"));
    fsync_workload(mnt);
    // Flushing the log would make a full commit of everything; the fsyncs made the workload durable.
    kernel_crash(img, mnt, EXT4_GOING_FLAGS_NOLOGFLUSH);
}

/// How many fast-commit tails debugfs lists for the transaction after the last full commit.
fn live_fast_commits(img: &Path) -> usize {
    let out = run_ok(Command::new("debugfs").arg("-c").arg("-R").arg("logdump").arg(img));
    let last_full = out
        .lines()
        .rev()
        .filter(|l| l.starts_with("Found expected sequence") && l.contains("commit block"))
        .find_map(|l| l.split_whitespace().nth(3)?.trim_end_matches(',').parse::<u32>().ok())
        .expect("no full commit in the log");
    let tail = format!("tag TAIL, tid {}", last_full + 1);
    out.lines().filter(|l| l.trim() == tail).count()
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// `w` with the directory times a replay sets (the kernel's link and unlink replay stamp the directory
/// with the time of the replay: fast commits do not record directories) replaced by a marker.
fn replay_times(mut w: Walk, crashed: i64) -> Walk {
    for e in &mut w.entries {
        if let Ok(st) = &mut e.stat {
            if st.kind == "dir" && st.mtime.0 >= crashed {
                assert!(st.ctime.0 >= crashed, "{:?}: mtime set by the replay, ctime not", e.path);
                (st.mtime, st.ctime) = ((-1, 0), (-1, 0));
            }
        }
    }
    w
}

/// Right after mkfs: a directory removed and a file made and fsynced, so the fast commit follows the
/// first full commit, whose log blocks sit below some of their home blocks (with 4 KiB blocks mke2fs puts
/// the journal's start between the bitmaps and the inode table): a replay that writes the log before
/// reading its copies out would copy its own log blocks home.
fn make_dirty_fresh(img: &Path, mnt: &Path) {
    kernel_mount(img, mnt, "");
    fs::create_dir_all(mnt.join("old/empty-dir")).unwrap();
    fs::write(mnt.join("old/x"), b"x\n").unwrap();
    run_ok(&mut Command::new("sync"));
    fs::remove_dir(mnt.join("old/empty-dir")).unwrap();
    write_synced(&mnt.join("old/after"), b"made after the rmdir, in the directory's inode\n");
    kernel_crash(img, mnt, EXT4_GOING_FLAGS_NOLOGFLUSH);
}

fn check(scratch: &Scratch, name: &str, mkfs_args: &[&str], make: fn(&Path, &Path), min_live: usize) {
    let dirty = scratch.path(&format!("{name}.img"));
    mkfs(&dirty, 64 << 20, mkfs_args);
    let kmnt = scratch.mkdir(&format!("{name}-k"));
    let emnt = scratch.mkdir(&format!("{name}-e"));
    make(&dirty, &kmnt);
    let crashed = now();
    let live = live_fast_commits(&dirty);
    assert!(
        live >= min_live,
        "{name}: the workload left {live} live fast commits; the test needs some:\n{}",
        run_ok(Command::new("debugfs").arg("-c").arg("-R").arg("logdump").arg(&dirty))
    );

    // The kernel's replay is the reference, with what e2fsck then corrects: the kernel's replay of a
    // mkdir leaves link counts (the parent's, the new directory's), the directory's i_blocks and the
    // group's directory count as they were, which ext4box's replay gets right.
    let reference = scratch.path(&format!("{name}-ref.img"));
    fs::copy(&dirty, &reference).unwrap();
    kernel_mount(&reference, &kmnt, "");
    kernel_umount(&kmnt);
    let fixed = Command::new("e2fsck").arg("-fy").arg(&reference).output().unwrap();
    assert!(matches!(fixed.status.code(), Some(0 | 1)), "e2fsck -fy of the kernel's replay:\n{}", output_text(&fixed));
    assert_fsck_clean(&reference);
    kernel_mount(&reference, &kmnt, "ro");
    let expected = replay_times(walk(&kmnt, &WalkOpts::default()), crashed);
    kernel_umount(&kmnt);

    let ro = scratch.path(&format!("{name}-ro.img"));
    fs::copy(&dirty, &ro).unwrap();
    let before = hash_path(&ro);
    let m = ext4box_mount_ok(&ro, &emnt, "ro");
    let seen = replay_times(walk(&emnt, &WalkOpts::default()), crashed);
    m.unmount();
    assert_walks_equal(&format!("{name}: the kernel's replay"), &expected, &format!("{name}: ext4box ro"), &seen);
    assert_eq!(before, hash_path(&ro), "{name}: a read-only mount changed the image file");

    let rw = scratch.path(&format!("{name}-rw.img"));
    fs::copy(&dirty, &rw).unwrap();
    let m = ext4box_mount_ok(&rw, &emnt, "rw,noatime");
    let seen = replay_times(walk(&emnt, &WalkOpts::default()), crashed);
    fs::write(emnt.join("after-replay"), b"written by ext4box after the replay\n").unwrap();
    m.unmount();
    assert_walks_equal(&format!("{name}: the kernel's replay"), &expected, &format!("{name}: ext4box rw"), &seen);
    assert_fsck_clean(&rw);
    assert!(!fs_features(&rw).iter().any(|f| f == "needs_recovery"), "{name}: needs_recovery left set");
    kernel_mount(&rw, &kmnt, "ro");
    let after = walk(&kmnt, &WalkOpts::default());
    let extra = fs::read(kmnt.join("after-replay"));
    kernel_umount(&kmnt);
    assert_eq!(extra.unwrap(), b"written by ext4box after the replay\n");
    let after = Walk { entries: after.entries.into_iter().filter(|e| e.path != b"after-replay").collect(), ..after };
    let mut after = replay_times(after, crashed);
    // ext4box's own write after the replay changed the root's times again.
    for (e, x) in after.entries.iter_mut().zip(&expected.entries) {
        if e.path.is_empty() {
            *e = x.clone();
        }
    }
    assert_walks_equal(
        &format!("{name}: the kernel's replay"),
        &expected,
        &format!("{name}: after ext4box rw"),
        &after,
    );
}

#[test]
fn kernel_fast_commits_replay_as_the_kernel_does() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let scratch = Scratch::new("fast-commit");
    check(&scratch, "fc-4k", &["-b", "4096", "-O", "fast_commit"], make_dirty, 3);
    check(&scratch, "fc-1k", &["-b", "1024", "-O", "fast_commit"], make_dirty, 3);
    check(&scratch, "fc-4k-fresh", &["-b", "4096", "-O", "fast_commit"], make_dirty_fresh, 1);
}

/// A bigalloc image whose journal holds live fast commits: their replay here keeps the bitmaps by block,
/// which bigalloc's shared clusters break, so the mount is refused with one line naming the way out
/// (`ro,norecovery`, which then mounts), and the image is left as it was.
#[test]
fn fast_commits_on_bigalloc_are_refused_in_one_line() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let scratch = Scratch::new("fast-commit-bigalloc");
    let img = scratch.path("fc-bigalloc.img");
    let mnt = scratch.mkdir("mnt");
    mkfs(&img, 64 << 20, &["-O", "fast_commit,bigalloc", "-C", "16384"]);
    make_dirty(&img, &mnt);
    assert!(live_fast_commits(&img) >= 3, "the kernel left no live fast commits on the bigalloc image");
    let before = hash_path(&img);
    for opts in ["rw", "ro"] {
        let out = ext4box_mount(&img, &mnt, opts);
        assert!(!out.status.success(), "-o {opts} mounted an image whose fast commits it cannot replay");
        let lines = stderr_lines(&out);
        assert_eq!(lines.len(), 1, "-o {opts}: one line on stderr: {lines:?}");
        assert!(lines[0].contains("bigalloc") && lines[0].contains("ro,norecovery"), "-o {opts}: {lines:?}");
        assert!(mountinfo_entry(&mnt).is_none(), "-o {opts}: something is mounted");
    }
    assert_eq!(hash_path(&img), before, "a refused mount changed the image");
    ext4box_mount_ok(&img, &mnt, "ro,norecovery").unmount();
    assert_eq!(hash_path(&img), before, "an ro,norecovery mount changed the image");
}
