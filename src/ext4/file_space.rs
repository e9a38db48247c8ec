//! A file's space changed other than by writing data into it: truncate (`set_size`), fallocate
//! (preallocated unwritten extents, punched holes, zeroed ranges), and deleting an inode with all it holds.
//!
//! Zeros go straight to the device, as the writers' data does (ordered mode); the blocks unmapped are
//! freed in the same transaction that unmaps them.
//!
//! Bounds the arithmetic relies on: a file's logical blocks are below `max_blocks` (checked before a
//! write, a truncate or an fallocate changes anything), so its byte positions are below 2^59; a mapped
//! physical block lies inside the filesystem, whose size in bytes was checked against the device; and a
//! run of blocks mapped or allocated ends inside its hole, its extent or the filesystem.

use super::error::{Error, Result};
use super::file::{block_of, buf_len, byte_at, unline};
use super::fs::{Filesystem, Mapping};
use super::inode::{FileKind, Inode, InodeNo, Timestamp, flags};
use super::map_edit::{MapEdit, goal, max_blocks};
use super::txn::{Txn, inode_mut};
use super::xattr_write;

impl Filesystem {
    /// Writes zeros over bytes `from..to` of the file where they are stored (holes and unwritten extents
    /// already read as zeros).
    fn zero_bytes(&self, inode: &Inode, map: &MapEdit, from: u64, to: u64) -> Result<()> {
        let bs = u64::from(self.sb.block_size);
        let mut pos = from;
        while let Some(left) = to.checked_sub(pos).filter(|&n| n > 0) {
            let (lblk, within) = block_of(pos, bs);
            // The rest of pos's block, or of the range: within < bs, so n >= 1 and pos + n <= to.
            let n = left.min(bs.saturating_sub(within));
            if let Mapping::Mapped { pblk, unwritten: false, .. } = map.lookup(self, inode, lblk)? {
                let zeros = vec![0u8; buf_len(n)?];
                self.dev.write_all_at(&zeros, byte_at(pblk, bs, within)?)?;
            }
            pos = pos.saturating_add(n);
        }
        Ok(())
    }

    /// Changes the size of `inode` within a transaction: blocks past a smaller size are freed and the
    /// rest of the last block is zeroed, so a later extension reads zeros.
    pub(crate) fn set_size(&self, tx: &mut Txn<'_>, inode: &mut Inode, size: u64) -> Result<()> {
        if inode.kind != FileKind::Regular {
            return Err(Error::Invalid);
        }
        unline(tx, inode)?;
        let bs = u64::from(self.sb.block_size);
        let keep = size.div_ceil(bs);
        if keep > max_blocks(self, inode) {
            return Err(Error::TooBig);
        }
        if size < inode.size {
            let mut map = MapEdit::load(self, inode)?;
            map.remove(tx, inode, keep, u64::MAX)?;
            if block_of(size, bs).1 != 0 {
                self.zero_bytes(inode, &map, size, byte_at(keep, bs, 0)?)?;
            }
            let g = goal(self, inode, &map, 0);
            map.store(tx, inode, g)?;
        }
        inode.size = size;
        Ok(())
    }

    /// fallocate(2): `mode` 0 or KEEP_SIZE (1) preallocates unwritten extents; PUNCH_HOLE (2, with
    /// KEEP_SIZE) frees the range; ZERO_RANGE (0x10) makes it read as zeros. Extent-mapped files only.
    pub fn fallocate(&self, ino: InodeNo, offset: u64, len: u64, mode: i32) -> Result<std::sync::Arc<Inode>> {
        use libc::{
            FALLOC_FL_KEEP_SIZE as KEEP_SIZE, FALLOC_FL_PUNCH_HOLE as PUNCH_HOLE, FALLOC_FL_ZERO_RANGE as ZERO_RANGE,
        };
        let mut tx = self.begin()?;
        let mut inode = inode_mut(&tx, ino)?;
        if inode.kind != FileKind::Regular {
            return Err(Error::Invalid);
        }
        if inode.has_flag(flags::IMMUTABLE) || inode.has_flag(flags::APPEND) {
            return Err(Error::NotPermitted);
        }
        if mode & !(KEEP_SIZE | PUNCH_HOLE | ZERO_RANGE) != 0 || (mode & PUNCH_HOLE != 0 && mode & KEEP_SIZE == 0) {
            return Err(Error::NotSupported);
        }
        let end = offset.checked_add(len).ok_or(Error::TooBig)?;
        if len == 0 {
            return Err(Error::Invalid);
        }
        unline(&mut tx, &mut inode)?;
        if !inode.has_flag(flags::EXTENTS) && mode & PUNCH_HOLE == 0 {
            // As the kernel: indirect-mapped files can have holes punched, but nothing preallocated.
            return Err(Error::NotSupported);
        }
        let bs = u64::from(self.sb.block_size);
        if end.div_ceil(bs) > max_blocks(self, &inode) {
            return Err(Error::TooBig);
        }
        let mut map = MapEdit::load(self, &inode)?;
        let (full_from, full_to) = (offset.div_ceil(bs), block_of(end, bs).0);
        if mode & (PUNCH_HOLE | ZERO_RANGE) != 0 {
            // Whole blocks inside the range are unmapped; the partial ones at the edges are zeroed.
            if full_from < full_to {
                map.remove(&mut tx, &mut inode, full_from, full_to)?;
                self.zero_bytes(&inode, &map, offset, byte_at(full_from, bs, 0)?.min(end))?;
                self.zero_bytes(&inode, &map, byte_at(full_to, bs, 0)?.max(offset), end)?;
            } else {
                self.zero_bytes(&inode, &map, offset, end)?;
            }
        }
        if mode & PUNCH_HOLE == 0 {
            // Preallocate every hole in the range as unwritten extents (ZERO_RANGE: the whole blocks only;
            // its edges are zeroed above and stay mapped).
            let (from, to) =
                if mode & ZERO_RANGE != 0 { (full_from, full_to) } else { (block_of(offset, bs).0, end.div_ceil(bs)) };
            let mut lblk = from;
            let mut g = goal(self, &inode, &map, from);
            // Each step covers at most span blocks, so lblk stays at most to (and g, a hint, is harmless).
            while let Some(span) = to.checked_sub(lblk).filter(|&s| s > 0) {
                match map.lookup(self, &inode, lblk)? {
                    Mapping::Mapped { len, pblk, .. } => {
                        g = pblk.saturating_add(len);
                        lblk = lblk.saturating_add(len.min(span));
                    }
                    Mapping::Hole { len } => {
                        let n = len.unwrap_or(u64::MAX).min(span);
                        g = map.fill_hole(&mut tx, &mut inode, (lblk, n), g, true, |_, _, _| Ok(()))?;
                        lblk = lblk.saturating_add(n);
                    }
                }
            }
            if mode & KEEP_SIZE == 0 {
                inode.size = inode.size.max(end);
            }
        }
        let g = goal(self, &inode, &map, 0);
        map.store(&mut tx, &mut inode, g)?;
        self.touch(&mut inode, true);
        let written = tx.write_inode(&inode)?;
        tx.commit()?;
        Ok(written)
    }

    /// Frees everything an inode holds (data, tree blocks, xattr block) and the inode itself.
    pub(crate) fn delete_inode(&self, tx: &mut Txn<'_>, inode: &mut Inode) -> Result<()> {
        let holds_blocks = match inode.kind {
            FileKind::Regular | FileKind::Directory => true,
            FileKind::Symlink => !self.is_fast_symlink_inode(inode),
            _ => false,
        };
        if holds_blocks && !inode.has_flag(flags::INLINE_DATA) {
            let mut map = MapEdit::load(self, inode)?;
            map.remove(tx, inode, 0, u64::MAX)?;
            map.store(tx, inode, 0)?;
        }
        xattr_write::release_all(tx, inode)?;
        let is_dir = inode.kind == FileKind::Directory;
        inode.links_count = 0;
        inode.size = 0;
        // i_dtime is 32 bits: the low half of the time, in two's complement (as the kernel stores it).
        inode.dtime = super::bytes::low32(u64::from_ne_bytes(Timestamp::now().sec.to_ne_bytes()));
        tx.write_inode(inode)?;
        tx.free_inode(inode.ino, is_dir)?;
        self.inodes.remove(&inode.ino.0);
        Ok(())
    }
}
