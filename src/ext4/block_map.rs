//! The ext2/ext3 block map: twelve direct pointers in `i_block`, then single, double and triple indirect
//! blocks of 32-bit block numbers. A zero pointer is a hole.

use super::bytes::le32;
use super::error::{Object, Result};
use super::fs::{Filesystem, Mapping};
use super::inode::Inode;

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
