//! The superblock (`struct ext4_super_block`): 1024 bytes at byte 1024 of the filesystem.

use super::bytes::{high32, le16, le32, le64, low32, slice, u8_at};
use super::checksum::crc32c;
use super::error::{CorruptKind, Error, Object, Result};
use super::features::*;

/// Byte offset of the primary superblock.
pub const SUPERBLOCK_OFFSET: u64 = 1024;
/// Size of the superblock structure.
pub const SUPERBLOCK_SIZE: usize = 1024;
const EXT4_SUPER_MAGIC: u16 = 0xEF53;
/// The largest cluster the kernel accepts, as log2 of blocks per cluster (its `EXT4_MAX_CLUSTER_LOG_SIZE`
/// of 2^30 bytes over the smallest block).
const MAX_CLUSTER_BITS: u32 = 20;
/// `s_flags` bit: directory hashes use unsigned chars.
const EXT2_FLAGS_UNSIGNED_HASH: u32 = 0x2;
/// `s_state` bit: cleanly unmounted.
pub const STATE_VALID: u16 = 0x1;
/// `s_state` bit: errors detected.
pub const STATE_ERROR: u16 = 0x2;

/// The fields of the superblock the engine uses, validated.
#[derive(Debug, Clone)]
pub struct Superblock {
    pub inodes_count: u32,
    pub blocks_count: u64,
    pub r_blocks_count: u64,
    pub free_blocks_count: u64,
    pub free_inodes_count: u32,
    pub first_data_block: u32,
    /// Block size in bytes (1 KiB to 64 KiB).
    pub block_size: u32,
    pub log_block_size: u32,
    /// log2 of the cluster size in KiB (equal to `log_block_size` without bigalloc).
    pub log_cluster_size: u32,
    pub blocks_per_group: u32,
    pub inodes_per_group: u32,
    pub state: u16,
    pub rev_level: u32,
    pub first_ino: u32,
    /// On-disk inode record size (128 to the block size, power of two).
    pub inode_size: u16,
    pub feature_compat: u32,
    pub feature_incompat: u32,
    pub feature_ro_compat: u32,
    pub uuid: [u8; 16],
    pub volume_name: [u8; 16],
    pub journal_inum: u32,
    pub journal_dev: u32,
    pub last_orphan: u32,
    pub hash_seed: [u32; 4],
    pub def_hash_version: u8,
    /// Group descriptor size: 32, or 64..=1024 with the 64bit feature.
    pub desc_size: u16,
    /// Blocks reserved after the group descriptor table for online resize (`s_reserved_gdt_blocks`).
    pub reserved_gdt_blocks: u16,
    pub first_meta_bg: u32,
    pub min_extra_isize: u16,
    pub flags: u32,
    pub log_groups_per_flex: u8,
    pub backup_bgs: [u32; 2],
    pub checksum_seed: u32,
    pub orphan_file_inum: u32,
    /// The quota files, user, group and project (`s_usr_quota_inum`, `s_grp_quota_inum`,
    /// `s_prj_quota_inum`), with `quota`.
    pub quota_inums: [u32; 3],
    /// Seconds between updates of the MMP block (`s_mmp_update_interval`), with `mmp`.
    pub mmp_update_interval: u16,
    /// The MMP block (`s_mmp_block`), with `mmp`.
    pub mmp_block: u64,
    pub encoding: u16,
    /// `s_encoding_flags` (strict mode), with casefold.
    pub encoding_flags: u16,
    /// Metadata overhead in clusters, when mke2fs recorded it (`s_overhead_clusters`).
    pub overhead_clusters: u32,
}

impl Superblock {
    /// Parses and validates the 1024 superblock bytes.
    pub fn parse(b: &[u8]) -> Result<Superblock> {
        if b.len() < SUPERBLOCK_SIZE {
            return Err(Error::NotExt("image too small to hold a superblock"));
        }
        if le16(b, 0x38) != EXT4_SUPER_MAGIC {
            return Err(Error::NotExt("no ext2/ext3/ext4 superblock magic (0xEF53) at byte 1024"));
        }
        let bad = |what| Error::corrupt(Object::Superblock, what);
        let feature_incompat = le32(b, 0x60);
        let feature_ro_compat = le32(b, 0x64);
        let is_64bit = feature_incompat & INCOMPAT_64BIT != 0;
        let hi = |off: usize| if is_64bit { u64::from(le32(b, off)) << 32 } else { 0 };

        let log_block_size = le32(b, 0x18);
        // 1 KiB << 6 = 64 KiB, the largest block size ext4 defines.
        if log_block_size > 6 {
            return Err(bad(CorruptKind::BlockSizeAbove64Kib));
        }
        let block_size = 1024u32 << log_block_size;
        let rev_level = le32(b, 0x4C);
        let (first_ino, inode_size) = if rev_level == 0 { (11, 128) } else { (le32(b, 0x54), le16(b, 0x58)) };
        if inode_size < 128 || !inode_size.is_power_of_two() || u32::from(inode_size) > block_size {
            return Err(bad(CorruptKind::InodeSizeIsNotPowerOfTwoBetween128AndBlockSize));
        }
        let desc_size = if is_64bit { le16(b, 0xFE) } else { 32 };
        if is_64bit && (!(64..=1024).contains(&desc_size) || !desc_size.is_power_of_two()) {
            return Err(bad(CorruptKind::GroupDescriptorSizeOutOfRange));
        }
        let sb = Superblock {
            inodes_count: le32(b, 0x0),
            blocks_count: u64::from(le32(b, 0x4)) | hi(0x150),
            r_blocks_count: u64::from(le32(b, 0x8)) | hi(0x154),
            free_blocks_count: u64::from(le32(b, 0xC)) | hi(0x158),
            free_inodes_count: le32(b, 0x10),
            first_data_block: le32(b, 0x14),
            block_size,
            log_block_size,
            log_cluster_size: if feature_ro_compat & RO_COMPAT_BIGALLOC != 0 { le32(b, 0x1C) } else { log_block_size },
            blocks_per_group: le32(b, 0x20),
            inodes_per_group: le32(b, 0x28),
            state: le16(b, 0x3A),
            rev_level,
            first_ino,
            inode_size,
            feature_compat: le32(b, 0x5C),
            feature_incompat,
            feature_ro_compat,
            uuid: array16(b, 0x68),
            volume_name: array16(b, 0x78),
            journal_inum: le32(b, 0xE0),
            journal_dev: le32(b, 0xE4),
            last_orphan: le32(b, 0xE8),
            hash_seed: [le32(b, 0xEC), le32(b, 0xF0), le32(b, 0xF4), le32(b, 0xF8)],
            def_hash_version: u8_at(b, 0xFC),
            desc_size,
            reserved_gdt_blocks: le16(b, 0xCE),
            first_meta_bg: le32(b, 0x104),
            min_extra_isize: le16(b, 0x15C),
            flags: le32(b, 0x160),
            log_groups_per_flex: u8_at(b, 0x174),
            backup_bgs: [le32(b, 0x24C), le32(b, 0x250)],
            checksum_seed: le32(b, 0x270),
            orphan_file_inum: le32(b, 0x280),
            quota_inums: [le32(b, 0x240), le32(b, 0x244), le32(b, 0x26C)],
            mmp_update_interval: le16(b, 0x166),
            mmp_block: le64(b, 0x168),
            encoding: le16(b, 0x27C),
            encoding_flags: le16(b, 0x27E),
            overhead_clusters: le32(b, 0x248),
        };
        sb.validate()?;
        if sb.has_ro_compat(RO_COMPAT_METADATA_CSUM) {
            if u8_at(b, 0x175) != 1 {
                return Err(bad(CorruptKind::UnknownChecksumType));
            }
            let stored = le32(b, 0x3FC);
            let computed = crc32c(!0, slice(b, 0, 0x3FC).unwrap_or_default());
            if stored != computed {
                return Err(Error::Checksum(Object::Superblock));
            }
        }
        Ok(sb)
    }

    fn validate(&self) -> Result<()> {
        let bad = |what| Err(Error::corrupt(Object::Superblock, what));
        // A bitmap block covers 8 * block size clusters; with bigalloc a cluster is several blocks.
        if self.log_cluster_size.checked_sub(self.log_block_size).is_none_or(|bits| bits > MAX_CLUSTER_BITS) {
            return bad(CorruptKind::ClusterSizeOutOfRange);
        }
        let cluster_ratio = 1u32 << self.cluster_bits();
        let max_bpg = self.block_size.saturating_mul(8).saturating_mul(cluster_ratio);
        if self.blocks_per_group.checked_rem(cluster_ratio) != Some(0) {
            return bad(CorruptKind::BlocksPerGroupIsNotWholeNumberOfClusters);
        }
        // mke2fs makes at least 256 blocks a group; fewer would let a small sparse image claim billions of
        // groups, each with a descriptor held in memory.
        if self.blocks_per_group < 256 || cluster_ratio == 0 || self.blocks_per_group > max_bpg {
            return bad(CorruptKind::BlocksPerGroupOutOfRange);
        }
        if self.inodes_per_group == 0 || self.inodes_per_group > self.block_size.saturating_mul(8) {
            return bad(CorruptKind::InodesPerGroupOutOfRange);
        }
        // The superblock lives in block 0 for blocks above 1 KiB and in block 1 for 1 KiB blocks.
        let expected_first = if self.block_size == 1024 { 1 } else { 0 };
        if self.first_data_block > expected_first {
            return bad(CorruptKind::FirstDataBlockDoesNotMatchBlockSize);
        }
        if self.blocks_count <= u64::from(self.first_data_block) {
            return bad(CorruptKind::BlockCountTooSmall);
        }
        let groups = self.group_count();
        if u64::from(self.inodes_per_group).checked_mul(groups) != Some(u64::from(self.inodes_count)) {
            return bad(CorruptKind::InodeCountIsNotInodesPerGroupTimesGroupCount);
        }
        if self.first_ino < 11 || self.first_ino > self.inodes_count {
            return bad(CorruptKind::FirstNonReservedInodeOutOfRange);
        }
        let inodes_per_block = self.block_size.checked_div(u32::from(self.inode_size)).unwrap_or(0);
        if self.inodes_per_group.checked_rem(inodes_per_block) != Some(0) {
            return bad(CorruptKind::InodesPerGroupIsNotWholeNumberOfInodeTableBlocks);
        }
        Ok(())
    }

    pub fn has_compat(&self, f: u32) -> bool {
        self.feature_compat & f != 0
    }
    pub fn has_incompat(&self, f: u32) -> bool {
        self.feature_incompat & f != 0
    }
    pub fn has_ro_compat(&self, f: u32) -> bool {
        self.feature_ro_compat & f != 0
    }

    /// log2 of the blocks in a cluster, the unit of allocation: 0 without bigalloc.
    pub fn cluster_bits(&self) -> u32 {
        self.log_cluster_size.saturating_sub(self.log_block_size)
    }

    /// Blocks per cluster (1 without bigalloc).
    pub fn cluster_ratio(&self) -> u64 {
        1 << self.cluster_bits()
    }

    /// Clusters per group: the bits of a block bitmap that count.
    pub fn clusters_per_group(&self) -> u32 {
        self.blocks_per_group >> self.cluster_bits()
    }

    /// Clusters in group `g` (the last group may be short).
    pub fn clusters_in_group(&self, g: u64) -> u64 {
        self.blocks_in_group(g).div_ceil(self.cluster_ratio())
    }

    /// What one cluster adds to a file's `i_blocks` (512-byte units): files are charged whole clusters.
    pub fn cluster_sectors(&self) -> u64 {
        u64::from(self.block_size / 512) << self.cluster_bits()
    }

    /// Number of block groups: blocks after the first data block, divided by blocks per group, rounded up.
    pub fn group_count(&self) -> u64 {
        let data = self.blocks_count.saturating_sub(u64::from(self.first_data_block));
        data.div_ceil(u64::from(self.blocks_per_group))
    }

    /// The seed of every metadata checksum: `s_checksum_seed` with metadata_csum_seed, else crc32c(uuid).
    pub fn csum_seed(&self) -> u32 {
        if self.has_incompat(INCOMPAT_CSUM_SEED) { self.checksum_seed } else { crc32c(!0, &self.uuid) }
    }

    pub fn has_metadata_csum(&self) -> bool {
        self.has_ro_compat(RO_COMPAT_METADATA_CSUM)
    }

    /// Whether directory hashes treat name bytes as unsigned chars.
    pub fn unsigned_dir_hash(&self) -> bool {
        self.flags & EXT2_FLAGS_UNSIGNED_HASH != 0
    }

    /// Whether the journal holds transactions that must be replayed before the image is consistent.
    pub fn needs_recovery(&self) -> bool {
        self.has_incompat(INCOMPAT_RECOVER)
    }

    /// Whether group `g` holds a superblock backup (and so a group descriptor table copy).
    pub fn group_has_super(&self, g: u64) -> bool {
        if g == 0 {
            return true;
        }
        if self.has_compat(COMPAT_SPARSE_SUPER2) {
            return g == u64::from(self.backup_bgs[0]) || g == u64::from(self.backup_bgs[1]);
        }
        if g <= 1 || !self.has_ro_compat(RO_COMPAT_SPARSE_SUPER) {
            return true;
        }
        if g.is_multiple_of(2) {
            return false;
        }
        is_power_of(g, 3) || is_power_of(g, 5) || is_power_of(g, 7)
    }

    /// First block of group `g`.
    pub fn group_first_block(&self, g: u64) -> u64 {
        // g < group_count, so this is at most blocks_count.
        u64::from(self.first_data_block).saturating_add(g.saturating_mul(u64::from(self.blocks_per_group)))
    }

    /// Number of blocks in group `g` (the last group may be short).
    pub fn blocks_in_group(&self, g: u64) -> u64 {
        let first = self.group_first_block(g);
        self.blocks_count.saturating_sub(first).min(u64::from(self.blocks_per_group))
    }

    /// The group block `b` belongs to.
    pub fn group_of_block(&self, b: u64) -> u64 {
        b.saturating_sub(u64::from(self.first_data_block)).checked_div(u64::from(self.blocks_per_group)).unwrap_or(0)
    }

    /// Group descriptors per block.
    pub fn descs_per_block(&self) -> u64 {
        u64::from(self.block_size.checked_div(u32::from(self.desc_size)).unwrap_or(0))
    }

    /// Blocks at the start of group `g` holding a superblock copy, the descriptor table and its reserve
    /// (the kernel's `ext4_num_base_meta_clusters`).
    pub fn base_meta_blocks(&self, g: u64) -> u64 {
        let has_super = u64::from(self.group_has_super(g));
        let dpb = self.descs_per_block();
        if !self.has_incompat(INCOMPAT_META_BG) || g < u64::from(self.first_meta_bg).saturating_mul(dpb) {
            if has_super == 0 {
                return 0;
            }
            let gdt_blocks = self.group_count().div_ceil(dpb);
            gdt_blocks.saturating_add(1).saturating_add(u64::from(self.reserved_gdt_blocks))
        } else {
            // The first, second and last group of the metagroup hold a copy of its descriptor block.
            let at = g.checked_rem(dpb).unwrap_or(0);
            let in_meta = at == 0 || at == 1 || Some(at) == dpb.checked_sub(1);
            has_super.saturating_add(u64::from(in_meta))
        }
    }

    /// The volume label, without trailing NULs.
    pub fn label(&self) -> String {
        let end = self.volume_name.iter().position(|&c| c == 0).unwrap_or(16);
        String::from_utf8_lossy(&self.volume_name[..end]).into_owned()
    }
}

fn array16(b: &[u8], off: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    if let Some(s) = slice(b, off, 16) {
        a.copy_from_slice(s);
    }
    a
}

fn is_power_of(mut n: u64, base: u64) -> bool {
    while let Some(q) = n.checked_div(base).filter(|_| n > 1 && n.checked_rem(base) == Some(0)) {
        n = q;
    }
    n == 1
}

/// The superblock as stored, for the write side: the one place that knows the offsets of the fields the
/// engine changes (counts, state, features, times, the orphan chain) and the checksum that seals them.
#[derive(Debug, Clone)]
pub struct RawSuperblock(Vec<u8>);

/// Byte offsets of the fields [`RawSuperblock`] changes (`struct ext4_super_block`).
mod field {
    pub const FREE_BLOCKS_LO: usize = 0xC;
    pub const FREE_INODES: usize = 0x10;
    pub const MTIME: usize = 0x2C;
    pub const WTIME: usize = 0x30;
    pub const MNT_COUNT: usize = 0x34;
    pub const STATE: usize = 0x3A;
    pub const ERRORS: usize = 0x3C;
    pub const FEATURE_INCOMPAT: usize = 0x60;
    pub const FEATURE_RO_COMPAT: usize = 0x64;
    pub const LAST_ORPHAN: usize = 0xE8;
    pub const FREE_BLOCKS_HI: usize = 0x158;
    pub const CHECKSUM: usize = 0x3FC;
}

impl RawSuperblock {
    /// `bytes`: the superblock's [`SUPERBLOCK_SIZE`] bytes as read (already validated by
    /// [`Superblock::parse`]); shorter input is padded so that no setter can fail.
    pub fn new(mut bytes: Vec<u8>) -> RawSuperblock {
        bytes.resize(SUPERBLOCK_SIZE, 0);
        RawSuperblock(bytes)
    }

    /// The bytes as they are now (seal them with [`RawSuperblock::sealed`] before writing).
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    fn put16(&mut self, off: usize, v: u16) {
        super::bytes_mut::put16(&mut self.0, off, v);
    }

    fn put32(&mut self, off: usize, v: u32) {
        super::bytes_mut::put32(&mut self.0, off, v);
    }

    /// `s_state` (`STATE_VALID`, `STATE_ERROR`).
    pub fn state(&self) -> u16 {
        le16(&self.0, field::STATE)
    }

    pub fn set_state(&mut self, s: u16) {
        self.put16(field::STATE, s);
    }

    /// `s_errors`: what to do on errors (1 continue, 2 remount read-only, 3 panic).
    pub fn errors(&self) -> u16 {
        le16(&self.0, field::ERRORS)
    }

    /// Sets or clears `f` in `s_feature_incompat`.
    pub fn set_incompat(&mut self, f: u32, on: bool) {
        let v = le32(&self.0, field::FEATURE_INCOMPAT);
        self.put32(field::FEATURE_INCOMPAT, if on { v | f } else { v & !f });
    }

    /// Sets or clears `f` in `s_feature_ro_compat`.
    pub fn set_ro_compat(&mut self, f: u32, on: bool) {
        let v = le32(&self.0, field::FEATURE_RO_COMPAT);
        self.put32(field::FEATURE_RO_COMPAT, if on { v | f } else { v & !f });
    }

    /// `s_free_blocks_count` (the high half only with the 64bit feature).
    pub fn set_free_blocks(&mut self, n: u64) {
        self.put32(field::FREE_BLOCKS_LO, low32(n));
        if le32(&self.0, field::FEATURE_INCOMPAT) & INCOMPAT_64BIT != 0 {
            self.put32(field::FREE_BLOCKS_HI, high32(n));
        }
    }

    pub fn set_free_inodes(&mut self, n: u32) {
        self.put32(field::FREE_INODES, n);
    }

    /// `s_last_orphan`: the head of the orphan chain.
    pub fn set_last_orphan(&mut self, ino: u32) {
        self.put32(field::LAST_ORPHAN, ino);
    }

    /// A read-write mount: `s_mnt_count` up by one, `s_mtime` now.
    pub fn count_mount(&mut self, now: u32) {
        let n = le16(&self.0, field::MNT_COUNT).wrapping_add(1);
        self.put16(field::MNT_COUNT, n);
        self.put32(field::MTIME, now);
    }

    /// `s_wtime`: the last write.
    pub fn set_write_time(&mut self, now: u32) {
        self.put32(field::WTIME, now);
    }

    /// The bytes to write, with `s_checksum` recomputed when metadata_csum is on.
    pub fn sealed(&self) -> Vec<u8> {
        let mut b = self.0.clone();
        if le32(&b, field::FEATURE_RO_COMPAT) & RO_COMPAT_METADATA_CSUM != 0 {
            let c = crc32c(!0, &b[..field::CHECKSUM]);
            super::bytes_mut::put32(&mut b, field::CHECKSUM, c);
        }
        b
    }
}
