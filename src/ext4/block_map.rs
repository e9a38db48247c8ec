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

/// Maps logical block `lblk` of `inode` through its indirect block map.
pub fn map(fs: &Filesystem, inode: &Inode, lblk: u64) -> Result<Mapping> {
    let obj = Object::BlockMap(inode.ino.0);
    let per_block = u64::from(fs.block_size() / 4);
    if lblk < DIRECT {
        let ptrs: Vec<u32> = (0..DIRECT as usize).map(|i| inode.i_block_word(i)).collect();
        return run_at(fs, &ptrs, lblk as usize, obj);
    }
    // Find the tree that holds lblk: (slot in i_block, depth, offset of lblk inside that tree).
    let mut rel = lblk - DIRECT;
    let mut span = per_block;
    let mut found = None;
    for (slot, depth) in [(12usize, 1u32), (13, 2), (14, 3)] {
        if rel < span {
            found = Some((slot, depth));
            break;
        }
        rel -= span;
        span = span.saturating_mul(per_block);
    }
    let Some((slot, depth)) = found else {
        return Ok(Mapping::Hole { len: None });
    };
    let mut ptr = inode.i_block_word(slot);
    // Each level below divides the tree's span by per_block.
    for level in (1..=depth).rev() {
        let sub_span = per_block.pow(level - 1);
        if ptr == 0 {
            // The whole subtree under this pointer is a hole: it covers `sub_span * per_block` blocks.
            let subtree = sub_span * per_block;
            return Ok(Mapping::Hole { len: Some(subtree - rel % subtree) });
        }
        let block = fs.meta_block(u64::from(ptr), obj)?;
        let index = ((rel / sub_span) % per_block) as usize;
        if level == 1 {
            let ptrs: Vec<u32> = (0..per_block as usize).map(|i| le32(&block, i * 4)).collect();
            return run_at(fs, &ptrs, index, obj);
        }
        ptr = le32(&block, index * 4);
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
        let len = rest.iter().take_while(|&&p| p == 0).count() as u64;
        return Ok(Mapping::Hole { len: Some(len) });
    }
    let len = rest.iter().enumerate().take_while(|&(k, &p)| u64::from(p) == u64::from(first) + k as u64).count();
    fs.check_range(u64::from(first), len as u64, obj)?;
    Ok(Mapping::Mapped { pblk: u64::from(first), len: len as u64, unwritten: false })
}

// ---- Writing ----

/// Where logical block `lblk` lives in the tree: the `i_block` slot and the index at each level below it.
fn path(per_block: u64, lblk: u64) -> Option<(usize, Vec<usize>)> {
    if lblk < DIRECT {
        return Some((lblk as usize, Vec::new()));
    }
    let mut rel = lblk - DIRECT;
    let mut span = per_block;
    for (slot, depth) in [(12usize, 1u32), (13, 2), (14, 3)] {
        if rel < span {
            let idx = (0..depth).rev().map(|l| ((rel / per_block.pow(l)) % per_block) as usize).collect();
            return Some((slot, idx));
        }
        rel -= span;
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
        put32(&mut inode.i_block, slot * 4, pblk as u32);
        return Ok(());
    }
    let mut ptr = inode.i_block_word(slot);
    if ptr == 0 {
        ptr = new_indirect(tx, inode, pblk)?;
        put32(&mut inode.i_block, slot * 4, ptr);
    }
    for (level, &i) in idx.iter().enumerate() {
        let mut block = tx.block(u64::from(ptr), obj)?;
        let last = level + 1 == idx.len();
        if last {
            put32(&mut block, i * 4, pblk as u32);
            tx.put(u64::from(ptr), block);
            return Ok(());
        }
        let mut next = le32(&block, i * 4);
        if next == 0 {
            next = new_indirect(tx, inode, pblk)?;
            put32(&mut block, i * 4, next);
            tx.put(u64::from(ptr), block);
        }
        ptr = next;
    }
    Ok(())
}

fn new_indirect(tx: &mut Txn<'_>, inode: &mut Inode, goal: u64) -> Result<u32> {
    let nr = tx.alloc_meta_block(goal)?;
    let nr32 = u32::try_from(nr).map_err(|_| Error::TooBig)?;
    tx.put(nr, vec![0u8; tx.fs().block_size() as usize]);
    inode.blocks_512 += u64::from(tx.fs().block_size() / 512);
    Ok(nr32)
}

/// Frees the data blocks of logical blocks `from..to` and the indirect blocks left empty, counting them
/// out of `i_blocks`. The caller writes the inode.
pub fn free_range(tx: &mut Txn<'_>, inode: &mut Inode, from: u64, to: u64) -> Result<()> {
    let per_block = u64::from(tx.fs().block_size() / 4);
    for slot in 0..DIRECT as usize {
        let l = slot as u64;
        let p = inode.i_block_word(slot);
        if p != 0 && l >= from && l < to {
            free_one(tx, inode, u64::from(p))?;
            put32(&mut inode.i_block, slot * 4, 0);
        }
    }
    let mut start = DIRECT;
    let mut span = per_block;
    for (slot, depth) in [(12usize, 1u32), (13, 2), (14, 3)] {
        let p = inode.i_block_word(slot);
        if p != 0 && start < to && start + span > from && free_tree(tx, inode, u64::from(p), depth, start, from, to)? {
            put32(&mut inode.i_block, slot * 4, 0);
        }
        start += span;
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
    let child_span = per_block.pow(depth - 1);
    let mut block = tx.block(nr, obj)?;
    let mut changed = false;
    for i in 0..per_block as usize {
        let p = le32(&block, i * 4);
        let cs = start + i as u64 * child_span;
        if p == 0 || cs >= to || cs + child_span <= from {
            continue;
        }
        let freed = if depth == 1 {
            free_one(tx, inode, u64::from(p))?;
            true
        } else {
            free_tree(tx, inode, u64::from(p), depth - 1, cs, from, to)?
        };
        if freed {
            put32(&mut block, i * 4, 0);
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
