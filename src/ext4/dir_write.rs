//! Directory changes: adding, removing and re-pointing entries in linear, htree and inline directories,
//! creating a directory's first block, and turning a one-block linear directory into an htree when it
//! fills up (as the kernel's `make_indexed_dir` does). Leaf splits and new index levels follow the kernel's
//! `do_split` and `ext4_dx_add_entry`.

use super::bytes::{le16, le32, u8_at};
use super::bytes_mut::{put16, put32};
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
    if len < 65536 {
        len as u16
    } else if len == bs {
        if bs == 65536 { 65535 } else { 0 }
    } else {
        ((len & 65532) | ((len >> 16) & 3)) as u16
    }
}

impl Filesystem {
    fn tail_size(&self) -> usize {
        if self.sb.has_metadata_csum() { dir_block::TAIL_SIZE } else { 0 }
    }

    /// Bytes of a leaf block that hold entries (all but the checksum tail).
    fn leaf_space(&self) -> usize {
        self.sb.block_size as usize - self.tail_size()
    }

    fn put_dirent(&self, b: &mut [u8], off: usize, ino: u32, rec_len: usize, name: &[u8], ftype: u8) {
        let bs = self.sb.block_size as usize;
        put32(b, off, ino);
        put16(b, off + 4, rec_len_to_disk(rec_len, bs));
        b[off + 6] = name.len() as u8;
        b[off + 7] = if self.sb.has_incompat(INCOMPAT_FILETYPE) { ftype } else { 0 };
        b[off + 8..off + 8 + name.len()].copy_from_slice(name);
    }

    /// Writes the checksum tail of a leaf block.
    fn seal_leaf(&self, dir: &Inode, b: &mut [u8]) {
        if !self.sb.has_metadata_csum() {
            return;
        }
        let t = b.len() - dir_block::TAIL_SIZE;
        put32(b, t, 0);
        put16(b, t + 4, 12);
        b[t + 6] = 0;
        b[t + 7] = 0xDE;
        let c = crc32c(dir.csum_seed, &b[..t]);
        put32(b, t + 8, c);
    }

    /// Writes the `dx_tail` checksum of an htree node whose count/limit header is at `count_offset`.
    fn seal_dx(&self, dir: &Inode, b: &mut [u8], count_offset: usize) {
        if !self.sb.has_metadata_csum() {
            return;
        }
        let limit = usize::from(le16(b, count_offset));
        let count = usize::from(le16(b, count_offset + 2));
        let tail = count_offset + limit * 8;
        put32(b, tail, 0);
        let c = crc32c(crc32c(crc32c(dir.csum_seed, &b[..count_offset + count * 8]), &b[tail..tail + 4]), &[0; 4]);
        put32(b, tail + 4, c);
    }

    fn dx_limit(&self, count_offset: usize) -> usize {
        (self.sb.block_size as usize - count_offset) / 8 - usize::from(self.sb.has_metadata_csum())
    }

    /// A fresh leaf block holding `ents` packed, the last one stretched to the end of the space.
    fn pack_leaf(&self, dir: &Inode, ents: &[Ent]) -> Vec<u8> {
        let bs = self.sb.block_size as usize;
        let space = self.leaf_space();
        let mut b = vec![0u8; bs];
        let mut off = 0;
        for (i, e) in ents.iter().enumerate() {
            let len = if i + 1 == ents.len() { space - off } else { rec_len_for(e.name.len()) };
            self.put_dirent(&mut b, off, e.ino, len, &e.name, e.ftype);
            off += len;
        }
        if ents.is_empty() {
            self.put_dirent(&mut b, 0, 0, space, b"", 0);
        }
        self.seal_leaf(dir, &mut b);
        b
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
            if d.rec_len - used >= need {
                slot = Some((d.offset, d.rec_len, used));
                break;
            }
        }
        let Some((off, rec_len, used)) = slot else { return Ok(None) };
        let mut b = block.to_vec();
        if used > 0 {
            put16(&mut b, off + 4, rec_len_to_disk(used, self.sb.block_size as usize));
        }
        self.put_dirent(&mut b, off + used, ino, rec_len - used, name, ftype);
        self.seal_leaf(dir, &mut b);
        Ok(Some(b))
    }

    /// Appends a block holding `content` to directory `dir` (size and map updated; the caller writes the
    /// inode). Returns its logical block number.
    fn append_dir_block(&self, tx: &mut Txn<'_>, dir: &mut Inode, content: Vec<u8>) -> Result<u64> {
        let bs = u64::from(self.sb.block_size);
        let lblk = dir.size / bs;
        let mut map = MapEdit::load(self, dir)?;
        let goal = match lblk.checked_sub(1).map(|l| map.lookup(self, dir, l)) {
            Some(Ok(Mapping::Mapped { pblk, .. })) => pblk + 1,
            _ => self.sb.group_first_block(u64::from((dir.ino.0 - 1) / self.sb.inodes_per_group)),
        };
        let (pblk, _) = map.allocate(tx, dir, lblk, 1, goal, false)?;
        tx.put(pblk, content);
        map.store(tx, dir, pblk)?;
        dir.size += bs;
        Ok(lblk)
    }

    /// The first block of a new directory: `.` and `..` (the caller maps it with [`Self::append_dir_block`]).
    fn first_dir_block(&self, dir: &Inode, parent: InodeNo) -> Vec<u8> {
        let bs = self.sb.block_size as usize;
        let mut b = vec![0u8; bs];
        self.put_dirent(&mut b, 0, dir.ino.0, 12, b".", 2);
        self.put_dirent(&mut b, 12, parent.0, self.leaf_space() - 12, b"..", 2);
        self.seal_leaf(dir, &mut b);
        b
    }

    /// Gives new directory `dir` its first block.
    pub(crate) fn init_dir(&self, tx: &mut Txn<'_>, dir: &mut Inode, parent: InodeNo) -> Result<()> {
        let block = self.first_dir_block(dir, parent);
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
        let block = self.pack_leaf(dir, &all);
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
        let bs = u64::from(self.sb.block_size);
        let blocks = dir.size / bs;
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
        let block = self.pack_leaf(dir, &[ent]);
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
        let bs = self.sb.block_size as usize;
        let ino = le32(&b, off);
        let rec_len = rec_len_from_disk(le16(&b, off + 4), bs);
        match prev {
            // Fold the record into the one before it, as the kernel does.
            Some(p) => {
                let prev_len = rec_len_from_disk(le16(&b, p + 4), bs);
                put16(&mut b, p + 4, rec_len_to_disk(prev_len + rec_len, bs));
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
            b[off + 7] = file_type_byte(kind);
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
        if &b[12 + 8..12 + 10] != b".." {
            return Err(Error::corrupt(Object::DirBlock { ino: dir.ino.0, lblk: 0 }, CorruptKind::NoDotDotEntry));
        }
        put32(&mut b, 12, parent.0);
        if self.is_htree_dir(dir) {
            // The root's count and limit come from disk: sealing trusts them, so check them first.
            let (limit, count) = (usize::from(le16(&b, ROOT_COUNT)), usize::from(le16(&b, ROOT_COUNT + 2)));
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
        let bs = self.sb.block_size as usize;
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
        let leaf = self.pack_leaf(dir, &ents);
        let leaf_lblk = self.append_dir_block(tx, dir, leaf)?;
        let mut root = vec![0u8; bs];
        self.put_dirent(&mut root, 0, dir.ino.0, 12, b".", 2);
        self.put_dirent(&mut root, 12, parent, bs - 12, b"..", 2);
        root[ROOT_INFO + 4] = self.sb.def_hash_version;
        root[ROOT_INFO + 5] = 8;
        root[ROOT_INFO + 6] = 0;
        put16(&mut root, ROOT_COUNT, self.dx_limit(ROOT_COUNT) as u16);
        put16(&mut root, ROOT_COUNT + 2, 1);
        put32(&mut root, ROOT_COUNT + 4, leaf_lblk as u32);
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
        let version = u8_at(&root, ROOT_INFO + 4);
        let levels = usize::from(u8_at(&root, ROOT_INFO + 6));
        let max_levels = if self.sb.has_incompat(INCOMPAT_LARGEDIR) { 3 } else { 2 };
        if levels >= max_levels || u8_at(&root, ROOT_INFO + 5) != 8 {
            return Err(Error::corrupt(obj, CorruptKind::BadDxRootInfo));
        }
        let hash = self.name_hash(dir, version, name)?;
        // The path from the root to the leaf: (logical block, count offset, position).
        let mut path: Vec<(u64, usize, usize)> = Vec::new();
        let (mut lblk, mut co) = (0u64, ROOT_COUNT);
        loop {
            let node = self.dir_block(dir, lblk)?.ok_or(Error::corrupt(obj, CorruptKind::HtreePointsAtHole))?;
            let count = usize::from(le16(&node, co + 2));
            // Every later index edit trusts count and limit: check both against the node's real size.
            if usize::from(le16(&node, co)) != self.dx_limit(co) || count == 0 || count > self.dx_limit(co) {
                return Err(Error::corrupt(obj, CorruptKind::HtreeNodeCountOrLimitOutOfRange));
            }
            let mut at = 0;
            for i in 1..count {
                if le32(&node, co + i * 8) <= hash {
                    at = i;
                }
            }
            path.push((lblk, co, at));
            let child = u64::from(le32(&node, co + at * 8 + 4) & 0x0FFF_FFFF);
            if path.len() > levels {
                lblk = child;
                break;
            }
            if child == 0 || child >= dir.size / u64::from(self.sb.block_size) {
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
        let total: usize = ents.iter().map(|e| rec_len_for(e.name.len())).sum();
        let mut acc = 0;
        let mut split = 1;
        for (i, e) in ents.iter().enumerate() {
            acc += rec_len_for(e.name.len());
            if acc * 2 >= total {
                split = (i + 1).clamp(1, ents.len() - 1);
                break;
            }
        }
        let fits = |half: &[Ent]| half.iter().map(|e| rec_len_for(e.name.len())).sum::<usize>() <= self.leaf_space();
        if !fits(&ents[..split]) || !fits(&ents[split..]) {
            return Err(Error::corrupt(
                Object::DirBlock { ino: dir.ino.0, lblk: leaf_lblk },
                CorruptKind::LeafEntriesDoNotFitTwoBlocks,
            ));
        }
        let hash2 = ents[split].hash;
        let continued = u32::from(ents[split - 1].hash == hash2);
        let low = self.pack_leaf(dir, &ents[..split]);
        let high = self.pack_leaf(dir, &ents[split..]);
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
        let bs = self.sb.block_size as usize;
        let depth = path.len() - 1;
        let (lblk, co, at) = path[depth];
        let pblk = self.dir_pblk(dir, lblk)?;
        let mut node = tx.block(pblk, Object::Htree(dir.ino.0))?;
        let count = usize::from(le16(&node, co + 2));
        let limit = usize::from(le16(&node, co));
        if limit != self.dx_limit(co) || count == 0 || count > limit || at >= count {
            return Err(Error::corrupt(Object::Htree(dir.ino.0), CorruptKind::HtreeNodeCountOrLimitOutOfRange));
        }
        if count < limit {
            let pos = co + (at + 1) * 8;
            node.copy_within(pos..co + count * 8, pos + 8);
            put32(&mut node, pos, hash);
            put32(&mut node, pos + 4, child as u32);
            put16(&mut node, co + 2, (count + 1) as u16);
            self.seal_dx(dir, &mut node, co);
            tx.put(pblk, node);
            return Ok(());
        }
        if depth == 0 {
            // The root is full: move its entries into a new node under it (one more level), if allowed.
            if levels + 1 >= max_levels {
                return Err(Error::NoSpace);
            }
            let mut n = vec![0u8; bs];
            put32(&mut n, 0, 0);
            put16(&mut n, 4, rec_len_to_disk(bs, bs));
            put16(&mut n, NODE_COUNT, self.dx_limit(NODE_COUNT) as u16);
            put16(&mut n, NODE_COUNT + 2, count as u16);
            n[NODE_COUNT + 4..NODE_COUNT + count * 8].copy_from_slice(&node[co + 4..co + count * 8]);
            self.seal_dx(dir, &mut n, NODE_COUNT);
            let new_lblk = self.append_dir_block(tx, dir, n)?;
            put16(&mut node, co + 2, 1);
            put32(&mut node, co + 4, new_lblk as u32);
            node[ROOT_INFO + 6] = (levels + 1) as u8;
            self.seal_dx(dir, &mut node, co);
            tx.put(pblk, node);
            path[0].2 = 0;
            path.insert(1, (new_lblk, NODE_COUNT, at));
            return self.dx_insert(tx, dir, path, hash, child, levels + 1, max_levels);
        }
        // A full interior node: its upper half moves to a new node, indexed from the parent.
        let half = count / 2;
        let mut n = vec![0u8; bs];
        put16(&mut n, 4, rec_len_to_disk(bs, bs));
        put16(&mut n, NODE_COUNT, self.dx_limit(NODE_COUNT) as u16);
        put16(&mut n, NODE_COUNT + 2, (count - half) as u16);
        n[NODE_COUNT + 4..NODE_COUNT + (count - half) * 8].copy_from_slice(&node[co + half * 8 + 4..co + count * 8]);
        let split_hash = le32(&node, co + half * 8);
        put16(&mut node, co + 2, half as u16);
        self.seal_dx(dir, &mut node, co);
        self.seal_dx(dir, &mut n, NODE_COUNT);
        tx.put(pblk, node);
        let new_lblk = self.append_dir_block(tx, dir, n)?;
        let mut parent_path = path[..depth].to_vec();
        self.dx_insert(tx, dir, &mut parent_path, split_hash, new_lblk, levels, max_levels)?;
        // Continue in whichever half now holds the insertion point.
        let (target, pos) = if at >= half { (new_lblk, at - half) } else { (lblk, at) };
        let mut p = parent_path;
        p.push((target, NODE_COUNT, pos));
        self.dx_insert(tx, dir, &mut p, hash, child, levels, max_levels)
    }
}
