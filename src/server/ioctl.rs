//! The ioctls a FUSE server answers: FS_IOC_GETFLAGS/SETFLAGS and FS_IOC_FSGETXATTR/FSSETXATTR
//! (chattr, lsattr: flags and project ids) and FITRIM (fstrim). Others are ENOTTY.

use super::{Errno, Reply, Server, attr};
use crate::fuse::NodeId as INodeNo;
use libc::EINVAL;

impl Server {
    /// FS_IOC_GETFLAGS / FS_IOC_SETFLAGS (chattr, lsattr); other ioctls are ENOTTY.
    pub fn ioctl(&self, nodeid: INodeNo, cmd: u32, input: &[u8], uid: u32) -> Reply<Vec<u8>> {
        use libc::ENOTTY;
        let ino = attr::inode_of(nodeid);
        // _IOC type 'f', number 1 (get) or 2 (set), whatever the size field says (int or long).
        match ((cmd >> 8) & 0xFF, cmd & 0xFF) {
            (0x66, 1) => {
                let r = self.fs.reader();
                Ok(self.checked(r.get_flags(ino))?.to_le_bytes().to_vec())
            }
            (0x66, 2) => {
                let new = input.get(..4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).ok_or(Errno(EINVAL))?;
                self.checked(self.fs.set_flags(ino, new, uid == 0))?;
                Ok(Vec::new())
            }
            // FS_IOC_FSGETXATTR / FS_IOC_FSSETXATTR: the kernel reads these around every SETFLAGS.
            // `struct fsxattr`: fsx_xflags at 0, fsx_projid at 12 (`chattr -p`, `lsattr -p`).
            (0x58, 31) => {
                let (flags, projid) = {
                    let r = self.fs.reader();
                    (self.checked(r.get_flags(ino))?, self.checked(r.project(ino))?)
                };
                let mut out = vec![0u8; FSXATTR_SIZE];
                out[..4].copy_from_slice(&xflags_of(flags).to_le_bytes());
                out[12..16].copy_from_slice(&projid.to_le_bytes());
                Ok(out)
            }
            (0x58, 32) => {
                let word = |i: usize| input.get(i..i + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                let (Some(x), Some(projid)) = (word(0), word(12)) else { return Err(Errno(EINVAL)) };
                let current = {
                    let r = self.fs.reader();
                    self.checked(r.get_flags(ino))?
                };
                let mapped: u32 = XFLAG_MAP.iter().map(|&(_, f)| f).fold(0, |a, f| a | f);
                let new =
                    (current & !mapped) | XFLAG_MAP.iter().filter(|&&(xf, _)| x & xf != 0).fold(0, |a, &(_, f)| a | f);
                // The kernel's order (ext4_fileattr_set): the flags, then the project.
                self.checked(self.fs.set_flags(ino, new, uid == 0))?;
                self.checked(self.fs.set_project(ino, projid))?;
                Ok(Vec::new())
            }
            // FITRIM (`fstrim`): discard the free blocks in the range, for root only, as in ext4. The
            // range's length comes back as the bytes discarded.
            (0x58, 121) => {
                if uid != 0 {
                    return Err(Errno(libc::EPERM));
                }
                let word = |i: usize| {
                    input.get(i * 8..i * 8 + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
                };
                let (Some(start), Some(len), Some(min_len)) = (word(0), word(1), word(2)) else {
                    return Err(Errno(EINVAL));
                };
                let trimmed = self.checked(self.fs.trim(start, len, min_len))?;
                let mut out = Vec::with_capacity(24);
                for w in [start, trimmed, min_len] {
                    out.extend_from_slice(&w.to_le_bytes());
                }
                Ok(out)
            }
            _ => Err(Errno(ENOTTY)),
        }
    }
}

/// `struct fsxattr` is 28 bytes; `fsx_xflags` (the first word) and `fsx_projid` (the fourth) carry
/// anything here.
const FSXATTR_SIZE: usize = 28;
/// FS_XFLAG_* bits and the inode flags they stand for (the kernel's `ext4_xflags_to_iflags`):
/// immutable, append, sync, noatime, nodump, projinherit.
const XFLAG_MAP: &[(u32, u32)] =
    &[(0x8, 0x10), (0x10, 0x20), (0x20, 0x8), (0x40, 0x80), (0x80, 0x40), (0x200, 0x2000_0000)];

fn xflags_of(flags: u32) -> u32 {
    XFLAG_MAP.iter().filter(|&&(_, f)| flags & f != 0).fold(0, |a, &(x, _)| a | x)
}
