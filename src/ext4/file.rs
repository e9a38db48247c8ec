//! File data on the write side: writing, truncating, fallocate, punching holes, and deleting inodes.
//!
//! Data blocks are written straight to the device before the transaction that maps them commits (ordered
//! mode): a crash can lose the mapping, never point a file at stale data. Newly allocated blocks are
//! written whole, zero-padded, so nothing old shows through.
//!
//! Bounds the arithmetic relies on: a file's logical blocks are below `max_blocks` (checked before a
//! write, a truncate or an fallocate changes anything), so its byte positions are below 2^59; a mapped
//! physical block lies inside the filesystem, whose size in bytes was checked against the device; and a
//! run of blocks mapped or allocated ends inside its hole, its extent or the filesystem.

use super::error::{CorruptKind, Error, Object, Result};
use super::extent::{self, Extent};
use super::extent_write;
use super::fs::{Filesystem, Mapping};
use super::inode::{FileKind, Inode, InodeNo, Timestamp, flags};
use super::txn::{Txn, inode_mut};
use super::{block_map, inline_data, xattr_write};

/// Extents address logical blocks below 2^32 (`EXT_MAX_BLOCKS` is one less).
const EXTENT_BLOCKS: u64 = 1 << 32;

/// Byte `within` of block `nr` (a file's or the device's, of `bs` bytes); past 2^64 is `TooBig`.
fn byte_at(nr: u64, bs: u64, within: u64) -> Result<u64> {
    nr.checked_mul(bs).and_then(|b| b.checked_add(within)).ok_or(Error::TooBig)
}

/// The block byte `pos` lies in, and its offset there (`bs`, the block size, is not 0: the superblock
/// was validated).
fn block_of(pos: u64, bs: u64) -> (u64, u64) {
    (pos.checked_div(bs).unwrap_or(0), pos.checked_rem(bs).unwrap_or(0))
}

/// A length in bytes as a file size or position.
fn len64(n: usize) -> Result<u64> {
    u64::try_from(n).map_err(|_| Error::TooBig)
}

/// A length in bytes (at most a buffer's) as a buffer size.
fn buf_len(n: u64) -> Result<usize> {
    usize::try_from(n).map_err(|_| Error::TooBig)
}

/// The part of `data`, the bytes from file byte `offset` on, that falls in blocks `lblk..lblk + n`; and
/// where it starts in the first of those blocks. Empty when none of `data` falls there.
fn overlap(data: &[u8], offset: u64, lblk: u64, n: u64, bs: u64) -> Result<(&[u8], u64)> {
    let start = byte_at(lblk, bs, 0)?;
    let stop = byte_at(lblk.checked_add(n).ok_or(Error::TooBig)?, bs, 0)?;
    // A file position as an index into data, clamped to it.
    let at = |pos: u64| usize::try_from(pos.saturating_sub(offset)).map_or(data.len(), |i| i.min(data.len()));
    let (a, b) = (at(start), at(stop));
    Ok((data.get(a..b).unwrap_or_default(), offset.saturating_sub(start)))
}

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
    fn fill_hole(
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

    fn mark_written(&mut self, from: u64, to: u64) {
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

/// The first block of the physical cluster that logical cluster `first..first + ratio` of `list` lives
/// in, if any of its blocks is mapped. A cluster mapped out of step (block offsets that differ) is
/// corruption: e2fsck's "misaligned cluster".
fn cluster_home(list: &[Extent], first: u64, ratio: u64, inode: &Inode) -> Result<Option<u64>> {
    if ratio == 1 {
        return Ok(None);
    }
    let mask = ratio.saturating_sub(1);
    let at = list.partition_point(|e| e.end() <= first);
    let Some(e) = list.get(at).filter(|e| u64::from(e.lblk).saturating_sub(first) < ratio) else { return Ok(None) };
    // e ends after first and starts before the cluster's end: l is one of its blocks in the cluster.
    let l = u64::from(e.lblk).max(first);
    let p = extent_write::pblk_at(e, l);
    if (p ^ l) & mask != 0 {
        return Err(Error::corrupt(Object::Inode(inode.ino.0), CorruptKind::ClusterIsMappedOutOfStepWithItsBlocks));
    }
    // first is a cluster's first block, so l's offset in the cluster is l - first, which p shares.
    Ok(Some(p & !mask))
}

/// The last block of a run of `len >= 1` blocks from `start` (inside the filesystem: no saturation).
fn last_block(start: u64, len: u64) -> u64 {
    start.saturating_add(len.saturating_sub(1))
}

/// The clusters (first and last, inclusive runs in cluster numbers) of the physical runs `freed` that no
/// extent left in `list` still uses, for cluster size `2^bits` blocks.
///
/// Only the clusters at the ends of a freed run can hold blocks outside it, so each run gives up its
/// end clusters that a kept extent uses before the runs are merged: once merged, a shared cluster can
/// sit inside a run (two extents freed by one truncate, physically side by side, with a third kept in
/// the cluster between them).
fn unused_clusters(freed: &[(u64, u64)], list: &[Extent], bits: u32) -> Vec<(u64, u64)> {
    // The clusters the kept extents use, as sorted disjoint runs, for a binary search per end.
    let mut kept: Vec<(u64, u64)> = if bits == 0 {
        Vec::new()
    } else {
        list.iter().map(|e| (e.pblk >> bits, last_block(e.pblk, u64::from(e.len)) >> bits)).collect()
    };
    kept.sort_unstable();
    kept.dedup_by(|next, prev| {
        let overlaps = next.0 <= prev.1;
        if overlaps {
            prev.1 = prev.1.max(next.1);
        }
        overlaps
    });
    let used = |c: u64| {
        let at = kept.partition_point(|&(_, b)| b < c);
        kept.get(at).is_some_and(|&(a, _)| a <= c)
    };
    let mut runs: Vec<(u64, u64)> = freed
        .iter()
        .filter(|&&(_, l)| l > 0)
        .filter_map(|&(s, l)| {
            let (mut a, mut b) = (s >> bits, last_block(s, l) >> bits);
            if bits > 0 {
                if used(a) {
                    a = a.checked_add(1)?;
                }
                if b >= a && used(b) {
                    b = b.checked_sub(1)?;
                }
            }
            (a <= b).then_some((a, b))
        })
        .collect();
    runs.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(runs.len());
    for (a, b) in runs {
        match merged.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    merged
}

/// The largest number of blocks a file may hold: 2^32 - 1 with extents (the kernel's `EXT_MAX_BLOCKS`,
/// so the largest size is that many blocks), the reach of the indirect map otherwise.
#[expect(clippy::arithmetic_side_effects, reason = "p is at most 16384 (64 KiB blocks): the sum is below 2^43")]
fn max_blocks(fs: &Filesystem, inode: &Inode) -> u64 {
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
fn goal(fs: &Filesystem, inode: &Inode, map: &MapEdit, lblk: u64) -> u64 {
    if let Some(before) = lblk.checked_sub(1) {
        if let Ok(Mapping::Mapped { pblk, .. }) = map.lookup(fs, inode, before) {
            return pblk.saturating_add(1);
        }
    }
    let group = inode.ino.0.saturating_sub(1).checked_div(fs.sb.inodes_per_group).unwrap_or(0);
    fs.sb.group_first_block(u64::from(group))
}

impl Filesystem {
    /// Writes `data` at `offset` of regular file `ino`; returns the inode as written.
    pub fn write(&self, ino: InodeNo, offset: u64, data: &[u8]) -> Result<std::sync::Arc<Inode>> {
        let mut tx = self.begin()?;
        let mut inode = inode_mut(&tx, ino)?;
        if inode.kind != FileKind::Regular {
            return Err(Error::Invalid);
        }
        if inode.has_flag(flags::IMMUTABLE) {
            return Err(Error::NotPermitted);
        }
        let end = offset.checked_add(len64(data.len())?).ok_or(Error::TooBig)?;
        // Append-only: opens without O_APPEND were refused, but the kernel's writeback rewrites whole pages,
        // so a write may start before the end with the bytes already there. Only what lies past the end
        // is new; nothing before it is changed.
        let (offset, data) = if inode.has_flag(flags::APPEND) && offset < inode.size {
            // The new part starts at the old size (or not at all, when the write ends before it).
            let start = inode.size.min(end);
            let skip = buf_len(start.saturating_sub(offset))?;
            (start, data.get(skip..).unwrap_or_default())
        } else {
            (offset, data)
        };
        if data.is_empty() {
            return self.inode(ino);
        }
        unline(&mut tx, &mut inode)?;
        let bs = u64::from(self.sb.block_size);
        let stop = end.div_ceil(bs);
        if stop > max_blocks(self, &inode) {
            return Err(Error::TooBig);
        }
        let mut map = MapEdit::load(self, &inode)?;
        let first = block_of(offset, bs).0;
        let mut lblk = first;
        let mut last_goal = goal(self, &inode, &map, first);
        // Blocks first..stop hold the data. Each step below maps n <= span blocks from lblk, so lblk
        // stays at most stop (and the goal, a hint, inside the filesystem).
        while let Some(span) = stop.checked_sub(lblk).filter(|&s| s > 0) {
            match map.lookup(self, &inode, lblk)? {
                Mapping::Mapped { pblk, len, unwritten: false } => {
                    let n = len.min(span);
                    // Overwrite in place: only the bytes written, no read-modify-write.
                    let (bytes, within) = overlap(data, offset, lblk, n, bs)?;
                    self.dev.write_all_at(bytes, byte_at(pblk, bs, within)?)?;
                    last_goal = pblk.saturating_add(n);
                    lblk = lblk.saturating_add(n);
                }
                Mapping::Mapped { pblk, len, unwritten: true } => {
                    let n = len.min(span);
                    self.write_blocks(pblk, lblk, n, offset, data)?;
                    let next = lblk.saturating_add(n);
                    map.mark_written(lblk, next);
                    last_goal = pblk.saturating_add(n);
                    lblk = next;
                }
                Mapping::Hole { len } => {
                    let n = len.unwrap_or(u64::MAX).min(span);
                    last_goal = map.fill_hole(&mut tx, &mut inode, (lblk, n), last_goal, false, |pblk, at, got| {
                        self.write_blocks(pblk, at, got, offset, data)
                    })?;
                    lblk = lblk.saturating_add(n);
                }
            }
        }
        map.store(&mut tx, &mut inode, last_goal)?;
        inode.size = inode.size.max(end);
        self.touch(&mut inode, true);
        let written = tx.write_inode(&inode)?;
        tx.commit()?;
        Ok(written)
    }

    /// Writes whole blocks `lblk..lblk+n` at `pblk`, with the part of `data` (at file `offset`) they hold and
    /// zeros elsewhere.
    fn write_blocks(&self, pblk: u64, lblk: u64, n: u64, offset: u64, data: &[u8]) -> Result<()> {
        let bs = u64::from(self.sb.block_size);
        let mut buf = vec![0u8; buf_len(byte_at(n, bs, 0)?)?];
        let (bytes, within) = overlap(data, offset, lblk, n, bs)?;
        if !bytes.is_empty() {
            buf[buf_len(within)?..][..bytes.len()].copy_from_slice(bytes);
        }
        self.dev.write_all_at(&buf, byte_at(pblk, bs, 0)?)?;
        Ok(())
    }

    /// Writes zeros over bytes `from..to` of the file where they are stored (holes and unwritten extents
    /// already read as zeros).
    fn zero_bytes(&self, inode: &Inode, map: &MapEdit, from: u64, to: u64) -> Result<()> {
        let bs = u64::from(self.sb.block_size);
        let mut pos = from;
        while let Some(left) = to.checked_sub(pos).filter(|&n| n > 0) {
            let (lblk, within) = block_of(pos, bs);
            // The rest of pos's block, or of the range: within < bs, so n >= 1 and pos + n <= to.
            let n = left.min(bs.saturating_sub(within));
            if let Mapping::Mapped { pblk, unwritten: false, .. } = map.lookup(self, inode, lblk)? {
                let zeros = vec![0u8; buf_len(n)?];
                self.dev.write_all_at(&zeros, byte_at(pblk, bs, within)?)?;
            }
            pos = pos.saturating_add(n);
        }
        Ok(())
    }

    /// Changes the size of `inode` within a transaction: blocks past a smaller size are freed and the
    /// rest of the last block is zeroed, so a later extension reads zeros.
    pub(crate) fn set_size(&self, tx: &mut Txn<'_>, inode: &mut Inode, size: u64) -> Result<()> {
        if inode.kind != FileKind::Regular {
            return Err(Error::Invalid);
        }
        unline(tx, inode)?;
        let bs = u64::from(self.sb.block_size);
        let keep = size.div_ceil(bs);
        if keep > max_blocks(self, inode) {
            return Err(Error::TooBig);
        }
        if size < inode.size {
            let mut map = MapEdit::load(self, inode)?;
            map.remove(tx, inode, keep, u64::MAX)?;
            if block_of(size, bs).1 != 0 {
                self.zero_bytes(inode, &map, size, byte_at(keep, bs, 0)?)?;
            }
            let g = goal(self, inode, &map, 0);
            map.store(tx, inode, g)?;
        }
        inode.size = size;
        Ok(())
    }

    /// fallocate(2): `mode` 0 or KEEP_SIZE (1) preallocates unwritten extents; PUNCH_HOLE (2, with
    /// KEEP_SIZE) frees the range; ZERO_RANGE (0x10) makes it read as zeros. Extent-mapped files only.
    pub fn fallocate(&self, ino: InodeNo, offset: u64, len: u64, mode: i32) -> Result<std::sync::Arc<Inode>> {
        use libc::{
            FALLOC_FL_KEEP_SIZE as KEEP_SIZE, FALLOC_FL_PUNCH_HOLE as PUNCH_HOLE, FALLOC_FL_ZERO_RANGE as ZERO_RANGE,
        };
        let mut tx = self.begin()?;
        let mut inode = inode_mut(&tx, ino)?;
        if inode.kind != FileKind::Regular {
            return Err(Error::Invalid);
        }
        if inode.has_flag(flags::IMMUTABLE) || inode.has_flag(flags::APPEND) {
            return Err(Error::NotPermitted);
        }
        if mode & !(KEEP_SIZE | PUNCH_HOLE | ZERO_RANGE) != 0 || (mode & PUNCH_HOLE != 0 && mode & KEEP_SIZE == 0) {
            return Err(Error::NotSupported);
        }
        let end = offset.checked_add(len).ok_or(Error::TooBig)?;
        if len == 0 {
            return Err(Error::Invalid);
        }
        unline(&mut tx, &mut inode)?;
        if !inode.has_flag(flags::EXTENTS) && mode & PUNCH_HOLE == 0 {
            // As the kernel: indirect-mapped files can have holes punched, but nothing preallocated.
            return Err(Error::NotSupported);
        }
        let bs = u64::from(self.sb.block_size);
        if end.div_ceil(bs) > max_blocks(self, &inode) {
            return Err(Error::TooBig);
        }
        let mut map = MapEdit::load(self, &inode)?;
        let (full_from, full_to) = (offset.div_ceil(bs), block_of(end, bs).0);
        if mode & (PUNCH_HOLE | ZERO_RANGE) != 0 {
            // Whole blocks inside the range are unmapped; the partial ones at the edges are zeroed.
            if full_from < full_to {
                map.remove(&mut tx, &mut inode, full_from, full_to)?;
                self.zero_bytes(&inode, &map, offset, byte_at(full_from, bs, 0)?.min(end))?;
                self.zero_bytes(&inode, &map, byte_at(full_to, bs, 0)?.max(offset), end)?;
            } else {
                self.zero_bytes(&inode, &map, offset, end)?;
            }
        }
        if mode & PUNCH_HOLE == 0 {
            // Preallocate every hole in the range as unwritten extents (ZERO_RANGE: the whole blocks only;
            // its edges are zeroed above and stay mapped).
            let (from, to) =
                if mode & ZERO_RANGE != 0 { (full_from, full_to) } else { (block_of(offset, bs).0, end.div_ceil(bs)) };
            let mut lblk = from;
            let mut g = goal(self, &inode, &map, from);
            // Each step covers at most span blocks, so lblk stays at most to (and g, a hint, is harmless).
            while let Some(span) = to.checked_sub(lblk).filter(|&s| s > 0) {
                match map.lookup(self, &inode, lblk)? {
                    Mapping::Mapped { len, pblk, .. } => {
                        g = pblk.saturating_add(len);
                        lblk = lblk.saturating_add(len.min(span));
                    }
                    Mapping::Hole { len } => {
                        let n = len.unwrap_or(u64::MAX).min(span);
                        g = map.fill_hole(&mut tx, &mut inode, (lblk, n), g, true, |_, _, _| Ok(()))?;
                        lblk = lblk.saturating_add(n);
                    }
                }
            }
            if mode & KEEP_SIZE == 0 {
                inode.size = inode.size.max(end);
            }
        }
        let g = goal(self, &inode, &map, 0);
        map.store(&mut tx, &mut inode, g)?;
        self.touch(&mut inode, true);
        let written = tx.write_inode(&inode)?;
        tx.commit()?;
        Ok(written)
    }

    /// Writes `data` as the whole contents of `inode`, a new regular file without blocks, within `tx`
    /// (an EA inode's value).
    pub(crate) fn fill_new_file(&self, tx: &mut Txn<'_>, inode: &mut Inode, data: &[u8]) -> Result<()> {
        let bs = u64::from(self.sb.block_size);
        let size = len64(data.len())?;
        let n = size.div_ceil(bs);
        let mut map = MapEdit::load(self, inode)?;
        let start_goal = goal(self, inode, &map, 0);
        let last_goal = map.fill_hole(tx, inode, (0, n), start_goal, false, |pblk, at, got| {
            self.write_blocks(pblk, at, got, 0, data)
        })?;
        map.store(tx, inode, last_goal)?;
        inode.size = size;
        Ok(())
    }

    /// Frees everything an inode holds (data, tree blocks, xattr block) and the inode itself.
    pub(crate) fn delete_inode(&self, tx: &mut Txn<'_>, inode: &mut Inode) -> Result<()> {
        let holds_blocks = match inode.kind {
            FileKind::Regular | FileKind::Directory => true,
            FileKind::Symlink => !self.is_fast_symlink_inode(inode),
            _ => false,
        };
        if holds_blocks && !inode.has_flag(flags::INLINE_DATA) {
            let mut map = MapEdit::load(self, inode)?;
            map.remove(tx, inode, 0, u64::MAX)?;
            map.store(tx, inode, 0)?;
        }
        xattr_write::release_all(tx, inode)?;
        let is_dir = inode.kind == FileKind::Directory;
        inode.links_count = 0;
        inode.size = 0;
        // i_dtime is 32 bits: the low half of the time, in two's complement (as the kernel stores it).
        inode.dtime = super::bytes::low32(u64::from_ne_bytes(Timestamp::now().sec.to_ne_bytes()));
        tx.write_inode(inode)?;
        tx.free_inode(inode.ino, is_dir)?;
        self.inodes.remove(&inode.ino.0);
        Ok(())
    }
}

impl Filesystem {
    /// copy_file_range done inside the engine: read from one file, write to the other.
    pub fn copy_range(&self, src: InodeNo, off_in: u64, dst: InodeNo, off_out: u64, len: u64) -> Result<u64> {
        // At most 16 MiB a call: the caller loops for more.
        const CHUNK: usize = 16 << 20;
        let data = {
            let _g = self.shared();
            let inode = self.inode(src)?;
            self.read(&inode, off_in, usize::try_from(len).map_or(CHUNK, |l| l.min(CHUNK)))?
        };
        if data.is_empty() {
            return Ok(0);
        }
        let copied = len64(data.len())?;
        self.write(dst, off_out, &data)?;
        Ok(copied)
    }
}

/// Moves an inline file's data out of the inode into a block (the engine writes files as block-mapped
/// only), so the usual write path applies.
pub(crate) fn unline(tx: &mut Txn<'_>, inode: &mut Inode) -> Result<()> {
    if !inode.has_flag(flags::INLINE_DATA) {
        return Ok(());
    }
    let fs = tx.fs();
    let data = inline_data::stored(inode)?;
    xattr_write::remove_system_data(inode, Object::InlineData(inode.ino.0))?;
    inode.flags &= !flags::INLINE_DATA;
    inode.i_block = [0; 60];
    if fs.sb.has_incompat(super::features::INCOMPAT_EXTENTS) {
        inode.flags |= flags::EXTENTS;
        inode.i_block = extent_write::empty_root();
    }
    if !data.is_empty() {
        let mut map = MapEdit::load(fs, inode)?;
        let (pblk, _) = map.allocate(tx, inode, 0, 1, goal(fs, inode, &MapEdit::Indirect, 0), false)?;
        let mut block = vec![0u8; super::bytes::index(fs.sb.block_size)];
        block[..data.len()].copy_from_slice(&data);
        fs.dev.write_all_at(&block, byte_at(pblk, u64::from(fs.sb.block_size), 0)?)?;
        map.store(tx, inode, pblk)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(lblk: u32, len: u32, pblk: u64) -> Extent {
        Extent { lblk, len, pblk, unwritten: false }
    }

    #[test]
    fn a_write_splits_into_the_blocks_it_touches() {
        let data: Vec<u8> = (0..10).collect();
        // Ten bytes at 1020 with 1 KiB blocks: four in block 0, from byte 1020 of it; six in block 1.
        assert_eq!(overlap(&data, 1020, 0, 1, 1024).unwrap(), (&data[..4], 1020));
        assert_eq!(overlap(&data, 1020, 1, 1, 1024).unwrap(), (&data[4..], 0));
        assert_eq!(overlap(&data, 1020, 0, 2, 1024).unwrap(), (&data[..], 1020));
        assert!(overlap(&data, 1020, 5, 1, 1024).unwrap().0.is_empty());
        assert!(matches!(overlap(&data, 0, u64::MAX, 1, 1024), Err(Error::TooBig)));
        assert_eq!(block_of(5000, 4096), (1, 904));
    }

    #[test]
    fn a_kept_cluster_between_two_freed_runs_stays() {
        // Clusters of 16 blocks. A truncate to 260 blocks frees 512..767 at 4704 (clusters 294..309), the
        // tail of 256..511 at 4964 (310..325, 310 still holding blocks 256..259) and 1280..1297 at 5216
        // (326..327): merged first, the three runs would be 294..327 and free cluster 310 with them.
        let kept = [ext(0, 256, 4448), ext(256, 4, 4960)];
        let freed = [(4964, 252), (4704, 256), (5216, 18)];
        assert_eq!(unused_clusters(&freed, &kept, 4), vec![(294, 309), (311, 327)]);
    }

    #[test]
    fn shared_end_clusters_are_kept_and_the_rest_merged() {
        let kept = [ext(0, 2, 32), ext(100, 1, 79)];
        // 34..47 shares cluster 2 with the kept 32..33; 64..79 shares cluster 4 with the kept block 79.
        assert_eq!(unused_clusters(&[(34, 14), (48, 16), (64, 15)], &kept, 4), vec![(3, 3)]);
        // Without bigalloc every freed block is a cluster of its own.
        assert_eq!(unused_clusters(&[(10, 2), (12, 3), (20, 1)], &kept, 0), vec![(10, 14), (20, 20)]);
    }
}
