//! The write side of extent trees: the file's extents as a sorted list (read by `extent::collect`),
//! edited (insert, remove a range, mark written, merge and split to the format's limits) and stored back
//! as a tree of as few blocks as the list needs.
//! The lists' extents were validated when read (each inside the filesystem, lengths at most 32768).

use super::bytes::{high32, low32};
use super::bytes_mut::{put16, put32};
use super::checksum::crc32c;
use super::error::{Error, Result};
use super::extent::{ENTRY_SIZE, EXT_INIT_MAX_LEN, EXT4_EXT_MAGIC, Extent, HEADER_SIZE, MAX_DEPTH};
use super::inode::Inode;
use super::txn::Txn;

/// Longest initialised extent (`EXT_INIT_MAX_LEN`) and longest unwritten one.
const MAX_INIT: u32 = 32768;
const MAX_UNWRITTEN: u32 = 32767;

/// The longest extent of its kind the format holds.
fn max_len(unwritten: bool) -> u32 {
    if unwritten { MAX_UNWRITTEN } else { MAX_INIT }
}

/// Blocks `i..j` of `e` (offsets into it, `i <= j <= e.len`) as an extent of their own.
///
/// No sum saturates: the blocks of a listed extent are representable (its physical blocks were checked
/// against the filesystem when read or allocated, and the extents callers build end by block 2^32), so
/// an offset into it lands inside it.
fn part(e: &Extent, i: u32, j: u32, unwritten: bool) -> Extent {
    Extent {
        lblk: e.lblk.saturating_add(i),
        len: j.saturating_sub(i),
        pblk: e.pblk.saturating_add(u64::from(i)),
        unwritten,
    }
}

/// The offset of logical block `at` in `e`, clamped to `0..=e.len`.
fn offset_in(e: &Extent, at: u64) -> u32 {
    let off = at.saturating_sub(u64::from(e.lblk)).min(u64::from(e.len));
    // At most e.len, a u32.
    u32::try_from(off).unwrap_or(e.len)
}

/// The physical block holding logical block `lblk` of `e` (which holds it: see `part` for why the sum
/// does not saturate).
pub fn pblk_at(e: &Extent, lblk: u64) -> u64 {
    e.pblk.saturating_add(lblk.saturating_sub(u64::from(e.lblk)))
}

/// Merges neighbours that continue each other and splits extents longer than the format allows.
pub fn normalize(list: &mut Vec<Extent>) {
    let mut out: Vec<Extent> = Vec::with_capacity(list.len());
    for e in list.drain(..) {
        if let Some(last) = out.last_mut() {
            let continues = last.unwritten == e.unwritten
                && last.end() == u64::from(e.lblk)
                && last.pblk.checked_add(u64::from(last.len)) == Some(e.pblk);
            let merged = last.len.checked_add(e.len).filter(|&n| n <= max_len(e.unwritten));
            if let (true, Some(len)) = (continues, merged) {
                last.len = len;
                continue;
            }
        }
        out.push(e);
    }
    // Split what is too long (only possible for extents built by callers).
    let mut split = Vec::with_capacity(out.len());
    for mut e in out {
        let max = max_len(e.unwritten);
        while e.len > max {
            split.push(part(&e, 0, max, e.unwritten));
            e = part(&e, max, e.len, e.unwritten);
        }
        split.push(e);
    }
    *list = split;
}

/// Removes the mapping of logical blocks `from..to` from `list`; returns the freed physical runs.
pub fn remove_range(list: &mut Vec<Extent>, from: u64, to: u64) -> Vec<(u64, u64)> {
    let mut freed = Vec::new();
    // A capacity hint: one extent more, the one a range inside an extent splits off.
    let mut out = Vec::with_capacity(list.len().saturating_add(1));
    for e in list.drain(..) {
        if e.end() <= from || u64::from(e.lblk) >= to {
            out.push(e);
            continue;
        }
        // The range overlaps e: it cuts e's blocks i..j.
        let (i, j) = (offset_in(&e, from), offset_in(&e, to));
        if i > 0 {
            out.push(part(&e, 0, i, e.unwritten));
        }
        let cut = part(&e, i, j, e.unwritten);
        freed.push((cut.pblk, u64::from(cut.len)));
        if j < e.len {
            out.push(part(&e, j, e.len, e.unwritten));
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
    let mut rest = list.get(at..).unwrap_or_default().iter();
    match rest.next() {
        Some(e) if u64::from(e.lblk) <= lblk => (Some(e), rest.next()),
        next => (None, next),
    }
}

/// Marks logical blocks `from..to` written where they are unwritten (splitting extents as needed).
pub fn mark_written(list: &mut Vec<Extent>, from: u64, to: u64) {
    // A capacity hint: a range inside an extent splits it in three.
    let mut out = Vec::with_capacity(list.len().saturating_add(2));
    for e in list.drain(..) {
        if !e.unwritten || e.end() <= from || u64::from(e.lblk) >= to {
            out.push(e);
            continue;
        }
        // The range overlaps e: its blocks i..j become written.
        let (i, j) = (offset_in(&e, from), offset_in(&e, to));
        if i > 0 {
            out.push(part(&e, 0, i, true));
        }
        out.push(part(&e, i, j, false));
        if j < e.len {
            out.push(part(&e, j, e.len, true));
        }
    }
    *list = out;
    normalize(list);
}

/// `ee_start_hi` / `ei_leaf_hi`: bits 32..48 of a block number; a block past 2^48 has no encoding.
fn start_hi(pblk: u64) -> Result<u16> {
    u16::try_from(high32(pblk)).map_err(|_| Error::TooBig)
}

/// `ee_len`: the length, plus 32768 for an unwritten extent. One longer than its kind allows (which
/// `normalize` splits) has no encoding: 32769 and more read back as unwritten.
fn ee_len(e: &Extent) -> Result<u16> {
    let raw = if e.unwritten { e.len.checked_add(u32::from(EXT_INIT_MAX_LEN)) } else { Some(e.len) };
    raw.filter(|_| e.len <= max_len(e.unwritten)).and_then(|n| u16::try_from(n).ok()).ok_or(Error::TooBig)
}

/// A count of entries as a header field (at most a block's worth, below 2^16).
fn count16(n: usize) -> Result<u16> {
    u16::try_from(n).map_err(|_| Error::TooBig)
}

/// An entry of a node being built: an extent (depth 0) or an index entry (first logical block, child).
enum Entry {
    Leaf(Extent),
    Index(u32, u64),
}

/// Writes `entries` into the entry slots of `node` (after its header); the caller sized the node for them.
fn put_entries(node: &mut [u8], entries: &[Entry]) -> Result<()> {
    let slots = node.get_mut(HEADER_SIZE..).unwrap_or_default().chunks_exact_mut(ENTRY_SIZE);
    for (slot, ent) in slots.zip(entries) {
        match ent {
            Entry::Leaf(e) => {
                put32(slot, 0, e.lblk);
                put16(slot, 4, ee_len(e)?);
                put16(slot, 6, start_hi(e.pblk)?);
                put32(slot, 8, low32(e.pblk));
            }
            Entry::Index(first, child) => {
                put32(slot, 0, *first);
                put32(slot, 4, low32(*child));
                put16(slot, 8, start_hi(*child)?);
                put16(slot, 10, 0);
            }
        }
    }
    Ok(())
}

fn put_header(node: &mut [u8], entries: u16, max: u16, depth: u16) {
    put16(node, 0, EXT4_EXT_MAGIC);
    put16(node, 2, entries);
    put16(node, 4, max);
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
    let bs = super::bytes::index(fs.block_size());
    // A block of 1 KiB to 64 KiB holds 84 to 5460 entries after its header.
    let per_node = bs.saturating_sub(HEADER_SIZE) / ENTRY_SIZE;
    const ROOT_MAX: usize = 4;
    // Counts of tree blocks, at most the filesystem's blocks: the sums below do not saturate.
    let old_count = u64::try_from(old_tree.len()).unwrap_or(u64::MAX);
    let mut used = 0u64;

    // Level 0 entries: the extents. Each pass up groups entries into nodes until the root can hold them.
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
            used = used.saturating_add(1);
            let mut node = vec![0u8; bs];
            put_header(&mut node, count16(chunk.len())?, count16(per_node)?, depth);
            let first = match &chunk[0] {
                Entry::Leaf(e) => e.lblk,
                Entry::Index(f, _) => *f,
            };
            put_entries(&mut node, chunk)?;
            if fs.superblock().has_metadata_csum() {
                // The tail follows the node's entry slots, inside the block (per_node was sized so).
                let tail = HEADER_SIZE.saturating_add(per_node.saturating_mul(ENTRY_SIZE));
                let c = crc32c(inode.csum_seed, &node[..tail]);
                super::bytes_mut::put32(&mut node, tail, c);
            }
            tx.put(nr, node);
            next.push(Entry::Index(first, nr));
        }
        level = next;
        depth = depth.checked_add(1).filter(|&d| d <= MAX_DEPTH).ok_or(Error::TooBig)?;
    }
    let mut root = [0u8; 60];
    put_header(&mut root, count16(level.len())?, count16(ROOT_MAX)?, depth);
    put_entries(&mut root, &level)?;
    inode.i_block = root;
    for nr in old_tree {
        tx.free_blocks(nr, 1)?;
    }
    // Each tree block takes a cluster of its own.
    let per_block = fs.sb.cluster_sectors();
    inode.blocks_512 = inode
        .blocks_512
        .saturating_add(used.saturating_mul(per_block))
        .saturating_sub(old_count.saturating_mul(per_block));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(lblk: u32, len: u32, pblk: u64, unwritten: bool) -> Extent {
        Extent { lblk, len, pblk, unwritten }
    }

    #[test]
    fn normalize_merges_neighbours_and_splits_long_extents() {
        let mut list = vec![ext(0, 10, 100, false), ext(10, 5, 110, false), ext(15, 70000, 200, false)];
        normalize(&mut list);
        assert_eq!(
            list,
            vec![
                ext(0, 15, 100, false),
                ext(15, 32768, 200, false),
                ext(32783, 32768, 32968, false),
                ext(65551, 4464, 65736, false),
            ]
        );
        // Not merged: physically apart, or of different kinds.
        let mut list = vec![ext(0, 10, 100, false), ext(10, 5, 111, false), ext(15, 1, 116, true)];
        normalize(&mut list);
        assert_eq!(list.len(), 3);
    }

    #[test]
    fn remove_range_cuts_extents_and_returns_the_freed_runs() {
        let mut list = vec![ext(0, 4, 50, false), ext(10, 20, 100, false)];
        assert_eq!(remove_range(&mut list, 15, 20), vec![(105, 5)]);
        assert_eq!(list, vec![ext(0, 4, 50, false), ext(10, 5, 100, false), ext(20, 10, 110, false)]);
        assert_eq!(remove_range(&mut list, 2, u64::MAX), vec![(52, 2), (100, 5), (110, 10)]);
        assert_eq!(list, vec![ext(0, 2, 50, false)]);
    }

    #[test]
    fn mark_written_splits_an_unwritten_extent() {
        let mut list = vec![ext(10, 20, 100, true)];
        mark_written(&mut list, 12, 15);
        assert_eq!(list, vec![ext(10, 2, 100, true), ext(12, 3, 102, false), ext(15, 15, 105, true)]);
        assert_eq!(find(&list, 13), (Some(&list[1]), Some(&list[2])));
        assert_eq!(find(&list, 5), (None, Some(&list[0])));
        assert_eq!(pblk_at(&list[2], 20), 110);
    }

    #[test]
    fn lengths_and_block_numbers_without_an_encoding_are_refused() {
        assert_eq!(ee_len(&ext(0, 32768, 1, false)).ok(), Some(32768));
        assert_eq!(ee_len(&ext(0, 32767, 1, true)).ok(), Some(65535));
        assert!(matches!(ee_len(&ext(0, 32769, 1, false)), Err(Error::TooBig)));
        assert!(matches!(ee_len(&ext(0, 32768, 1, true)), Err(Error::TooBig)));
        assert_eq!(start_hi((1 << 48) - 1).ok(), Some(0xffff));
        assert!(matches!(start_hi(1 << 48), Err(Error::TooBig)));
    }

    #[test]
    fn entries_fill_the_slots_after_the_header() {
        let mut root = empty_root();
        put_entries(&mut root, &[Entry::Leaf(ext(7, 3, 0x1_0000_0002, true)), Entry::Index(9, 0x3_0000_0004)]).unwrap();
        assert_eq!(&root[12..24], &[7, 0, 0, 0, 3, 0x80, 1, 0, 2, 0, 0, 0]);
        assert_eq!(&root[24..36], &[9, 0, 0, 0, 4, 0, 0, 0, 3, 0, 0, 0]);
    }
}
