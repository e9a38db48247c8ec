//! The `fuser::Filesystem` adapter: unpacks each request, calls the handler in [`super::Server`], and
//! packs the result into the reply. No filesystem logic lives here.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::ext4::Timestamp;
use crate::ext4::ops::{SetAttr, SetTime};

use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, Errno as FuseErrno, FileHandle, FopenFlags, Generation, INodeNo,
    InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::{Errno, Server, XattrReply};

/// What the kernel may cache, asked for at FUSE_INIT: readdirplus (attributes with the listing, chosen
/// adaptively by the kernel), cached symlink targets, and parallel lookups in one directory.
const WANTED: &[InitFlags] = &[
    InitFlags::FUSE_DO_READDIRPLUS,
    InitFlags::FUSE_READDIRPLUS_AUTO,
    InitFlags::FUSE_CACHE_SYMLINKS,
    InitFlags::FUSE_PARALLEL_DIROPS,
    // The kernel checks ACLs itself and caches them (absent ones too), which saves a getxattr round trip
    // per file for `ls -l`. It implies default_permissions.
    InitFlags::FUSE_POSIX_ACL,
];

/// The adapter the session owns. Every request that a user starts (as opposed to those the kernel
/// sends on its own: reads and writes of open files, forgets, releases) first passes the `allow_root`
/// check.
pub struct FuseFs {
    server: Arc<Server>,
}

impl FuseFs {
    pub fn new(server: Arc<Server>) -> FuseFs {
        FuseFs { server }
    }
}

/// How the server tells the kernel about attributes it changed on its own (access times): an inode
/// invalidation with a negative offset, which drops the cached attributes and keeps the cached pages.
pub fn invalidator(notifier: fuser::Notifier) -> Box<dyn Fn(crate::ext4::InodeNo) + Send + Sync> {
    Box::new(move |ino| {
        let _ = notifier.inval_inode(super::attr::nodeid_of(ino), -1, 0);
    })
}

fn err(e: Errno) -> FuseErrno {
    FuseErrno::from_i32(e.0)
}

impl fuser::Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // On a writable mount the kernel also caches writes (writeback cache): small writes coalesce
        // into large ones, and size and mtime are kept by the kernel, which is the only writer.
        // And the umask is left to the engine (FUSE_DONT_MASK), so that a parent's default ACL can take its
        // place, as on a local ext4.
        let writeback: &[InitFlags] =
            if self.server.writable() { &[InitFlags::FUSE_WRITEBACK_CACHE, InitFlags::FUSE_DONT_MASK] } else { &[] };
        // Under fakeroot the kernel must not check permissions: POSIX ACL support would make it.
        let wanted =
            WANTED.iter().filter(|&&f| f != InitFlags::FUSE_POSIX_ACL || self.server.kernel_checks_permissions());
        for &flag in wanted.chain(writeback) {
            if config.add_capabilities(flag).is_err() {
                tracing::info!(?flag, "kernel does not offer this FUSE capability");
            } else if flag == InitFlags::FUSE_WRITEBACK_CACHE {
                self.server.kernel_keeps_file_times();
            } else if flag == InitFlags::FUSE_DONT_MASK {
                self.server.engine_applies_umask();
            }
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if self.server.denies(req.uid()) {
            return reply.error(FuseErrno::EACCES);
        }
        let t = self.server.timeouts();
        match self.server.lookup(parent, name.as_bytes()) {
            Ok((attr, generation)) => reply.entry_with_ttls(&t.attr, &t.entry, &attr, Generation(generation)),
            Err(e) => reply.error(err(e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.server.forget(ino, nlookup);
    }

    // batch_forget: fuser 0.18 does not export the `ForgetOne` type, so it cannot be overridden; its
    // default implementation calls `forget` for each node, which is what we would do.

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if self.server.denies(req.uid()) {
            return reply.error(FuseErrno::EACCES);
        }
        match self.server.getattr(ino) {
            Ok(attr) => reply.attr(&self.server.timeouts().attr, &attr),
            Err(e) => reply.error(err(e)),
        }
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        if self.server.denies(req.uid()) {
            return reply.error(FuseErrno::EACCES);
        }
        match self.server.readlink(ino) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(err(e)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if self.server.denies(req.uid()) {
            return reply.error(FuseErrno::EACCES);
        }
        // The kernel is the only writer, so its page cache stays valid across opens.
        match self.server.open(ino, flags.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(err(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.server.read(ino, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(err(e)),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        // Nothing is buffered here (writes are written through; the kernel writes its dirty pages back
        // before it flushes); ENOSYS makes the kernel stop sending flush on close.
        reply.error(FuseErrno::ENOSYS);
    }

    fn destroy(&mut self) {
        self.server.shutdown();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        if self.server.denies(req.uid()) {
            return reply.error(FuseErrno::EACCES);
        }
        let t = self.server.timeouts();
        match self.server.create(parent, name.as_bytes(), mode, umask, (req.uid(), req.gid())) {
            Ok(((attr, generation), fh)) => {
                reply.created(&t.entry, &attr, Generation(generation), FileHandle(fh), FopenFlags::empty())
            }
            Err(e) => reply.error(err(e)),
        }
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        if self.server.denies(req.uid()) {
            return reply.error(FuseErrno::EACCES);
        }
        entry(self, self.server.mknod(parent, name.as_bytes(), mode, umask, rdev, (req.uid(), req.gid())), reply);
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        if self.server.denies(req.uid()) {
            return reply.error(FuseErrno::EACCES);
        }
        entry(self, self.server.mkdir(parent, name.as_bytes(), mode, umask, req.uid(), req.gid()), reply);
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        if self.server.denies(req.uid()) {
            return reply.error(FuseErrno::EACCES);
        }
        let r = self.server.symlink(parent, link_name.as_bytes(), target.as_os_str().as_bytes(), req.uid(), req.gid());
        entry(self, r, reply);
    }

    fn link(&self, req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        if self.server.denies(req.uid()) {
            return reply.error(FuseErrno::EACCES);
        }
        entry(self, self.server.link(ino, newparent, newname.as_bytes()), reply);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if self.server.denies(req.uid()) {
            return reply.error(FuseErrno::EACCES);
        }
        empty(self.server.unlink(parent, name.as_bytes()), reply);
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if self.server.denies(req.uid()) {
            return reply.error(FuseErrno::EACCES);
        }
        empty(self.server.rmdir(parent, name.as_bytes()), reply);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if self.server.denies(req.uid()) {
            return reply.error(FuseErrno::EACCES);
        }
        empty(self.server.rename(parent, name.as_bytes(), newparent, newname.as_bytes(), flags.bits()), reply);
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if self.server.denies(req.uid()) {
            return reply.error(FuseErrno::EACCES);
        }
        let changes = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(set_time),
            mtime: mtime.map(set_time),
            ctime: ctime.map(timestamp),
            via_open_file: fh.is_some(),
        };
        match self.server.setattr(ino, changes) {
            Ok(attr) => reply.attr(&self.server.timeouts().attr, &attr),
            Err(e) => reply.error(err(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.server.write(ino, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(err(e)),
        }
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        empty(self.server.fsync(), reply);
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        empty(self.server.fsync(), reply);
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if self.server.denies(req.uid()) {
            return reply.error(FuseErrno::EACCES);
        }
        empty(self.server.fallocate(ino, offset, length, mode), reply);
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        if self.server.denies(req.uid()) {
            return reply.error(FuseErrno::EACCES);
        }
        empty(self.server.setxattr(ino, name.as_bytes(), value, flags), reply);
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if self.server.denies(req.uid()) {
            return reply.error(FuseErrno::EACCES);
        }
        empty(self.server.removexattr(ino, name.as_bytes()), reply);
    }

    fn copy_file_range(
        &self,
        req: &Request,
        ino_in: INodeNo,
        _fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        _fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        if self.server.denies(req.uid()) {
            return reply.error(FuseErrno::EACCES);
        }
        match self.server.copy_file_range(ino_in, offset_in, ino_out, offset_out, len) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(err(e)),
        }
    }

    fn ioctl(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        if self.server.denies(req.uid()) {
            return reply.error(FuseErrno::EACCES);
        }
        match self.server.ioctl(ino, cmd, in_data, req.uid()) {
            Ok(out) => reply.ioctl(0, &out),
            Err(e) => reply.error(err(e)),
        }
    }

    fn opendir(&self, req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.server.denies(req.uid()) {
            return reply.error(FuseErrno::EACCES);
        }
        // Declined like open: the kernel then caches the directory's contents (FOPEN_CACHE_DIR by default).
        match self.server.opendir() {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR),
            Err(e) => reply.error(err(e)),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let r = self.server.readdir(ino, offset, &mut |child, next, kind, name| {
            reply.add(INodeNo(child), next, kind, OsStr::from_bytes(name))
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn readdirplus(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let t = self.server.timeouts();
        let r = self.server.readdirplus(ino, offset, &mut |child, next, name, attr, generation, cacheable| {
            let name = OsStr::from_bytes(name);
            let ttl = if cacheable { t.entry } else { std::time::Duration::ZERO };
            reply.add(INodeNo(child), next, name, &ttl, attr, Generation(generation))
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn statfs(&self, req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        if self.server.denies(req.uid()) {
            return reply.error(FuseErrno::EACCES);
        }
        let s = self.server.statfs();
        reply.statfs(
            s.blocks,
            s.free_blocks,
            s.available_blocks,
            s.inodes,
            s.free_inodes,
            s.block_size,
            s.name_max,
            s.block_size,
        );
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if self.server.denies(req.uid()) {
            return reply.error(FuseErrno::EACCES);
        }
        match self.server.getxattr(ino, name.as_bytes(), size) {
            Ok(XattrReply::Size(n)) => reply.size(n),
            Ok(XattrReply::Data(d)) => reply.data(&d),
            Err(e) => reply.error(err(e)),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        if self.server.denies(req.uid()) {
            return reply.error(FuseErrno::EACCES);
        }
        match self.server.listxattr(ino, size) {
            Ok(XattrReply::Size(n)) => reply.size(n),
            Ok(XattrReply::Data(d)) => reply.data(&d),
            Err(e) => reply.error(err(e)),
        }
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        if self.server.denies(req.uid()) {
            return reply.error(FuseErrno::EACCES);
        }
        match self.server.access(ino, mask.bits(), req.uid(), req.gid()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn lseek(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: i64, whence: i32, reply: ReplyLseek) {
        match self.server.lseek(ino, offset, whence) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(err(e)),
        }
    }
}

fn entry(fs: &FuseFs, r: Result<(fuser::FileAttr, u64), Errno>, reply: ReplyEntry) {
    let t = fs.server.timeouts();
    match r {
        Ok((attr, generation)) => reply.entry_with_ttls(&t.attr, &t.entry, &attr, Generation(generation)),
        Err(e) => reply.error(err(e)),
    }
}

fn empty(r: Result<(), Errno>, reply: ReplyEmpty) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(err(e)),
    }
}

/// The (seconds, nanoseconds) the kernel sent, from fuser's `SystemTime`.
///
/// fuser 0.18 builds times before 1970 as `UNIX_EPOCH - Duration::new(-sec, nsec)` (its own TODO says the
/// nanoseconds should be subtracted the other way), so a time of -2 s + 0.5 s arrives as -2.5 s. Undo
/// exactly that construction: the distance before the epoch is (-sec, nsec).
fn timestamp(t: SystemTime) -> Timestamp {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timestamp { sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX), nsec: d.subsec_nanos() },
        Err(e) => {
            let d = e.duration();
            Timestamp { sec: -i64::try_from(d.as_secs()).unwrap_or(i64::MAX), nsec: d.subsec_nanos() }
        }
    }
}

fn set_time(t: TimeOrNow) -> SetTime {
    match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(t) => SetTime::At(timestamp(t)),
    }
}
