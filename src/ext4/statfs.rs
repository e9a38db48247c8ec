//! statfs(2) as the kernel's ext4 reports it, and the metadata overhead it leaves out.

use super::features::{COMPAT_HAS_JOURNAL, INCOMPAT_EXTENTS};
use super::fs::{Filesystem, NAME_MAX, StatFs};
use super::inode::InodeNo;

impl Filesystem {
    /// statfs(2) figures: the block and inode counts, and the free counts summed over the groups.
    /// statfs(2) as the kernel's ext4 reports it by default (bsddf): the metadata overhead is not counted
    /// in the size, and what is available leaves out the reserved blocks and the kernel's small reserve
    /// pool (2% of the clusters, at most 4096, on extent filesystems).
    pub fn statfs(&self) -> StatFs {
        let (free_clusters, free_inodes) = {
            let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            (st.free_clusters, st.free_inodes)
        };
        // Group descriptors count free clusters; a cluster is several blocks with bigalloc.
        let free_blocks = (free_clusters << self.sb.cluster_bits()).min(self.sb.blocks_count);
        let bits = self.sb.cluster_bits();
        let resv_pool = if self.sb.has_incompat(INCOMPAT_EXTENTS) {
            ((self.sb.blocks_count >> bits) / 50).min(4096) << bits
        } else {
            0
        };
        StatFs {
            block_size: self.sb.block_size,
            blocks: self.sb.blocks_count.saturating_sub(self.overhead),
            free_blocks,
            available_blocks: free_blocks.saturating_sub(self.sb.r_blocks_count.saturating_add(resv_pool)),
            inodes: u64::from(self.sb.inodes_count),
            free_inodes: free_inodes.min(u64::from(self.sb.inodes_count)),
            name_max: u32::try_from(NAME_MAX).unwrap_or(255),
        }
    }
}

impl Filesystem {
    /// Blocks that hold metadata rather than files (the kernel's `ext4_calculate_overhead`): the blocks
    /// before the first group, every superblock copy with its descriptor table and reserve, every group's
    /// bitmaps and inode table, and the internal journal.
    pub(super) fn overhead_blocks(&self) -> u64 {
        let sb = &self.sb;
        if sb.overhead_clusters != 0 {
            return u64::from(sb.overhead_clusters) << sb.log_cluster_size.saturating_sub(sb.log_block_size);
        }
        let groups = sb.group_count();
        // Validated superblock values: inodes per group <= 8 * block size, so the products are small.
        let itable = u64::from(sb.inodes_per_group)
            .saturating_mul(u64::from(sb.inode_size))
            .div_ceil(u64::from(sb.block_size).max(1));
        let base = (0..groups).fold(0u64, |n, g| n.saturating_add(sb.base_meta_blocks(g)));
        let journal = if sb.has_compat(COMPAT_HAS_JOURNAL) && sb.journal_inum != 0 {
            self.inode(InodeNo(sb.journal_inum))
                .map_or(0, |j| j.size.checked_div(u64::from(sb.block_size)).unwrap_or(0))
        } else {
            0
        };
        let per_group = groups.saturating_mul(itable.saturating_add(2));
        u64::from(sb.first_data_block).saturating_add(base).saturating_add(per_group).saturating_add(journal)
    }
}
