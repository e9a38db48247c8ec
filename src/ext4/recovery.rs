//! Opening a filesystem: the multiple mount protection taken first, then a journal that needs recovery
//! replayed (its full commits by `journal.rs`, then its fast commits by `fast_commit.rs`), onto the
//! image for a read-write mount or into an in-memory overlay for a read-only one, whose orphans are then
//! cleaned up in memory too, as the kernel's read-only mounts do. `Filesystem::open_as_is` (in `fs.rs`)
//! then reads the filesystem as the device, or the overlay, holds it.

use std::sync::Arc;

use super::device::BlockDevice;
use super::error::{CorruptKind, Error, Object, Result};
use super::feature_policy::{check_features, feature_write_refusal};
use super::features::{
    COMPAT_ORPHAN_FILE, INCOMPAT_MMP, INCOMPAT_RECOVER, RO_COMPAT_BIGALLOC, RO_COMPAT_ORPHAN_PRESENT,
};
use super::fs::{Filesystem, MountOptions, read_superblock, superblock_block};
use super::journal::{BlockSource, Journal};
use super::mmp::Mmp;
use super::overlay::OverlayDevice;
use super::superblock::{RawSuperblock, SUPERBLOCK_SIZE, Superblock};

impl Filesystem {
    /// Reads and validates the superblock and group descriptors of the filesystem on `dev`.
    ///
    /// A journal that needs recovery is replayed first (unless `opts.norecovery`): onto the image when
    /// the mount will write it, into memory otherwise, so a read-only mount never writes the image.
    ///
    /// A read-write open of an `mmp` image first takes its MMP block (see [`super::mmp`]), before the journal
    /// replay writes anything, and fails with [`Error::Busy`] when another node has the image.
    pub fn open(dev: Box<dyn BlockDevice>, opts: &MountOptions) -> Result<Filesystem> {
        let (_, sb) = read_superblock(&*dev)?;
        let will_write =
            !opts.read_only && feature_write_refusal(&sb).is_none() && !(sb.needs_recovery() && opts.norecovery);
        if !(will_write && sb.has_incompat(INCOMPAT_MMP)) {
            return Filesystem::open_recovered(dev, opts);
        }
        check_features(&sb)?;
        // The device is shared with the attempt below, so that the block is released when it fails.
        let dev: Arc<dyn BlockDevice> = Arc::from(dev);
        let taken = Mmp::protect(&*dev, &sb, &opts.mmp_owner, opts.mmp_sleep)?;
        match Filesystem::open_recovered(Box::new(SharedDevice(dev.clone())), opts) {
            Ok(fs) if fs.read_only.is_none() => {
                *fs.mmp.lock().unwrap_or_else(|p| p.into_inner()) = Some(taken);
                Ok(fs)
            }
            Ok(fs) => {
                // Turned out read-only (a damaged descriptor, orphan file or journal): nothing writes.
                taken.release(&*dev)?;
                Ok(fs)
            }
            Err(e) => {
                if let Err(r) = taken.release(&*dev) {
                    tracing::warn!(error = %r, "multiple mount protection: could not release the MMP block");
                }
                Err(e)
            }
        }
    }

    /// [`Filesystem::open`] once the MMP block, if any, is held: replays the journal as needed.
    fn open_recovered(dev: Box<dyn BlockDevice>, opts: &MountOptions) -> Result<Filesystem> {
        let (_, sb) = read_superblock(&*dev)?;
        if !sb.needs_recovery() || opts.norecovery {
            if opts.read_only && !opts.norecovery && has_orphans(&sb) {
                return Filesystem::open_read_only(dev, sb.block_size, std::collections::BTreeMap::new(), opts);
            }
            return Filesystem::open_as_is(dev, opts);
        }
        check_features(&sb)?;
        let as_is = MountOptions { norecovery: true, read_only: true, ..opts.clone() };
        let probe = Filesystem::open_as_is(dev, &as_is)?;
        let (replay, jsb, raw_jsb, jsb_block) = {
            let journal = Journal::open(&probe).map_err(journal_error)?;
            let replay = journal.recover().map_err(journal_error)?;
            (replay, journal.sb.clone(), journal.raw_sb.clone(), journal.sb_block)
        };
        let block_size = probe.block_size();
        let dev = probe.into_device();
        let mut blocks = replay.blocks;
        // The replayed image as the kernel leaves it after recovery: needs_recovery cleared.
        let (sb_block, sb_offset) = superblock_block(block_size);
        let mut home = match blocks.get(&sb_block) {
            Some(source) => source.read(&*dev, block_size)?,
            None => {
                let mut b = vec![0u8; super::bytes::index(block_size)];
                dev.read_exact_at(&mut b, byte_offset(sb_block, block_size)?)?;
                b
            }
        };
        let sb_bytes = home
            .get_mut(sb_offset..sb_offset.saturating_add(SUPERBLOCK_SIZE))
            .ok_or(Error::corrupt(Object::Superblock, CorruptKind::BlockNumberOutOfRange))?;
        clear_needs_recovery(sb_bytes);
        blocks.insert(sb_block, BlockSource::Data(home));
        // And the journal emptied, as recovery leaves it.
        let mut jblock = vec![0u8; super::bytes::index(block_size)];
        let at = jsb_block
            .checked_mul(u64::from(block_size))
            .ok_or(Error::corrupt(Object::Journal, CorruptKind::JournalSuperblockOffsetOverflows))?;
        dev.read_exact_at(&mut jblock, at)?;
        let emptied = jsb.emptied(&raw_jsb, replay.next_sequence);
        jblock
            .get_mut(..emptied.len())
            .ok_or(Error::corrupt(Object::Journal, CorruptKind::JournalSuperblockShorterThanItsFields))?
            .copy_from_slice(&emptied);
        blocks.insert(jsb_block, BlockSource::Data(jblock));
        let dev: Arc<dyn BlockDevice> = Arc::from(dev);
        if !replay.fast_commits.is_empty() {
            // Fast commits record block ranges and the replay keeps the bitmaps by block; with bigalloc a
            // bit is a cluster several files' ranges may share, which that replay does not model.
            let bigalloc = sb.has_ro_compat(RO_COMPAT_BIGALLOC).then(|| "not with bigalloc".to_string());
            if let Some(why) = bigalloc.or_else(|| feature_write_refusal(&sb).map(|r| r.to_string())) {
                return Err(Error::Unsupported(format!(
                    "the journal holds fast commits, which ext4box replays only on images it can write ({why}); \
                     run e2fsck, or mount with -o ro,norecovery to read the image without the journal's last changes"
                )));
            }
            blocks = Filesystem::replay_in_memory(dev.clone(), block_size, blocks, &replay.fast_commits, opts)
                .map_err(journal_error)?;
        }
        if opts.read_only || feature_write_refusal(&sb).is_some() {
            return Filesystem::open_read_only(Box::new(SharedDevice(dev)), block_size, blocks, opts);
        }
        // Read-write: write the replayed blocks home, then the emptied journal, then the superblock
        // without needs_recovery, flushing between the steps so a crash in the middle leaves a journal
        // that replays again.
        // Logged copies first, while the log they are read from is as it was: blocks the fast-commit
        // replay wrote may include the journal's own (its transactions went through the log too).
        let home = blocks.iter().filter(|(nr, _)| **nr != sb_block && **nr != jsb_block);
        let (logged, written): (Vec<_>, Vec<_>) = home.partition(|(_, s)| matches!(s, BlockSource::Log { .. }));
        for (&nr, source) in logged.into_iter().chain(written) {
            dev.write_all_at(&source.read(&*dev, block_size)?, byte_offset(nr, block_size)?)?;
        }
        dev.flush()?;
        for nr in [jsb_block, sb_block] {
            if let Some(source) = blocks.get(&nr) {
                dev.write_all_at(&source.read(&*dev, block_size)?, byte_offset(nr, block_size)?)?;
                dev.flush()?;
            }
        }
        let dev: Box<dyn BlockDevice> = Box::new(SharedDevice(dev));
        Filesystem::open_as_is(dev, opts)
    }

    /// Opens `dev` read-only as the replayed `blocks` over it leave it. Orphans are then cleaned up as
    /// the kernel's read-only mounts clean them up (files unlinked while open deleted, truncations
    /// finished), into memory (at most the metadata cache's size of written blocks), so that the image
    /// itself is never written. When the engine cannot write the image's features, or the cleanup fails
    /// (a damaged orphan, the memory bound), the filesystem is read with its orphans, and a line says so.
    fn open_read_only(
        dev: Box<dyn BlockDevice>,
        block_size: u32,
        blocks: std::collections::BTreeMap<u64, BlockSource>,
        opts: &MountOptions,
    ) -> Result<Filesystem> {
        let ro = MountOptions { norecovery: true, read_only: true, ..opts.clone() };
        let dev: Arc<dyn BlockDevice> = Arc::from(dev);
        let overlay = OverlayDevice::new(Box::new(SharedDevice(dev.clone())), block_size, blocks.clone());
        let (_, sb) = read_superblock(&overlay)?;
        if has_orphans(&sb) && !opts.norecovery && feature_write_refusal(&sb).is_none() {
            let scratch = Arc::new(OverlayDevice::scratch(
                Box::new(SharedDevice(dev.clone())),
                block_size,
                blocks,
                opts.cache_bytes,
            ));
            let shared: Arc<dyn BlockDevice> = scratch.clone();
            match Filesystem::clean_up_orphans(Box::new(SharedDevice(shared)), &ro) {
                Ok(()) => match Arc::try_unwrap(scratch) {
                    Ok(cleaned) => return Filesystem::open_as_is(Box::new(cleaned.freeze()), &ro),
                    Err(_) => tracing::warn!("orphans cleaned up in memory, but the result is still in use"),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "orphans left as they are on this read-only mount: their cleanup failed")
                }
            }
        }
        Filesystem::open_as_is(Box::new(overlay), &ro)
    }

    /// The replayed `blocks` with fast commits `tags` replayed over them, in memory (at most the
    /// metadata cache's size of written blocks): a read-write open of the overlay, the replay, and a
    /// clean unmount, whose blocks are then what recovery writes home (or what a read-only mount reads).
    fn replay_in_memory(
        dev: Arc<dyn BlockDevice>,
        block_size: u32,
        blocks: std::collections::BTreeMap<u64, BlockSource>,
        tags: &[super::fast_commit::Tag],
        opts: &MountOptions,
    ) -> Result<std::collections::BTreeMap<u64, BlockSource>> {
        let scratch =
            Arc::new(OverlayDevice::scratch(Box::new(SharedDevice(dev)), block_size, blocks, opts.cache_bytes));
        {
            let shared: Arc<dyn BlockDevice> = scratch.clone();
            let rw = MountOptions { read_only: false, norecovery: true, ..opts.clone() };
            let fs = Filesystem::open_as_is(Box::new(SharedDevice(shared)), &rw)?;
            if let Some(why) = fs.read_only_reason() {
                return Err(Error::Unsupported(why.to_string()));
            }
            fs.replay_fast_commits(tags)?;
            fs.close()?;
            if let Some(why) = fs.read_only_reason() {
                return Err(Error::Unsupported(why.to_string()));
            }
        }
        match Arc::try_unwrap(scratch) {
            Ok(overlay) => Ok(overlay.into_blocks()),
            Err(_) => Err(Error::Unsupported("the fast-commit replay is still in use".into())),
        }
    }

    /// A read-write open and clean unmount of `dev` (an in-memory overlay): the orphans' cleanup and
    /// the final superblock, as a read-write mount would write them.
    fn clean_up_orphans(dev: Box<dyn BlockDevice>, ro: &MountOptions) -> Result<()> {
        let rw = MountOptions { read_only: false, ..ro.clone() };
        let fs = Filesystem::open_as_is(dev, &rw)?;
        if let Some(why) = fs.read_only_reason() {
            return Err(Error::Unsupported(why.to_string()));
        }
        fs.close()?;
        match fs.read_only_reason() {
            Some(why) => Err(Error::Unsupported(why.to_string())),
            None => Ok(()),
        }
    }
}

/// The byte offset of block `nr` (journal tags name blocks below blocks_count, checked at the scan).
fn byte_offset(nr: u64, block_size: u32) -> Result<u64> {
    nr.checked_mul(u64::from(block_size)).ok_or(Error::corrupt(Object::Journal, CorruptKind::JournalBlockOutOfRange))
}

/// Clears needs_recovery in raw superblock bytes and reseals their checksum.
fn clear_needs_recovery(raw: &mut [u8]) {
    let mut sb = RawSuperblock::new(raw.to_vec());
    sb.set_incompat(INCOMPAT_RECOVER, false);
    raw.copy_from_slice(&sb.sealed()[..raw.len()]);
}

/// A journal that cannot be replayed refuses the mount, with the way out.
fn journal_error(e: Error) -> Error {
    match e {
        Error::Unsupported(m) if m.contains("norecovery") => Error::Unsupported(m),
        Error::Unsupported(m) => Error::Unsupported(format!(
            "{m}; mount with -o ro,norecovery to read the image without the journal's last changes"
        )),
        other => Error::Unsupported(format!(
            "the journal needs recovery but cannot be replayed ({other}); run e2fsck, or mount with \
             -o ro,norecovery to read the image without the journal's last changes"
        )),
    }
}

/// Whether the superblock says orphans may wait for cleanup: the orphan chain, or `orphan_present`.
fn has_orphans(sb: &Superblock) -> bool {
    sb.last_orphan != 0 || (sb.has_compat(COMPAT_ORPHAN_FILE) && sb.has_ro_compat(RO_COMPAT_ORPHAN_PRESENT))
}

/// A device shared between a filesystem and its opener (which releases the MMP block should the open fail).
struct SharedDevice(Arc<dyn BlockDevice>);

impl BlockDevice for SharedDevice {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn flush(&self) -> std::io::Result<()> {
        self.0.flush()
    }
    fn read_fresh(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.0.read_fresh(buf, offset)
    }
    fn discard(&self, offset: u64, len: u64) -> std::io::Result<()> {
        self.0.discard(offset, len)
    }
}
