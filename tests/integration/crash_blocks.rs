//! Crash consistency at the block layer: the engine runs a seeded random workload on a device that
//! records every write and flush; the recording is then cut at every flush boundary (just before and just
//! after it) and at random points in between, and each cut image is "rebooted":
//!
//! - as a disk with a volatile write cache would leave it: every write before the last completed flush,
//!   and a random subset of the writes after it (a second image per cut: the plain prefix);
//! - mounted read-write by ext4box (journal replay), which must succeed; every file whose fsync had
//!   returned before the cut must be there with exactly its content; after the unmount `e2fsck -fn` is
//!   clean;
//! - for a share of the cuts, the unreplayed image is also recovered by `e2fsck -fy`, which must find
//!   nothing beyond the journal to repair, and must produce the same fsynced files (debugfs reads them);
//!   and by the kernel's own ext4 (a loop mount, as root), after which `e2fsck -fn` is clean and the
//!   fsynced files read back the same.
//!
//! Shapes: 4 KiB blocks with metadata_csum (v3 journal checksums) and 1 KiB ext3 without checksums and
//! a 1024-block journal, where transactions wrap around the log and checkpoints happen.
//! Needs e2fsprogs, and root for the kernel's replay (without root it says so, and fails under CI=true).
//! `SEED=n` reproduces a run.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::common::{Scratch, xorshift};
use ext4box::ext4::ops::{NewInode, SetAttr};
use ext4box::ext4::{BlockDevice, Filesystem, InodeNo, MountOptions, ROOT_INO};

enum Event {
    Write(u64, Vec<u8>),
    Flush,
}

/// A device in memory that records what it is asked to do; with `fail_flush` set, flushes fail from
/// that many on (a disk gone bad).
struct Recording {
    image: Mutex<Vec<u8>>,
    events: Mutex<Vec<Event>>,
    fail_flush: Option<usize>,
}

struct RecordingDevice(Arc<Recording>);

impl BlockDevice for RecordingDevice {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let img = self.0.image.lock().unwrap();
        let start = usize::try_from(offset).map_err(|_| std::io::ErrorKind::UnexpectedEof)?;
        let src = img.get(start..start + buf.len()).ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn size(&self) -> u64 {
        self.0.image.lock().unwrap().len() as u64
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        let mut img = self.0.image.lock().unwrap();
        let start = offset as usize;
        img.get_mut(start..start + buf.len()).ok_or(std::io::ErrorKind::UnexpectedEof)?.copy_from_slice(buf);
        self.0.events.lock().unwrap().push(Event::Write(offset, buf.to_vec()));
        Ok(())
    }

    fn flush(&self) -> std::io::Result<()> {
        let mut events = self.0.events.lock().unwrap();
        let flushes = events.iter().filter(|e| matches!(e, Event::Flush)).count();
        if self.0.fail_flush.is_some_and(|n| flushes >= n) {
            return Err(std::io::Error::other("the disk failed"));
        }
        events.push(Event::Flush);
        Ok(())
    }
}

/// An in-memory device the test keeps a handle on, to read the image back after the unmount.
struct SharedDevice(Arc<Mutex<Vec<u8>>>);

impl BlockDevice for SharedDevice {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let img = self.0.lock().unwrap();
        let start = usize::try_from(offset).map_err(|_| std::io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(img.get(start..start + buf.len()).ok_or(std::io::ErrorKind::UnexpectedEof)?);
        Ok(())
    }

    fn size(&self) -> u64 {
        self.0.lock().unwrap().len() as u64
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        let mut img = self.0.lock().unwrap();
        let start = offset as usize;
        img.get_mut(start..start + buf.len()).ok_or(std::io::ErrorKind::UnexpectedEof)?.copy_from_slice(buf);
        Ok(())
    }

    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}

fn rw() -> MountOptions {
    MountOptions { read_only: false, ..MountOptions::default() }
}

fn file_mode() -> NewInode {
    NewInode { mode: 0o100644, uid: 0, gid: 0, rdev: 0, umask: None }
}

/// A file whose fsync returned: its name in the root directory, its content, and how many device
/// events had happened when the fsync returned.
struct Durable {
    name: String,
    content: Vec<u8>,
    after_event: usize,
}

/// Runs the random workload on `base` and returns the recording and the fsynced files.
fn run_workload(base: &[u8], seed: u64, ops: usize) -> (Vec<Event>, Vec<Durable>) {
    let rec =
        Arc::new(Recording { image: Mutex::new(base.to_vec()), events: Mutex::new(Vec::new()), fail_flush: None });
    let fs = Filesystem::open(Box::new(RecordingDevice(rec.clone())), &rw()).expect("mount");
    assert!(fs.is_journaled(), "the image must be mounted with its journal");
    let mut rng = seed;
    let mut next = move |n: u64| xorshift(&mut rng) % n.max(1);
    let mut churn: Vec<(InodeNo, Vec<u8>, String)> = Vec::new(); // (dir, name, content)... below
    let mut dirs: Vec<InodeNo> = vec![ROOT_INO];
    let mut durable = Vec::new();
    let mut counter = 0u32;
    for step in 0..ops {
        counter += 1;
        match next(10) {
            0 | 1 => {
                // A new churn file, somewhere, with some data.
                let dir = dirs[next(dirs.len() as u64) as usize];
                let name = format!("c{counter}");
                if let Ok(inode) = fs.mknod(dir, name.as_bytes(), file_mode()) {
                    let len = next(40_000) as usize;
                    let data: Vec<u8> = (0..len).map(|i| (i as u64 ^ seed ^ u64::from(counter)) as u8).collect();
                    fs.write(inode.ino, 0, &data).expect("write");
                    churn.push((dir, name.into_bytes(), String::new()));
                }
            }
            2 => {
                let dir = dirs[next(dirs.len() as u64) as usize];
                if let Ok(d) =
                    fs.mkdir(dir, format!("d{counter}").as_bytes(), NewInode { mode: 0o40755, ..file_mode() })
                {
                    dirs.push(d.ino);
                }
            }
            3 | 4 if !churn.is_empty() => {
                // Remove a churn file: frees its blocks (busy until the commit, revoked when logged).
                let i = next(churn.len() as u64) as usize;
                let (dir, name, _) = churn.swap_remove(i);
                fs.unlink(dir, &name).expect("unlink");
            }
            5 if !churn.is_empty() => {
                let (dir, name, _) = &churn[next(churn.len() as u64) as usize];
                let ino = {
                    let r = fs.reader();
                    r.lookup(&r.inode(*dir).unwrap(), name).unwrap()
                };
                fs.setattr(ino, SetAttr { size: Some(next(20_000)), ..SetAttr::default() }).expect("truncate");
            }
            6 if !churn.is_empty() => {
                let i = next(churn.len() as u64) as usize;
                let newdir = dirs[next(dirs.len() as u64) as usize];
                let newname = format!("r{counter}").into_bytes();
                let (dir, name, _) = churn[i].clone();
                fs.rename(dir, &name, newdir, &newname, 0).expect("rename");
                churn[i] = (newdir, newname, String::new());
            }
            7 if !churn.is_empty() => {
                let (dir, name, _) = &churn[next(churn.len() as u64) as usize];
                let ino = {
                    let r = fs.reader();
                    r.lookup(&r.inode(*dir).unwrap(), name).unwrap()
                };
                let off = next(60_000);
                fs.write(ino, off, &vec![(step % 251) as u8; next(9000) as usize + 1]).expect("overwrite");
            }
            _ => {
                // An fsynced file: written once, synced, never touched again.
                let name = format!("sync{counter}");
                let len = next(30_000) as usize;
                let content: Vec<u8> =
                    (0..len).map(|i| (i as u64).wrapping_mul(seed | 1).wrapping_add(step as u64) as u8).collect();
                let inode = fs.mknod(ROOT_INO, name.as_bytes(), file_mode()).expect("create");
                fs.write(inode.ino, 0, &content).expect("write");
                fs.sync().expect("fsync");
                let after_event = rec.events.lock().unwrap().len();
                durable.push(Durable { name, content, after_event });
            }
        }
    }
    fs.close().expect("unmount");
    drop(fs);
    let events = std::mem::take(&mut *rec.events.lock().unwrap());
    (events, durable)
}

fn e2fsck(img: &std::path::Path, args: &str) -> (i32, String) {
    let out = std::process::Command::new("e2fsck").arg(args).arg(img).output().expect("e2fsck");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Reboots a crash image with ext4box and checks it; with `with_e2fsck`, also recovers a copy with
/// e2fsck. `what` names the cut in failure messages.
fn check_cut(scratch: &Scratch, image: &[u8], cut: usize, durable: &[Durable], with_e2fsck: bool, what: &str) {
    let expected: Vec<&Durable> = durable.iter().filter(|d| d.after_event <= cut).collect();
    if with_e2fsck {
        let raw = scratch.path("e2fsck.img");
        std::fs::write(&raw, image).unwrap();
        let (code, out) = e2fsck(&raw, "-fy");
        assert_eq!(code, 0, "{what}: e2fsck -fy found more than a journal to replay:\n{out}");
        for d in &expected {
            let out = std::process::Command::new("debugfs")
                .args(["-R", &format!("cat /{}", d.name)])
                .arg(&raw)
                .output()
                .unwrap();
            assert!(out.stdout == d.content, "{what}: after e2fsck's replay, fsynced {} differs", d.name);
        }
    }
    if with_e2fsck && kernel_replay_available() {
        let raw = scratch.path("kernel.img");
        std::fs::write(&raw, image).unwrap();
        let mnt = scratch.mkdir("kernel-mnt");
        crate::common::kernel_mount(&raw, &mnt, "");
        let mut lost = Vec::new();
        for d in &expected {
            if std::fs::read(mnt.join(&d.name)).ok().as_deref() != Some(&d.content[..]) {
                lost.push(d.name.clone());
            }
        }
        crate::common::kernel_umount(&mnt);
        assert!(lost.is_empty(), "{what}: after the kernel's replay, fsynced files differ or are gone: {lost:?}");
        let (code, out) = e2fsck(&raw, "-fn");
        assert_eq!(code, 0, "{what}: e2fsck -fn after the kernel's replay:\n{out}");
    }
    let shared = Arc::new(Mutex::new(image.to_vec()));
    {
        let fs = Filesystem::open(Box::new(SharedDevice(shared.clone())), &rw())
            .unwrap_or_else(|e| panic!("{what}: the crash image does not mount: {e}"));
        let r = fs.reader();
        let root = r.inode(ROOT_INO).unwrap();
        for d in &expected {
            let ino =
                r.lookup(&root, d.name.as_bytes()).unwrap_or_else(|e| panic!("{what}: fsynced {} lost: {e}", d.name));
            let inode = r.inode(ino).unwrap();
            let got = r.read(&inode, 0, d.content.len() + 1).unwrap();
            assert!(got == d.content, "{what}: fsynced {} has other content ({} bytes)", d.name, got.len());
        }
        drop(r);
        fs.close().unwrap_or_else(|e| panic!("{what}: unmount after replay failed: {e}"));
    }
    let img = scratch.path("replayed.img");
    std::fs::write(&img, &*shared.lock().unwrap()).unwrap();
    let (code, out) = e2fsck(&img, "-fn");
    assert_eq!(code, 0, "{what}: e2fsck -fn after ext4box's replay:\n{out}");
}

/// Whether the kernel's replay can be checked here (root, for loop mounts).
fn kernel_replay_available() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(!crate::common::is_ci(), "the kernel's replay check needs root, and CI runs as root");
    eprintln!("not root: the kernel's replay of crash images is not checked");
    false
}

fn crash_points(shape: &str, mkfs_args: &[&str], size: &str, seed: u64, ops: usize) {
    let scratch = Scratch::new(&format!("crash-{shape}"));
    let base_path = scratch.path("base.img");
    let out = std::process::Command::new("mke2fs")
        .args(["-q", "-F"])
        .args(mkfs_args)
        .arg(&base_path)
        .arg(size)
        .output()
        .expect("mkfs.ext4");
    assert!(out.status.success(), "mkfs: {}", String::from_utf8_lossy(&out.stderr));
    let base = std::fs::read(&base_path).unwrap();
    let (events, durable) = run_workload(&base, seed, ops);
    assert!(durable.len() >= 5, "the workload made too few fsyncs to test");
    let flushes: Vec<usize> =
        events.iter().enumerate().filter(|(_, e)| matches!(e, Event::Flush)).map(|(i, _)| i).collect();
    // Cuts: just before and just after every flush, and random points.
    let mut cuts: BTreeMap<usize, bool> = BTreeMap::new();
    let mut rng = seed ^ 0x5EED;
    for &f in &flushes {
        cuts.insert(f, false);
        cuts.insert(f + 1, false);
    }
    for _ in 0..(flushes.len() / 2).max(20) {
        cuts.insert((xorshift(&mut rng) % (events.len() as u64 + 1)) as usize, false);
    }
    // Every eighth cut is also recovered by e2fsck.
    for (i, v) in cuts.values_mut().enumerate() {
        *v = i % 8 == 0;
    }
    eprintln!(
        "{shape}: {} events, {} flushes, {} fsyncs, {} cuts (seed {seed})",
        events.len(),
        flushes.len(),
        durable.len(),
        cuts.len()
    );
    let mut prefix = base.clone();
    let mut applied = 0;
    let mut last_flush = 0; // events before this index are durable at any later cut
    let mut durable_image = base.clone();
    for (&cut, &with_e2fsck) in &cuts {
        while applied < cut {
            match &events[applied] {
                Event::Write(off, data) => prefix[*off as usize..*off as usize + data.len()].copy_from_slice(data),
                Event::Flush => {
                    // Everything before this flush is on the platter.
                    for e in &events[last_flush..applied] {
                        if let Event::Write(off, data) = e {
                            durable_image[*off as usize..*off as usize + data.len()].copy_from_slice(data);
                        }
                    }
                    last_flush = applied;
                }
            }
            applied += 1;
        }
        check_cut(&scratch, &prefix, cut, &durable, with_e2fsck, &format!("{shape} cut {cut} (in order)"));
        // The volatile cache lost some writes since the last flush.
        let mut torn = durable_image.clone();
        for e in &events[last_flush..cut] {
            if let Event::Write(off, data) = e {
                if xorshift(&mut rng).is_multiple_of(2) {
                    torn[*off as usize..*off as usize + data.len()].copy_from_slice(data);
                }
            }
        }
        // An fsync is durable once its last flush completed, whichever writes after it were lost.
        check_cut(&scratch, &torn, cut, &durable, false, &format!("{shape} cut {cut} (torn after the last flush)"));
    }
}

fn seed() -> u64 {
    std::env::var("SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x00C0_FFEE)
}

#[test]
fn crash_at_every_flush_4k_metadata_csum() {
    crash_points("4k-csum", &["-t", "ext4", "-b", "4096"], "32M", seed(), 300);
}

#[test]
fn crash_at_every_flush_1k_ext3_small_journal_wraps() {
    crash_points("1k-ext3", &["-t", "ext3", "-b", "1024", "-J", "size=1"], "24M", seed() ^ 1, 300);
}

/// A commit that fails part way (the disk stops flushing) aborts the journal: every later write is
/// EROFS, the unmount writes nothing more, and the image replays to its last complete commit, which
/// holds every file whose fsync returned, fsck-clean.
#[test]
fn a_failed_commit_aborts_the_journal_and_the_image_replays_to_the_last_commit() {
    let scratch = Scratch::new("crash-abort");
    let base_path = scratch.path("base.img");
    let out = std::process::Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-b", "4096"])
        .arg(&base_path)
        .arg("32M")
        .output()
        .unwrap();
    assert!(out.status.success());
    let base = std::fs::read(&base_path).unwrap();
    // The mount flushes once; each fsync flushes twice. Fail during the fourth fsync's commit.
    let rec = Arc::new(Recording { image: Mutex::new(base), events: Mutex::new(Vec::new()), fail_flush: Some(8) });
    let fs = Filesystem::open(Box::new(RecordingDevice(rec.clone())), &rw()).expect("mount");
    let mut synced = Vec::new();
    let mut failed_at = None;
    for i in 0..10u32 {
        let name = format!("f{i}");
        let content = vec![i as u8; 5000 + i as usize * 100];
        let made = fs.mknod(ROOT_INO, name.as_bytes(), file_mode()).and_then(|ino| fs.write(ino.ino, 0, &content));
        match made.and_then(|_| fs.sync()) {
            Ok(()) => synced.push((name, content)),
            Err(_) => {
                failed_at = Some(i);
                break;
            }
        }
    }
    assert!(failed_at.is_some() && synced.len() >= 2, "the disk failure was not met ({} fsyncs)", synced.len());
    assert!(fs.is_read_only(), "a failed commit must leave the filesystem read-only");
    let e = fs.mknod(ROOT_INO, b"after", file_mode()).unwrap_err();
    assert!(matches!(e, ext4box::ext4::Error::ReadOnly), "{e}");
    let writes_before_close = rec.events.lock().unwrap().len();
    fs.close().expect("unmount after an abort");
    assert_eq!(rec.events.lock().unwrap().len(), writes_before_close, "the unmount wrote after the abort");
    drop(fs);
    // What the disk holds: every write before the failed flush.
    let image = rec.image.lock().unwrap().clone();
    let durable: Vec<Durable> =
        synced.into_iter().map(|(name, content)| Durable { name, content, after_event: 0 }).collect();
    check_cut(&scratch, &image, usize::MAX, &durable, true, "after the aborted commit");
}
