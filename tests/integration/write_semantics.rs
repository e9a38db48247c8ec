//! Write-side behaviour the random differential test does not reach: hard links through mmap, unlinked
//! open files and the orphan list (also across a killed server), ENOSPC, big directories (htree growth,
//! dir_nlink), deep extent trees, files past 4 GiB, fallocate modes, copy_file_range, inode flags, every
//! xattr namespace and ACLs. After every test that writes: unmount, `e2fsck -fn` clean, and the kernel
//! reads back exactly what ext4box showed. Needs root and /dev/fuse.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::*;

/// Makes an image, mounts it read-write with ext4box, runs `body` on the mount point, then checks the
/// unmounted image: e2fsck clean, and the kernel's read-only view equal to ext4box's last view.
fn roundtrip(tag: &str, mkfs_args: &[&str], size: u64, body: impl FnOnce(&Path)) {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new(tag);
    let img = s.path("img");
    mkfs(&img, size, mkfs_args);
    let mnt = s.mkdir("mnt");
    // noatime: the walk below reads every file, and its view is compared with the kernel's, access times
    // included (relatime has a test of its own).
    let m = ext4box_mount_ok(&img, &mnt, "noatime");
    body(&mnt);
    let shown = walk(&mnt, &WalkOpts::default());
    m.unmount();
    assert_fsck_clean(&img);
    kernel_mount(&img, &mnt, "ro");
    let back = walk(&mnt, &WalkOpts::default());
    kernel_umount(&mnt);
    assert_walks_equal("ext4box", &shown, "kernel reading the image back", &back);
}

fn statfs_free(p: &Path) -> u64 {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_bfree as u64 * st.f_frsize as u64
}

/// Polls until `cond` holds (the kernel sends release and forget asynchronously).
fn eventually(what: &str, cond: impl Fn() -> bool) {
    wait_until(what, Duration::from_secs(10), cond);
}

#[test]
fn hard_links_share_one_kernel_inode_for_writes_and_mmap() {
    roundtrip("w-hardlink-mmap", &["-b", "4096"], 64 << 20, |mnt| {
        fs::write(mnt.join("a"), vec![b'.'; 8192]).unwrap();
        fs::hard_link(mnt.join("a"), mnt.join("b")).unwrap();
        assert_eq!(fs::metadata(mnt.join("a")).unwrap().ino(), fs::metadata(mnt.join("b")).unwrap().ino());
        // A plain write through one name is seen at once through the other.
        let fa = OpenOptions::new().read(true).write(true).open(mnt.join("a")).unwrap();
        let fb = OpenOptions::new().read(true).write(true).open(mnt.join("b")).unwrap();
        fa.write_all_at(b"through a", 100).unwrap();
        let mut buf = [0u8; 9];
        fb.read_exact_at(&mut buf, 100).unwrap();
        assert_eq!(&buf, b"through a");
        // A shared mapping of one name and a read through the other see the same page.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                8192,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&fb),
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            std::ptr::copy_nonoverlapping(b"mapped via b".as_ptr(), (p as *mut u8).add(4096), 12);
            let mut got = [0u8; 12];
            fa.read_exact_at(&mut got, 4096).unwrap();
            assert_eq!(&got, b"mapped via b", "a write through a shared mapping of b is not visible through a");
            assert_eq!(libc::msync(p, 8192, libc::MS_SYNC), 0);
            libc::munmap(p, 8192);
        }
    });
}

#[test]
fn unlinked_open_file_lives_until_its_last_close() {
    roundtrip("w-orphan-open", &[], 64 << 20, |mnt| {
        let data = pseudo_random(7, 4 << 20);
        fs::write(mnt.join("victim"), &data).unwrap();
        let mut f = File::open(mnt.join("victim")).unwrap();
        let before = statfs_free(mnt);
        fs::remove_file(mnt.join("victim")).unwrap();
        assert!(fs::symlink_metadata(mnt.join("victim")).is_err());
        // Still open: the data is all there and its blocks are still in use.
        let mut back = Vec::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut back).unwrap();
        assert!(back == data, "an unlinked open file lost its data");
        assert_eq!(statfs_free(mnt), before, "blocks of an unlinked but open file were freed too early");
        drop(f);
        eventually("the blocks of the closed orphan are free", || statfs_free(mnt) >= before + (4 << 20));
    });
}

#[test]
fn orphan_left_by_a_killed_server_is_cleaned_at_the_next_mount() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("w-orphan-kill");
    let img = s.path("img");
    mkfs(&img, 64 << 20, &[]);
    let mnt = s.mkdir("mnt");
    let m = ext4box_mount_ok(&img, &mnt, "");
    fs::write(mnt.join("keep"), b"kept").unwrap();
    fs::write(mnt.join("orphan"), pseudo_random(3, 1 << 20)).unwrap();
    let f = File::open(mnt.join("orphan")).unwrap();
    fs::remove_file(mnt.join("orphan")).unwrap();
    // An fsync commits the journal: the orphan list that names the unlinked file is then in the log and
    // home (the server writes committed blocks home at once; only their flush waits).
    File::open(mnt.join("keep")).unwrap().sync_all().unwrap();
    for pid in &m.pids {
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    eventually("the killed server is gone", || m.pids.iter().all(|&p| !pid_alive(p)));
    drop(f);
    run_ok(Command::new("umount").arg("-l").arg(&mnt));
    let dump = debugfs(&img, "stats");
    assert!(dump.contains("First orphan inode:"), "the killed server left no orphan on the list:\n{dump}");
    // The next mount processes the orphan list, as the kernel does.
    let m = ext4box_mount_ok(&img, &mnt, "");
    assert_eq!(fs::read(mnt.join("keep")).unwrap(), b"kept");
    m.unmount();
    assert!(!debugfs(&img, "stats").contains("First orphan inode:"));
    assert_fsck_clean(&img);
}

#[test]
fn filling_the_filesystem_gives_enospc_and_keeps_everything_else() {
    roundtrip("w-enospc", &["-b", "1024"], 16 << 20, |mnt| {
        let keep: Vec<(String, Vec<u8>)> =
            (0..20).map(|i| (format!("keep{i}"), pseudo_random(i, 3000 + i as usize * 100))).collect();
        for (n, d) in &keep {
            fs::write(mnt.join(n), d).unwrap();
        }
        let mut f = File::create(mnt.join("filler")).unwrap();
        let chunk = vec![0x5au8; 1 << 20];
        let err = loop {
            if let Err(e) = f.write_all(&chunk).and_then(|_| f.sync_all()) {
                break e;
            }
        };
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "filling the disk: {err}");
        drop(f);
        let mut n = 0;
        let err = loop {
            match File::create(mnt.join(format!("empty{n}"))) {
                Ok(_) => n += 1,
                Err(e) => break e,
            }
            assert!(n < 100_000, "inodes never ran out");
        };
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "creating files until inodes run out: {err}");
        for (name, d) in &keep {
            assert!(fs::read(mnt.join(name)).unwrap() == *d, "{name} changed when the disk filled up");
        }
        let full = statvfs(mnt).unwrap();
        fs::remove_file(mnt.join("filler")).unwrap();
        // The unlinked filler's inode and blocks are freed when the kernel forgets its last reference
        // (the nodeid is the inode number, so it cannot be reused before): the kernel queues that FORGET
        // right after the unlink, but another server thread may answer the next request first.
        eventually("the filler's inode and blocks are free again", || {
            statvfs(mnt).is_ok_and(|s| s.f_ffree > full.f_ffree && s.f_bfree > full.f_bfree + 1000)
        });
        fs::write(mnt.join("after"), b"space again").unwrap();
    });
}

#[test]
fn big_directories_grow_htree_levels() {
    roundtrip("w-bigdir", &["-b", "1024"], 256 << 20, |mnt| {
        let d = mnt.join("big");
        fs::create_dir(&d).unwrap();
        for i in 0..20_000 {
            File::create(d.join(format!("entry-with-a-longer-name-{i:06}"))).unwrap();
        }
        for i in (0..20_000).step_by(3) {
            fs::remove_file(d.join(format!("entry-with-a-longer-name-{i:06}"))).unwrap();
        }
        for i in (0..20_000).step_by(97) {
            let p = d.join(format!("entry-with-a-longer-name-{i:06}"));
            assert_eq!(p.exists(), i % 3 != 0, "lookup of {p:?}");
        }
    });
}

#[test]
fn subdirectory_counts_past_the_link_limit_read_one() {
    roundtrip("w-dirnlink", &["-b", "4096", "-N", "70000"], 512 << 20, |mnt| {
        let d = mnt.join("many");
        fs::create_dir(&d).unwrap();
        for i in 0..65_010 {
            fs::create_dir(d.join(format!("{i}"))).unwrap();
        }
        assert_eq!(
            fs::metadata(&d).unwrap().nlink(),
            1,
            "dir_nlink: a directory with more than 65,000 subdirectories counts 1 link"
        );
        fs::remove_dir(d.join("7")).unwrap();
    });
}

#[test]
fn fragmented_file_builds_a_deep_extent_tree_then_shrinks() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("w-deep-extents");
    let img = s.path("img");
    mkfs(&img, 256 << 20, &["-b", "1024"]);
    let mnt = s.mkdir("mnt");
    let m = ext4box_mount_ok(&img, &mnt, "noatime");
    // Every other page written (the kernel writes whole pages back): thousands of separate extents,
    // more than one level of 84-entry leaves can index from the inode, so the tree has depth 2.
    let f = OpenOptions::new().create(true).truncate(false).write(true).open(mnt.join("frag")).unwrap();
    for i in 0..20_000u64 {
        f.write_all_at(&[(i % 251) as u8 + 1; 4096], i * 8192).unwrap();
        if i % 1000 == 0 {
            f.sync_data().unwrap();
        }
    }
    f.sync_all().unwrap();
    drop(f);
    let shown = walk(&mnt, &WalkOpts::default());
    m.unmount();
    assert_fsck_clean(&img);
    let ex = debugfs(&img, "ex /frag");
    // debugfs prints "LEVEL/ MAX" for each node: MAX is the tree's depth.
    let depth = ex
        .lines()
        .filter_map(|l| l.trim().split('/').nth(1)?.split_whitespace().next()?.parse::<u32>().ok())
        .max()
        .unwrap_or(0);
    assert!(
        depth >= 2,
        "expected an extent tree of depth 2 or more, debugfs shows:\n{}",
        ex.lines().take(5).collect::<Vec<_>>().join("\n")
    );
    kernel_mount(&img, &mnt, "ro");
    assert_walks_equal("ext4box", &shown, "kernel", &walk(&mnt, &WalkOpts::default()));
    kernel_umount(&mnt);
    // Shrink it again: punching and truncating must take the tree down cleanly.
    roundtrip_existing(&img, &mnt, |mnt| {
        let f = OpenOptions::new().write(true).open(mnt.join("frag")).unwrap();
        let r = unsafe {
            libc::fallocate(
                std::os::fd::AsRawFd::as_raw_fd(&f),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                1 << 20,
                20 << 20,
            )
        };
        assert_eq!(r, 0);
        f.set_len(5 << 20).unwrap();
    });
}

/// As [`roundtrip`] on an existing image.
fn roundtrip_existing(img: &Path, mnt: &Path, body: impl FnOnce(&Path)) {
    let m = ext4box_mount_ok(img, mnt, "noatime");
    body(mnt);
    let shown = walk(mnt, &WalkOpts::default());
    m.unmount();
    assert_fsck_clean(img);
    kernel_mount(img, mnt, "ro");
    assert_walks_equal("ext4box", &shown, "kernel reading the image back", &walk(mnt, &WalkOpts::default()));
    kernel_umount(mnt);
}

#[test]
fn sparse_file_past_4_gib() {
    roundtrip("w-sparse-5g", &["-b", "4096"], 1 << 30, |mnt| {
        let f = OpenOptions::new().create(true).truncate(false).write(true).open(mnt.join("sparse")).unwrap();
        f.write_all_at(b"start", 0).unwrap();
        f.write_all_at(b"past four gibibytes", (9u64 << 29) + 12345).unwrap();
        f.set_len(5 << 30).unwrap();
        let m = fs::metadata(mnt.join("sparse")).unwrap();
        assert_eq!(m.len(), 5 << 30);
        assert!(m.blocks() < 64, "a sparse file should hold few blocks, holds {}", m.blocks());
    });
}

#[test]
fn fallocate_modes_and_copy_file_range() {
    roundtrip("w-falloc", &["-b", "4096"], 128 << 20, |mnt| {
        let f = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(mnt.join("f")).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        let falloc = |mode: i32, off: i64, len: i64| unsafe { libc::fallocate(fd, mode, off, len) };
        f.write_all_at(&pseudo_random(1, 64 << 10), 0).unwrap();
        assert_eq!(falloc(0, 64 << 10, 1 << 20), 0, "default fallocate");
        assert_eq!(f.metadata().unwrap().len(), (64 << 10) + (1 << 20), "default mode extends the size");
        assert_eq!(falloc(libc::FALLOC_FL_KEEP_SIZE, 4 << 20, 1 << 20), 0);
        assert_eq!(f.metadata().unwrap().len(), (64 << 10) + (1 << 20), "KEEP_SIZE keeps the size");
        assert_eq!(falloc(libc::FALLOC_FL_ZERO_RANGE, 1000, 9000), 0, "ZERO_RANGE");
        let mut buf = vec![1u8; 9000];
        f.read_exact_at(&mut buf, 1000).unwrap();
        assert!(buf.iter().all(|&b| b == 0), "ZERO_RANGE left data");
        assert_eq!(falloc(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, 20000, 30000), 0);
        f.read_exact_at(&mut buf, 20000).unwrap();
        assert!(buf.iter().all(|&b| b == 0), "punched range reads data");
        // copy_file_range into a second file.
        let g = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(mnt.join("g")).unwrap();
        let (mut off_in, mut off_out) = (0i64, 4096i64);
        let n = unsafe {
            libc::copy_file_range(fd, &mut off_in, std::os::fd::AsRawFd::as_raw_fd(&g), &mut off_out, 50_000, 0)
        };
        assert_eq!(n, 50_000, "copy_file_range");
        let (mut a, mut b) = (vec![0u8; 50_000], vec![0u8; 50_000]);
        f.read_exact_at(&mut a, 0).unwrap();
        g.read_exact_at(&mut b, 4096).unwrap();
        assert!(a == b, "copy_file_range copied different bytes");
    });
}

#[test]
fn immutable_and_append_only_flags_are_honoured() {
    roundtrip("w-flags", &[], 64 << 20, |mnt| {
        let p = mnt.join("f");
        fs::write(&p, b"one\n").unwrap();
        let chattr =
            |flag: &str| assert!(Command::new("chattr").arg(flag).arg(&p).status().unwrap().success(), "chattr {flag}");
        chattr("+i");
        let lsattr = run_ok(Command::new("lsattr").arg(&p));
        assert!(lsattr.split_whitespace().next().unwrap().contains('i'), "lsattr shows no i: {lsattr}");
        assert_eq!(OpenOptions::new().append(true).open(&p).unwrap_err().raw_os_error(), Some(libc::EPERM));
        assert_eq!(fs::remove_file(&p).unwrap_err().raw_os_error(), Some(libc::EPERM));
        assert_eq!(fs::rename(&p, mnt.join("g")).unwrap_err().raw_os_error(), Some(libc::EPERM));
        chattr("-i");
        chattr("+a");
        OpenOptions::new().append(true).open(&p).unwrap().write_all(b"two\n").unwrap();
        assert_eq!(OpenOptions::new().write(true).open(&p).unwrap_err().raw_os_error(), Some(libc::EPERM));
        assert_eq!(
            OpenOptions::new().write(true).truncate(true).open(&p).unwrap_err().raw_os_error(),
            Some(libc::EPERM)
        );
        chattr("-a");
        assert_eq!(fs::read(&p).unwrap(), b"one\ntwo\n");
    });
}

#[test]
fn xattrs_in_every_namespace_and_acls() {
    roundtrip("w-xattr", &["-b", "4096"], 64 << 20, |mnt| {
        let p = mnt.join("f");
        fs::write(&p, b"x").unwrap();
        for (name, len) in
            [("user.small", 10), ("user.empty", 0), ("trusted.t", 100), ("security.s", 40), ("user.big", 3000)]
        {
            set_xattr(&p, name, &pseudo_random(len as u64, len)).unwrap();
        }
        // Shared with other files? A second file with the same attributes, then a change on one.
        fs::write(mnt.join("g"), b"y").unwrap();
        set_xattr(&mnt.join("g"), "user.big", &pseudo_random(5, 3000)).unwrap();
        let d = mnt.join("dir");
        fs::create_dir(&d).unwrap();
        for args in [["-m", "u:1234:rwx,g:55:r"], ["-d", "-m"]] {
            let mut c = Command::new("setfacl");
            if args[0] == "-d" {
                c.args(["-d", "-m", "u:4321:rx"]);
            } else {
                c.args(args);
            }
            assert!(c.arg(&d).status().unwrap().success(), "setfacl {args:?}");
        }
        let acl = run_ok(Command::new("getfacl").arg("-p").arg(&d));
        assert!(acl.contains("user:1234:rwx") && acl.contains("default:user:4321:r-x"), "getfacl shows:\n{acl}");
        let names = list_xattrs(&p).unwrap();
        assert_eq!(names.len(), 5, "{names:?}");
        let e = unsafe {
            libc::lremovexattr(
                std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap().as_ptr(),
                c"user.small".as_ptr(),
            )
        };
        assert_eq!(e, 0);
        assert_eq!(get_xattr(&p, b"user.small"), Err(libc::ENODATA));
    });
}

/// A directory's default ACL is inherited by what is created in it, in place of the umask, exactly as
/// the kernel's ext4 does it (same modes, same access and default ACLs).
#[test]
fn default_acls_are_inherited_like_the_kernel() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("w-default-acl");
    let (kimg, eimg) = (s.path("k.img"), s.path("e.img"));
    mkfs(&kimg, 32 << 20, &[]);
    fs::copy(&kimg, &eimg).unwrap();
    let (kmnt, emnt) = (s.mkdir("k"), s.mkdir("e"));
    kernel_mount(&kimg, &kmnt, "");
    let m = ext4box_mount_ok(&eimg, &emnt, "");
    let script = "set -e; umask 027; mkdir d plain; setfacl -d -m u:1234:rwx,g::r-x,o::- d; \
                  touch d/f plain/f; mkdir d/sub plain/sub; mknod d/fifo p; \
                  stat -c '%A %n' d/f d/sub d/fifo plain/f plain/sub; getfacl -p d/f d/sub d/fifo";
    let run = |root: &Path| run_ok(Command::new("sh").arg("-c").arg(script).current_dir(root));
    let (k, e) = (run(&kmnt), run(&emnt));
    assert_eq!(k, e, "kernel (left) and ext4box (right) differ");
    m.unmount();
    kernel_umount(&kmnt);
    assert_fsck_clean(&eimg);
}

/// An xattr block the kernel shares between inodes (identical attributes) is copied before one of them
/// changes, and released (not freed) when one of them goes.
#[test]
fn shared_xattr_blocks_are_copied_on_write() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("w-shared-xattr");
    let img = s.path("img");
    mkfs(&img, 32 << 20, &["-b", "4096"]);
    let mnt = s.mkdir("mnt");
    kernel_mount(&img, &mnt, "");
    for f in ["a", "b", "c"] {
        fs::write(mnt.join(f), f).unwrap();
        set_xattr(&mnt.join(f), "user.shared", &pseudo_random(9, 1500)).unwrap();
    }
    kernel_umount(&mnt);
    let acl_block = |f: &str| {
        let st = debugfs(&img, &format!("stat /{f}"));
        st.split("File ACL:").nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or("0").to_string()
    };
    let shared = acl_block("a");
    assert_ne!(shared, "0");
    assert_eq!(acl_block("b"), shared, "the kernel did not share the xattr block; the test needs it to");
    roundtrip_existing(&img, &mnt, |mnt| {
        set_xattr(&mnt.join("a"), "user.shared", b"changed").unwrap();
        fs::remove_file(mnt.join("c")).unwrap();
        assert!(get_xattr(&mnt.join("b"), b"user.shared").unwrap() == pseudo_random(9, 1500), "b changed with a");
    });
    assert_eq!(acl_block("b"), shared, "b kept the shared block");
    assert_ne!(acl_block("a"), shared, "a got a block of its own");
}

/// A file takes at most 65,000 links (EXT4_LINK_MAX): the next link() is EMLINK, as on the kernel.
#[test]
fn link_count_stops_at_65000() {
    roundtrip("w-linkmax", &["-b", "4096", "-N", "1024"], 256 << 20, |mnt| {
        fs::write(mnt.join("f"), b"linked").unwrap();
        fs::create_dir(mnt.join("links")).unwrap();
        for i in 1..65_000 {
            fs::hard_link(mnt.join("f"), mnt.join(format!("links/{i}"))).unwrap();
        }
        assert_eq!(fs::metadata(mnt.join("f")).unwrap().nlink(), 65_000);
        let e = fs::hard_link(mnt.join("f"), mnt.join("links/one-too-many")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EMLINK));
        for i in (1..65_000).step_by(2) {
            fs::remove_file(mnt.join(format!("links/{i}"))).unwrap();
        }
    });
}

/// relatime (the default): a read updates the access time when it is not after the modification time,
/// once; noatime never does. The kernel keeps no access times for FUSE files, so this is the server's job.
#[test]
fn access_times_follow_relatime_and_noatime() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("w-atime");
    let img = s.path("img");
    mkfs(&img, 32 << 20, &[]);
    let mnt = s.mkdir("mnt");
    let old = |p: &Path| {
        let t = |sec: i64| libc::timespec { tv_sec: sec, tv_nsec: 0 };
        let ts = [t(1_577_836_800), t(1_609_459_200)]; // atime 2020-01-01, mtime 2021-01-01
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), 0) }, 0);
    };
    let m = ext4box_mount_ok(&img, &mnt, "");
    fs::write(mnt.join("f"), b"data").unwrap();
    old(&mnt.join("f"));
    fs::read(mnt.join("f")).unwrap();
    let a1 = fs::metadata(mnt.join("f")).unwrap().atime();
    assert!(a1 > 1_700_000_000, "relatime: a read of a file whose atime is before its mtime sets it to now, got {a1}");
    fs::read(mnt.join("f")).unwrap();
    assert_eq!(fs::metadata(mnt.join("f")).unwrap().atime(), a1, "relatime: a second read changes nothing");
    m.unmount();
    let m = ext4box_mount_ok(&img, &mnt, "noatime");
    old(&mnt.join("f"));
    fs::read(mnt.join("f")).unwrap();
    assert_eq!(fs::metadata(mnt.join("f")).unwrap().atime(), 1_577_836_800, "noatime: reads leave atime alone");
    m.unmount();
    assert_fsck_clean(&img);
}

/// SEEK_DATA and SEEK_HOLE come from the extent map on read-only mounts (on writable ones the kernel may
/// hold unwritten data, so it answers them itself) and agree with the kernel's own answers.
#[test]
fn seek_data_and_hole_match_the_kernel() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("w-seek");
    let img = s.path("img");
    mkfs(&img, 64 << 20, &["-b", "4096"]);
    let mnt = s.mkdir("mnt");
    kernel_mount(&img, &mnt, "");
    let f = OpenOptions::new().create(true).truncate(false).write(true).open(mnt.join("sparse")).unwrap();
    for off in [0u64, 100 << 10, 1 << 20, 3 << 20] {
        f.write_all_at(&[7u8; 5000], off).unwrap();
    }
    f.set_len(5 << 20).unwrap();
    let r =
        unsafe { libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(&f), libc::FALLOC_FL_KEEP_SIZE, 4 << 20, 64 << 10) };
    assert_eq!(r, 0);
    drop(f);
    let probe = |root: &Path| -> Vec<i64> {
        let f = File::open(root.join("sparse")).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        let mut out = Vec::new();
        for off in (0..(6i64 << 20)).step_by(40_000) {
            for whence in [libc::SEEK_DATA, libc::SEEK_HOLE] {
                let r = unsafe { libc::lseek(fd, off, whence) };
                out.push(if r < 0 { -(errno() as i64) } else { r });
            }
        }
        out
    };
    let kernel = probe(&mnt);
    kernel_umount(&mnt);
    let m = ext4box_mount_ok(&img, &mnt, "ro");
    let ours = probe(&mnt);
    m.unmount();
    assert_eq!(kernel, ours, "SEEK_DATA/SEEK_HOLE answers differ from the kernel's");
}
