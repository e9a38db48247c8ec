//! Reading directories: their blocks (checksums verified), name lookup through the htree index or a
//! linear scan, listing with resumable cookies, inline directories, casefolded and encrypted names.

use std::sync::Arc;

use super::casefold::FoldedName;
use super::dir_block::{self, DirentIter};
use super::dir_hash::{HashVersion, dir_hash};
use super::dir_htree;
use super::error::{CorruptKind, Error, Object, Result};
use super::features::{COMPAT_DIR_INDEX, INCOMPAT_FILETYPE};
use super::fs::{DirEntry, Filesystem, Mapping, NAME_MAX};
use super::fscrypt::{self, NoKeyName};
use super::inline_data;
use super::inode::{FileKind as Kind, FileKind, Inode, InodeNo, flags};

impl Filesystem {
    /// Directory block `lblk` of `dir`, through the block cache; `None` for a hole.
    pub fn dir_block(&self, dir: &Inode, lblk: u64) -> Result<Option<Arc<Vec<u8>>>> {
        match self.map(dir, lblk)? {
            Mapping::Mapped { pblk, unwritten: false, .. } => {
                Ok(Some(self.meta_block(pblk, Object::DirBlock { ino: dir.ino.0, lblk })?))
            }
            _ => Ok(None),
        }
    }

    fn is_htree(&self, dir: &Inode) -> bool {
        self.sb.has_compat(COMPAT_DIR_INDEX) && dir.has_flag(flags::INDEX)
    }

    /// The entries of a linear directory block (or the tail of an htree node).
    pub(crate) fn dirents<'a>(&self, buf: &'a [u8], obj: Object) -> DirentIter<'a> {
        DirentIter::new(
            buf,
            self.sb.has_incompat(INCOMPAT_FILETYPE),
            self.sb.inodes_count,
            obj,
            super::bytes::index(self.sb.block_size),
        )
    }

    /// Searches one directory block (or inline region) for the wanted entry.
    fn search_block(&self, buf: &[u8], wanted: &Wanted, obj: Object) -> Result<Option<InodeNo>> {
        for d in self.dirents(buf, obj) {
            let d = d?;
            if d.inode != 0 && wanted.matches(d.name) {
                return Ok(Some(InodeNo(d.inode)));
            }
        }
        Ok(None)
    }

    /// Reads leaf block `lblk` of `dir` and verifies its checksum tail.
    fn leaf_block(&self, dir: &Inode, lblk: u64) -> Result<Option<Arc<Vec<u8>>>> {
        let Some(block) = self.dir_block(dir, lblk)? else {
            return Ok(None);
        };
        if self.sb.has_metadata_csum() {
            dir_block::verify_tail(&block, dir.csum_seed, Object::DirBlock { ino: dir.ino.0, lblk })?;
        }
        Ok(Some(block))
    }

    /// Looks `name` up in directory `dir`.
    pub(in crate::ext4) fn lookup(&self, dir: &Inode, name: &[u8]) -> Result<InodeNo> {
        if dir.kind != Kind::Directory {
            return Err(Error::NotDir);
        }
        if name.len() > NAME_MAX {
            return Err(Error::NameTooLong);
        }
        let wanted = self.wanted(dir, name)?;
        if dir.has_flag(flags::INLINE_DATA) {
            return self.lookup_inline(dir, &wanted);
        }
        if self.is_htree(dir) {
            let found = dir_htree::lookup(self, dir, wanted.probe(), |lblk| match self.leaf_block(dir, lblk)? {
                Some(b) => self.search_block(&b, &wanted, Object::DirBlock { ino: dir.ino.0, lblk }),
                None => Ok(None),
            });
            match found {
                Ok(Some(ino)) => return Ok(ino),
                Ok(None) => return Err(Error::NotFound),
                // A malformed index: the kernel falls back to a linear scan, and so do we.
                Err(Error::Corrupt { object: Object::Htree(_), kind }) => {
                    tracing::warn!(ino = dir.ino.0, %kind, "htree index is damaged; scanning the directory");
                }
                Err(e) => return Err(e),
            }
        }
        for lblk in DirWalk::new(self, dir, 0) {
            let lblk = lblk?;
            if let Some(block) = self.leaf_block_for_scan(dir, lblk)? {
                if let Some(ino) = self.search_block(&block, &wanted, Object::DirBlock { ino: dir.ino.0, lblk })? {
                    return Ok(ino);
                }
            }
        }
        Err(Error::NotFound)
    }

    /// The inode `name` names in `dir`, `None` when no entry has that name: what tells a free name
    /// (`None`) from a directory that cannot be read (its error), which must not count as free.
    pub(crate) fn find_entry(&self, dir: &Inode, name: &[u8]) -> Result<Option<InodeNo>> {
        match self.lookup(dir, name) {
            Ok(ino) => Ok(Some(ino)),
            Err(Error::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A block read during a linear scan: htree interior nodes (and the root's index) hold no entries
    /// beyond `.` and `..`, and carry a dx tail rather than a dirent tail.
    fn leaf_block_for_scan(&self, dir: &Inode, lblk: u64) -> Result<Option<Arc<Vec<u8>>>> {
        if self.is_htree(dir) {
            let Some(block) = self.dir_block(dir, lblk)? else {
                return Ok(None);
            };
            let bs = super::bytes::index(self.sb.block_size);
            let first_rec = dir_block::rec_len_from_disk(super::bytes::le16(&block, 4), bs);
            let is_node = super::bytes::le32(&block, 0) == 0 && first_rec == bs;
            if lblk == 0 || is_node {
                return Ok(Some(block));
            }
        }
        self.leaf_block(dir, lblk)
    }

    fn lookup_inline(&self, dir: &Inode, wanted: &Wanted) -> Result<InodeNo> {
        let d = inline_data::dir(dir)?;
        if let Wanted::Name(b".") = wanted {
            return Ok(dir.ino);
        }
        if let Wanted::Name(b"..") = wanted {
            return Ok(InodeNo(d.parent));
        }
        for region in &d.regions {
            if let Some(ino) = self.search_block(region, wanted, Object::InlineData(dir.ino.0))? {
                return Ok(ino);
            }
        }
        Err(Error::NotFound)
    }

    /// Lists directory `dir` from position `cookie` (0: the start). `emit` gets each entry and the cookie
    /// that resumes after it, and returns `true` when it wants no more.
    ///
    /// Cookies are byte positions in the directory (for inline directories: 0 and 1 for `.` and `..`, then
    /// positions in `i_block` and `system.data`). A damaged block is skipped, as the kernel's readdir does.
    pub(in crate::ext4) fn read_dir(
        &self,
        dir: &Inode,
        cookie: u64,
        emit: &mut dyn FnMut(DirEntry, u64) -> bool,
    ) -> Result<()> {
        if dir.kind != Kind::Directory {
            return Err(Error::NotDir);
        }
        if dir.has_flag(flags::INLINE_DATA) {
            return self.read_dir_inline(dir, cookie, emit);
        }
        let names = self.listed_names(dir);
        let bs = u64::from(self.sb.block_size);
        for lblk in DirWalk::new(self, dir, cookie.checked_div(bs).unwrap_or(0)) {
            let lblk = lblk?;
            let obj = Object::DirBlock { ino: dir.ino.0, lblk };
            let block = match self.leaf_block_for_scan(dir, lblk) {
                Ok(Some(b)) => b,
                Ok(None) => continue,
                Err(e) if e.is_corruption() => {
                    // As the kernel does: the listing goes on without the block, and errors= applies.
                    tracing::warn!(error = %e, "skipping damaged directory block");
                    self.corruption_found(&e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let base = lblk.saturating_mul(bs);
            for d in self.dirents(&block, obj) {
                let d = match d {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping the rest of a damaged directory block");
                        self.corruption_found(&e);
                        break;
                    }
                };
                let pos = position(base, d.offset);
                if pos < cookie || d.inode == 0 {
                    continue;
                }
                let name = match names.shown(d.name, obj) {
                    Ok(name) => name,
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping a damaged directory entry");
                        self.corruption_found(&e);
                        continue;
                    }
                };
                let entry = DirEntry { ino: InodeNo(d.inode), kind: self.dirent_kind(d.file_type), name };
                if emit(entry, position(pos, d.rec_len)) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn read_dir_inline(&self, dir: &Inode, cookie: u64, emit: &mut dyn FnMut(DirEntry, u64) -> bool) -> Result<()> {
        let d = inline_data::dir(dir)?;
        let dot = [(b".".to_vec(), dir.ino), (b"..".to_vec(), InodeNo(d.parent))];
        for (i, (name, ino)) in dot.into_iter().enumerate() {
            let i = position(0, i);
            if cookie <= i && emit(DirEntry { ino, kind: Some(Kind::Directory), name }, i.saturating_add(1)) {
                return Ok(());
            }
        }
        let obj = Object::InlineData(dir.ino.0);
        let names = self.listed_names(dir);
        for (region, start) in d.regions.iter().zip(inline_data::REGION_START) {
            for e in self.dirents(region, obj) {
                let e = e?;
                let pos = position(start, e.offset);
                if pos < cookie || e.inode == 0 {
                    continue;
                }
                let entry = DirEntry {
                    ino: InodeNo(e.inode),
                    kind: self.dirent_kind(e.file_type),
                    name: names.shown(e.name, obj)?,
                };
                if emit(entry, position(pos, e.rec_len)) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Whether `dir` finds names case-insensitively (`casefold` and `chattr +F`).
    pub(in crate::ext4) fn casefolded(&self, dir: &Inode) -> bool {
        self.casefold.is_some() && dir.has_flag(flags::CASEFOLD)
    }

    /// What looking `name` up in `dir` searches for: the name, its no-key form, or its folded form.
    pub(crate) fn wanted<'n>(&self, dir: &Inode, name: &'n [u8]) -> Result<Wanted<'n>> {
        if name == b"." || name == b".." {
            return Ok(Wanted::Name(name));
        }
        if dir.has_flag(flags::ENCRYPT) {
            // Without the key, only no-key names (as listed) can be looked up.
            return Ok(Wanted::NoKey(NoKeyName::parse(name).ok_or(Error::NotFound)?));
        }
        match self.casefold {
            Some(enc) if dir.has_flag(flags::CASEFOLD) => Ok(Wanted::Folded(FoldedName::new(name, enc))),
            _ => Ok(Wanted::Name(name)),
        }
    }

    /// How `dir`'s entries are named in listings: as stored, or (encrypted) as the kernel's no-key names,
    /// which carry the entry's hash when the kernel lists the directory in hash order: its `is_dx_dir`
    /// (dir_index, and an htree, a single block or inline data), hashed with the htree's hash or else the
    /// superblock's default, as `ext4_htree_fill_tree`.
    fn listed_names(&self, dir: &Inode) -> ListedNames {
        if !dir.has_flag(flags::ENCRYPT) {
            return ListedNames::AsStored;
        }
        let single_block = dir.size == u64::from(self.sb.block_size);
        let hashed = self.sb.has_compat(COMPAT_DIR_INDEX)
            && (dir.has_flag(flags::INDEX) || single_block || dir.has_flag(flags::INLINE_DATA));
        let version = if !hashed {
            None
        } else if dir.has_flag(flags::INDEX) {
            dir_htree::root_hash_version(self, dir)
        } else {
            HashVersion::from_disk(self.sb.def_hash_version).map(|v| v.with_unsigned(self.sb.unsigned_dir_hash()))
        };
        ListedNames::NoKey { hash: version.map(|v| (v, self.sb.hash_seed)) }
    }

    fn dirent_kind(&self, t: u8) -> Option<FileKind> {
        if self.sb.has_incompat(INCOMPAT_FILETYPE) { FileKind::from_dirent(t) } else { None }
    }
}

/// The mapped logical blocks of a directory, from `start`, skipping holes: what every linear directory
/// scan walks. A crafted block map can present billions of logical blocks built from a handful of
/// physical ones (an indirect block that names itself at every level), so the walk ends with an error
/// when a physical block comes back or when it has taken more steps than the filesystem has blocks.
pub(crate) struct DirWalk<'a> {
    fs: &'a Filesystem,
    dir: &'a Inode,
    next: u64,
    end: u64,
    steps: u64,
    seen: std::collections::HashSet<u64>,
}

impl<'a> DirWalk<'a> {
    pub(crate) fn new(fs: &'a Filesystem, dir: &'a Inode, start: u64) -> DirWalk<'a> {
        let end = dir.size.checked_div(u64::from(fs.sb.block_size)).unwrap_or(0);
        DirWalk { fs, dir, next: start, end, steps: 0, seen: std::collections::HashSet::new() }
    }
}

impl Iterator for DirWalk<'_> {
    /// A mapped logical block of the directory.
    type Item = Result<u64>;

    fn next(&mut self) -> Option<Result<u64>> {
        let obj = Object::DirBlock { ino: self.dir.ino.0, lblk: self.next };
        while self.next < self.end {
            self.steps = self.steps.saturating_add(1);
            if self.steps > self.fs.sb.blocks_count.saturating_mul(2).saturating_add(2) {
                self.next = self.end;
                return Some(Err(Error::corrupt(obj, CorruptKind::DirectoryMapsMoreBlocksThanFilesystemHolds)));
            }
            match self.fs.map(self.dir, self.next) {
                Err(e) => {
                    self.next = self.end;
                    return Some(Err(e));
                }
                Ok(Mapping::Hole { len }) => self.next = self.next.saturating_add(len.unwrap_or(u64::MAX).max(1)),
                Ok(Mapping::Mapped { pblk, .. }) => {
                    let lblk = self.next;
                    self.next = self.next.saturating_add(1);
                    if !self.seen.insert(pblk) {
                        self.next = self.end;
                        return Some(Err(Error::corrupt(obj, CorruptKind::DirectoryMapsOneBlockTwice)));
                    }
                    return Some(Ok(lblk));
                }
            }
        }
        None
    }
}

/// What a lookup searches a directory for.
pub(crate) enum Wanted<'a> {
    /// A name as stored.
    Name(&'a [u8]),
    /// In an encrypted directory, the entry a no-key name stands for.
    NoKey(NoKeyName),
    /// In a casefolded directory, any name with the same folded form.
    Folded(FoldedName),
}

impl Wanted<'_> {
    pub(crate) fn matches(&self, disk: &[u8]) -> bool {
        match self {
            Wanted::Name(name) => disk == *name,
            Wanted::NoKey(n) => n.matches(disk),
            Wanted::Folded(n) => n.matches(disk),
        }
    }

    /// What the htree is searched by.
    pub(crate) fn probe(&self) -> dir_htree::Probe<'_> {
        match self {
            Wanted::Name(name) => dir_htree::Probe::Name(name),
            Wanted::NoKey(NoKeyName::Whole(ciphertext)) => dir_htree::Probe::Name(ciphertext),
            Wanted::NoKey(NoKeyName::Long { hash, .. }) => dir_htree::Probe::Hash(*hash),
            Wanted::Folded(n) => dir_htree::Probe::Name(n.hash_input()),
        }
    }
}

/// How a directory's entries are named in a listing (`Filesystem::listed_names`).
enum ListedNames {
    AsStored,
    /// Encrypted: no-key names, with the entries' hashes when the listing is in hash order.
    NoKey {
        hash: Option<(HashVersion, [u32; 4])>,
    },
}

impl ListedNames {
    fn shown(&self, disk: &[u8], obj: Object) -> Result<Vec<u8>> {
        match self {
            ListedNames::AsStored => Ok(disk.to_vec()),
            ListedNames::NoKey { .. } if disk == b"." || disk == b".." => Ok(disk.to_vec()),
            ListedNames::NoKey { .. } if disk.len() < fscrypt::MIN_CIPHERTEXT => {
                Err(Error::corrupt(obj, CorruptKind::EncryptedNameShorterThanCipherBlock))
            }
            ListedNames::NoKey { hash } => {
                let pair = hash.map(|(version, seed)| dir_hash(disk, version, &seed));
                Ok(fscrypt::nokey_name(disk, pair))
            }
        }
    }
}

/// A readdir position: `base` (a block's first byte, a region's start) and a byte offset past it. Real
/// positions are below the directory's size; saturating keeps a crafted one from wrapping back.
fn position(base: u64, offset: usize) -> u64 {
    base.saturating_add(u64::try_from(offset).unwrap_or(u64::MAX))
}
