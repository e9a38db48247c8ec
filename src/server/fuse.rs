//! The `fuser::Filesystem` adapter: unpacks each request, calls the handler in [`super::Server`], and
//! packs the result into the reply. No filesystem logic lives here.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use fuser::{
    AccessFlags, Errno as FuseErrno, FileHandle, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig,
    LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyLseek, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
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

/// The adapter the session owns.
pub struct FuseFs {
    server: Arc<Server>,
}

impl FuseFs {
    pub fn new(server: Arc<Server>) -> FuseFs {
        FuseFs { server }
    }
}

fn err(e: Errno) -> FuseErrno {
    FuseErrno::from_i32(e.0)
}

impl fuser::Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        for &flag in WANTED {
            if config.add_capabilities(flag).is_err() {
                tracing::info!(?flag, "kernel does not offer this FUSE capability");
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
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

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.server.getattr(ino) {
            Ok(attr) => reply.attr(&self.server.timeouts().attr, &attr),
            Err(e) => reply.error(err(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.server.readlink(ino) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(err(e)),
        }
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.server.open() {
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
        // Nothing is buffered on a read-only mount; ENOSYS makes the kernel stop sending flush on close.
        reply.error(FuseErrno::ENOSYS);
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // Declined like open: the kernel then caches the directory's contents (FOPEN_CACHE_DIR by default).
        match self.server.open() {
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
        let r = self.server.readdirplus(ino, offset, &mut |child, next, name, attr, generation| {
            let name = OsStr::from_bytes(name);
            match attr {
                Some(a) => reply.add(INodeNo(child), next, name, &t.entry, a, Generation(generation)),
                None => {
                    // Node id 0: the kernel lists the name without creating an inode for it.
                    let mut blank = placeholder_attr();
                    blank.ino = INodeNo(0);
                    reply.add(INodeNo(child), next, name, &std::time::Duration::ZERO, &blank, Generation(0))
                }
            }
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
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

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.server.getxattr(ino, name.as_bytes(), size) {
            Ok(XattrReply::Size(n)) => reply.size(n),
            Ok(XattrReply::Data(d)) => reply.data(&d),
            Err(e) => reply.error(err(e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.server.listxattr(ino, size) {
            Ok(XattrReply::Size(n)) => reply.size(n),
            Ok(XattrReply::Data(d)) => reply.data(&d),
            Err(e) => reply.error(err(e)),
        }
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
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

/// Attributes for an entry whose inode could not be read (sent with node id 0, so never used).
fn placeholder_attr() -> fuser::FileAttr {
    let t = std::time::UNIX_EPOCH;
    fuser::FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind: fuser::FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 512,
        flags: 0,
    }
}
