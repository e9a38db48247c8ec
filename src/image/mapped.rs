//! Formats that map the virtual disk onto the image file piece by piece (VMDK's grains, VHDX's blocks,
//! Android sparse chunks): each format is a [`Layout`] that says what holds a given virtual byte, and
//! [`MappedDisk`] reads through it. Tables the lookups need (grain tables, the block allocation table)
//! are read through a [`PageCache`] of a bounded number of 4 KiB pages, so no image, however large or
//! damaged, makes the worker hold more than a fixed amount of its metadata.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex};

use super::{ImageError, Positioned, past_the_end, read_exact};
use crate::ext4::BlockDevice;

/// What holds a run of the virtual disk.
pub(super) enum Piece {
    /// The bytes are stored in the image file from this offset on.
    Stored(u64),
    /// Never written: zeros.
    Zero,
    /// A 4-byte pattern repeated, aligned to the virtual disk (Android's fill chunks).
    Fill([u8; 4]),
    /// The bytes are these (a decompressed grain) from this index on.
    Inflated(Arc<[u8]>, usize),
}

/// A format's map of its virtual disk.
pub(super) trait Layout: Send + Sync {
    /// The virtual disk's size in bytes.
    fn size(&self) -> u64;
    /// What holds the virtual disk from `offset` (inside it) on, and for how many bytes (at least 1,
    /// at most `max`). `image` is the image file.
    fn piece(&self, image: &dyn Positioned, offset: u64, max: u64) -> io::Result<(Piece, u64)>;
}

/// The virtual disk of an image whose format is a `Layout`, as the engine's (read-only) device.
pub struct MappedDisk<P> {
    image: P,
    layout: Box<dyn Layout>,
}

impl<P: Positioned> MappedDisk<P> {
    /// Opens `image` with `open`, the format's reader of its headers and tables.
    pub(super) fn new<L: Layout + 'static>(
        image: P,
        open: impl FnOnce(&dyn Positioned) -> Result<L, ImageError>,
    ) -> Result<MappedDisk<P>, ImageError> {
        let layout = Box::new(open(&image)?);
        Ok(MappedDisk { image, layout })
    }
}

impl<P: Positioned> BlockDevice for MappedDisk<P> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if offset.checked_add(buf.len() as u64).is_none_or(|end| end > self.layout.size()) {
            return Err(past_the_end(offset, buf.len()));
        }
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let want = (buf.len() - done) as u64;
            let (piece, n) = self.layout.piece(&self.image, at, want)?;
            let n = usize::try_from(n.min(want)).unwrap_or(0);
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "the image's map covers no bytes here"));
            }
            let out = &mut buf[done..done + n];
            match piece {
                Piece::Stored(from) => read_exact(&self.image, out, from)?,
                Piece::Zero => out.fill(0),
                Piece::Fill(pattern) => {
                    for (i, b) in out.iter_mut().enumerate() {
                        *b = pattern[((at + i as u64) % 4) as usize];
                    }
                }
                Piece::Inflated(bytes, from) => {
                    let src = from.checked_add(n).and_then(|end| bytes.get(from..end)).ok_or_else(|| {
                        io::Error::new(io::ErrorKind::InvalidData, "a decompressed grain is shorter than its map")
                    })?;
                    out.copy_from_slice(src);
                }
            }
            done += n;
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        self.layout.size()
    }

    fn write_all_at(&self, _buf: &[u8], _offset: u64) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::EROFS))
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

const PAGE: usize = 4096;
/// Pages kept: 1 MiB of tables, the grain tables or BAT entries of a few GiB of virtual disk.
const PAGES: usize = 256;

/// A bounded cache of 4 KiB pages of the image file, for the little-endian table entries lookups read.
#[derive(Default)]
pub(super) struct PageCache {
    pages: Mutex<Pages>,
}

/// The pages held, by page number, and the order they came in (the oldest leaves first).
type Pages = (HashMap<u64, Arc<[u8]>>, VecDeque<u64>);

impl PageCache {
    /// The little-endian u32 at `offset` of the image.
    pub(super) fn u32_at(&self, image: &dyn Positioned, offset: u64) -> io::Result<u32> {
        let mut b = [0u8; 4];
        self.read(image, offset, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// The little-endian u64 at `offset` of the image.
    pub(super) fn u64_at(&self, image: &dyn Positioned, offset: u64) -> io::Result<u64> {
        let mut b = [0u8; 8];
        self.read(image, offset, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn read(&self, image: &dyn Positioned, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let page_no = offset / PAGE as u64;
        let within = (offset % PAGE as u64) as usize;
        if within + out.len() > PAGE {
            return read_exact(image, out, offset);
        }
        let page = self.page(image, page_no)?;
        let src = page.get(within..within + out.len()).ok_or_else(|| {
            io::Error::new(io::ErrorKind::UnexpectedEof, format!("a table entry at {offset} lies past the image's end"))
        })?;
        out.copy_from_slice(src);
        Ok(())
    }

    /// Page `n` of the image, as much of it as the image holds.
    fn page(&self, image: &dyn Positioned, n: u64) -> io::Result<Arc<[u8]>> {
        if let Some(p) = self.lock()?.0.get(&n) {
            return Ok(p.clone());
        }
        let mut buf = vec![0u8; PAGE];
        let mut len = 0;
        let start = n.checked_mul(PAGE as u64).ok_or_else(|| past_the_end(u64::MAX, PAGE))?;
        while len < PAGE {
            match image.read_at(&mut buf[len..], start + len as u64) {
                Ok(0) => break,
                Ok(k) => len += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(len);
        let page: Arc<[u8]> = buf.into();
        let mut guard = self.lock()?;
        let (map, order) = &mut *guard;
        if map.insert(n, page.clone()).is_none() {
            order.push_back(n);
            while order.len() > PAGES {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
        }
        Ok(page)
    }

    fn lock(&self) -> io::Result<std::sync::MutexGuard<'_, Pages>> {
        self.pages.lock().map_err(|_| io::Error::other("the image's page cache is poisoned"))
    }
}

/// Little-endian integer fields of a header already read into memory (its size checked by the caller;
/// a field past its end reads as 0, never a panic).
pub(super) fn le_u16(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2).and_then(|s| s.try_into().ok()).map_or(0, u16::from_le_bytes)
}
pub(super) fn le_u32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).and_then(|s| s.try_into().ok()).map_or(0, u32::from_le_bytes)
}
pub(super) fn le_u64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).and_then(|s| s.try_into().ok()).map_or(0, u64::from_le_bytes)
}
