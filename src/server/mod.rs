//! The FUSE server: request handlers as plain functions over the engine (typed arguments in, a result
//! out), and in [`dispatch`] the thin [`crate::fuse::Handler`] that decodes nothing itself: it takes the
//! protocol layer's decoded requests to these handlers and their results back as replies, whichever
//! transport carried them.
//!
//! The server keeps what the low-level protocol asks it to keep: lookup counts per node id, held in the
//! engine (`Filesystem::pin`, released on forget); an unlinked file lives until the kernel forgets its
//! last reference, which open files and mappings hold, so there is no open-file table. Node ids are
//! inode numbers (see [`attr::inode_of`]). Read handlers read through an [`ext4::ReadView`] (the
//! engine's shared lock); write handlers are single engine transactions.
#![forbid(unsafe_code)]

pub mod atime;
pub mod attr;
pub mod dispatch;
pub mod ioctl;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::fuse::{FileAttr, FileType, NodeId as INodeNo};

use crate::ext4::ops::{NewInode, SetAttr};
use crate::ext4::{self, FileKind, Filesystem, Inode, InodeNo, ReadView, StatFs};

pub use atime::{AtimePolicy, UnknownAtime};

/// Receives one directory entry: (inode number, next offset, type, name); returns true when full.
pub type DirEmit<'a> = dyn FnMut(u64, u64, FileType, &[u8]) -> bool + 'a;
/// As [`DirEmit`] with attributes: (inode number, next offset, name, attributes, generation, cacheable).
pub type DirPlusEmit<'a> = dyn FnMut(u64, u64, &[u8], &FileAttr, u64, bool) -> bool + 'a;

/// An errno for the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

pub type Reply<T> = Result<T, Errno>;

/// How long the kernel may trust what we tell it. The server owns the image alone, so nothing changes
/// behind the kernel's back: the longer, the fewer round trips.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub entry: Duration,
    pub attr: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let day = Duration::from_secs(24 * 3600);
        Timeouts { entry: day, attr: day }
    }
}

/// Server-wide settings.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    pub timeouts: Timeouts,
    /// When reads update the access time (the kernel leaves it to a FUSE server).
    pub atime: AtimePolicy,
    /// Present every file as owned by this uid (`-o uid=`), and this gid (`-o gid=`); the image keeps
    /// its own owners.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Present every mode with these permission bits cleared (`-o umask=`); the image keeps its own.
    pub umask: Option<u32>,
    /// `fakeroot`: every caller is treated as root (the kernel checks nothing, the server grants).
    pub fakeroot: bool,
    /// `allow_root`: only root and this uid may use the mount (the kernel lets everyone in).
    pub allow_root_owner: Option<u32>,
    /// `minixdf`: statfs counts the metadata overhead in the size.
    pub minixdf: bool,
}

/// A FUSE server over one opened filesystem.
pub struct Server {
    fs: Arc<Filesystem>,
    opts: ServerOptions,
    /// The kernel leaves the umask to us (FUSE_DONT_MASK granted).
    fs_masks: std::sync::atomic::AtomicBool,
    /// Tells the kernel an inode's cached attributes are stale (set by the transport adapter).
    invalidate: std::sync::OnceLock<Box<dyn Fn(InodeNo) + Send + Sync>>,
}

use libc::{EACCES, EINVAL, ENOSYS, ENXIO, ERANGE, EROFS, SEEK_DATA, SEEK_HOLE};

/// Starts the filesystem's housekeeping threads: the journal's commit once its interval has passed
/// (`commit=`), as the kernel's jbd2 thread does, and the MMP block's updates, as its kmmpd (a thread of
/// its own, so that a long commit does not make an update late). Each holds only a weak reference and
/// ends when the filesystem is gone.
pub fn spawn_committer(fs: &Arc<Filesystem>) {
    if fs.is_journaled() && !fs.is_read_only() {
        spawn_ticker(fs, "journal-commit", "journal commits happen on fsync and unmount only", |fs| {
            if let Err(e) = fs.commit_if_due() {
                tracing::error!(error = %e, "journal commit failed");
            }
        });
    }
    if fs.has_mmp() {
        spawn_ticker(fs, "mmp", "the MMP block is not updated: other nodes may take the image", Filesystem::mmp_tick);
    }
}

/// Calls `tick` on the filesystem every second while it lives.
fn spawn_ticker(fs: &Arc<Filesystem>, name: &str, without: &'static str, tick: fn(&Filesystem)) {
    let weak = Arc::downgrade(fs);
    let spawned = std::thread::Builder::new().name(name.into()).spawn(move || {
        loop {
            crate::ext4::mmp::sleep(Duration::from_secs(1));
            let Some(fs) = weak.upgrade() else { return };
            tick(&fs);
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the {name} thread: {without}");
    }
}

impl Server {
    pub fn new(fs: Arc<Filesystem>, opts: ServerOptions) -> Server {
        Server { fs, opts, fs_masks: std::sync::atomic::AtomicBool::new(false), invalidate: std::sync::OnceLock::new() }
    }

    pub fn timeouts(&self) -> Timeouts {
        self.opts.timeouts
    }

    /// The inode behind `nodeid`, read under `r`.
    fn inode(&self, r: &ReadView<'_>, nodeid: INodeNo) -> Reply<Arc<Inode>> {
        self.checked(r.user_inode(attr::inode_of(nodeid)))
    }

    fn block_size(&self) -> u32 {
        self.fs.block_size()
    }

    /// Counts one more kernel reference to `ino`.
    fn remember(&self, ino: InodeNo) {
        self.fs.pin(ino);
    }

    /// The kernel granted the writeback cache: it now keeps regular files' mtime and ctime itself.
    pub fn kernel_keeps_file_times(&self) {
        self.fs.set_kernel_file_times(true);
    }

    pub fn writable(&self) -> bool {
        !self.fs.is_read_only()
    }

    /// Whether `nodeid` is a case-insensitive directory (an unreadable one is not).
    pub fn is_casefolded(&self, nodeid: INodeNo) -> bool {
        let r = self.fs.reader();
        r.user_inode(attr::inode_of(nodeid)).is_ok_and(|d| r.casefolded(&d))
    }

    pub fn enforces_quota_limits(&self) -> bool {
        self.fs.enforces_quota_limits()
    }

    /// Writes the clean superblock: called once the session ends.
    pub fn shutdown(&self) {
        if let Err(e) = self.fs.close() {
            tracing::error!(error = %e, "could not mark the filesystem clean");
        }
    }

    /// Attributes as the mount presents them (`-o uid=`/`gid=` replace the owners).
    fn present(&self, mut a: FileAttr) -> FileAttr {
        if let Some(u) = self.opts.uid {
            a.uid = u;
        }
        if let Some(g) = self.opts.gid {
            a.gid = g;
        }
        if let Some(m) = self.opts.umask {
            a.perm &= !(m as u16);
        }
        a
    }

    /// Whether `uid` is turned away (`allow_root`: only root and the mounting user may use the mount).
    pub fn denies(&self, uid: u32) -> bool {
        self.opts.allow_root_owner.is_some_and(|owner| uid != 0 && uid != owner)
    }

    /// Whether the kernel should check permissions (and ACLs) itself: not under `fakeroot`.
    pub fn kernel_checks_permissions(&self) -> bool {
        !self.opts.fakeroot
    }

    /// An engine result as a reply, after `errors=` had its say about a corruption it reports (reads
    /// count as writes do, as in the kernel): under `errors=panic` the server stops (the launcher then
    /// takes the mount away), as the kernel would stop the machine.
    fn checked<T>(&self, r: ext4::Result<T>) -> Reply<T> {
        let r = r.map_err(|e| {
            if e.is_corruption() || matches!(e, ext4::Error::Io(_)) {
                // Damage is worth a log line that names the object; a missing name is not.
                tracing::warn!(error = %e, "request failed");
            }
            self.fs.corruption_found(&e);
            Errno(e.errno())
        });
        // The corruption may also have been found and stepped over by an operation that succeeded (a
        // listing skips a damaged block).
        if self.fs.must_stop() {
            std::process::exit(70);
        }
        r
    }

    /// An entry reply for `inode`, counting the kernel's new reference.
    fn entry(&self, inode: &Inode) -> (FileAttr, u64) {
        self.remember(inode.ino);
        (self.present(attr::entry_attr(inode, self.block_size())), u64::from(inode.generation))
    }

    pub fn lookup(&self, parent: INodeNo, name: &[u8]) -> Reply<(FileAttr, u64)> {
        let r = self.fs.reader();
        let dir = self.inode(&r, parent)?;
        let ino = self.checked(r.lookup(&dir, name))?;
        let inode = self.checked(r.user_inode(ino))?;
        self.remember(ino);
        Ok((self.present(attr::entry_attr(&inode, self.block_size())), u64::from(inode.generation)))
    }

    pub fn forget(&self, nodeid: INodeNo, nlookup: u64) {
        if let Err(e) = self.fs.unpin(attr::inode_of(nodeid), nlookup) {
            tracing::warn!(error = %e, "could not delete an unlinked inode after its last reference");
        }
    }

    pub fn getattr(&self, nodeid: INodeNo) -> Reply<FileAttr> {
        let r = self.fs.reader();
        Ok(self.present(attr::attr(&*self.inode(&r, nodeid)?, self.block_size())))
    }

    pub fn readlink(&self, nodeid: INodeNo) -> Reply<Vec<u8>> {
        let r = self.fs.reader();
        self.checked(r.readlink(&*self.inode(&r, nodeid)?))
    }

    /// opendir, and open on a read-only mount: nothing to track. Answering ENOSYS makes the kernel stop
    /// sending them (and release and releasedir with them) and keep its page and directory caches across
    /// opens, so opening costs no round trip at all.
    pub fn opendir(&self) -> Reply<u64> {
        Err(Errno(ENOSYS))
    }

    /// open: refuses what ext4 would refuse for the inode's flags (the kernel cannot see them): encrypted
    /// files, and on a writable mount writes to immutable and append-only ones. The kernel's lookup reference, not the open, keeps an unlinked file alive.
    pub fn open(&self, nodeid: INodeNo, flags: i32) -> Reply<u64> {
        let ino = attr::inode_of(nodeid);
        if !self.writable() {
            // Encrypted files cannot be opened (ENOKEY): that needs every open, so ENOSYS is kept for
            // images without them.
            if !self.fs.has_encryption() {
                return Err(Errno(ENOSYS));
            }
            let r = self.fs.reader();
            self.checked(r.check_open(&*self.checked(r.user_inode(ino))?))?;
            return Ok(0);
        }
        let reading_stale = {
            let r = self.fs.reader();
            let inode = self.checked(r.user_inode(ino))?;
            self.checked(r.check_open(&inode))?;
            // The kernel does not know the inode flags of a FUSE file: refuse here what it would refuse for
            // ext4 (writing an immutable file; anything but appending to an append-only one).
            let writing = flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0;
            let appending = flags & libc::O_APPEND != 0 && flags & libc::O_TRUNC == 0;
            if writing
                && (inode.has_flag(ext4::inode::flags::IMMUTABLE)
                    || (inode.has_flag(ext4::inode::flags::APPEND) && !appending))
            {
                return Err(Errno(libc::EPERM));
            }
            flags & libc::O_ACCMODE != libc::O_WRONLY && self.atime_due(&inode)
        };
        if reading_stale {
            self.update_atime(ino);
        }
        Ok(0)
    }

    /// Registers how to tell the kernel that an inode's cached attributes are stale.
    pub fn set_invalidator(&self, f: Box<dyn Fn(InodeNo) + Send + Sync>) {
        let _ = self.invalidate.set(f);
    }

    pub fn read(&self, nodeid: INodeNo, offset: u64, size: u32) -> Reply<Vec<u8>> {
        let (data, stale_atime) = {
            let r = self.fs.reader();
            let inode = self.inode(&r, nodeid)?;
            (self.checked(r.read(&inode, offset, size as usize))?, self.atime_due(&inode))
        };
        if stale_atime {
            self.update_atime(attr::inode_of(nodeid));
        }
        Ok(data)
    }

    /// SEEK_DATA / SEEK_HOLE from the extent map. On a writable mount the kernel may hold written data
    /// the map does not show yet (writeback cache), so there ENOSYS lets the kernel answer itself, treating
    /// the whole file as data, which is always correct if less precise.
    pub fn lseek(&self, nodeid: INodeNo, offset: i64, whence: i32) -> Reply<i64> {
        if self.writable() {
            return Err(Errno(ENOSYS));
        }
        let r = self.fs.reader();
        let inode = self.inode(&r, nodeid)?;
        let offset = u64::try_from(offset).map_err(|_| Errno(EINVAL))?;
        let found = match whence {
            SEEK_DATA => self.checked(r.seek_data(&inode, offset))?,
            SEEK_HOLE => self.checked(r.seek_hole(&inode, offset))?,
            // SEEK_SET, SEEK_CUR and SEEK_END never reach the server: the kernel answers them.
            _ => return Err(Errno(EINVAL)),
        };
        let found = found.ok_or(Errno(ENXIO))?;
        i64::try_from(found).map_err(|_| Errno(EINVAL))
    }

    /// Lists a directory from `offset`; `emit(ino, next_offset, type, name)` returns `true` when full.
    pub fn readdir(&self, nodeid: INodeNo, offset: u64, emit: &mut DirEmit<'_>) -> Reply<()> {
        let r = self.fs.reader();
        let dir = self.inode(&r, nodeid)?;
        let r = r.read_dir(&dir, offset, &mut |e, next| {
            let kind = match e.kind {
                Some(k) => k,
                // No filetype feature: the type is in the inode (a damaged one lists as a regular file).
                None => r.user_inode(e.ino).map(|i| i.kind).unwrap_or(FileKind::Regular),
            };
            emit(u64::from(e.ino.0), next, attr::file_type(kind), &e.name)
        });
        self.checked(r)
    }

    /// Lists a directory with each entry's attributes. `emit(ino, next_offset, name, attr, generation,
    /// cacheable)` returns `true` when full; `cacheable` is false for placeholders of unreadable inodes.
    pub fn readdirplus(&self, nodeid: INodeNo, offset: u64, emit: &mut DirPlusEmit<'_>) -> Reply<()> {
        let r = self.fs.reader();
        let dir = self.inode(&r, nodeid)?;
        let bs = self.block_size();
        let r = r.read_dir(&dir, offset, &mut |e, next| {
            let dot = e.name == b"." || e.name == b"..";
            // The entry's inode number is the attributes': `.` and `..` (which the kernel does
            // not link) carry the inode's own number, so the root's shows as 2 as on ext4, not node id 1.
            let a = match r.user_inode(e.ino) {
                Ok(i) if dot => (self.present(attr::attr(&i, bs)), u64::from(i.generation), true),
                Ok(i) => (self.present(attr::entry_attr(&i, bs)), u64::from(i.generation), true),
                // An inode that cannot be read still lists by name (as on ext4): placeholder attributes that
                // expire at once, so the next access looks it up again and reports the damage.
                Err(_) => (attr::placeholder(e.ino, e.kind.unwrap_or(FileKind::Regular), bs), 0, false),
            };
            let full = emit(u64::from(e.ino.0), next, &e.name, &a.0, a.1, a.2);
            // The kernel takes a reference for every entry it links, which excludes . and ..
            if !full && !dot {
                self.remember(e.ino);
            }
            full
        });
        self.checked(r)
    }

    pub fn statfs(&self) -> StatFs {
        // The free counts are read under the engine's state mutex; nothing else here reads the image.
        let mut s = self.fs.statfs();
        if self.opts.minixdf {
            // minixdf: the size is every block, metadata included (bsddf, the default, leaves it out).
            s.blocks = self.fs.superblock().blocks_count;
        }
        s
    }

    /// An attribute's value; with `size == 0` the caller only wants its length.
    pub fn getxattr(&self, nodeid: INodeNo, name: &[u8], size: u32) -> Reply<XattrReply> {
        let r = self.fs.reader();
        let value = self.checked(r.get_xattr(&*self.inode(&r, nodeid)?, name))?;
        sized(value, size)
    }

    /// The NUL-separated list of attribute names.
    pub fn listxattr(&self, nodeid: INodeNo, size: u32) -> Reply<XattrReply> {
        let r = self.fs.reader();
        let mut list = Vec::new();
        for name in self.checked(r.list_xattrs(&*self.inode(&r, nodeid)?))? {
            list.extend_from_slice(&name);
            list.push(0);
        }
        sized(list, size)
    }

    /// access(2): the mode bits against the caller's uid and gid (FUSE passes no supplementary groups).
    /// Writing is refused on a read-only mount.
    pub fn access(&self, nodeid: INodeNo, mask: i32, uid: u32, gid: u32) -> Reply<()> {
        use libc::W_OK;
        let r = self.fs.reader();
        let inode = self.inode(&r, nodeid)?;
        if mask & W_OK != 0 && !self.writable() {
            return Err(Errno(EROFS));
        }
        let (uid, gid) = if self.opts.fakeroot { (0, 0) } else { (uid, gid) };
        if permits(&inode, mask, uid, gid) { Ok(()) } else { Err(Errno(EACCES)) }
    }
}

// ---- Write handlers: each is one engine transaction. ----

impl Server {
    /// The umask to apply in the engine: the caller's when the kernel left masking to us (FUSE_DONT_MASK).
    fn umask(&self, umask: u32) -> Option<u32> {
        self.fs_masks.load(Ordering::Relaxed).then_some(umask)
    }

    /// The kernel granted FUSE_DONT_MASK: the engine applies the umask, or the parent's default ACL.
    pub fn engine_applies_umask(&self) {
        self.fs_masks.store(true, Ordering::Relaxed);
    }

    pub fn create(
        &self,
        parent: INodeNo,
        name: &[u8],
        mode: u32,
        umask: u32,
        who: (u32, u32),
    ) -> Reply<((FileAttr, u64), u64)> {
        let new =
            NewInode { mode: (mode & 0o7777) | 0o100000, uid: who.0, gid: who.1, rdev: 0, umask: self.umask(umask) };
        let inode = self.checked(self.fs.mknod(attr::inode_of(parent), name, new))?;
        // A new file has no flags to enforce and no access to record: no open bookkeeping at all.
        Ok((self.entry(&inode), 0))
    }

    /// O_TMPFILE: a file with no name in `parent`, deleted at its last reference unless linked first.
    pub fn tmpfile(&self, parent: INodeNo, mode: u32, umask: u32, who: (u32, u32)) -> Reply<((FileAttr, u64), u64)> {
        let new = NewInode { mode, uid: who.0, gid: who.1, rdev: 0, umask: self.umask(umask) };
        let inode = self.checked(self.fs.tmpfile(attr::inode_of(parent), new))?;
        Ok((self.entry(&inode), 0))
    }

    pub fn mknod(
        &self,
        parent: INodeNo,
        name: &[u8],
        mode: u32,
        umask: u32,
        rdev: u32,
        who: (u32, u32),
    ) -> Reply<(FileAttr, u64)> {
        let new = NewInode { mode, uid: who.0, gid: who.1, rdev, umask: self.umask(umask) };
        let inode = self.checked(self.fs.mknod(attr::inode_of(parent), name, new))?;
        Ok(self.entry(&inode))
    }

    pub fn mkdir(
        &self,
        parent: INodeNo,
        name: &[u8],
        mode: u32,
        umask: u32,
        uid: u32,
        gid: u32,
    ) -> Reply<(FileAttr, u64)> {
        let inode = self.checked(self.fs.mkdir(
            attr::inode_of(parent),
            name,
            NewInode { mode, uid, gid, rdev: 0, umask: self.umask(umask) },
        ))?;
        Ok(self.entry(&inode))
    }

    pub fn symlink(&self, parent: INodeNo, name: &[u8], target: &[u8], uid: u32, gid: u32) -> Reply<(FileAttr, u64)> {
        let new = NewInode { mode: 0o120777, uid, gid, rdev: 0, umask: None };
        let inode = self.checked(self.fs.symlink(attr::inode_of(parent), name, target, new))?;
        Ok(self.entry(&inode))
    }

    pub fn link(&self, nodeid: INodeNo, newparent: INodeNo, newname: &[u8]) -> Reply<(FileAttr, u64)> {
        let inode = self.checked(self.fs.link(attr::inode_of(nodeid), attr::inode_of(newparent), newname))?;
        Ok(self.entry(&inode))
    }

    pub fn unlink(&self, parent: INodeNo, name: &[u8]) -> Reply<()> {
        self.checked(self.fs.unlink(attr::inode_of(parent), name))
    }

    pub fn rmdir(&self, parent: INodeNo, name: &[u8]) -> Reply<()> {
        self.checked(self.fs.rmdir(attr::inode_of(parent), name))
    }

    pub fn rename(&self, parent: INodeNo, name: &[u8], newparent: INodeNo, newname: &[u8], flags: u32) -> Reply<()> {
        self.checked(self.fs.rename(attr::inode_of(parent), name, attr::inode_of(newparent), newname, flags))
    }

    pub fn setattr(&self, nodeid: INodeNo, changes: SetAttr) -> Reply<FileAttr> {
        let inode = self.checked(self.fs.setattr(attr::inode_of(nodeid), changes))?;
        Ok(self.present(attr::attr(&inode, self.block_size())))
    }

    pub fn write(&self, nodeid: INodeNo, offset: u64, data: &[u8]) -> Reply<u32> {
        self.checked(self.fs.write(attr::inode_of(nodeid), offset, data))?;
        u32::try_from(data.len()).map_err(|_| Errno(EINVAL))
    }

    pub fn fallocate(&self, nodeid: INodeNo, offset: u64, len: u64, mode: i32) -> Reply<()> {
        self.checked(self.fs.fallocate(attr::inode_of(nodeid), offset, len, mode))?;
        Ok(())
    }

    pub fn fsync(&self) -> Reply<()> {
        self.checked(self.fs.sync())
    }

    pub fn setxattr(&self, nodeid: INodeNo, name: &[u8], value: &[u8], flags: i32) -> Reply<()> {
        self.checked(self.fs.set_xattr(attr::inode_of(nodeid), name, Some(value), flags))
    }

    pub fn removexattr(&self, nodeid: INodeNo, name: &[u8]) -> Reply<()> {
        self.checked(self.fs.set_xattr(attr::inode_of(nodeid), name, None, 0))
    }

    pub fn copy_file_range(&self, src: INodeNo, off_in: u64, dst: INodeNo, off_out: u64, len: u64) -> Reply<u32> {
        let len = len.min(u64::from(u32::MAX));
        let n = self.checked(self.fs.copy_range(attr::inode_of(src), off_in, attr::inode_of(dst), off_out, len))?;
        u32::try_from(n).map_err(|_| Errno(EINVAL))
    }
}

/// The reply to getxattr/listxattr: the size alone, or the data.
pub enum XattrReply {
    Size(u32),
    Data(Vec<u8>),
}

fn sized(data: Vec<u8>, size: u32) -> Reply<XattrReply> {
    let len = u32::try_from(data.len()).map_err(|_| Errno(ERANGE))?;
    if size == 0 {
        Ok(XattrReply::Size(len))
    } else if len > size {
        Err(Errno(ERANGE))
    } else {
        Ok(XattrReply::Data(data))
    }
}

/// Classic UNIX permission check of `mask` (R_OK 4, W_OK 2, X_OK 1) for `uid`/`gid`.
fn permits(inode: &Inode, mask: i32, uid: u32, gid: u32) -> bool {
    let mask = (mask & 7) as u16;
    let mode = inode.perm();
    if uid == 0 {
        // Root may read and write anything, and execute anything that someone may execute.
        return mask & 1 == 0 || inode.kind == FileKind::Directory || mode & 0o111 != 0;
    }
    let bits = if uid == inode.uid {
        mode >> 6
    } else if gid == inode.gid {
        mode >> 3
    } else {
        mode
    } & 7;
    bits & mask == mask
}
