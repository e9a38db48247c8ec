//! Directory blocks as written: an entry record (its `rec_len` encoded for the block size), the checksum
//! tail, a leaf packed from a list of entries or with a new entry fitted into free room, and the
//! directory's blocks themselves (the mapped block to change, checksum-verified; a new one appended). The
//! read side of the format is `dir_block`.
//!
//! Offsets inside a block are bounded by the block size (at most 64 KiB) and checked against it; a value
//! that would not fit its on-disk field is an error, never truncated.

use super::bytes::index;
use super::bytes_mut::{put8, put16, put32};
use super::checksum::crc32c;
use super::dir_block::{self, rec_len_for};
use super::error::{CorruptKind, Error, Object, Result};
use super::features::INCOMPAT_FILETYPE;
use super::fs::{Filesystem, Mapping};
use super::inode::Inode;
use super::map_edit::MapEdit;
use super::txn::Txn;

/// `rec_len` of the `.` entry (`rec_len_for(1)`), which `..` follows.
pub(super) const DOT_REC_LEN: usize = 12;

/// A live directory entry, as moved between blocks.
#[derive(Clone)]
pub(super) struct Ent {
    pub(super) ino: u32,
    pub(super) ftype: u8,
    pub(super) name: Vec<u8>,
    pub(super) hash: u32,
}

pub(super) fn rec_len_to_disk(len: usize, bs: usize) -> u16 {
    if let Ok(v) = u16::try_from(len) {
        v
    } else if len == bs {
        if bs == 65536 { 65535 } else { 0 }
    } else {
        // Bits 16 and 17 go into the two low bits; the masks keep the value within 16 bits.
        u16::try_from((len & 65532) | ((len >> 16) & 3)).unwrap_or(u16::MAX)
    }
}

/// The bytes of `b` from `off` on; empty past its end, where writes are dropped (as [`put32`]'s are).
pub(super) fn from_mut(b: &mut [u8], off: usize) -> &mut [u8] {
    b.get_mut(off..).unwrap_or_default()
}

impl Filesystem {
    fn tail_size(&self) -> usize {
        if self.sb.has_metadata_csum() { dir_block::TAIL_SIZE } else { 0 }
    }

    pub(super) fn block_bytes(&self) -> usize {
        index(self.sb.block_size)
    }

    /// Bytes of a leaf block that hold entries (all but the checksum tail; a block is at least 1 KiB).
    pub(super) fn leaf_space(&self) -> usize {
        self.block_bytes().saturating_sub(self.tail_size())
    }

    /// Writes a directory entry at `off`; a name longer than 255 bytes, or one that would run past the
    /// block, is refused.
    pub(super) fn put_dirent(
        &self,
        b: &mut [u8],
        off: usize,
        ino: u32,
        rec_len: usize,
        name: &[u8],
        ftype: u8,
    ) -> Result<()> {
        let name_len = u8::try_from(name.len()).map_err(|_| Error::NameTooLong)?;
        let d = from_mut(b, off);
        put32(d, 0, ino);
        put16(d, 4, rec_len_to_disk(rec_len, self.block_bytes()));
        put8(d, 6, name_len);
        put8(d, 7, if self.sb.has_incompat(INCOMPAT_FILETYPE) { ftype } else { 0 });
        d.get_mut(8..).and_then(|n| n.get_mut(..name.len())).ok_or(Error::NoSpace)?.copy_from_slice(name);
        Ok(())
    }

    /// Writes the checksum tail of a leaf block.
    pub(super) fn seal_leaf(&self, dir: &Inode, b: &mut [u8]) {
        if !self.sb.has_metadata_csum() {
            return;
        }
        let Some(t) = b.len().checked_sub(dir_block::TAIL_SIZE) else { return };
        let (covered, tail) = b.split_at_mut(t);
        put32(tail, 0, 0);
        put16(tail, 4, 12);
        put8(tail, 6, 0);
        put8(tail, 7, 0xDE);
        put32(tail, 8, crc32c(dir.csum_seed, covered));
    }

    /// A fresh leaf block holding `ents` packed, the last one stretched to the end of the space; `NoSpace`
    /// when they do not fit.
    pub(super) fn pack_leaf(&self, dir: &Inode, ents: &[Ent]) -> Result<Vec<u8>> {
        let space = self.leaf_space();
        let mut b = vec![0u8; self.block_bytes()];
        let Some((last, first)) = ents.split_last() else {
            self.put_dirent(&mut b, 0, 0, space, b"", 0)?;
            self.seal_leaf(dir, &mut b);
            return Ok(b);
        };
        let mut off = 0usize;
        for e in first {
            let len = rec_len_for(e.name.len());
            self.put_dirent(&mut b, off, e.ino, len, &e.name, e.ftype)?;
            off = off.checked_add(len).ok_or(Error::NoSpace)?;
        }
        let len = space.checked_sub(off).filter(|&l| l >= rec_len_for(last.name.len())).ok_or(Error::NoSpace)?;
        self.put_dirent(&mut b, off, last.ino, len, &last.name, last.ftype)?;
        self.seal_leaf(dir, &mut b);
        Ok(b)
    }

    /// Tries to fit a new entry into `block`; returns the changed block, or `None` when it is full.
    pub(super) fn insert_into(
        &self,
        dir: &Inode,
        block: &[u8],
        lblk: u64,
        name: &[u8],
        ino: u32,
        ftype: u8,
    ) -> Result<Option<Vec<u8>>> {
        let need = rec_len_for(name.len());
        let space = self.leaf_space();
        let obj = Object::DirBlock { ino: dir.ino.0, lblk };
        let mut slot = None;
        for d in self.dirents(&block[..space], obj) {
            let d = d?;
            let used = if d.inode == 0 { 0 } else { rec_len_for(d.name.len()) };
            // The walk checked that a record holds its own name: `used <= rec_len`.
            if let Some(free) = d.rec_len.checked_sub(used).filter(|&free| free >= need) {
                slot = Some((d.offset, used, free));
                break;
            }
        }
        let Some((off, used, free)) = slot else { return Ok(None) };
        let mut b = block.to_vec();
        if used > 0 {
            put16(from_mut(&mut b, off), 4, rec_len_to_disk(used, self.block_bytes()));
        }
        // Within the record, inside the block.
        self.put_dirent(&mut b, off.saturating_add(used), ino, free, name, ftype)?;
        self.seal_leaf(dir, &mut b);
        Ok(Some(b))
    }

    /// Appends a block holding `content` to directory `dir` (size and map updated; the caller writes the
    /// inode). Returns its logical block number.
    pub(super) fn append_dir_block(&self, tx: &mut Txn<'_>, dir: &mut Inode, content: Vec<u8>) -> Result<u64> {
        let bs = u64::from(self.sb.block_size);
        let lblk = dir.size.checked_div(bs).unwrap_or(0);
        let new_size = dir.size.checked_add(bs).ok_or(Error::TooBig)?;
        let mut map = MapEdit::load(self, dir)?;
        // The block after the directory's last, else the start of its group: only a hint.
        let goal = match lblk.checked_sub(1).map(|l| map.lookup(self, dir, l)) {
            Some(Ok(Mapping::Mapped { pblk, .. })) => pblk.saturating_add(1),
            _ => {
                let group = dir.ino.0.saturating_sub(1).checked_div(self.sb.inodes_per_group).unwrap_or(0);
                self.sb.group_first_block(u64::from(group))
            }
        };
        let (pblk, _) = map.allocate(tx, dir, lblk, 1, goal, false)?;
        tx.put(pblk, content);
        map.store(tx, dir, pblk)?;
        dir.size = new_size;
        Ok(lblk)
    }

    pub(super) fn dir_pblk(&self, dir: &Inode, lblk: u64) -> Result<u64> {
        match self.map(dir, lblk)? {
            Mapping::Mapped { pblk, unwritten: false, .. } => Ok(pblk),
            _ => Err(Error::corrupt(Object::DirBlock { ino: dir.ino.0, lblk }, CorruptKind::DirectoryBlockIsHole)),
        }
    }

    /// A leaf block to change, checksum-verified (`None` for a hole).
    pub(super) fn leaf_for_write(&self, dir: &Inode, lblk: u64) -> Result<Option<std::sync::Arc<Vec<u8>>>> {
        let Some(block) = self.dir_block(dir, lblk)? else { return Ok(None) };
        if self.sb.has_metadata_csum() {
            dir_block::verify_tail(&block, dir.csum_seed, Object::DirBlock { ino: dir.ino.0, lblk })?;
        }
        Ok(Some(block))
    }
}
