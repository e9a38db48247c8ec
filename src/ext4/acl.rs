//! POSIX ACLs: ext4 stores them compactly (`ext4_acl_header` version 1, with 4-byte entries for the owner,
//! group, mask and other, and 8-byte entries for named users and groups); programs read them in the Linux
//! xattr format (`posix_acl_xattr_header` version 2, every entry 8 bytes).

use super::bytes::{le16, le32};
use super::error::{CorruptKind, Error, Object, Result};

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
    let bad = || Error::corrupt(obj, CorruptKind::MalformedAcl);
    if disk.len() < 4 || le32(disk, 0) != EXT4_ACL_VERSION {
        return Err(bad());
    }
    let mut out = POSIX_ACL_XATTR_VERSION.to_le_bytes().to_vec();
    let mut rest = disk.get(4..).unwrap_or_default();
    while !rest.is_empty() {
        let (tag, perm) = (le16(rest, 0), le16(rest, 2));
        let (id, size) = match tag {
            ACL_USER | ACL_GROUP => (le32(rest, 4), 8),
            ACL_USER_OBJ | ACL_GROUP_OBJ | ACL_MASK | ACL_OTHER => (ACL_UNDEFINED_ID, 4),
            _ => return Err(bad()),
        };
        let Some((_, next)) = rest.split_at_checked(size) else { return Err(bad()) };
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
        rest = next;
    }
    Ok(out)
}

/// Converts an ACL from the xattr format programs write into the on-disk format.
pub fn xattr_to_disk(x: &[u8]) -> Result<Vec<u8>> {
    let entries = match x.get(4..) {
        Some(e) if le32(x, 0) == POSIX_ACL_XATTR_VERSION && e.len() % 8 == 0 => e,
        _ => return Err(Error::Invalid),
    };
    let mut out = EXT4_ACL_VERSION.to_le_bytes().to_vec();
    for e in entries.chunks_exact(8) {
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

/// One ACL entry: tag, permission bits, and the uid/gid of named entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AclEntry {
    pub tag: u16,
    pub perm: u16,
    pub id: u32,
}

/// Parses an on-disk ACL.
pub fn parse_disk(disk: &[u8], obj: Object) -> Result<Vec<AclEntry>> {
    let x = disk_to_xattr(disk, obj)?;
    Ok(x.get(4..)
        .unwrap_or_default()
        .chunks_exact(8)
        .map(|e| AclEntry { tag: le16(e, 0), perm: le16(e, 2), id: le32(e, 4) })
        .collect())
}

/// Encodes entries in the on-disk format.
pub fn encode_disk(entries: &[AclEntry]) -> Vec<u8> {
    let mut x = POSIX_ACL_XATTR_VERSION.to_le_bytes().to_vec();
    for e in entries {
        x.extend_from_slice(&e.tag.to_le_bytes());
        x.extend_from_slice(&e.perm.to_le_bytes());
        x.extend_from_slice(&e.id.to_le_bytes());
    }
    // Entries built from a parsed ACL always convert.
    xattr_to_disk(&x).unwrap_or_default()
}

/// The kernel's `posix_acl_create_masq`: masks the inherited ACL `acl` with the requested `mode` and
/// the mode with the ACL. Returns the new mode, and whether the ACL says more than the mode can (then it
/// is stored as the new file's access ACL).
pub fn create_masq(acl: &mut [AclEntry], mode: u16) -> Option<(u16, bool)> {
    let mut m = mode & 0o777;
    let mut not_equiv = false;
    let (mut group_obj, mut mask_obj) = (None, None);
    for (i, e) in acl.iter_mut().enumerate() {
        match e.tag {
            ACL_USER_OBJ => {
                e.perm &= (m >> 6) & 7;
                m &= (e.perm << 6) | !0o700;
            }
            ACL_USER | ACL_GROUP => not_equiv = true,
            ACL_GROUP_OBJ => group_obj = Some(i),
            ACL_OTHER => {
                e.perm &= m & 7;
                m &= e.perm | !0o007;
            }
            ACL_MASK => {
                mask_obj = Some(i);
                not_equiv = true;
            }
            _ => return None,
        }
    }
    let g = mask_obj.or(group_obj)?;
    acl[g].perm &= (m >> 3) & 7;
    m &= (acl[g].perm << 3) | !0o070;
    Some(((mode & !0o777) | m, not_equiv))
}

/// The kernel's `posix_acl_equiv_mode` and `posix_acl_update_mode`: the permission bits an access ACL
/// implies (owner, mask or group, other), and whether the ACL says nothing more than those bits (then it
/// is not stored at all).
pub fn mode_of(acl: &[AclEntry]) -> (u16, bool) {
    let perm = |tag| acl.iter().find(|e| e.tag == tag).map_or(0, |e| e.perm & 7);
    let group = if acl.iter().any(|e| e.tag == ACL_MASK) { perm(ACL_MASK) } else { perm(ACL_GROUP_OBJ) };
    let equiv = acl.iter().all(|e| matches!(e.tag, ACL_USER_OBJ | ACL_GROUP_OBJ | ACL_OTHER));
    ((perm(ACL_USER_OBJ) << 6) | (group << 3) | perm(ACL_OTHER), equiv)
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

    #[test]
    fn inherited_acl_masks_the_mode() {
        // default: user::rwx, user:1234:rwx, group::r-x, mask::rwx, other::---; create with 0644.
        let mut acl = vec![
            AclEntry { tag: ACL_USER_OBJ, perm: 7, id: u32::MAX },
            AclEntry { tag: ACL_USER, perm: 7, id: 1234 },
            AclEntry { tag: ACL_GROUP_OBJ, perm: 5, id: u32::MAX },
            AclEntry { tag: ACL_MASK, perm: 7, id: u32::MAX },
            AclEntry { tag: ACL_OTHER, perm: 0, id: u32::MAX },
        ];
        let (mode, extended) = create_masq(&mut acl, 0o100644).unwrap();
        assert_eq!(mode, 0o100640);
        assert!(extended);
        assert_eq!(acl[0].perm, 6);
        assert_eq!(acl[3].perm, 4, "the mask takes the group bits of the mode");
        let round = parse_disk(&encode_disk(&acl), Object::Inode(1)).unwrap();
        assert_eq!(round, acl);
    }
}
