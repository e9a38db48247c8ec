//! The write side of extent trees: the file's extents as a sorted list (read by `extent::collect`),
//! edited (insert, remove a range, mark written, merge and split to the format's limits) and stored back
//! as a tree of as few blocks as the list needs.
//! The lists' extents were validated when read (each inside the filesystem, lengths at most 32768).

use super::bytes_mut::{put16, put32};
use super::checksum::crc32c;
use super::error::{Error, Result};
use super::extent::{ENTRY_SIZE, EXT_INIT_MAX_LEN, EXT4_EXT_MAGIC, Extent, HEADER_SIZE, MAX_DEPTH};
use super::inode::Inode;
use super::txn::Txn;

/// Longest initialised extent (`EXT_INIT_MAX_LEN`) and longest unwritten one.
const MAX_INIT: u32 = 32768;
const MAX_UNWRITTEN: u32 = 32767;

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
    let o = HEADER_SIZE + i * ENTRY_SIZE;
    put32(node, o, e.lblk);
    let len = if e.unwritten { e.len + u32::from(EXT_INIT_MAX_LEN) } else { e.len };
    put16(node, o + 4, len as u16);
    put16(node, o + 6, (e.pblk >> 32) as u16);
    put32(node, o + 8, e.pblk as u32);
}

fn put_entry_index(node: &mut [u8], i: usize, first: u32, child: u64) {
    let o = HEADER_SIZE + i * ENTRY_SIZE;
    put32(node, o, first);
    put32(node, o + 4, child as u32);
    put16(node, o + 8, (child >> 32) as u16);
    put16(node, o + 10, 0);
}

fn put_header(node: &mut [u8], entries: usize, max: usize, depth: u16) {
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
