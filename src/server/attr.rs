//! Inode attributes as FUSE reports them, and the mapping between FUSE node ids and inode numbers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};

use crate::ext4::{FileKind, Inode, InodeNo, ROOT_INO, Timestamp};

/// FUSE's fixed node id of the mount's root directory.
const FUSE_ROOT_ID: u64 = 1;

/// The inode a FUSE node id stands for: the node id *is* the inode number, except that FUSE's root (1)
/// is ext4's root (2). Inode 1 (bad blocks) is reserved and never handed out, so the mapping is one to one.
pub fn inode_of(nodeid: INodeNo) -> InodeNo {
    if nodeid.0 == FUSE_ROOT_ID { ROOT_INO } else { InodeNo(u32::try_from(nodeid.0).unwrap_or(0)) }
}

/// The node id for an inode number (the inverse of [`inode_of`]).
pub fn nodeid_of(ino: InodeNo) -> INodeNo {
    if ino == ROOT_INO { INodeNo(FUSE_ROOT_ID) } else { INodeNo(u64::from(ino.0)) }
}

pub fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::Directory => FileType::Directory,
        FileKind::BlockDevice => FileType::BlockDevice,
        FileKind::Regular => FileType::RegularFile,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Socket => FileType::Socket,
    }
}

fn system_time(t: Timestamp) -> SystemTime {
    let whole = Duration::from_secs(t.sec.unsigned_abs());
    let base = if t.sec >= 0 { UNIX_EPOCH.checked_add(whole) } else { UNIX_EPOCH.checked_sub(whole) };
    base.and_then(|b| b.checked_add(Duration::from_nanos(u64::from(t.nsec)))).unwrap_or(UNIX_EPOCH)
}

/// The attributes of `inode`. `ino` in the result is the inode's own number (2 for the root, as the
/// kernel's ext4 reports it); callers that answer with an entry use [`nodeid_of`] for the node id.
pub fn attr(inode: &Inode, block_size: u32) -> FileAttr {
    FileAttr {
        ino: INodeNo(u64::from(inode.ino.0)),
        size: inode.size,
        blocks: inode.blocks_512,
        atime: system_time(inode.atime),
        mtime: system_time(inode.mtime),
        ctime: system_time(inode.ctime),
        crtime: inode.crtime.map_or(UNIX_EPOCH, system_time),
        kind: file_type(inode.kind),
        perm: inode.perm(),
        nlink: u32::from(inode.links_count),
        uid: inode.uid,
        gid: inode.gid,
        rdev: match inode.kind {
            FileKind::CharDevice | FileKind::BlockDevice => inode.rdev(),
            _ => 0,
        },
        blksize: block_size,
        flags: 0,
    }
}

/// The attributes for an entry reply: as [`attr`], with the root's node id in place of its inode number.
pub fn entry_attr(inode: &Inode, block_size: u32) -> FileAttr {
    let mut a = attr(inode, block_size);
    a.ino = nodeid_of(inode.ino);
    a
}

/// Attributes standing in for an inode that cannot be read: its number and type, nothing else.
pub fn placeholder(ino: InodeNo, kind: FileKind, block_size: u32) -> FileAttr {
    FileAttr {
        ino: nodeid_of(ino),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: file_type(kind),
        perm: 0,
        nlink: 1,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: block_size,
        flags: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_maps_both_ways() {
        assert_eq!(inode_of(INodeNo(1)), ROOT_INO);
        assert_eq!(nodeid_of(ROOT_INO), INodeNo(1));
        assert_eq!(inode_of(INodeNo(12)), InodeNo(12));
        assert_eq!(nodeid_of(InodeNo(12)), INodeNo(12));
    }

    #[test]
    fn times_before_1970_keep_their_nanoseconds() {
        let t = system_time(Timestamp { sec: -2, nsec: 500_000_000 });
        assert_eq!(UNIX_EPOCH.duration_since(t).unwrap(), Duration::from_millis(1500));
    }
}
