//! Extent trees (`struct ext4_extent_header`, `ext4_extent_idx`, `ext4_extent`): the block map of files
//! with the `EXTENTS` inode flag. The root lives in `i_block`; deeper nodes are blocks of their own that end
//! in a crc32c tail with metadata_csum.

use super::bytes::{le16, le32};
use super::checksum::crc32c;
use super::error::{CorruptKind, Error, Object, Result};
use super::fs::{Filesystem, Mapping};
use super::inode::Inode;

pub(super) const EXT4_EXT_MAGIC: u16 = 0xF30A;
/// The kernel never builds trees deeper than this (`EXT4_MAX_EXTENT_DEPTH`); deeper means corruption,
/// and the bound keeps a cyclic tree from looping.
pub const MAX_DEPTH: u16 = 5;
pub(super) const HEADER_SIZE: usize = 12;
pub(super) const ENTRY_SIZE: usize = 12;
/// An `ee_len` above this marks an unwritten (preallocated) extent of `ee_len - 32768` blocks.
pub(super) const EXT_INIT_MAX_LEN: u16 = 32768;

/// `struct ext4_extent_header`.
struct Header {
    entries: usize,
    depth: u16,
}

/// Where entry `i` of a node starts (after the 12-byte header), if the offset is representable.
fn entry_offset(i: usize) -> Option<usize> {
    i.checked_mul(ENTRY_SIZE)?.checked_add(HEADER_SIZE)
}

/// Entry `i` of a node, from its first byte on (empty past the node: its fields then read as zero,
/// which the checks refuse).
fn entry(node: &[u8], i: usize) -> &[u8] {
    entry_offset(i).and_then(|o| node.get(o..)).unwrap_or_default()
}

/// `ee_block` / `ei_block`: the first logical block an entry covers.
fn first_block(e: &[u8]) -> u32 {
    le32(e, 0)
}

/// `ei_leaf_lo` / `ei_leaf_hi`: the child block of an index entry.
fn child_block(e: &[u8]) -> u64 {
    u64::from(le32(e, 4)) | (u64::from(le16(e, 8)) << 32)
}

/// A leaf entry's length and whether it is unwritten (`ee_len`), and its first physical block
/// (`ee_start_lo` / `ee_start_hi`).
fn leaf_extent(e: &[u8]) -> (u16, bool, u64) {
    let raw_len = le16(e, 4);
    let start = u64::from(le32(e, 8)) | (u64::from(le16(e, 6)) << 32);
    match raw_len.checked_sub(EXT_INIT_MAX_LEN).filter(|&n| n > 0) {
        Some(len) => (len, true, start),
        None => (raw_len, false, start),
    }
}

fn parse_header(node: &[u8], obj: Object) -> Result<Header> {
    let bad = |what| Error::corrupt(obj, what);
    if le16(node, 0) != EXT4_EXT_MAGIC {
        return Err(bad(CorruptKind::BadExtentHeaderMagic));
    }
    let entries = usize::from(le16(node, 2));
    let max = usize::from(le16(node, 4));
    let depth = le16(node, 6);
    if entries > max || entry_offset(max).is_none_or(|end| end > node.len()) {
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
    let no_room = || Error::corrupt(obj, CorruptKind::NoRoomForExtentTail);
    let tail = entry_offset(usize::from(le16(node, 4))).ok_or_else(no_room)?;
    let (covered, stored) = node.split_at_checked(tail).ok_or_else(no_room)?;
    if stored.len() < 4 || crc32c(inode.csum_seed, covered) != le32(stored, 0) {
        return Err(Error::Checksum(obj));
    }
    Ok(())
}

/// Index of the last entry whose first logical block is at most `lblk` (entries are sorted), if any.
fn last_at_or_before(node: &[u8], entries: usize, lblk: u32) -> Option<usize> {
    let (mut lo, mut hi) = (0usize, entries);
    while lo < hi {
        let mid = lo.midpoint(hi);
        // mid < hi, so mid + 1 cannot overflow.
        if first_block(entry(node, mid)) <= lblk { lo = mid.saturating_add(1) } else { hi = mid }
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
        // i < entries <= 65535.
        let next_i = i.saturating_add(1);
        if next_i < header.entries {
            let next = first_block(entry(node, next_i));
            bound = Some(bound.map_or(next, |b| b.min(next)));
        }
        block = fs.meta_block(child_block(entry(node, i)), obj)?;
        node = &block;
        verify_tail(fs, inode, node, obj)?;
        let child_header = parse_header(node, obj)?;
        if child_header.depth.checked_add(1) != Some(header.depth) {
            return Err(Error::corrupt(obj, CorruptKind::ExtentNodeDepthDoesNotMatchItsParent));
        }
        header = child_header;
    }
    let found = last_at_or_before(node, header.entries, lblk);
    if let Some(i) = found {
        let e = entry(node, i);
        let first = first_block(e);
        let (len, unwritten, start) = leaf_extent(e);
        if len == 0 {
            return Err(Error::corrupt(obj, CorruptKind::ZeroLengthExtent));
        }
        // first + len <= 2^32 + 2^16: no overflow in u64.
        let end = u64::from(first).saturating_add(u64::from(len));
        if u64::from(lblk) < end {
            // The whole extent must lie inside the filesystem, not just the part from `lblk` on.
            fs.check_range(start, u64::from(len), obj)?;
            // first <= lblk < end (the entry was found at or before lblk), and start + len was checked.
            let len = end.saturating_sub(u64::from(lblk));
            let pblk = start.saturating_add(u64::from(lblk.saturating_sub(first)));
            return Ok(Mapping::Mapped { pblk, len, unwritten });
        }
    }
    // A hole: it ends where the next extent (or the parent's next subtree) begins.
    let next_index = found.map_or(0, |i| i.saturating_add(1));
    let next = if next_index < header.entries { Some(first_block(entry(node, next_index))) } else { bound };
    Ok(Mapping::Hole { len: next.and_then(|n| n.checked_sub(lblk)).filter(|&n| n > 0).map(u64::from) })
}

/// The depth of an inode's extent tree (0: the root in `i_block` holds the extents).
pub fn depth(inode: &Inode) -> Result<u16> {
    Ok(parse_header(&inode.i_block, Object::ExtentTree(inode.ino.0))?.depth)
}

// ---- The tree as a list: what the write side edits (`extent_write`) and stores back. ----

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
        // Both are 32-bit: the sum fits.
        u64::from(self.lblk).saturating_add(u64::from(self.len))
    }
}

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
        let e = entry(node, i);
        if h.depth == 0 {
            let (len, unwritten, pblk) = leaf_extent(e);
            if len == 0 {
                return Err(Error::corrupt(obj, CorruptKind::ZeroLengthExtent));
            }
            fs.check_range(pblk, u64::from(len), obj)?;
            extents.push(Extent { lblk: first_block(e), len: u32::from(len), pblk, unwritten });
        } else {
            let child = child_block(e);
            // Each tree block is visited once: a block that appears twice is a cycle or a shared node.
            if !tree.1.insert(child) {
                return Err(Error::corrupt(obj, CorruptKind::ExtentTreeBlockReferencedTwice));
            }
            tree.0.push(child);
            let block = fs.meta_block(child, obj)?;
            verify_tail(fs, inode, &block, obj)?;
            walk(fs, inode, &block, h.depth.checked_sub(1), extents, tree, obj)?;
        }
    }
    Ok(())
}
