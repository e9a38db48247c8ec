//! Htree index writes: a full one-block linear directory turned into an htree (as the kernel's
//! `make_indexed_dir` does), and an entry added by hash, splitting its leaf when full (`do_split`), then
//! full index nodes, adding a level under the root when the root is full (`ext4_dx_add_entry`); and the
//! `dx_tail` checksum. The read side (lookup) is `dir_htree`.
//!
//! Counts of index entries are bounded by the block size and checked against the node before an edit; a
//! value that would not fit its on-disk field is an error, never truncated.

use std::ops::Range;

use super::bytes::{le16, le32, u8_at};
use super::bytes_mut::{put8, put16, put32};
use super::checksum::crc32c;
use super::dir_block::rec_len_for;
use super::dir_block_write::{DOT_REC_LEN, Ent, from_mut, rec_len_to_disk};
use super::dir_hash::{HashVersion, dir_hash};
use super::error::{CorruptKind, Error, Object, Result};
use super::features::INCOMPAT_LARGEDIR;
use super::fs::Filesystem;
use super::inode::{Inode, flags};
use super::txn::Txn;

const ROOT_INFO: usize = 0x18;
pub(super) const ROOT_COUNT: usize = 0x20;
const NODE_COUNT: usize = 0x8;
/// Size of one htree index entry (hash, block).
const DX_ENTRY: usize = 8;
/// The `dx_entry` block field is 28 bits wide (the kernel's `dx_get_block` masks the rest).
const DX_BLOCK_MASK: u32 = 0x0FFF_FFFF;

/// The byte offset of index entry `i` in a node whose count/limit header is at `count_offset`. The header
/// is at 0x8 or 0x20 and `i` at most the node's limit (below 8192 entries): no overflow, and a saturated
/// offset would lie past the block, where reads give zero and writes are dropped.
fn dx_at(count_offset: usize, i: usize) -> usize {
    count_offset.saturating_add(i.saturating_mul(DX_ENTRY))
}

/// The bytes of index entries `from..to`.
fn dx_range(count_offset: usize, from: usize, to: usize) -> Range<usize> {
    dx_at(count_offset, from)..dx_at(count_offset, to)
}

/// A node's limit and count.
pub(super) fn dx_limit_count(node: &[u8], count_offset: usize) -> (usize, usize) {
    let header = node.get(count_offset..).unwrap_or_default();
    (usize::from(le16(header, 0)), usize::from(le16(header, 2)))
}

/// An index count or limit as its 16-bit field: at most a block's worth of 8-byte entries, so it fits;
/// one that did not would mean a broken index.
fn dx_count_field(n: usize, dir: &Inode) -> Result<u16> {
    u16::try_from(n).map_err(|_| Error::corrupt(Object::Htree(dir.ino.0), CorruptKind::HtreeNodeCountOrLimitOutOfRange))
}

/// A directory block number as an index entry's 28-bit block field; a directory too large for it cannot
/// grow its index.
fn dx_block(lblk: u64) -> Result<u32> {
    u32::try_from(lblk).ok().filter(|&b| b <= DX_BLOCK_MASK).ok_or(Error::NoSpace)
}

/// Copies index entries `from..to` of `node` (header at `count_offset`) to the front of new node `n`. The
/// first one loses its hash: entry 0 of a node holds the count and limit in its place.
fn dx_copy(n: &mut [u8], node: &[u8], count_offset: usize, from: usize, to: usize, dir: &Inode) -> Result<()> {
    let bad = || Error::corrupt(Object::Htree(dir.ino.0), CorruptKind::HtreeNodeCountOrLimitOutOfRange);
    let src = node.get(dx_range(count_offset, from, to)).and_then(|s| s.get(4..)).ok_or_else(bad)?;
    let dst = n.get_mut(dx_at(NODE_COUNT, 0)..).and_then(|d| d.get_mut(4..)?.get_mut(..src.len())).ok_or_else(bad)?;
    dst.copy_from_slice(src);
    Ok(())
}

impl Filesystem {
    /// Writes the `dx_tail` checksum of an htree node whose count/limit header is at `count_offset`.
    pub(super) fn seal_dx(&self, dir: &Inode, b: &mut [u8], count_offset: usize) {
        if !self.sb.has_metadata_csum() {
            return;
        }
        let (limit, count) = dx_limit_count(b, count_offset);
        // The tail follows the `limit` entries.
        let tail = dx_at(count_offset, limit);
        put32(b, tail, 0);
        let covered = b.get(..dx_at(count_offset, count)).unwrap_or_default();
        let reserved = b.get(tail..).and_then(|t| t.get(..4)).unwrap_or_default();
        let c = crc32c(crc32c(crc32c(dir.csum_seed, covered), reserved), &[0; 4]);
        put32(from_mut(b, tail), 4, c);
    }

    /// The number of index entries a node with its count/limit header at `count_offset` holds (the block
    /// is at least 1 KiB; with metadata_csum the last entry's room holds the `dx_tail`).
    pub(super) fn dx_limit(&self, count_offset: usize) -> usize {
        (self.block_bytes().saturating_sub(count_offset) / DX_ENTRY)
            .saturating_sub(usize::from(self.sb.has_metadata_csum()))
    }

    /// The htree hash of `name` in `dir`: of its casefolded form in a casefolded directory.
    fn name_hash(&self, dir: &Inode, version: u8, name: &[u8]) -> Result<u32> {
        let v = HashVersion::from_disk(version).ok_or(Error::NotSupported)?.with_unsigned(self.sb.unsigned_dir_hash());
        let folded = self.casefolded(dir).then(|| super::casefold::fold(name)).flatten();
        Ok(dir_hash(folded.as_deref().unwrap_or(name), v, &self.sb.hash_seed).0)
    }

    /// Turns a full one-block linear directory into an htree: block 0 becomes the index root and its
    /// entries move to a new leaf block (the following insert splits it as needed).
    pub(super) fn make_indexed(&self, tx: &mut Txn<'_>, dir: &mut Inode) -> Result<()> {
        let bs = self.block_bytes();
        let pblk0 = self.dir_pblk(dir, 0)?;
        let block0 = self.leaf_for_write(dir, 0)?.ok_or(Error::NotFound)?;
        let mut parent = dir.ino.0;
        let mut ents = Vec::new();
        for d in self.dirents(&block0[..self.leaf_space()], Object::DirBlock { ino: dir.ino.0, lblk: 0 }) {
            let d = d?;
            match d.name {
                b"." => {}
                b".." => parent = d.inode,
                _ if d.inode != 0 => {
                    ents.push(Ent { ino: d.inode, ftype: d.file_type, name: d.name.to_vec(), hash: 0 })
                }
                _ => {}
            }
        }
        let leaf = self.pack_leaf(dir, &ents)?;
        let leaf_lblk = self.append_dir_block(tx, dir, leaf)?;
        let mut root = vec![0u8; bs];
        self.put_dirent(&mut root, 0, dir.ino.0, DOT_REC_LEN, b".", 2)?;
        // `..` covers the rest of the block (the index hides in it); a block is at least 1 KiB.
        self.put_dirent(&mut root, DOT_REC_LEN, parent, bs.saturating_sub(DOT_REC_LEN), b"..", 2)?;
        let info = from_mut(&mut root, ROOT_INFO);
        put8(info, 4, self.sb.def_hash_version);
        put8(info, 5, 8);
        put8(info, 6, 0);
        let header = from_mut(&mut root, ROOT_COUNT);
        put16(header, 0, dx_count_field(self.dx_limit(ROOT_COUNT), dir)?);
        put16(header, 2, 1);
        put32(header, 4, dx_block(leaf_lblk)?);
        self.seal_dx(dir, &mut root, ROOT_COUNT);
        tx.put(pblk0, root);
        dir.flags |= flags::INDEX;
        Ok(())
    }

    /// Adds an entry to an htree directory: finds the leaf by hash, splits it when full, and grows the
    /// index (splitting nodes, adding a level) as needed.
    pub(super) fn htree_add(&self, tx: &mut Txn<'_>, dir: &mut Inode, name: &[u8], ino: u32, ftype: u8) -> Result<()> {
        let obj = Object::Htree(dir.ino.0);
        let root = self.dir_block(dir, 0)?.ok_or(Error::corrupt(obj, CorruptKind::NoRootBlock))?;
        let info = root.get(ROOT_INFO..).unwrap_or_default();
        let version = u8_at(info, 4);
        let levels = usize::from(u8_at(info, 6));
        let max_levels = if self.sb.has_incompat(INCOMPAT_LARGEDIR) { 3 } else { 2 };
        if levels >= max_levels || u8_at(info, 5) != 8 {
            return Err(Error::corrupt(obj, CorruptKind::BadDxRootInfo));
        }
        let hash = self.name_hash(dir, version, name)?;
        // The path from the root to the leaf: (logical block, count offset, position).
        let mut path: Vec<(u64, usize, usize)> = Vec::new();
        let (mut lblk, mut co) = (0u64, ROOT_COUNT);
        loop {
            let node = self.dir_block(dir, lblk)?.ok_or(Error::corrupt(obj, CorruptKind::HtreePointsAtHole))?;
            let (limit, count) = dx_limit_count(&node, co);
            // Every later index edit trusts count and limit: check both against the node's real size.
            if limit != self.dx_limit(co) || count == 0 || count > limit {
                return Err(Error::corrupt(obj, CorruptKind::HtreeNodeCountOrLimitOutOfRange));
            }
            // The last entry whose hash is at most `hash` (entry 0 has none: it covers from 0).
            let entries = node.get(co..).unwrap_or_default().chunks_exact(DX_ENTRY).take(count);
            let at = entries.clone().enumerate().skip(1).rfind(|(_, e)| le32(e, 0) <= hash).map_or(0, |(i, _)| i);
            path.push((lblk, co, at));
            let child = entries.clone().nth(at).map_or(0, |e| u64::from(le32(e, 4) & DX_BLOCK_MASK));
            if path.len() > levels {
                lblk = child;
                break;
            }
            if child == 0 || child >= dir.size.checked_div(u64::from(self.sb.block_size)).unwrap_or(0) {
                return Err(Error::corrupt(obj, CorruptKind::HtreePointsPastDirectory));
            }
            lblk = child;
            co = NODE_COUNT;
        }
        let leaf_lblk = lblk;
        let leaf = self.leaf_for_write(dir, leaf_lblk)?.ok_or(Error::corrupt(obj, CorruptKind::HtreeLeafIsHole))?;
        if let Some(b) = self.insert_into(dir, &leaf, leaf_lblk, name, ino, ftype)? {
            let pblk = self.dir_pblk(dir, leaf_lblk)?;
            tx.put(pblk, b);
            return Ok(());
        }
        // Split the leaf: entries sorted by hash, the upper half by size moves to a new block.
        let mut ents = Vec::new();
        for d in self.dirents(&leaf[..self.leaf_space()], Object::DirBlock { ino: dir.ino.0, lblk: leaf_lblk }) {
            let d = d?;
            if d.inode != 0 {
                let h = self.name_hash(dir, version, d.name)?;
                ents.push(Ent { ino: d.inode, ftype: d.file_type, name: d.name.to_vec(), hash: h });
            }
        }
        ents.push(Ent { ino, ftype, name: name.to_vec(), hash });
        // A full leaf holds at least one live entry besides the new one; one that does not is damaged
        // (deleted records too small to reuse), and splitting it would leave a half empty.
        if ents.len() < 2 {
            return Err(Error::corrupt(
                Object::DirBlock { ino: dir.ino.0, lblk: leaf_lblk },
                CorruptKind::FullLeafWithoutLiveEntries,
            ));
        }
        ents.sort_by(|a, b| (a.hash, &a.name).cmp(&(b.hash, &b.name)));
        // Sizes of one leaf's entries and one more: a few blocks' worth at most, far from overflowing.
        let size = |half: &[Ent]| half.iter().fold(0usize, |n, e| n.saturating_add(rec_len_for(e.name.len())));
        let total = size(&ents);
        // The first half ends with the entry that brings it to half the total, leaving at least one entry
        // on each side (there are at least two).
        let mut acc = 0usize;
        let split = ents
            .iter()
            .position(|e| {
                acc = acc.saturating_add(rec_len_for(e.name.len()));
                acc.saturating_mul(2) >= total
            })
            .map_or(1, |i| i.saturating_add(1).clamp(1, ents.len().saturating_sub(1)));
        let (low_ents, high_ents) = ents.split_at(split);
        let not_fitting = || {
            Error::corrupt(
                Object::DirBlock { ino: dir.ino.0, lblk: leaf_lblk },
                CorruptKind::LeafEntriesDoNotFitTwoBlocks,
            )
        };
        if size(low_ents) > self.leaf_space() || size(high_ents) > self.leaf_space() {
            return Err(not_fitting());
        }
        let (Some(low_last), Some(high_first)) = (low_ents.last(), high_ents.first()) else {
            return Err(not_fitting());
        };
        let hash2 = high_first.hash;
        let continued = u32::from(low_last.hash == hash2);
        let low = self.pack_leaf(dir, low_ents)?;
        let high = self.pack_leaf(dir, high_ents)?;
        let pblk = self.dir_pblk(dir, leaf_lblk)?;
        tx.put(pblk, low);
        let new_lblk = self.append_dir_block(tx, dir, high)?;
        self.dx_insert(tx, dir, &mut path, hash2 | continued, new_lblk, levels, max_levels)
    }

    /// Inserts index entry (`hash` -> `child`) after the current position of the deepest level of `path`,
    /// splitting full nodes and adding a level under the root when the root is full.
    #[allow(clippy::too_many_arguments)]
    fn dx_insert(
        &self,
        tx: &mut Txn<'_>,
        dir: &mut Inode,
        path: &mut Vec<(u64, usize, usize)>,
        hash: u32,
        child: u64,
        levels: usize,
        max_levels: usize,
    ) -> Result<()> {
        let bs = self.block_bytes();
        // htree_add starts the path at the root; each step keeps it non-empty.
        let Some((&(lblk, co, at), parents)) = path.split_last() else { return Err(Error::Invalid) };
        let depth = parents.len();
        let pblk = self.dir_pblk(dir, lblk)?;
        let mut node = tx.block(pblk, Object::Htree(dir.ino.0))?;
        let (limit, count) = dx_limit_count(&node, co);
        if limit != self.dx_limit(co) || count == 0 || count > limit || at >= count {
            return Err(Error::corrupt(Object::Htree(dir.ino.0), CorruptKind::HtreeNodeCountOrLimitOutOfRange));
        }
        // From here at < count <= limit < 8192: the counts below cannot overflow.
        if count < limit {
            let after = at.saturating_add(1);
            node.copy_within(dx_range(co, after, count), dx_at(co, after.saturating_add(1)));
            let entry = from_mut(&mut node, dx_at(co, after));
            put32(entry, 0, hash);
            put32(entry, 4, dx_block(child)?);
            put16(from_mut(&mut node, co), 2, dx_count_field(count.saturating_add(1), dir)?);
            self.seal_dx(dir, &mut node, co);
            tx.put(pblk, node);
            return Ok(());
        }
        if depth == 0 {
            // The root is full: move its entries into a new node under it (one more level), if allowed.
            let deeper = levels.saturating_add(1);
            if deeper >= max_levels {
                return Err(Error::NoSpace);
            }
            let mut n = vec![0u8; bs];
            put32(&mut n, 0, 0);
            put16(&mut n, 4, rec_len_to_disk(bs, bs));
            let header = from_mut(&mut n, NODE_COUNT);
            put16(header, 0, dx_count_field(self.dx_limit(NODE_COUNT), dir)?);
            put16(header, 2, dx_count_field(count, dir)?);
            dx_copy(&mut n, &node, co, 0, count, dir)?;
            self.seal_dx(dir, &mut n, NODE_COUNT);
            let new_lblk = self.append_dir_block(tx, dir, n)?;
            let header = from_mut(&mut node, co);
            put16(header, 2, 1);
            put32(header, 4, dx_block(new_lblk)?);
            put8(from_mut(&mut node, ROOT_INFO), 6, u8::try_from(deeper).map_err(|_| Error::NoSpace)?);
            self.seal_dx(dir, &mut node, co);
            tx.put(pblk, node);
            path[0].2 = 0;
            path.insert(1, (new_lblk, NODE_COUNT, at));
            return self.dx_insert(tx, dir, path, hash, child, deeper, max_levels);
        }
        // A full interior node: its upper half moves to a new node, indexed from the parent.
        let half = count / 2;
        let mut n = vec![0u8; bs];
        put16(&mut n, 4, rec_len_to_disk(bs, bs));
        let header = from_mut(&mut n, NODE_COUNT);
        put16(header, 0, dx_count_field(self.dx_limit(NODE_COUNT), dir)?);
        put16(header, 2, dx_count_field(count.saturating_sub(half), dir)?);
        dx_copy(&mut n, &node, co, half, count, dir)?;
        let split_hash = le32(&node, dx_at(co, half));
        put16(from_mut(&mut node, co), 2, dx_count_field(half, dir)?);
        self.seal_dx(dir, &mut node, co);
        self.seal_dx(dir, &mut n, NODE_COUNT);
        tx.put(pblk, node);
        let new_lblk = self.append_dir_block(tx, dir, n)?;
        let mut parent_path = parents.to_vec();
        self.dx_insert(tx, dir, &mut parent_path, split_hash, new_lblk, levels, max_levels)?;
        // Continue in whichever half now holds the insertion point.
        let (target, pos) = match at.checked_sub(half) {
            Some(pos) => (new_lblk, pos),
            None => (lblk, at),
        };
        let mut p = parent_path;
        p.push((target, NODE_COUNT, pos));
        self.dx_insert(tx, dir, &mut p, hash, child, levels, max_levels)
    }
}
