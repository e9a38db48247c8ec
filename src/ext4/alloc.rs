//! Block and inode allocation from the group bitmaps.
//!
//! A block bitmap has one bit per cluster: a block without bigalloc, `2^cluster_bits` blocks with it,
//! and the group descriptors count free clusters. Everything here takes and returns block numbers; a
//! range of blocks stands for the clusters it touches.
//!
//! Data goes near a goal block (the file's previous block, or its inode's group) in the longest free run
//! found there, so files stay contiguous; new directories are spread over groups with room (a simple form
//! of the kernel's Orlov allocator), and files are placed in their directory's group. Groups whose bitmaps
//! were never initialised (`BLOCK_UNINIT`, `INODE_UNINIT`) get them built on first use, and every change
//! keeps the free counts and the bitmap and descriptor checksums right.

use std::ops::Range;

use super::block_group::{self, BG_BLOCK_UNINIT, BG_INODE_UNINIT};
use super::bytes::index;
use super::error::{CorruptKind, Error, Object, Result};
use super::features::RO_COMPAT_GDT_CSUM;
use super::inode::InodeNo;
use super::superblock::Superblock;
use super::txn::Txn;

/// The byte of a bitmap holding bit `i` (`None` past anything in memory, which no bitmap reaches).
fn byte_of(i: u64) -> Option<usize> {
    usize::try_from(i / 8).ok()
}

fn bit(b: &[u8], i: u64) -> bool {
    byte_of(i).and_then(|n| b.get(n)).is_some_and(|byte| byte & (1 << (i % 8)) != 0)
}

fn set_bit(b: &mut [u8], i: u64, on: bool) {
    if let Some(byte) = byte_of(i).and_then(|n| b.get_mut(n)) {
        if on { *byte |= 1 << (i % 8) } else { *byte &= !(1 << (i % 8)) }
    }
}

/// Sets every bit from `from` to the end of the bitmap block (bits past the group's end are "in use").
fn mark_end(b: &mut [u8], from: u64) {
    // A bitmap is one block (at most 64 KiB): its bit count fits with room to spare.
    let bits = u64::try_from(b.len()).unwrap_or(u64::MAX).saturating_mul(8);
    for i in from..bits {
        set_bit(b, i, true);
    }
}

/// First clear bit in `from..to`, skipping full bytes.
fn first_clear(b: &[u8], from: u64, to: u64) -> Option<u64> {
    let mut i = from;
    while i < to {
        // `i < to`, so neither step below passes `to`, let alone `u64::MAX`.
        if i.is_multiple_of(8)
            && i.checked_add(8).is_some_and(|e| e <= to)
            && byte_of(i).and_then(|n| b.get(n)) == Some(&0xFF)
        {
            i = i.saturating_add(8);
            continue;
        }
        if !bit(b, i) {
            return Some(i);
        }
        i = i.saturating_add(1);
    }
    None
}

/// The end of the run of clear bits that starts at clear bit `first`: at most `max` bits (at least one)
/// and not past `to`.
fn clear_run_end(b: &[u8], first: u64, to: u64, max: u64) -> u64 {
    let limit = to.min(first.saturating_add(max.max(1)));
    (first..limit).find(|&i| bit(b, i)).unwrap_or(limit)
}

/// Where group `g` lies: the blocks its bitmap's bits stand for.
struct Geometry {
    /// The group's first block.
    base: u64,
    /// One past its last block (the last group may be short): inside the filesystem.
    end: u64,
    /// log2 of the blocks per cluster.
    bits: u32,
}

impl Geometry {
    fn of(sb: &Superblock, g: u32) -> Geometry {
        let base = sb.group_first_block(u64::from(g));
        // blocks_in_group stops at the block count: no overflow.
        Geometry { base, end: base.saturating_add(sb.blocks_in_group(u64::from(g))), bits: sb.cluster_bits() }
    }

    /// The first block of cluster `c`: a bit of the group's bitmap (below 2^19, shifted by at most 20
    /// bits), so this is well inside a `u64`.
    fn block(&self, c: u64) -> u64 {
        self.base.saturating_add(c << self.bits)
    }

    /// The cluster holding block `b`, which lies in the group.
    fn cluster(&self, b: u64) -> u64 {
        b.saturating_sub(self.base) >> self.bits
    }

    /// The clusters that blocks `s..e` (inside the group, `s < e`) touch.
    fn clusters(&self, s: u64, e: u64) -> Range<u64> {
        self.cluster(s)..e.saturating_sub(self.base).div_ceil(1 << self.bits)
    }
}

/// A group number: below the group count, which fits in 32 bits (the inode count, a `u32`, is inodes
/// per group times groups; the superblock checks it).
fn group_no(g: u64) -> Result<u32> {
    u32::try_from(g).map_err(|_| Error::corrupt(Object::Superblock, CorruptKind::NoSuchGroup))
}

/// The blocks of one group's inode table.
fn inode_table_blocks(sb: &Superblock) -> u64 {
    // Two `u32`s: their product fits in a `u64`.
    u64::from(sb.inodes_per_group).saturating_mul(u64::from(sb.inode_size)).div_ceil(u64::from(sb.block_size))
}

/// The `count` groups from `first` on, wrapping round to group 0: the order the allocators try them in.
fn groups_from(first: u32, count: u32) -> impl Iterator<Item = u32> {
    let first = first.checked_rem(count).unwrap_or(0);
    (first..count).chain(0..first)
}

/// The group of inode `ino` and its bit in the group's inode bitmap.
fn inode_place(sb: &Superblock, ino: InodeNo) -> Result<(u32, u32)> {
    let ipg = sb.inodes_per_group;
    ino.0
        .checked_sub(1)
        .and_then(|n| n.checked_div(ipg).zip(n.checked_rem(ipg)))
        .ok_or(Error::corrupt(Object::Inode(ino.0), CorruptKind::InodeNumberOutOfRange))
}

/// The number of inode `i` of group `g`: within the inode count (a `u32`) for a group that exists.
fn inode_number(sb: &Superblock, g: u32, i: u32) -> Result<InodeNo> {
    g.checked_mul(sb.inodes_per_group)
        .and_then(|n| n.checked_add(i))
        .and_then(|n| n.checked_add(1))
        .map(InodeNo)
        .ok_or(Error::corrupt(Object::GroupDescriptor(g), CorruptKind::InodeNumberOutOfRange))
}

/// The part of a block range inside one group: the bits of the group's bitmap for the clusters it
/// touches.
struct GroupSpan {
    group: u32,
    bits: Range<u64>,
}

impl Txn<'_> {
    fn uses_group_csums(&self) -> bool {
        let sb = &self.fs().sb;
        sb.has_metadata_csum() || sb.has_ro_compat(RO_COMPAT_GDT_CSUM)
    }

    /// Group `g`'s block bitmap (block number and contents), built when the group has none yet.
    fn block_bitmap(&mut self, g: u32) -> Result<(u64, Vec<u8>)> {
        let fs = self.fs();
        let sb = &fs.sb;
        let d = fs.group(g).ok_or(Error::corrupt(Object::GroupDescriptor(g), CorruptKind::NoSuchGroup))?;
        let obj = Object::GroupDescriptor(g);
        fs.check_range(d.block_bitmap, 1, obj)?;
        if d.flags & BG_BLOCK_UNINIT == 0 || !self.uses_group_csums() {
            return Ok((d.block_bitmap, self.block(d.block_bitmap, obj)?));
        }
        // As the kernel's ext4_init_block_bitmap: the superblock copy and descriptor table, this group's own
        // bitmaps and inode table when they lie inside it, and the bits past the group's end.
        let mut b = vec![0u8; index(sb.block_size)];
        let base = sb.group_first_block(u64::from(g));
        let bits = sb.cluster_bits();
        for i in 0..sb.base_meta_blocks(u64::from(g)).div_ceil(sb.cluster_ratio()) {
            set_bit(&mut b, i, true);
        }
        let own = [(d.block_bitmap, 1), (d.inode_bitmap, 1), (d.inode_table, inode_table_blocks(sb))];
        for (start, len) in own {
            for blk in start..start.saturating_add(len) {
                // A block before the group's first (block 0 under group 0 with 1 KiB blocks) is not in it.
                match blk.checked_sub(base) {
                    Some(off) if sb.group_of_block(blk) == u64::from(g) => set_bit(&mut b, off >> bits, true),
                    _ => {}
                }
            }
        }
        mark_end(&mut b, sb.clusters_in_group(u64::from(g)));
        self.update_group(g, |d| d.flags &= !BG_BLOCK_UNINIT)?;
        Ok((d.block_bitmap, b))
    }

    fn put_block_bitmap(&mut self, g: u32, nr: u64, b: Vec<u8>) -> Result<()> {
        let sb = &self.fs().sb;
        let csum = block_group::bitmap_checksum(sb, &b, sb.clusters_per_group());
        self.put(nr, b);
        self.update_group(g, |d| d.block_bitmap_csum = csum)
    }

    /// One block for metadata (an extent tree node, an xattr block, an indirect block) near `goal`. With
    /// bigalloc it takes a cluster of its own, as the kernel's `ext4_new_meta_blocks`: the caller charges
    /// the owner [`Superblock::cluster_sectors`](super::superblock::Superblock::cluster_sectors).
    pub fn alloc_meta_block(&mut self, goal: u64) -> Result<u64> {
        Ok(self.alloc_clusters(goal, 1)?.0)
    }

    /// Allocates up to `want` contiguous clusters, as near block `goal` as possible: returns the first
    /// block of the first cluster and the number of clusters allocated (at least one), or `ENOSPC`.
    pub fn alloc_clusters(&mut self, goal: u64, want: u64) -> Result<(u64, u64)> {
        let sb = &self.fs().sb;
        let groups = group_no(sb.group_count())?;
        // The superblock keeps the block count above the first data block: the range is not empty.
        let goal = goal.clamp(u64::from(sb.first_data_block), sb.blocks_count.saturating_sub(1));
        let g0 = group_no(sb.group_of_block(goal))?;
        for g in groups_from(g0, groups) {
            let Some(d) = self.fs().group(g) else {
                continue;
            };
            if d.free_blocks_count == 0 || !d.checksum_ok {
                continue;
            }
            let (nr, mut bm) = self.block_bitmap(g)?;
            let geo = Geometry::of(sb, g);
            let end = sb.clusters_in_group(u64::from(g));
            let search = self.without_busy(&bm, g);
            // In the goal's group, search from the goal onwards first, then from the group's start.
            let start = if g == g0 { geo.cluster(goal) } else { 0 };
            let Some(first) = first_clear(&search, start, end).or_else(|| first_clear(&search, 0, start.min(end)))
            else {
                continue;
            };
            let run = first..clear_run_end(&search, first, end, want);
            // A run inside one group: fewer clusters than a bitmap has bits.
            let len = run.end.saturating_sub(run.start);
            let blk = geo.block(first);
            self.refuse_metadata(g, blk, len << geo.bits)?;
            let taken = u32::try_from(len)
                .ok()
                .filter(|&n| n <= d.free_blocks_count)
                .ok_or(Error::corrupt(Object::GroupDescriptor(g), CorruptKind::FreeBlockCountBelowBitmap))?;
            for i in run {
                set_bit(&mut bm, i, true);
            }
            self.put_block_bitmap(g, nr, bm)?;
            // Checked above: the count holds `taken` clusters.
            self.update_group(g, |d| d.free_blocks_count = d.free_blocks_count.saturating_sub(taken))?;
            self.update_state(false, |s| s.free_clusters = s.free_clusters.saturating_sub(len));
            return Ok((blk, len));
        }
        // Blocks freed by operations not yet committed to the journal become free for good at the commit.
        if self.fs().log.as_ref().is_some_and(|log| log.has_busy()) {
            self.fs().commit_journal()?;
            return self.alloc_clusters(goal, want);
        }
        Err(Error::NoSpace)
    }

    /// Group `g`'s block bitmap `bm` with the clusters freed since the last journal commit marked in
    /// use: they are not handed out before that commit (a crash before it would leave their old owner
    /// pointing at the new owner's contents).
    fn without_busy<'b>(&self, bm: &'b [u8], g: u32) -> std::borrow::Cow<'b, [u8]> {
        let Some(log) = &self.fs().log else {
            return std::borrow::Cow::Borrowed(bm);
        };
        let geo = Geometry::of(&self.fs().sb, g);
        let (base, end) = (geo.base, geo.end);
        let mut ranges = log.busy_in(base, end);
        ranges.extend(self.freed.iter().filter_map(|&(s, l)| {
            let (s, e) = (s.max(base), s.saturating_add(l).min(end));
            (s < e).then_some((s, e))
        }));
        if ranges.is_empty() {
            return std::borrow::Cow::Borrowed(bm);
        }
        let mut masked = bm.to_vec();
        // Every range is clipped to the group and not empty.
        for (s, e) in ranges {
            for c in geo.clusters(s, e) {
                set_bit(&mut masked, c, true);
            }
        }
        std::borrow::Cow::Owned(masked)
    }

    /// Group `g`'s runs of free blocks (first block, count: whole free clusters), blocks freed since the
    /// last commit counted as in use; `None` for a group that cannot be trusted (damaged descriptor) or
    /// has none free.
    pub(crate) fn free_runs(&mut self, g: u32) -> Result<Option<Vec<(u64, u64)>>> {
        let sb = &self.fs().sb;
        let Some(d) = self.fs().group(g) else { return Ok(None) };
        if d.free_blocks_count == 0 || !d.checksum_ok {
            return Ok(None);
        }
        let (_, bm) = self.block_bitmap(g)?;
        let geo = Geometry::of(sb, g);
        let len = sb.clusters_in_group(u64::from(g));
        let search = self.without_busy(&bm, g);
        let mut runs = Vec::new();
        let mut i = 0;
        while let Some(first) = first_clear(&search, i, len) {
            let stop = clear_run_end(&search, first, len, u64::MAX);
            // The last cluster may run past the group's end; the run stops there.
            let (s, e) = (geo.block(first), geo.block(stop).min(geo.end));
            runs.push((s, e.saturating_sub(s)));
            i = stop;
        }
        Ok(Some(runs))
    }

    /// A damaged bitmap must not hand out the group's own metadata: stop before the damage spreads.
    fn refuse_metadata(&self, g: u32, blk: u64, len: u64) -> Result<()> {
        let sb = &self.fs().sb;
        let Some(d) = self.fs().group(g) else {
            return Ok(());
        };
        let base = sb.group_first_block(u64::from(g));
        let overlaps = |s: u64, l: u64| blk < s.saturating_add(l) && s < blk.saturating_add(len);
        if overlaps(d.block_bitmap, 1)
            || overlaps(d.inode_bitmap, 1)
            || overlaps(d.inode_table, inode_table_blocks(sb))
            || overlaps(base, sb.base_meta_blocks(u64::from(g)))
        {
            return Err(Error::corrupt(Object::GroupDescriptor(g), CorruptKind::BlockBitmapMarksMetadataAsFree));
        }
        Ok(())
    }

    /// Blocks `start..start + len` (checked to lie inside the filesystem) cut at group boundaries
    /// (groups hold whole clusters).
    fn group_spans(&self, start: u64, len: u64) -> Result<Vec<GroupSpan>> {
        let sb = &self.fs().sb;
        self.fs().check_range(start, len, Object::GroupDescriptor(0))?;
        // check_range: the range ends inside the filesystem.
        let end = start.saturating_add(len);
        let mut spans = Vec::new();
        let mut b = start;
        while b < end {
            let g = group_no(sb.group_of_block(b))?;
            let geo = Geometry::of(sb, g);
            // `b` lies in group `g`, so the group ends after it: every span holds at least one block.
            let stop = end.min(geo.end);
            spans.push(GroupSpan { group: g, bits: geo.clusters(b, stop) });
            b = stop;
        }
        Ok(spans)
    }

    /// Frees the clusters holding blocks `start..start + len` (they may span groups). With bigalloc the
    /// caller knows no block of them is still in use (see `MapEdit::remove`).
    pub fn free_blocks(&mut self, start: u64, len: u64) -> Result<()> {
        for span in self.group_spans(start, len)? {
            let (nr, mut bm) = self.block_bitmap(span.group)?;
            for i in span.bits.clone() {
                if !bit(&bm, i) {
                    return Err(Error::corrupt(
                        Object::GroupDescriptor(span.group),
                        CorruptKind::FreeingBlockThatIsAlreadyFree,
                    ));
                }
                set_bit(&mut bm, i, false);
            }
            // Clusters of one group: fewer than a bitmap has bits.
            let n = span.bits.end.saturating_sub(span.bits.start);
            self.put_block_bitmap(span.group, nr, bm)?;
            // The whole clusters are free now (kept from reuse until the commit, then discarded); the last
            // cluster may run past the group's end.
            let geo = Geometry::of(&self.fs().sb, span.group);
            let (start, end) = (geo.block(span.bits.start), geo.block(span.bits.end).min(geo.end));
            self.freed.push((start, end.saturating_sub(start)));
            let count = u32::try_from(n).unwrap_or(u32::MAX);
            // The counts cannot exceed the clusters there are, far below either type's range.
            self.update_group(span.group, |d| d.free_blocks_count = d.free_blocks_count.saturating_add(count))?;
            self.update_state(false, |s| s.free_clusters = s.free_clusters.saturating_add(n));
        }
        Ok(())
    }

    /// Sets blocks `start..start + len` to `used` in the bitmaps whatever they said, counting only the bits
    /// that change: for a replay that knows the final owner of every block it touched (fast commits),
    /// where a block may already be in the state asked for.
    pub(crate) fn set_blocks_state(&mut self, start: u64, len: u64, used: bool) -> Result<()> {
        for span in self.group_spans(start, len)? {
            let g = span.group;
            let (nr, mut bm) = self.block_bitmap(g)?;
            let mut changed = 0u32;
            for i in span.bits {
                if bit(&bm, i) != used {
                    set_bit(&mut bm, i, used);
                    // At most a group's clusters.
                    changed = changed.saturating_add(1);
                }
            }
            if changed > 0 {
                self.put_block_bitmap(g, nr, bm)?;
                self.update_group(g, |d| {
                    d.free_blocks_count = if used {
                        d.free_blocks_count.saturating_sub(changed)
                    } else {
                        d.free_blocks_count.saturating_add(changed)
                    }
                })?;
                self.update_state(false, |s| {
                    s.free_clusters = if used {
                        s.free_clusters.saturating_sub(u64::from(changed))
                    } else {
                        s.free_clusters.saturating_add(u64::from(changed))
                    }
                });
            }
        }
        Ok(())
    }

    /// Group `g`'s inode bitmap, built when the group has none yet.
    fn inode_bitmap(&mut self, g: u32) -> Result<(u64, Vec<u8>)> {
        let fs = self.fs();
        let d = fs.group(g).ok_or(Error::corrupt(Object::GroupDescriptor(g), CorruptKind::NoSuchGroup))?;
        let obj = Object::GroupDescriptor(g);
        fs.check_range(d.inode_bitmap, 1, obj)?;
        if d.flags & BG_INODE_UNINIT == 0 || !self.uses_group_csums() {
            return Ok((d.inode_bitmap, self.block(d.inode_bitmap, obj)?));
        }
        let mut b = vec![0u8; index(fs.sb.block_size)];
        mark_end(&mut b, u64::from(fs.sb.inodes_per_group));
        self.update_group(g, |d| d.flags &= !BG_INODE_UNINIT)?;
        Ok((d.inode_bitmap, b))
    }

    fn put_inode_bitmap(&mut self, g: u32, nr: u64, b: Vec<u8>) -> Result<()> {
        let sb = &self.fs().sb;
        let csum = block_group::bitmap_checksum(sb, &b, sb.inodes_per_group);
        self.put(nr, b);
        self.update_group(g, |d| d.inode_bitmap_csum = csum)
    }

    /// Picks the group for a new inode: directories go to a group with more free inodes and blocks than
    /// average and the fewest directories (spreading the tree); other files stay in their parent's group.
    fn inode_group(&self, parent_group: u32, is_dir: bool) -> Option<u32> {
        let groups = self.fs().groups.read().unwrap_or_else(|p| p.into_inner());
        // One descriptor per group number, which fits in 32 bits.
        let n = u32::try_from(groups.len()).unwrap_or(u32::MAX);
        let usable = |g: u32| groups.get(index(g)).filter(|d| d.free_inodes_count > 0 && d.checksum_ok);
        if is_dir && n > 1 {
            // Sums of 32-bit counts over fewer than 2^32 groups: below 2^64. `n > 1`: the divisions
            // do not fail.
            let avg = |sum: u64| sum.checked_div(u64::from(n)).unwrap_or(0);
            let avg_inodes = avg(groups.iter().map(|d| u64::from(d.free_inodes_count)).sum());
            let avg_blocks = avg(groups.iter().map(|d| u64::from(d.free_blocks_count)).sum());
            let best = groups_from(parent_group, n)
                .filter_map(|g| usable(g).map(|d| (g, d)))
                .filter(|(_, d)| {
                    u64::from(d.free_inodes_count) >= avg_inodes && u64::from(d.free_blocks_count) >= avg_blocks
                })
                .min_by_key(|(_, d)| (d.used_dirs_count, std::cmp::Reverse(d.free_blocks_count)));
            if let Some((g, _)) = best {
                return Some(g);
            }
        }
        groups_from(parent_group, n).find(|&g| usable(g).is_some())
    }

    /// Allocates an inode number for a new file (`is_dir` for directories), near `parent_group`.
    pub fn alloc_inode(&mut self, parent_group: u32, is_dir: bool) -> Result<InodeNo> {
        let sb = &self.fs().sb;
        let g = self.inode_group(parent_group, is_dir).ok_or(Error::NoSpace)?;
        let (nr, mut bm) = self.inode_bitmap(g)?;
        // A bit below the inodes per group, a `u32`.
        let Some(i) = first_clear(&bm, 0, u64::from(sb.inodes_per_group)).and_then(|i| u32::try_from(i).ok()) else {
            // The descriptor claims free inodes the bitmap lacks: corruption of this group.
            return Err(Error::corrupt(Object::GroupDescriptor(g), CorruptKind::FreeInodeCountAboveBitmap));
        };
        let ino = inode_number(sb, g, i)?;
        if ino.0 < sb.first_ino {
            return Err(Error::corrupt(Object::GroupDescriptor(g), CorruptKind::InodeBitmapMarksReservedInodeFree));
        }
        set_bit(&mut bm, u64::from(i), true);
        self.put_inode_bitmap(g, nr, bm)?;
        self.count_new_inode(g, i, is_dir)?;
        self.allocated_inode(ino);
        Ok(ino)
    }

    /// Marks inode `ino` in use when its bit is clear (the kernel's `ext4_mark_inode_used`, for replay):
    /// a given number, where [`Txn::alloc_inode`] picks one. When the bit was already set and the inode
    /// was (`was_dir`) or now is a directory but not both, the group's directory count follows (a
    /// replay that gives a removed directory's number to a file, or the reverse).
    pub(crate) fn claim_inode(&mut self, ino: InodeNo, is_dir: bool, was_dir: bool) -> Result<()> {
        let sb = &self.fs().sb;
        if ino.0 == 0 || ino.0 > sb.inodes_count {
            return Err(Error::corrupt(Object::Inode(ino.0), CorruptKind::InodeNumberOutOfRange));
        }
        if ino.0 < sb.first_ino {
            return Ok(()); // a reserved inode is always in use
        }
        let (g, i) = inode_place(sb, ino)?;
        let (nr, mut bm) = self.inode_bitmap(g)?;
        if bit(&bm, u64::from(i)) {
            if is_dir != was_dir {
                self.update_group(g, |d| {
                    d.used_dirs_count =
                        if is_dir { d.used_dirs_count.saturating_add(1) } else { d.used_dirs_count.saturating_sub(1) }
                })?;
            }
            return Ok(());
        }
        set_bit(&mut bm, u64::from(i), true);
        self.put_inode_bitmap(g, nr, bm)?;
        self.count_new_inode(g, i, is_dir)?;
        self.allocated_inode(ino);
        Ok(())
    }

    /// The descriptor and superblock counts of inode `i` of group `g` newly in use.
    fn count_new_inode(&mut self, g: u32, i: u32, is_dir: bool) -> Result<()> {
        let ipg = self.fs().sb.inodes_per_group;
        let csums = self.uses_group_csums();
        self.update_group(g, |d| {
            d.free_inodes_count = d.free_inodes_count.saturating_sub(1);
            if is_dir {
                // No more directories than inodes in the group.
                d.used_dirs_count = d.used_dirs_count.saturating_add(1);
            }
            // Inodes past `ipg - itable_unused` are known to be unused: keep the mark behind the new one
            // (`i` is below `ipg`, so the subtraction does not saturate).
            if csums && i >= ipg.saturating_sub(d.itable_unused) {
                d.itable_unused = ipg.saturating_sub(i).saturating_sub(1);
            }
        })?;
        self.update_state(false, |s| s.free_inodes = s.free_inodes.saturating_sub(1));
        Ok(())
    }

    /// Returns inode `ino` to its group's bitmap.
    pub fn free_inode(&mut self, ino: InodeNo, is_dir: bool) -> Result<()> {
        let (g, i) = inode_place(&self.fs().sb, ino)?;
        let i = u64::from(i);
        let (nr, mut bm) = self.inode_bitmap(g)?;
        if !bit(&bm, i) {
            return Err(Error::corrupt(Object::Inode(ino.0), CorruptKind::FreeingInodeThatIsAlreadyFree));
        }
        self.freeing_inode(ino);
        set_bit(&mut bm, i, false);
        self.put_inode_bitmap(g, nr, bm)?;
        self.update_group(g, |d| {
            d.free_inodes_count = d.free_inodes_count.saturating_add(1);
            if is_dir {
                d.used_dirs_count = d.used_dirs_count.saturating_sub(1);
            }
        })?;
        self.update_state(false, |s| s.free_inodes = s.free_inodes.saturating_add(1));
        Ok(())
    }
}
