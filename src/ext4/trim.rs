//! Discarding free blocks, so that a sparse image file gives their space back: FITRIM (`fstrim`) walks
//! the block bitmaps, and the `discard` mount option discards what each journal commit freed, as the
//! kernel's ext4 does. Blocks freed by an operation not yet committed are left alone (a crash before
//! the commit gives them back to their old owner, whose data must still be there).

use super::error::{Error, Result};
use super::fs::Filesystem;

impl Filesystem {
    /// FITRIM: commits the journal, then discards the free blocks in `len` bytes from byte `start` of
    /// the filesystem, in runs of at least `min_len` bytes. Returns the bytes discarded. Holds the write lock one group at a time,
    /// so no allocation runs while a group's free blocks are punched.
    pub fn trim(&self, start: u64, len: u64, min_len: u64) -> Result<u64> {
        let sb = &self.sb;
        let bs = u64::from(sb.block_size);
        let blocks = |bytes: u64| bytes.checked_div(bs).unwrap_or(0);
        let first = blocks(start).max(u64::from(sb.first_data_block));
        let end = blocks(start.saturating_add(len)).min(sb.blocks_count);
        let min_blocks = blocks(min_len).max(1);
        // Commit first, so that blocks freed a moment ago (`rm` then `fstrim`) are free for good and
        // trimmed too, not left for the next commit.
        if self.is_read_only() {
            return Err(Error::ReadOnly);
        }
        self.sync()?;
        let mut trimmed = 0u64;
        for g in 0..sb.group_count() {
            let base = sb.group_first_block(g);
            let group_end = base.saturating_add(sb.blocks_in_group(g));
            if group_end <= first || base >= end {
                continue;
            }
            let g32 = u32::try_from(g).map_err(|_| Error::Invalid)?;
            // Dropped without committing: building the bitmap of a group that has none yet changes
            // its descriptor, and that change must not be kept.
            let mut tx = self.begin()?;
            let Some(free) = tx.free_runs(g32)? else { continue };
            for (s, l) in free {
                let (s, e) = (s.max(first), s.saturating_add(l).min(end));
                let Some(n) = e.checked_sub(s).filter(|&n| n > 0 && n >= min_blocks) else { continue };
                // Blocks inside the filesystem: their byte offsets fit.
                let (at, bytes) = (s.saturating_mul(bs), n.saturating_mul(bs));
                match self.dev.discard(at, bytes) {
                    Ok(()) => trimmed = trimmed.saturating_add(bytes),
                    Err(e) if e.kind() == std::io::ErrorKind::Unsupported => return Err(Error::NotSupported),
                    Err(e) => return Err(Error::Io(e)),
                }
            }
            drop(tx);
        }
        Ok(trimmed)
    }

    /// Turns on discarding what each commit frees (`discard`).
    pub fn set_discard(&self, on: bool) {
        self.discard.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// After a commit made `ranges` (first block, count) free for good: discards them when the mount
    /// asked for it. A device that cannot discard, or a failure, costs only the space.
    pub(crate) fn discard_freed(&self, ranges: &[(u64, u64)]) {
        if ranges.is_empty() || !self.discard.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let bs = u64::from(self.sb.block_size);
        for &(s, l) in ranges {
            if let Err(e) = self.dev.discard(s.saturating_mul(bs), l.saturating_mul(bs)) {
                if e.kind() != std::io::ErrorKind::Unsupported {
                    tracing::warn!(block = s, count = l, error = %e, "discard failed");
                }
                return;
            }
        }
    }
}
