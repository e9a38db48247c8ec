//! EA inodes (`ea_inode`; `Documentation/filesystems/ext4/attributes.rst`, the kernel's
//! `ext4_xattr_inode_*`): an attribute value too large for the inode body and one attribute block is
//! the data of a regular inode of its own, flagged `EXT4_EA_INODE_FL`, which no directory names. The
//! entry points at it with `e_value_inum` and hashes the value's hash instead of the value.
//!
//! The EA inode keeps two numbers in fields a regular file uses for times:
//!
//! | field | holds |
//! |---|---|
//! | `i_atime` | the value's hash: crc32c(filesystem seed, value) |
//! | `i_ctime` (seconds) | the high 32 bits of its reference count |
//! | `l_i_version` (0x24) | the low 32 bits of its reference count |
//!
//! Each entry that names the inode holds one reference (an attribute block shared by several inodes
//! counts once); the inode is deleted with its last reference.

use super::bytes::le32;
use super::bytes_mut::put32;
use super::checksum::crc32c;
use super::error::{CorruptKind, Error, Object, Result};
use super::fs::Filesystem;
use super::inode::{FileKind, Inode, InodeNo, Timestamp, flags};
use super::superblock::Superblock;
use super::txn::{Txn, inode_mut};
use super::xattr::Value;

const VERSION_LO: usize = 0x24;
const CTIME: usize = 0xC;

/// The hash an EA inode keeps of its value (`ext4_xattr_inode_hash`).
pub(crate) fn value_hash(tx: &Txn<'_>, value: &[u8]) -> u32 {
    crc32c(tx.fs().sb.csum_seed(), value)
}

fn refs(ea: &Inode) -> u64 {
    u64::from(le32(&ea.raw, CTIME)) << 32 | u64::from(le32(&ea.raw, VERSION_LO))
}

fn set_refs(ea: &mut Inode, n: u64) {
    // i_ctime carries the high half; the encoder writes `ctime`, so it is set there.
    let high = super::bytes::high32(n);
    ea.ctime = Timestamp { sec: i64::from(i32::from_ne_bytes(high.to_ne_bytes())), nsec: 0 };
    put32(&mut ea.raw, CTIME, high);
    put32(&mut ea.raw, VERSION_LO, super::bytes::low32(n));
}

/// What an entry naming an EA inode value of `size` bytes adds to its owner's `i_blocks` (512-byte
/// units): the kernel charges the owner the clusters the value takes (its quota charge,
/// `round_up_cluster`), and e2fsck (`size_to_quota_blocks`) expects them there.
pub(crate) fn owner_charge(size: u32, sb: &Superblock) -> u64 {
    let cluster_bytes = u64::from(sb.block_size) << sb.cluster_bits();
    u64::from(size).div_ceil(cluster_bytes.max(1)).saturating_mul(sb.cluster_sectors())
}

/// Makes a new EA inode holding `value`, for an attribute of `owner`, with one reference. Returns its
/// number and the value's hash.
pub(crate) fn create(tx: &mut Txn<'_>, owner: &Inode, value: &[u8]) -> Result<(InodeNo, u32)> {
    let fs = tx.fs();
    let group = owner.ino.0.saturating_sub(1).checked_div(fs.sb.inodes_per_group).unwrap_or(0);
    let ino = tx.alloc_inode(group, false)?;
    let generation = tx.next_generation();
    // As the kernel's ext4_xattr_inode_create: a regular file 0600 of the owner's uid and gid.
    let mut ea = Inode::new(&fs.sb, ino, 0o100600, owner.uid, owner.gid, Timestamp::now(), generation)?;
    ea.flags |= flags::EA_INODE;
    if fs.sb.has_incompat(super::features::INCOMPAT_EXTENTS) {
        ea.flags |= flags::EXTENTS;
        ea.i_block = super::extent_write::empty_root();
    }
    fs.fill_new_file(tx, &mut ea, value)?;
    let hash = value_hash(tx, value);
    // As the kernel: the hash as an unsigned time (a hash of 2^31 or more gets epoch bits).
    ea.atime = Timestamp { sec: i64::from(hash), nsec: 0 };
    set_refs(&mut ea, 1);
    tx.write_inode(&ea)?;
    Ok((ino, hash))
}

/// The EA inode `ino`, checked to be one.
fn load(tx: &Txn<'_>, ino: u32) -> Result<Inode> {
    let ea = inode_mut(tx, InodeNo(ino))?;
    if !ea.has_flag(flags::EA_INODE) || ea.kind != FileKind::Regular {
        return Err(Error::corrupt(Object::Inode(ino), CorruptKind::XattrEntryNamesInodeThatIsNotEaInode));
    }
    Ok(ea)
}

/// One more entry names EA inode `ino` (an attribute block copied for one of the inodes sharing it).
pub(crate) fn add_ref(tx: &mut Txn<'_>, ino: u32) -> Result<()> {
    let mut ea = load(tx, ino)?;
    let n = refs(&ea).checked_add(1).ok_or(Error::corrupt(Object::Inode(ino), CorruptKind::EaInodeReferenceCount))?;
    set_refs(&mut ea, n);
    tx.write_inode(&ea)?;
    Ok(())
}

/// An entry naming EA inode `ino` is gone: the inode is deleted with its last reference.
pub(crate) fn drop_ref(tx: &mut Txn<'_>, ino: u32) -> Result<()> {
    let mut ea = load(tx, ino)?;
    let n = refs(&ea).saturating_sub(1);
    if n == 0 {
        return tx.fs().delete_inode(tx, &mut ea);
    }
    set_refs(&mut ea, n);
    tx.write_inode(&ea)?;
    Ok(())
}

impl Filesystem {
    /// How many of `inode`'s attribute entries name EA inodes: the kernel counts each as one of the
    /// owner's inodes in its quota.
    pub(crate) fn ea_inode_refs(&self, inode: &Inode) -> Result<i64> {
        if !self.sb.has_incompat(super::features::INCOMPAT_EA_INODE) {
            return Ok(0);
        }
        let entries = self.xattr_entries(inode)?;
        let n = entries.iter().filter(|e| matches!(e.value, Value::EaInode { .. })).count();
        Ok(i64::try_from(n).unwrap_or(i64::MAX))
    }
}
