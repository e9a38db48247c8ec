//! Directory entry changes: adding, removing and re-pointing entries in linear, htree and inline
//! directories, and re-pointing a directory's `..`. An inline directory first moves into a block
//! (`dir_create`); entries are written through the leaf-block writers of `dir_block_write`, and in an htree
//! directory through `dir_htree_write`, which a one-block linear directory becomes when it fills up.

use std::ops::Range;

use super::bytes::{le16, le32};
use super::bytes_mut::{put8, put16, put32};
use super::dir_block::rec_len_from_disk;
use super::dir_block_write::{DOT_REC_LEN, Ent, from_mut, rec_len_to_disk};
use super::dir_htree_write::{ROOT_COUNT, dx_limit_count};
use super::error::{CorruptKind, Error, Object, Result};
use super::features::{COMPAT_DIR_INDEX, INCOMPAT_FILETYPE};
use super::fs::Filesystem;
use super::inode::{FileKind, Inode, InodeNo, flags};
use super::txn::Txn;

/// Where the name of a first block's `..` entry lies.
const DOTDOT_NAME: Range<usize> = 20..22;

/// The `file_type` byte of a directory entry.
pub fn file_type_byte(kind: FileKind) -> u8 {
    match kind {
        FileKind::Regular => 1,
        FileKind::Directory => 2,
        FileKind::CharDevice => 3,
        FileKind::BlockDevice => 4,
        FileKind::Fifo => 5,
        FileKind::Socket => 6,
        FileKind::Symlink => 7,
    }
}

impl Filesystem {
    fn is_htree_dir(&self, dir: &Inode) -> bool {
        self.sb.has_compat(COMPAT_DIR_INDEX) && dir.has_flag(flags::INDEX)
    }

    /// Adds entry `name` -> `ino` to directory `dir` (the caller writes `dir`).
    pub(crate) fn add_entry(
        &self,
        tx: &mut Txn<'_>,
        dir: &mut Inode,
        name: &[u8],
        ino: InodeNo,
        kind: FileKind,
    ) -> Result<()> {
        if self.casefolded(dir) {
            if let Some(enc) = self.casefold {
                enc.check_new_name(name)?;
            }
        }
        self.unline_dir(tx, dir)?;
        let ftype = file_type_byte(kind);
        if self.is_htree_dir(dir) {
            return self.htree_add(tx, dir, name, ino.0, ftype);
        }
        let blocks = dir.size.checked_div(u64::from(self.sb.block_size)).unwrap_or(0);
        for lblk in super::dir_read::DirWalk::new(self, dir, 0) {
            let lblk = lblk?;
            let Some(block) = self.leaf_for_write(dir, lblk)? else { continue };
            if let Some(b) = self.insert_into(dir, &block, lblk, name, ino.0, ftype)? {
                let pblk = self.dir_pblk(dir, lblk)?;
                tx.put(pblk, b);
                return Ok(());
            }
        }
        if blocks == 1 && self.sb.has_compat(COMPAT_DIR_INDEX) {
            self.make_indexed(tx, dir)?;
            return self.htree_add(tx, dir, name, ino.0, ftype);
        }
        let ent = Ent { ino: ino.0, ftype, name: name.to_vec(), hash: 0 };
        let block = self.pack_leaf(dir, &[ent])?;
        self.append_dir_block(tx, dir, block)?;
        Ok(())
    }

    /// Where entry `name` is: its block and byte offset, and the offset of the entry before it in that
    /// block (if any).
    fn locate(&self, dir: &Inode, name: &[u8]) -> Result<(u64, usize, Option<usize>)> {
        let wanted = self.wanted(dir, name)?;
        let search = |lblk: u64| -> Result<Option<(u64, usize, Option<usize>)>> {
            let Some(block) = self.leaf_for_write(dir, lblk)? else { return Ok(None) };
            let obj = Object::DirBlock { ino: dir.ino.0, lblk };
            let mut prev = None;
            for d in self.dirents(&block[..self.leaf_space()], obj) {
                let d = d?;
                if d.inode != 0 && wanted.matches(d.name) {
                    return Ok(Some((lblk, d.offset, prev)));
                }
                prev = Some(d.offset);
            }
            Ok(None)
        };
        if self.is_htree_dir(dir) {
            match super::dir_htree::lookup(self, dir, wanted.probe(), search) {
                Ok(Some(found)) => return Ok(found),
                Ok(None) => return Err(Error::NotFound),
                Err(Error::Corrupt { object: Object::Htree(_), .. }) => {}
                Err(e) => return Err(e),
            }
        }
        for lblk in super::dir_read::DirWalk::new(self, dir, 0) {
            let lblk = lblk?;
            if self.is_htree_dir(dir) && lblk == 0 {
                continue;
            }
            if let Some(found) = search(lblk)? {
                return Ok(found);
            }
        }
        Err(Error::NotFound)
    }

    /// Removes entry `name` from `dir`; returns the inode it named (the caller writes `dir`).
    pub(crate) fn remove_entry(&self, tx: &mut Txn<'_>, dir: &mut Inode, name: &[u8]) -> Result<InodeNo> {
        self.unline_dir(tx, dir)?;
        let (lblk, off, prev) = self.locate(dir, name)?;
        let pblk = self.dir_pblk(dir, lblk)?;
        let mut b = tx.block(pblk, Object::DirBlock { ino: dir.ino.0, lblk })?;
        let bs = self.block_bytes();
        let rec = b.get(off..).unwrap_or_default();
        let ino = le32(rec, 0);
        let rec_len = rec_len_from_disk(le16(rec, 4), bs);
        match prev {
            // Fold the record into the one before it, as the kernel does.
            Some(p) => {
                let prev = from_mut(&mut b, p);
                // Both records lie in the block: the sum is at most its size.
                let merged = rec_len_from_disk(le16(prev, 4), bs).saturating_add(rec_len);
                put16(prev, 4, rec_len_to_disk(merged, bs));
            }
            None => put32(&mut b, off, 0),
        }
        self.seal_leaf(dir, &mut b);
        tx.put(pblk, b);
        Ok(InodeNo(ino))
    }

    /// Points existing entry `name` of `dir` at `ino` (rename over an existing name, exchange).
    pub(crate) fn repoint_entry(
        &self,
        tx: &mut Txn<'_>,
        dir: &mut Inode,
        name: &[u8],
        ino: InodeNo,
        kind: FileKind,
    ) -> Result<()> {
        self.unline_dir(tx, dir)?;
        let (lblk, off, _) = self.locate(dir, name)?;
        let pblk = self.dir_pblk(dir, lblk)?;
        let mut b = tx.block(pblk, Object::DirBlock { ino: dir.ino.0, lblk })?;
        put32(&mut b, off, ino.0);
        if self.sb.has_incompat(INCOMPAT_FILETYPE) {
            put8(from_mut(&mut b, off), 7, file_type_byte(kind));
        }
        self.seal_leaf(dir, &mut b);
        tx.put(pblk, b);
        Ok(())
    }

    /// Points the `..` entry of directory `dir` at `parent`.
    pub(crate) fn set_dotdot(&self, tx: &mut Txn<'_>, dir: &mut Inode, parent: InodeNo) -> Result<()> {
        if dir.has_flag(flags::INLINE_DATA) {
            put32(&mut dir.i_block, 0, parent.0);
            return Ok(());
        }
        let pblk = self.dir_pblk(dir, 0)?;
        let mut b = tx.block(pblk, Object::DirBlock { ino: dir.ino.0, lblk: 0 })?;
        // `..` is the second entry, after the 12 bytes of `.`; its name follows its 8-byte header.
        if b.get(DOTDOT_NAME) != Some(b"..".as_slice()) {
            return Err(Error::corrupt(Object::DirBlock { ino: dir.ino.0, lblk: 0 }, CorruptKind::NoDotDotEntry));
        }
        put32(&mut b, DOT_REC_LEN, parent.0);
        if self.is_htree_dir(dir) {
            // The root's count and limit come from disk: sealing trusts them, so check them first.
            let (limit, count) = dx_limit_count(&b, ROOT_COUNT);
            if limit != self.dx_limit(ROOT_COUNT) || count == 0 || count > limit {
                return Err(Error::corrupt(Object::Htree(dir.ino.0), CorruptKind::HtreeRootCountOrLimitOutOfRange));
            }
            self.seal_dx(dir, &mut b, ROOT_COUNT);
        } else {
            self.seal_leaf(dir, &mut b);
        }
        tx.put(pblk, b);
        Ok(())
    }
}
