//! Inodes (`struct ext4_inode`): the 128-byte base record and the extra fields that follow it.

use super::bytes::{high16, high32, le16, le32, low16, low32, slice};
use super::bytes_mut::{put16, put32};
use super::checksum::crc32c;
use super::error::{CorruptKind, Error, Object, Result};
use super::features::RO_COMPAT_HUGE_FILE;
use super::superblock::Superblock;

/// An inode number. Inode numbers start at 1; 2 is the root directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InodeNo(pub u32);

/// `i_flags` bits the engine looks at.
pub mod flags {
    pub const SECRM: u32 = 0x1;
    pub const COMPR: u32 = 0x4;
    pub const IMMUTABLE: u32 = 0x10;
    pub const APPEND: u32 = 0x20;
    pub const NODUMP: u32 = 0x40;
    pub const ENCRYPT: u32 = 0x800;
    pub const INDEX: u32 = 0x1000;
    pub const HUGE_FILE: u32 = 0x40000;
    pub const EXTENTS: u32 = 0x80000;
    pub const VERITY: u32 = 0x100000;
    pub const EA_INODE: u32 = 0x200000;
    pub const INLINE_DATA: u32 = 0x1000_0000;
    /// Files made in the directory take its project id (and directories this flag).
    pub const PROJINHERIT: u32 = 0x2000_0000;
    pub const CASEFOLD: u32 = 0x4000_0000;
}

/// Size of the base inode record (`EXT4_GOOD_OLD_INODE_SIZE`).
pub const GOOD_OLD_INODE_SIZE: usize = 128;
/// `i_projid`, in the extra fields.
const I_PROJID: usize = 0x9C;
/// Size of `i_block`: 15 block pointers, or an extent tree root, or inline data.
pub const I_BLOCK_SIZE: usize = 60;
const I_BLOCK_OFFSET: usize = 0x28;

/// What kind of file an inode is, from the top bits of `i_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Fifo,
    CharDevice,
    Directory,
    BlockDevice,
    Regular,
    Symlink,
    Socket,
}

impl FileKind {
    pub fn from_mode(mode: u16) -> Option<FileKind> {
        Some(match mode & 0xF000 {
            0x1000 => FileKind::Fifo,
            0x2000 => FileKind::CharDevice,
            0x4000 => FileKind::Directory,
            0x6000 => FileKind::BlockDevice,
            0x8000 => FileKind::Regular,
            0xA000 => FileKind::Symlink,
            0xC000 => FileKind::Socket,
            _ => return None,
        })
    }

    /// From a directory entry's `file_type` byte (with the filetype feature).
    pub fn from_dirent(t: u8) -> Option<FileKind> {
        Some(match t {
            1 => FileKind::Regular,
            2 => FileKind::Directory,
            3 => FileKind::CharDevice,
            4 => FileKind::BlockDevice,
            5 => FileKind::Fifo,
            6 => FileKind::Socket,
            7 => FileKind::Symlink,
            _ => return None,
        })
    }
}

/// A timestamp with nanoseconds; seconds may lie before 1970 or after 2038 (extended epoch bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timestamp {
    pub sec: i64,
    pub nsec: u32,
}

impl Timestamp {
    /// Decodes a 32-bit seconds field and, when present, its `_extra` field: two epoch bits that extend the
    /// signed seconds past 2038, and 30 bits of nanoseconds.
    #[expect(clippy::as_conversions, reason = "the seconds field is a two's-complement i32 on disk")]
    fn decode(seconds: u32, extra: Option<u32>) -> Timestamp {
        let mut sec = i64::from(seconds as i32);
        let mut nsec = 0;
        if let Some(extra) = extra {
            sec = sec.saturating_add(i64::from(extra & 3) << 32);
            nsec = extra >> 2;
            if nsec >= 1_000_000_000 {
                nsec = 0; // out of range on disk; the kernel clamps the same way
            }
        }
        Timestamp { sec, nsec }
    }

    /// The 32-bit seconds field and the `_extra` field (epoch bits and nanoseconds) that encode this time.
    #[expect(
        clippy::as_conversions,
        clippy::arithmetic_side_effects,
        reason = "on the clamped range the arithmetic cannot overflow, and the low 32 bits are the field"
    )]
    pub fn encode(self) -> (u32, u32) {
        // The epoch bits count how many times 2^32 seconds lie between -2^31 and the time, as in the
        // kernel's ext4_encode_extra_time; times outside 1901..2446 are clamped.
        let sec = self.sec.clamp(-(1 << 31), (1i64 << 34) - (1 << 31) - 1);
        let epoch = ((sec + (1 << 31)) >> 32) as u32 & 3;
        (sec as u32, epoch | (self.nsec.min(999_999_999) << 2))
    }

    /// The current time.
    pub fn now() -> Timestamp {
        let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Timestamp { sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX), nsec: d.subsec_nanos() }
    }
}

/// A parsed, checksum-verified inode.
#[derive(Debug, Clone)]
pub struct Inode {
    pub ino: InodeNo,
    pub mode: u16,
    pub kind: FileKind,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub links_count: u16,
    /// Allocated space in 512-byte units.
    pub blocks_512: u64,
    pub flags: u32,
    pub generation: u32,
    pub file_acl: u64,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub crtime: Option<Timestamp>,
    pub dtime: u32,
    /// The 60 bytes of `i_block`: block map, extent root, inline data or fast symlink target.
    pub i_block: [u8; I_BLOCK_SIZE],
    /// The in-inode extended attribute area (after `i_extra_isize`), possibly empty.
    pub xattr_area: Vec<u8>,
    /// Seed for this inode's metadata checksums (extent blocks, directory blocks): crc32c of number and generation.
    pub csum_seed: u32,
    /// `i_extra_isize`: bytes of extra fields after the 128-byte base record.
    pub extra_isize: u16,
    /// The on-disk record as read, so that fields the engine does not model survive a rewrite.
    pub raw: Vec<u8>,
}

impl Inode {
    /// Parses `raw` (one on-disk inode record of `s_inode_size` bytes) for inode `ino`.
    pub fn parse(sb: &Superblock, ino: InodeNo, raw: &[u8]) -> Result<Inode> {
        let obj = Object::Inode(ino.0);
        let bad = |what| Error::corrupt(obj, what);
        let inode_size = usize::from(sb.inode_size);
        if raw.len() < inode_size {
            return Err(bad(CorruptKind::RecordShorterThanInodeSize));
        }
        let extra_isize = if inode_size > GOOD_OLD_INODE_SIZE { usize::from(le16(raw, 0x80)) } else { 0 };
        // extra_isize <= 65535, so the sum cannot overflow.
        let fields_end = GOOD_OLD_INODE_SIZE.saturating_add(extra_isize);
        if fields_end > inode_size || extra_isize % 4 != 0 {
            return Err(bad(CorruptKind::IExtraIsizeOutOfRange));
        }
        let has_field = |off: usize| off.saturating_add(4) <= fields_end;
        let generation = le32(raw, 0x64);
        let csum_seed = {
            let s = crc32c(sb.csum_seed(), &ino.0.to_le_bytes());
            crc32c(s, &generation.to_le_bytes())
        };
        if sb.has_metadata_csum() {
            verify_checksum(raw, inode_size, csum_seed, extra_isize >= 4, obj)?;
        }
        let mode = le16(raw, 0x0);
        let links_count = le16(raw, 0x1A);
        if mode == 0 && links_count == 0 {
            // A deleted inode: a directory entry pointing at it is stale.
            return Err(bad(CorruptKind::InodeIsNotInUse));
        }
        let kind = FileKind::from_mode(mode).ok_or_else(|| bad(CorruptKind::InvalidFileTypeInIMode))?;
        let flags = le32(raw, 0x20);
        let size = u64::from(le32(raw, 0x4)) | (u64::from(le32(raw, 0x6C)) << 32);
        if i64::try_from(size).is_err() {
            return Err(bad(CorruptKind::SizeIsNegative));
        }
        let blocks_lo = u64::from(le32(raw, 0x1C));
        let blocks_512 = if sb.has_ro_compat(RO_COMPAT_HUGE_FILE) {
            let b = blocks_lo | (u64::from(le16(raw, 0x74)) << 32);
            if flags & flags::HUGE_FILE != 0 { b.saturating_mul(u64::from(sb.block_size / 512)) } else { b }
        } else {
            blocks_lo
        };
        let extra = |off| if has_field(off) { Some(le32(raw, off)) } else { None };
        let mut i_block = [0u8; I_BLOCK_SIZE];
        i_block.copy_from_slice(slice(raw, I_BLOCK_OFFSET, I_BLOCK_SIZE).unwrap_or(&[0; I_BLOCK_SIZE]));
        let xattr_area = raw.get(fields_end..inode_size).unwrap_or_default().to_vec();
        Ok(Inode {
            ino,
            mode,
            kind,
            uid: u32::from(le16(raw, 0x2)) | (u32::from(le16(raw, 0x78)) << 16),
            gid: u32::from(le16(raw, 0x18)) | (u32::from(le16(raw, 0x7A)) << 16),
            size,
            links_count,
            blocks_512,
            flags,
            generation,
            file_acl: u64::from(le32(raw, 0x68)) | (u64::from(le16(raw, 0x76)) << 32),
            atime: Timestamp::decode(le32(raw, 0x8), extra(0x8C)),
            ctime: Timestamp::decode(le32(raw, 0xC), extra(0x84)),
            mtime: Timestamp::decode(le32(raw, 0x10), extra(0x88)),
            crtime: has_field(0x90).then(|| Timestamp::decode(le32(raw, 0x90), extra(0x94))),
            dtime: le32(raw, 0x14),
            i_block,
            xattr_area,
            csum_seed,
            extra_isize: u16::try_from(extra_isize).unwrap_or(0),
            raw: raw[..inode_size].to_vec(),
        })
    }

    /// A fresh inode record (all fields zero but those given), as the kernel's `__ext4_new_inode` makes
    /// it: extra fields sized to 32 bytes when the record has room, all four timestamps set to `now`.
    pub fn new(
        sb: &Superblock,
        ino: InodeNo,
        mode: u16,
        uid: u32,
        gid: u32,
        now: Timestamp,
        generation: u32,
    ) -> Result<Inode> {
        let inode_size = usize::from(sb.inode_size);
        let extra_isize = inode_size.saturating_sub(GOOD_OLD_INODE_SIZE).min(32);
        let kind = FileKind::from_mode(mode).ok_or(Error::Invalid)?;
        let csum_seed = crc32c(crc32c(sb.csum_seed(), &ino.0.to_le_bytes()), &generation.to_le_bytes());
        let mut raw = vec![0u8; inode_size];
        // At most 32: the u16 field holds it.
        let extra_isize_field = u16::try_from(extra_isize).unwrap_or(0);
        put16(&mut raw, 0x80, extra_isize_field);
        Ok(Inode {
            ino,
            mode,
            kind,
            uid,
            gid,
            size: 0,
            links_count: 1,
            blocks_512: 0,
            flags: 0,
            generation,
            file_acl: 0,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: (extra_isize >= 24).then_some(now),
            dtime: 0,
            i_block: [0; I_BLOCK_SIZE],
            xattr_area: vec![0; inode_size.saturating_sub(GOOD_OLD_INODE_SIZE).saturating_sub(extra_isize)],
            csum_seed,
            extra_isize: extra_isize_field,
            raw,
        })
    }

    /// The on-disk record for this inode: `raw` with every modelled field written back, and the checksum.
    pub fn encode(&self, sb: &Superblock) -> Vec<u8> {
        let mut r = self.raw.clone();
        r.resize(usize::from(sb.inode_size), 0);
        let extra = usize::from(self.extra_isize);
        let fields_end = GOOD_OLD_INODE_SIZE.saturating_add(extra);
        let has_field = |off: usize| off.saturating_add(4) <= fields_end;
        put16(&mut r, 0x0, self.mode);
        put16(&mut r, 0x2, low16(self.uid));
        put16(&mut r, 0x78, high16(self.uid));
        put16(&mut r, 0x18, low16(self.gid));
        put16(&mut r, 0x7A, high16(self.gid));
        put32(&mut r, 0x4, low32(self.size));
        put32(&mut r, 0x6C, high32(self.size));
        put16(&mut r, 0x1A, self.links_count);
        // i_blocks: 32 bits, 48 with huge_file (in 512-byte units: the engine never sets HUGE_FILE_FL).
        let mut flags = self.flags;
        let mut blocks = self.blocks_512;
        if flags & flags::HUGE_FILE != 0 {
            blocks = blocks.checked_div(u64::from(sb.block_size / 512)).unwrap_or(blocks);
        }
        if !sb.has_ro_compat(RO_COMPAT_HUGE_FILE) {
            blocks = blocks.min(u64::from(u32::MAX));
            flags &= !flags::HUGE_FILE;
        }
        put32(&mut r, 0x1C, low32(blocks));
        put16(&mut r, 0x74, low16(high32(blocks)));
        put32(&mut r, 0x20, flags);
        r[I_BLOCK_OFFSET..I_BLOCK_OFFSET + I_BLOCK_SIZE].copy_from_slice(&self.i_block);
        put32(&mut r, 0x64, self.generation);
        put32(&mut r, 0x68, low32(self.file_acl));
        put16(&mut r, 0x76, low16(high32(self.file_acl)));
        put32(&mut r, 0x14, self.dtime);
        for (t, off, extra_off) in [(self.atime, 0x8, 0x8C), (self.ctime, 0xC, 0x84), (self.mtime, 0x10, 0x88)] {
            let (lo, ex) = t.encode();
            put32(&mut r, off, lo);
            if has_field(extra_off) {
                put32(&mut r, extra_off, ex);
            }
        }
        if let Some(t) = self.crtime.filter(|_| has_field(0x90)) {
            let (lo, ex) = t.encode();
            put32(&mut r, 0x90, lo);
            if has_field(0x94) {
                put32(&mut r, 0x94, ex);
            }
        }
        if r.len() > GOOD_OLD_INODE_SIZE {
            put16(&mut r, 0x80, self.extra_isize);
            if let Some(dst) = r.get_mut(fields_end..) {
                let n = self.xattr_area.len().min(dst.len());
                dst[..n].copy_from_slice(&self.xattr_area[..n]);
            }
        }
        if sb.has_metadata_csum() {
            let has_hi = extra >= 4;
            put16(&mut r, 0x7C, 0);
            if has_hi {
                put16(&mut r, 0x82, 0);
            }
            let c = crc32c(self.csum_seed, &r);
            put16(&mut r, 0x7C, low16(c));
            if has_hi {
                put16(&mut r, 0x82, high16(c));
            }
        }
        r
    }

    pub fn has_flag(&self, f: u32) -> bool {
        self.flags & f != 0
    }

    /// The project id (`i_projid`), 0 when the inode is too small to hold one.
    pub fn projid(&self) -> u32 {
        if self.has_projid_field() { le32(&self.raw, I_PROJID) } else { 0 }
    }

    /// Sets `i_projid`; false when the record has no room for it (then the id is 0, as the kernel's).
    pub fn set_projid(&mut self, id: u32) -> bool {
        if !self.has_projid_field() || self.raw.len() < I_PROJID + 4 {
            return false;
        }
        put32(&mut self.raw, I_PROJID, id);
        true
    }

    fn has_projid_field(&self) -> bool {
        GOOD_OLD_INODE_SIZE + usize::from(self.extra_isize) >= I_PROJID + 4
    }

    /// The size `stat` reports: `i_size`, except that an encrypted symlink reports the length of the
    /// no-key name its target reads as (the kernel's `fscrypt_symlink_getattr`), so the two agree.
    pub fn stat_size(&self) -> u64 {
        if self.kind == FileKind::Symlink && self.has_flag(flags::ENCRYPT) {
            super::fscrypt::nokey_symlink_len(self.size)
        } else {
            self.size
        }
    }

    /// Permission bits and setuid/setgid/sticky (the low 12 bits of `i_mode`).
    pub fn perm(&self) -> u16 {
        self.mode & 0o7777
    }

    /// The `i_block` field as fifteen little-endian 32-bit words.
    pub fn i_block_word(&self, i: usize) -> u32 {
        le32(&self.i_block, i.saturating_mul(4))
    }

    /// The device number of a character or block device, in the kernel's `new_encode_dev` layout.
    ///
    /// Old-format numbers (8-bit major and minor) live in `i_block[0]`; new ones in `i_block[1]`.
    pub fn rdev(&self) -> u32 {
        let old = self.i_block_word(0);
        if old != 0 {
            let (major, minor) = ((old >> 8) & 0xFF, old & 0xFF);
            (minor & 0xFF) | (major << 8) | ((minor & !0xFF) << 12)
        } else {
            self.i_block_word(1)
        }
    }
}

/// Writes the checksum of inode record `raw` for inode `ino` (a record assembled from parts, as a
/// fast-commit replay does), so that [`Inode::parse`] accepts it.
pub fn seal_record(sb: &Superblock, ino: InodeNo, raw: &mut [u8]) {
    if !sb.has_metadata_csum() || raw.len() < GOOD_OLD_INODE_SIZE {
        return;
    }
    let inode_size = usize::from(sb.inode_size).min(raw.len());
    let extra_isize = if inode_size > GOOD_OLD_INODE_SIZE { usize::from(le16(raw, 0x80)) } else { 0 };
    let has_hi = extra_isize >= 4 && inode_size >= 0x84;
    let seed = crc32c(crc32c(sb.csum_seed(), &ino.0.to_le_bytes()), &le32(raw, 0x64).to_le_bytes());
    put16(raw, 0x7C, 0);
    if has_hi {
        put16(raw, 0x82, 0);
    }
    let c = crc32c(seed, &raw[..inode_size]);
    put16(raw, 0x7C, low16(c));
    if has_hi {
        put16(raw, 0x82, high16(c));
    }
}

/// Checks `l_i_checksum_lo` (and `i_checksum_hi` when the inode is large enough to hold it): crc32c over
/// the whole record with both checksum fields taken as zero.
fn verify_checksum(raw: &[u8], inode_size: usize, seed: u32, has_hi: bool, obj: Object) -> Result<()> {
    let mut copy = raw.get(..inode_size).unwrap_or_default().to_vec();
    let stored_lo = le16(&copy, 0x7C);
    let stored_hi = if has_hi { le16(&copy, 0x82) } else { 0 };
    if let Some(s) = copy.get_mut(0x7C..0x7E) {
        s.fill(0);
    }
    if has_hi {
        if let Some(s) = copy.get_mut(0x82..0x84) {
            s.fill(0);
        }
    }
    let computed = crc32c(seed, &copy);
    let ok = if has_hi {
        computed == (u32::from(stored_hi) << 16 | u32::from(stored_lo))
    } else {
        low16(computed) == stored_lo
    };
    if ok { Ok(()) } else { Err(Error::Checksum(obj)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_use_the_epoch_bits() {
        // 2100-01-01T00:00:00Z = 4102444800 = 0xF486_5700: negative as i32, so the epoch bits are 1.
        let t = Timestamp::decode(0xF486_5700, Some(1 | (5 << 2)));
        assert_eq!(t, Timestamp { sec: 4_102_444_800, nsec: 5 });
        // Before 1970: a negative 32-bit value with epoch 0.
        assert_eq!(Timestamp::decode((-315_619_200i32) as u32, Some(0)).sec, -315_619_200);
        // No extra field: seconds only.
        assert_eq!(Timestamp::decode(10, None), Timestamp { sec: 10, nsec: 0 });
    }

    #[test]
    fn encode_is_the_inverse_of_decode() {
        for sec in [0i64, 1, -1, -315_619_200, 2_147_483_647, 2_147_483_648, 4_102_444_800, 15_032_385_535] {
            let t = Timestamp { sec, nsec: 123_456_789 };
            let (lo, ex) = t.encode();
            assert_eq!(Timestamp::decode(lo, Some(ex)), t, "{sec}");
        }
    }
}
