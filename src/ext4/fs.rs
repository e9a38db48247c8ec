//! The filesystem: an opened image (its caches, its group descriptors) and the reads of blocks and inodes
//! everything else is built on. Whether it may write (read-only, `errors=`, MMP) is `mount_state.rs`;
//! directories are read in `dir_read.rs`, files and symlinks in `file_read.rs`, xattrs in
//! `xattr_read.rs`, statfs in `statfs.rs`; what each feature allows is `feature_policy.rs`.
//!
//! Metadata blocks go through a bounded block cache and parsed inodes through a bounded inode cache, so
//! repeated lookups touch no disk. File data bypasses the cache: it is read straight into the reply buffer.

use std::collections::HashMap;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use super::block_group::{self, GroupDesc};
use super::cache::ClockCache;
use super::device::BlockDevice;
use super::error::{CorruptKind, Error, Object, Result};
use super::feature_policy::{check_features, write_refusal};
use super::features::*;
use super::inode::{FileKind as Kind, Inode, InodeNo, Timestamp, flags};
use super::mmp::{self, Mmp};
use super::mount_state::{ErrorBehavior, ReadOnlyHook};
use super::read_only::ReadOnlyReason;
use super::superblock::{RawSuperblock, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, Superblock};

pub use super::inode::FileKind;

/// Longest name a directory entry can hold.
pub const NAME_MAX: usize = 255;

/// What the caller asks of the mount.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Read the image as it is even when its journal needs recovery.
    pub norecovery: bool,
    /// Metadata block cache bound, in bytes.
    pub cache_bytes: usize,
    /// Parsed inode cache bound, in inodes.
    pub inode_cache: usize,
    /// Open for reading only. A read-write open of an image with features the engine cannot write
    /// falls back to read-only, with the reason in [`Filesystem::read_only_reason`].
    pub read_only: bool,
    /// Who this mount is, written into the MMP block of a read-write mount of an `mmp` image.
    pub mmp_owner: mmp::Owner,
    /// How taking the MMP block waits ([`mmp::sleep`]; fuzzing does not wait).
    pub mmp_sleep: mmp::Sleep,
    /// Quota types (user, group, project) whose limits are enforced (`usrquota`, `grpquota`, `prjquota`,
    /// as the kernel's ext4 options): usage is always tracked, limits only when asked.
    pub quota_limits: [bool; 3],
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            norecovery: false,
            cache_bytes: 64 << 20,
            inode_cache: 65536,
            read_only: true,
            mmp_owner: mmp::Owner::default(),
            mmp_sleep: mmp::sleep,
            quota_limits: [false; 3],
        }
    }
}

/// Where a logical block of a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// `len` blocks starting at physical block `pblk`; unwritten (preallocated) blocks read as zeros.
    Mapped { pblk: u64, len: u64, unwritten: bool },
    /// A hole of `len` blocks, or up to the end of the map when `None`.
    Hole { len: Option<u64> },
}

/// One directory entry as the server needs it.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub ino: InodeNo,
    /// From the entry's file type byte; `None` without the filetype feature (ask the inode).
    pub kind: Option<FileKind>,
    pub name: Vec<u8>,
}

/// Filesystem statistics, as statfs(2) reports them.
#[derive(Debug, Clone, Copy)]
pub struct StatFs {
    pub block_size: u32,
    pub blocks: u64,
    pub free_blocks: u64,
    pub available_blocks: u64,
    pub inodes: u64,
    pub free_inodes: u64,
    pub name_max: u32,
}

/// The superblock fields the write side changes, and the raw superblock they are written back into.
#[derive(Debug, Clone)]
pub(crate) struct SbState {
    pub raw: RawSuperblock,
    /// Free clusters (blocks without bigalloc), the sum of the group descriptors' counts.
    pub free_clusters: u64,
    pub free_inodes: u64,
    pub last_orphan: u32,
}

/// An opened ext2/ext3/ext4 filesystem.
pub struct Filesystem {
    pub(crate) dev: Box<dyn BlockDevice>,
    /// Geometry and features: fixed while mounted.
    pub(crate) sb: Superblock,
    pub(crate) groups: RwLock<Vec<GroupDesc>>,
    pub(crate) state: Mutex<SbState>,
    pub(crate) blocks: ClockCache<u64, Arc<Vec<u8>>>,
    pub(crate) inodes: ClockCache<u32, Arc<Inode>>,
    /// Metadata blocks changed by the write operation in progress and not yet committed (see `txn.rs`).
    pub(crate) pending: Mutex<HashMap<u64, Arc<Vec<u8>>>>,
    /// Readers hold it shared; a write operation holds it exclusively from its first read to its commit.
    pub(crate) lock: RwLock<()>,
    /// Why the filesystem is read-only, or `None` when it is writable.
    pub(crate) read_only: Option<ReadOnlyReason>,
    /// References the caller (the kernel, through FUSE lookups) holds per inode: an unlinked inode lives
    /// on the orphan list until the last is dropped, and its number is not reused before.
    pub(crate) refs: Mutex<HashMap<u32, u64>>,
    /// Inodes put on the orphan list because they were unlinked while referenced: deleted at their last
    /// unpin (or at unmount).
    pub(crate) doomed: Mutex<std::collections::HashSet<u32>>,
    /// Source of `i_generation` values.
    pub(crate) generation: AtomicU32,
    /// The caller's kernel keeps regular files' mtime and ctime itself (FUSE writeback cache) and sends
    /// them with setattr: the engine must then not set them on its own, or what programs saw and what is
    /// on disk would part.
    pub(crate) kernel_file_times: std::sync::atomic::AtomicBool,
    /// Discard blocks as commits free them (`discard`; see `trim`).
    pub(crate) discard: std::sync::atomic::AtomicBool,
    /// Metadata blocks, left out of statfs's size (computed once: the layout does not change).
    pub(super) overhead: u64,
    /// The journal writes go through (read-write mounts of images with an internal journal).
    pub(crate) log: Option<super::journal_write::Log>,
    /// The orphan file, mapped (read-write mounts of images with `orphan_file`).
    pub(crate) orphan_file: Option<super::orphan_file::OrphanFile>,
    /// The quota files whose usage writes keep up to date (`quota` feature, writable mounts).
    pub(crate) quota: Option<super::quota::QuotaFiles>,
    /// The name encoding of casefolded directories (`casefold` feature).
    pub(crate) casefold: Option<super::casefold::Encoding>,
    /// `errors=`.
    pub(super) errors: Mutex<ErrorBehavior>,
    /// Set when a corruption found on a writable mount turned the filesystem read-only: why.
    pub(crate) errored: Mutex<Option<ReadOnlyReason>>,
    /// Set when a journal commit failed part way: nothing more is written, not even at unmount.
    pub(crate) aborted: Mutex<Option<ReadOnlyReason>>,
    /// Set when a corruption was found under `errors=panic`.
    pub(super) must_stop: std::sync::atomic::AtomicBool,
    /// The MMP block this mount keeps updated (read-write mounts of `mmp` images); taken away when
    /// another node took the image, so that it is not released over that node's sequence.
    pub(super) mmp: Mutex<Option<Mmp>>,
    /// Told when the filesystem turns read-only while mounted.
    pub(super) read_only_hook: std::sync::OnceLock<ReadOnlyHook>,
}

impl Filesystem {
    /// Gives back the device (the probe mount used to read the journal).
    pub(super) fn into_device(self) -> Box<dyn BlockDevice> {
        self.dev
    }

    /// The device under the filesystem, for reading blocks that bypass the metadata cache.
    pub(crate) fn device(&self) -> &dyn BlockDevice {
        &*self.dev
    }

    /// Opens the filesystem as the device holds it, without looking at the journal.
    pub(super) fn open_as_is(dev: Box<dyn BlockDevice>, opts: &MountOptions) -> Result<Filesystem> {
        let (raw, sb) = read_superblock(&*dev)?;
        check_features(&sb)?;
        if sb.needs_recovery() && !opts.norecovery {
            return Err(Error::Unsupported("the journal still needs recovery after replay".into()));
        }
        let bytes = sb.blocks_count.checked_mul(u64::from(sb.block_size));
        if bytes.is_none_or(|b| b > dev.size()) {
            return Err(Error::corrupt(Object::Superblock, CorruptKind::BlockCountExceedsSizeOfDevice));
        }
        let block_bytes = usize::try_from(sb.block_size).unwrap_or(4096);
        let read_only = if opts.read_only { Some(ReadOnlyReason::Asked) } else { write_refusal(&sb) };
        let raw = RawSuperblock::new(raw);
        let errors = raw.errors();
        let state = SbState {
            free_clusters: sb.free_blocks_count >> sb.cluster_bits(),
            free_inodes: u64::from(sb.free_inodes_count),
            last_orphan: sb.last_orphan,
            raw,
        };
        let seed = Timestamp::now();
        let mut fs = Filesystem {
            dev,
            groups: RwLock::new(Vec::new()),
            state: Mutex::new(state),
            blocks: ClockCache::new(opts.cache_bytes.checked_div(block_bytes).unwrap_or(0)),
            // Bounded by bytes too: a parsed inode keeps its raw record and xattr area (up to two inode
            // sizes, which may be as large as a block).
            inodes: ClockCache::new(
                opts.inode_cache.min(
                    opts.cache_bytes.checked_div(usize::from(sb.inode_size).saturating_mul(2)).unwrap_or(0).max(1),
                ),
            ),
            pending: Mutex::new(HashMap::new()),
            lock: RwLock::new(()),
            read_only,
            refs: Mutex::new(HashMap::new()),
            doomed: Mutex::new(std::collections::HashSet::new()),
            generation: AtomicU32::new((seed.nsec ^ super::bytes::low32(seed.sec.unsigned_abs()).rotate_left(13)) | 1),
            kernel_file_times: std::sync::atomic::AtomicBool::new(false),
            discard: std::sync::atomic::AtomicBool::new(false),
            overhead: 0,
            log: None,
            orphan_file: None,
            quota: None,
            casefold: super::casefold::Encoding::from_superblock(&sb)?,
            errors: Mutex::new(match errors {
                1 => ErrorBehavior::Continue,
                3 => ErrorBehavior::Panic,
                _ => ErrorBehavior::RemountRo,
            }),
            errored: Mutex::new(None),
            aborted: Mutex::new(None),
            must_stop: std::sync::atomic::AtomicBool::new(false),
            mmp: Mutex::new(None),
            read_only_hook: std::sync::OnceLock::new(),
            sb,
        };
        let groups = fs.read_group_descriptors()?;
        // The superblock's free counts are only a hint while mounted; the group descriptors are exact.
        {
            let st = fs.state.get_mut().unwrap_or_else(|p| p.into_inner());
            st.free_clusters = groups.iter().map(|g| u64::from(g.free_blocks_count)).sum();
            st.free_inodes = groups.iter().map(|g| u64::from(g.free_inodes_count)).sum();
        }
        if fs.read_only.is_none() {
            if let Some(g) = groups.iter().position(|d| !d.checksum_ok) {
                // As the kernel: a damaged descriptor table is read, but not written.
                fs.read_only = Some(ReadOnlyReason::DamagedGroupDescriptor(g));
            }
        }
        *fs.groups.get_mut().unwrap_or_else(|p| p.into_inner()) = groups;
        fs.overhead = fs.overhead_blocks();
        // As the kernel: a filesystem whose root is not a readable directory is refused, not mounted with
        // nothing reachable in it.
        if fs.inode(super::ROOT_INO)?.kind != Kind::Directory {
            return Err(Error::corrupt(Object::Inode(super::ROOT_INO.0), CorruptKind::RootDirectoryIsNotDirectory));
        }
        if fs.read_only.is_none() && fs.sb.has_compat(COMPAT_ORPHAN_FILE) {
            match super::orphan_file::OrphanFile::open(&fs) {
                Ok(file) => fs.orphan_file = Some(file),
                Err(why) => fs.read_only = Some(ReadOnlyReason::OrphanFile(why)),
            }
        }
        if fs.read_only.is_none() {
            if let Some(files) = super::quota::QuotaFiles::from_superblock(&fs.sb, opts.quota_limits) {
                match files.check(&fs) {
                    Ok(()) => fs.quota = Some(files),
                    Err(e) => fs.read_only = Some(ReadOnlyReason::QuotaFiles(e.to_string())),
                }
            }
        }
        if fs.read_only.is_none() && fs.sb.has_compat(COMPAT_HAS_JOURNAL) {
            match super::journal_write::Log::open(&fs) {
                Ok(log) => fs.log = Some(log),
                Err(why) => fs.read_only = Some(ReadOnlyReason::Journal(why.to_string())),
            }
        }
        if fs.read_only.is_none() {
            fs.mount_rw()?;
        }
        Ok(fs)
    }

    /// Tells the engine that the caller's kernel keeps regular files' mtime and ctime (see the field).
    pub fn set_kernel_file_times(&self, on: bool) {
        self.kernel_file_times.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Sets `inode`'s ctime (and mtime with `modified`) to now, unless the kernel keeps them.
    pub(crate) fn touch(&self, inode: &mut Inode, modified: bool) {
        if inode.kind == Kind::Regular && self.kernel_file_times.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let now = Timestamp::now();
        inode.ctime = now;
        if modified {
            inode.mtime = now;
        }
    }

    /// Holds off write operations while the caller reads (write operations take the lock exclusively
    /// themselves); outside the engine, reads go through [`Filesystem::reader`], which holds it.
    pub(in crate::ext4) fn shared(&self) -> RwLockReadGuard<'_, ()> {
        self.lock.read().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of group `g`'s descriptor.
    pub(crate) fn group(&self, g: u32) -> Option<GroupDesc> {
        self.groups.read().unwrap_or_else(|p| p.into_inner()).get(super::bytes::index(g)).cloned()
    }

    fn read_group_descriptors(&self) -> Result<Vec<GroupDesc>> {
        let sb = &self.sb;
        let desc_size = usize::from(sb.desc_size);
        let per_block = super::bytes::index(sb.block_size).checked_div(desc_size).unwrap_or(0);
        // Bounded: the block count was checked against the device size.
        let count = sb.group_count();
        let mut groups = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        let itable_blocks = u64::from(sb.inodes_per_group)
            .saturating_mul(u64::from(sb.inode_size))
            .div_ceil(u64::from(sb.block_size).max(1));
        // Group numbers are below 2^32 (the inode count, a u32, is inodes per group times groups).
        let mut g = 0u32;
        let mut nr = 0u64;
        while u64::from(g) < count {
            let loc = block_group::descriptor_block(sb, nr)
                .ok_or_else(|| Error::corrupt(Object::Superblock, CorruptKind::GroupDescriptorTableOutOfRange))?;
            let block = self.read_block_uncached(loc, Object::GroupDescriptor(g))?;
            for chunk in block.chunks_exact(desc_size).take(per_block) {
                if u64::from(g) >= count {
                    break;
                }
                let mut d = GroupDesc::parse(sb, g, chunk);
                if !d.checksum_ok {
                    tracing::warn!(group = g, "group descriptor checksum mismatch");
                }
                // An inode table outside the filesystem makes the group's inodes unreadable.
                if d.inode_table == 0
                    || d.inode_table.checked_add(itable_blocks).is_none_or(|end| end > sb.blocks_count)
                {
                    tracing::warn!(group = g, "inode table out of range: its inodes are refused");
                    d.usable = false;
                    d.checksum_ok = false;
                }
                groups.push(d);
                g = g.checked_add(1).ok_or(Error::corrupt(
                    Object::Superblock,
                    CorruptKind::InodeCountIsNotInodesPerGroupTimesGroupCount,
                ))?;
            }
            nr = nr.saturating_add(1);
        }
        Ok(groups)
    }

    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    pub fn block_size(&self) -> u32 {
        self.sb.block_size
    }

    /// Fails unless blocks `start..start + len` lie inside the filesystem (after its first data block).
    pub fn check_range(&self, start: u64, len: u64, obj: Object) -> Result<()> {
        let ok = start > u64::from(self.sb.first_data_block).saturating_sub(1)
            && start != 0
            && start.checked_add(len).is_some_and(|end| end <= self.sb.blocks_count);
        if ok { Ok(()) } else { Err(Error::corrupt(obj, CorruptKind::BlockNumberOutOfRange)) }
    }

    fn read_block_uncached(&self, nr: u64, obj: Object) -> Result<Vec<u8>> {
        self.check_range(nr, 1, obj)?;
        let bs = u64::from(self.sb.block_size);
        let mut buf = vec![0u8; super::bytes::index(self.sb.block_size)];
        // check_range: nr lies inside the filesystem, whose size was checked against the device.
        self.dev.read_exact_at(&mut buf, nr.saturating_mul(bs))?;
        Ok(buf)
    }

    /// A metadata block, through the block cache. `obj` names what the caller is reading, for errors.
    pub fn meta_block(&self, nr: u64, obj: Object) -> Result<Arc<Vec<u8>>> {
        if let Some(b) = self.pending.lock().unwrap_or_else(|p| p.into_inner()).get(&nr) {
            return Ok(b.clone());
        }
        if let Some(b) = self.log.as_ref().and_then(|log| log.get(nr)) {
            return Ok(b);
        }
        if let Some(b) = self.blocks.get(&nr) {
            return Ok(b);
        }
        let b = Arc::new(self.read_block_uncached(nr, obj)?);
        self.blocks.insert(nr, b.clone());
        Ok(b)
    }

    /// Reads inode `ino` (through the inode cache). Any valid inode number is accepted; use
    /// [`Filesystem::user_inode`] for numbers that come from directory entries or the kernel.
    pub(in crate::ext4) fn inode(&self, ino: InodeNo) -> Result<Arc<Inode>> {
        if let Some(i) = self.inodes.get(&ino.0) {
            return Ok(i);
        }
        let obj = Object::Inode(ino.0);
        if ino.0 == 0 || ino.0 > self.sb.inodes_count {
            return Err(Error::corrupt(obj, CorruptKind::InodeNumberOutOfRange));
        }
        let (block_nr, off) = self.inode_location(ino)?;
        let block = self.meta_block(block_nr, obj)?;
        let raw = block.get(off..off.saturating_add(usize::from(self.sb.inode_size))).unwrap_or_default();
        let inode = Arc::new(Inode::parse(&self.sb, ino, raw)?);
        self.inodes.insert(ino.0, inode.clone());
        Ok(inode)
    }

    /// The inode table block that holds inode `ino`, and the record's offset in it.
    pub(crate) fn inode_location(&self, ino: InodeNo) -> Result<(u64, usize)> {
        let obj = Object::Inode(ino.0);
        if ino.0 == 0 || ino.0 > self.sb.inodes_count {
            return Err(Error::corrupt(obj, CorruptKind::InodeNumberOutOfRange));
        }
        // 1 <= ino <= inodes_count, and inodes per group is not 0 (the superblock was validated).
        let index = ino.0.saturating_sub(1);
        let group = index.checked_div(self.sb.inodes_per_group).unwrap_or(0);
        let desc = self.group(group).ok_or_else(|| Error::corrupt(obj, CorruptKind::NoGroupForInode))?;
        if !desc.usable {
            return Err(Error::corrupt(Object::GroupDescriptor(group), CorruptKind::InodeTableOutOfRange));
        }
        let byte = u64::from(index.checked_rem(self.sb.inodes_per_group).unwrap_or(0))
            .saturating_mul(u64::from(self.sb.inode_size));
        let bs = u64::from(self.sb.block_size);
        let within = usize::try_from(byte.checked_rem(bs).unwrap_or(0)).unwrap_or(0);
        // The table lies inside the filesystem (checked when the descriptor was read).
        Ok((desc.inode_table.saturating_add(byte.checked_div(bs).unwrap_or(0)), within))
    }

    /// Reads an inode that a directory entry or a caller named: reserved inodes (below `s_first_ino`,
    /// except the root) are internal and refused, as the kernel refuses them.
    pub(in crate::ext4) fn user_inode(&self, ino: InodeNo) -> Result<Arc<Inode>> {
        if ino != super::ROOT_INO && ino.0 < self.sb.first_ino {
            return Err(Error::corrupt(Object::Inode(ino.0), CorruptKind::ReferenceToReservedInode));
        }
        let inode = self.inode(ino)?;
        if inode.has_flag(flags::EA_INODE) {
            return Err(Error::corrupt(Object::Inode(ino.0), CorruptKind::ReferenceToXattrValueInode));
        }
        Ok(inode)
    }

    /// Whether `inode` may be opened: an encrypted regular file cannot be without its key (ENOKEY), as the
    /// kernel's `fscrypt_file_open`.
    pub(in crate::ext4) fn check_open(&self, inode: &Inode) -> Result<()> {
        if inode.kind == Kind::Regular && inode.has_flag(flags::ENCRYPT) {
            return Err(Error::NoKey);
        }
        Ok(())
    }

    /// Whether quota limits are enforced: a write may then fail with EDQUOT, which only reaches the
    /// writer if the write is not cached by the kernel first.
    pub fn enforces_quota_limits(&self) -> bool {
        self.quota.as_ref().is_some_and(|q| q.limits.contains(&true))
    }

    /// Whether some inodes may be encrypted, so that opening them must be checked (`check_open`).
    pub fn has_encryption(&self) -> bool {
        self.sb.has_incompat(INCOMPAT_ENCRYPT)
    }
}

/// Reads and parses the superblock at byte 1024 of `dev`: its raw bytes and their meaning.
pub(super) fn read_superblock(dev: &dyn BlockDevice) -> Result<(Vec<u8>, Superblock)> {
    let mut raw = vec![0u8; SUPERBLOCK_SIZE];
    dev.read_exact_at(&mut raw, SUPERBLOCK_OFFSET).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::NotExt("image too small to hold a superblock")
        } else {
            Error::Io(e)
        }
    })?;
    let sb = Superblock::parse(&raw)?;
    Ok((raw, sb))
}

/// The block holding the superblock, and the superblock's offset inside it.
pub(crate) fn superblock_block(block_size: u32) -> (u64, usize) {
    let bs = u64::from(block_size);
    let within = SUPERBLOCK_OFFSET.checked_rem(bs).unwrap_or(0);
    (SUPERBLOCK_OFFSET.checked_div(bs).unwrap_or(0), usize::try_from(within).unwrap_or(0))
}
