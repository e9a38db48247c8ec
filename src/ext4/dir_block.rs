//! Linear directory blocks: a run of `struct ext4_dir_entry_2` records, each `rec_len` bytes long, and with
//! metadata_csum a 12-byte `ext4_dir_entry_tail` holding the block's crc32c at the end.

use super::bytes::{le16, le32, u8_at};
use super::checksum::crc32c;
use super::error::{CorruptKind, Error, Object, Result};

/// Size of the fixed part of a directory entry, before the name.
const DIRENT_HEADER: usize = 8;
/// Size of the checksum tail at the end of a leaf block.
pub const TAIL_SIZE: usize = 12;
/// `file_type` value that marks the checksum tail.
const TAIL_FILE_TYPE: u8 = 0xDE;

/// One directory entry as stored; `inode == 0` marks an unused record.
#[derive(Debug, Clone, Copy)]
pub struct RawDirent<'a> {
    /// Byte offset of the record in its block or region.
    pub offset: usize,
    pub inode: u32,
    pub rec_len: usize,
    pub file_type: u8,
    pub name: &'a [u8],
}

/// `EXT4_DIR_REC_LEN`: the space an entry with a name of `name_len` bytes needs, rounded up to 4.
pub fn rec_len_for(name_len: usize) -> usize {
    DIRENT_HEADER.saturating_add(name_len).saturating_add(3) & !3
}

/// Decodes `rec_len`, which for 64 KiB blocks uses its two low bits as bits 16 and 17.
pub fn rec_len_from_disk(v: u16, block_size: usize) -> usize {
    let v = usize::from(v);
    if block_size < 65536 {
        v
    } else if v == 65535 || v == 0 {
        block_size
    } else {
        (v & 65532) | ((v & 3) << 16)
    }
}

/// Walks the records of one directory block (or inline-data region), validating each as the kernel's
/// `__ext4_check_dir_entry` does. Stops at the first malformed record with an error.
pub struct DirentIter<'a> {
    buf: &'a [u8],
    pos: usize,
    filetype: bool,
    inodes_count: u32,
    obj: Object,
    block_size: usize,
}

impl<'a> DirentIter<'a> {
    pub fn new(buf: &'a [u8], filetype: bool, inodes_count: u32, obj: Object, block_size: usize) -> Self {
        DirentIter { buf, pos: 0, filetype, inodes_count, obj, block_size }
    }
}

impl<'a> Iterator for DirentIter<'a> {
    type Item = Result<RawDirent<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        let buf = self.buf;
        let off = self.pos;
        let rest = buf.get(off..).unwrap_or_default();
        if rest.len() < DIRENT_HEADER {
            if !rest.is_empty() {
                self.pos = buf.len();
                return Some(Err(Error::corrupt(self.obj, CorruptKind::DirectoryEntryOverrunsItsBlock)));
            }
            return None;
        }
        let bad = |what| Some(Err(Error::corrupt(self.obj, what)));
        let inode = le32(rest, 0);
        let rec_len = rec_len_from_disk(le16(rest, 4), self.block_size);
        let name_len = if self.filetype { usize::from(u8_at(rest, 6)) } else { usize::from(le16(rest, 6)) };
        let file_type = if self.filetype { u8_at(rest, 7) } else { 0 };
        // Any error ends the walk of this block: nothing after a bad record can be trusted.
        self.pos = buf.len();
        // The one shorter record allowed: an empty 12-byte one (an htree node's fake entry).
        if rec_len < rec_len_for(1) && !(rec_len == rec_len_for(0).saturating_add(4) && inode == 0) {
            return bad(CorruptKind::DirectoryEntryShorterThanMinimum);
        }
        if !rec_len.is_multiple_of(4) {
            return bad(CorruptKind::DirectoryEntryLengthNotMultipleOf4);
        }
        if rec_len < rec_len_for(name_len) {
            return bad(CorruptKind::DirectoryEntryTooShortForItsName);
        }
        // (Without the filetype feature the length field is 16 bits wide; names still end at 255.)
        if name_len > 255 {
            return bad(CorruptKind::DirectoryEntryNameLongerThan255Bytes);
        }
        if rec_len > rest.len() {
            return bad(CorruptKind::DirectoryEntryOverrunsItsBlock);
        }
        if inode > self.inodes_count {
            return bad(CorruptKind::DirectoryEntryPointsPastLastInode);
        }
        let Some(name) = rest.get(DIRENT_HEADER..).and_then(|r| r.get(..name_len)) else {
            return bad(CorruptKind::DirectoryEntryNameOverrunsItsBlock);
        };
        // Within the buffer: rec_len <= rest.len().
        self.pos = off.saturating_add(rec_len);
        Some(Ok(RawDirent { offset: off, inode, rec_len, file_type, name }))
    }
}

/// Checks the leaf block's checksum tail, if it has one (the kernel accepts blocks without room for one).
pub fn verify_tail(block: &[u8], seed: u32, obj: Object) -> Result<()> {
    let Some((covered, tail)) = block.len().checked_sub(TAIL_SIZE).map(|t| block.split_at(t)) else {
        return Ok(());
    };
    let is_tail = le32(tail, 0) == 0 && le16(tail, 4) == 12 && u8_at(tail, 6) == 0 && u8_at(tail, 7) == TAIL_FILE_TYPE;
    if !is_tail {
        return Ok(());
    }
    if crc32c(seed, covered) != le32(tail, 8) {
        return Err(Error::Checksum(obj));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_longer_than_255_bytes_is_refused_without_the_filetype_feature() {
        // One record spanning the block: inode 11, rec_len 1024, a 16-bit name_len of 300.
        let mut b = vec![b'a'; 1024];
        b[0..4].copy_from_slice(&11u32.to_le_bytes());
        b[4..6].copy_from_slice(&1024u16.to_le_bytes());
        b[6..8].copy_from_slice(&300u16.to_le_bytes());
        let obj = Object::DirBlock { ino: 2, lblk: 0 };
        let first = DirentIter::new(&b, false, 100, obj, 1024).next().unwrap();
        assert!(first.is_err(), "a 300-byte name was accepted");
        b[6..8].copy_from_slice(&255u16.to_le_bytes());
        assert_eq!(DirentIter::new(&b, false, 100, obj, 1024).next().unwrap().unwrap().name.len(), 255);
    }
}
