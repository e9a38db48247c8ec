//! File data on the write side: writing into a file (`write`, copy_file_range, an EA inode's value) and
//! moving an inline file's data out to a block first; with the byte and block position helpers the
//! writers and `file_space.rs` share.
//!
//! Data blocks are written straight to the device before the transaction that maps them commits (ordered
//! mode): a crash can lose the mapping, never point a file at stale data. Newly allocated blocks are
//! written whole, zero-padded, so nothing old shows through.
//!
//! Bounds the arithmetic relies on: a file's logical blocks are below `max_blocks` (checked before a
//! write, a truncate or an fallocate changes anything), so its byte positions are below 2^59; a mapped
//! physical block lies inside the filesystem, whose size in bytes was checked against the device; and a
//! run of blocks mapped or allocated ends inside its hole, its extent or the filesystem.

use super::error::{Error, Object, Result};
use super::extent_write;
use super::fs::{Filesystem, Mapping};
use super::inode::{FileKind, Inode, InodeNo, flags};
use super::map_edit::{MapEdit, goal, max_blocks};
use super::txn::{Txn, inode_mut};
use super::{inline_data, xattr_write};

/// Byte `within` of block `nr` (a file's or the device's, of `bs` bytes); past 2^64 is `TooBig`.
pub(super) fn byte_at(nr: u64, bs: u64, within: u64) -> Result<u64> {
    nr.checked_mul(bs).and_then(|b| b.checked_add(within)).ok_or(Error::TooBig)
}

/// The block byte `pos` lies in, and its offset there (`bs`, the block size, is not 0: the superblock
/// was validated).
pub(super) fn block_of(pos: u64, bs: u64) -> (u64, u64) {
    (pos.checked_div(bs).unwrap_or(0), pos.checked_rem(bs).unwrap_or(0))
}

/// A length in bytes as a file size or position.
fn len64(n: usize) -> Result<u64> {
    u64::try_from(n).map_err(|_| Error::TooBig)
}

/// A length in bytes (at most a buffer's) as a buffer size.
pub(super) fn buf_len(n: u64) -> Result<usize> {
    usize::try_from(n).map_err(|_| Error::TooBig)
}

/// The part of `data`, the bytes from file byte `offset` on, that falls in blocks `lblk..lblk + n`; and
/// where it starts in the first of those blocks. Empty when none of `data` falls there.
fn overlap(data: &[u8], offset: u64, lblk: u64, n: u64, bs: u64) -> Result<(&[u8], u64)> {
    let start = byte_at(lblk, bs, 0)?;
    let stop = byte_at(lblk.checked_add(n).ok_or(Error::TooBig)?, bs, 0)?;
    // A file position as an index into data, clamped to it.
    let at = |pos: u64| usize::try_from(pos.saturating_sub(offset)).map_or(data.len(), |i| i.min(data.len()));
    let (a, b) = (at(start), at(stop));
    Ok((data.get(a..b).unwrap_or_default(), offset.saturating_sub(start)))
}

impl Filesystem {
    /// Writes `data` at `offset` of regular file `ino`; returns the inode as written.
    pub fn write(&self, ino: InodeNo, offset: u64, data: &[u8]) -> Result<std::sync::Arc<Inode>> {
        let mut tx = self.begin()?;
        let mut inode = inode_mut(&tx, ino)?;
        if inode.kind != FileKind::Regular {
            return Err(Error::Invalid);
        }
        if inode.has_flag(flags::IMMUTABLE) {
            return Err(Error::NotPermitted);
        }
        let end = offset.checked_add(len64(data.len())?).ok_or(Error::TooBig)?;
        // Append-only: opens without O_APPEND were refused, but the kernel's writeback rewrites whole pages,
        // so a write may start before the end with the bytes already there. Only what lies past the end
        // is new; nothing before it is changed.
        let (offset, data) = if inode.has_flag(flags::APPEND) && offset < inode.size {
            // The new part starts at the old size (or not at all, when the write ends before it).
            let start = inode.size.min(end);
            let skip = buf_len(start.saturating_sub(offset))?;
            (start, data.get(skip..).unwrap_or_default())
        } else {
            (offset, data)
        };
        if data.is_empty() {
            return self.inode(ino);
        }
        unline(&mut tx, &mut inode)?;
        let bs = u64::from(self.sb.block_size);
        let stop = end.div_ceil(bs);
        if stop > max_blocks(self, &inode) {
            return Err(Error::TooBig);
        }
        let mut map = MapEdit::load(self, &inode)?;
        let first = block_of(offset, bs).0;
        let mut lblk = first;
        let mut last_goal = goal(self, &inode, &map, first);
        // Blocks first..stop hold the data. Each step below maps n <= span blocks from lblk, so lblk
        // stays at most stop (and the goal, a hint, inside the filesystem).
        while let Some(span) = stop.checked_sub(lblk).filter(|&s| s > 0) {
            match map.lookup(self, &inode, lblk)? {
                Mapping::Mapped { pblk, len, unwritten: false } => {
                    let n = len.min(span);
                    // Overwrite in place: only the bytes written, no read-modify-write.
                    let (bytes, within) = overlap(data, offset, lblk, n, bs)?;
                    self.dev.write_all_at(bytes, byte_at(pblk, bs, within)?)?;
                    last_goal = pblk.saturating_add(n);
                    lblk = lblk.saturating_add(n);
                }
                Mapping::Mapped { pblk, len, unwritten: true } => {
                    let n = len.min(span);
                    self.write_blocks(pblk, lblk, n, offset, data)?;
                    let next = lblk.saturating_add(n);
                    map.mark_written(lblk, next);
                    last_goal = pblk.saturating_add(n);
                    lblk = next;
                }
                Mapping::Hole { len } => {
                    let n = len.unwrap_or(u64::MAX).min(span);
                    last_goal = map.fill_hole(&mut tx, &mut inode, (lblk, n), last_goal, false, |pblk, at, got| {
                        self.write_blocks(pblk, at, got, offset, data)
                    })?;
                    lblk = lblk.saturating_add(n);
                }
            }
        }
        map.store(&mut tx, &mut inode, last_goal)?;
        inode.size = inode.size.max(end);
        self.touch(&mut inode, true);
        let written = tx.write_inode(&inode)?;
        tx.commit()?;
        Ok(written)
    }

    /// Writes whole blocks `lblk..lblk+n` at `pblk`, with the part of `data` (at file `offset`) they hold and
    /// zeros elsewhere.
    fn write_blocks(&self, pblk: u64, lblk: u64, n: u64, offset: u64, data: &[u8]) -> Result<()> {
        let bs = u64::from(self.sb.block_size);
        let mut buf = vec![0u8; buf_len(byte_at(n, bs, 0)?)?];
        let (bytes, within) = overlap(data, offset, lblk, n, bs)?;
        if !bytes.is_empty() {
            buf[buf_len(within)?..][..bytes.len()].copy_from_slice(bytes);
        }
        self.dev.write_all_at(&buf, byte_at(pblk, bs, 0)?)?;
        Ok(())
    }

    /// Writes `data` as the whole contents of `inode`, a new regular file without blocks, within `tx`
    /// (an EA inode's value).
    pub(crate) fn fill_new_file(&self, tx: &mut Txn<'_>, inode: &mut Inode, data: &[u8]) -> Result<()> {
        let bs = u64::from(self.sb.block_size);
        let size = len64(data.len())?;
        let n = size.div_ceil(bs);
        let mut map = MapEdit::load(self, inode)?;
        let start_goal = goal(self, inode, &map, 0);
        let last_goal = map.fill_hole(tx, inode, (0, n), start_goal, false, |pblk, at, got| {
            self.write_blocks(pblk, at, got, 0, data)
        })?;
        map.store(tx, inode, last_goal)?;
        inode.size = size;
        Ok(())
    }
}

impl Filesystem {
    /// copy_file_range done inside the engine: read from one file, write to the other.
    pub fn copy_range(&self, src: InodeNo, off_in: u64, dst: InodeNo, off_out: u64, len: u64) -> Result<u64> {
        // At most 16 MiB a call: the caller loops for more.
        const CHUNK: usize = 16 << 20;
        let data = {
            let _g = self.shared();
            let inode = self.inode(src)?;
            self.read(&inode, off_in, usize::try_from(len).map_or(CHUNK, |l| l.min(CHUNK)))?
        };
        if data.is_empty() {
            return Ok(0);
        }
        let copied = len64(data.len())?;
        self.write(dst, off_out, &data)?;
        Ok(copied)
    }
}

/// Moves an inline file's data out of the inode into a block (the engine writes files as block-mapped
/// only), so the usual write path applies.
pub(crate) fn unline(tx: &mut Txn<'_>, inode: &mut Inode) -> Result<()> {
    if !inode.has_flag(flags::INLINE_DATA) {
        return Ok(());
    }
    let fs = tx.fs();
    let data = inline_data::stored(inode)?;
    xattr_write::remove_system_data(inode, Object::InlineData(inode.ino.0))?;
    inode.flags &= !flags::INLINE_DATA;
    inode.i_block = [0; 60];
    if fs.sb.has_incompat(super::features::INCOMPAT_EXTENTS) {
        inode.flags |= flags::EXTENTS;
        inode.i_block = extent_write::empty_root();
    }
    if !data.is_empty() {
        let mut map = MapEdit::load(fs, inode)?;
        let (pblk, _) = map.allocate(tx, inode, 0, 1, goal(fs, inode, &MapEdit::Indirect, 0), false)?;
        let mut block = vec![0u8; super::bytes::index(fs.sb.block_size)];
        block[..data.len()].copy_from_slice(&data);
        fs.dev.write_all_at(&block, byte_at(pblk, u64::from(fs.sb.block_size), 0)?)?;
        map.store(tx, inode, pblk)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_splits_into_the_blocks_it_touches() {
        let data: Vec<u8> = (0..10).collect();
        // Ten bytes at 1020 with 1 KiB blocks: four in block 0, from byte 1020 of it; six in block 1.
        assert_eq!(overlap(&data, 1020, 0, 1, 1024).unwrap(), (&data[..4], 1020));
        assert_eq!(overlap(&data, 1020, 1, 1, 1024).unwrap(), (&data[4..], 0));
        assert_eq!(overlap(&data, 1020, 0, 2, 1024).unwrap(), (&data[..], 1020));
        assert!(overlap(&data, 1020, 5, 1, 1024).unwrap().0.is_empty());
        assert!(matches!(overlap(&data, 0, u64::MAX, 1, 1024), Err(Error::TooBig)));
        assert_eq!(block_of(5000, 4096), (1, 904));
    }
}
