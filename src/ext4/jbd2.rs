//! The jbd2 on-disk format shared by recovery (`journal.rs`) and the log writer (`journal_write.rs`,
//! `journal_log.rs`, `journal_blocks.rs`): the block header's magic and block types, the feature and tag
//! flags, big-endian field access, and the journal superblock (`journal_superblock_t`,
//! `Documentation/filesystems/ext4/journal.rst`).

use super::checksum::crc32c;
use super::error::{CorruptKind, Error, Object, Result};

pub(super) const JBD2_MAGIC: u32 = 0xC03B_3998;
pub(super) const BLOCKTYPE_DESCRIPTOR: u32 = 1;
pub(super) const BLOCKTYPE_COMMIT: u32 = 2;
pub(super) const BLOCKTYPE_SUPERBLOCK_V1: u32 = 3;
pub(super) const BLOCKTYPE_SUPERBLOCK_V2: u32 = 4;
pub(super) const BLOCKTYPE_REVOKE: u32 = 5;

// Feature flags of the journal superblock.
pub(super) const INCOMPAT_REVOKE: u32 = 0x1;
const INCOMPAT_64BIT: u32 = 0x2;
const INCOMPAT_ASYNC_COMMIT: u32 = 0x4;
const INCOMPAT_CSUM_V2: u32 = 0x8;
pub(super) const INCOMPAT_CSUM_V3: u32 = 0x10;
const INCOMPAT_FAST_COMMIT: u32 = 0x20;
const INCOMPAT_KNOWN: u32 = INCOMPAT_REVOKE
    | INCOMPAT_64BIT
    | INCOMPAT_ASYNC_COMMIT
    | INCOMPAT_CSUM_V2
    | INCOMPAT_CSUM_V3
    | INCOMPAT_FAST_COMMIT;

/// `COMPAT_CHECKSUM`: v1 commit-block checksums.
const COMPAT_CHECKSUM: u32 = 0x1;

// Block tag flags.
pub(super) const TAG_ESCAPE: u32 = 0x1;
pub(super) const TAG_SAME_UUID: u32 = 0x2;
pub(super) const TAG_LAST: u32 = 0x8;

/// `s_checksum_type` for crc32c, the only type v2/v3 checksums use.
pub(super) const CHECKSUM_CRC32C: u8 = 4;
/// The largest journal mke2fs makes (its documented limit), in blocks: bounds the work and memory of a
/// scan whatever the image claims.
const MAX_JOURNAL_BLOCKS: u32 = 10_240_000;
/// Size of the journal superblock the checksum covers (`sizeof(journal_superblock_t)`).
const JSB_SIZE: usize = 1024;

pub(super) fn be32(b: &[u8], off: usize) -> u32 {
    b.get(off..off.saturating_add(4)).map_or(0, |s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

pub(super) fn be16(b: &[u8], off: usize) -> u16 {
    b.get(off..off.saturating_add(2)).map_or(0, |s| u16::from_be_bytes([s[0], s[1]]))
}

pub(super) fn put_be32(b: &mut [u8], off: usize, v: u32) {
    if let Some(s) = b.get_mut(off..off.saturating_add(4)) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

/// `a - b` as jbd2 compares transaction ids (`tid_gt`, `tid_geq`): the difference taken mod 2^32, as
/// a signed number, so that ids compare across the wrap.
pub(super) fn tid_diff(a: u32, b: u32) -> i32 {
    i32::from_ne_bytes(a.wrapping_sub(b).to_ne_bytes())
}

pub(super) fn corrupt(kind: CorruptKind) -> Error {
    Error::corrupt(Object::Journal, kind)
}

/// The journal superblock (`journal_superblock_t`), the fields recovery needs.
#[derive(Debug, Clone)]
pub struct JournalSuperblock {
    pub version: u32,
    pub block_size: u32,
    pub maxlen: u32,
    pub first: u32,
    pub sequence: u32,
    /// Log block of the first transaction to replay; 0 when the journal is empty.
    pub start: u32,
    pub compat: u32,
    pub incompat: u32,
    pub checksum_type: u8,
    /// Number of fast-commit blocks at the end of the journal (`s_num_fc_blks`, 0 meaning the default).
    pub num_fc_blocks: u32,
    /// The seed of every v2/v3 checksum: crc32c of the journal's UUID.
    pub csum_seed: u32,
}

impl JournalSuperblock {
    /// Parses and validates a journal superblock for a filesystem with `fs_block_size`-byte blocks.
    pub fn parse(b: &[u8], fs_block_size: u32) -> Result<JournalSuperblock> {
        if b.len() < JSB_SIZE || be32(b, 0) != JBD2_MAGIC {
            return Err(corrupt(CorruptKind::NoJournalSuperblockMagic));
        }
        let version = match be32(b, 4) {
            BLOCKTYPE_SUPERBLOCK_V1 => 1,
            BLOCKTYPE_SUPERBLOCK_V2 => 2,
            _ => return Err(corrupt(CorruptKind::JournalSuperblockHasUnknownBlockType)),
        };
        let (compat, incompat) = if version == 2 { (be32(b, 0x24), be32(b, 0x28)) } else { (0, 0) };
        let jsb = JournalSuperblock {
            version,
            block_size: be32(b, 0xC),
            maxlen: be32(b, 0x10),
            first: be32(b, 0x14),
            sequence: be32(b, 0x18),
            start: be32(b, 0x1C),
            compat,
            incompat,
            checksum_type: b[0x50],
            num_fc_blocks: be32(b, 0x54),
            csum_seed: crc32c(!0, &b[0x30..0x40]),
        };
        if jsb.block_size != fs_block_size {
            return Err(corrupt(CorruptKind::JournalBlockSizeDiffersFromFilesystem));
        }
        if jsb.maxlen > MAX_JOURNAL_BLOCKS {
            return Err(corrupt(CorruptKind::JournalIsLargerThanAnyMke2fsMakes));
        }
        if jsb.first == 0 || jsb.first >= jsb.maxlen {
            return Err(corrupt(CorruptKind::JournalFirstLogBlockLiesOutsideJournal));
        }
        if jsb.start != 0 && (jsb.start < jsb.first || jsb.start >= jsb.maxlen) {
            return Err(corrupt(CorruptKind::JournalLogStartLiesOutsideLog));
        }
        let unknown = jsb.incompat & !INCOMPAT_KNOWN;
        if unknown != 0 {
            return Err(Error::Unsupported(format!("journal has unknown incompatible features {unknown:#x}")));
        }
        if jsb.has_csum() {
            if jsb.checksum_type != CHECKSUM_CRC32C {
                return Err(corrupt(CorruptKind::JournalSuperblockNamesUnknownChecksumType));
            }
            let mut copy = b[..JSB_SIZE].to_vec();
            put_be32(&mut copy, 0xFC, 0);
            if crc32c(!0, &copy) != be32(b, 0xFC) {
                return Err(Error::Checksum(Object::Journal));
            }
        }
        Ok(jsb)
    }

    /// A superblock that describes no log (before the real one is read).
    pub(super) fn unparsed() -> JournalSuperblock {
        JournalSuperblock {
            version: 0,
            block_size: 0,
            maxlen: 0,
            first: 0,
            sequence: 0,
            start: 0,
            compat: 0,
            incompat: 0,
            checksum_type: 0,
            num_fc_blocks: 0,
            csum_seed: 0,
        }
    }

    /// Whether blocks carry v2 or v3 checksums.
    pub fn has_csum(&self) -> bool {
        self.incompat & (INCOMPAT_CSUM_V2 | INCOMPAT_CSUM_V3) != 0
    }

    pub(super) fn csum_v3(&self) -> bool {
        self.incompat & INCOMPAT_CSUM_V3 != 0
    }

    pub(super) fn is_64bit(&self) -> bool {
        self.incompat & INCOMPAT_64BIT != 0
    }

    /// Bytes per block tag in a descriptor block (`journal_tag_bytes`).
    pub(super) fn tag_bytes(&self) -> usize {
        if self.csum_v3() {
            return 16;
        }
        // journal_block_tag_t: blocknr, (checksum,) flags, blocknr_high; the high half only with 64bit.
        match (self.incompat & INCOMPAT_CSUM_V2 != 0, self.is_64bit()) {
            (false, false) => 8,
            (true, false) => 10,
            (false, true) => 12,
            (true, true) => 14,
        }
    }

    /// The last log block + 1: the fast-commit area, when there is one, follows the log.
    pub(super) fn log_end(&self) -> u32 {
        if self.incompat & INCOMPAT_FAST_COMMIT == 0 {
            return self.maxlen;
        }
        let fc = if self.num_fc_blocks == 0 { 256 } else { self.num_fc_blocks };
        self.maxlen.saturating_sub(fc).max(self.first.saturating_add(1))
    }

    /// The superblock bytes `raw` rewritten as an empty journal whose next transaction is `sequence`:
    /// what the kernel writes after recovery and at a clean unmount.
    pub fn emptied(&self, raw: &[u8], sequence: u32) -> Vec<u8> {
        self.positioned(raw, sequence, 0, 0)
    }

    /// The superblock bytes `raw` rewritten so that recovery starts at log block `start` (0: nowhere)
    /// with transaction `sequence`, with `incompat` features added, and resealed.
    pub fn positioned(&self, raw: &[u8], sequence: u32, start: u32, incompat: u32) -> Vec<u8> {
        let mut b = raw.to_vec();
        put_be32(&mut b, 0x18, sequence);
        put_be32(&mut b, 0x1C, start);
        if incompat != 0 && self.version == 2 {
            let features = be32(&b, 0x28) | incompat;
            put_be32(&mut b, 0x28, features);
        }
        if self.has_csum() && b.len() >= JSB_SIZE {
            put_be32(&mut b, 0xFC, 0);
            let c = crc32c(!0, &b[..JSB_SIZE]);
            put_be32(&mut b, 0xFC, c);
        }
        b
    }

    /// The superblock bytes `raw` with v3 checksums turned on (crc32c), resealed.
    pub(super) fn with_csum_v3(&self, raw: &[u8]) -> Vec<u8> {
        let mut b = raw.to_vec();
        let features = (be32(&b, 0x28) | INCOMPAT_CSUM_V3) & !INCOMPAT_CSUM_V2;
        put_be32(&mut b, 0x28, features);
        let compat = be32(&b, 0x24) & !COMPAT_CHECKSUM;
        put_be32(&mut b, 0x24, compat);
        if let Some(t) = b.get_mut(0x50) {
            *t = CHECKSUM_CRC32C;
        }
        let sealed = JournalSuperblock { incompat: INCOMPAT_CSUM_V3, ..self.clone() };
        sealed.positioned(&b, self.sequence, self.start, 0)
    }

    /// Whether the journal has a fast-commit area.
    pub(super) fn has_fast_commit(&self) -> bool {
        self.incompat & INCOMPAT_FAST_COMMIT != 0
    }

    /// Whether the journal uses v1 (`COMPAT_CHECKSUM`) commit checksums, which the log writer does not
    /// produce.
    pub(super) fn has_v1_checksums(&self) -> bool {
        self.compat & COMPAT_CHECKSUM != 0
    }

    /// The journal's UUID, which the first tag of each descriptor block repeats.
    pub(super) fn uuid(raw: &[u8]) -> [u8; 16] {
        let mut u = [0u8; 16];
        if let Some(s) = raw.get(0x30..0x40) {
            u.copy_from_slice(s);
        }
        u
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_superblock_validation() {
        let mut b = vec![0u8; 1024];
        put_be32(&mut b, 0, JBD2_MAGIC);
        put_be32(&mut b, 4, BLOCKTYPE_SUPERBLOCK_V2);
        put_be32(&mut b, 0xC, 4096);
        put_be32(&mut b, 0x10, 1024);
        put_be32(&mut b, 0x14, 1);
        put_be32(&mut b, 0x1C, 5);
        assert!(JournalSuperblock::parse(&b, 4096).is_ok());
        assert!(JournalSuperblock::parse(&b, 1024).is_err(), "block size must match the filesystem's");
        let mut bad = b.clone();
        put_be32(&mut bad, 0x1C, 4000);
        assert!(JournalSuperblock::parse(&bad, 4096).is_err(), "log start outside the journal");
        let mut csum = b.clone();
        put_be32(&mut csum, 0x28, INCOMPAT_CSUM_V3);
        csum[0x50] = CHECKSUM_CRC32C;
        assert!(JournalSuperblock::parse(&csum, 4096).is_err(), "a v3 superblock without its checksum");
        let sealed =
            JournalSuperblock { incompat: INCOMPAT_CSUM_V3, ..JournalSuperblock::unparsed() }.emptied(&csum, 9);
        let parsed = JournalSuperblock::parse(&sealed, 4096).unwrap();
        assert_eq!((parsed.start, parsed.sequence), (0, 9), "an emptied journal starts nowhere at the next sequence");
    }
}
