//! The disk-image format around the filesystem: raw (the image is the filesystem, or a disk holding
//! it), or qcow2, QEMU's and libvirt's format, read through `imago` (a Rust library for VM disk images
//! by a QEMU block-layer maintainer). qcow2 is served read-only for now: fuzzing imago 0.2.6 found that
//! allocating a cluster in a damaged image can recurse until the stack overflows, which no error path
//! can catch, and a panic on a damaged header, which [`guarded`] turns into an error. The format is told by the image's magic number unless
//! `-o format=` names it. Like everything else read from the image, a format's metadata is parsed in the
//! confined worker: imago reads and writes the image only through [`ImageStorage`], which does nothing
//! but pread, pwrite and fdatasync on the descriptor the launcher opened (no paths, so a qcow2 backing
//! file is refused: it would have to be opened by name).
//!
//! Other VM formats are recognised by their magic number and refused with the command that converts
//! them, rather than read as a filesystem that is not there.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use imago::io_buffers::{IoVector, IoVectorMut};
use imago::qcow2::Qcow2;
use imago::storage::drivers::CommonStorageHelper;
use imago::{DenyImplicitOpenGate, FormatAccess, FormatDriverBuilder, Storage};

use crate::ext4::BlockDevice;

/// `format=`: what the image file holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// Told by the magic number.
    #[default]
    Auto,
    Raw,
    Qcow2,
}

impl Format {
    pub fn parse(v: &str) -> Result<Format, String> {
        match v {
            "auto" => Ok(Format::Auto),
            "raw" => Ok(Format::Raw),
            "qcow2" => Ok(Format::Qcow2),
            "vmdk" | "vhdx" | "vpc" | "vdi" | "sparse" => Err(format!("format={v}: {}", not_yet(v))),
            _ => Err(format!("format={v}: auto, raw or qcow2")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
        }
    }
}

fn not_yet(format: &str) -> String {
    format!("{format} images are not supported yet; convert one first: qemu-img convert -O raw IMAGE image.raw")
}

/// The format `first` (the image's first bytes) shows, for `format=auto`; an error names a format that
/// is known but not served.
pub fn detect(first: &[u8]) -> Result<Format, String> {
    const QCOW2: &[u8] = b"QFI\xfb";
    let known: [(&[u8], &str); 4] = [
        (b"KDMV", "VMDK (sparse)"),
        (b"vhdxfile", "VHDX"),
        (b"conectix", "VHD (vpc)"),
        (&[0x3a, 0xff, 0x26, 0xed], "Android sparse"),
    ];
    if first.starts_with(QCOW2) {
        return Ok(Format::Qcow2);
    }
    for (magic, name) in known {
        if first.starts_with(magic) {
            return Err(format!("the image is a {}", not_yet(name)));
        }
    }
    Ok(Format::Raw)
}

/// Where an image's bytes are: its descriptor (or, for fuzzing and tests, memory).
pub trait Positioned: Send + Sync {
    /// Reads from `offset`; 0 at the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// The image's length in bytes.
    fn byte_len(&self) -> io::Result<u64>;
    fn sync(&self) -> io::Result<()>;
}

impl Positioned for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }
    fn byte_len(&self) -> io::Result<u64> {
        use std::io::Seek;
        let mut f = self;
        f.seek(io::SeekFrom::End(0))
    }
    fn sync(&self) -> io::Result<()> {
        self.sync_data()
    }
}

/// An image in memory that grows as it is written, up to a bound (fuzzing and tests).
pub struct MemImage {
    bytes: std::sync::Mutex<Vec<u8>>,
    limit: usize,
}

impl MemImage {
    pub fn new(bytes: Vec<u8>, limit: usize) -> MemImage {
        MemImage { bytes: std::sync::Mutex::new(bytes), limit }
    }
}

impl Positioned for MemImage {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let v = self.bytes.lock().map_err(|_| io::Error::other("poisoned"))?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(v.len());
        let n = buf.len().min(v.len() - start);
        buf[..n].copy_from_slice(&v[start..start + n]);
        Ok(n)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut v = self.bytes.lock().map_err(|_| io::Error::other("poisoned"))?;
        let start = usize::try_from(offset).map_err(|_| io::Error::other("offset too large"))?;
        let end =
            start.checked_add(buf.len()).filter(|&e| e <= self.limit).ok_or_else(|| io::Error::other("image full"))?;
        if v.len() < end {
            v.resize(end, 0);
        }
        v[start..end].copy_from_slice(buf);
        Ok(())
    }
    fn byte_len(&self) -> io::Result<u64> {
        Ok(self.bytes.lock().map_err(|_| io::Error::other("poisoned"))?.len() as u64)
    }
    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}

/// An image as imago's storage: positioned reads and writes and fdatasync, nothing else (the confined
/// worker's seccomp policy allows no more, and no path is ever opened).
pub struct ImageStorage<P> {
    image: P,
    helper: CommonStorageHelper,
}

impl<P> ImageStorage<P> {
    pub fn new(image: P) -> ImageStorage<P> {
        ImageStorage { image, helper: CommonStorageHelper::default() }
    }
}

impl<P> fmt::Debug for ImageStorage<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageStorage").finish_non_exhaustive()
    }
}

impl<P> fmt::Display for ImageStorage<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("image")
    }
}

impl<P: Positioned + 'static> Storage for ImageStorage<P> {
    fn size(&self) -> io::Result<u64> {
        self.image.byte_len()
    }

    /// Fills every buffer; past the end of the image with zeroes, as the trait asks.
    unsafe fn pure_readv(&self, bufv: IoVectorMut<'_>, offset: u64) -> io::Result<()> {
        let mut at = offset;
        for mut slice in bufv.into_inner() {
            let buf: &mut [u8] = &mut slice;
            let mut done = 0;
            while done < buf.len() {
                let pos = at.checked_add(done as u64).ok_or_else(|| io::Error::other("read offset overflows"))?;
                match self.image.read_at(&mut buf[done..], pos) {
                    Ok(0) => {
                        buf[done..].fill(0);
                        break;
                    }
                    Ok(n) => done += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            at = at.checked_add(buf.len() as u64).ok_or_else(|| io::Error::other("read offset overflows"))?;
        }
        Ok(())
    }

    unsafe fn pure_writev(&self, bufv: IoVector<'_>, offset: u64) -> io::Result<()> {
        let mut at = offset;
        for slice in bufv.into_inner() {
            self.image.write_all_at(&slice, at)?;
            at = at.checked_add(slice.len() as u64).ok_or_else(|| io::Error::other("write offset overflows"))?;
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        // Writes go straight to the image: nothing is buffered here.
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.image.sync()
    }

    unsafe fn invalidate_cache(&self) -> io::Result<()> {
        Ok(())
    }

    fn get_storage_helper(&self) -> &CommonStorageHelper {
        &self.helper
    }
}

/// A qcow2 image as the engine's device: its guest view (the virtual disk), optionally a window of it
/// (a partition, an offset).
pub struct Qcow2Device<P: Positioned + 'static = File> {
    access: FormatAccess<ImageStorage<P>>,
    base: u64,
    size: u64,
}

impl<P: Positioned + 'static> Qcow2Device<P> {
    /// Opens `image` as qcow2, read-only (see the module comment): its header and tables are read and
    /// checked by imago. A backing file, an external data file or an unknown incompatible feature fails
    /// here.
    pub fn open(image: P) -> Result<Qcow2Device<P>, String> {
        let qcow2 = guarded("opening it", || {
            Qcow2::<ImageStorage<P>>::builder(ImageStorage::new(image))
                .write(false)
                .open(DenyImplicitOpenGate::default())
        })
        .map_err(|e| format!("cannot open the qcow2 image: {e}"))?;
        let access = FormatAccess::new(qcow2);
        let size = access.size();
        Ok(Qcow2Device { access, base: 0, size })
    }

    /// The guest view's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Narrows the device to `len` bytes from `base` of the virtual disk.
    pub fn window(mut self, base: u64, len: u64) -> Result<Qcow2Device<P>, String> {
        if base.checked_add(len).is_none_or(|end| end > self.size) {
            return Err("the partition or offset lies past the end of the qcow2 image's virtual disk".into());
        }
        self.base = base;
        self.size = len;
        Ok(self)
    }

    fn at(&self, offset: u64, len: usize) -> io::Result<u64> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.size => Ok(self.base + offset),
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("access of {len} bytes at {offset} lies past the end of the device"),
            )),
        }
    }
}

/// Runs a call into imago, turning a panic into an error: imago 0.2.6 panics on some damaged headers
/// (a header extension cut short, found by the fuzz target `qcow2_image`), and the worker must answer
/// a damaged image with an error, not die of it.
fn guarded<T>(what: &str, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            Err(io::Error::new(io::ErrorKind::InvalidData, format!("the qcow2 image is damaged ({what} failed)")))
        }
    }
}

impl<P: Positioned + 'static> BlockDevice for Qcow2Device<P> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let at = self.at(offset, buf.len())?;
        guarded("a read", || self.access.read(buf, at))
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn write_all_at(&self, _buf: &[u8], _offset: u64) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::EROFS))
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_magic_number() {
        assert_eq!(detect(b"QFI\xfb\0\0\0\x03"), Ok(Format::Qcow2));
        assert_eq!(detect(&[0u8; 2048]), Ok(Format::Raw));
        for (magic, word) in [
            (&b"KDMV\x01\0\0\0"[..], "VMDK"),
            (b"vhdxfile", "VHDX"),
            (b"conectix", "VHD"),
            (&[0x3a, 0xff, 0x26, 0xed], "Android sparse"),
        ] {
            let e = detect(magic).unwrap_err();
            assert!(e.contains(word) && e.contains("qemu-img convert"), "{e}");
        }
        assert_eq!(Format::parse("qcow2"), Ok(Format::Qcow2));
        assert!(Format::parse("vmdk").unwrap_err().contains("not supported yet"));
        assert!(Format::parse("floppy").is_err());
    }
}
