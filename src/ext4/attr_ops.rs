//! Changes to one inode's attributes, each one transaction: setattr (mode, owner, size, times), xattrs,
//! the access time, inode flags (FS_IOC_SETFLAGS), the project id (FS_IOC_FSSETXATTR).

use std::sync::Arc;

use super::error::{Error, Result};
use super::features::RO_COMPAT_PROJECT;
use super::fs::Filesystem;
use super::inode::{FileKind, Inode, InodeNo, Timestamp, flags};
use super::txn::inode_mut;
use super::{acl, xattr, xattr_write};

/// `EXT4_NOATIME_FL`: chattr +A.
const NOATIME_FL: u32 = 0x80;
/// Inode flags programs may change with FS_IOC_SETFLAGS (the kernel's `EXT4_FL_USER_MODIFIABLE`).
const USER_MODIFIABLE: u32 = 0x604B_C0FF;
/// Inode flags FS_IOC_GETFLAGS shows (`EXT4_FL_USER_VISIBLE`).
const USER_VISIBLE: u32 = 0x705B_DFFF;

/// A time to set: a given one, or now.
#[derive(Debug, Clone, Copy)]
pub enum SetTime {
    Now,
    At(Timestamp),
}

/// The changes of a setattr request.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
    pub ctime: Option<Timestamp>,
    /// The change came through an open file (FUSE passes the handle when the kernel writes back the
    /// times it keeps for a file it wrote): times alone are then accepted on append-only and immutable
    /// files, since the kernel applied them to writes it already allowed.
    pub via_open_file: bool,
}

fn resolve(t: SetTime) -> Timestamp {
    match t {
        SetTime::Now => Timestamp::now(),
        SetTime::At(t) => t,
    }
}

impl Filesystem {
    /// setattr: mode, owner, size, times. The ctime moves with every change, as in the kernel.
    pub fn setattr(&self, ino: InodeNo, a: SetAttr) -> Result<Arc<Inode>> {
        let mut tx = self.begin()?;
        let mut inode = inode_mut(&tx, ino)?;
        let times_set = matches!(a.atime, Some(SetTime::At(_))) || matches!(a.mtime, Some(SetTime::At(_)));
        let other = a.mode.is_some() || a.uid.is_some() || a.gid.is_some() || a.size.is_some();
        let kernel_time_flush = a.via_open_file && !other;
        if inode.links_count == 0 && !other {
            // The kernel writes back the times of a file it just unlinked: nothing left to keep them for.
            return self.inode(ino);
        }
        if inode.has_flag(flags::IMMUTABLE) && !kernel_time_flush {
            return Err(Error::NotPermitted);
        }
        if inode.has_flag(flags::APPEND) && (other || (times_set && !kernel_time_flush)) {
            return Err(Error::NotPermitted);
        }
        if let Some(m) = a.mode {
            // The permission bits only: the mask keeps them in 16 bits.
            inode.mode = (inode.mode & 0o170000) | u16::try_from(m & 0o7777).unwrap_or(0);
        }
        if let Some(u) = a.uid {
            inode.uid = u;
        }
        if let Some(g) = a.gid {
            inode.gid = g;
        }
        if let Some(size) = a.size {
            if inode.kind == FileKind::Directory {
                return Err(Error::IsDir);
            }
            if size != inode.size {
                self.set_size(&mut tx, &mut inode, size)?;
                self.touch(&mut inode, true);
            }
        }
        if let Some(t) = a.atime {
            inode.atime = resolve(t);
        }
        if let Some(t) = a.mtime {
            inode.mtime = resolve(t);
        }
        match a.ctime {
            Some(t) => inode.ctime = t,
            None => self.touch(&mut inode, false),
        }
        let written = tx.write_inode(&inode)?;
        tx.commit()?;
        Ok(written)
    }

    /// setxattr(2) (`value` Some) and removexattr(2) (`None`); ACLs are stored in ext4's compact format.
    pub fn set_xattr(&self, ino: InodeNo, name: &[u8], value: Option<&[u8]>, xflags: i32) -> Result<()> {
        let (index, suffix) = xattr::split_name(name).ok_or(Error::NotSupported)?;
        let converted;
        let value = match value {
            Some(v) if matches!(index, xattr::INDEX_POSIX_ACL_ACCESS | xattr::INDEX_POSIX_ACL_DEFAULT) => {
                converted = acl::xattr_to_disk(v)?;
                Some(converted.as_slice())
            }
            v => v,
        };
        let mut tx = self.begin()?;
        let mut inode = inode_mut(&tx, ino)?;
        if inode.has_flag(flags::IMMUTABLE) || inode.has_flag(flags::APPEND) {
            return Err(Error::NotPermitted);
        }
        if index == xattr::INDEX_POSIX_ACL_DEFAULT && inode.kind != FileKind::Directory {
            return Err(if value.is_some() { Error::Invalid } else { Error::NoAttr });
        }
        let mut value = value;
        if let (xattr::INDEX_POSIX_ACL_ACCESS, Some(v)) = (index, value) {
            // The filesystem keeps the mode in step with an access ACL (FUSE leaves it to us): the ACL's
            // owner, mask (or group) and other bits become the mode's, and an ACL that says no more than
            // the mode is not stored.
            let (perm, equiv) = acl::mode_of(&acl::parse_disk(v, super::error::Object::Xattr(ino.0))?);
            inode.mode = (inode.mode & !0o777) | perm;
            if equiv {
                value = None;
            }
        }
        match xattr_write::set(&mut tx, &mut inode, index, suffix, value, xflags) {
            // Storing an ACL equivalent to the mode removes any earlier one; there may be none.
            Err(Error::NoAttr) if index == xattr::INDEX_POSIX_ACL_ACCESS => {}
            r => r?,
        }
        self.touch(&mut inode, false);
        tx.write_inode(&inode)?;
        tx.commit()
    }

    /// Sets the access time of `ino` to now (a read under relatime or strictatime).
    pub fn touch_atime(&self, ino: InodeNo) -> Result<()> {
        let mut tx = self.begin()?;
        let mut inode = inode_mut(&tx, ino)?;
        if inode.has_flag(flags::IMMUTABLE) || inode.has_flag(NOATIME_FL) {
            return Ok(());
        }
        inode.atime = Timestamp::now();
        tx.write_inode(&inode)?;
        tx.commit()
    }

    /// FS_IOC_GETFLAGS.
    pub(in crate::ext4) fn get_flags(&self, ino: InodeNo) -> Result<u32> {
        Ok(self.inode(ino)?.flags & USER_VISIBLE)
    }

    /// FS_IOC_SETFLAGS: only the flags programs may change; immutable and append-only need root.
    pub fn set_flags(&self, ino: InodeNo, new: u32, caller_is_root: bool) -> Result<()> {
        let mut tx = self.begin()?;
        let mut inode = inode_mut(&tx, ino)?;
        let protected = flags::IMMUTABLE | flags::APPEND;
        if (inode.flags ^ new) & protected != 0 && !caller_is_root {
            return Err(Error::NotPermitted);
        }
        if inode.has_flag(flags::IMMUTABLE)
            && new & flags::IMMUTABLE != 0
            && (inode.flags ^ new) & USER_MODIFIABLE & !protected != 0
        {
            return Err(Error::NotPermitted);
        }
        // As the kernel: case-insensitivity is set and cleared only on empty directories.
        if (inode.flags ^ new) & flags::CASEFOLD != 0 {
            if self.casefold.is_none() {
                return Err(Error::NotSupported);
            }
            if inode.kind != FileKind::Directory {
                return Err(Error::NotDir);
            }
            if !self.dir_is_empty(&inode)? {
                return Err(Error::NotEmpty);
            }
        }
        inode.flags = (inode.flags & !USER_MODIFIABLE) | (new & USER_MODIFIABLE);
        self.touch(&mut inode, false);
        tx.write_inode(&inode)?;
        tx.commit()
    }

    /// FS_IOC_FSGETXATTR's project id (`lsattr -p`).
    pub(in crate::ext4) fn project(&self, ino: InodeNo) -> Result<u32> {
        Ok(self.inode(ino)?.projid())
    }

    /// FS_IOC_FSSETXATTR's project id (`chattr -p`), as the kernel's `ext4_ioctl_setproject`: without the
    /// project feature only 0 is accepted, records too small for `i_projid` refuse (EOVERFLOW), and the
    /// quota charge moves to the new project as the inode is written (EDQUOT where its limits say so).
    /// Who may ask is the kernel's check (the owner, or CAP_FOWNER, in the initial user namespace).
    pub fn set_project(&self, ino: InodeNo, projid: u32) -> Result<()> {
        if !self.sb.has_ro_compat(RO_COMPAT_PROJECT) {
            return if projid == 0 { Ok(()) } else { Err(Error::NotSupported) };
        }
        if usize::from(self.sb.inode_size) <= super::inode::GOOD_OLD_INODE_SIZE {
            return Err(Error::NotSupported);
        }
        let mut tx = self.begin()?;
        let mut inode = inode_mut(&tx, ino)?;
        if inode.projid() == projid {
            return Ok(());
        }
        if !inode.set_projid(projid) {
            return Err(Error::Overflow);
        }
        self.touch(&mut inode, false);
        tx.write_inode(&inode)?;
        tx.commit()
    }
}
