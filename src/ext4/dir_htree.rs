//! Hash tree directories (dir_index): block 0 of the directory holds `dx_root` (after the `.` and `..`
//! entries), interior blocks hold `dx_node`; both map ranges of name hashes to the blocks that hold them.
//! Lookup descends from the root to one leaf block instead of scanning the whole directory.

use super::bytes::{le16, le32, u8_at};
use super::checksum::crc32c;
use super::dir_hash::{HashVersion, dir_hash};
use super::error::{CorruptKind, Error, Object, Result};
use super::features::INCOMPAT_LARGEDIR;
use super::fs::Filesystem;
use super::inode::Inode;

/// Offset of `dx_root_info` in block 0 (after the 12-byte `.` entry and the `..` entry header).
const ROOT_INFO: usize = 0x18;
/// Offset of the count/limit header in an interior node (after an empty 8-byte dirent).
const NODE_COUNT: usize = 0x8;
const ENTRY: usize = 8;

/// One level of the path from the root to a leaf.
struct Level {
    node: std::sync::Arc<Vec<u8>>,
    count_offset: usize,
    count: usize,
    at: usize,
}

impl Level {
    /// Index entry `i` (8 bytes: hash, block) from its first byte on; empty past the node.
    fn entry(&self, i: usize) -> &[u8] {
        i.checked_mul(ENTRY)
            .and_then(|o| o.checked_add(self.count_offset))
            .and_then(|o| self.node.get(o..))
            .unwrap_or_default()
    }
}

/// The hash an htree directory's index is ordered by (`dx_root`'s hash version with the superblock's
/// signedness); `None` when the root block cannot be read or names an unknown hash.
pub fn root_hash_version(fs: &Filesystem, dir: &Inode) -> Option<HashVersion> {
    let root = fs.dir_block(dir, 0).ok()??;
    let version = HashVersion::from_disk(u8_at(&root, ROOT_INFO + 4))?;
    Some(version.with_unsigned(fs.superblock().unsigned_dir_hash()))
}

/// What an htree lookup searches by.
#[derive(Debug, Clone, Copy)]
pub enum Probe<'a> {
    /// A name, hashed with the directory's hash.
    Name(&'a [u8]),
    /// A hash already known: a no-key name of an encrypted directory carries its entry's hash (see
    /// [`super::fscrypt`]), since the name it was made from cannot be hashed without the ciphertext.
    Hash(u32),
}

/// Looks up `probe` in the hash-indexed directory `dir`, searching each candidate leaf with `search_leaf`.
///
/// A malformed index is reported as corruption of [`Object::Htree`], so the caller may fall back to a linear
/// scan as the kernel does; a bad checksum is an error of its own.
pub fn lookup<T>(
    fs: &Filesystem,
    dir: &Inode,
    probe: Probe<'_>,
    mut search_leaf: impl FnMut(u64) -> Result<Option<T>>,
) -> Result<Option<T>> {
    let obj = Object::Htree(dir.ino.0);
    let bad = |what| Error::corrupt(obj, what);
    let root = fs.dir_block(dir, 0)?.ok_or_else(|| bad(CorruptKind::NoRootBlock))?;
    let version =
        HashVersion::from_disk(u8_at(&root, ROOT_INFO + 4)).ok_or_else(|| bad(CorruptKind::UnknownHashVersion))?;
    let info_length = usize::from(u8_at(&root, ROOT_INFO + 5));
    let levels = usize::from(u8_at(&root, ROOT_INFO + 6));
    if le32(&root, ROOT_INFO) != 0 || info_length != 8 || u8_at(&root, ROOT_INFO + 7) & 1 != 0 {
        return Err(bad(CorruptKind::BadDxRootInfo));
    }
    let max_levels = if fs.superblock().has_incompat(INCOMPAT_LARGEDIR) { 3 } else { 2 };
    if levels >= max_levels {
        return Err(bad(CorruptKind::HtreeHasTooManyLevels));
    }
    let sb = fs.superblock();
    let version = version.with_unsigned(sb.unsigned_dir_hash());
    let hash = match probe {
        Probe::Name(name) => dir_hash(name, version, &sb.hash_seed).0,
        Probe::Hash(hash) => hash,
    };

    let mut path: Vec<Level> = Vec::with_capacity(levels + 1);
    let mut level = open_level(fs, dir, root, ROOT_INFO + info_length, obj)?;
    loop {
        level.at = find_entry(&level, hash);
        let child = entry_block(&level, level.at);
        path.push(level);
        if path.len() > levels {
            break;
        }
        level = open_node(fs, dir, child, obj)?;
    }
    // Bounded by the number of blocks in the directory: each step moves to a later index entry.
    let mut leaf = path.last().map(|l| entry_block(l, l.at)).unwrap_or(0);
    // A collision chain visits each leaf once: an index naming one leaf over and over is damaged.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..=dir_blocks(fs, dir) {
        if !seen.insert(leaf) {
            return Err(Error::corrupt(Object::Htree(dir.ino.0), CorruptKind::HashCollisionChainRevisitsLeaf));
        }
        if let Some(found) = search_leaf(leaf)? {
            return Ok(Some(found));
        }
        // Names with the same hash may continue in the next leaf: the next index entry then has the same
        // hash with its low (collision) bit set. Find the deepest level that has a next entry.
        // at < count <= 65535 at every level.
        let Some(depth) = path.iter().rposition(|l| l.at.saturating_add(1) < l.count) else {
            return Ok(None);
        };
        path[depth].at = path[depth].at.saturating_add(1);
        let next_hash = entry_hash(&path[depth], path[depth].at);
        if next_hash & !1 != hash {
            return Ok(None);
        }
        path.truncate(depth.saturating_add(1));
        while path.len() <= levels {
            let Some(parent) = path.last() else { break };
            let mut l = open_node(fs, dir, entry_block(parent, parent.at), obj)?;
            l.at = 0;
            path.push(l);
        }
        leaf = path.last().map(|l| entry_block(l, l.at)).unwrap_or(0);
    }
    Err(bad(CorruptKind::HtreeLeafChainDoesNotEnd))
}

fn dir_blocks(fs: &Filesystem, dir: &Inode) -> u64 {
    dir.size.checked_div(u64::from(fs.block_size())).unwrap_or(0)
}

/// Reads an interior `dx_node` block and checks its fake directory entry.
fn open_node(fs: &Filesystem, dir: &Inode, lblk: u64, obj: Object) -> Result<Level> {
    let block = fs.dir_block(dir, lblk)?.ok_or_else(|| Error::corrupt(obj, CorruptKind::HtreePointsAtHole))?;
    let bs = super::bytes::index(fs.block_size());
    if le32(&block, 0) != 0 || super::dir_block::rec_len_from_disk(le16(&block, 4), bs) != bs {
        return Err(Error::corrupt(obj, CorruptKind::HtreeNodeWithoutItsEmptyDirectoryEntry));
    }
    open_level(fs, dir, block, NODE_COUNT, obj)
}

/// Validates the count/limit header at `count_offset` and the node's `dx_tail` checksum.
fn open_level(
    fs: &Filesystem,
    dir: &Inode,
    node: std::sync::Arc<Vec<u8>>,
    count_offset: usize,
    obj: Object,
) -> Result<Level> {
    let csum = fs.superblock().has_metadata_csum();
    let entries = node.get(count_offset..).unwrap_or_default();
    let limit = usize::from(le16(entries, 0));
    let count = usize::from(le16(entries, 2));
    let expected_limit = (entries.len() / ENTRY).checked_sub(usize::from(csum));
    if Some(limit) != expected_limit || count == 0 || count > limit {
        return Err(Error::corrupt(obj, CorruptKind::HtreeNodeCountOrLimitOutOfRange));
    }
    if csum {
        // limit and count are at most 65535, so the offsets cannot overflow; the tail follows the limit
        // entries, within the node (limit was checked against its size).
        let entry_end = |n: usize| count_offset.saturating_add(n.saturating_mul(ENTRY));
        let tail = node.get(entry_end(limit)..).unwrap_or_default();
        let covered = node.get(..entry_end(count)).unwrap_or_default();
        let reserved = tail.get(..4).unwrap_or_default();
        // dx_tail: the reserved word, then the checksum field itself taken as zero.
        let c = crc32c(crc32c(crc32c(dir.csum_seed, covered), reserved), &[0; 4]);
        if c != le32(tail, 4) {
            return Err(Error::Checksum(obj));
        }
    }
    Ok(Level { node, count_offset, count, at: 0 })
}

/// The hash of entry `i`; entry 0 has no stored hash (its slot holds count and limit) and covers from 0.
fn entry_hash(l: &Level, i: usize) -> u32 {
    if i == 0 { 0 } else { le32(l.entry(i), 0) }
}

/// The directory block entry `i` points to (the top 4 bits are reserved, as in the kernel's `dx_get_block`).
fn entry_block(l: &Level, i: usize) -> u64 {
    u64::from(le32(l.entry(i), 4) & 0x0FFF_FFFF)
}

/// The last entry whose hash is at most `hash` (binary search, as the kernel's `dx_probe`).
fn find_entry(l: &Level, hash: u32) -> usize {
    let (mut lo, mut hi) = (1usize, l.count);
    while lo < hi {
        let mid = lo.midpoint(hi);
        if entry_hash(l, mid) > hash { hi = mid } else { lo = mid.saturating_add(1) }
    }
    // lo starts at 1 and only grows.
    lo.saturating_sub(1)
}
