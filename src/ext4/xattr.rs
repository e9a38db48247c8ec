//! Extended attributes: `ext4_xattr_entry` records, either in the inode body after `i_extra_isize` (behind a
//! 4-byte magic) or in one external block (`ext4_xattr_header`, 32 bytes). Values live in the same area,
//! or, with ea_inode, in an inode of their own.

use super::bytes::{le16, le32, slice, u8_at};
use super::checksum::crc32c;
use super::error::{CorruptKind, Error, Object, Result};

pub(crate) const XATTR_MAGIC: u32 = 0xEA02_0000;
pub(crate) const ENTRY_HEADER: usize = 16;
pub(crate) const BLOCK_HEADER: usize = 32;
/// Offset of `h_checksum` in the block header.
pub(crate) const BLOCK_CHECKSUM: usize = 0x10;
/// The largest value Linux lets a program set (`XATTR_SIZE_MAX`).
pub const VALUE_MAX: u32 = 65536;

/// Name indexes (`e_name_index`) and the prefixes they stand for.
pub const INDEX_USER: u8 = 1;
pub const INDEX_POSIX_ACL_ACCESS: u8 = 2;
pub const INDEX_POSIX_ACL_DEFAULT: u8 = 3;
pub const INDEX_TRUSTED: u8 = 4;
pub const INDEX_SECURITY: u8 = 6;
/// `system.data`: inline data beyond `i_block`. The kernel does not show it to programs.
pub const INDEX_SYSTEM: u8 = 7;

const PREFIXES: &[(u8, &[u8])] = &[
    (INDEX_USER, b"user."),
    (INDEX_POSIX_ACL_ACCESS, b"system.posix_acl_access"),
    (INDEX_POSIX_ACL_DEFAULT, b"system.posix_acl_default"),
    (INDEX_TRUSTED, b"trusted."),
    (INDEX_SECURITY, b"security."),
];

/// Where an attribute's value is.
#[derive(Debug, Clone)]
pub enum Value {
    /// In the same inode body or block.
    Stored(Vec<u8>),
    /// In the data of an EA inode (ea_inode feature).
    EaInode { ino: u32, size: u32 },
}

/// One attribute record.
#[derive(Debug, Clone)]
pub struct Entry {
    pub index: u8,
    pub name: Vec<u8>,
    pub value: Value,
    /// `e_hash` as stored (kept for EA-inode values, whose hash the engine does not recompute).
    pub hash: u32,
}

impl Entry {
    /// The name programs see (`user.foo`), or `None` for attributes the kernel hides.
    pub fn full_name(&self) -> Option<Vec<u8>> {
        let (_, prefix) = PREFIXES.iter().find(|(i, _)| *i == self.index)?;
        let mut n = prefix.to_vec();
        n.extend_from_slice(&self.name);
        Some(n)
    }
}

/// Splits a program's attribute name into its index and on-disk suffix, or `None` for an unknown prefix.
pub fn split_name(full: &[u8]) -> Option<(u8, &[u8])> {
    PREFIXES.iter().find_map(|&(index, prefix)| {
        let rest = full.strip_prefix(prefix)?;
        // ACL names are complete; the others need a suffix.
        let acl = matches!(index, INDEX_POSIX_ACL_ACCESS | INDEX_POSIX_ACL_DEFAULT);
        if acl == rest.is_empty() { Some((index, rest)) } else { None }
    })
}

/// Parses the in-inode attribute area (everything after `i_extra_isize`); no magic means no attributes.
pub fn parse_ibody(area: &[u8], obj: Object) -> Result<Vec<Entry>> {
    if area.len() < 4 || le32(area, 0) != XATTR_MAGIC {
        return Ok(Vec::new());
    }
    let body = &area[4..];
    parse_entries(body, 0, obj)
}

/// Parses and verifies an external attribute block (block number `nr`).
pub fn parse_block(block: &[u8], nr: u64, csum_seed: Option<u32>, obj: Object) -> Result<Vec<Entry>> {
    if le32(block, 0) != XATTR_MAGIC {
        return Err(Error::corrupt(obj, CorruptKind::BadXattrBlockMagic));
    }
    if le32(block, 8) != 1 {
        return Err(Error::corrupt(obj, CorruptKind::XattrBlockSpansMoreThanOneBlock));
    }
    if let Some(seed) = csum_seed {
        let mut c = crc32c(seed, &nr.to_le_bytes());
        c = crc32c(c, slice(block, 0, BLOCK_CHECKSUM).unwrap_or_default());
        c = crc32c(c, &[0; 4]);
        c = crc32c(c, block.get(BLOCK_CHECKSUM + 4..).unwrap_or_default());
        if c != le32(block, BLOCK_CHECKSUM) {
            return Err(Error::Checksum(obj));
        }
    }
    parse_entries(block, BLOCK_HEADER, obj)
}

/// Parses records from `start` until the 4-byte zero terminator; value offsets are relative to `buf`.
fn parse_entries(buf: &[u8], start: usize, obj: Object) -> Result<Vec<Entry>> {
    let bad = |what| Error::corrupt(obj, what);
    let mut entries = Vec::new();
    let mut pos = start;
    // Stored values are copied: their total may not exceed the area (values overlapping one another
    // would otherwise copy the same bytes thousands of times).
    let mut stored = 0usize;
    // Each record is at least 16 bytes, so the loop ends within buf.len() / 16 steps.
    loop {
        let rest = buf.get(pos..).unwrap_or_default();
        if rest.len() < 4 {
            return Err(bad(CorruptKind::XattrEntriesRunPastTheirArea));
        }
        if le32(rest, 0) == 0 {
            return Ok(entries);
        }
        let name_len = usize::from(u8_at(rest, 0));
        let index = u8_at(rest, 1);
        let value_offs = usize::from(le16(rest, 2));
        let value_inum = le32(rest, 4);
        let value_size = le32(rest, 8);
        let name = slice(rest, ENTRY_HEADER, name_len).ok_or_else(|| bad(CorruptKind::XattrNameRunsPastItsArea))?;
        if value_size > VALUE_MAX {
            return Err(bad(CorruptKind::XattrValueLargerThan64Kib));
        }
        let value = if value_inum != 0 {
            Value::EaInode { ino: value_inum, size: value_size }
        } else {
            let v = slice(buf, value_offs, super::bytes::index(value_size))
                .ok_or_else(|| bad(CorruptKind::XattrValueRunsPastItsArea))?;
            stored = stored.saturating_add(v.len());
            if stored > buf.len() {
                return Err(bad(CorruptKind::XattrValuesOverlap));
            }
            Value::Stored(v.to_vec())
        };
        entries.push(Entry { index, name: name.to_vec(), value, hash: le32(rest, 12) });
        // The record (header and name, padded to 4) lies inside `rest`: the name was found there.
        pos = pos.saturating_add(ENTRY_HEADER.saturating_add(name_len).saturating_add(3) & !3);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-inode xattr area (magic, then entries) whose entries all name the same 200-byte value.
    fn area_with_entries(n: usize) -> Vec<u8> {
        let mut a = vec![0u8; 1024];
        a[0..4].copy_from_slice(&0xEA02_0000u32.to_le_bytes());
        for i in 0..n {
            let e = 4 + i * 20;
            a[e] = 1; // name_len
            a[e + 1] = 1; // user.
            a[e + 2..e + 4].copy_from_slice(&800u16.to_le_bytes()); // value offset (from the entries)
            a[e + 8..e + 12].copy_from_slice(&200u32.to_le_bytes()); // value size
            a[e + 16] = b'a' + i as u8;
        }
        a
    }

    #[test]
    fn overlapping_values_are_refused_rather_than_copied_again_and_again() {
        assert!(parse_ibody(&area_with_entries(1), Object::Xattr(12)).is_ok());
        let e = parse_ibody(&area_with_entries(8), Object::Xattr(12)).unwrap_err();
        assert!(e.to_string().contains("overlap"), "{e}");
    }
}
