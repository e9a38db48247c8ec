//! Extent trees (`struct ext4_extent_header`, `ext4_extent_idx`, `ext4_extent`): the block map of files
//! with the `EXTENTS` inode flag. The root lives in `i_block`; deeper nodes are blocks of their own that end
//! in a crc32c tail with metadata_csum.

use super::bytes::{le16, le32};
use super::checksum::crc32c;
use super::error::{Error, Object, Result};
use super::fs::{Filesystem, Mapping};
use super::inode::Inode;

const EXT4_EXT_MAGIC: u16 = 0xF30A;
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
        return Err(bad("bad extent header magic"));
    }
    let entries = usize::from(le16(node, 2));
    let max = usize::from(le16(node, 4));
    let depth = le16(node, 6);
    if entries > max || HEADER_SIZE + max * ENTRY_SIZE > node.len() {
        return Err(bad("extent node entry count exceeds its size"));
    }
    if depth > MAX_DEPTH {
        return Err(bad("extent tree too deep"));
    }
    Ok(Header { entries, depth })
}

/// Verifies the `ext4_extent_tail` checksum of a non-root node: crc32c over the node up to the tail.
fn verify_tail(fs: &Filesystem, inode: &Inode, node: &[u8], obj: Object) -> Result<()> {
    if !fs.superblock().has_metadata_csum() {
        return Ok(());
    }
    let tail = HEADER_SIZE + usize::from(le16(node, 4)) * ENTRY_SIZE;
    let covered = node.get(..tail).ok_or_else(|| Error::corrupt(obj, "no room for the extent tail"))?;
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
            return Err(Error::corrupt(obj, "extent index node without entries"));
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
            return Err(Error::corrupt(obj, "extent node depth does not match its parent"));
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
            return Err(Error::corrupt(obj, "zero-length extent"));
        }
        let start = u64::from(le32(node, e + 8)) | (u64::from(le16(node, e + 6)) << 32);
        let end = u64::from(first) + u64::from(len);
        if u64::from(lblk) < end {
            let len = end - u64::from(lblk);
            let pblk = start + u64::from(lblk - first);
            fs.check_range(start, u64::from(len), obj)?;
            return Ok(Mapping::Mapped { pblk, len, unwritten });
        }
    }
    // A hole: it ends where the next extent (or the parent's next subtree) begins.
    let next_index = found.map_or(0, |i| i + 1);
    let next = if next_index < header.entries {
        Some(le32(node, HEADER_SIZE + next_index * ENTRY_SIZE))
    } else {
        bound
    };
    Ok(Mapping::Hole { len: next.filter(|&n| n > lblk).map(|n| u64::from(n - lblk)) })
}

/// The depth of an inode's extent tree (0: the root in `i_block` holds the extents).
pub fn depth(inode: &Inode) -> Result<u16> {
    Ok(parse_header(&inode.i_block, Object::ExtentTree(inode.ino.0))?.depth)
}
