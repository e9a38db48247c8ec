//! Inode attributes as FUSE reports them, and the mapping between FUSE node ids and inode numbers.

use crate::ext4::inode::flags;
use crate::ext4::{FileKind, Inode, InodeNo, ROOT_INO, Timestamp};
use crate::fuse::reply::statx_attr;
use crate::fuse::{FileAttr, FileType, NodeId as INodeNo, Time, abi::ROOT_ID as FUSE_ROOT_ID};

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

fn time(t: Timestamp) -> Time {
    Time { sec: t.sec, nsec: t.nsec }
}

/// The inode flags statx reports, as `STATX_ATTR_*` bits (as the kernel's ext4 maps them).
const STATX_FLAGS: &[(u32, u64)] = &[
    (flags::COMPR, statx_attr::COMPRESSED),
    (flags::IMMUTABLE, statx_attr::IMMUTABLE),
    (flags::APPEND, statx_attr::APPEND),
    (flags::NODUMP, statx_attr::NODUMP),
    (flags::ENCRYPT, statx_attr::ENCRYPTED),
    (flags::VERITY, statx_attr::VERITY),
];

/// The attributes of `inode`. `ino` in the result is the inode's own number (2 for the root, as the
/// kernel's ext4 reports it); callers that answer with an entry use [`nodeid_of`] for the node id.
pub fn attr(inode: &Inode, block_size: u32) -> FileAttr {
    FileAttr {
        ino: u64::from(inode.ino.0),
        size: inode.stat_size(),
        blocks: inode.blocks_512,
        atime: time(inode.atime),
        mtime: time(inode.mtime),
        ctime: time(inode.ctime),
        crtime: inode.crtime.map(time),
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
        attributes: statx_attributes(inode.flags),
    }
}

/// The `STATX_ATTR_*` bits of an inode with flags `i_flags`.
fn statx_attributes(i_flags: u32) -> u64 {
    STATX_FLAGS.iter().filter(|&&(f, _)| i_flags & f != 0).fold(0, |a, &(_, x)| a | x)
}

/// The attributes for an entry reply: as [`attr`], with the root's node id in place of its inode number.
pub fn entry_attr(inode: &Inode, block_size: u32) -> FileAttr {
    let mut a = attr(inode, block_size);
    a.ino = nodeid_of(inode.ino).0;
    a
}

/// Attributes standing in for an inode that cannot be read: its number and type, nothing else.
pub fn placeholder(ino: InodeNo, kind: FileKind, block_size: u32) -> FileAttr {
    FileAttr {
        ino: nodeid_of(ino).0,
        size: 0,
        blocks: 0,
        atime: Time::default(),
        mtime: Time::default(),
        ctime: Time::default(),
        crtime: None,
        kind: file_type(kind),
        perm: 0,
        nlink: 1,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: block_size,
        attributes: 0,
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
    fn immutable_and_append_only_inodes_say_so_in_statx() {
        assert_eq!(statx_attributes(0), 0);
        assert_eq!(statx_attributes(flags::IMMUTABLE), statx_attr::IMMUTABLE);
        assert_eq!(statx_attributes(flags::APPEND | flags::EXTENTS), statx_attr::APPEND);
        assert_eq!(statx_attributes(flags::IMMUTABLE | flags::APPEND), statx_attr::IMMUTABLE | statx_attr::APPEND);
        // The kernel's ext4 uses the same bit values for these two (STATX_ATTR_IMMUTABLE = 0x10 = EXT4_IMMUTABLE_FL).
        assert_eq!(statx_attr::IMMUTABLE, 0x10);
        assert_eq!(statx_attr::APPEND, 0x20);
    }
}
