//! The block map of one file while a write operation edits it (`MapEdit`): lookups, blocks allocated
//! into holes (whole clusters with bigalloc), ranges unmapped and their clusters freed, unwritten extents
//! marked written, and the extent tree written back; with the largest block count a file may hold
//! (`max_blocks`) and where to put its new blocks (`goal`).
//!
//! Bounds the arithmetic relies on: a file's logical blocks are below `max_blocks` (its callers check
//! before a write, a truncate or an fallocate changes anything); a mapped physical block lies inside the
//! filesystem; and a run of blocks mapped or allocated ends inside its hole, its extent or the filesystem.

use super::block_map;
use super::cluster::{cluster_home, unused_clusters};
use super::error::{CorruptKind, Error, Object, Result};
use super::extent::{self, Extent};
use super::extent_write;
use super::fs::{Filesystem, Mapping};
use super::inode::{Inode, flags};
use super::txn::Txn;

/// Extents address logical blocks below 2^32 (`EXT_MAX_BLOCKS` is one less).
const EXTENT_BLOCKS: u64 = 1 << 32;

/// The block map of one file while a write operation changes it: extents as a list (written back as a
/// tree at the end), or the ext2/ext3 indirect map, changed in place.
pub(crate) enum MapEdit {
    Extents { list: Vec<Extent>, tree: Vec<u64>, dirty: bool },
    Indirect,
}

impl MapEdit {
    pub(crate) fn load(fs: &Filesystem, inode: &Inode) -> Result<MapEdit> {
        if inode.has_flag(flags::EXTENTS) {
            let (list, tree) = extent::collect(fs, inode)?;
            Ok(MapEdit::Extents { list, tree, dirty: false })
        } else {
            Ok(MapEdit::Indirect)
        }
    }

    pub(crate) fn lookup(&self, fs: &Filesystem, inode: &Inode, lblk: u64) -> Result<Mapping> {
        match self {
            // find: e holds lblk (e.lblk <= lblk < e.end()), and next starts after it.
            MapEdit::Extents { list, .. } => Ok(match extent_write::find(list, lblk) {
                (Some(e), _) => Mapping::Mapped {
                    pblk: extent_write::pblk_at(e, lblk),
                    len: e.end().saturating_sub(lblk),
                    unwritten: e.unwritten,
                },
                (None, Some(next)) => Mapping::Hole { len: Some(u64::from(next.lblk).saturating_sub(lblk)) },
                (None, None) => Mapping::Hole { len: None },
            }),
            MapEdit::Indirect => block_map::map(fs, inode, lblk),
        }
    }

    /// Allocates and maps up to `want` blocks of the hole at `lblk`, near block `goal`; returns the first
    /// block and how many were mapped (at least one). `i_blocks` counts what was newly allocated.
    ///
    /// With bigalloc a logical cluster lives in one physical cluster, block for block (the kernel's
    /// `get_implied_cluster_alloc`): a hole in a cluster the file already has takes its blocks there, at
    /// no charge; otherwise whole clusters are allocated and charged, and the blocks keep their offset in
    /// the cluster.
    pub(crate) fn allocate(
        &mut self,
        tx: &mut Txn<'_>,
        inode: &mut Inode,
        lblk: u64,
        want: u64,
        goal: u64,
        unwritten: bool,
    ) -> Result<(u64, u64)> {
        let sb = &tx.fs().sb;
        let (bits, ratio) = (sb.cluster_bits(), sb.cluster_ratio());
        // i_blocks of the clusters allocated (at most the filesystem's, in sectors: no saturation).
        let charge = |clusters: u64| clusters.saturating_mul(sb.cluster_sectors());
        let list = match self {
            MapEdit::Indirect if bits > 0 => {
                return Err(Error::corrupt(
                    Object::Inode(inode.ino.0),
                    CorruptKind::BlockMappedFileOnBigallocFilesystem,
                ));
            }
            MapEdit::Indirect => {
                let (pblk, got) = tx.alloc_clusters(goal, want)?;
                inode.blocks_512 = inode.blocks_512.saturating_add(charge(got));
                let end = lblk.checked_add(got).ok_or(Error::TooBig)?;
                // The blocks allocated run from pblk, inside the filesystem.
                for (l, p) in (lblk..end).zip(pblk..) {
                    block_map::set_block(tx, inode, l, p)?;
                }
                return Ok((pblk, got));
            }
            MapEdit::Extents { list, dirty, .. } => {
                *dirty = true;
                list
            }
        };
        let lblk32 = u32::try_from(lblk).map_err(|_| Error::TooBig)?;
        // From here lblk < 2^32, and want is 1..=2^32 - lblk: the run ends by block 2^32.
        let mut want = match extent_write::find(list, lblk) {
            (Some(_), _) => return Err(Error::corrupt(Object::Inode(inode.ino.0), CorruptKind::AllocatingMappedBlock)),
            (None, Some(next)) => want.min(u64::from(next.lblk).saturating_sub(lblk)),
            (None, None) => want,
        }
        .min(EXTENT_BLOCKS.saturating_sub(lblk))
        .max(1);
        // ratio = 2^bits >= 1: the mask of a block's offset in its cluster.
        let mask = ratio.saturating_sub(1);
        let offset = lblk & mask;
        let (pblk, got, clusters) = match cluster_home(list, lblk & !mask, ratio, inode)? {
            // home is the first block of a cluster, and offset < ratio.
            Some(home) => (home | offset, want.min(ratio.saturating_sub(offset)), 0),
            None => {
                // The last cluster touched may already be the file's (a hole ending inside it): stop before it.
                let last = lblk.saturating_add(want.saturating_sub(1)) & !mask;
                if last > lblk && cluster_home(list, last, ratio, inode)?.is_some() {
                    want = last.saturating_sub(lblk);
                }
                let (first, n) = tx.alloc_clusters(goal, offset.saturating_add(want).div_ceil(ratio))?;
                // n >= 1 clusters from first, inside the filesystem: offset lands in the first of them.
                (first.saturating_add(offset), want.min(n.saturating_mul(ratio).saturating_sub(offset)), n)
            }
        };
        inode.blocks_512 = inode.blocks_512.saturating_add(charge(clusters));
        let len = u32::try_from(got).map_err(|_| Error::TooBig)?;
        extent_write::insert(list, Extent { lblk: lblk32, len, pblk, unwritten });
        Ok((pblk, got))
    }

    /// Allocates and maps the hole `lblk..lblk + n` near `goal`, one run at a time, handing each run
    /// (first physical block, first logical block, length) to `each`; returns the goal after the last.
    pub(super) fn fill_hole(
        &mut self,
        tx: &mut Txn<'_>,
        inode: &mut Inode,
        (lblk, n): (u64, u64),
        mut goal: u64,
        unwritten: bool,
        mut each: impl FnMut(u64, u64, u64) -> Result<()>,
    ) -> Result<u64> {
        let mut done = 0u64;
        while let Some(left) = n.checked_sub(done).filter(|&l| l > 0) {
            let at = lblk.checked_add(done).ok_or(Error::TooBig)?;
            let (pblk, got) = self.allocate(tx, inode, at, left, goal, unwritten)?;
            each(pblk, at, got)?;
            // The run ends inside the filesystem; got <= left, so done stays at most n.
            goal = pblk.saturating_add(got);
            done = done.saturating_add(got);
        }
        Ok(goal)
    }

    /// Unmaps logical blocks `from..to` and frees the clusters left with no block of the file (with
    /// bigalloc a cluster at either end of a freed run may still hold blocks outside it).
    pub(crate) fn remove(&mut self, tx: &mut Txn<'_>, inode: &mut Inode, from: u64, to: u64) -> Result<()> {
        match self {
            MapEdit::Extents { list, dirty, .. } => {
                let freed = extent_write::remove_range(list, from, to);
                if freed.is_empty() {
                    return Ok(());
                }
                *dirty = true;
                let sb = &tx.fs().sb;
                for (first, last) in unused_clusters(&freed, list, sb.cluster_bits()) {
                    // first <= last, cluster numbers of the filesystem: no saturation.
                    let n = last.saturating_sub(first).saturating_add(1);
                    tx.free_blocks(first << sb.cluster_bits(), n << sb.cluster_bits())?;
                    inode.blocks_512 = inode.blocks_512.saturating_sub(n.saturating_mul(sb.cluster_sectors()));
                }
                Ok(())
            }
            MapEdit::Indirect => block_map::free_range(tx, inode, from, to),
        }
    }

    pub(super) fn mark_written(&mut self, from: u64, to: u64) {
        if let MapEdit::Extents { list, dirty, .. } = self {
            extent_write::mark_written(list, from, to);
            *dirty = true;
        }
    }

    /// Writes the changed extent tree back into `inode` (the caller writes the inode).
    pub(crate) fn store(self, tx: &mut Txn<'_>, inode: &mut Inode, goal: u64) -> Result<()> {
        if let MapEdit::Extents { list, tree, dirty: true } = self {
            extent_write::store(tx, inode, &list, tree, goal)?;
        }
        Ok(())
    }
}

/// The largest number of blocks a file may hold: 2^32 - 1 with extents (the kernel's `EXT_MAX_BLOCKS`,
/// so the largest size is that many blocks), the reach of the indirect map otherwise.
#[expect(clippy::arithmetic_side_effects, reason = "p is at most 16384 (64 KiB blocks): the sum is below 2^43")]
pub(super) fn max_blocks(fs: &Filesystem, inode: &Inode) -> u64 {
    if inode.has_flag(flags::EXTENTS)
        || (inode.has_flag(flags::INLINE_DATA) && fs.sb.has_incompat(super::features::INCOMPAT_EXTENTS))
    {
        EXTENT_BLOCKS - 1
    } else {
        let p = u64::from(fs.block_size() / 4);
        12 + p + p * p + p * p * p
    }
}

/// A block near which to put new data of `inode`: after the block before `lblk`, or in the inode's group.
/// Only a hint to the allocator, which clamps it to the filesystem: saturating is harmless.
pub(super) fn goal(fs: &Filesystem, inode: &Inode, map: &MapEdit, lblk: u64) -> u64 {
    if let Some(before) = lblk.checked_sub(1) {
        if let Ok(Mapping::Mapped { pblk, .. }) = map.lookup(fs, inode, before) {
            return pblk.saturating_add(1);
        }
    }
    let group = inode.ino.0.saturating_sub(1).checked_div(fs.sb.inodes_per_group).unwrap_or(0);
    fs.sb.group_first_block(u64::from(group))
}
