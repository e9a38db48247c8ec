//! Namespace operations on the write side: create, mknod, mkdir, symlink, link, unlink, rmdir, rename,
//! O_TMPFILE. Each is one transaction. An inode's attributes change in `attr_ops.rs`, the kernel's
//! references to inodes are counted in `refs.rs`.

use std::sync::Arc;

use super::error::{Error, Result};
use super::extent_write;
use super::features::{INCOMPAT_EXTENTS, RO_COMPAT_DIR_NLINK};
use super::fs::Filesystem;
use super::inode::{FileKind, Inode, InodeNo, Timestamp, flags};
use super::map_edit::MapEdit;
use super::txn::{Txn, inode_mut};
use super::xattr_write;
use super::{acl, xattr};

/// The most links an inode may have (`EXT4_LINK_MAX`).
const LINK_MAX: u16 = 65000;
const S_ISGID: u16 = 0o2000;

/// Who creates a new inode, and with what mode (file type bits included).
#[derive(Debug, Clone, Copy)]
pub struct NewInode {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Device number (`new_encode_dev` layout) for character and block devices.
    pub rdev: u32,
    /// The caller's umask, when the kernel left it to the filesystem (FUSE_DONT_MASK): it applies only
    /// where the parent has no default ACL, as on a local ext4.
    pub umask: Option<u32>,
}

pub use super::attr_ops::{SetAttr, SetTime};

/// `renameat2` flags.
pub const RENAME_NOREPLACE: u32 = 1;
pub const RENAME_EXCHANGE: u32 = 2;

/// `EXDEV` when `inode` would get a name in project directory `dir` (`chattr +P`) of another project:
/// its blocks would count against the wrong project (the kernel's check in link and rename).
fn check_project(dir: &Inode, inode: &Inode) -> Result<()> {
    if dir.has_flag(flags::PROJINHERIT) && dir.projid() != inode.projid() {
        return Err(Error::CrossDevice);
    }
    Ok(())
}

fn check_name(name: &[u8]) -> Result<()> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0) {
        return Err(Error::Invalid);
    }
    if name.len() > super::fs::NAME_MAX {
        return Err(Error::NameTooLong);
    }
    Ok(())
}

/// A directory that may gain or lose entries.
fn changeable_dir(dir: &Inode) -> Result<()> {
    if dir.kind != FileKind::Directory {
        return Err(Error::NotDir);
    }
    if dir.has_flag(flags::IMMUTABLE) || dir.has_flag(flags::APPEND) {
        return Err(Error::NotPermitted);
    }
    Ok(())
}

/// One more subdirectory in `d` (the kernel's `ext4_inc_count`): an htree directory past the limit, or
/// already at 1, reads 1 (dir_nlink).
fn inc_dir_links(d: &mut Inode) {
    let n = d.links_count.saturating_add(1);
    d.links_count = if d.has_flag(flags::INDEX) && (n > LINK_MAX || n == 2) { 1 } else { n };
}

/// What [`Filesystem::remove`] may remove: unlink's non-directories, rmdir's empty directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Removal {
    NonDirectory,
    EmptyDirectory,
}

/// One subdirectory less in `d` (the kernel's `ext4_dec_count`: a count of 2 or less stays).
fn dec_dir_links(d: &mut Inode) {
    if d.links_count > 2 {
        d.links_count = d.links_count.saturating_sub(1);
    }
}

impl Filesystem {
    fn group_of(&self, ino: InodeNo) -> u32 {
        ino.0.saturating_sub(1).checked_div(self.sb.inodes_per_group).unwrap_or(0)
    }

    /// Allocates and fills a new inode in `parent` (not yet linked anywhere).
    fn new_inode(&self, tx: &mut Txn<'_>, parent: &Inode, new: NewInode) -> Result<Inode> {
        // i_mode is 16 bits: file type and permissions; anything above them is not a mode.
        let mut mode = u16::try_from(new.mode).map_err(|_| Error::Invalid)?;
        let kind = FileKind::from_mode(mode).ok_or(Error::Invalid)?;
        let mut gid = new.gid;
        // A setgid directory hands its group down, and its setgid bit to subdirectories.
        if parent.mode & S_ISGID != 0 {
            gid = parent.gid;
            if kind == FileKind::Directory {
                mode |= S_ISGID;
            }
        }
        let inherited = if kind == FileKind::Symlink { None } else { self.default_acl(parent)? };
        let mut access_acl = None;
        match &inherited {
            // As posix_acl_create: the parent's default ACL, masked by the requested mode, replaces the umask.
            Some(default) => {
                let mut acl = default.clone();
                if let Some((m, extended)) = acl::create_masq(&mut acl, mode) {
                    mode = m;
                    if extended {
                        access_acl = Some(acl::encode_disk(&acl));
                    }
                }
            }
            None => {
                if let Some(umask) = new.umask {
                    if kind != FileKind::Symlink {
                        mode &= !super::bytes::low16(umask & 0o777);
                    }
                }
            }
        }
        let ino = tx.alloc_inode(self.group_of(parent.ino), kind == FileKind::Directory)?;
        let generation = tx.next_generation();
        let mut inode = Inode::new(&self.sb, ino, mode, new.uid, gid, Timestamp::now(), generation)?;
        if let Some(a) = &access_acl {
            xattr_write::set(tx, &mut inode, xattr::INDEX_POSIX_ACL_ACCESS, b"", Some(a), 0)?;
        }
        if let (Some(default), FileKind::Directory) = (&inherited, kind) {
            xattr_write::set(tx, &mut inode, xattr::INDEX_POSIX_ACL_DEFAULT, b"", Some(&acl::encode_disk(default)), 0)?;
        }
        // A casefolded directory's subdirectories are casefolded too (`EXT4_FL_INHERITED`, kept for
        // directories only).
        if kind == FileKind::Directory && self.casefolded(parent) {
            inode.flags |= flags::CASEFOLD;
        }
        // A project directory (`chattr +P`) hands down its project id, and the flag to subdirectories
        // only (the kernel's `ext4_mask_flags`: it is a directory flag).
        if parent.has_flag(flags::PROJINHERIT) {
            inode.set_projid(parent.projid());
            if kind == FileKind::Directory {
                inode.flags |= flags::PROJINHERIT;
            }
        }
        let extents = self.sb.has_incompat(INCOMPAT_EXTENTS);
        match kind {
            FileKind::Regular | FileKind::Directory if extents => {
                inode.flags |= flags::EXTENTS;
                inode.i_block = extent_write::empty_root();
            }
            FileKind::CharDevice | FileKind::BlockDevice => {
                let (major, minor) = ((new.rdev >> 8) & 0xFFF, (new.rdev & 0xFF) | ((new.rdev >> 12) & 0xFFF00));
                if major < 256 && minor < 256 {
                    inode.i_block[..4].copy_from_slice(&((major << 8) | minor).to_le_bytes());
                } else {
                    inode.i_block[4..8].copy_from_slice(&new.rdev.to_le_bytes());
                }
            }
            _ => {}
        }
        Ok(inode)
    }

    /// The default ACL of directory `dir`, if it has one.
    fn default_acl(&self, dir: &Inode) -> Result<Option<Vec<acl::AclEntry>>> {
        match self.get_xattr(dir, b"system.posix_acl_default") {
            Ok(x) => {
                let disk = acl::xattr_to_disk(&x)?;
                Ok(Some(acl::parse_disk(&disk, super::error::Object::Xattr(dir.ino.0))?))
            }
            Err(Error::NoAttr) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates a regular file, fifo, socket or device node `name` in `parent`.
    pub fn mknod(&self, parent: InodeNo, name: &[u8], new: NewInode) -> Result<Arc<Inode>> {
        check_name(name)?;
        let mut tx = self.begin()?;
        let mut dir = self.dir_for_new_entry(&tx, parent, name)?;
        let inode = self.new_inode(&mut tx, &dir, new)?;
        if inode.kind == FileKind::Directory || inode.kind == FileKind::Symlink {
            return Err(Error::Invalid);
        }
        let written = tx.write_inode(&inode)?;
        self.link_into(&mut tx, &mut dir, name, &inode)?;
        tx.commit()?;
        Ok(written)
    }

    /// Directory `parent`, loaded for a new entry `name`: one that may gain entries, where `name` is free
    /// (a directory that cannot be read is its error, not a free name).
    fn dir_for_new_entry(&self, tx: &Txn<'_>, parent: InodeNo, name: &[u8]) -> Result<Inode> {
        let dir = inode_mut(tx, parent)?;
        changeable_dir(&dir)?;
        if self.find_entry(&dir, name)?.is_some() {
            return Err(Error::Exists);
        }
        Ok(dir)
    }

    /// Adds `name` -> `inode` to `dir` and writes `dir` with fresh times.
    fn link_into(&self, tx: &mut Txn<'_>, dir: &mut Inode, name: &[u8], inode: &Inode) -> Result<()> {
        self.add_entry(tx, dir, name, inode.ino, inode.kind)?;
        let now = Timestamp::now();
        dir.mtime = now;
        dir.ctime = now;
        tx.write_inode(dir)?;
        Ok(())
    }

    /// Creates directory `name` in `parent`.
    pub fn mkdir(&self, parent: InodeNo, name: &[u8], new: NewInode) -> Result<Arc<Inode>> {
        check_name(name)?;
        let mut tx = self.begin()?;
        let mut dir = self.dir_for_new_entry(&tx, parent, name)?;
        let dx = dir.has_flag(flags::INDEX);
        if dir.links_count >= LINK_MAX && !(dx && self.sb.has_ro_compat(RO_COMPAT_DIR_NLINK)) {
            return Err(Error::TooManyLinks);
        }
        let mut inode = self.new_inode(&mut tx, &dir, NewInode { mode: (new.mode & 0o7777) | 0o40000, ..new })?;
        inode.links_count = 2;
        self.init_dir(&mut tx, &mut inode, parent)?;
        let written = tx.write_inode(&inode)?;
        self.add_entry(&mut tx, &mut dir, name, inode.ino, FileKind::Directory)?;
        inc_dir_links(&mut dir);
        let now = Timestamp::now();
        dir.mtime = now;
        dir.ctime = now;
        tx.write_inode(&dir)?;
        tx.commit()?;
        Ok(written)
    }

    /// Creates symlink `name` in `parent` pointing at `target`: in `i_block` when shorter than 60 bytes,
    /// else in a block of its own.
    pub fn symlink(&self, parent: InodeNo, name: &[u8], target: &[u8], new: NewInode) -> Result<Arc<Inode>> {
        check_name(name)?;
        let bs = super::bytes::index(self.sb.block_size);
        // A block (at most 4096 bytes: PATH_MAX) holds the target and its NUL.
        if target.is_empty() || target.len() >= bs.min(4096) {
            return Err(Error::NameTooLong);
        }
        let mut tx = self.begin()?;
        let mut dir = self.dir_for_new_entry(&tx, parent, name)?;
        let mut inode = self.new_inode(&mut tx, &dir, NewInode { mode: 0o120777, ..new })?;
        inode.size = u64::try_from(target.len()).map_err(|_| Error::NameTooLong)?;
        if target.len() < 60 {
            inode.i_block = [0; 60];
            inode.i_block[..target.len()].copy_from_slice(target);
        } else {
            if self.sb.has_incompat(INCOMPAT_EXTENTS) {
                inode.flags |= flags::EXTENTS;
                inode.i_block = extent_write::empty_root();
            }
            let goal = self.sb.group_first_block(u64::from(self.group_of(inode.ino)));
            let mut map = MapEdit::load(self, &inode)?;
            let (pblk, _) = map.allocate(&mut tx, &mut inode, 0, 1, goal, false)?;
            let mut block = vec![0u8; bs];
            block[..target.len()].copy_from_slice(target);
            self.dev.write_all_at(&block, pblk.saturating_mul(u64::from(self.sb.block_size)))?;
            map.store(&mut tx, &mut inode, pblk)?;
        }
        let written = tx.write_inode(&inode)?;
        self.link_into(&mut tx, &mut dir, name, &inode)?;
        tx.commit()?;
        Ok(written)
    }

    /// Adds hard link `name` in `parent` to `ino`.
    pub fn link(&self, ino: InodeNo, parent: InodeNo, name: &[u8]) -> Result<Arc<Inode>> {
        check_name(name)?;
        let mut tx = self.begin()?;
        let mut dir = inode_mut(&tx, parent)?;
        changeable_dir(&dir)?;
        let mut inode = inode_mut(&tx, ino)?;
        if inode.kind == FileKind::Directory {
            return Err(Error::NotPermitted);
        }
        if inode.has_flag(flags::IMMUTABLE) || inode.has_flag(flags::APPEND) {
            return Err(Error::NotPermitted);
        }
        check_project(&dir, &inode)?;
        if inode.links_count >= LINK_MAX {
            return Err(Error::TooManyLinks);
        }
        if self.find_entry(&dir, name)?.is_some() {
            return Err(Error::Exists);
        }
        if inode.links_count == 0 {
            // An O_TMPFILE file given its first name (linkat): off the orphan list, no longer doomed.
            tx.orphan_remove(&mut inode)?;
            self.doomed.lock().unwrap_or_else(|p| p.into_inner()).remove(&inode.ino.0);
        }
        // link() refused a file at the link limit.
        inode.links_count = inode.links_count.saturating_add(1);
        self.touch(&mut inode, false);
        let written = tx.write_inode(&inode)?;
        self.link_into(&mut tx, &mut dir, name, &inode)?;
        tx.commit()?;
        Ok(written)
    }

    /// Creates a regular file with no name in directory `parent` (O_TMPFILE), as the kernel's ext4
    /// does: no links, on the orphan list from the start, so that it goes at its last reference (the
    /// caller pins it) unless [`Filesystem::link`] gives it a name first, and a crash leaves nothing
    /// behind but an orphan the next mount deletes.
    pub fn tmpfile(&self, parent: InodeNo, new: NewInode) -> Result<Arc<Inode>> {
        let mut tx = self.begin()?;
        let dir = inode_mut(&tx, parent)?;
        changeable_dir(&dir)?;
        let mut inode = self.new_inode(&mut tx, &dir, NewInode { mode: (new.mode & 0o7777) | 0o100000, ..new })?;
        inode.links_count = 0;
        tx.orphan_add(&mut inode)?;
        let written = tx.write_inode(&inode)?;
        self.doomed.lock().unwrap_or_else(|p| p.into_inner()).insert(inode.ino.0);
        tx.commit()?;
        Ok(written)
    }

    /// Drops one link of `inode` (all of a directory's); with none left, the inode is deleted, or put on
    /// the orphan list while it is still open.
    fn drop_link(&self, tx: &mut Txn<'_>, inode: &mut Inode) -> Result<()> {
        inode.links_count = if inode.kind == FileKind::Directory { 0 } else { inode.links_count.saturating_sub(1) };
        self.touch(inode, false);
        if inode.links_count > 0 {
            tx.write_inode(inode)?;
        } else if self.ref_count(inode.ino) > 0 {
            tx.orphan_add(inode)?;
            tx.write_inode(inode)?;
            self.doomed.lock().unwrap_or_else(|p| p.into_inner()).insert(inode.ino.0);
        } else {
            self.delete_inode(tx, inode)?;
        }
        Ok(())
    }

    /// Removes `name` (not a directory) from `parent`.
    pub fn unlink(&self, parent: InodeNo, name: &[u8]) -> Result<()> {
        self.remove(parent, name, Removal::NonDirectory)
    }

    /// Removes the empty directory `name` from `parent`.
    pub fn rmdir(&self, parent: InodeNo, name: &[u8]) -> Result<()> {
        if name == b"." {
            return Err(Error::Invalid);
        }
        if name == b".." {
            return Err(Error::NotEmpty);
        }
        self.remove(parent, name, Removal::EmptyDirectory)
    }

    /// unlink and rmdir: the entry goes, the directory is touched, and the inode loses the link (it is
    /// deleted with its last, or kept on the orphan list while the kernel still references it).
    fn remove(&self, parent: InodeNo, name: &[u8], what: Removal) -> Result<()> {
        let mut tx = self.begin()?;
        let mut dir = inode_mut(&tx, parent)?;
        changeable_dir(&dir)?;
        let ino = self.lookup(&dir, name)?;
        let mut inode = inode_mut(&tx, ino)?;
        match (what, inode.kind == FileKind::Directory) {
            (Removal::NonDirectory, true) => return Err(Error::IsDir),
            (Removal::EmptyDirectory, false) => return Err(Error::NotDir),
            _ => {}
        }
        if inode.has_flag(flags::IMMUTABLE) || inode.has_flag(flags::APPEND) {
            return Err(Error::NotPermitted);
        }
        if what == Removal::EmptyDirectory && !self.dir_is_empty(&inode)? {
            return Err(Error::NotEmpty);
        }
        self.remove_entry(&mut tx, &mut dir, name)?;
        if what == Removal::EmptyDirectory {
            // Its `..` was one of the parent's links.
            dec_dir_links(&mut dir);
        }
        let now = Timestamp::now();
        dir.mtime = now;
        dir.ctime = now;
        tx.write_inode(&dir)?;
        self.drop_link(&mut tx, &mut inode)?;
        tx.commit()
    }

    /// rename(2) and renameat2(2) with RENAME_NOREPLACE or RENAME_EXCHANGE.
    pub fn rename(&self, parent: InodeNo, name: &[u8], newparent: InodeNo, newname: &[u8], rflags: u32) -> Result<()> {
        check_name(newname)?;
        if rflags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0 || rflags == RENAME_NOREPLACE | RENAME_EXCHANGE {
            return Err(Error::Invalid);
        }
        let mut tx = self.begin()?;
        let sdir = inode_mut(&tx, parent)?;
        let ddir = inode_mut(&tx, newparent)?;
        changeable_dir(&sdir)?;
        changeable_dir(&ddir)?;
        let src = inode_mut(&tx, self.lookup(&sdir, name)?)?;
        let dst = self.find_entry(&ddir, newname)?.map(|i| inode_mut(&tx, i)).transpose()?;
        if src.has_flag(flags::IMMUTABLE) || src.has_flag(flags::APPEND) {
            return Err(Error::NotPermitted);
        }
        // As the kernel's ext4_rename: nothing enters a project directory from another project.
        check_project(&ddir, &src)?;
        if let (true, Some(dst)) = (rflags & RENAME_EXCHANGE != 0, &dst) {
            check_project(&sdir, dst)?;
        }
        let moved_dir = src.kind == FileKind::Directory && parent != newparent;
        if rflags & RENAME_EXCHANGE != 0 {
            let dst = dst.ok_or(Error::NotFound)?;
            if dst.has_flag(flags::IMMUTABLE) || dst.has_flag(flags::APPEND) {
                return Err(Error::NotPermitted);
            }
            self.with_dir(&mut tx, parent, |fs, tx, d| fs.repoint_entry(tx, d, name, dst.ino, dst.kind))?;
            self.with_dir(&mut tx, newparent, |fs, tx, d| fs.repoint_entry(tx, d, newname, src.ino, src.kind))?;
            if parent != newparent {
                let (sd, dd) = (src.kind == FileKind::Directory, dst.kind == FileKind::Directory);
                if sd {
                    self.with_inode(&mut tx, src.ino, |fs, tx, i| fs.set_dotdot(tx, i, newparent))?;
                }
                if dd {
                    self.with_inode(&mut tx, dst.ino, |fs, tx, i| fs.set_dotdot(tx, i, parent))?;
                }
                // A directory moving one way and a file the other shifts one `..` link between the parents.
                if sd != dd {
                    let (gain, lose) = if sd { (newparent, parent) } else { (parent, newparent) };
                    self.with_dir(&mut tx, gain, |_, _, d| {
                        inc_dir_links(d);
                        Ok(())
                    })?;
                    self.with_dir(&mut tx, lose, |_, _, d| {
                        dec_dir_links(d);
                        Ok(())
                    })?;
                }
            }
            for ino in [src.ino, dst.ino] {
                self.with_inode(&mut tx, ino, |fs, _, i| {
                    let _: () = fs.touch(i, false);
                    Ok(())
                })?;
            }
            return tx.commit();
        }
        if let Some(dst) = &dst {
            if dst.ino == src.ino {
                return Ok(()); // two names of one inode: rename does nothing
            }
            if rflags & RENAME_NOREPLACE != 0 {
                return Err(Error::Exists);
            }
            if dst.has_flag(flags::IMMUTABLE) || dst.has_flag(flags::APPEND) {
                return Err(Error::NotPermitted);
            }
            match (src.kind == FileKind::Directory, dst.kind == FileKind::Directory) {
                (true, false) => return Err(Error::NotDir),
                (false, true) => return Err(Error::IsDir),
                (true, true) if !self.dir_is_empty(dst)? => return Err(Error::NotEmpty),
                _ => {}
            }
            self.with_dir(&mut tx, newparent, |fs, tx, d| fs.repoint_entry(tx, d, newname, src.ino, src.kind))?;
            let mut victim = inode_mut(&tx, dst.ino)?;
            self.drop_link(&mut tx, &mut victim)?;
        } else {
            if moved_dir {
                let d = inode_mut(&tx, newparent)?;
                if d.links_count >= LINK_MAX
                    && !(d.has_flag(flags::INDEX) && self.sb.has_ro_compat(RO_COMPAT_DIR_NLINK))
                {
                    return Err(Error::TooManyLinks);
                }
            }
            self.with_dir(&mut tx, newparent, |fs, tx, d| fs.add_entry(tx, d, newname, src.ino, src.kind))?;
        }
        self.with_dir(&mut tx, parent, |fs, tx, d| fs.remove_entry(tx, d, name).map(|_| ()))?;
        if src.kind == FileKind::Directory {
            // As the kernel's ext4_rename: the old parent loses the moved directory's `..`; the new one
            // gains it, unless it replaced a directory there (whose `..` it takes over).
            if moved_dir {
                self.with_inode(&mut tx, src.ino, |fs, tx, i| fs.set_dotdot(tx, i, newparent))?;
            }
            self.with_dir(&mut tx, parent, |_, _, d| {
                dec_dir_links(d);
                Ok(())
            })?;
            if dst.is_none() {
                self.with_dir(&mut tx, newparent, |_, _, d| {
                    inc_dir_links(d);
                    Ok(())
                })?;
            }
        }
        self.with_inode(&mut tx, src.ino, |fs, _, i| {
            let _: () = fs.touch(i, false);
            Ok(())
        })?;
        tx.commit()
    }

    /// Loads inode `ino` as the transaction sees it, changes it with `f`, and writes it back.
    fn with_inode<T>(
        &self,
        tx: &mut Txn<'_>,
        ino: InodeNo,
        f: impl FnOnce(&Self, &mut Txn<'_>, &mut Inode) -> Result<T>,
    ) -> Result<T> {
        let mut inode = inode_mut(tx, ino)?;
        let r = f(self, tx, &mut inode)?;
        tx.write_inode(&inode)?;
        Ok(r)
    }

    /// As [`Self::with_inode`] for a directory whose entries change: its mtime and ctime are updated too.
    fn with_dir<T>(
        &self,
        tx: &mut Txn<'_>,
        ino: InodeNo,
        f: impl FnOnce(&Self, &mut Txn<'_>, &mut Inode) -> Result<T>,
    ) -> Result<T> {
        self.with_inode(tx, ino, |fs, tx, d| {
            let r = f(fs, tx, d)?;
            let now = Timestamp::now();
            d.mtime = now;
            d.ctime = now;
            Ok(r)
        })
    }
}
