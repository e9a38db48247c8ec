//! Read matrix: for each image shape, build an image with the kernel, mount it
//! both with the kernel (loop, ro) and with ext4box (ro), walk both trees and
//! require them to be identical (types, modes, owners, sizes, link counts,
//! nanosecond timestamps, inode numbers, device numbers, symlink targets,
//! xattrs and ACLs, file contents, readdir d_type/d_ino).

use crate::common::*;
use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt, symlink};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::{Duration, Instant};

const WALK_LIMIT: Duration = Duration::from_secs(150);

// ---------------------------------------------------------------------------
// Populating
// ---------------------------------------------------------------------------

fn write_file(p: &Path, data: &[u8]) {
    fs::write(p, data).unwrap_or_else(|e| panic!("write {p:?}: {e}"));
}

fn mkdirs(p: &Path) {
    fs::create_dir_all(p).unwrap_or_else(|e| panic!("mkdir {p:?}: {e}"));
}

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn mknod(p: &Path, mode: u32, major: u32, minor: u32) {
    let r = unsafe { libc::mknod(c(p).as_ptr(), mode, libc::makedev(major, minor)) };
    assert_eq!(r, 0, "mknod {p:?}: {}", std::io::Error::last_os_error());
}

fn lchown(p: &Path, uid: u32, gid: u32) {
    let r = unsafe { libc::lchown(c(p).as_ptr(), uid, gid) };
    assert_eq!(r, 0, "lchown {p:?}: {}", std::io::Error::last_os_error());
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// utimensat without following symlinks; times as (seconds, nanoseconds).
fn set_times(p: &Path, atime: (i64, i64), mtime: (i64, i64)) {
    let ts =
        [libc::timespec { tv_sec: atime.0, tv_nsec: atime.1 }, libc::timespec { tv_sec: mtime.0, tv_nsec: mtime.1 }];
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c(p).as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    assert_eq!(r, 0, "utimensat {p:?}: {}", std::io::Error::last_os_error());
}

fn xattr(p: &Path, name: &str, value: &[u8]) {
    set_xattr(p, name, value).unwrap_or_else(|e| panic!("setxattr {p:?} {name} ({} bytes): {e}", value.len()));
}

/// Returns false if the filesystem does not support this fallocate mode.
fn fallocate(f: &File, mode: i32, off: u64, len: u64) -> bool {
    let r = unsafe { libc::fallocate(f.as_raw_fd(), mode, off as i64, len as i64) };
    if r != 0 {
        let e = errno();
        assert_eq!(e, libc::EOPNOTSUPP, "fallocate mode {mode:#x} {off}+{len}: errno {e}");
        return false;
    }
    true
}

// POSIX ACL xattr format (version 2).
const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_GROUP: u16 = 0x08;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;
const NO_ID: u32 = u32::MAX;

fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

#[derive(Clone, Copy)]
struct Sink {
    /// Size of the "large" user xattr (goes to an external block).
    big_xattr: usize,
    /// Size of the shared xattr value set on two files.
    shared_xattr: usize,
    /// Longest symlink target the filesystem takes (block size - 1).
    max_symlink: usize,
    /// Number of small user xattrs on one file.
    many_xattrs: usize,
}

const SINK_4K: Sink = Sink { big_xattr: 3000, shared_xattr: 1000, max_symlink: 4095, many_xattrs: 30 };
const SINK_1K: Sink = Sink { big_xattr: 500, shared_xattr: 300, max_symlink: 1023, many_xattrs: 8 };

/// A bit of everything, written through a kernel mount at `r`.
fn populate_kitchen_sink(r: &Path, s: Sink) {
    // Regular files of awkward sizes, distinct content in every block.
    mkdirs(&r.join("data"));
    for (i, n) in
        [0usize, 1, 59, 60, 61, 1023, 1024, 1025, 4095, 4096, 4097, 65537, (1 << 20) + 13, 3 << 20].iter().enumerate()
    {
        write_file(&r.join(format!("data/size-{n}")), &pseudo_random(100 + i as u64, *n));
    }

    // Sparse files with holes and a trailing hole.
    let f = File::create(r.join("data/sparse")).unwrap();
    f.write_all_at(b"first", 0).unwrap();
    f.write_all_at(&pseudo_random(7, 5000), (1 << 20) + 5).unwrap();
    f.write_all_at(b"ten-mib", 10 << 20).unwrap();
    f.set_len(20 << 20).unwrap();
    drop(f);
    let f = File::create(r.join("data/all-hole")).unwrap();
    f.set_len(3 << 20).unwrap();
    drop(f);

    // Preallocated (unwritten) ranges must read as zeros; skipped where the
    // filesystem has no extents.
    let f = File::create(r.join("data/falloc-only")).unwrap();
    if fallocate(&f, 0, 0, 2 << 20) {
        let f = File::create(r.join("data/falloc-mixed")).unwrap();
        f.write_all_at(&pseudo_random(8, 4096), 0).unwrap();
        f.write_all_at(&pseudo_random(9, 4096), 4 << 20).unwrap();
        assert!(fallocate(&f, 0, 1 << 20, 2 << 20));
        let f = File::create(r.join("data/falloc-keep-size")).unwrap();
        f.write_all_at(b"short", 0).unwrap();
        assert!(fallocate(&f, libc::FALLOC_FL_KEEP_SIZE, 0, 1 << 20));
        let f = File::create(r.join("data/zero-range")).unwrap();
        f.write_all_at(&pseudo_random(10, 256 << 10), 0).unwrap();
        f.sync_all().unwrap();
        assert!(fallocate(&f, libc::FALLOC_FL_ZERO_RANGE, 64 << 10, 64 << 10));
    }
    drop(f);
    let f = File::create(r.join("data/punched")).unwrap();
    f.write_all_at(&pseudo_random(11, 256 << 10), 0).unwrap();
    f.sync_all().unwrap();
    fallocate(&f, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, 4096, 64 << 10);
    drop(f);

    // Directories: empty, nested, and one spanning several blocks.
    mkdirs(&r.join("emptydir"));
    let mut deep = r.join("deep");
    for i in 0..20 {
        deep = deep.join(format!("level{i}"));
    }
    mkdirs(&deep);
    write_file(&deep.join("bottom"), b"bottom of the tree\n");
    mkdirs(&r.join("many"));
    for i in 0..300 {
        write_file(&r.join(format!("many/file-number-{i:04}")), format!("{i}\n").as_bytes());
    }

    // Symlinks of every interesting length: fast (< 60 bytes, in i_block) and
    // slow (in a block), dangling and not.
    mkdirs(&r.join("links"));
    for len in [1usize, 2, 59, 60, 61, 100, 500, 1023, 1024, 4095] {
        if len > s.max_symlink {
            continue;
        }
        let mut t: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
        for i in (7..len).step_by(8) {
            t[i] = b'/';
        }
        symlink(OsStr::from_bytes(&t), r.join(format!("links/len-{len}"))).unwrap();
    }
    symlink("../data/size-1", r.join("links/to-file")).unwrap();
    symlink("../deep", r.join("links/to-dir")).unwrap();
    symlink(OsStr::from_bytes(b"\xff\xfe/non-utf8 target"), r.join("links/non-utf8")).unwrap();

    // Special files: character and block devices (small and large numbers),
    // a fifo and a unix socket.
    mkdirs(&r.join("special"));
    mknod(&r.join("special/chr-1-3"), libc::S_IFCHR | 0o666, 1, 3);
    mknod(&r.join("special/chr-big"), libc::S_IFCHR | 0o600, 4095, 1048575);
    mknod(&r.join("special/blk-8-1"), libc::S_IFBLK | 0o660, 8, 1);
    mknod(&r.join("special/blk-259-70000"), libc::S_IFBLK | 0o640, 259, 70000);
    mknod(&r.join("special/fifo"), libc::S_IFIFO | 0o644, 0, 0);
    drop(UnixListener::bind(r.join("special/socket")).unwrap());

    // Extended attributes of many sizes and namespaces.
    mkdirs(&r.join("xattr"));
    let x = r.join("xattr/file");
    write_file(&x, b"xattr carrier\n");
    xattr(&x, "user.empty", b"");
    xattr(&x, "user.ten", b"0123456789");
    xattr(&x, "user.two-hundred", &pseudo_random(20, 200));
    xattr(&x, "user.big", &pseudo_random(21, s.big_xattr));
    xattr(&x, "trusted.secret", b"trusted value");
    xattr(&x, "security.label", b"security value\0with nul");
    let many = r.join("xattr/many");
    write_file(&many, b"");
    for i in 0..s.many_xattrs {
        xattr(&many, &format!("user.attr{i:02}"), format!("value number {i}").as_bytes());
    }
    let xd = r.join("xattr/dir");
    mkdirs(&xd);
    xattr(&xd, "user.on-a-dir", b"dir value");
    xattr(&xd, "trusted.t", b"");
    for name in ["share1", "share2"] {
        let p = r.join("xattr").join(name);
        write_file(&p, name.as_bytes());
        xattr(&p, "user.shared", &pseudo_random(22, s.shared_xattr));
    }
    symlink("file", r.join("xattr/link")).unwrap();
    xattr(&r.join("xattr/link"), "trusted.on-a-symlink", b"link value");
    xattr(&r.join("special/fifo"), "trusted.on-a-fifo", b"fifo value");

    // POSIX ACLs: an access ACL on a file; access and default ACLs on a
    // directory, and what the kernel derived from them for new children.
    mkdirs(&r.join("acl"));
    let af = r.join("acl/file");
    write_file(&af, b"acl\n");
    xattr(
        &af,
        "system.posix_acl_access",
        &acl(&[
            (ACL_USER_OBJ, 6, NO_ID),
            (ACL_USER, 7, 1234),
            (ACL_GROUP_OBJ, 4, NO_ID),
            (ACL_GROUP, 4, 55),
            (ACL_MASK, 7, NO_ID),
            (ACL_OTHER, 0, NO_ID),
        ]),
    );
    let ad = r.join("acl/dir");
    mkdirs(&ad);
    xattr(
        &ad,
        "system.posix_acl_access",
        &acl(&[
            (ACL_USER_OBJ, 7, NO_ID),
            (ACL_USER, 5, 4321),
            (ACL_GROUP_OBJ, 5, NO_ID),
            (ACL_MASK, 5, NO_ID),
            (ACL_OTHER, 1, NO_ID),
        ]),
    );
    xattr(
        &ad,
        "system.posix_acl_default",
        &acl(&[
            (ACL_USER_OBJ, 7, NO_ID),
            (ACL_USER, 7, 1234),
            (ACL_USER, 4, 100000),
            (ACL_GROUP_OBJ, 5, NO_ID),
            (ACL_GROUP, 4, 55),
            (ACL_MASK, 7, NO_ID),
            (ACL_OTHER, 0, NO_ID),
        ]),
    );
    write_file(&ad.join("inherited-file"), b"inherits\n");
    mkdirs(&ad.join("inherited-dir"));

    // Hard links: one file, three names in different directories.
    mkdirs(&r.join("hard/d1/d2"));
    write_file(&r.join("hard/one"), &pseudo_random(30, 12345));
    fs::hard_link(r.join("hard/one"), r.join("hard/d1/two")).unwrap();
    fs::hard_link(r.join("hard/one"), r.join("hard/d1/d2/three")).unwrap();

    // Names: non-UTF-8 bytes, control characters, the 255-byte maximum.
    mkdirs(&r.join("names"));
    let odd: [&[u8]; 6] = [
        b"bin-\xff\xfe",
        b"latin1-caf\xe9",
        b"\x01control\x7f",
        b"sp ace and \\ backslash",
        "utf8-\u{e9}t\u{e9}-\u{65e5}\u{672c}".as_bytes(),
        b"-starts-with-dash",
    ];
    for n in odd {
        write_file(&r.join("names").join(OsStr::from_bytes(n)), n);
    }
    mkdirs(&r.join("names").join(OsStr::from_bytes(b"dir-\xff")));
    write_file(&r.join("names").join(OsStr::from_bytes(b"dir-\xff/inner")), b"inner");
    write_file(&r.join("names").join("L".repeat(255)), b"255 ascii");
    let multi = format!("{}x", "\u{e9}".repeat(127)); // 254 + 1 = 255 bytes
    assert_eq!(multi.len(), 255);
    mkdirs(&r.join("names").join(&multi));

    // Owners above 65535 (high 16 bits live elsewhere in the inode) and
    // special mode bits.
    mkdirs(&r.join("owners"));
    let o = r.join("owners/big-ids");
    write_file(&o, b"owned");
    lchown(&o, 100000, 200000);
    let o2 = r.join("owners/max-ids-dir");
    mkdirs(&o2);
    lchown(&o2, 4294967294, 4294967293);
    symlink("big-ids", r.join("owners/link")).unwrap();
    lchown(&r.join("owners/link"), 70000, 80000);
    let m = r.join("owners/setuid");
    write_file(&m, b"#!/bin/sh\n");
    chmod(&m, 0o4755);
    let m = r.join("owners/setgid");
    write_file(&m, b"");
    chmod(&m, 0o2711);
    let m = r.join("owners/sticky-dir");
    mkdirs(&m);
    chmod(&m, 0o1777);
    let m = r.join("owners/no-perms");
    write_file(&m, b"x");
    chmod(&m, 0);

    // Timestamps with nanoseconds, beyond 2038 and before 1970 (extended
    // epoch bits), set last so nothing bumps them afterwards.
    mkdirs(&r.join("times"));
    type Stamp = (i64, i64); // (seconds, nanoseconds)
    let times: [(&str, Stamp, Stamp); 6] = [
        ("y2100", (4102444800, 123456789), (4102444800, 500000000)),
        ("y1960", (-315619200, 999999999), (-300000000, 1)),
        ("y2038-plus-one", (2147483648, 0), (2147483647, 999999999)),
        ("y2446-max", (15032385535, 999999999), (8589934591, 7)),
        ("y1901-min", (-2147483648, 0), (-2147483647, 123)),
        ("epoch", (0, 0), (1, 1)),
    ];
    for (name, at, mt) in times {
        let p = r.join("times").join(name);
        write_file(&p, name.as_bytes());
        set_times(&p, at, mt);
    }
    let td = r.join("times/dir");
    mkdirs(&td);
    symlink("y2100", r.join("times/link")).unwrap();
    set_times(&r.join("times/link"), (1700000000, 111), (4102444801, 222));
    set_times(&td, (-1, 999999999), (4102444800, 42));
}

/// Work on an image or on a tree (mkfs's source, a mount point).
type PathFn = Box<dyn Fn(&Path)>;
/// Work on both mounts of one image: (image, kernel, ext4box).
type MountsFn = Box<dyn Fn(&Path, &Path, &Path)>;

/// `ext4box` against the kernel on the same image.
struct Case {
    name: &'static str,
    size: u64,
    mkfs_args: Vec<&'static str>,
    /// If set: fills a directory that `mke2fs -d` copies into the image.
    source: Option<PathFn>,
    /// Run on the image between mkfs and populating (e.g. tune2fs).
    tune: Option<PathFn>,
    populate: PathFn,
    /// Run on the image after populating (e.g. debugfs -w), before e2fsck.
    post: Option<PathFn>,
    /// Assertions on the finished image (that the shape really is there).
    check_image: Option<PathFn>,
    /// Extra comparisons with both mounts live: (image, kernel, ext4box).
    extra: Option<MountsFn>,
    /// The least number of entries a walk must see.
    min_entries: usize,
}

impl Case {
    fn new(name: &'static str, size: u64, mkfs_args: &[&'static str], populate: impl Fn(&Path) + 'static) -> Case {
        Case {
            name,
            size,
            mkfs_args: mkfs_args.to_vec(),
            source: None,
            tune: None,
            populate: Box::new(populate),
            post: None,
            check_image: None,
            extra: None,
            min_entries: 10,
        }
    }
    fn source(mut self, f: impl Fn(&Path) + 'static) -> Self {
        self.source = Some(Box::new(f));
        self
    }
    fn tune(mut self, f: impl Fn(&Path) + 'static) -> Self {
        self.tune = Some(Box::new(f));
        self
    }
    fn post(mut self, f: impl Fn(&Path) + 'static) -> Self {
        self.post = Some(Box::new(f));
        self
    }
    fn check_image(mut self, f: impl Fn(&Path) + 'static) -> Self {
        self.check_image = Some(Box::new(f));
        self
    }
    fn extra(mut self, f: impl Fn(&Path, &Path, &Path) + 'static) -> Self {
        self.extra = Some(Box::new(f));
        self
    }
    fn min_entries(mut self, n: usize) -> Self {
        self.min_entries = n;
        self
    }

    fn run(self) {
        let t0 = Instant::now();
        let s = Scratch::new(self.name);
        let img = s.path("image");
        let src = s.path("source");
        let mut args = self.mkfs_args.clone();
        if let Some(f) = &self.source {
            mkdirs(&src);
            f(&src);
            args.push("-d");
            args.push(src.to_str().unwrap());
        }
        mkfs(&img, self.size, &args);
        if let Some(t) = &self.tune {
            t(&img);
        }
        let pm = s.mkdir("populate");
        kernel_mount(&img, &pm, "rw,noinit_itable");
        (self.populate)(&pm);
        kernel_umount(&pm);
        if let Some(p) = &self.post {
            p(&img);
        }
        assert_fsck_clean(&img);
        if let Some(ci) = &self.check_image {
            ci(&img);
        }
        let t_built = t0.elapsed();

        let km = s.mkdir("kernel");
        let em = s.mkdir("ext4box");
        kernel_mount(&img, &km, "ro");
        let m = ext4box_mount_ok(&img, &em, "ro");

        let (kw, ew) = walk_both(&km, &em);
        let t_walked = t0.elapsed();
        assert_eq!(
            kw.error_count(),
            0,
            "the kernel's own walk had errors (test setup problem): {:?}",
            kw.entries.iter().filter(|e| !e.errors().is_empty()).take(5).collect::<Vec<_>>()
        );
        assert!(
            kw.entries.len() >= self.min_entries,
            "kernel walk saw only {} entries (expected at least {})",
            kw.entries.len(),
            self.min_entries
        );
        assert_walks_equal("kernel", &kw, "ext4box", &ew);
        let (kw2, km2, em2) = (kw.clone(), km.clone(), em.clone());
        let diffs = with_timeout("second pass", WALK_LIMIT, &em, move || compare_again(&kw2, &km2, &em2, 5000));
        assert!(
            diffs.is_empty(),
            "{} difference(s) on the second pass (kernel vs ext4box); first:\n{}",
            diffs.len(),
            diffs.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
        );
        if let Some(x) = &self.extra {
            x(&img, &km, &em);
        }
        assert!(m.alive(), "ext4box server for {em:?} died during the test");
        let rss = m.pids.iter().filter_map(|&p| peak_rss_kib(p)).max().unwrap_or(0);
        assert!(
            rss < 1 << 20,
            "ext4box server peak RSS {rss} KiB (over 1 GiB) for a walk of {} entries",
            ew.entries.len()
        );
        m.unmount();
        kernel_umount(&km);
        eprintln!(
            "{}: {} entries equal; server peak RSS {rss} KiB; build {:.1}s, mount+walk {:.1}s, total {:.1}s",
            self.name,
            kw.entries.len(),
            t_built.as_secs_f64(),
            (t_walked - t_built).as_secs_f64(),
            t0.elapsed().as_secs_f64()
        );
    }
}

/// Walks the kernel mount and the ext4box mount concurrently.
fn walk_both(km: &Path, em: &Path) -> (Walk, Walk) {
    let kroot = km.to_path_buf();
    let kh = std::thread::spawn(move || walk(&kroot, &WalkOpts::default()));
    let eroot = em.to_path_buf();
    let ew = with_timeout("ext4box walk", WALK_LIMIT, em, move || walk(&eroot, &WalkOpts::default()));
    let kw = kh.join().unwrap();
    (kw, ew)
}

fn sink(s: Sink) -> impl Fn(&Path) + 'static {
    move |r: &Path| populate_kitchen_sink(r, s)
}

fn require_features(img: &Path, want: &[&str], unwanted: &[&str]) {
    let f = fs_features(img);
    for w in want {
        assert!(f.iter().any(|x| x == w), "image lacks feature {w}: {f:?}");
    }
    for u in unwanted {
        assert!(!f.iter().any(|x| x == u), "image has feature {u}: {f:?}");
    }
}

fn block_size(img: &Path) -> u64 {
    let s = run_ok(std::process::Command::new("dumpe2fs").arg("-h").arg(img));
    s.lines()
        .find_map(|l| l.strip_prefix("Block size:"))
        .map(|v| v.trim().parse().unwrap())
        .expect("Block size in dumpe2fs -h")
}

// ---------------------------------------------------------------------------
// Shapes
// ---------------------------------------------------------------------------

#[test]
fn ext4_4k_debian_defaults() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    Case::new("ext4-4k", 256 << 20, &["-b", "4096"], sink(SINK_4K))
        .check_image(|img| {
            assert_eq!(block_size(img), 4096);
            require_features(img, &["extent", "64bit", "metadata_csum", "flex_bg", "dir_index"], &[]);
        })
        .min_entries(400)
        .run();
}

#[test]
fn ext4_1k_blocks() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    Case::new("ext4-1k", 128 << 20, &["-b", "1024"], sink(SINK_1K))
        .check_image(|img| assert_eq!(block_size(img), 1024))
        .min_entries(400)
        .run();
}

#[test]
fn ext4_upstream_defaults_orphan_file_csum_seed() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    Case::new("ext4-upstream", 256 << 20, &["-b", "4096", "-O", "orphan_file,metadata_csum_seed"], sink(SINK_4K))
        .check_image(|img| require_features(img, &["orphan_file", "metadata_csum_seed", "metadata_csum"], &[]))
        .min_entries(400)
        .run();
}

/// Writes a file whose every 1 KiB block starts with its block number, so a
/// wrong block mapping cannot go unnoticed.
fn write_numbered(p: &Path, size: u64) {
    let f = File::create(p).unwrap();
    let chunk = 1u64 << 20;
    let base = pseudo_random(4242, chunk as usize);
    let mut off = 0;
    while off < size {
        let n = chunk.min(size - off);
        let mut buf = base[..n as usize].to_vec();
        for b in (0..n).step_by(1024) {
            let blk = (off + b) / 1024;
            let k = 8.min(n - b) as usize;
            buf[b as usize..b as usize + k].copy_from_slice(&blk.to_le_bytes()[..k]);
        }
        f.write_all_at(&buf, off).unwrap();
        off += n;
    }
}

#[test]
fn ext2_1k_triple_indirect() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    // 12 + 256 + 256*256 blocks of 1 KiB is about 64.3 MiB: 70 MiB needs the
    // triple-indirect block.
    Case::new("ext2-1k", 160 << 20, &["-t", "ext2", "-b", "1024"], |r: &Path| {
        populate_kitchen_sink(r, SINK_1K);
        write_numbered(&r.join("big-70m"), (70 << 20) + 333);
    })
    .check_image(|img| {
        require_features(img, &[], &["extent", "has_journal"]);
        let st = debugfs(img, "stat /big-70m");
        assert!(st.contains("(TIND)"), "big-70m has no triple-indirect block:\n{}", &st[..st.len().min(3000)]);
    })
    .min_entries(400)
    .run();
}

#[test]
fn ext3_double_indirect() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    Case::new("ext3", 96 << 20, &["-t", "ext3"], |r: &Path| {
        populate_kitchen_sink(r, SINK_1K);
        write_numbered(&r.join("big-20m"), (20 << 20) + 1);
    })
    .check_image(|img| {
        require_features(img, &["has_journal"], &["extent"]);
        let st = debugfs(img, "stat /big-20m");
        assert!(st.contains("(DIND)"), "big-20m has no double-indirect block:\n{}", &st[..st.len().min(3000)]);
    })
    .min_entries(400)
    .run();
}

#[test]
fn ext4_gdt_csum_without_metadata_csum() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    Case::new("ext4-gdtcsum", 128 << 20, &["-O", "^metadata_csum,uninit_bg"], sink(SINK_1K))
        .check_image(|img| require_features(img, &["uninit_bg", "64bit"], &["metadata_csum"]))
        .min_entries(400)
        .run();
}

#[test]
fn ext4_without_64bit() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    Case::new("ext4-no64bit", 256 << 20, &["-b", "4096", "-O", "^64bit"], sink(SINK_4K))
        .check_image(|img| require_features(img, &["metadata_csum"], &["64bit"]))
        .min_entries(400)
        .run();
}

const INLINE_FL: &str = "Flags: 0x10000000";

fn debugfs_flags_line(img: &Path, path: &str) -> String {
    let s = debugfs(img, &format!("stat \"{path}\""));
    s.lines().find(|l| l.contains("Flags:")).unwrap_or("").to_string()
}

#[test]
fn ext4_inline_data() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    Case::new("ext4-inline", 128 << 20, &["-b", "4096", "-I", "256", "-O", "inline_data"], |r: &Path| {
        populate_kitchen_sink(r, SINK_4K);
        let d = r.join("inline");
        mkdirs(&d);
        for n in [1usize, 10, 59, 60, 61, 100, 120, 200] {
            write_file(&d.join(format!("file-{n}")), &pseudo_random(n as u64, n));
        }
        // A directory small enough to stay inline, one just past i_block
        // (continues in the system.data xattr), and one grown out of inline.
        mkdirs(&d.join("dir-small"));
        for i in 0..3 {
            write_file(&d.join(format!("dir-small/f{i}")), b"s");
        }
        mkdirs(&d.join("dir-edge"));
        for i in 0..6 {
            write_file(&d.join(format!("dir-edge/name{i}")), b"e");
        }
        mkdirs(&d.join("dir-grown"));
        for i in 0..200 {
            write_file(&d.join(format!("dir-grown/entry-{i:03}")), b"g");
        }
        mkdirs(&d.join("dir-empty"));
    })
    .post(|img| {
        // The kernel never stores symlinks inline; e2fsprogs does.
        for len in [60usize, 80, 100] {
            let t: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
            debugfs_w(img, &format!("symlink /inline/e2fs-link-{len} {t}"));
        }
        debugfs_w(img, "mkdir /inline/e2fs-dir");
        debugfs_w(img, "symlink /inline/e2fs-dir/short abc");
    })
    .check_image(|img| {
        for p in
            ["/inline/file-10", "/inline/file-100", "/inline/dir-small", "/inline/e2fs-link-80", "/inline/e2fs-dir"]
        {
            let fl = debugfs_flags_line(img, p);
            assert!(fl.contains(INLINE_FL), "{p} is not inline: {fl}");
        }
        for p in ["/inline/file-200", "/inline/dir-grown"] {
            let fl = debugfs_flags_line(img, p);
            assert!(!fl.contains(INLINE_FL), "{p} is unexpectedly inline: {fl}");
        }
    })
    .min_entries(600)
    .run();
}

/// Names for the big directories; some contain bytes >= 0x80, which the
/// directory hash treats differently with signed and unsigned chars.
fn htree_name(i: usize, pad: usize) -> Vec<u8> {
    let mut n = format!("entry-{i:05}-").into_bytes();
    n.extend(std::iter::repeat_n(b'p', pad));
    if i.is_multiple_of(97) {
        n.extend_from_slice(b"-\xc3\xa9\xff\x80");
    }
    n
}

fn populate_htree(r: &Path, count: usize, pad: usize) {
    let d = r.join("big");
    mkdirs(&d);
    for i in 0..count {
        let p = d.join(OsStr::from_bytes(&htree_name(i, pad)));
        if i % 1000 == 0 {
            write_file(&p, &i.to_le_bytes());
        } else {
            File::create(&p).unwrap_or_else(|e| panic!("create {p:?}: {e}"));
        }
    }
    mkdirs(&d.join("subdir"));
}

/// Looks up 200+ names directly (no readdir) on both mounts, plus names that
/// do not exist, and compares the results.
fn compare_lookups(km: &Path, em: &Path, count: usize, pad: usize) {
    let mut names: Vec<Vec<u8>> = (0..count).step_by(count / 200).map(|i| htree_name(i, pad)).collect();
    names.extend((0..count).step_by(97).take(30).map(|i| htree_name(i, pad)));
    for i in 0..50 {
        names.push(format!("entry-{:05}-missing", i * 37).into_bytes());
        names.push(htree_name(count + i, pad));
    }
    let em2 = em.to_path_buf();
    let km2 = km.to_path_buf();
    let (k, e) = with_timeout("ext4box lookups", WALK_LIMIT, em, move || {
        let k: Vec<_> = names.iter().map(|n| lstat(&km2.join("big").join(OsStr::from_bytes(n)))).collect();
        let e: Vec<_> = names.iter().map(|n| lstat(&em2.join("big").join(OsStr::from_bytes(n)))).collect();
        (k, e)
    });
    let found = k.iter().filter(|r| r.is_ok()).count();
    assert!(found >= 200, "kernel found only {found} of the sampled names");
    let mut bad = Vec::new();
    for (i, (a, b)) in k.iter().zip(e.iter()).enumerate() {
        if a != b {
            bad.push(format!("lookup #{i}: kernel {a:?}\n   ext4box {b:?}"));
        }
    }
    assert!(bad.is_empty(), "{} lookups differ; first:\n{}", bad.len(), bad[..bad.len().min(5)].join("\n"));
}

fn htree_levels(img: &Path) -> u32 {
    let s = debugfs(img, "htree /big");
    let l = s
        .lines()
        .find_map(|l| l.trim().strip_prefix("Indirect levels:"))
        .unwrap_or_else(|| panic!("/big is not an htree directory: {}", &s[..s.len().min(2000)]));
    l.trim().parse().unwrap()
}

#[test]
fn htree_20000_entries_4k() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    Case::new("htree-4k", 256 << 20, &["-b", "4096"], |r: &Path| populate_htree(r, 20_000, 0))
        .check_image(|img| {
            let _ = htree_levels(img);
        })
        .extra(|_, km, em| compare_lookups(km, em, 20_000, 0))
        .min_entries(20_000)
        .run();
}

#[test]
fn htree_20000_entries_1k_two_levels() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    Case::new("htree-1k", 192 << 20, &["-b", "1024", "-N", "40000"], |r: &Path| populate_htree(r, 20_000, 40))
        .check_image(|img| {
            let lv = htree_levels(img);
            assert!(lv >= 1, "expected an htree with index blocks below the root, got {lv} indirect levels");
        })
        .extra(|_, km, em| compare_lookups(km, em, 20_000, 40))
        .min_entries(20_000)
        .run();
}

#[test]
fn htree_tea_hash() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    Case::new("htree-tea", 128 << 20, &["-b", "4096"], |r: &Path| populate_htree(r, 20_000, 10))
        .tune(|img| {
            run_ok(std::process::Command::new("tune2fs").args(["-E", "hash_alg=tea"]).arg(img));
        })
        .check_image(|img| {
            let h = run_ok(std::process::Command::new("dumpe2fs").arg("-h").arg(img));
            assert!(h.lines().any(|l| l.starts_with("Default directory hash:") && l.contains("tea")), "{h}");
            let _ = htree_levels(img);
        })
        .extra(|_, km, em| compare_lookups(km, em, 20_000, 10))
        .min_entries(20_000)
        .run();
}

/// The depth of a file's extent tree, from `debugfs ex`.
fn extent_depth(img: &Path, path: &str) -> u32 {
    let s = debugfs(img, &format!("ex {path}"));
    // Lines look like " 0/ 2   1/  3     0 - 14111  8455  14112".
    let line = s
        .lines()
        .find(|l| l.trim_start().starts_with("0/"))
        .unwrap_or_else(|| panic!("no extents listed for {path}: {}", &s[..s.len().min(1000)]));
    let after = line.trim_start()[2..].trim_start();
    after.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn deep_extent_tree() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    Case::new("deep-extents", 128 << 20, &["-b", "1024"], |r: &Path| {
        // Every other 1 KiB block of 40 MiB: 20480 one-block extents.
        let f = File::create(r.join("fragmented")).unwrap();
        let blk = pseudo_random(77, 1024);
        for i in (0..40 * 1024u64).step_by(2) {
            let mut b = blk.clone();
            b[..8].copy_from_slice(&i.to_le_bytes());
            f.write_all_at(&b, i * 1024).unwrap();
        }
        drop(f);
        // Depth 1: a few hundred extents.
        let f = File::create(r.join("medium")).unwrap();
        for i in (0..600u64).step_by(2) {
            f.write_all_at(&i.to_le_bytes(), i * 1024).unwrap();
        }
        drop(f);
        // Depth 0: up to four extents in the inode.
        let f = File::create(r.join("shallow")).unwrap();
        for i in [0u64, 10, 20] {
            f.write_all_at(b"shallow", i * 1024).unwrap();
        }
        drop(f);
    })
    .check_image(|img| {
        let d = extent_depth(img, "/fragmented");
        assert!(d >= 2, "/fragmented has extent depth {d}, wanted >= 2");
        assert_eq!(extent_depth(img, "/medium"), 1);
        assert_eq!(extent_depth(img, "/shallow"), 0);
    })
    .min_entries(4)
    .run();
}

#[test]
fn sparse_file_over_4gib() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    const GIB: u64 = 1 << 30;
    Case::new("sparse-5g", 8 * GIB, &["-b", "4096"], |r: &Path| {
        populate_kitchen_sink(r, SINK_4K);
        let f = File::create(r.join("huge")).unwrap();
        f.set_len(5 * GIB).unwrap();
        f.write_all_at(b"at zero", 0).unwrap();
        f.write_all_at(b"at four and a half GiB", 4 * GIB + GIB / 2).unwrap();
        f.write_all_at(&pseudo_random(5, 10000), 5 * GIB - 10000).unwrap();
        // An unwritten extent far beyond 4 GiB.
        assert!(fallocate(&f, 0, 4 * GIB + 3 * GIB / 4, 16 << 20));
        drop(f);
        // 300 MiB preallocated: several long unwritten extents.
        let f = File::create(r.join("falloc-l")).unwrap();
        assert!(fallocate(&f, 0, 0, 300 << 20));
        drop(f);
        // 160 MiB written in one go: initialized extents of the maximum
        // length (32768 blocks).
        write_numbered(&r.join("contiguous-160m"), 160 << 20);
        // A hole first, data after.
        let f = File::create(r.join("hole-first")).unwrap();
        f.write_all_at(b"after a 100000-byte hole", 100000).unwrap();
        drop(f);
        let f = File::create(r.join("falloc-then-write")).unwrap();
        assert!(fallocate(&f, 0, 0, 8 << 20));
        f.write_all_at(b"written into the middle of an unwritten extent", 3 << 20).unwrap();
        drop(f);
    })
    .extra(|_, _km, em| {
        // Preallocated files read as zeros (not only "like the kernel").
        for (name, len) in [("falloc-l", 300u64 << 20), ("falloc-then-write", 8 << 20)] {
            let p = em.join(name);
            let (n, nonzero) = with_timeout("read preallocated file", WALK_LIMIT, em, move || {
                let mut f = File::open(&p).unwrap();
                let mut buf = vec![0u8; 1 << 20];
                let (mut n, mut nonzero) = (0u64, Vec::new());
                loop {
                    let k = std::io::Read::read(&mut f, &mut buf).unwrap();
                    if k == 0 {
                        break;
                    }
                    if let Some(i) = buf[..k].iter().position(|&b| b != 0) {
                        nonzero.push(n + i as u64);
                    }
                    n += k as u64;
                }
                (n, nonzero)
            });
            assert_eq!(n, len, "{name}: length read through ext4box");
            if name == "falloc-l" {
                assert!(nonzero.is_empty(), "{name}: non-zero bytes through ext4box at {nonzero:?}");
            } else {
                assert_eq!(nonzero, vec![3u64 << 20], "{name}: only the written part may be non-zero");
            }
        }
    })
    .check_image(|img| {
        let ex = debugfs(img, "ex /contiguous-160m");
        assert!(ex.contains("32768"), "contiguous-160m has no extent of 32768 blocks:\n{ex}");
        let ex = debugfs(img, "ex /falloc-l");
        let uninit = ex.lines().filter(|l| l.contains("Uninit")).count();
        assert!(uninit >= 2, "falloc-l should be several unwritten extents:\n{ex}");
    })
    .min_entries(400)
    .run();
}

#[test]
fn ea_inode_large_xattrs() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    Case::new("ea-inode", 128 << 20, &["-b", "4096", "-O", "ea_inode"], |r: &Path| {
        let big = pseudo_random(64, 64 << 10);
        let a = r.join("big64k");
        write_file(&a, b"has a 64 KiB xattr");
        xattr(&a, "user.big", &big);
        let b = r.join("shares-value");
        write_file(&b, b"same value: shared EA inode");
        xattr(&b, "user.same", &big);
        xattr(&b, "user.ten-k", &pseudo_random(65, 10 << 10));
        xattr(&b, "user.small", b"small");
        let d = r.join("dir");
        mkdirs(&d);
        xattr(&d, "trusted.big", &pseudo_random(66, 20 << 10));
        let mixed = r.join("mixed");
        write_file(&mixed, b"");
        xattr(&mixed, "user.block", &pseudo_random(67, 1500));
        xattr(&mixed, "user.inode", &pseudo_random(68, 9000));
    })
    .check_image(|img| {
        require_features(img, &["ea_inode"], &[]);
        let st = debugfs(img, "stat /big64k");
        assert!(st.contains("user.big (65536)"), "{st}");
    })
    .min_entries(5)
    .run();
}

#[test]
fn image_at_an_offset() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    const OFF: u64 = 1 << 20;
    let s = Scratch::new("offset");
    let img = s.path("disk");
    // Garbage before the filesystem, so ignoring the offset cannot work.
    fs::write(&img, vec![0x5a; OFF as usize]).unwrap();
    run_ok(
        std::process::Command::new("mke2fs")
            .args(["-F", "-q", "-t", "ext4", "-b", "4096", "-E"])
            .arg(format!("offset={OFF}"))
            .arg(&img)
            .arg("64M"),
    );
    let pm = s.mkdir("populate");
    kernel_mount(&img, &pm, &format!("rw,offset={OFF}"));
    populate_kitchen_sink(&pm, SINK_4K);
    kernel_umount(&pm);
    let km = s.mkdir("kernel");
    let em = s.mkdir("ext4box");
    kernel_mount(&img, &km, &format!("ro,offset={OFF}"));
    let m = ext4box_mount_ok(&img, &em, &format!("ro,offset={OFF}"));
    let (kw, ew) = walk_both(&km, &em);
    assert_eq!(kw.error_count(), 0);
    assert!(kw.entries.len() >= 400);
    assert_walks_equal("kernel", &kw, "ext4box", &ew);
    let (kw2, km2, em2) = (kw.clone(), km.clone(), em.clone());
    let diffs = with_timeout("second pass", WALK_LIMIT, &em, move || compare_again(&kw2, &km2, &em2, 5000));
    assert!(
        diffs.is_empty(),
        "second pass differs:\n{}",
        diffs.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
    m.unmount();
    kernel_umount(&km);
}

/// statfs (what df shows) agrees with the kernel's.
#[test]
fn statfs_matches_kernel() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let mut bad = Vec::new();
    for (name, size, args) in [
        ("ext4-4k", 256u64 << 20, vec!["-b", "4096"]),
        ("ext4-1k", 64 << 20, vec!["-b", "1024"]),
        ("ext2", 64 << 20, vec!["-t", "ext2"]),
        ("no-journal-no-reserve", 512 << 20, vec!["-b", "4096", "-O", "^has_journal", "-m", "0"]),
    ] {
        let s = Scratch::new(&format!("statfs-{name}"));
        let img = s.path("image");
        mkfs(&img, size, &args);
        let pm = s.mkdir("populate");
        kernel_mount(&img, &pm, "rw");
        write_file(&pm.join("some-data"), &pseudo_random(1, 3 << 20));
        mkdirs(&pm.join("d/e"));
        kernel_umount(&pm);
        let km = s.mkdir("kernel");
        let em = s.mkdir("ext4box");
        kernel_mount(&img, &km, "ro");
        let m = ext4box_mount_ok(&img, &em, "ro");
        let k = statvfs(&km).unwrap();
        let e = statvfs(&em).unwrap();
        // The casts are no-ops on 64-bit targets only: statvfs's field types differ across targets.
        #[allow(clippy::unnecessary_cast)]
        let fields = |v: &libc::statvfs| {
            [
                ("f_bsize", v.f_bsize as u64),
                ("f_frsize", v.f_frsize as u64),
                ("f_blocks", v.f_blocks as u64),
                ("f_bfree", v.f_bfree as u64),
                ("f_bavail", v.f_bavail as u64),
                ("f_files", v.f_files as u64),
                ("f_ffree", v.f_ffree as u64),
                ("f_favail", v.f_favail as u64),
                ("f_namemax", v.f_namemax as u64),
            ]
        };
        for ((n, kv), (_, ev)) in fields(&k).iter().zip(fields(&e).iter()) {
            if kv != ev {
                bad.push(format!("{name}: {n}: kernel {kv}, ext4box {ev}"));
            }
        }
        m.unmount();
        kernel_umount(&km);
    }
    assert!(bad.is_empty(), "statfs differs:\n{}", bad.join("\n"));
}

/// getdents reports "." and ".." with the ext4 inode numbers, as lstat
/// does: the root is inode 2, on the mount's root and in its children.
#[test]
fn dot_entries_carry_ext4_inode_numbers() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("dots");
    let img = s.path("image");
    mkfs(&img, 32 << 20, &[]);
    let pm = s.mkdir("populate");
    kernel_mount(&img, &pm, "rw");
    mkdirs(&pm.join("top/sub"));
    kernel_umount(&pm);
    let km = s.mkdir("kernel");
    let em = s.mkdir("ext4box");
    kernel_mount(&img, &km, "ro");
    let m = ext4box_mount_ok(&img, &em, "ro");
    let mut bad = Vec::new();
    for rel in ["", "top", "top/sub"] {
        let dots = |root: &Path| -> Vec<(Vec<u8>, u64, u8)> {
            let p = if rel.is_empty() { root.to_path_buf() } else { root.join(rel) };
            raw_readdir(&p).unwrap().into_iter().filter(|(n, _, _)| n == b"." || n == b"..").collect()
        };
        let (k, e) = (dots(&km), dots(&em));
        let self_ino = lstat(&if rel.is_empty() { em.clone() } else { em.join(rel) }).unwrap().ino;
        let dot_ino = e.iter().find(|(n, _, _)| n == b".").map(|x| x.1);
        if k != e || dot_ino != Some(self_ino) {
            bad.push(format!(
                "/{rel}: kernel {:?}, ext4box {:?} (lstat st_ino of the directory via ext4box: {self_ino})",
                k.iter().map(|(n, i, t)| (String::from_utf8_lossy(n).into_owned(), *i, *t)).collect::<Vec<_>>(),
                e.iter().map(|(n, i, t)| (String::from_utf8_lossy(n).into_owned(), *i, *t)).collect::<Vec<_>>()
            ));
        }
    }
    m.unmount();
    kernel_umount(&km);
    assert!(bad.is_empty(), "\".\"/\"..\" entries differ:\n{}", bad.join("\n"));
}

#[test]
fn ext4_2k_blocks() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let sink2k = Sink { big_xattr: 1200, shared_xattr: 600, max_symlink: 2047, many_xattrs: 16 };
    Case::new("ext4-2k", 128 << 20, &["-b", "2048"], sink(sink2k))
        .check_image(|img| assert_eq!(block_size(img), 2048))
        .min_entries(400)
        .run();
}

/// 128-byte inodes: no extra fields (no nanoseconds, no in-inode xattrs,
/// 32-bit times).
#[test]
fn ext4_128_byte_inodes() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    Case::new("ext4-i128", 128 << 20, &["-b", "4096", "-I", "128"], sink(SINK_4K))
        .check_image(|img| {
            let h = run_ok(std::process::Command::new("dumpe2fs").arg("-h").arg(img));
            assert!(h.lines().any(|l| l.starts_with("Inode size:") && l.trim_end().ends_with(" 128")), "{h}");
        })
        .min_entries(400)
        .run();
}

/// meta_bg: group descriptors spread over the disk instead of after the
/// superblock.
#[test]
fn ext4_meta_bg() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    Case::new("ext4-meta-bg", 512 << 20, &["-b", "1024", "-O", "meta_bg,^resize_inode"], sink(SINK_1K))
        .check_image(|img| require_features(img, &["meta_bg"], &["resize_inode"]))
        .min_entries(400)
        .run();
}

/// Without dir_index: big linear directories, looked up by scanning.
#[test]
fn linear_directories_without_dir_index() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    Case::new("linear-dir", 128 << 20, &["-b", "1024", "-O", "^dir_index"], |r: &Path| {
        populate_kitchen_sink(r, SINK_1K);
        populate_htree(r, 5000, 20);
    })
    .check_image(|img| {
        require_features(img, &[], &["dir_index"]);
        let fl = debugfs_flags_line(img, "/big");
        assert!(!fl.contains("0x1000"), "/big is indexed: {fl}");
    })
    .extra(|_, km, em| compare_lookups(km, em, 5000, 20))
    .min_entries(5400)
    .run();
}

/// An image written by e2fsprogs itself (`mke2fs -d`), with inline data:
/// e2fsprogs lays out files, inline data, symlinks and xattrs in its own way.
#[test]
fn mke2fs_d_populated_inline_data() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    Case::new("mke2fs-d", 256 << 20, &["-b", "4096", "-I", "256", "-O", "inline_data"], |_: &Path| {})
        .source(|src: &Path| {
            populate_kitchen_sink(src, SINK_4K);
            mkdirs(&src.join("small-dir"));
            for i in 0..3 {
                write_file(&src.join(format!("small-dir/f{i}")), format!("{i}").as_bytes());
            }
            for len in [30usize, 59, 60, 61, 90] {
                let t: String = (0..len).map(|i| (b'A' + (i % 26) as u8) as char).collect();
                symlink(&t, src.join(format!("small-dir/link-{len}"))).unwrap();
            }
        })
        .check_image(|img| {
            let fl = debugfs_flags_line(img, "/small-dir/f1");
            assert!(fl.contains(INLINE_FL), "mke2fs -d did not store /small-dir/f1 inline: {fl}");
        })
        .min_entries(400)
        .run();
}

/// Several readers at once (the server answers on several threads): every
/// concurrent walk sees exactly what the kernel shows. Each walk drops the
/// pages it read, so later walks go back to the server.
#[test]
fn concurrent_walks_agree() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("concurrent");
    let img = s.path("image");
    mkfs(&img, 128 << 20, &["-b", "1024"]);
    let pm = s.mkdir("populate");
    kernel_mount(&img, &pm, "rw");
    populate_kitchen_sink(&pm, SINK_1K);
    kernel_umount(&pm);
    let km = s.mkdir("kernel");
    let em = s.mkdir("ext4box");
    kernel_mount(&img, &km, "ro");
    let m = ext4box_mount_ok(&img, &em, "ro");
    let kw = walk(&km, &WalkOpts::default());
    let em2 = em.clone();
    let walks = with_timeout("concurrent walks", WALK_LIMIT, &em, move || {
        let hs: Vec<_> = (0..6)
            .map(|_| {
                let root = em2.clone();
                std::thread::spawn(move || (0..3).map(|_| walk(&root, &WalkOpts::default())).collect::<Vec<_>>())
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect::<Vec<_>>()
    });
    assert_eq!(walks.len(), 18);
    for (i, w) in walks.iter().enumerate() {
        assert_walks_equal("kernel", &kw, &format!("ext4box (concurrent walk {i})"), w);
    }
    m.unmount();
    kernel_umount(&km);
}
