//! Directory changes: adding, removing and re-pointing entries in linear, htree and inline directories,
//! creating a directory's first block, and turning a one-block linear directory into an htree when it
//! fills up (as the kernel's `make_indexed_dir` does). Leaf splits and new index levels follow the kernel's
//! `do_split` and `ext4_dx_add_entry`.
//!
//! Offsets inside a block and counts of index entries are bounded by the block size (at most 64 KiB) and
//! checked against it before an edit; a value that would not fit its on-disk field is an error, never
//! truncated.

use std::ops::Range;

use super::bytes::{index, le16, le32, u8_at};
use super::bytes_mut::{put8, put16, put32};
use super::checksum::crc32c;
use super::dir_block::{self, rec_len_for, rec_len_from_disk};
use super::dir_hash::{HashVersion, dir_hash};
use super::error::{CorruptKind, Error, Object, Result};
use super::features::{COMPAT_DIR_INDEX, INCOMPAT_FILETYPE, INCOMPAT_LARGEDIR};
use super::file::MapEdit;
use super::fs::{Filesystem, Mapping};
use super::inline_data;
use super::inode::{FileKind, Inode, InodeNo, flags};
use super::txn::Txn;
use super::xattr_write;

const ROOT_INFO: usize = 0x18;
const ROOT_COUNT: usize = 0x20;
const NODE_COUNT: usize = 0x8;
/// Size of one htree index entry (hash, block).
const DX_ENTRY: usize = 8;
/// `rec_len` of the `.` entry (`rec_len_for(1)`), which `..` follows.
const DOT_REC_LEN: usize = 12;
/// The `dx_entry` block field is 28 bits wide (the kernel's `dx_get_block` masks the rest).
const DX_BLOCK_MASK: u32 = 0x0FFF_FFFF;
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

/// A live directory entry, as moved between blocks.
#[derive(Clone)]
struct Ent {
    ino: u32,
    ftype: u8,
    name: Vec<u8>,
    hash: u32,
}

fn rec_len_to_disk(len: usize, bs: usize) -> u16 {
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
fn from_mut(b: &mut [u8], off: usize) -> &mut [u8] {
    b.get_mut(off..).unwrap_or_default()
}

/// The byte offset of index entry `i` in a node whose count/limit header is at `count_offset`. The header
/// is at 0x8 or 0x20 and `i` at most the node's limit (below 8192 entries): no overflow, and a saturated
/// offset would lie past the block, where reads give zero and writes are dropped.
fn dx_at(count_offset: usize, i: usize) -> usize {
    count_offset.saturating_add(i.saturating_mul(DX_ENTRY))
}

/// The bytes of index entries `from..to`.
fn dx_range(count_offset: usize, from: usize, to: usize) -> Range<usize> {
    dx_at(count_offset, from)..dx_at(count_offset, to)
}

/// A node's limit and count.
fn dx_limit_count(node: &[u8], count_offset: usize) -> (usize, usize) {
    let header = node.get(count_offset..).unwrap_or_default();
    (usize::from(le16(header, 0)), usize::from(le16(header, 2)))
}

/// An index count or limit as its 16-bit field: at most a block's worth of 8-byte entries, so it fits;
/// one that did not would mean a broken index.
fn dx_count_field(n: usize, dir: &Inode) -> Result<u16> {
    u16::try_from(n).map_err(|_| Error::corrupt(Object::Htree(dir.ino.0), CorruptKind::HtreeNodeCountOrLimitOutOfRange))
}

/// A directory block number as an index entry's 28-bit block field; a directory too large for it cannot
/// grow its index.
fn dx_block(lblk: u64) -> Result<u32> {
    u32::try_from(lblk).ok().filter(|&b| b <= DX_BLOCK_MASK).ok_or(Error::NoSpace)
}

/// Copies index entries `from..to` of `node` (header at `count_offset`) to the front of new node `n`. The
/// first one loses its hash: entry 0 of a node holds the count and limit in its place.
fn dx_copy(n: &mut [u8], node: &[u8], count_offset: usize, from: usize, to: usize, dir: &Inode) -> Result<()> {
    let bad = || Error::corrupt(Object::Htree(dir.ino.0), CorruptKind::HtreeNodeCountOrLimitOutOfRange);
    let src = node.get(dx_range(count_offset, from, to)).and_then(|s| s.get(4..)).ok_or_else(bad)?;
    let dst = n.get_mut(dx_at(NODE_COUNT, 0)..).and_then(|d| d.get_mut(4..)?.get_mut(..src.len())).ok_or_else(bad)?;
    dst.copy_from_slice(src);
    Ok(())
}

impl Filesystem {
    fn tail_size(&self) -> usize {
        if self.sb.has_metadata_csum() { dir_block::TAIL_SIZE } else { 0 }
    }

    fn block_bytes(&self) -> usize {
        index(self.sb.block_size)
    }

    /// Bytes of a leaf block that hold entries (all but the checksum tail; a block is at least 1 KiB).
    fn leaf_space(&self) -> usize {
        self.block_bytes().saturating_sub(self.tail_size())
    }

    /// Writes a directory entry at `off`; a name longer than 255 bytes, or one that would run past the
    /// block, is refused.
    fn put_dirent(&self, b: &mut [u8], off: usize, ino: u32, rec_len: usize, name: &[u8], ftype: u8) -> Result<()> {
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
    fn seal_leaf(&self, dir: &Inode, b: &mut [u8]) {
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

    /// Writes the `dx_tail` checksum of an htree node whose count/limit header is at `count_offset`.
    fn seal_dx(&self, dir: &Inode, b: &mut [u8], count_offset: usize) {
        if !self.sb.has_metadata_csum() {
            return;
        }
        let (limit, count) = dx_limit_count(b, count_offset);
        // The tail follows the `limit` entries.
        let tail = dx_at(count_offset, limit);
        put32(b, tail, 0);
        let covered = b.get(..dx_at(count_offset, count)).unwrap_or_default();
        let reserved = b.get(tail..).and_then(|t| t.get(..4)).unwrap_or_default();
        let c = crc32c(crc32c(crc32c(dir.csum_seed, covered), reserved), &[0; 4]);
        put32(from_mut(b, tail), 4, c);
    }

    /// The number of index entries a node with its count/limit header at `count_offset` holds (the block
    /// is at least 1 KiB; with metadata_csum the last entry's room holds the `dx_tail`).
    fn dx_limit(&self, count_offset: usize) -> usize {
        (self.block_bytes().saturating_sub(count_offset) / DX_ENTRY)
            .saturating_sub(usize::from(self.sb.has_metadata_csum()))
    }

    /// A fresh leaf block holding `ents` packed, the last one stretched to the end of the space; `NoSpace`
    /// when they do not fit.
    fn pack_leaf(&self, dir: &Inode, ents: &[Ent]) -> Result<Vec<u8>> {
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
    fn insert_into(
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
    fn append_dir_block(&self, tx: &mut Txn<'_>, dir: &mut Inode, content: Vec<u8>) -> Result<u64> {
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
    fn unline_dir(&self, tx: &mut Txn<'_>, dir: &mut Inode) -> Result<()> {
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

    fn dir_pblk(&self, dir: &Inode, lblk: u64) -> Result<u64> {
        match self.map(dir, lblk)? {
            Mapping::Mapped { pblk, unwritten: false, .. } => Ok(pblk),
            _ => Err(Error::corrupt(Object::DirBlock { ino: dir.ino.0, lblk }, CorruptKind::DirectoryBlockIsHole)),
        }
    }

    /// A leaf block to change, checksum-verified (`None` for a hole).
    fn leaf_for_write(&self, dir: &Inode, lblk: u64) -> Result<Option<std::sync::Arc<Vec<u8>>>> {
        let Some(block) = self.dir_block(dir, lblk)? else { return Ok(None) };
        if self.sb.has_metadata_csum() {
            dir_block::verify_tail(&block, dir.csum_seed, Object::DirBlock { ino: dir.ino.0, lblk })?;
        }
        Ok(Some(block))
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

    /// The htree hash of `name` in `dir`: of its casefolded form in a casefolded directory.
    fn name_hash(&self, dir: &Inode, version: u8, name: &[u8]) -> Result<u32> {
        let v = HashVersion::from_disk(version).ok_or(Error::NotSupported)?.with_unsigned(self.sb.unsigned_dir_hash());
        let folded = self.casefolded(dir).then(|| super::casefold::fold(name)).flatten();
        Ok(dir_hash(folded.as_deref().unwrap_or(name), v, &self.sb.hash_seed).0)
    }

    /// Turns a full one-block linear directory into an htree: block 0 becomes the index root and its
    /// entries move to a new leaf block (the following insert splits it as needed).
    fn make_indexed(&self, tx: &mut Txn<'_>, dir: &mut Inode) -> Result<()> {
        let bs = self.block_bytes();
        let pblk0 = self.dir_pblk(dir, 0)?;
        let block0 = self.leaf_for_write(dir, 0)?.ok_or(Error::NotFound)?;
        let mut parent = dir.ino.0;
        let mut ents = Vec::new();
        for d in self.dirents(&block0[..self.leaf_space()], Object::DirBlock { ino: dir.ino.0, lblk: 0 }) {
            let d = d?;
            match d.name {
                b"." => {}
                b".." => parent = d.inode,
                _ if d.inode != 0 => {
                    ents.push(Ent { ino: d.inode, ftype: d.file_type, name: d.name.to_vec(), hash: 0 })
                }
                _ => {}
            }
        }
        let leaf = self.pack_leaf(dir, &ents)?;
        let leaf_lblk = self.append_dir_block(tx, dir, leaf)?;
        let mut root = vec![0u8; bs];
        self.put_dirent(&mut root, 0, dir.ino.0, DOT_REC_LEN, b".", 2)?;
        // `..` covers the rest of the block (the index hides in it); a block is at least 1 KiB.
        self.put_dirent(&mut root, DOT_REC_LEN, parent, bs.saturating_sub(DOT_REC_LEN), b"..", 2)?;
        let info = from_mut(&mut root, ROOT_INFO);
        put8(info, 4, self.sb.def_hash_version);
        put8(info, 5, 8);
        put8(info, 6, 0);
        let header = from_mut(&mut root, ROOT_COUNT);
        put16(header, 0, dx_count_field(self.dx_limit(ROOT_COUNT), dir)?);
        put16(header, 2, 1);
        put32(header, 4, dx_block(leaf_lblk)?);
        self.seal_dx(dir, &mut root, ROOT_COUNT);
        tx.put(pblk0, root);
        dir.flags |= flags::INDEX;
        Ok(())
    }

    /// Adds an entry to an htree directory: finds the leaf by hash, splits it when full, and grows the
    /// index (splitting nodes, adding a level) as needed.
    fn htree_add(&self, tx: &mut Txn<'_>, dir: &mut Inode, name: &[u8], ino: u32, ftype: u8) -> Result<()> {
        let obj = Object::Htree(dir.ino.0);
        let root = self.dir_block(dir, 0)?.ok_or(Error::corrupt(obj, CorruptKind::NoRootBlock))?;
        let info = root.get(ROOT_INFO..).unwrap_or_default();
        let version = u8_at(info, 4);
        let levels = usize::from(u8_at(info, 6));
        let max_levels = if self.sb.has_incompat(INCOMPAT_LARGEDIR) { 3 } else { 2 };
        if levels >= max_levels || u8_at(info, 5) != 8 {
            return Err(Error::corrupt(obj, CorruptKind::BadDxRootInfo));
        }
        let hash = self.name_hash(dir, version, name)?;
        // The path from the root to the leaf: (logical block, count offset, position).
        let mut path: Vec<(u64, usize, usize)> = Vec::new();
        let (mut lblk, mut co) = (0u64, ROOT_COUNT);
        loop {
            let node = self.dir_block(dir, lblk)?.ok_or(Error::corrupt(obj, CorruptKind::HtreePointsAtHole))?;
            let (limit, count) = dx_limit_count(&node, co);
            // Every later index edit trusts count and limit: check both against the node's real size.
            if limit != self.dx_limit(co) || count == 0 || count > limit {
                return Err(Error::corrupt(obj, CorruptKind::HtreeNodeCountOrLimitOutOfRange));
            }
            // The last entry whose hash is at most `hash` (entry 0 has none: it covers from 0).
            let entries = node.get(co..).unwrap_or_default().chunks_exact(DX_ENTRY).take(count);
            let at = entries.clone().enumerate().skip(1).rfind(|(_, e)| le32(e, 0) <= hash).map_or(0, |(i, _)| i);
            path.push((lblk, co, at));
            let child = entries.clone().nth(at).map_or(0, |e| u64::from(le32(e, 4) & DX_BLOCK_MASK));
            if path.len() > levels {
                lblk = child;
                break;
            }
            if child == 0 || child >= dir.size.checked_div(u64::from(self.sb.block_size)).unwrap_or(0) {
                return Err(Error::corrupt(obj, CorruptKind::HtreePointsPastDirectory));
            }
            lblk = child;
            co = NODE_COUNT;
        }
        let leaf_lblk = lblk;
        let leaf = self.leaf_for_write(dir, leaf_lblk)?.ok_or(Error::corrupt(obj, CorruptKind::HtreeLeafIsHole))?;
        if let Some(b) = self.insert_into(dir, &leaf, leaf_lblk, name, ino, ftype)? {
            let pblk = self.dir_pblk(dir, leaf_lblk)?;
            tx.put(pblk, b);
            return Ok(());
        }
        // Split the leaf: entries sorted by hash, the upper half by size moves to a new block.
        let mut ents = Vec::new();
        for d in self.dirents(&leaf[..self.leaf_space()], Object::DirBlock { ino: dir.ino.0, lblk: leaf_lblk }) {
            let d = d?;
            if d.inode != 0 {
                let h = self.name_hash(dir, version, d.name)?;
                ents.push(Ent { ino: d.inode, ftype: d.file_type, name: d.name.to_vec(), hash: h });
            }
        }
        ents.push(Ent { ino, ftype, name: name.to_vec(), hash });
        // A full leaf holds at least one live entry besides the new one; one that does not is damaged
        // (deleted records too small to reuse), and splitting it would leave a half empty.
        if ents.len() < 2 {
            return Err(Error::corrupt(
                Object::DirBlock { ino: dir.ino.0, lblk: leaf_lblk },
                CorruptKind::FullLeafWithoutLiveEntries,
            ));
        }
        ents.sort_by(|a, b| (a.hash, &a.name).cmp(&(b.hash, &b.name)));
        // Sizes of one leaf's entries and one more: a few blocks' worth at most, far from overflowing.
        let size = |half: &[Ent]| half.iter().fold(0usize, |n, e| n.saturating_add(rec_len_for(e.name.len())));
        let total = size(&ents);
        // The first half ends with the entry that brings it to half the total, leaving at least one entry
        // on each side (there are at least two).
        let mut acc = 0usize;
        let split = ents
            .iter()
            .position(|e| {
                acc = acc.saturating_add(rec_len_for(e.name.len()));
                acc.saturating_mul(2) >= total
            })
            .map_or(1, |i| i.saturating_add(1).clamp(1, ents.len().saturating_sub(1)));
        let (low_ents, high_ents) = ents.split_at(split);
        let not_fitting = || {
            Error::corrupt(
                Object::DirBlock { ino: dir.ino.0, lblk: leaf_lblk },
                CorruptKind::LeafEntriesDoNotFitTwoBlocks,
            )
        };
        if size(low_ents) > self.leaf_space() || size(high_ents) > self.leaf_space() {
            return Err(not_fitting());
        }
        let (Some(low_last), Some(high_first)) = (low_ents.last(), high_ents.first()) else {
            return Err(not_fitting());
        };
        let hash2 = high_first.hash;
        let continued = u32::from(low_last.hash == hash2);
        let low = self.pack_leaf(dir, low_ents)?;
        let high = self.pack_leaf(dir, high_ents)?;
        let pblk = self.dir_pblk(dir, leaf_lblk)?;
        tx.put(pblk, low);
        let new_lblk = self.append_dir_block(tx, dir, high)?;
        self.dx_insert(tx, dir, &mut path, hash2 | continued, new_lblk, levels, max_levels)
    }

    /// Inserts index entry (`hash` -> `child`) after the current position of the deepest level of `path`,
    /// splitting full nodes and adding a level under the root when the root is full.
    #[allow(clippy::too_many_arguments)]
    fn dx_insert(
        &self,
        tx: &mut Txn<'_>,
        dir: &mut Inode,
        path: &mut Vec<(u64, usize, usize)>,
        hash: u32,
        child: u64,
        levels: usize,
        max_levels: usize,
    ) -> Result<()> {
        let bs = self.block_bytes();
        // htree_add starts the path at the root; each step keeps it non-empty.
        let Some((&(lblk, co, at), parents)) = path.split_last() else { return Err(Error::Invalid) };
        let depth = parents.len();
        let pblk = self.dir_pblk(dir, lblk)?;
        let mut node = tx.block(pblk, Object::Htree(dir.ino.0))?;
        let (limit, count) = dx_limit_count(&node, co);
        if limit != self.dx_limit(co) || count == 0 || count > limit || at >= count {
            return Err(Error::corrupt(Object::Htree(dir.ino.0), CorruptKind::HtreeNodeCountOrLimitOutOfRange));
        }
        // From here at < count <= limit < 8192: the counts below cannot overflow.
        if count < limit {
            let after = at.saturating_add(1);
            node.copy_within(dx_range(co, after, count), dx_at(co, after.saturating_add(1)));
            let entry = from_mut(&mut node, dx_at(co, after));
            put32(entry, 0, hash);
            put32(entry, 4, dx_block(child)?);
            put16(from_mut(&mut node, co), 2, dx_count_field(count.saturating_add(1), dir)?);
            self.seal_dx(dir, &mut node, co);
            tx.put(pblk, node);
            return Ok(());
        }
        if depth == 0 {
            // The root is full: move its entries into a new node under it (one more level), if allowed.
            let deeper = levels.saturating_add(1);
            if deeper >= max_levels {
                return Err(Error::NoSpace);
            }
            let mut n = vec![0u8; bs];
            put32(&mut n, 0, 0);
            put16(&mut n, 4, rec_len_to_disk(bs, bs));
            let header = from_mut(&mut n, NODE_COUNT);
            put16(header, 0, dx_count_field(self.dx_limit(NODE_COUNT), dir)?);
            put16(header, 2, dx_count_field(count, dir)?);
            dx_copy(&mut n, &node, co, 0, count, dir)?;
            self.seal_dx(dir, &mut n, NODE_COUNT);
            let new_lblk = self.append_dir_block(tx, dir, n)?;
            let header = from_mut(&mut node, co);
            put16(header, 2, 1);
            put32(header, 4, dx_block(new_lblk)?);
            put8(from_mut(&mut node, ROOT_INFO), 6, u8::try_from(deeper).map_err(|_| Error::NoSpace)?);
            self.seal_dx(dir, &mut node, co);
            tx.put(pblk, node);
            path[0].2 = 0;
            path.insert(1, (new_lblk, NODE_COUNT, at));
            return self.dx_insert(tx, dir, path, hash, child, deeper, max_levels);
        }
        // A full interior node: its upper half moves to a new node, indexed from the parent.
        let half = count / 2;
        let mut n = vec![0u8; bs];
        put16(&mut n, 4, rec_len_to_disk(bs, bs));
        let header = from_mut(&mut n, NODE_COUNT);
        put16(header, 0, dx_count_field(self.dx_limit(NODE_COUNT), dir)?);
        put16(header, 2, dx_count_field(count.saturating_sub(half), dir)?);
        dx_copy(&mut n, &node, co, half, count, dir)?;
        let split_hash = le32(&node, dx_at(co, half));
        put16(from_mut(&mut node, co), 2, dx_count_field(half, dir)?);
        self.seal_dx(dir, &mut node, co);
        self.seal_dx(dir, &mut n, NODE_COUNT);
        tx.put(pblk, node);
        let new_lblk = self.append_dir_block(tx, dir, n)?;
        let mut parent_path = parents.to_vec();
        self.dx_insert(tx, dir, &mut parent_path, split_hash, new_lblk, levels, max_levels)?;
        // Continue in whichever half now holds the insertion point.
        let (target, pos) = match at.checked_sub(half) {
            Some(pos) => (new_lblk, pos),
            None => (lblk, at),
        };
        let mut p = parent_path;
        p.push((target, NODE_COUNT, pos));
        self.dx_insert(tx, dir, &mut p, hash, child, levels, max_levels)
    }
}
