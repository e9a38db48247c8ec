//! File data on the write side: writing, truncating, fallocate, punching holes, and deleting inodes.
//!
//! Data blocks are written straight to the device before the transaction that maps them commits (ordered
//! mode): a crash can lose the mapping, never point a file at stale data. Newly allocated blocks are
//! written whole, zero-padded, so nothing old shows through.

use super::error::{CorruptKind, Error, Object, Result};
use super::extent::{self, Extent};
use super::extent_write;
use super::fs::{Filesystem, Mapping};
use super::inode::{FileKind, Inode, InodeNo, Timestamp, flags};
use super::txn::{Txn, inode_mut};
use super::{block_map, inline_data, xattr_write};

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
            MapEdit::Extents { list, .. } => Ok(match extent_write::find(list, lblk) {
                (Some(e), _) => Mapping::Mapped {
                    pblk: e.pblk + (lblk - u64::from(e.lblk)),
                    len: e.end() - lblk,
                    unwritten: e.unwritten,
                },
                (None, Some(next)) => Mapping::Hole { len: Some(u64::from(next.lblk) - lblk) },
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
        let list = match self {
            MapEdit::Indirect if bits > 0 => {
                return Err(Error::corrupt(
                    Object::Inode(inode.ino.0),
                    CorruptKind::BlockMappedFileOnBigallocFilesystem,
                ));
            }
            MapEdit::Indirect => {
                let (pblk, got) = tx.alloc_clusters(goal, want)?;
                inode.blocks_512 += got * sb.cluster_sectors();
                for i in 0..got {
                    block_map::set_block(tx, inode, lblk + i, pblk + i)?;
                }
                return Ok((pblk, got));
            }
            MapEdit::Extents { list, dirty, .. } => {
                *dirty = true;
                list
            }
        };
        let lblk32 = u32::try_from(lblk).map_err(|_| Error::TooBig)?;
        let mut want = match extent_write::find(list, lblk) {
            (Some(_), _) => return Err(Error::corrupt(Object::Inode(inode.ino.0), CorruptKind::AllocatingMappedBlock)),
            (None, Some(next)) => want.min(u64::from(next.lblk) - lblk),
            (None, None) => want,
        }
        .min((1 << 32) - lblk)
        .max(1);
        let offset = lblk & (ratio - 1);
        let (pblk, got, clusters) = match cluster_home(list, lblk - offset, ratio, inode)? {
            Some(home) => (home + offset, want.min(ratio - offset), 0),
            None => {
                // The last cluster touched may already be the file's (a hole ending inside it): stop before it.
                let last = (lblk + want - 1) & !(ratio - 1);
                if last > lblk && cluster_home(list, last, ratio, inode)?.is_some() {
                    want = last - lblk;
                }
                let (first, n) = tx.alloc_clusters(goal, (offset + want).div_ceil(ratio))?;
                (first + offset, want.min((n << bits) - offset), n)
            }
        };
        inode.blocks_512 += clusters * sb.cluster_sectors();
        extent_write::insert(list, Extent { lblk: lblk32, len: got as u32, pblk, unwritten });
        Ok((pblk, got))
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
                    let n = last - first + 1;
                    tx.free_blocks(first << sb.cluster_bits(), n << sb.cluster_bits())?;
                    inode.blocks_512 = inode.blocks_512.saturating_sub(n * sb.cluster_sectors());
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
    let at = list.partition_point(|e| e.end() <= first);
    let Some(e) = list.get(at).filter(|e| u64::from(e.lblk) < first + ratio) else { return Ok(None) };
    let l = u64::from(e.lblk).max(first);
    let p = e.pblk + (l - u64::from(e.lblk));
    if (p ^ l) & (ratio - 1) != 0 {
        return Err(Error::corrupt(Object::Inode(inode.ino.0), CorruptKind::ClusterIsMappedOutOfStepWithItsBlocks));
    }
    Ok(Some(p - (l - first)))
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
        list.iter().map(|e| (e.pblk >> bits, (e.pblk + u64::from(e.len).max(1) - 1) >> bits)).collect()
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
            let (mut a, mut b) = (s >> bits, (s + l - 1) >> bits);
            if bits > 0 {
                if used(a) {
                    a += 1;
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
fn max_blocks(fs: &Filesystem, inode: &Inode) -> u64 {
    if inode.has_flag(flags::EXTENTS)
        || (inode.has_flag(flags::INLINE_DATA) && fs.sb.has_incompat(super::features::INCOMPAT_EXTENTS))
    {
        (1 << 32) - 1
    } else {
        let p = u64::from(fs.block_size() / 4);
        12 + p + p * p + p * p * p
    }
}

/// A block near which to put new data of `inode`: after the block before `lblk`, or in the inode's group.
fn goal(fs: &Filesystem, inode: &Inode, map: &MapEdit, lblk: u64) -> u64 {
    if lblk > 0 {
        if let Ok(Mapping::Mapped { pblk, .. }) = map.lookup(fs, inode, lblk - 1) {
            return pblk + 1;
        }
    }
    let group = u64::from((inode.ino.0 - 1) / fs.sb.inodes_per_group);
    fs.sb.group_first_block(group)
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
        let end = offset.checked_add(data.len() as u64).ok_or(Error::TooBig)?;
        // Append-only: opens without O_APPEND were refused, but the kernel's writeback rewrites whole pages,
        // so a write may start before the end with the bytes already there. Only what lies past the end
        // is new; nothing before it is changed.
        let (offset, data) = if inode.has_flag(flags::APPEND) && offset < inode.size {
            let skip = (inode.size - offset).min(data.len() as u64);
            (offset + skip, &data[skip as usize..])
        } else {
            (offset, data)
        };
        if data.is_empty() {
            return self.inode(ino);
        }
        unline(&mut tx, &mut inode)?;
        let bs = u64::from(self.sb.block_size);
        if end.div_ceil(bs) > max_blocks(self, &inode) {
            return Err(Error::TooBig);
        }
        let mut map = MapEdit::load(self, &inode)?;
        let (first, last) = (offset / bs, (end - 1) / bs);
        let mut lblk = first;
        let mut last_goal = goal(self, &inode, &map, first);
        while lblk <= last {
            let span = last - lblk + 1;
            match map.lookup(self, &inode, lblk)? {
                Mapping::Mapped { pblk, len, unwritten: false } => {
                    let n = len.min(span);
                    // Overwrite in place: only the bytes written, no read-modify-write.
                    let (s, e) = ((lblk * bs).max(offset), ((lblk + n) * bs).min(end));
                    self.dev.write_all_at(
                        &data[(s - offset) as usize..(e - offset) as usize],
                        pblk * bs + (s - lblk * bs),
                    )?;
                    last_goal = pblk + n;
                    lblk += n;
                }
                Mapping::Mapped { pblk, len, unwritten: true } => {
                    let n = len.min(span);
                    self.write_blocks(pblk, lblk, n, offset, data)?;
                    map.mark_written(lblk, lblk + n);
                    last_goal = pblk + n;
                    lblk += n;
                }
                Mapping::Hole { len } => {
                    let n = len.unwrap_or(u64::MAX).min(span);
                    let mut done = 0;
                    while done < n {
                        let (pblk, got) = map.allocate(&mut tx, &mut inode, lblk + done, n - done, last_goal, false)?;
                        self.write_blocks(pblk, lblk + done, got, offset, data)?;
                        last_goal = pblk + got;
                        done += got;
                    }
                    lblk += n;
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
        let mut buf = vec![0u8; (n * bs) as usize];
        let (s, e) = ((lblk * bs).max(offset), ((lblk + n) * bs).min(offset + data.len() as u64));
        if s < e {
            buf[(s - lblk * bs) as usize..(e - lblk * bs) as usize]
                .copy_from_slice(&data[(s - offset) as usize..(e - offset) as usize]);
        }
        self.dev.write_all_at(&buf, pblk * bs)?;
        Ok(())
    }

    /// Writes zeros over bytes `from..to` of the file where they are stored (holes and unwritten extents
    /// already read as zeros).
    fn zero_bytes(&self, inode: &Inode, map: &MapEdit, from: u64, to: u64) -> Result<()> {
        let bs = u64::from(self.sb.block_size);
        let mut pos = from;
        while pos < to {
            let lblk = pos / bs;
            let block_end = ((lblk + 1) * bs).min(to);
            if let Mapping::Mapped { pblk, unwritten: false, .. } = map.lookup(self, inode, lblk)? {
                let zeros = vec![0u8; (block_end - pos) as usize];
                self.dev.write_all_at(&zeros, pblk * bs + (pos - lblk * bs))?;
            }
            pos = block_end;
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
        if size.div_ceil(bs) > max_blocks(self, inode) {
            return Err(Error::TooBig);
        }
        if size < inode.size {
            let mut map = MapEdit::load(self, inode)?;
            let keep = size.div_ceil(bs);
            map.remove(tx, inode, keep, u64::MAX)?;
            if size % bs != 0 {
                self.zero_bytes(inode, &map, size, keep * bs)?;
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
        let (full_from, full_to) = (offset.div_ceil(bs), end / bs);
        if mode & (PUNCH_HOLE | ZERO_RANGE) != 0 {
            // Whole blocks inside the range are unmapped; the partial ones at the edges are zeroed.
            if full_from < full_to {
                map.remove(&mut tx, &mut inode, full_from, full_to)?;
                self.zero_bytes(&inode, &map, offset, (full_from * bs).min(end))?;
                self.zero_bytes(&inode, &map, (full_to * bs).max(offset), end)?;
            } else {
                self.zero_bytes(&inode, &map, offset, end)?;
            }
        }
        if mode & PUNCH_HOLE == 0 {
            // Preallocate every hole in the range as unwritten extents (ZERO_RANGE: the whole blocks only;
            // its edges are zeroed above and stay mapped).
            let (from, to) =
                if mode & ZERO_RANGE != 0 { (full_from, full_to) } else { (offset / bs, end.div_ceil(bs)) };
            let mut lblk = from;
            let mut g = goal(self, &inode, &map, from);
            while lblk < to {
                match map.lookup(self, &inode, lblk)? {
                    Mapping::Mapped { len, pblk, .. } => {
                        g = pblk + len;
                        lblk += len.min(to - lblk);
                    }
                    Mapping::Hole { len } => {
                        let n = len.unwrap_or(u64::MAX).min(to - lblk);
                        let mut done = 0;
                        while done < n {
                            let (pblk, got) = map.allocate(&mut tx, &mut inode, lblk + done, n - done, g, true)?;
                            g = pblk + got;
                            done += got;
                        }
                        lblk += n;
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
        let n = (data.len() as u64).div_ceil(bs);
        let mut map = MapEdit::load(self, inode)?;
        let mut last_goal = goal(self, inode, &map, 0);
        let mut done = 0;
        while done < n {
            let (pblk, got) = map.allocate(tx, inode, done, n - done, last_goal, false)?;
            self.write_blocks(pblk, done, got, 0, data)?;
            last_goal = pblk + got;
            done += got;
        }
        map.store(tx, inode, last_goal)?;
        inode.size = data.len() as u64;
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
        inode.dtime = Timestamp::now().sec as u32;
        tx.write_inode(inode)?;
        tx.free_inode(inode.ino, is_dir)?;
        self.inodes.remove(&inode.ino.0);
        Ok(())
    }
}

impl Filesystem {
    /// copy_file_range done inside the engine: read from one file, write to the other.
    pub fn copy_range(&self, src: InodeNo, off_in: u64, dst: InodeNo, off_out: u64, len: u64) -> Result<u64> {
        let data = {
            let _g = self.shared();
            let inode = self.inode(src)?;
            self.read(&inode, off_in, len.min(16 << 20) as usize)?
        };
        if data.is_empty() {
            return Ok(0);
        }
        self.write(dst, off_out, &data)?;
        Ok(data.len() as u64)
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
        let mut block = vec![0u8; fs.sb.block_size as usize];
        block[..data.len()].copy_from_slice(&data);
        fs.dev.write_all_at(&block, pblk * u64::from(fs.sb.block_size))?;
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
