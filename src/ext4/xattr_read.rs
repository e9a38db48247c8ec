//! Reading extended attributes: the in-inode area, the xattr block, values in EA inodes, and the ACLs
//! turned into the kernel's xattr form.

use super::error::{CorruptKind, Error, Object, Result};
use super::features::INCOMPAT_EA_INODE;
use super::fs::Filesystem;
use super::inode::{FileKind as Kind, Inode, InodeNo, flags};
use super::{acl, xattr};

impl Filesystem {
    /// All attribute entries of `inode`: the in-inode ones, then those of its xattr block.
    pub(crate) fn xattr_entries(&self, inode: &Inode) -> Result<Vec<xattr::Entry>> {
        let obj = Object::Xattr(inode.ino.0);
        let mut entries = xattr::parse_ibody(&inode.xattr_area, obj)?;
        if inode.file_acl != 0 {
            let block_obj = Object::XattrBlock(inode.file_acl);
            let block = self.meta_block(inode.file_acl, block_obj)?;
            let seed = self.sb.has_metadata_csum().then(|| self.sb.csum_seed());
            entries.extend(xattr::parse_block(&block, inode.file_acl, seed, block_obj)?);
        }
        Ok(entries)
    }

    /// Names of the attributes programs may see, each as `prefix.name`.
    pub(in crate::ext4) fn list_xattrs(&self, inode: &Inode) -> Result<Vec<Vec<u8>>> {
        Ok(self.xattr_entries(inode)?.iter().filter_map(xattr::Entry::full_name).collect())
    }

    /// The value of attribute `name` (ACLs converted to the xattr format programs expect).
    pub(in crate::ext4) fn get_xattr(&self, inode: &Inode, name: &[u8]) -> Result<Vec<u8>> {
        let (index, suffix) = xattr::split_name(name).ok_or(Error::NotSupported)?;
        let entry = self
            .xattr_entries(inode)?
            .into_iter()
            .find(|e| e.index == index && e.name == suffix)
            .ok_or(Error::NoAttr)?;
        let value = match entry.value {
            xattr::Value::Stored(v) => v,
            xattr::Value::EaInode { ino, size } => self.ea_inode_value(inode, ino, size)?,
        };
        if matches!(index, xattr::INDEX_POSIX_ACL_ACCESS | xattr::INDEX_POSIX_ACL_DEFAULT) {
            return acl::disk_to_xattr(&value, Object::Xattr(inode.ino.0));
        }
        Ok(value)
    }

    fn ea_inode_value(&self, owner: &Inode, ino: u32, size: u32) -> Result<Vec<u8>> {
        let obj = Object::Xattr(owner.ino.0);
        if !self.sb.has_incompat(INCOMPAT_EA_INODE) {
            return Err(Error::corrupt(obj, CorruptKind::XattrValueInInodeWithoutEaInodeFeature));
        }
        let ea = self.inode(InodeNo(ino))?;
        if !ea.has_flag(flags::EA_INODE) || ea.kind != Kind::Regular || ea.size != u64::from(size) {
            return Err(Error::corrupt(obj, CorruptKind::XattrValueInodeDoesNotMatchItsEntry));
        }
        let size = super::bytes::index(size);
        let v = self.read(&ea, 0, size)?;
        if v.len() != size {
            return Err(Error::corrupt(obj, CorruptKind::XattrValueInodeIsShort));
        }
        Ok(v)
    }
}
