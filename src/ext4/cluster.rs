//! Bigalloc cluster arithmetic for a file's block map: the physical cluster a logical cluster lives in
//! (and the check that its blocks keep their offsets), and the clusters a freed run leaves with no block
//! of the file. Without bigalloc (clusters of one block) the first finds nothing and the second merges
//! the freed runs.
//!
//! Bounds the arithmetic relies on: the extents and freed runs lie inside the filesystem, so their ends
//! and cluster numbers do not overflow.

use super::error::{CorruptKind, Error, Object, Result};
use super::extent::Extent;
use super::extent_write;
use super::inode::Inode;

/// The first block of the physical cluster that logical cluster `first..first + ratio` of `list` lives
/// in, if any of its blocks is mapped. A cluster mapped out of step (block offsets that differ) is
/// corruption: e2fsck's "misaligned cluster".
pub(super) fn cluster_home(list: &[Extent], first: u64, ratio: u64, inode: &Inode) -> Result<Option<u64>> {
    if ratio == 1 {
        return Ok(None);
    }
    let mask = ratio.saturating_sub(1);
    let at = list.partition_point(|e| e.end() <= first);
    let Some(e) = list.get(at).filter(|e| u64::from(e.lblk).saturating_sub(first) < ratio) else { return Ok(None) };
    // e ends after first and starts before the cluster's end: l is one of its blocks in the cluster.
    let l = u64::from(e.lblk).max(first);
    let p = extent_write::pblk_at(e, l);
    if (p ^ l) & mask != 0 {
        return Err(Error::corrupt(Object::Inode(inode.ino.0), CorruptKind::ClusterIsMappedOutOfStepWithItsBlocks));
    }
    // first is a cluster's first block, so l's offset in the cluster is l - first, which p shares.
    Ok(Some(p & !mask))
}

/// The last block of a run of `len >= 1` blocks from `start` (inside the filesystem: no saturation).
fn last_block(start: u64, len: u64) -> u64 {
    start.saturating_add(len.saturating_sub(1))
}

/// The clusters (first and last, inclusive runs in cluster numbers) of the physical runs `freed` that no
/// extent left in `list` still uses, for cluster size `2^bits` blocks.
///
/// Only the clusters at the ends of a freed run can hold blocks outside it, so each run gives up its
/// end clusters that a kept extent uses before the runs are merged: once merged, a shared cluster can
/// sit inside a run (two extents freed by one truncate, physically side by side, with a third kept in
/// the cluster between them).
pub(super) fn unused_clusters(freed: &[(u64, u64)], list: &[Extent], bits: u32) -> Vec<(u64, u64)> {
    // The clusters the kept extents use, as sorted disjoint runs, for a binary search per end.
    let mut kept: Vec<(u64, u64)> = if bits == 0 {
        Vec::new()
    } else {
        list.iter().map(|e| (e.pblk >> bits, last_block(e.pblk, u64::from(e.len)) >> bits)).collect()
    };
    kept.sort_unstable();
    kept.dedup_by(|next, prev| {
        let overlaps = next.0 <= prev.1;
        if overlaps {
            prev.1 = prev.1.max(next.1);
        }
        overlaps
    });
    let used = |c: u64| {
        let at = kept.partition_point(|&(_, b)| b < c);
        kept.get(at).is_some_and(|&(a, _)| a <= c)
    };
    let mut runs: Vec<(u64, u64)> = freed
        .iter()
        .filter(|&&(_, l)| l > 0)
        .filter_map(|&(s, l)| {
            let (mut a, mut b) = (s >> bits, last_block(s, l) >> bits);
            if bits > 0 {
                if used(a) {
                    a = a.checked_add(1)?;
                }
                if b >= a && used(b) {
                    b = b.checked_sub(1)?;
                }
            }
            (a <= b).then_some((a, b))
        })
        .collect();
    runs.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(runs.len());
    for (a, b) in runs {
        match merged.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(lblk: u32, len: u32, pblk: u64) -> Extent {
        Extent { lblk, len, pblk, unwritten: false }
    }

    #[test]
    fn a_kept_cluster_between_two_freed_runs_stays() {
        // Clusters of 16 blocks. A truncate to 260 blocks frees 512..767 at 4704 (clusters 294..309), the
        // tail of 256..511 at 4964 (310..325, 310 still holding blocks 256..259) and 1280..1297 at 5216
        // (326..327): merged first, the three runs would be 294..327 and free cluster 310 with them.
        let kept = [ext(0, 256, 4448), ext(256, 4, 4960)];
        let freed = [(4964, 252), (4704, 256), (5216, 18)];
        assert_eq!(unused_clusters(&freed, &kept, 4), vec![(294, 309), (311, 327)]);
    }

    #[test]
    fn shared_end_clusters_are_kept_and_the_rest_merged() {
        let kept = [ext(0, 2, 32), ext(100, 1, 79)];
        // 34..47 shares cluster 2 with the kept 32..33; 64..79 shares cluster 4 with the kept block 79.
        assert_eq!(unused_clusters(&[(34, 14), (48, 16), (64, 15)], &kept, 4), vec![(3, 3)]);
        // Without bigalloc every freed block is a cluster of its own.
        assert_eq!(unused_clusters(&[(10, 2), (12, 3), (20, 1)], &kept, 0), vec![(10, 14), (20, 20)]);
    }
}
