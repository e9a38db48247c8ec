//! Inline data (inline_data feature): small files and directories kept inside the inode, in the 60 bytes of
//! `i_block` and, beyond them, in the value of the `system.data` extended attribute in the inode body.

use super::bytes::le32;
use super::error::{CorruptKind, Error, Object, Result};
use super::inode::{I_BLOCK_SIZE, Inode};
use super::xattr::{self, INDEX_SYSTEM, Value};

/// The bytes of `system.data` (empty when absent).
fn system_data(inode: &Inode) -> Result<Vec<u8>> {
    let obj = Object::InlineData(inode.ino.0);
    for e in xattr::parse_ibody(&inode.xattr_area, obj)? {
        if e.index == INDEX_SYSTEM && e.name == b"data" {
            return match e.value {
                Value::Stored(v) => Ok(v),
                Value::EaInode { .. } => Err(Error::corrupt(obj, CorruptKind::SystemDataStoredInEaInode)),
            };
        }
    }
    Ok(Vec::new())
}

/// The bytes an inline file stores: `i_block`, then `system.data`, cut to `i_size`. A file may be
/// larger than what it stores (`mke2fs -d` makes sparse small files that way): the rest reads as zeros.
pub fn stored(inode: &Inode) -> Result<Vec<u8>> {
    let mut data = inode.i_block.to_vec();
    data.extend_from_slice(&system_data(inode)?);
    data.truncate(usize::try_from(inode.size).unwrap_or(usize::MAX));
    Ok(data)
}

/// `len` bytes of an inline file from `offset` (short at the end of the file).
pub fn read(inode: &Inode, offset: u64, len: usize) -> Result<Vec<u8>> {
    if offset >= inode.size {
        return Ok(Vec::new());
    }
    let len = usize::try_from(inode.size.saturating_sub(offset)).map_or(len, |left| left.min(len));
    let data = stored(inode)?;
    let mut out = vec![0u8; len];
    if let Some(src) = usize::try_from(offset).ok().and_then(|o| data.get(o..)) {
        let n = src.len().min(len);
        out[..n].copy_from_slice(&src[..n]);
    }
    Ok(out)
}

/// An inline directory: its parent's inode number (the first 4 bytes of `i_block`), then up to two regions
/// of directory entries: the rest of `i_block`, and `system.data`.
pub struct InlineDir {
    pub parent: u32,
    pub regions: [Vec<u8>; 2],
}

/// Offset of each region in the directory's position space (used for readdir cookies).
#[expect(clippy::as_conversions, reason = "a constant: 60")]
pub const REGION_START: [u64; 2] = [4, I_BLOCK_SIZE as u64];

pub fn dir(inode: &Inode) -> Result<InlineDir> {
    Ok(InlineDir { parent: le32(&inode.i_block, 0), regions: [inode.i_block[4..].to_vec(), system_data(inode)?] })
}
