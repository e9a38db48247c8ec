//! Reading files: the block map walked a run at a time into the reply buffer (data bypasses the block
//! cache), symlink targets, and SEEK_DATA/SEEK_HOLE.

use super::error::{CorruptKind, Error, Object, Result};
use super::fs::{Filesystem, Mapping};
use super::inode::{FileKind as Kind, Inode, flags};
use super::{block_map, extent, fscrypt, inline_data};

/// Longest symlink target the kernel accepts (PATH_MAX less the NUL).
const SYMLINK_MAX: u64 = 4095;

impl Filesystem {
    /// Maps logical block `lblk` of `inode` to where it is on disk.
    pub(in crate::ext4) fn map(&self, inode: &Inode, lblk: u64) -> Result<Mapping> {
        if inode.has_flag(flags::EXTENTS) {
            extent::map(self, inode, lblk)
        } else if inode.has_flag(flags::INLINE_DATA) {
            Err(Error::corrupt(Object::Inode(inode.ino.0), CorruptKind::InlineInodeHasNoBlockMap))
        } else {
            block_map::map(self, inode, lblk)
        }
    }

    /// Reads up to `len` bytes of `inode`'s data from byte `offset`; short at the end of the file.
    pub(in crate::ext4) fn read(&self, inode: &Inode, offset: u64, len: usize) -> Result<Vec<u8>> {
        if inode.kind == Kind::Directory {
            return Err(Error::IsDir);
        }
        self.check_open(inode)?;
        if offset >= inode.size {
            return Ok(Vec::new());
        }
        let len = usize::try_from(inode.size.saturating_sub(offset)).map_or(len, |left| left.min(len));
        if inode.has_flag(flags::INLINE_DATA) {
            return inline_data::read(inode, offset, len);
        }
        let mut buf = vec![0u8; len];
        self.read_mapped(inode, offset, &mut buf)?;
        Ok(buf)
    }

    /// Fills `buf` with the data at `offset`, one extent (or hole) at a time: holes and unwritten extents
    /// stay zero, mapped runs are read from the device in one call each.
    fn read_mapped(&self, inode: &Inode, offset: u64, buf: &mut [u8]) -> Result<()> {
        let bs = u64::from(self.sb.block_size);
        let mut done = 0usize;
        while let Some(rest) = buf.get_mut(done..).filter(|r| !r.is_empty()) {
            // offset + done < the file's size, which is below 2^63.
            let pos = offset.saturating_add(u64::try_from(done).unwrap_or(u64::MAX));
            let (lblk, within) = (pos.checked_div(bs).unwrap_or(0), pos.checked_rem(bs).unwrap_or(0));
            let (run_blocks, pblk) = match self.map(inode, lblk)? {
                Mapping::Mapped { pblk, len, unwritten } => (len, (!unwritten).then_some(pblk)),
                Mapping::Hole { len } => (len.unwrap_or(u64::MAX), None),
            };
            let run_bytes = run_blocks.saturating_mul(bs).saturating_sub(within);
            let n = usize::try_from(run_bytes).unwrap_or(usize::MAX).min(rest.len());
            if let Some(pblk) = pblk {
                // pblk..pblk+len was checked to lie inside the filesystem, and so inside the device.
                let at = pblk.checked_mul(bs).and_then(|b| b.checked_add(within)).ok_or(Error::TooBig)?;
                self.dev.read_exact_at(&mut rest[..n], at)?;
            }
            // n >= 1 (a run holds at least the block at pos) and done + n <= buf.len().
            done = done.saturating_add(n.max(1));
        }
        Ok(())
    }

    /// The target of a symlink; for an encrypted one, the no-key encoding of its ciphertext, as the kernel
    /// shows it without the key.
    pub(in crate::ext4) fn readlink(&self, inode: &Inode) -> Result<Vec<u8>> {
        let stored = self.stored_link_target(inode)?;
        if !inode.has_flag(flags::ENCRYPT) {
            return Ok(stored);
        }
        let ciphertext = fscrypt::symlink_ciphertext(&stored).ok_or_else(|| {
            Error::corrupt(Object::Symlink(inode.ino.0), CorruptKind::EncryptedSymlinkLengthOutOfRange)
        })?;
        Ok(fscrypt::nokey_name(ciphertext, None))
    }

    /// A symlink's target as stored.
    fn stored_link_target(&self, inode: &Inode) -> Result<Vec<u8>> {
        let obj = Object::Symlink(inode.ino.0);
        if inode.kind != Kind::Symlink {
            return Err(Error::Invalid);
        }
        if inode.size == 0 || inode.size > SYMLINK_MAX.min(u64::from(self.sb.block_size)) {
            return Err(Error::corrupt(obj, CorruptKind::SymlinkSizeOutOfRange));
        }
        // At most a block.
        let symlink_len = usize::try_from(inode.size).unwrap_or(0);
        if inode.has_flag(flags::INLINE_DATA) {
            return inline_data::read(inode, 0, symlink_len);
        }
        if self.is_fast_symlink_inode(inode) {
            let len = symlink_len;
            return inode
                .i_block
                .get(..len)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| Error::corrupt(obj, CorruptKind::FastSymlinkLongerThanIBlock));
        }
        let target = self.read(inode, 0, symlink_len)?;
        if target.len() != symlink_len {
            return Err(Error::corrupt(obj, CorruptKind::SymlinkShorterThanItsSize));
        }
        Ok(target)
    }

    /// The kernel's `ext4_inode_is_fast_symlink`: no data blocks besides an xattr block.
    pub(crate) fn is_fast_symlink_inode(&self, inode: &Inode) -> bool {
        // An xattr block takes a whole cluster (bigalloc).
        let cluster =
            u64::from(self.sb.block_size / 512) << self.sb.log_cluster_size.saturating_sub(self.sb.log_block_size);
        let ea_blocks = if inode.file_acl != 0 { cluster } else { 0 };
        inode.blocks_512.saturating_sub(ea_blocks) == 0 && inode.size < 60
    }

    /// The next offset at or after `offset` that holds data (`SEEK_DATA`), or `None` past the last data.
    pub(in crate::ext4) fn seek_data(&self, inode: &Inode, offset: u64) -> Result<Option<u64>> {
        self.seek(inode, offset, true)
    }

    /// The next offset at or after `offset` inside a hole (`SEEK_HOLE`); the end of file counts as one.
    pub(in crate::ext4) fn seek_hole(&self, inode: &Inode, offset: u64) -> Result<Option<u64>> {
        self.seek(inode, offset, false)
    }

    fn seek(&self, inode: &Inode, offset: u64, want_data: bool) -> Result<Option<u64>> {
        if offset >= inode.size {
            return Ok(None);
        }
        if inode.has_flag(flags::INLINE_DATA) {
            return Ok(Some(if want_data { offset } else { inode.size }));
        }
        let bs = u64::from(self.sb.block_size);
        let mut lblk = offset.checked_div(bs).unwrap_or(0);
        // A real file alternates at most blocks_count runs of data with holes; a crafted map can present
        // billions of runs built from a few physical blocks.
        let mut budget = self.sb.blocks_count.saturating_mul(2).saturating_add(2);
        while lblk.checked_mul(bs).is_some_and(|pos| pos < inode.size) {
            budget = budget.checked_sub(1).ok_or_else(|| {
                Error::corrupt(Object::FileData(inode.ino.0), CorruptKind::FileMapsMoreRunsThanFilesystemHolds)
            })?;
            let (len, is_data) = match self.map(inode, lblk)? {
                // Unwritten extents read as zeros; like the kernel, report them as data only when written.
                Mapping::Mapped { len, unwritten, .. } => (len, !unwritten),
                Mapping::Hole { len } => (len.unwrap_or(u64::MAX), false),
            };
            if is_data == want_data {
                return Ok(Some(lblk.saturating_mul(bs).max(offset)));
            }
            lblk = lblk.saturating_add(len.max(1));
        }
        Ok(if want_data { None } else { Some(inode.size) })
    }
}
