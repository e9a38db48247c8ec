//! A directory's first block and its emptiness: the block of `.` and `..` a new directory gets, an inline
//! directory's entries moved into a block of their own before one of them changes, and the emptiness test
//! rmdir and rename make.

use super::dir_block_write::{DOT_REC_LEN, Ent};
use super::error::{Object, Result};
use super::fs::Filesystem;
use super::inline_data;
use super::inode::{Inode, InodeNo, flags};
use super::txn::Txn;
use super::xattr_write;

impl Filesystem {
    /// The first block of a new directory: `.` and `..` (the caller maps it with [`Self::append_dir_block`]).
    fn first_dir_block(&self, dir: &Inode, parent: InodeNo) -> Result<Vec<u8>> {
        let mut b = vec![0u8; self.block_bytes()];
        self.put_dirent(&mut b, 0, dir.ino.0, DOT_REC_LEN, b".", 2)?;
        // A leaf holds at least 1012 bytes.
        self.put_dirent(&mut b, DOT_REC_LEN, parent.0, self.leaf_space().saturating_sub(DOT_REC_LEN), b"..", 2)?;
        self.seal_leaf(dir, &mut b);
        Ok(b)
    }

    /// Gives new directory `dir` its first block.
    pub(crate) fn init_dir(&self, tx: &mut Txn<'_>, dir: &mut Inode, parent: InodeNo) -> Result<()> {
        let block = self.first_dir_block(dir, parent)?;
        self.append_dir_block(tx, dir, block)?;
        Ok(())
    }

    /// Moves an inline directory's entries into a block of its own.
    pub(super) fn unline_dir(&self, tx: &mut Txn<'_>, dir: &mut Inode) -> Result<()> {
        if !dir.has_flag(flags::INLINE_DATA) {
            return Ok(());
        }
        let d = inline_data::dir(dir)?;
        let mut ents = Vec::new();
        for region in &d.regions {
            for e in self.dirents(region, Object::InlineData(dir.ino.0)) {
                let e = e?;
                if e.inode != 0 {
                    ents.push(Ent { ino: e.inode, ftype: e.file_type, name: e.name.to_vec(), hash: 0 });
                }
            }
        }
        xattr_write::remove_system_data(dir, Object::InlineData(dir.ino.0))?;
        dir.flags &= !flags::INLINE_DATA;
        dir.i_block = [0; 60];
        if self.sb.has_incompat(super::features::INCOMPAT_EXTENTS) {
            dir.flags |= flags::EXTENTS;
            dir.i_block = super::extent_write::empty_root();
        }
        dir.size = 0;
        let mut all = vec![
            Ent { ino: dir.ino.0, ftype: 2, name: b".".to_vec(), hash: 0 },
            Ent { ino: d.parent, ftype: 2, name: b"..".to_vec(), hash: 0 },
        ];
        all.extend(ents);
        let block = self.pack_leaf(dir, &all)?;
        self.append_dir_block(tx, dir, block)?;
        Ok(())
    }

    /// Whether directory `dir` holds nothing but `.` and `..`.
    pub(crate) fn dir_is_empty(&self, dir: &Inode) -> Result<bool> {
        let mut empty = true;
        self.read_dir(dir, 0, &mut |e, _| {
            if e.name != b"." && e.name != b".." {
                empty = false;
                return true;
            }
            false
        })?;
        Ok(empty)
    }
}
