//! A device seen through a replay: the replayed blocks (logged copies in the journal, or contents in
//! memory) over the image, so a read-only mount of an image whose journal needs recovery never writes it.

use std::collections::BTreeMap;
use std::sync::{Mutex, RwLock};

use super::device::BlockDevice;
use super::journal::BlockSource;

/// A device seen through a replay: what a read-only mount of an image whose journal needs recovery
/// reads, so the image itself is never written. Replayed blocks are read from their logged copies.
///
/// A [`OverlayDevice::scratch`] overlay also takes writes, into memory and up to a bound: the
/// orphan cleanup a read-only mount does, as the kernel's does, without writing the image.
pub struct OverlayDevice {
    inner: Box<dyn BlockDevice>,
    block_size: u32,
    blocks: RwLock<BTreeMap<u64, BlockSource>>,
    /// Bytes of written blocks still allowed in memory; `None`: writes are refused.
    room: Option<Mutex<usize>>,
}

impl OverlayDevice {
    pub fn new(inner: Box<dyn BlockDevice>, block_size: u32, blocks: BTreeMap<u64, BlockSource>) -> OverlayDevice {
        OverlayDevice { inner, block_size, blocks: RwLock::new(blocks), room: None }
    }

    /// An overlay that keeps up to `room` bytes of written blocks in memory; a write past that fails.
    pub fn scratch(
        inner: Box<dyn BlockDevice>,
        block_size: u32,
        blocks: BTreeMap<u64, BlockSource>,
        room: usize,
    ) -> OverlayDevice {
        OverlayDevice { inner, block_size, blocks: RwLock::new(blocks), room: Some(Mutex::new(room)) }
    }

    /// The blocks the overlay replaces, as it now stands.
    pub fn into_blocks(self) -> BTreeMap<u64, BlockSource> {
        self.blocks.into_inner().unwrap_or_else(|p| p.into_inner())
    }

    /// The overlay as it now stands, for reading only.
    pub fn freeze(self) -> OverlayDevice {
        OverlayDevice { room: None, ..self }
    }

    fn blocks(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u64, BlockSource>> {
        self.blocks.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// The part of block `[start, start + bs)` inside `[offset, end)`: its byte range within the block, and
/// within a buffer that starts at `offset`; `None` when they do not meet.
fn overlap(start: u64, bs: u64, offset: u64, end: u64) -> Option<(std::ops::Range<usize>, std::ops::Range<usize>)> {
    let lo = start.max(offset);
    let hi = start.checked_add(bs)?.min(end);
    if lo >= hi {
        return None;
    }
    let from = |base: u64| -> Option<std::ops::Range<usize>> {
        Some(usize::try_from(lo.checked_sub(base)?).ok()?..usize::try_from(hi.checked_sub(base)?).ok()?)
    };
    Some((from(start)?, from(offset)?))
}

impl BlockDevice for OverlayDevice {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.inner.read_exact_at(buf, offset)?;
        let Some(end) = u64::try_from(buf.len()).ok().and_then(|len| offset.checked_add(len)) else { return Ok(()) };
        let bs = u64::from(self.block_size).max(1);
        let (first, last) = (offset.checked_div(bs).unwrap_or(0), end.div_ceil(bs));
        for (&nr, source) in self.blocks().range(first..last) {
            let Some((in_block, in_buf)) = nr.checked_mul(bs).and_then(|start| overlap(start, bs, offset, end)) else {
                continue;
            };
            let data = source.read(&*self.inner, self.block_size)?;
            if let (Some(dst), Some(src)) = (buf.get_mut(in_buf), data.get(in_block)) {
                dst.copy_from_slice(src);
            }
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        let Some(room) = &self.room else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ReadOnlyFilesystem,
                "replayed journal overlay is read-only",
            ));
        };
        let bs = u64::from(self.block_size).max(1);
        let end = u64::try_from(buf.len())
            .ok()
            .and_then(|len| offset.checked_add(len))
            .filter(|&e| e <= self.size())
            .ok_or(std::io::ErrorKind::InvalidInput)?;
        let mut room = room.lock().unwrap_or_else(|p| p.into_inner());
        let mut nr = offset.checked_div(bs).unwrap_or(0);
        // end <= the device size, so block starts up to it do not overflow.
        while let Some(start) = nr.checked_mul(bs).filter(|&start| start < end) {
            let mut block = vec![0u8; super::bytes::index(self.block_size)];
            self.read_exact_at(&mut block, start)?;
            let (in_block, in_buf) = overlap(start, bs, offset, end).ok_or(std::io::ErrorKind::InvalidInput)?;
            if let (Some(dst), Some(src)) = (block.get_mut(in_block), buf.get(in_buf)) {
                dst.copy_from_slice(src);
            }
            let mut blocks = self.blocks.write().unwrap_or_else(|p| p.into_inner());
            if !matches!(blocks.get(&nr), Some(BlockSource::Data(_))) {
                *room = room.checked_sub(block.len()).ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::OutOfMemory, "the in-memory overlay is full")
                })?;
            }
            blocks.insert(nr, BlockSource::Data(block));
            nr = nr.saturating_add(1);
        }
        Ok(())
    }

    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ext4::device::MemDevice;
    use crate::ext4::jbd2::JBD2_MAGIC;

    #[test]
    fn overlay_reads_replayed_blocks_over_the_device_at_any_alignment() {
        let inner: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        let mut blocks = BTreeMap::new();
        blocks.insert(1, BlockSource::Data(vec![0xAA; 1024]));
        // Block 3 replayed from a logged copy in block 2, whose magic number was escaped.
        blocks.insert(3, BlockSource::Log { pblk: 2, escaped: true });
        let dev = OverlayDevice::new(Box::new(MemDevice::new(inner.clone())), 1024, blocks);
        let mut expected = inner.clone();
        expected[1024..2048].fill(0xAA);
        expected[3072..4096].copy_from_slice(&inner[2048..3072]);
        expected[3072..3076].copy_from_slice(&JBD2_MAGIC.to_be_bytes());
        for (offset, len) in [(0usize, 4096usize), (1000, 100), (1024, 1024), (2040, 1040), (3071, 2), (0, 0)] {
            let mut buf = vec![0u8; len];
            dev.read_exact_at(&mut buf, offset as u64).unwrap();
            assert_eq!(buf, expected[offset..offset + len], "read of {len} bytes at {offset}");
        }
        assert!(dev.write_all_at(&[1], 0).is_err(), "the overlay must never write the image");
    }
}
