//! The ext2/ext3 block map: twelve direct pointers in `i_block`, then single, double and triple indirect
//! blocks of 32-bit block numbers. A zero pointer is a hole.

use super::bytes::le32;
use super::bytes_mut::put32;
use super::error::Error;
use super::error::{Object, Result};
use super::fs::{Filesystem, Mapping};
use super::inode::Inode;
use super::txn::Txn;

const DIRECT: u64 = 12;
const DIRECT_SLOTS: usize = 12;

/// Pointer `i` of an indirect block or of `i_block`.
fn word(buf: &[u8], i: usize) -> u32 {
    le32(buf, i.saturating_mul(4))
}

fn put_word(buf: &mut [u8], i: usize, v: u32) {
    put32(buf, i.saturating_mul(4), v);
}

/// A count of pointers as a block count.
fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// A position within the map (below 2^42) as an index.
fn index_of(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// A block number as the map's 32-bit pointer (the allocator keeps block-mapped files below 2^32).
fn block_u32(pblk: u64) -> Result<u32> {
    u32::try_from(pblk).map_err(|_| Error::TooBig)
}

/// Maps logical block `lblk` of `inode` through its indirect block map.
pub fn map(fs: &Filesystem, inode: &Inode, lblk: u64) -> Result<Mapping> {
    let obj = Object::BlockMap(inode.ino.0);
    let per_block = u64::from(fs.block_size() / 4);
    let Some(mut rel) = lblk.checked_sub(DIRECT) else {
        let ptrs: Vec<u32> = (0..DIRECT_SLOTS).map(|i| inode.i_block_word(i)).collect();
        return run_at(fs, &ptrs, index_of(lblk), obj);
    };
    // Find the tree that holds lblk: (slot in i_block, depth, offset of lblk inside that tree).
    let mut span = per_block;
    let mut found = None;
    for (slot, depth) in [(12usize, 1u32), (13, 2), (14, 3)] {
        if rel < span {
            found = Some((slot, depth));
            break;
        }
        rel = rel.saturating_sub(span);
        span = span.saturating_mul(per_block);
    }
    let Some((slot, depth)) = found else {
        return Ok(Mapping::Hole { len: None });
    };
    let mut ptr = inode.i_block_word(slot);
    // Each level below divides the tree's span by per_block (at most 16384^3 = 2^42 blocks: no overflow).
    for level in (1..=depth).rev() {
        let sub_span = per_block.saturating_pow(level.saturating_sub(1));
        if ptr == 0 {
            // The whole subtree under this pointer is a hole: it covers `sub_span * per_block` blocks.
            let subtree = sub_span.saturating_mul(per_block);
            let into = rel.checked_rem(subtree).unwrap_or(0);
            return Ok(Mapping::Hole { len: Some(subtree.saturating_sub(into)) });
        }
        let block = fs.meta_block(u64::from(ptr), obj)?;
        let index = index_of(rel.checked_div(sub_span).and_then(|n| n.checked_rem(per_block)).unwrap_or(0));
        if level == 1 {
            let ptrs: Vec<u32> = block.chunks_exact(4).map(|w| le32(w, 0)).collect();
            return run_at(fs, &ptrs, index, obj);
        }
        ptr = word(&block, index);
    }
    Ok(Mapping::Hole { len: Some(1) })
}

/// The mapping at `ptrs[i]`, extended over the following pointers while they stay contiguous (or zero).
fn run_at(fs: &Filesystem, ptrs: &[u32], i: usize, obj: Object) -> Result<Mapping> {
    let rest = ptrs.get(i..).unwrap_or_default();
    let Some(&first) = rest.first() else {
        return Ok(Mapping::Hole { len: Some(1) });
    };
    if first == 0 {
        let len = rest.iter().take_while(|&&p| p == 0).count();
        return Ok(Mapping::Hole { len: Some(count(len)) });
    }
    let len = rest.iter().zip(u64::from(first)..).take_while(|&(&p, expected)| u64::from(p) == expected).count();
    fs.check_range(u64::from(first), count(len), obj)?;
    Ok(Mapping::Mapped { pblk: u64::from(first), len: count(len), unwritten: false })
}

// ---- Writing ----

/// Where logical block `lblk` lives in the tree: the `i_block` slot and the index at each level below it.
fn path(per_block: u64, lblk: u64) -> Option<(usize, Vec<usize>)> {
    let Some(mut rel) = lblk.checked_sub(DIRECT) else {
        return Some((index_of(lblk), Vec::new()));
    };
    let mut span = per_block;
    for (slot, depth) in [(12usize, 1u32), (13, 2), (14, 3)] {
        if rel < span {
            let at = |l: u32| rel.checked_div(per_block.saturating_pow(l)).and_then(|n| n.checked_rem(per_block));
            let idx = (0..depth).rev().map(|l| index_of(at(l).unwrap_or(0))).collect();
            return Some((slot, idx));
        }
        rel = rel.saturating_sub(span);
        span = span.saturating_mul(per_block);
    }
    None
}

/// Points logical block `lblk` of `inode` at physical block `pblk`, allocating (zeroed) indirect blocks
/// near `pblk` as needed and counting them in `i_blocks`. The caller writes the inode.
pub fn set_block(tx: &mut Txn<'_>, inode: &mut Inode, lblk: u64, pblk: u64) -> Result<()> {
    let obj = Object::BlockMap(inode.ino.0);
    let bs = tx.fs().block_size();
    let per_block = u64::from(bs / 4);
    let (slot, idx) = path(per_block, lblk).ok_or(Error::TooBig)?;
    if idx.is_empty() {
        put_word(&mut inode.i_block, slot, block_u32(pblk)?);
        return Ok(());
    }
    let mut ptr = inode.i_block_word(slot);
    if ptr == 0 {
        ptr = new_indirect(tx, inode, pblk)?;
        put_word(&mut inode.i_block, slot, ptr);
    }
    let levels = idx.len();
    for (level, &i) in idx.iter().enumerate() {
        let mut block = tx.block(u64::from(ptr), obj)?;
        if level.saturating_add(1) == levels {
            put_word(&mut block, i, block_u32(pblk)?);
            tx.put(u64::from(ptr), block);
            return Ok(());
        }
        let mut next = word(&block, i);
        if next == 0 {
            next = new_indirect(tx, inode, pblk)?;
            put_word(&mut block, i, next);
            tx.put(u64::from(ptr), block);
        }
        ptr = next;
    }
    Ok(())
}

fn new_indirect(tx: &mut Txn<'_>, inode: &mut Inode, goal: u64) -> Result<u32> {
    let nr = tx.alloc_meta_block(goal)?;
    let nr32 = u32::try_from(nr).map_err(|_| Error::TooBig)?;
    tx.put(nr, vec![0u8; super::bytes::index(tx.fs().block_size())]);
    inode.blocks_512 = inode.blocks_512.saturating_add(u64::from(tx.fs().block_size() / 512));
    Ok(nr32)
}

/// Frees the data blocks of logical blocks `from..to` and the indirect blocks left empty, counting them
/// out of `i_blocks`. The caller writes the inode.
pub fn free_range(tx: &mut Txn<'_>, inode: &mut Inode, from: u64, to: u64) -> Result<()> {
    let per_block = u64::from(tx.fs().block_size() / 4);
    for (slot, l) in (0..DIRECT_SLOTS).zip(0u64..) {
        let p = inode.i_block_word(slot);
        if p != 0 && l >= from && l < to {
            free_one(tx, inode, u64::from(p))?;
            put_word(&mut inode.i_block, slot, 0);
        }
    }
    let mut start = DIRECT;
    let mut span = per_block;
    for (slot, depth) in [(12usize, 1u32), (13, 2), (14, 3)] {
        let p = inode.i_block_word(slot);
        let covers = start < to && start.saturating_add(span) > from;
        if p != 0 && covers && free_tree(tx, inode, u64::from(p), depth, start, from, to)? {
            put_word(&mut inode.i_block, slot, 0);
        }
        start = start.saturating_add(span);
        span = span.saturating_mul(per_block);
    }
    Ok(())
}

fn free_one(tx: &mut Txn<'_>, inode: &mut Inode, pblk: u64) -> Result<()> {
    tx.free_blocks(pblk, 1)?;
    inode.blocks_512 = inode.blocks_512.saturating_sub(u64::from(tx.fs().block_size() / 512));
    Ok(())
}

/// Frees what `from..to` covers under indirect block `nr` (of the given depth, mapping logical blocks from
/// `start`); returns true when the block ended up empty and was freed itself.
fn free_tree(tx: &mut Txn<'_>, inode: &mut Inode, nr: u64, depth: u32, start: u64, from: u64, to: u64) -> Result<bool> {
    let obj = Object::BlockMap(inode.ino.0);
    let per_block = u64::from(tx.fs().block_size() / 4);
    let child_span = per_block.saturating_pow(depth.saturating_sub(1));
    let mut block = tx.block(nr, obj)?;
    let mut changed = false;
    for (i, n) in (0..index_of(per_block)).zip(0u64..) {
        let p = word(&block, i);
        let cs = start.saturating_add(n.saturating_mul(child_span));
        if p == 0 || cs >= to || cs.saturating_add(child_span) <= from {
            continue;
        }
        let freed = if depth == 1 {
            free_one(tx, inode, u64::from(p))?;
            true
        } else {
            free_tree(tx, inode, u64::from(p), depth.saturating_sub(1), cs, from, to)?
        };
        if freed {
            put_word(&mut block, i, 0);
            changed = true;
        }
    }
    if block.chunks_exact(4).all(|w| w == [0, 0, 0, 0]) {
        free_one(tx, inode, nr)?;
        return Ok(true);
    }
    if changed {
        tx.put(nr, block);
    }
    Ok(false)
}
