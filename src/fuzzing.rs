//! What the fuzz targets (`fuzz/`) run, kept in the library so that the ordinary test suite replays every
//! seed and every minimized finding (`fuzz/regressions/`) on the stable toolchain
//! (`tests/integration/fuzz_regressions.rs`): a fixed bug stays fixed without nightly.
//!
//! Each function takes untrusted bytes and must return, whatever they are: no panic, no hang, memory
//! bounded. The image targets open the bytes as a filesystem on an in-memory device and exercise one
//! family of parsers (the fuzzer mutates the whole image; coverage steers it to that family), with every
//! walk bounded here so that only the engine's own loops can run away.

use crate::ext4::fs::Mapping;
use crate::ext4::inode::flags;
use crate::ext4::ops::{NewInode, SetAttr};
use crate::ext4::{ErrorBehavior, FileKind, Filesystem, InodeNo, MountOptions, ReadView};

/// Inodes looked at per run.
const MAX_INODES: u32 = 256;
/// Directory entries read per directory.
const MAX_ENTRIES: usize = 2048;
/// Bytes read per file.
const MAX_READ: usize = 256 << 10;
/// Logical blocks mapped per file.
const MAX_MAP_STEPS: u64 = 4096;

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// Every fuzz target by name, for the regression replay.
pub const TARGETS: &[(&str, Target)] = &[
    ("superblock", superblock),
    ("journal_superblock", journal_superblock),
    ("partition_table", partition_table),
    ("qcow2_image", qcow2_image),
    ("vmdk_image", vmdk_image),
    ("vhdx_image", vhdx_image),
    ("sparse_image", sparse_image),
    ("handoff", handoff),
    ("service_request", service_request),
    ("mount_options", mount_options),
    ("fuse_request", fuse_request),
    ("group_desc", group_desc),
    ("inode", inode),
    ("extent_tree", extent_tree),
    ("block_map", block_map),
    ("dir_block", dir_block),
    ("htree", htree),
    ("xattr", xattr),
    ("inline_data", inline_data),
    ("symlink", symlink),
    ("journal", journal),
    ("orphan", orphan),
    ("image_read", image_read),
    ("image_write", image_write),
];

// ---- Byte parsers ----

pub fn superblock(data: &[u8]) {
    if let Ok(sb) = crate::ext4::superblock::Superblock::parse(data) {
        let g = sb.group_count();
        for i in 0..g.min(64) {
            let _ = (sb.group_first_block(i), sb.blocks_in_group(i), sb.base_meta_blocks(i), sb.group_has_super(i));
        }
        let _ = (sb.csum_seed(), sb.label(), sb.descs_per_block());
    }
}

pub fn journal_superblock(data: &[u8]) {
    for bs in [1024, 4096] {
        if let Ok(j) = crate::ext4::jbd2::JournalSuperblock::parse(data, bs) {
            let _ = j.emptied(data, j.sequence.wrapping_add(1));
        }
    }
}

pub fn partition_table(data: &[u8]) {
    let read = |off: u64, buf: &mut [u8]| -> std::io::Result<()> {
        let start = usize::try_from(off).map_err(|_| std::io::ErrorKind::UnexpectedEof)?;
        let end = start.checked_add(buf.len()).ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(data.get(start..end).ok_or(std::io::ErrorKind::UnexpectedEof)?);
        Ok(())
    };
    for n in 1..=8 {
        if let Ok(e) = crate::partition::find(n, data.len() as u64, &read) {
            assert!(e.offset + e.len <= data.len() as u64, "a partition outside the image was accepted");
        }
    }
}

/// A qcow2 image's metadata (header, extensions, L1 and L2 tables, compressed clusters) as imago opens
/// it in the worker: the virtual disk read at a few places and, when the image passes the check for
/// writing, written and discarded (see `virtual_disk_reads`).
pub fn qcow2_image(data: &[u8]) {
    // imago panics on some damaged images; the worker's calls into it turn a panic into an error
    // (`image::guarded`, catch_unwind). The fuzzer's panic hook would abort before that unwinding, so it
    // is set aside for these calls: what remains a finding is a hang, unbounded memory, a stack
    // overflow, or a panic that escapes the guard.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let escaped = std::panic::catch_unwind(|| qcow2_reads(data)).is_err();
    std::panic::set_hook(hook);
    assert!(!escaped, "a panic escaped the qcow2 device's guard");
}

fn qcow2_reads(data: &[u8]) {
    virtual_disk_reads(crate::image::Format::Qcow2, data);
}

/// A VMDK sparse extent (monolithicSparse, streamOptimized: header, footer, embedded descriptor, grain
/// directory and tables, compressed grains) opened by `image::vmdk` and its virtual disk read.
pub fn vmdk_image(data: &[u8]) {
    virtual_disk_reads(crate::image::Format::Vmdk, data);
}

/// A VHDX image (headers, region tables, metadata items, the log's entries, the BAT) opened by
/// `image::vhdx` and its virtual disk read.
pub fn vhdx_image(data: &[u8]) {
    virtual_disk_reads(crate::image::Format::Vhdx, data);
}

/// An Android sparse image (header, chunk list) opened by `image::android_sparse` and read.
pub fn sparse_image(data: &[u8]) {
    virtual_disk_reads(crate::image::Format::Sparse, data);
}

/// Opens `data` as an image in `format` and reads its virtual disk at its start, middle and end, and
/// where a filesystem's superblock would be. A qcow2 image that passes the check for writing is then
/// written at those places (allocating clusters and refcount blocks) and must read back what was
/// written; then its first half is discarded (clusters freed, punched out of the image), after which
/// the first cluster reads as zeros and what was written in the second half still reads back.
fn virtual_disk_reads(format: crate::image::Format, data: &[u8]) {
    use crate::ext4::BlockDevice;
    use crate::image::MemImage;
    let image = MemImage::new(data.to_vec(), data.len().saturating_mul(2).max(1 << 20));
    let Ok((disk, read_only)) = crate::image::open_virtual_disk(format, image, true) else { return };
    let size = disk.size();
    let mut buf = vec![0u8; 65536];
    let places = [0, 1024, 4095, size / 2, size.saturating_sub(65536), size.saturating_sub(100)];
    for at in places {
        let n = (size - at.min(size)).min(buf.len() as u64) as usize;
        let _ = disk.read_exact_at(&mut buf[..n], at);
    }
    if read_only.is_none() {
        // The bytes each successful write left, later writes over earlier ones (the places overlap
        // on small disks); a write that failed leaves its range unknown.
        let mut expected = std::collections::BTreeMap::<u64, u8>::new();
        for (i, at) in places.into_iter().enumerate() {
            let n = (size - at.min(size)).min(4096) as usize;
            let pattern = vec![0xa0 | i as u8; n];
            let range = at..at + n as u64;
            if disk.write_all_at(&pattern, at).is_ok() && disk.flush().is_ok() {
                let mut back = vec![0u8; n];
                if disk.read_exact_at(&mut back, at).is_ok() {
                    assert!(back == pattern, "a qcow2 write at {at} did not read back");
                }
                expected.extend(range.map(|b| (b, pattern[0])));
            } else {
                expected.retain(|b, _| !range.contains(b));
            }
        }
        let half = size / 2;
        if disk.discard(0, half).is_ok() {
            let mut first = vec![0u8; 512.min(size as usize)];
            if half >= 2 << 20 && disk.read_exact_at(&mut first, 0).is_ok() {
                assert!(first.iter().all(|&b| b == 0), "a discarded qcow2 cluster does not read as zeros");
            }
            let kept: Vec<(u64, u8)> = expected.range(half..).map(|(&b, &v)| (b, v)).collect();
            for run in kept.chunk_by(|a, b| a.0 + 1 == b.0) {
                let mut back = vec![0u8; run.len()];
                if disk.read_exact_at(&mut back, run[0].0).is_ok() {
                    let lost = run.iter().zip(&back).find(|((_, want), got)| want != *got);
                    assert!(lost.is_none(), "a discard of the first half lost a write at {:?}", lost.map(|l| l.0.0));
                }
            }
        }
    }
    let _ = disk.flush();
}

pub fn handoff(data: &[u8]) {
    if let Ok(h) = crate::launcher::fd_socket::Handoff::decode(data) {
        // What decodes must encode to something that decodes to the same.
        let again = crate::launcher::fd_socket::Handoff::decode(&h.encode()).expect("re-encoded handoff");
        assert_eq!(again, h);
    }
}

pub fn service_request(data: &[u8]) {
    if let Ok(r) = crate::launcher::service::Request::decode(data) {
        let _ = crate::launcher::service::Request::decode(&r.encode());
    }
}

pub fn mount_options(data: &[u8]) {
    use crate::launcher::worker_config::WorkerConfig;
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(o) = crate::launcher::options::MountOptions::parse(s) {
            // What `-o` accepts, the worker accepts back from its one encoding.
            let c = o.worker_config(1000, false);
            assert_eq!(WorkerConfig::decode(&c.encode()).map_err(|e| e.to_string()).as_ref(), Ok(&c));
            let _ = (o.ms_flags(), o.fusermount_options("img"), o.fstype(false));
        }
        let _ = WorkerConfig::decode(s);
    }
}

/// A FUSE request from the kernel, decoded as /dev/fuse delivers it (one buffer) and as io_uring does
/// (the header, the opcode's struct and the payload apart), then answered with an error reply frame.
pub fn fuse_request(data: &[u8]) {
    use crate::fuse::request::{self, Args};
    use zerocopy::FromBytes;
    if let Ok(r) = request::decode(data) {
        let _ = (r.op.wants_reply(), crate::fuse::Response::Error(5).framed(r.unique()));
    }
    if let Ok((h, rest)) = crate::fuse::abi::InHeader::read_from_prefix(data) {
        let (op_in, payload) = rest.split_at(rest.len().min(crate::fuse::abi::URING_OP_IN_OUT_SZ));
        let _ = request::decode_parts(h, Args::split(h.opcode, op_in, payload));
    }
}

// ---- Images ----

/// Opens `data` as a filesystem on an in-memory device (read-only: the replay of a journal that needs
/// recovery goes into memory, as on a read-only mount).
fn open(data: &[u8], read_only: bool) -> Option<Filesystem> {
    let dev = crate::ext4::device::MemDevice::new(data.to_vec());
    // A small cache: eviction paths run too, and memory stays bounded.
    let opts = MountOptions {
        read_only,
        cache_bytes: 256 << 10,
        inode_cache: 256,
        // A fuzz input must not wait seconds for multiple mount protection.
        mmp_sleep: |_| {},
        // Limits read from the image's quota files are checked on every charge.
        quota_limits: [true; 3],
        ..MountOptions::default()
    };
    Filesystem::open(Box::new(dev), &opts).ok()
}

/// The inodes a run looks at: the root, the first non-reserved ones, and those the root lists.
fn inodes(fs: &ReadView<'_>) -> Vec<InodeNo> {
    let count = fs.superblock().inodes_count;
    let mut v: Vec<InodeNo> = (1..=count.min(MAX_INODES)).map(InodeNo).collect();
    if let Ok(root) = fs.inode(crate::ext4::ROOT_INO) {
        let _ = fs.read_dir(&root, 0, &mut |e, _| {
            v.push(e.ino);
            v.len() > 2 * MAX_INODES as usize
        });
    }
    v
}

/// Maps `inode`'s blocks (bounded) and checks SEEK_DATA/SEEK_HOLE.
fn map_all(fs: &ReadView<'_>, inode: &crate::ext4::Inode) {
    let bs = u64::from(fs.block_size());
    let blocks = inode.size.div_ceil(bs);
    let mut lblk = 0;
    let mut steps = 0;
    while lblk < blocks && steps < MAX_MAP_STEPS {
        steps += 1;
        match fs.map(inode, lblk) {
            Ok(Mapping::Mapped { len, .. }) => lblk = lblk.saturating_add(len.max(1)),
            Ok(Mapping::Hole { len }) => lblk = lblk.saturating_add(len.unwrap_or(u64::MAX).max(1)),
            Err(_) => break,
        }
    }
    let _ = fs.seek_data(inode, 0);
    let _ = fs.seek_hole(inode, 0);
}

fn read_file(fs: &ReadView<'_>, inode: &crate::ext4::Inode) {
    if let Ok(v) = fs.read(inode, 0, MAX_READ) {
        assert!(v.len() <= MAX_READ, "read returned more than asked");
    }
}

fn list_dir(fs: &ReadView<'_>, inode: &crate::ext4::Inode) -> Vec<Vec<u8>> {
    let mut names = Vec::new();
    let mut cookies = 0;
    let _ = fs.read_dir(inode, 0, &mut |e, _| {
        cookies += 1;
        names.push(e.name);
        cookies >= MAX_ENTRIES
    });
    names
}

fn xattrs(fs: &ReadView<'_>, inode: &crate::ext4::Inode) {
    if let Ok(names) = fs.list_xattrs(inode) {
        for n in names.iter().take(64) {
            let _ = fs.get_xattr(inode, n);
        }
    }
    let _ = fs.get_xattr(inode, b"system.posix_acl_access");
}

/// Runs `f` on every inode of interest whose flags and kind `want` accepts.
fn each(data: &[u8], want: fn(&crate::ext4::Inode) -> bool, f: fn(&ReadView<'_>, &crate::ext4::Inode)) {
    let Some(fs) = open(data, true) else { return };
    let r = fs.reader();
    for ino in inodes(&r) {
        if let Ok(inode) = r.inode(ino) {
            if want(&inode) {
                f(&r, &inode);
            }
        }
    }
}

pub fn group_desc(data: &[u8]) {
    if let Some(fs) = open(data, true) {
        let _ = fs.statfs();
    }
}

pub fn inode(data: &[u8]) {
    each(
        data,
        |_| true,
        |fs, i| {
            let _ = (i.perm(), fs.user_inode(i.ino).is_ok());
        },
    );
}

pub fn extent_tree(data: &[u8]) {
    each(
        data,
        |i| i.has_flag(flags::EXTENTS),
        |fs, i| {
            map_all(fs, i);
            read_file(fs, i);
        },
    );
}

pub fn block_map(data: &[u8]) {
    each(
        data,
        |i| !i.has_flag(flags::EXTENTS) && !i.has_flag(flags::INLINE_DATA),
        |fs, i| {
            map_all(fs, i);
            read_file(fs, i);
        },
    );
}

pub fn dir_block(data: &[u8]) {
    each(
        data,
        |i| i.kind == FileKind::Directory,
        |fs, i| {
            let _ = list_dir(fs, i);
        },
    );
}

pub fn htree(data: &[u8]) {
    each(
        data,
        |i| i.kind == FileKind::Directory && i.has_flag(flags::INDEX),
        |fs, i| {
            // Look up every listed name (through the index) and some that are not there.
            for name in list_dir(fs, i).iter().take(512) {
                let _ = fs.lookup(i, name);
            }
            for n in 0..64u32 {
                let _ = fs.lookup(i, format!("absent-{n}").as_bytes());
            }
        },
    );
}

pub fn xattr(data: &[u8]) {
    each(data, |_| true, xattrs);
}

pub fn inline_data(data: &[u8]) {
    each(
        data,
        |i| i.has_flag(flags::INLINE_DATA),
        |fs, i| {
            if i.kind == FileKind::Directory {
                let _ = list_dir(fs, i);
                let _ = fs.lookup(i, b"x");
            } else {
                read_file(fs, i);
            }
        },
    );
}

pub fn symlink(data: &[u8]) {
    each(
        data,
        |i| i.kind == FileKind::Symlink,
        |fs, i| {
            if let Ok(t) = fs.readlink(i) {
                assert!(t.len() <= 4095, "a symlink target longer than PATH_MAX was returned");
            }
        },
    );
}

/// Opening replays a journal that needs recovery: read-only into memory, and read-write onto a copy.
pub fn journal(data: &[u8]) {
    if let Some(fs) = open(data, true) {
        let r = fs.reader();
        if let Ok(root) = r.inode(crate::ext4::ROOT_INO) {
            let _ = list_dir(&r, &root);
        }
    }
    if let Some(fs) = open(data, false) {
        let _ = fs.close();
    }
}

/// A read-write open processes the orphan list; the unmount processes it again.
pub fn orphan(data: &[u8]) {
    if let Some(fs) = open(data, false) {
        let _ = fs.close();
    }
}

/// Everything a read-only mount can be asked: every directory listed, every inode stat'ed, every file
/// read, every xattr listed.
pub fn image_read(data: &[u8]) {
    each(
        data,
        |_| true,
        |fs, i| {
            xattrs(fs, i);
            match i.kind {
                FileKind::Directory => {
                    for name in list_dir(fs, i).iter().take(64) {
                        let _ = fs.lookup(i, name);
                    }
                }
                FileKind::Symlink => {
                    let _ = fs.readlink(i);
                }
                _ => {
                    map_all(fs, i);
                    read_file(fs, i);
                }
            }
        },
    );
}

/// A short fixed sequence of writes on the image: allocation, htree insertion and extent splitting meet
/// whatever the bitmaps and trees say. A corruption found while writing must leave the filesystem
/// read-only (as errors=remount-ro), and the unmount must still return.
pub fn image_write(data: &[u8]) {
    let Some(fs) = open(data, false) else { return };
    fs.set_error_behavior(ErrorBehavior::RemountRo);
    let check = |r: Result<(), crate::ext4::Error>| {
        if let Err(e) = r {
            if e.is_corruption() {
                fs.corruption_found(&e);
                assert!(fs.is_read_only(), "a corruption found while writing left the filesystem writable");
            }
        }
    };
    let root = crate::ext4::ROOT_INO;
    let file = NewInode { mode: 0o100644, uid: 0, gid: 0, rdev: 0, umask: None };
    let dir = NewInode { mode: 0o40755, ..file };
    let mut made = Vec::new();
    for i in 0..24u32 {
        let name = format!("fuzz-{i}-{}", "n".repeat((i as usize * 7) % 60));
        // Owners spread over ids: quota files get new entries (and tree blocks) for them.
        let owned = NewInode { uid: i * 4099, gid: i % 5, ..file };
        match fs.mknod(root, name.as_bytes(), owned) {
            Ok(inode) => made.push((inode.ino, name)),
            Err(e) => check(Err(e)),
        }
    }
    if let Ok(d) = fs.mkdir(root, b"fuzz-dir", dir) {
        for i in 0..8u32 {
            check(fs.mknod(d.ino, format!("in-{i}").as_bytes(), file).map(|_| ()));
        }
    }
    for (n, (ino, _)) in made.iter().enumerate().take(8) {
        // Scattered writes split extents; a large one allocates many blocks.
        let chunk = vec![n as u8; 3000];
        for k in 0..6u64 {
            check(fs.write(*ino, k * 9000 + n as u64 * 100, &chunk).map(|_| ()));
        }
        check(fs.write(*ino, 1 << 20, &[1u8; 70_000]).map(|_| ()));
        check(fs.set_xattr(*ino, b"user.fuzz", Some(&[7u8; 100]), 0));
        // Too large for the inode and a block: an EA inode with ea_inode (ENOSPC without), then changed.
        if n % 2 == 1 {
            check(fs.set_xattr(*ino, b"user.large", Some(&vec![n as u8; 20_000]), 0));
            check(fs.set_xattr(*ino, b"user.large", Some(&vec![9u8; if n == 3 { 30_000 } else { 10 }]), 0));
        }
    }
    if let Some((ino, _)) = made.first() {
        check(fs.setattr(*ino, SetAttr { size: Some(5000), ..SetAttr::default() }).map(|_| ()));
    }
    for (n, (ino, _)) in made.iter().enumerate().skip(4).take(4) {
        check(
            fs.setattr(*ino, SetAttr { uid: Some(70_000 + n as u32), gid: Some(9), ..SetAttr::default() }).map(|_| ()),
        );
    }
    if let (Some((_, a)), Some((_, b))) = (made.get(1), made.get(2)) {
        check(fs.rename(root, a.as_bytes(), root, format!("{b}-renamed").as_bytes(), 0));
    }
    for (_, name) in made.iter().skip(3).take(6) {
        check(fs.unlink(root, name.as_bytes()));
    }
    let _ = fs.sync();
    let _ = fs.close();
}
