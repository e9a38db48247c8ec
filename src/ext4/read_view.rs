//! The engine's reads as callers outside it make them: through a [`ReadView`], which holds the engine's
//! shared lock for as long as it lives.
//!
//! Every write operation takes that lock exclusively for its whole transaction, so blocks, inodes and
//! directory entries do not change under a view. The read methods of [`Filesystem`] are visible only
//! inside the engine; outside it they are reached through a view, so a read that forgets the lock does
//! not compile.

use std::sync::{Arc, RwLockReadGuard};

use super::error::Result;
use super::fs::{DirEntry, Filesystem, Mapping};
use super::inode::{Inode, InodeNo};

/// Reads of one filesystem under its shared lock. Drop it before a write operation on the same thread
/// (the write waits for every view to go).
pub struct ReadView<'a> {
    fs: &'a Filesystem,
    _shared: RwLockReadGuard<'a, ()>,
}

impl Filesystem {
    /// A view for reading: waits while a write operation runs, and holds the next one off until dropped.
    pub fn reader(&self) -> ReadView<'_> {
        ReadView { fs: self, _shared: self.shared() }
    }
}

impl ReadView<'_> {
    /// The block size (fixed while mounted).
    pub fn block_size(&self) -> u32 {
        self.fs.block_size()
    }

    /// The superblock as opened (fixed while mounted).
    pub fn superblock(&self) -> &super::superblock::Superblock {
        self.fs.superblock()
    }

    /// Inode `ino` as stored, whatever its state (see [`ReadView::user_inode`] for what programs may open).
    pub fn inode(&self, ino: InodeNo) -> Result<Arc<Inode>> {
        self.fs.inode(ino)
    }

    /// Inode `ino` if programs may see it: in use, and not one of the hidden ones (journal, quota, ...).
    pub fn user_inode(&self, ino: InodeNo) -> Result<Arc<Inode>> {
        self.fs.user_inode(ino)
    }

    /// Where logical block `lblk` of `inode` is stored.
    pub fn map(&self, inode: &Inode, lblk: u64) -> Result<Mapping> {
        self.fs.map(inode, lblk)
    }

    /// Whether `inode` may be opened (an encrypted file's contents may not).
    pub fn check_open(&self, inode: &Inode) -> Result<()> {
        self.fs.check_open(inode)
    }

    /// Up to `len` bytes of `inode` from `offset`.
    pub fn read(&self, inode: &Inode, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.fs.read(inode, offset, len)
    }

    /// A symlink's target.
    pub fn readlink(&self, inode: &Inode) -> Result<Vec<u8>> {
        self.fs.readlink(inode)
    }

    /// The inode `name` names in directory `dir`.
    pub fn lookup(&self, dir: &Inode, name: &[u8]) -> Result<InodeNo> {
        self.fs.lookup(dir, name)
    }

    /// Lists `dir` from `cookie`: see [`Filesystem`]'s read side for the cookies.
    pub fn read_dir(&self, dir: &Inode, cookie: u64, emit: &mut dyn FnMut(DirEntry, u64) -> bool) -> Result<()> {
        self.fs.read_dir(dir, cookie, emit)
    }

    /// Whether `dir` is case-insensitive.
    pub fn casefolded(&self, dir: &Inode) -> bool {
        self.fs.casefolded(dir)
    }

    /// The names of `inode`'s extended attributes.
    pub fn list_xattrs(&self, inode: &Inode) -> Result<Vec<Vec<u8>>> {
        self.fs.list_xattrs(inode)
    }

    /// The value of `inode`'s extended attribute `name`.
    pub fn get_xattr(&self, inode: &Inode, name: &[u8]) -> Result<Vec<u8>> {
        self.fs.get_xattr(inode, name)
    }

    /// SEEK_DATA from `offset`.
    pub fn seek_data(&self, inode: &Inode, offset: u64) -> Result<Option<u64>> {
        self.fs.seek_data(inode, offset)
    }

    /// SEEK_HOLE from `offset`.
    pub fn seek_hole(&self, inode: &Inode, offset: u64) -> Result<Option<u64>> {
        self.fs.seek_hole(inode, offset)
    }

    /// FS_IOC_GETFLAGS of `ino`.
    pub fn get_flags(&self, ino: InodeNo) -> Result<u32> {
        self.fs.get_flags(ino)
    }

    /// The project id of `ino` (FS_IOC_FSGETXATTR).
    pub fn project(&self, ino: InodeNo) -> Result<u32> {
        self.fs.project(ino)
    }
}
