//! Extent trees (`struct ext4_extent_header`, `ext4_extent_idx`, `ext4_extent`): the block map of files
//! with the `EXTENTS` inode flag. The root lives in `i_block`; deeper nodes are blocks of their own that end
//! in a crc32c tail with metadata_csum.

use super::bytes::{le16, le32};
use super::checksum::crc32c;
use super::error::{CorruptKind, Error, Object, Result};
use super::fs::{Filesystem, Mapping};
use super::inode::Inode;
use super::txn::Txn;

pub(super) const EXT4_EXT_MAGIC: u16 = 0xF30A;
/// The kernel never builds trees deeper than this (`EXT4_MAX_EXTENT_DEPTH`); deeper means corruption,
/// and the bound keeps a cyclic tree from looping.
pub const MAX_DEPTH: u16 = 5;
const HEADER_SIZE: usize = 12;
const ENTRY_SIZE: usize = 12;
/// An `ee_len` above this marks an unwritten (preallocated) extent of `ee_len - 32768` blocks.
const EXT_INIT_MAX_LEN: u16 = 32768;

/// `struct ext4_extent_header`.
struct Header {
    entries: usize,
    depth: u16,
}

fn parse_header(node: &[u8], obj: Object) -> Result<Header> {
    let bad = |what| Error::corrupt(obj, what);
    if le16(node, 0) != EXT4_EXT_MAGIC {
        return Err(bad(CorruptKind::BadExtentHeaderMagic));
    }
    let entries = usize::from(le16(node, 2));
    let max = usize::from(le16(node, 4));
    let depth = le16(node, 6);
    if entries > max || HEADER_SIZE + max * ENTRY_SIZE > node.len() {
        return Err(bad(CorruptKind::ExtentNodeEntryCountExceedsItsSize));
    }
    if depth > MAX_DEPTH {
        return Err(bad(CorruptKind::ExtentTreeTooDeep));
    }
    Ok(Header { entries, depth })
}

/// Verifies the `ext4_extent_tail` checksum of a non-root node: crc32c over the node up to the tail.
fn verify_tail(fs: &Filesystem, inode: &Inode, node: &[u8], obj: Object) -> Result<()> {
    if !fs.superblock().has_metadata_csum() {
        return Ok(());
    }
    let tail = HEADER_SIZE + usize::from(le16(node, 4)) * ENTRY_SIZE;
    let covered = node.get(..tail).ok_or_else(|| Error::corrupt(obj, CorruptKind::NoRoomForExtentTail))?;
    if node.len() < tail + 4 || crc32c(inode.csum_seed, covered) != le32(node, tail) {
        return Err(Error::Checksum(obj));
    }
    Ok(())
}

/// Index of the last entry whose first logical block is at most `lblk` (entries are sorted), if any.
fn last_at_or_before(node: &[u8], entries: usize, lblk: u32) -> Option<usize> {
    let first_block = |i: usize| le32(node, HEADER_SIZE + i * ENTRY_SIZE);
    let (mut lo, mut hi) = (0usize, entries);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if first_block(mid) <= lblk { lo = mid + 1 } else { hi = mid }
    }
    lo.checked_sub(1)
}

/// Maps logical block `lblk` of `inode` through its extent tree.
pub fn map(fs: &Filesystem, inode: &Inode, lblk: u64) -> Result<Mapping> {
    let obj = Object::ExtentTree(inode.ino.0);
    let Ok(lblk) = u32::try_from(lblk) else {
        return Ok(Mapping::Hole { len: None }); // extents address 2^32 blocks at most
    };
    let mut block;
    let mut node: &[u8] = &inode.i_block;
    let mut header = parse_header(node, obj)?;
    // The first logical block after the subtree being searched, from the parent's next index entry.
    let mut bound: Option<u32> = None;
    while header.depth > 0 {
        if header.entries == 0 {
            return Err(Error::corrupt(obj, CorruptKind::ExtentIndexNodeWithoutEntries));
        }
        // Like the kernel, a block before the first index entry is searched under the first entry.
        let i = last_at_or_before(node, header.entries, lblk).unwrap_or(0);
        if i + 1 < header.entries {
            let next = le32(node, HEADER_SIZE + (i + 1) * ENTRY_SIZE);
            bound = Some(bound.map_or(next, |b| b.min(next)));
        }
        let e = HEADER_SIZE + i * ENTRY_SIZE;
        let child = u64::from(le32(node, e + 4)) | (u64::from(le16(node, e + 8)) << 32);
        block = fs.meta_block(child, obj)?;
        node = &block;
        verify_tail(fs, inode, node, obj)?;
        let child_header = parse_header(node, obj)?;
        if child_header.depth + 1 != header.depth {
            return Err(Error::corrupt(obj, CorruptKind::ExtentNodeDepthDoesNotMatchItsParent));
        }
        header = child_header;
    }
    let found = last_at_or_before(node, header.entries, lblk);
    if let Some(i) = found {
        let e = HEADER_SIZE + i * ENTRY_SIZE;
        let first = le32(node, e);
        let raw_len = le16(node, e + 4);
        let (len, unwritten) =
            if raw_len > EXT_INIT_MAX_LEN { (raw_len - EXT_INIT_MAX_LEN, true) } else { (raw_len, false) };
        if len == 0 {
            return Err(Error::corrupt(obj, CorruptKind::ZeroLengthExtent));
        }
        let start = u64::from(le32(node, e + 8)) | (u64::from(le16(node, e + 6)) << 32);
        let end = u64::from(first) + u64::from(len);
        if u64::from(lblk) < end {
            // The whole extent must lie inside the filesystem, not just the part from `lblk` on.
            fs.check_range(start, u64::from(len), obj)?;
            let len = end - u64::from(lblk);
            let pblk = start + u64::from(lblk - first);
            return Ok(Mapping::Mapped { pblk, len, unwritten });
        }
    }
    // A hole: it ends where the next extent (or the parent's next subtree) begins.
    let next_index = found.map_or(0, |i| i + 1);
    let next =
        if next_index < header.entries { Some(le32(node, HEADER_SIZE + next_index * ENTRY_SIZE)) } else { bound };
    Ok(Mapping::Hole { len: next.filter(|&n| n > lblk).map(|n| u64::from(n - lblk)) })
}

/// The depth of an inode's extent tree (0: the root in `i_block` holds the extents).
pub fn depth(inode: &Inode) -> Result<u16> {
    Ok(parse_header(&inode.i_block, Object::ExtentTree(inode.ino.0))?.depth)
}

// ---- Writing: the tree is read into a sorted list of extents, changed as a list, and written back. ----

/// One extent: `len` blocks of the file from logical block `lblk`, stored from physical block `pblk`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub lblk: u32,
    pub len: u32,
    pub pblk: u64,
    pub unwritten: bool,
}

impl Extent {
    pub fn end(&self) -> u64 {
        u64::from(self.lblk) + u64::from(self.len)
    }
}

/// Longest initialised extent (`EXT_INIT_MAX_LEN`) and longest unwritten one.
const MAX_INIT: u32 = 32768;
const MAX_UNWRITTEN: u32 = 32767;

/// Every extent of `inode` in logical order, and the tree's own blocks (index and leaf nodes).
pub fn collect(fs: &Filesystem, inode: &Inode) -> Result<(Vec<Extent>, Vec<u64>)> {
    let obj = Object::ExtentTree(inode.ino.0);
    let mut extents = Vec::new();
    let mut tree = Vec::new();
    walk(fs, inode, &inode.i_block, None, &mut extents, &mut (&mut tree, std::collections::HashSet::new()), obj)?;
    for w in extents.windows(2) {
        if w[0].end() > u64::from(w[1].lblk) {
            return Err(Error::corrupt(obj, CorruptKind::ExtentsOverlapOrAreOutOfOrder));
        }
    }
    Ok((extents, tree))
}

fn walk(
    fs: &Filesystem,
    inode: &Inode,
    node: &[u8],
    expect_depth: Option<u16>,
    extents: &mut Vec<Extent>,
    // The tree's blocks in visiting order, and as a set (each may be visited once).
    tree: &mut (&mut Vec<u64>, std::collections::HashSet<u64>),
    obj: Object,
) -> Result<()> {
    let h = parse_header(node, obj)?;
    if expect_depth.is_some_and(|d| d != h.depth) {
        return Err(Error::corrupt(obj, CorruptKind::ExtentNodeDepthDoesNotMatchItsParent));
    }
    for i in 0..h.entries {
        let e = HEADER_SIZE + i * ENTRY_SIZE;
        if h.depth == 0 {
            let raw_len = le16(node, e + 4);
            let (len, unwritten) =
                if raw_len > EXT_INIT_MAX_LEN { (raw_len - EXT_INIT_MAX_LEN, true) } else { (raw_len, false) };
            let pblk = u64::from(le32(node, e + 8)) | (u64::from(le16(node, e + 6)) << 32);
            if len == 0 {
                return Err(Error::corrupt(obj, CorruptKind::ZeroLengthExtent));
            }
            fs.check_range(pblk, u64::from(len), obj)?;
            extents.push(Extent { lblk: le32(node, e), len: u32::from(len), pblk, unwritten });
        } else {
            let child = u64::from(le32(node, e + 4)) | (u64::from(le16(node, e + 8)) << 32);
            // Each tree block is visited once: a block that appears twice is a cycle or a shared node.
            if !tree.1.insert(child) {
                return Err(Error::corrupt(obj, CorruptKind::ExtentTreeBlockReferencedTwice));
            }
            tree.0.push(child);
            let block = fs.meta_block(child, obj)?;
            verify_tail(fs, inode, &block, obj)?;
            walk(fs, inode, &block, Some(h.depth - 1), extents, tree, obj)?;
        }
    }
    Ok(())
}

/// Merges neighbours that continue each other and splits extents longer than the format allows.
pub fn normalize(list: &mut Vec<Extent>) {
    let mut out: Vec<Extent> = Vec::with_capacity(list.len());
    for e in list.drain(..) {
        if let Some(last) = out.last_mut() {
            let max = if e.unwritten { MAX_UNWRITTEN } else { MAX_INIT };
            if last.unwritten == e.unwritten
                && last.end() == u64::from(e.lblk)
                && last.pblk + u64::from(last.len) == e.pblk
                && last.len + e.len <= max
            {
                last.len += e.len;
                continue;
            }
        }
        out.push(e);
    }
    // Split what is too long (only possible for extents built by callers).
    let mut split = Vec::with_capacity(out.len());
    for mut e in out {
        let max = if e.unwritten { MAX_UNWRITTEN } else { MAX_INIT };
        while e.len > max {
            split.push(Extent { len: max, ..e });
            e.lblk += max;
            e.pblk += u64::from(max);
            e.len -= max;
        }
        split.push(e);
    }
    *list = split;
}

/// Removes the mapping of logical blocks `from..to` from `list`; returns the freed physical runs.
pub fn remove_range(list: &mut Vec<Extent>, from: u64, to: u64) -> Vec<(u64, u64)> {
    let mut freed = Vec::new();
    let mut out = Vec::with_capacity(list.len() + 1);
    for e in list.drain(..) {
        let (s, t) = (u64::from(e.lblk), e.end());
        if t <= from || s >= to {
            out.push(e);
            continue;
        }
        if s < from {
            out.push(Extent { len: (from - s) as u32, ..e });
        }
        let cut_start = s.max(from);
        let cut_end = t.min(to);
        freed.push((e.pblk + (cut_start - s), cut_end - cut_start));
        if t > to {
            out.push(Extent { lblk: to as u32, len: (t - to) as u32, pblk: e.pblk + (to - s), unwritten: e.unwritten });
        }
    }
    *list = out;
    freed
}

/// Inserts `e` into a hole of `list`, keeping it sorted and merged.
pub fn insert(list: &mut Vec<Extent>, e: Extent) {
    let at = list.partition_point(|x| x.lblk < e.lblk);
    list.insert(at, e);
    normalize(list);
}

/// The extent of `list` holding logical block `lblk`, or the next one after it.
pub fn find(list: &[Extent], lblk: u64) -> (Option<&Extent>, Option<&Extent>) {
    let at = list.partition_point(|x| x.end() <= lblk);
    match list.get(at) {
        Some(e) if u64::from(e.lblk) <= lblk => (Some(e), list.get(at + 1)),
        next => (None, next),
    }
}

/// Marks logical blocks `from..to` written where they are unwritten (splitting extents as needed).
pub fn mark_written(list: &mut Vec<Extent>, from: u64, to: u64) {
    let mut out = Vec::with_capacity(list.len() + 2);
    for e in list.drain(..) {
        let (s, t) = (u64::from(e.lblk), e.end());
        if !e.unwritten || t <= from || s >= to {
            out.push(e);
            continue;
        }
        let (a, b) = (s.max(from), t.min(to));
        if s < a {
            out.push(Extent { len: (a - s) as u32, ..e });
        }
        out.push(Extent { lblk: a as u32, len: (b - a) as u32, pblk: e.pblk + (a - s), unwritten: false });
        if b < t {
            out.push(Extent { lblk: b as u32, len: (t - b) as u32, pblk: e.pblk + (b - s), unwritten: true });
        }
    }
    *list = out;
    normalize(list);
}

fn put_entry_leaf(node: &mut [u8], i: usize, e: &Extent) {
    use super::bytes_mut::{put16, put32};
    let o = HEADER_SIZE + i * ENTRY_SIZE;
    put32(node, o, e.lblk);
    let len = if e.unwritten { e.len + u32::from(EXT_INIT_MAX_LEN) } else { e.len };
    put16(node, o + 4, len as u16);
    put16(node, o + 6, (e.pblk >> 32) as u16);
    put32(node, o + 8, e.pblk as u32);
}

fn put_entry_index(node: &mut [u8], i: usize, first: u32, child: u64) {
    use super::bytes_mut::{put16, put32};
    let o = HEADER_SIZE + i * ENTRY_SIZE;
    put32(node, o, first);
    put32(node, o + 4, child as u32);
    put16(node, o + 8, (child >> 32) as u16);
    put16(node, o + 10, 0);
}

fn put_header(node: &mut [u8], entries: usize, max: usize, depth: u16) {
    use super::bytes_mut::{put16, put32};
    put16(node, 0, EXT4_EXT_MAGIC);
    put16(node, 2, entries as u16);
    put16(node, 4, max as u16);
    put16(node, 6, depth);
    put32(node, 8, 0);
}

/// An empty extent tree root, for a new file.
pub fn empty_root() -> [u8; 60] {
    let mut r = [0u8; 60];
    put_header(&mut r, 0, 4, 0);
    r
}

/// Writes `list` back as `inode`'s extent tree, reusing the old tree blocks `old_tree` where it can and
/// allocating near `goal` otherwise. Adjusts `i_blocks` for the tree's blocks; the caller writes the inode.
pub fn store(tx: &mut Txn<'_>, inode: &mut Inode, list: &[Extent], mut old_tree: Vec<u64>, goal: u64) -> Result<()> {
    let fs = tx.fs();
    let bs = fs.block_size() as usize;
    let per_node = (bs - HEADER_SIZE) / ENTRY_SIZE;
    const ROOT_MAX: usize = 4;
    let old_count = old_tree.len() as u64;
    let mut used = 0u64;

    // Level 0 entries: the extents. Each pass up groups entries into nodes until the root can hold them.
    enum Entry {
        Leaf(Extent),
        Index(u32, u64),
    }
    let mut level: Vec<Entry> = list.iter().copied().map(Entry::Leaf).collect();
    let mut depth = 0u16;
    old_tree.reverse(); // reuse in the original order (pop from the back)
    while level.len() > ROOT_MAX {
        let mut next = Vec::with_capacity(level.len().div_ceil(per_node));
        for chunk in level.chunks(per_node) {
            let nr = match old_tree.pop() {
                Some(nr) => nr,
                None => tx.alloc_meta_block(goal)?,
            };
            used += 1;
            let mut node = vec![0u8; bs];
            put_header(&mut node, chunk.len(), per_node, depth);
            let first = match &chunk[0] {
                Entry::Leaf(e) => e.lblk,
                Entry::Index(f, _) => *f,
            };
            for (i, ent) in chunk.iter().enumerate() {
                match ent {
                    Entry::Leaf(e) => put_entry_leaf(&mut node, i, e),
                    Entry::Index(f, c) => put_entry_index(&mut node, i, *f, *c),
                }
            }
            if fs.superblock().has_metadata_csum() {
                let tail = HEADER_SIZE + per_node * ENTRY_SIZE;
                let c = crc32c(inode.csum_seed, &node[..tail]);
                super::bytes_mut::put32(&mut node, tail, c);
            }
            tx.put(nr, node);
            next.push(Entry::Index(first, nr));
        }
        level = next;
        depth += 1;
        if depth > MAX_DEPTH {
            return Err(Error::TooBig);
        }
    }
    let mut root = [0u8; 60];
    put_header(&mut root, level.len(), ROOT_MAX, depth);
    for (i, ent) in level.iter().enumerate() {
        match ent {
            Entry::Leaf(e) => put_entry_leaf(&mut root, i, e),
            Entry::Index(f, c) => put_entry_index(&mut root, i, *f, *c),
        }
    }
    inode.i_block = root;
    for nr in old_tree {
        tx.free_blocks(nr, 1)?;
    }
    // Each tree block takes a cluster of its own.
    let per_block = fs.sb.cluster_sectors();
    inode.blocks_512 = (inode.blocks_512 + used * per_block).saturating_sub(old_count * per_block);
    Ok(())
}
