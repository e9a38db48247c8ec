//! The filesystem: an opened image, and the operations the server asks of it (inode lookup, name lookup,
//! directory listing, file reads, symlinks, xattrs, statfs, SEEK_DATA/SEEK_HOLE).
//!
//! Metadata blocks go through a bounded block cache and parsed inodes through a bounded inode cache, so
//! repeated lookups touch no disk. File data bypasses the cache: it is read straight into the reply buffer.

use std::collections::HashMap;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use super::block_group::{self, GroupDesc};
use super::cache::ClockCache;
use super::casefold::FoldedName;
use super::device::BlockDevice;
use super::dir_block::{self, DirentIter};
use super::dir_hash::{HashVersion, dir_hash};
use super::error::{Error, Object, Result};
use super::features::{self, *};
use super::fscrypt::{self, NoKeyName};
use super::inline_data;
use super::inode::{FileKind as Kind, Inode, InodeNo, Timestamp, flags};
use super::mmp::{self, Mmp};
use super::superblock::{RawSuperblock, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, Superblock};
use super::{acl, block_map, dir_htree, extent, xattr};

pub use super::inode::FileKind;

/// Longest name a directory entry can hold.
pub const NAME_MAX: usize = 255;
/// Longest symlink target the kernel accepts (PATH_MAX less the NUL).
const SYMLINK_MAX: u64 = 4095;

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

/// Called with the reason when the filesystem turns read-only while mounted.
pub type ReadOnlyHook = Box<dyn Fn(&str) + Send + Sync>;

/// What a corruption found on a writable mount does (`errors=`; the superblock's `s_errors` by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorBehavior {
    /// The operation fails; the filesystem stays writable.
    Continue,
    /// The operation fails and the filesystem turns read-only.
    RemountRo,
    /// The caller should stop serving (the kernel would panic).
    Panic,
}

impl ErrorBehavior {
    /// Parses the value of the `errors=` mount option.
    pub fn parse(v: &str) -> std::result::Result<ErrorBehavior, String> {
        match v {
            "continue" => Ok(ErrorBehavior::Continue),
            "remount-ro" => Ok(ErrorBehavior::RemountRo),
            "panic" => Ok(ErrorBehavior::Panic),
            _ => Err(format!("errors={v}: not continue, remount-ro or panic")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ErrorBehavior::Continue => "continue",
            ErrorBehavior::RemountRo => "remount-ro",
            ErrorBehavior::Panic => "panic",
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
    pub(crate) read_only: Option<String>,
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
    overhead: u64,
    /// The journal writes go through (read-write mounts of images with an internal journal).
    pub(crate) log: Option<super::journal_write::Log>,
    /// The orphan file, mapped (read-write mounts of images with `orphan_file`).
    pub(crate) orphan_file: Option<super::orphan_file::OrphanFile>,
    /// The quota files whose usage writes keep up to date (`quota` feature, writable mounts).
    pub(crate) quota: Option<super::quota::QuotaFiles>,
    /// The name encoding of casefolded directories (`casefold` feature).
    pub(crate) casefold: Option<super::casefold::Encoding>,
    /// `errors=`.
    errors: Mutex<ErrorBehavior>,
    /// Set when a corruption found on a writable mount turned the filesystem read-only: why.
    pub(crate) errored: Mutex<Option<String>>,
    /// Set when a journal commit failed part way: nothing more is written, not even at unmount.
    pub(crate) aborted: Mutex<Option<String>>,
    /// Set when a corruption was found under `errors=panic`.
    must_stop: std::sync::atomic::AtomicBool,
    /// The MMP block this mount keeps updated (read-write mounts of `mmp` images); taken away when
    /// another node took the image, so that it is not released over that node's sequence.
    pub(super) mmp: Mutex<Option<Mmp>>,
    /// Told when the filesystem turns read-only while mounted.
    read_only_hook: std::sync::OnceLock<ReadOnlyHook>,
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
            return Err(Error::corrupt(Object::Superblock, "block count exceeds the size of the device"));
        }
        let block_bytes = usize::try_from(sb.block_size).unwrap_or(4096);
        let read_only = if opts.read_only { Some("mounted read-only".to_string()) } else { write_refusal(&sb) };
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
            blocks: ClockCache::new(opts.cache_bytes / block_bytes),
            // Bounded by bytes too: a parsed inode keeps its raw record and xattr area (up to two inode
            // sizes, which may be as large as a block).
            inodes: ClockCache::new(opts.inode_cache.min(opts.cache_bytes / (2 * usize::from(sb.inode_size)).max(1))),
            pending: Mutex::new(HashMap::new()),
            lock: RwLock::new(()),
            read_only,
            refs: Mutex::new(HashMap::new()),
            doomed: Mutex::new(std::collections::HashSet::new()),
            generation: AtomicU32::new((seed.nsec ^ (seed.sec as u32).rotate_left(13)) | 1),
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
                fs.read_only = Some(format!("group descriptor {g} is damaged (checksum or location); run e2fsck"));
            }
        }
        *fs.groups.get_mut().unwrap_or_else(|p| p.into_inner()) = groups;
        fs.overhead = fs.overhead_blocks();
        // As the kernel: a filesystem whose root is not a readable directory is refused, not mounted with
        // nothing reachable in it.
        if fs.inode(super::ROOT_INO)?.kind != Kind::Directory {
            return Err(Error::corrupt(Object::Inode(super::ROOT_INO.0), "the root directory is not a directory"));
        }
        if fs.read_only.is_none() && fs.sb.has_compat(COMPAT_ORPHAN_FILE) {
            match super::orphan_file::OrphanFile::open(&fs) {
                Ok(file) => fs.orphan_file = Some(file),
                Err(why) => fs.read_only = Some(format!("{why}; run e2fsck")),
            }
        }
        if fs.read_only.is_none() {
            if let Some(files) = super::quota::QuotaFiles::from_superblock(&fs.sb, opts.quota_limits) {
                match files.check(&fs) {
                    Ok(()) => fs.quota = Some(files),
                    Err(e) => fs.read_only = Some(format!("the quota files cannot be updated ({e}); run e2fsck")),
                }
            }
        }
        if fs.read_only.is_none() && fs.sb.has_compat(COMPAT_HAS_JOURNAL) {
            match super::journal_write::Log::open(&fs) {
                Ok(log) => fs.log = Some(log),
                Err(why) => fs.read_only = Some(why),
            }
        }
        if fs.read_only.is_none() {
            fs.mount_rw()?;
        }
        Ok(fs)
    }

    /// Whether this mount keeps an MMP block updated: the caller must then call [`Filesystem::mmp_tick`]
    /// about every second.
    pub fn has_mmp(&self) -> bool {
        self.mmp.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// Updates the MMP block when its interval has passed (kmmpd). When another node wrote it, that node
    /// has the image: this mount stops writing at once, and leaves the block as that node wrote it. So it
    /// does, as the kernel's kmmpd, when the block cannot be read or written: the mount can no longer
    /// tell that the image is still its own.
    pub fn mmp_tick(&self) {
        let mut slot = self.mmp.lock().unwrap_or_else(|p| p.into_inner());
        let Some(mmp) = slot.as_mut().filter(|m| m.due()) else { return };
        if let Err(e) = mmp.update(&*self.dev) {
            *slot = None;
            drop(slot);
            let why = match e {
                Error::Busy(why) => why,
                e => format!("multiple mount protection: the MMP block cannot be updated ({e})"),
            };
            self.abort(&why);
        }
    }

    /// Releases the MMP block, if this mount holds it: the last write of an unmount.
    pub(crate) fn release_mmp(&self) -> Result<()> {
        match self.mmp.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(mmp) => mmp.release(&*self.dev),
            None => Ok(()),
        }
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

    /// `None` when writable; otherwise why not (a feature the engine cannot write, a read-only mount, or
    /// a corruption found under `errors=remount-ro`).
    pub fn read_only_reason(&self) -> Option<String> {
        self.read_only
            .clone()
            .or_else(|| self.aborted.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .or_else(|| self.errored.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only_reason().is_some()
    }

    /// Stops all writing after a failed journal commit (jbd2's abort).
    pub(crate) fn abort(&self, why: &str) {
        let mut a = self.aborted.lock().unwrap_or_else(|p| p.into_inner());
        if a.is_none() {
            tracing::error!("{why}; the filesystem is read-only now");
            *a = Some(why.to_string());
            drop(a);
            self.turned_read_only(why);
        }
    }

    /// Registers who to tell when the filesystem turns read-only while mounted (a journal abort,
    /// `errors=remount-ro`): the mount itself can then be made read-only.
    pub fn on_read_only(&self, f: ReadOnlyHook) {
        let _ = self.read_only_hook.set(f);
    }

    fn turned_read_only(&self, why: &str) {
        if let Some(f) = self.read_only_hook.get() {
            f(why);
        }
    }

    /// Sets what a corruption found on a writable mount does (`errors=`).
    pub fn set_error_behavior(&self, b: ErrorBehavior) {
        *self.errors.lock().unwrap_or_else(|p| p.into_inner()) = b;
    }

    /// Applies `errors=` to a corruption an operation found. As the kernel's ext4_error, any operation
    /// counts, reads too: a damaged directory found by a lookup, or skipped by a listing, stops writing as
    /// surely as one found by a create. Errors other than corruption, and anything on a filesystem mounted
    /// read-only (nothing will be written to spread the damage), change nothing. Under `errors=panic` the
    /// engine only records the demand ([`Filesystem::must_stop`]): stopping is the server's business.
    pub fn corruption_found(&self, e: &Error) {
        if !e.is_corruption() || self.read_only.is_some() {
            return;
        }
        match *self.errors.lock().unwrap_or_else(|p| p.into_inner()) {
            ErrorBehavior::Continue => tracing::error!(error = %e, "corruption found (errors=continue)"),
            ErrorBehavior::RemountRo => {
                let mut errored = self.errored.lock().unwrap_or_else(|p| p.into_inner());
                if errored.is_none() {
                    tracing::error!(error = %e, "corruption found: the filesystem is read-only now (errors=remount-ro); run e2fsck");
                    let why = format!("{e} (errors=remount-ro)");
                    *errored = Some(why.clone());
                    drop(errored);
                    self.turned_read_only(&why);
                }
            }
            ErrorBehavior::Panic => {
                tracing::error!(error = %e, "corruption found (errors=panic): stopping");
                self.must_stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// Whether a corruption was found under `errors=panic`: the server must stop serving.
    pub fn must_stop(&self) -> bool {
        self.must_stop.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Holds off write operations while the caller reads (write operations take the lock exclusively
    /// themselves); outside the engine, reads go through [`Filesystem::reader`], which holds it.
    pub(in crate::ext4) fn shared(&self) -> RwLockReadGuard<'_, ()> {
        self.lock.read().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of group `g`'s descriptor.
    pub(crate) fn group(&self, g: u32) -> Option<GroupDesc> {
        self.groups.read().unwrap_or_else(|p| p.into_inner()).get(g as usize).cloned()
    }

    fn read_group_descriptors(&self) -> Result<Vec<GroupDesc>> {
        let sb = &self.sb;
        let desc_size = usize::from(sb.desc_size);
        let per_block = (sb.block_size as usize) / desc_size;
        // Bounded: the block count was checked against the device size.
        let count = sb.group_count();
        let mut groups = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        let itable_blocks =
            (u64::from(sb.inodes_per_group) * u64::from(sb.inode_size)).div_ceil(u64::from(sb.block_size));
        let mut g = 0u64;
        let mut nr = 0u64;
        while g < count {
            let loc = block_group::descriptor_block(sb, nr)
                .ok_or_else(|| Error::corrupt(Object::Superblock, "group descriptor table out of range"))?;
            let block = self.read_block_uncached(loc, Object::GroupDescriptor(g as u32))?;
            for chunk in block.chunks_exact(desc_size).take(per_block) {
                if g >= count {
                    break;
                }
                let mut d = GroupDesc::parse(sb, g as u32, chunk);
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
                g += 1;
            }
            nr += 1;
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
        if ok { Ok(()) } else { Err(Error::corrupt(obj, "block number out of range")) }
    }

    fn read_block_uncached(&self, nr: u64, obj: Object) -> Result<Vec<u8>> {
        self.check_range(nr, 1, obj)?;
        let bs = u64::from(self.sb.block_size);
        let mut buf = vec![0u8; bs as usize];
        self.dev.read_exact_at(&mut buf, nr * bs)?;
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
            return Err(Error::corrupt(obj, "inode number out of range"));
        }
        let (block_nr, off) = self.inode_location(ino)?;
        let block = self.meta_block(block_nr, obj)?;
        let raw = block.get(off..off + usize::from(self.sb.inode_size)).unwrap_or_default();
        let inode = Arc::new(Inode::parse(&self.sb, ino, raw)?);
        self.inodes.insert(ino.0, inode.clone());
        Ok(inode)
    }

    /// The inode table block that holds inode `ino`, and the record's offset in it.
    pub(crate) fn inode_location(&self, ino: InodeNo) -> Result<(u64, usize)> {
        let obj = Object::Inode(ino.0);
        if ino.0 == 0 || ino.0 > self.sb.inodes_count {
            return Err(Error::corrupt(obj, "inode number out of range"));
        }
        let index = ino.0 - 1;
        let group = index / self.sb.inodes_per_group;
        let desc = self.group(group).ok_or_else(|| Error::corrupt(obj, "no group for inode"))?;
        if !desc.usable {
            return Err(Error::corrupt(Object::GroupDescriptor(group), "inode table out of range"));
        }
        let byte = u64::from(index % self.sb.inodes_per_group) * u64::from(self.sb.inode_size);
        let bs = u64::from(self.sb.block_size);
        Ok((desc.inode_table + byte / bs, (byte % bs) as usize))
    }

    /// Reads an inode that a directory entry or a caller named: reserved inodes (below `s_first_ino`,
    /// except the root) are internal and refused, as the kernel refuses them.
    pub(in crate::ext4) fn user_inode(&self, ino: InodeNo) -> Result<Arc<Inode>> {
        if ino != super::ROOT_INO && ino.0 < self.sb.first_ino {
            return Err(Error::corrupt(Object::Inode(ino.0), "reference to a reserved inode"));
        }
        let inode = self.inode(ino)?;
        if inode.has_flag(flags::EA_INODE) {
            return Err(Error::corrupt(Object::Inode(ino.0), "reference to an xattr value inode"));
        }
        Ok(inode)
    }

    /// Maps logical block `lblk` of `inode` to where it is on disk.
    pub(in crate::ext4) fn map(&self, inode: &Inode, lblk: u64) -> Result<Mapping> {
        if inode.has_flag(flags::EXTENTS) {
            extent::map(self, inode, lblk)
        } else if inode.has_flag(flags::INLINE_DATA) {
            Err(Error::corrupt(Object::Inode(inode.ino.0), "inline inode has no block map"))
        } else {
            block_map::map(self, inode, lblk)
        }
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

    /// Reads up to `len` bytes of `inode`'s data from byte `offset`; short at the end of the file.
    pub(in crate::ext4) fn read(&self, inode: &Inode, offset: u64, len: usize) -> Result<Vec<u8>> {
        if inode.kind == Kind::Directory {
            return Err(Error::IsDir);
        }
        self.check_open(inode)?;
        if offset >= inode.size {
            return Ok(Vec::new());
        }
        let len = usize::try_from((inode.size - offset).min(len as u64)).unwrap_or(len);
        if inode.has_flag(flags::INLINE_DATA) {
            return inline_data::read(inode, offset, len);
        }
        let mut buf = vec![0u8; len];
        self.read_mapped(inode, offset, &mut buf)?;
        Ok(buf)
    }

    /// Fills `buf` with the data at `offset`, one extent (or hole) at a time: holes and unwritten extents
    /// stay zero, mapped runs are read from the device in one call each.
    fn read_mapped(&self, inode: &Inode, offset: u64, buf: &mut [u8]) -> Result<()> {
        let bs = u64::from(self.sb.block_size);
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let lblk = pos / bs;
            let within = pos % bs;
            let (run_blocks, pblk) = match self.map(inode, lblk)? {
                Mapping::Mapped { pblk, len, unwritten } => (len, (!unwritten).then_some(pblk)),
                Mapping::Hole { len } => (len.unwrap_or(u64::MAX), None),
            };
            let run_bytes = run_blocks.saturating_mul(bs).saturating_sub(within);
            let n = usize::try_from(run_bytes).unwrap_or(usize::MAX).min(buf.len() - done);
            if let Some(pblk) = pblk {
                // pblk..pblk+len was checked to lie inside the filesystem, and so inside the device.
                self.dev.read_exact_at(&mut buf[done..done + n], pblk * bs + within)?;
            }
            done += n;
        }
        Ok(())
    }

    /// The target of a symlink; for an encrypted one, the no-key encoding of its ciphertext, as the kernel
    /// shows it without the key.
    pub(in crate::ext4) fn readlink(&self, inode: &Inode) -> Result<Vec<u8>> {
        let stored = self.stored_link_target(inode)?;
        if !inode.has_flag(flags::ENCRYPT) {
            return Ok(stored);
        }
        let ciphertext = fscrypt::symlink_ciphertext(&stored)
            .ok_or_else(|| Error::corrupt(Object::Symlink(inode.ino.0), "encrypted symlink length out of range"))?;
        Ok(fscrypt::nokey_name(ciphertext, None))
    }

    /// A symlink's target as stored.
    fn stored_link_target(&self, inode: &Inode) -> Result<Vec<u8>> {
        let obj = Object::Symlink(inode.ino.0);
        if inode.kind != Kind::Symlink {
            return Err(Error::Invalid);
        }
        if inode.size == 0 || inode.size > SYMLINK_MAX.min(u64::from(self.sb.block_size)) {
            return Err(Error::corrupt(obj, "symlink size out of range"));
        }
        if inode.has_flag(flags::INLINE_DATA) {
            return inline_data::read(inode, 0, inode.size as usize);
        }
        if self.is_fast_symlink_inode(inode) {
            let len = inode.size as usize;
            return inode
                .i_block
                .get(..len)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| Error::corrupt(obj, "fast symlink longer than i_block"));
        }
        let target = self.read(inode, 0, inode.size as usize)?;
        if target.len() as u64 != inode.size {
            return Err(Error::corrupt(obj, "symlink shorter than its size"));
        }
        Ok(target)
    }

    /// The kernel's `ext4_inode_is_fast_symlink`: no data blocks besides an xattr block.
    pub(crate) fn is_fast_symlink_inode(&self, inode: &Inode) -> bool {
        // An xattr block takes a whole cluster (bigalloc).
        let cluster =
            u64::from(self.sb.block_size / 512) << self.sb.log_cluster_size.saturating_sub(self.sb.log_block_size);
        let ea_blocks = if inode.file_acl != 0 { cluster } else { 0 };
        inode.blocks_512.saturating_sub(ea_blocks) == 0 && inode.size < 60
    }

    /// Directory block `lblk` of `dir`, through the block cache; `None` for a hole.
    pub fn dir_block(&self, dir: &Inode, lblk: u64) -> Result<Option<Arc<Vec<u8>>>> {
        match self.map(dir, lblk)? {
            Mapping::Mapped { pblk, unwritten: false, .. } => {
                Ok(Some(self.meta_block(pblk, Object::DirBlock { ino: dir.ino.0, lblk })?))
            }
            _ => Ok(None),
        }
    }

    fn is_htree(&self, dir: &Inode) -> bool {
        self.sb.has_compat(COMPAT_DIR_INDEX) && dir.has_flag(flags::INDEX)
    }

    /// The entries of a linear directory block (or the tail of an htree node).
    pub(crate) fn dirents<'a>(&self, buf: &'a [u8], obj: Object) -> DirentIter<'a> {
        DirentIter::new(
            buf,
            self.sb.has_incompat(INCOMPAT_FILETYPE),
            self.sb.inodes_count,
            obj,
            self.sb.block_size as usize,
        )
    }

    /// Searches one directory block (or inline region) for the wanted entry.
    fn search_block(&self, buf: &[u8], wanted: &Wanted, obj: Object) -> Result<Option<InodeNo>> {
        for d in self.dirents(buf, obj) {
            let d = d?;
            if d.inode != 0 && wanted.matches(d.name) {
                return Ok(Some(InodeNo(d.inode)));
            }
        }
        Ok(None)
    }

    /// Reads leaf block `lblk` of `dir` and verifies its checksum tail.
    fn leaf_block(&self, dir: &Inode, lblk: u64) -> Result<Option<Arc<Vec<u8>>>> {
        let Some(block) = self.dir_block(dir, lblk)? else {
            return Ok(None);
        };
        if self.sb.has_metadata_csum() {
            dir_block::verify_tail(&block, dir.csum_seed, Object::DirBlock { ino: dir.ino.0, lblk })?;
        }
        Ok(Some(block))
    }

    /// Looks `name` up in directory `dir`.
    pub(in crate::ext4) fn lookup(&self, dir: &Inode, name: &[u8]) -> Result<InodeNo> {
        if dir.kind != Kind::Directory {
            return Err(Error::NotDir);
        }
        if name.len() > NAME_MAX {
            return Err(Error::NameTooLong);
        }
        let wanted = self.wanted(dir, name)?;
        if dir.has_flag(flags::INLINE_DATA) {
            return self.lookup_inline(dir, &wanted);
        }
        if self.is_htree(dir) {
            let found = dir_htree::lookup(self, dir, wanted.probe(), |lblk| match self.leaf_block(dir, lblk)? {
                Some(b) => self.search_block(&b, &wanted, Object::DirBlock { ino: dir.ino.0, lblk }),
                None => Ok(None),
            });
            match found {
                Ok(Some(ino)) => return Ok(ino),
                Ok(None) => return Err(Error::NotFound),
                // A malformed index: the kernel falls back to a linear scan, and so do we.
                Err(Error::Corrupt { object: Object::Htree(_), what }) => {
                    tracing::warn!(ino = dir.ino.0, what, "htree index is damaged; scanning the directory");
                }
                Err(e) => return Err(e),
            }
        }
        for lblk in DirWalk::new(self, dir, 0) {
            let lblk = lblk?;
            if let Some(block) = self.leaf_block_for_scan(dir, lblk)? {
                if let Some(ino) = self.search_block(&block, &wanted, Object::DirBlock { ino: dir.ino.0, lblk })? {
                    return Ok(ino);
                }
            }
        }
        Err(Error::NotFound)
    }

    /// The inode `name` names in `dir`, `None` when no entry has that name: what tells a free name
    /// (`None`) from a directory that cannot be read (its error), which must not count as free.
    pub(crate) fn find_entry(&self, dir: &Inode, name: &[u8]) -> Result<Option<InodeNo>> {
        match self.lookup(dir, name) {
            Ok(ino) => Ok(Some(ino)),
            Err(Error::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A block read during a linear scan: htree interior nodes (and the root's index) hold no entries
    /// beyond `.` and `..`, and carry a dx tail rather than a dirent tail.
    fn leaf_block_for_scan(&self, dir: &Inode, lblk: u64) -> Result<Option<Arc<Vec<u8>>>> {
        if self.is_htree(dir) {
            let Some(block) = self.dir_block(dir, lblk)? else {
                return Ok(None);
            };
            let bs = self.sb.block_size as usize;
            let first_rec = dir_block::rec_len_from_disk(super::bytes::le16(&block, 4), bs);
            let is_node = super::bytes::le32(&block, 0) == 0 && first_rec == bs;
            if lblk == 0 || is_node {
                return Ok(Some(block));
            }
        }
        self.leaf_block(dir, lblk)
    }

    fn lookup_inline(&self, dir: &Inode, wanted: &Wanted) -> Result<InodeNo> {
        let d = inline_data::dir(dir)?;
        if let Wanted::Name(b".") = wanted {
            return Ok(dir.ino);
        }
        if let Wanted::Name(b"..") = wanted {
            return Ok(InodeNo(d.parent));
        }
        for region in &d.regions {
            if let Some(ino) = self.search_block(region, wanted, Object::InlineData(dir.ino.0))? {
                return Ok(ino);
            }
        }
        Err(Error::NotFound)
    }

    /// Lists directory `dir` from position `cookie` (0: the start). `emit` gets each entry and the cookie
    /// that resumes after it, and returns `true` when it wants no more.
    ///
    /// Cookies are byte positions in the directory (for inline directories: 0 and 1 for `.` and `..`, then
    /// positions in `i_block` and `system.data`). A damaged block is skipped, as the kernel's readdir does.
    pub(in crate::ext4) fn read_dir(&self, dir: &Inode, cookie: u64, emit: &mut dyn FnMut(DirEntry, u64) -> bool) -> Result<()> {
        if dir.kind != Kind::Directory {
            return Err(Error::NotDir);
        }
        if dir.has_flag(flags::INLINE_DATA) {
            return self.read_dir_inline(dir, cookie, emit);
        }
        let names = self.listed_names(dir);
        let bs = u64::from(self.sb.block_size);
        for lblk in DirWalk::new(self, dir, cookie / bs) {
            let lblk = lblk?;
            let obj = Object::DirBlock { ino: dir.ino.0, lblk };
            let block = match self.leaf_block_for_scan(dir, lblk) {
                Ok(Some(b)) => b,
                Ok(None) => continue,
                Err(e) if e.is_corruption() => {
                    // As the kernel does: the listing goes on without the block, and errors= applies.
                    tracing::warn!(error = %e, "skipping damaged directory block");
                    self.corruption_found(&e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let base = lblk * bs;
            for d in self.dirents(&block, obj) {
                let d = match d {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping the rest of a damaged directory block");
                        self.corruption_found(&e);
                        break;
                    }
                };
                let pos = base + d.offset as u64;
                if pos < cookie || d.inode == 0 {
                    continue;
                }
                let name = match names.shown(d.name, obj) {
                    Ok(name) => name,
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping a damaged directory entry");
                        self.corruption_found(&e);
                        continue;
                    }
                };
                let entry = DirEntry { ino: InodeNo(d.inode), kind: self.dirent_kind(d.file_type), name };
                if emit(entry, pos + d.rec_len as u64) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn read_dir_inline(&self, dir: &Inode, cookie: u64, emit: &mut dyn FnMut(DirEntry, u64) -> bool) -> Result<()> {
        let d = inline_data::dir(dir)?;
        let dot = [(b".".to_vec(), dir.ino), (b"..".to_vec(), InodeNo(d.parent))];
        for (i, (name, ino)) in dot.into_iter().enumerate() {
            if cookie <= i as u64 && emit(DirEntry { ino, kind: Some(Kind::Directory), name }, i as u64 + 1) {
                return Ok(());
            }
        }
        let obj = Object::InlineData(dir.ino.0);
        let names = self.listed_names(dir);
        for (region, start) in d.regions.iter().zip(inline_data::REGION_START) {
            for e in self.dirents(region, obj) {
                let e = e?;
                let pos = start + e.offset as u64;
                if pos < cookie || e.inode == 0 {
                    continue;
                }
                let entry = DirEntry {
                    ino: InodeNo(e.inode),
                    kind: self.dirent_kind(e.file_type),
                    name: names.shown(e.name, obj)?,
                };
                if emit(entry, pos + e.rec_len as u64) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Whether `dir` finds names case-insensitively (`casefold` and `chattr +F`).
    pub(in crate::ext4) fn casefolded(&self, dir: &Inode) -> bool {
        self.casefold.is_some() && dir.has_flag(flags::CASEFOLD)
    }

    /// What looking `name` up in `dir` searches for: the name, its no-key form, or its folded form.
    pub(crate) fn wanted<'n>(&self, dir: &Inode, name: &'n [u8]) -> Result<Wanted<'n>> {
        if name == b"." || name == b".." {
            return Ok(Wanted::Name(name));
        }
        if dir.has_flag(flags::ENCRYPT) {
            // Without the key, only no-key names (as listed) can be looked up.
            return Ok(Wanted::NoKey(NoKeyName::parse(name).ok_or(Error::NotFound)?));
        }
        match self.casefold {
            Some(enc) if dir.has_flag(flags::CASEFOLD) => Ok(Wanted::Folded(FoldedName::new(name, enc))),
            _ => Ok(Wanted::Name(name)),
        }
    }

    /// How `dir`'s entries are named in listings: as stored, or (encrypted) as the kernel's no-key names,
    /// which carry the entry's hash when the kernel lists the directory in hash order: its `is_dx_dir`
    /// (dir_index, and an htree, a single block or inline data), hashed with the htree's hash or else the
    /// superblock's default, as `ext4_htree_fill_tree`.
    fn listed_names(&self, dir: &Inode) -> ListedNames {
        if !dir.has_flag(flags::ENCRYPT) {
            return ListedNames::AsStored;
        }
        let single_block = dir.size == u64::from(self.sb.block_size);
        let hashed = self.sb.has_compat(COMPAT_DIR_INDEX)
            && (dir.has_flag(flags::INDEX) || single_block || dir.has_flag(flags::INLINE_DATA));
        let version = if !hashed {
            None
        } else if dir.has_flag(flags::INDEX) {
            dir_htree::root_hash_version(self, dir)
        } else {
            HashVersion::from_disk(self.sb.def_hash_version).map(|v| v.with_unsigned(self.sb.unsigned_dir_hash()))
        };
        ListedNames::NoKey { hash: version.map(|v| (v, self.sb.hash_seed)) }
    }

    fn dirent_kind(&self, t: u8) -> Option<FileKind> {
        if self.sb.has_incompat(INCOMPAT_FILETYPE) { FileKind::from_dirent(t) } else { None }
    }

    /// All attribute entries of `inode`: the in-inode ones, then those of its xattr block.
    pub(crate) fn xattr_entries(&self, inode: &Inode) -> Result<Vec<xattr::Entry>> {
        let obj = Object::Xattr(inode.ino.0);
        let mut entries = xattr::parse_ibody(&inode.xattr_area, obj)?;
        if inode.file_acl != 0 {
            let block_obj = Object::XattrBlock(inode.file_acl);
            let block = self.meta_block(inode.file_acl, block_obj)?;
            let seed = self.sb.has_metadata_csum().then(|| self.sb.csum_seed());
            entries.extend(xattr::parse_block(&block, inode.file_acl, seed, block_obj)?);
        }
        Ok(entries)
    }

    /// Names of the attributes programs may see, each as `prefix.name`.
    pub(in crate::ext4) fn list_xattrs(&self, inode: &Inode) -> Result<Vec<Vec<u8>>> {
        Ok(self.xattr_entries(inode)?.iter().filter_map(xattr::Entry::full_name).collect())
    }

    /// The value of attribute `name` (ACLs converted to the xattr format programs expect).
    pub(in crate::ext4) fn get_xattr(&self, inode: &Inode, name: &[u8]) -> Result<Vec<u8>> {
        let (index, suffix) = xattr::split_name(name).ok_or(Error::NotSupported)?;
        let entry = self
            .xattr_entries(inode)?
            .into_iter()
            .find(|e| e.index == index && e.name == suffix)
            .ok_or(Error::NoAttr)?;
        let value = match entry.value {
            xattr::Value::Stored(v) => v,
            xattr::Value::EaInode { ino, size } => self.ea_inode_value(inode, ino, size)?,
        };
        if matches!(index, xattr::INDEX_POSIX_ACL_ACCESS | xattr::INDEX_POSIX_ACL_DEFAULT) {
            return acl::disk_to_xattr(&value, Object::Xattr(inode.ino.0));
        }
        Ok(value)
    }

    fn ea_inode_value(&self, owner: &Inode, ino: u32, size: u32) -> Result<Vec<u8>> {
        let obj = Object::Xattr(owner.ino.0);
        if !self.sb.has_incompat(INCOMPAT_EA_INODE) {
            return Err(Error::corrupt(obj, "xattr value in an inode without the ea_inode feature"));
        }
        let ea = self.inode(InodeNo(ino))?;
        if !ea.has_flag(flags::EA_INODE) || ea.kind != Kind::Regular || ea.size != u64::from(size) {
            return Err(Error::corrupt(obj, "xattr value inode does not match its entry"));
        }
        let v = self.read(&ea, 0, size as usize)?;
        if v.len() != size as usize {
            return Err(Error::corrupt(obj, "xattr value inode is short"));
        }
        Ok(v)
    }

    /// The next offset at or after `offset` that holds data (`SEEK_DATA`), or `None` past the last data.
    pub(in crate::ext4) fn seek_data(&self, inode: &Inode, offset: u64) -> Result<Option<u64>> {
        self.seek(inode, offset, true)
    }

    /// The next offset at or after `offset` inside a hole (`SEEK_HOLE`); the end of file counts as one.
    pub(in crate::ext4) fn seek_hole(&self, inode: &Inode, offset: u64) -> Result<Option<u64>> {
        self.seek(inode, offset, false)
    }

    fn seek(&self, inode: &Inode, offset: u64, want_data: bool) -> Result<Option<u64>> {
        if offset >= inode.size {
            return Ok(None);
        }
        if inode.has_flag(flags::INLINE_DATA) {
            return Ok(Some(if want_data { offset } else { inode.size }));
        }
        let bs = u64::from(self.sb.block_size);
        let mut lblk = offset / bs;
        // A real file alternates at most blocks_count runs of data with holes; a crafted map can present
        // billions of runs built from a few physical blocks.
        let mut budget = self.sb.blocks_count.saturating_mul(2).saturating_add(2);
        while lblk.checked_mul(bs).is_some_and(|pos| pos < inode.size) {
            budget = budget.checked_sub(1).ok_or_else(|| {
                Error::corrupt(Object::FileData(inode.ino.0), "file maps more runs than the filesystem holds")
            })?;
            let (len, is_data) = match self.map(inode, lblk)? {
                // Unwritten extents read as zeros; like the kernel, report them as data only when written.
                Mapping::Mapped { len, unwritten, .. } => (len, !unwritten),
                Mapping::Hole { len } => (len.unwrap_or(u64::MAX), false),
            };
            if is_data == want_data {
                return Ok(Some((lblk * bs).max(offset)));
            }
            lblk = lblk.saturating_add(len.max(1));
        }
        Ok(if want_data { None } else { Some(inode.size) })
    }

    /// statfs(2) figures: the block and inode counts, and the free counts summed over the groups.
    /// statfs(2) as the kernel's ext4 reports it by default (bsddf): the metadata overhead is not counted
    /// in the size, and what is available leaves out the reserved blocks and the kernel's small reserve
    /// pool (2% of the clusters, at most 4096, on extent filesystems).
    pub fn statfs(&self) -> StatFs {
        let (free_clusters, free_inodes) = {
            let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            (st.free_clusters, st.free_inodes)
        };
        // Group descriptors count free clusters; a cluster is several blocks with bigalloc.
        let free_blocks = (free_clusters << self.sb.cluster_bits()).min(self.sb.blocks_count);
        let bits = self.sb.cluster_bits();
        let resv_pool = if self.sb.has_incompat(INCOMPAT_EXTENTS) {
            ((self.sb.blocks_count >> bits) / 50).min(4096) << bits
        } else {
            0
        };
        StatFs {
            block_size: self.sb.block_size,
            blocks: self.sb.blocks_count.saturating_sub(self.overhead),
            free_blocks,
            available_blocks: free_blocks.saturating_sub(self.sb.r_blocks_count.saturating_add(resv_pool)),
            inodes: u64::from(self.sb.inodes_count),
            free_inodes: free_inodes.min(u64::from(self.sb.inodes_count)),
            name_max: NAME_MAX as u32,
        }
    }
}

impl Filesystem {
    /// Blocks that hold metadata rather than files (the kernel's `ext4_calculate_overhead`): the blocks
    /// before the first group, every superblock copy with its descriptor table and reserve, every group's
    /// bitmaps and inode table, and the internal journal.
    fn overhead_blocks(&self) -> u64 {
        let sb = &self.sb;
        if sb.overhead_clusters != 0 {
            return u64::from(sb.overhead_clusters) << sb.log_cluster_size.saturating_sub(sb.log_block_size);
        }
        let groups = sb.group_count();
        let itable = (u64::from(sb.inodes_per_group) * u64::from(sb.inode_size)).div_ceil(u64::from(sb.block_size));
        let base: u64 = (0..groups).map(|g| sb.base_meta_blocks(g)).sum();
        let journal = if sb.has_compat(COMPAT_HAS_JOURNAL) && sb.journal_inum != 0 {
            self.inode(InodeNo(sb.journal_inum)).map_or(0, |j| j.size / u64::from(sb.block_size))
        } else {
            0
        };
        u64::from(sb.first_data_block) + base + groups * (2 + itable) + journal
    }
}

/// The mapped logical blocks of a directory, from `start`, skipping holes: what every linear directory
/// scan walks. A crafted block map can present billions of logical blocks built from a handful of
/// physical ones (an indirect block that names itself at every level), so the walk ends with an error
/// when a physical block comes back or when it has taken more steps than the filesystem has blocks.
pub(crate) struct DirWalk<'a> {
    fs: &'a Filesystem,
    dir: &'a Inode,
    next: u64,
    end: u64,
    steps: u64,
    seen: std::collections::HashSet<u64>,
}

impl<'a> DirWalk<'a> {
    pub(crate) fn new(fs: &'a Filesystem, dir: &'a Inode, start: u64) -> DirWalk<'a> {
        let end = dir.size / u64::from(fs.sb.block_size);
        DirWalk { fs, dir, next: start, end, steps: 0, seen: std::collections::HashSet::new() }
    }
}

impl Iterator for DirWalk<'_> {
    /// A mapped logical block of the directory.
    type Item = Result<u64>;

    fn next(&mut self) -> Option<Result<u64>> {
        let obj = Object::DirBlock { ino: self.dir.ino.0, lblk: self.next };
        while self.next < self.end {
            self.steps += 1;
            if self.steps > self.fs.sb.blocks_count.saturating_mul(2).saturating_add(2) {
                self.next = self.end;
                return Some(Err(Error::corrupt(obj, "directory maps more blocks than the filesystem holds")));
            }
            match self.fs.map(self.dir, self.next) {
                Err(e) => {
                    self.next = self.end;
                    return Some(Err(e));
                }
                Ok(Mapping::Hole { len }) => self.next = self.next.saturating_add(len.unwrap_or(u64::MAX).max(1)),
                Ok(Mapping::Mapped { pblk, .. }) => {
                    let lblk = self.next;
                    self.next += 1;
                    if !self.seen.insert(pblk) {
                        self.next = self.end;
                        return Some(Err(Error::corrupt(obj, "directory maps one block twice")));
                    }
                    return Some(Ok(lblk));
                }
            }
        }
        None
    }
}

/// What a lookup searches a directory for.
pub(crate) enum Wanted<'a> {
    /// A name as stored.
    Name(&'a [u8]),
    /// In an encrypted directory, the entry a no-key name stands for.
    NoKey(NoKeyName),
    /// In a casefolded directory, any name with the same folded form.
    Folded(FoldedName),
}

impl Wanted<'_> {
    pub(crate) fn matches(&self, disk: &[u8]) -> bool {
        match self {
            Wanted::Name(name) => disk == *name,
            Wanted::NoKey(n) => n.matches(disk),
            Wanted::Folded(n) => n.matches(disk),
        }
    }

    /// What the htree is searched by.
    pub(crate) fn probe(&self) -> dir_htree::Probe<'_> {
        match self {
            Wanted::Name(name) => dir_htree::Probe::Name(name),
            Wanted::NoKey(NoKeyName::Whole(ciphertext)) => dir_htree::Probe::Name(ciphertext),
            Wanted::NoKey(NoKeyName::Long { hash, .. }) => dir_htree::Probe::Hash(*hash),
            Wanted::Folded(n) => dir_htree::Probe::Name(n.hash_input()),
        }
    }
}

/// How a directory's entries are named in a listing (`Filesystem::listed_names`).
enum ListedNames {
    AsStored,
    /// Encrypted: no-key names, with the entries' hashes when the listing is in hash order.
    NoKey {
        hash: Option<(HashVersion, [u32; 4])>,
    },
}

impl ListedNames {
    fn shown(&self, disk: &[u8], obj: Object) -> Result<Vec<u8>> {
        match self {
            ListedNames::AsStored => Ok(disk.to_vec()),
            ListedNames::NoKey { .. } if disk == b"." || disk == b".." => Ok(disk.to_vec()),
            ListedNames::NoKey { .. } if disk.len() < fscrypt::MIN_CIPHERTEXT => {
                Err(Error::corrupt(obj, "encrypted name shorter than a cipher block"))
            }
            ListedNames::NoKey { hash } => {
                let pair = hash.map(|(version, seed)| dir_hash(disk, version, &seed));
                Ok(fscrypt::nokey_name(disk, pair))
            }
        }
    }
}

/// Refuses images whose incompatible features the engine cannot read, naming them.
pub(super) fn check_features(sb: &Superblock) -> Result<()> {
    if sb.has_incompat(INCOMPAT_JOURNAL_DEV) {
        return Err(Error::Unsupported("this is an external journal device, not a filesystem".into()));
    }
    if sb.has_incompat(INCOMPAT_CASEFOLD) && sb.has_incompat(INCOMPAT_ENCRYPT) {
        // Encrypted casefolded directories keep a SipHash of the plaintext name in each entry.
        return Err(Error::Unsupported(
            "encrypted case-insensitive directories (encrypt with casefold) are not supported".into(),
        ));
    }
    super::casefold::Encoding::from_superblock(sb)?;
    let unknown = sb.feature_incompat & !INCOMPAT_READ;
    if unknown != 0 {
        let names = features::names(features::Kind::Incompat, unknown).join(", ");
        return Err(Error::Unsupported(format!("incompatible filesystem features: {names}")));
    }
    Ok(())
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
    (SUPERBLOCK_OFFSET / bs, (SUPERBLOCK_OFFSET % bs) as usize)
}

/// Why an image with these features cannot be written by this engine (`None`: it can).
fn write_refusal(sb: &Superblock) -> Option<String> {
    if sb.needs_recovery() {
        return Some("the journal needs recovery and -o norecovery was given".into());
    }
    feature_write_refusal(sb)
}

/// Why the engine cannot write an image with these features (`None`: it can).
pub(super) fn feature_write_refusal(sb: &Superblock) -> Option<String> {
    const INCOMPAT_WRITE: u32 = INCOMPAT_FILETYPE
        | INCOMPAT_META_BG
        | INCOMPAT_EXTENTS
        | INCOMPAT_64BIT
        | INCOMPAT_FLEX_BG
        | INCOMPAT_EA_INODE
        | INCOMPAT_CSUM_SEED
        | INCOMPAT_LARGEDIR
        | INCOMPAT_INLINE_DATA
        | INCOMPAT_MMP
        | INCOMPAT_CASEFOLD;
    const RO_COMPAT_WRITE: u32 = RO_COMPAT_SPARSE_SUPER
        | RO_COMPAT_LARGE_FILE
        | RO_COMPAT_HUGE_FILE
        | RO_COMPAT_GDT_CSUM
        | RO_COMPAT_DIR_NLINK
        | RO_COMPAT_EXTRA_ISIZE
        | RO_COMPAT_METADATA_CSUM
        | RO_COMPAT_PROJECT
        | RO_COMPAT_QUOTA
        | RO_COMPAT_BIGALLOC;
    // needs_recovery is the journal's state, not a feature of the format: `write_refusal` handles it.
    let incompat = sb.feature_incompat & !INCOMPAT_WRITE & !INCOMPAT_RECOVER;
    // orphan_present says the orphan file may hold orphans: they are processed at mount.
    let orphans = if sb.has_compat(COMPAT_ORPHAN_FILE) { RO_COMPAT_ORPHAN_PRESENT } else { 0 };
    let ro_compat = sb.feature_ro_compat & !RO_COMPAT_WRITE & !orphans;
    let mut names = features::names(features::Kind::Incompat, incompat);
    names.extend(features::names(features::Kind::RoCompat, ro_compat));
    if !names.is_empty() {
        return Some(format!("the engine cannot write images with feature(s): {}", names.join(", ")));
    }
    // The kernel mounts bigalloc only with extents and clusters that start at block 0 (its
    // `ext4_fill_super` checks); the cluster arithmetic here assumes both.
    if sb.has_ro_compat(RO_COMPAT_BIGALLOC) && !sb.has_incompat(INCOMPAT_EXTENTS) {
        return Some("bigalloc without the extent feature".into());
    }
    if sb.has_ro_compat(RO_COMPAT_BIGALLOC) && sb.first_data_block != 0 {
        return Some(format!("bigalloc with first data block {} (clusters start at block 0)", sb.first_data_block));
    }
    None
}
