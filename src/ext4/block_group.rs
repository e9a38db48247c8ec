//! Block group descriptors (`struct ext4_group_desc`): 32 bytes, or `s_desc_size` with the 64bit feature.

use super::bytes::{high16, high32, index, le16, le32, low16, low32, slice};
use super::bytes_mut::{put16, put32};
use super::checksum::{crc16, crc32c};
use super::features::{INCOMPAT_META_BG, RO_COMPAT_GDT_CSUM};
use super::superblock::Superblock;

/// `bg_flags`: the inode table and bitmap are not initialised.
pub const BG_INODE_UNINIT: u16 = 0x1;
/// `bg_flags`: the block bitmap is not initialised.
pub const BG_BLOCK_UNINIT: u16 = 0x2;
/// `bg_flags`: the inode table is zeroed.
pub const BG_INODE_ZEROED: u16 = 0x4;
/// Offset of `bg_checksum` in the descriptor.
const BG_CHECKSUM_OFFSET: usize = 0x1E;

/// One group's descriptor.
#[derive(Debug, Clone, Default)]
pub struct GroupDesc {
    pub block_bitmap: u64,
    pub inode_bitmap: u64,
    pub inode_table: u64,
    /// Free clusters (`bg_free_blocks_count`: blocks without bigalloc).
    pub free_blocks_count: u32,
    pub free_inodes_count: u32,
    pub used_dirs_count: u32,
    pub flags: u16,
    pub itable_unused: u32,
    /// False when the stored checksum disagrees: the group is then read (as the kernel reads it on a
    /// read-only mount) but never allocated from, and the filesystem is not written.
    pub checksum_ok: bool,
    /// False when the inode table lies outside the filesystem: the group's inodes are refused.
    pub usable: bool,
    /// Checksums of the block and inode bitmaps (metadata_csum).
    pub block_bitmap_csum: u32,
    pub inode_bitmap_csum: u32,
    /// The descriptor as read, so that fields the engine does not model survive a rewrite.
    pub raw: Vec<u8>,
}

impl GroupDesc {
    /// Parses descriptor `group` from its `desc_size` bytes and verifies its checksum.
    pub fn parse(sb: &Superblock, group: u32, b: &[u8]) -> GroupDesc {
        let wide = sb.desc_size >= 64;
        let hi32 = |off| if wide { u64::from(le32(b, off)) << 32 } else { 0 };
        let hi16 = |off| if wide { u32::from(le16(b, off)) << 16 } else { 0 };
        GroupDesc {
            block_bitmap: u64::from(le32(b, 0x0)) | hi32(0x20),
            inode_bitmap: u64::from(le32(b, 0x4)) | hi32(0x24),
            inode_table: u64::from(le32(b, 0x8)) | hi32(0x28),
            free_blocks_count: u32::from(le16(b, 0xC)) | hi16(0x2C),
            free_inodes_count: u32::from(le16(b, 0xE)) | hi16(0x2E),
            used_dirs_count: u32::from(le16(b, 0x10)) | hi16(0x30),
            flags: le16(b, 0x12),
            itable_unused: u32::from(le16(b, 0x1C)) | hi16(0x32),
            checksum_ok: le16(b, BG_CHECKSUM_OFFSET) == checksum(sb, group, b),
            usable: true,
            block_bitmap_csum: u32::from(le16(b, 0x18)) | hi16(0x38),
            inode_bitmap_csum: u32::from(le16(b, 0x1A)) | hi16(0x3A),
            raw: b.get(..usize::from(sb.desc_size)).unwrap_or(b).to_vec(),
        }
    }

    /// The on-disk descriptor: `raw` with the modelled fields and the checksum written back.
    pub fn encode(&self, sb: &Superblock, group: u32) -> Vec<u8> {
        let mut b = self.raw.clone();
        b.resize(usize::from(sb.desc_size), 0);
        let wide = sb.desc_size >= 64;
        let lo32 = |b: &mut Vec<u8>, off, hi_off, v: u64| {
            put32(b, off, low32(v));
            if wide {
                put32(b, hi_off, high32(v));
            }
        };
        lo32(&mut b, 0x0, 0x20, self.block_bitmap);
        lo32(&mut b, 0x4, 0x24, self.inode_bitmap);
        lo32(&mut b, 0x8, 0x28, self.inode_table);
        let lo16 = |b: &mut Vec<u8>, off, hi_off, v: u32| {
            put16(b, off, low16(v));
            if wide {
                put16(b, hi_off, high16(v));
            }
        };
        lo16(&mut b, 0xC, 0x2C, self.free_blocks_count);
        lo16(&mut b, 0xE, 0x2E, self.free_inodes_count);
        lo16(&mut b, 0x10, 0x30, self.used_dirs_count);
        put16(&mut b, 0x12, self.flags);
        lo16(&mut b, 0x1C, 0x32, self.itable_unused);
        lo16(&mut b, 0x18, 0x38, self.block_bitmap_csum);
        lo16(&mut b, 0x1A, 0x3A, self.inode_bitmap_csum);
        let c = checksum(sb, group, &b);
        put16(&mut b, BG_CHECKSUM_OFFSET, c);
        b
    }
}

/// The checksum of a bitmap (metadata_csum): crc32c of its first `bits / 8` bytes.
pub fn bitmap_checksum(sb: &Superblock, bitmap: &[u8], bits: u32) -> u32 {
    crc32c(sb.csum_seed(), bitmap.get(..index(bits / 8)).unwrap_or(bitmap))
}

/// `bg_checksum` as the kernel's `ext4_group_desc_csum` computes it: the low 16 bits of crc32c with
/// metadata_csum, crc16 with gdt_csum (uninit_bg), and nothing (0, always matching) otherwise.
pub fn checksum(sb: &Superblock, group: u32, desc: &[u8]) -> u16 {
    let size = usize::from(sb.desc_size).min(desc.len());
    let before = slice(desc, 0, BG_CHECKSUM_OFFSET).unwrap_or_default();
    let after = desc.get(BG_CHECKSUM_OFFSET + 2..size).unwrap_or_default();
    if sb.has_metadata_csum() {
        let mut c = crc32c(sb.csum_seed(), &group.to_le_bytes());
        c = crc32c(c, before);
        c = crc32c(c, &[0, 0]);
        c = crc32c(c, after);
        low16(c)
    } else if sb.has_ro_compat(RO_COMPAT_GDT_CSUM) {
        let mut c = crc16(!0, &sb.uuid);
        c = crc16(c, &group.to_le_bytes());
        c = crc16(c, before);
        // The 64-bit fields after the checksum are covered only when the descriptors are that large.
        crc16(c, after)
    } else {
        le16(desc, BG_CHECKSUM_OFFSET)
    }
}

/// The block that holds descriptor block `nr` of the table (the kernel's `descriptor_loc`).
pub fn descriptor_block(sb: &Superblock, nr: u64) -> Option<u64> {
    let first = u64::from(sb.first_data_block);
    // The table follows the superblock's block: block 1 with 1 KiB blocks (even when bigalloc makes the
    // first data block 0), block 0 otherwise.
    let sb_block = u64::from(1024u32.checked_div(sb.block_size)?);
    if !sb.has_incompat(INCOMPAT_META_BG) || nr < u64::from(sb.first_meta_bg) {
        return sb_block.checked_add(1)?.checked_add(nr);
    }
    // With meta_bg, each descriptor block lives in the first group of the metagroup it describes.
    let per_block = u64::from(sb.block_size.checked_div(u32::from(sb.desc_size))?);
    let group = per_block.checked_mul(nr)?;
    // With 1 KiB blocks and bigalloc (first data block 0) group 0 also holds the boot block.
    let boot_block = sb.block_size == 1024 && nr == 0 && first == 0;
    let has_super = u64::from(sb.group_has_super(group)).checked_add(u64::from(boot_block))?;
    let group_start = group.checked_mul(u64::from(sb.blocks_per_group))?.checked_add(first)?;
    group_start.checked_add(has_super)
}
