//! The protocol layer's [`Handler`]: each decoded request to its handler in [`super::Server`], and the
//! result back as a reply. No filesystem logic lives here.

use std::sync::Arc;

use crate::ext4::Timestamp;
use crate::ext4::ops::{SetAttr, SetTime};
use crate::fuse::abi::{self, fattr, init_flags};
use crate::fuse::init::Negotiated;
use crate::fuse::{DirBuffer, Entry, FileAttr, Handler, NodeId, Notifier, Operation, Request, Response, Ttl};

use super::{Errno, Reply, Server, XattrReply};

/// What the kernel may cache, asked for at FUSE_INIT: readdirplus (attributes with the listing, chosen
/// adaptively by the kernel), cached symlink targets, parallel lookups in one directory, and reads in
/// parallel (ASYNC_READ: readahead and concurrent reads of one file).
const WANTED: u64 = init_flags::DO_READDIRPLUS
    | init_flags::READDIRPLUS_AUTO
    | init_flags::CACHE_SYMLINKS
    | init_flags::PARALLEL_DIROPS
    | init_flags::ASYNC_READ;

/// The handler the session calls. Every request that a user starts (as opposed to those the kernel
/// sends on its own: reads and writes of open files, forgets, releases) first passes the `allow_root`
/// check.
pub struct Dispatcher {
    server: Arc<Server>,
}

impl Dispatcher {
    pub fn new(server: Arc<Server>) -> Dispatcher {
        Dispatcher { server }
    }
}

/// How the server tells the kernel about attributes it changed on its own (access times): an inode
/// invalidation with a negative offset, which drops the cached attributes and keeps the cached pages.
pub fn invalidator(notifier: Notifier) -> Box<dyn Fn(crate::ext4::InodeNo) + Send + Sync> {
    Box::new(move |ino| {
        let _ = notifier.inval_inode(super::attr::nodeid_of(ino).0, -1, 0);
    })
}

fn reply<T>(r: Reply<T>, f: impl FnOnce(T) -> Response) -> Response {
    match r {
        Ok(v) => f(v),
        Err(Errno(e)) => Response::Error(e),
    }
}

fn empty(r: Reply<()>) -> Response {
    reply(r, |()| Response::ok())
}

fn time(sec: u64, nsec: u32) -> Timestamp {
    Timestamp { sec: sec as i64, nsec }
}

impl Dispatcher {
    fn ttl(&self) -> Ttl {
        let t = self.server.timeouts();
        Ttl { entry: t.entry, attr: t.attr }
    }

    /// Timeouts for names in directory `parent`. In a case-insensitive directory the kernel must not
    /// keep names: its dentry cache compares them case-sensitively, so a name cached under one spelling
    /// would outlive the entry removed or replaced under another.
    fn ttl_in(&self, parent: NodeId) -> Ttl {
        let t = self.ttl();
        if self.server.is_casefolded(parent) { Ttl { entry: Default::default(), ..t } } else { t }
    }

    fn entry(&self, parent: NodeId, (attr, generation): (FileAttr, u64)) -> Entry {
        Entry { nodeid: attr.ino, generation, attr, ttl: self.ttl_in(parent) }
    }

    /// Whether the request is one a user started (and so subject to `allow_root`).
    fn user_initiated(op: &Operation<'_>) -> bool {
        use Operation as O;
        !matches!(
            op,
            O::Forget { .. }
                | O::BatchForget { .. }
                | O::Read(_)
                | O::Write { .. }
                | O::Release(_)
                | O::Releasedir(_)
                | O::Flush(_)
                | O::Fsync(_)
                | O::Fsyncdir(_)
                | O::Syncfs
                | O::Readdir(_)
                | O::Readdirplus(_)
                | O::Lseek(_)
                | O::Destroy
        )
    }
}

impl Handler for Dispatcher {
    fn wanted(&self, _offered: u64) -> u64 {
        let s = &self.server;
        let mut wanted = WANTED;
        // The kernel checks ACLs itself and caches them (absent ones too), which saves a getxattr round
        // trip per file for `ls -l`. It implies default_permissions, so not under fakeroot, where the
        // kernel must not check permissions.
        if s.kernel_checks_permissions() {
            wanted |= init_flags::POSIX_ACL;
        }
        // On a writable mount the kernel also caches writes (writeback cache): small writes coalesce
        // into large ones, and size and mtime are kept by the kernel, which is the only writer. And the
        // umask is left to the engine (DONT_MASK), so that a parent's default ACL can take its place.
        // Not when quota limits are enforced: EDQUOT must reach write(2), as on ext4, and writes the
        // kernel sends back later carry the flusher's uid (root's, which limits do not hold).
        if s.writable() {
            wanted |= init_flags::DONT_MASK;
            if !s.enforces_quota_limits() {
                wanted |= init_flags::WRITEBACK_CACHE;
            }
        }
        wanted
    }

    fn initialized(&self, n: &Negotiated) {
        let wanted = self.wanted(0);
        for (flag, name) in [
            (init_flags::DO_READDIRPLUS, "readdirplus"),
            (init_flags::CACHE_SYMLINKS, "cache symlinks"),
            (init_flags::PARALLEL_DIROPS, "parallel dirops"),
            (init_flags::POSIX_ACL, "POSIX ACL"),
            (init_flags::WRITEBACK_CACHE, "writeback cache"),
            (init_flags::DONT_MASK, "dont mask"),
            (init_flags::MAX_PAGES, "max pages"),
        ] {
            if (wanted | init_flags::MAX_PAGES) & flag != 0 && !n.has(flag) {
                tracing::info!(capability = name, "kernel does not offer this FUSE capability");
            }
        }
        if n.has(init_flags::WRITEBACK_CACHE) {
            self.server.kernel_keeps_file_times();
        }
        if n.has(init_flags::DONT_MASK) {
            self.server.engine_applies_umask();
        }
        tracing::info!(minor = n.minor, max_write = n.max_write, "FUSE 7.{} session", n.minor);
    }

    fn destroy(&self) {
        self.server.shutdown();
    }

    fn handle(&self, req: &Request<'_>) -> Response {
        use Operation as O;
        let s = &*self.server;
        if Self::user_initiated(&req.op) && s.denies(req.uid()) {
            return Response::Error(libc::EACCES);
        }
        let node = NodeId(req.nodeid());
        let who = (req.uid(), req.gid());
        // Quota limits do not hold root (the kernel exempts CAP_SYS_RESOURCE; uid 0 stands for it here).
        let _caller = crate::ext4::quota::Caller::enter(who.0 == 0);
        match req.op {
            O::Init(_) | O::Interrupt { .. } => Response::Error(libc::EIO),
            O::Destroy => Response::ok(),
            O::Lookup { name } => reply(s.lookup(node, name), |e| Response::entry(&self.entry(node, e))),
            O::Forget { nlookup } => {
                s.forget(node, nlookup);
                Response::None
            }
            O::BatchForget { ref nodes } => {
                for n in nodes {
                    s.forget(NodeId(n.nodeid), n.nlookup);
                }
                Response::None
            }
            O::Getattr(_) => reply(s.getattr(node), |a| Response::attr(&a, s.timeouts().attr)),
            O::Statx(_) => reply(s.getattr(node), |a| Response::statx(&a, s.timeouts().attr)),
            O::Setattr(a) => {
                let has = |f: u32| a.valid & f != 0;
                let set_time = |set: u32, now: u32, sec: u64, nsec: u32| {
                    if has(now) {
                        Some(SetTime::Now)
                    } else if has(set) {
                        Some(SetTime::At(time(sec, nsec)))
                    } else {
                        None
                    }
                };
                let changes = SetAttr {
                    mode: has(fattr::MODE).then_some(a.mode),
                    uid: has(fattr::UID).then_some(a.uid),
                    gid: has(fattr::GID).then_some(a.gid),
                    size: has(fattr::SIZE).then_some(a.size),
                    atime: set_time(fattr::ATIME, fattr::ATIME_NOW, a.atime, a.atimensec),
                    mtime: set_time(fattr::MTIME, fattr::MTIME_NOW, a.mtime, a.mtimensec),
                    ctime: has(fattr::CTIME).then(|| time(a.ctime, a.ctimensec)),
                    via_open_file: has(fattr::FH),
                };
                reply(s.setattr(node, changes), |a| Response::attr(&a, s.timeouts().attr))
            }
            O::Readlink => reply(s.readlink(node), Response::Data),
            O::Symlink { name, target } => {
                reply(s.symlink(node, name, target, who.0, who.1), |e| Response::entry(&self.entry(node, e)))
            }
            O::Mknod { arg, name } => reply(s.mknod(node, name, arg.mode, arg.umask, arg.rdev, who), |e| {
                Response::entry(&self.entry(node, e))
            }),
            O::Mkdir { arg, name } => {
                reply(s.mkdir(node, name, arg.mode, arg.umask, who.0, who.1), |e| Response::entry(&self.entry(node, e)))
            }
            O::Unlink { name } => empty(s.unlink(node, name)),
            O::Rmdir { name } => empty(s.rmdir(node, name)),
            O::Rename { newdir, flags, name, newname } => empty(s.rename(node, name, NodeId(newdir), newname, flags)),
            O::Link { oldnodeid, newname } => {
                reply(s.link(NodeId(oldnodeid), node, newname), |e| Response::entry(&self.entry(node, e)))
            }
            // The kernel is the only writer, so its page cache stays valid across opens.
            O::Open(a) => reply(s.open(node, a.flags as i32), |fh| {
                Response::of(&abi::OpenOut { fh, open_flags: abi::FOPEN_KEEP_CACHE, backing_id: 0 })
            }),
            // Declined like open on a read-only mount: the kernel then caches the directory's contents.
            O::Opendir(_) => reply(s.opendir(), |fh| Response::of(&abi::OpenOut { fh, ..Default::default() })),
            O::Create { arg, name } => reply(s.create(node, name, arg.mode, arg.umask, who), |(e, fh)| {
                Response::pair(&self.entry(node, e).to_abi(), &abi::OpenOut { fh, ..Default::default() })
            }),
            O::Tmpfile(arg) => reply(s.tmpfile(node, arg.mode, arg.umask, who), |(e, fh)| {
                Response::pair(&self.entry(node, e).to_abi(), &abi::OpenOut { fh, ..Default::default() })
            }),
            O::Read(a) => reply(s.read(node, a.offset, a.size), Response::Data),
            O::Write { arg, data } => {
                reply(s.write(node, arg.offset, data), |n| Response::of(&abi::WriteOut { size: n, padding: 0 }))
            }
            O::Release(_) | O::Releasedir(_) => Response::ok(),
            // Nothing is buffered here (writes are written through; the kernel writes its dirty pages back
            // before it flushes); ENOSYS makes the kernel stop sending flush on close.
            O::Flush(_) => Response::Error(libc::ENOSYS),
            O::Fsync(_) | O::Fsyncdir(_) | O::Syncfs => empty(s.fsync()),
            O::Statfs => {
                let st = s.statfs();
                Response::of(&abi::StatfsOut {
                    st: abi::Kstatfs {
                        blocks: st.blocks,
                        bfree: st.free_blocks,
                        bavail: st.available_blocks,
                        files: st.inodes,
                        ffree: st.free_inodes,
                        bsize: st.block_size,
                        namelen: st.name_max,
                        frsize: st.block_size,
                        ..Default::default()
                    },
                })
            }
            O::Setxattr { arg, name, value } => empty(s.setxattr(node, name, value, arg.flags as i32)),
            O::Getxattr { size, name } => reply(s.getxattr(node, name, size), xattr),
            O::Listxattr { size } => reply(s.listxattr(node, size), xattr),
            O::Removexattr { name } => empty(s.removexattr(node, name)),
            O::Access { mask } => empty(s.access(node, mask as i32, who.0, who.1)),
            O::Readdir(a) => {
                let mut buf = DirBuffer::new(a.size);
                let r = s.readdir(node, a.offset, &mut |ino, next, kind, name| buf.push(ino, next, kind, name));
                reply(r, |()| buf.into_response())
            }
            O::Readdirplus(a) => {
                let mut buf = DirBuffer::new(a.size);
                let ttl = self.ttl_in(node);
                let r = s.readdirplus(node, a.offset, &mut |_, next, name, attr, generation, cacheable| {
                    let ttl = if cacheable { ttl } else { Ttl { entry: Default::default(), attr: Default::default() } };
                    buf.push_plus(&Entry { nodeid: attr.ino, generation, attr: *attr, ttl }, next, name)
                });
                reply(r, |()| buf.into_response())
            }
            O::Ioctl { arg, data } => reply(s.ioctl(node, arg.cmd, data, req.uid()), |out| {
                let mut v = zerocopy::IntoBytes::as_bytes(&abi::IoctlOut::default()).to_vec();
                v.extend_from_slice(&out);
                Response::Data(v)
            }),
            O::Fallocate(a) => empty(s.fallocate(node, a.offset, a.length, a.mode as i32)),
            O::Lseek(a) => reply(s.lseek(node, a.offset as i64, a.whence as i32), |offset| {
                Response::of(&abi::LseekOut { offset: offset as u64 })
            }),
            O::CopyFileRange(a) => {
                reply(s.copy_file_range(node, a.off_in, NodeId(a.nodeid_out), a.off_out, a.len), |n| {
                    Response::of(&abi::WriteOut { size: n, padding: 0 })
                })
            }
            O::Unsupported(_) => Response::Error(libc::ENOSYS),
        }
    }
}

fn xattr(r: XattrReply) -> Response {
    match r {
        XattrReply::Size(size) => Response::of(&abi::GetxattrOut { size, padding: 0 }),
        XattrReply::Data(d) => Response::Data(d),
    }
}
