//! POSIX ACLs: ext4 stores them compactly (`ext4_acl_header` version 1, with 4-byte entries for the owner,
//! group, mask and other, and 8-byte entries for named users and groups); programs read them in the Linux
//! xattr format (`posix_acl_xattr_header` version 2, every entry 8 bytes).

use super::bytes::{le16, le32};
use super::error::{Error, Object, Result};

const EXT4_ACL_VERSION: u32 = 1;
const POSIX_ACL_XATTR_VERSION: u32 = 2;
const ACL_USER: u16 = 0x02;
const ACL_GROUP: u16 = 0x08;
const ACL_USER_OBJ: u16 = 0x01;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;
const ACL_UNDEFINED_ID: u32 = u32::MAX;

/// Converts an on-disk ACL into the xattr format programs expect.
pub fn disk_to_xattr(disk: &[u8], obj: Object) -> Result<Vec<u8>> {
    let bad = || Error::corrupt(obj, "malformed ACL");
    if disk.len() < 4 || le32(disk, 0) != EXT4_ACL_VERSION {
        return Err(bad());
    }
    let mut out = POSIX_ACL_XATTR_VERSION.to_le_bytes().to_vec();
    let mut pos = 4;
    while pos < disk.len() {
        let tag = le16(disk, pos);
        let perm = le16(disk, pos + 2);
        let (id, size) = match tag {
            ACL_USER | ACL_GROUP => (le32(disk, pos + 4), 8),
            ACL_USER_OBJ | ACL_GROUP_OBJ | ACL_MASK | ACL_OTHER => (ACL_UNDEFINED_ID, 4),
            _ => return Err(bad()),
        };
        if pos + size > disk.len() {
            return Err(bad());
        }
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
        pos += size;
    }
    Ok(out)
}

/// Converts an ACL from the xattr format programs write into the on-disk format.
pub fn xattr_to_disk(x: &[u8]) -> Result<Vec<u8>> {
    if x.len() < 4 || le32(x, 0) != POSIX_ACL_XATTR_VERSION || (x.len() - 4) % 8 != 0 {
        return Err(Error::Invalid);
    }
    let mut out = EXT4_ACL_VERSION.to_le_bytes().to_vec();
    for e in x[4..].chunks_exact(8) {
        let (tag, perm, id) = (le16(e, 0), le16(e, 2), le32(e, 4));
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        match tag {
            ACL_USER | ACL_GROUP => out.extend_from_slice(&id.to_le_bytes()),
            ACL_USER_OBJ | ACL_GROUP_OBJ | ACL_MASK | ACL_OTHER => {}
            _ => return Err(Error::Invalid),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_entries() {
        let mut disk = 1u32.to_le_bytes().to_vec();
        disk.extend_from_slice(&[1, 0, 6, 0]); // USER_OBJ rw-
        disk.extend_from_slice(&[2, 0, 7, 0, 0xD2, 0x04, 0, 0]); // USER 1234 rwx
        disk.extend_from_slice(&[0x20, 0, 4, 0]); // OTHER r--
        let x = disk_to_xattr(&disk, Object::Inode(12)).unwrap();
        assert_eq!(x.len(), 4 + 3 * 8);
        assert_eq!(le32(&x, 0), 2);
        assert_eq!(le32(&x, 8), u32::MAX);
        assert_eq!(le32(&x, 16), 1234);
        assert!(disk_to_xattr(&disk[..disk.len() - 2], Object::Inode(12)).is_err());
        assert_eq!(xattr_to_disk(&x).unwrap(), disk);
    }
}
