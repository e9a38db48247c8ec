//! The disk-image format around the filesystem: raw (the image is the filesystem, or a disk holding
//! it), or a VM disk format holding the virtual disk: qcow2 (QEMU, libvirt; `qcow2`, through imago),
//! VMDK (VMware, VirtualBox; `vmdk`), VHDX (Hyper-V, WSL's `ext4.vhdx`; `vhdx`) and Android sparse
//! images (`android_sparse`). The format is told by the image's magic number unless `-o format=` names
//! it. Like everything else read from the image, a format's metadata is parsed in the confined worker,
//! through [`Positioned`] (pread, pwrite and fdatasync on the descriptor the launcher opened: no paths,
//! so an image that needs another file, a backing file or a parent disk, is refused).
//!
//! qcow2 is read and written; VMDK, VHDX and Android sparse images are read only. [`Window`] narrows
//! any of them to a partition.
//! Formats not served (VHD, VDI) are recognised by their magic number and refused with the command that
//! converts them, rather than read as a filesystem that is not there.

mod android_sparse;
mod block_device;
mod error;
mod mapped;
mod qcow2;
mod qcow2_check;
mod vhdx;
mod vmdk;

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

pub use block_device::blkdiscard;
pub use error::{FormatNameError, ImageError};
pub use mapped::MappedDisk;
pub use qcow2::{ImageStorage, Qcow2Device};

use crate::ext4::BlockDevice;

/// `format=`: what the image file holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// Told by the magic number.
    #[default]
    Auto,
    Raw,
    Qcow2,
    Vmdk,
    Vhdx,
    /// Android's sparse image (`img2simg`, fastboot).
    Sparse,
}

impl Format {
    pub fn parse(v: &str) -> Result<Format, FormatNameError> {
        match v {
            "auto" => Ok(Format::Auto),
            "raw" => Ok(Format::Raw),
            "qcow2" => Ok(Format::Qcow2),
            "vmdk" => Ok(Format::Vmdk),
            "vhdx" => Ok(Format::Vhdx),
            "sparse" => Ok(Format::Sparse),
            "vpc" | "vhd" | "vdi" => Err(FormatNameError::NotServed(v.into())),
            _ => Err(FormatNameError::Unknown(v.into())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vhdx => "vhdx",
            Format::Sparse => "sparse",
        }
    }

    /// How the format is named to a user.
    fn title(self) -> &'static str {
        match self {
            Format::Auto | Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "VMDK",
            Format::Vhdx => "VHDX",
            Format::Sparse => "Android sparse",
        }
    }
}

/// How many of the image's first bytes [`detect`] wants.
pub const DETECT_BYTES: usize = 4096;

/// The format `first` (the image's first bytes, up to [`DETECT_BYTES`]) shows, for `format=auto`; an
/// error names a format that is known but not served, or a VMDK descriptor and the extent to mount.
pub fn detect(first: &[u8]) -> Result<Format, ImageError> {
    let served: [(&[u8], Format); 4] = [
        (b"QFI\xfb", Format::Qcow2),
        (b"KDMV", Format::Vmdk),
        (b"vhdxfile", Format::Vhdx),
        (&android_sparse::MAGIC.to_le_bytes(), Format::Sparse),
    ];
    let refused: [(&[u8], &'static str); 2] = [(b"conectix", "VHD (vpc)"), (b"COWD", "VMDK (ESX COW)")];
    // VDI's signature follows a 64-byte text line that names the program that made it.
    const VDI_SIGNATURE: u32 = 0xbeda_107f;
    if first.get(64..68).is_some_and(|s| s == VDI_SIGNATURE.to_le_bytes()) {
        return Err(ImageError::ImageNotServed("VDI (VirtualBox)"));
    }
    if let Some((_, f)) = served.iter().find(|(magic, _)| first.starts_with(magic)) {
        return Ok(*f);
    }
    if let Some((_, name)) = refused.iter().find(|(magic, _)| first.starts_with(magic)) {
        return Err(ImageError::ImageNotServed(name));
    }
    if first.starts_with(vmdk::DESCRIPTOR_MAGIC) {
        return Err(vmdk::descriptor_file_refusal(first));
    }
    Ok(Format::Raw)
}

/// Opens the virtual disk of an image in `format` (not raw): its metadata read and checked. qcow2 is
/// opened for writing when `writable` and the image can be written safely; everything else read-only.
/// The second value says why a `writable` disk is read-only.
pub fn open_virtual_disk<P: Positioned + 'static>(
    format: Format,
    image: P,
    writable: bool,
) -> Result<(Box<dyn BlockDevice>, Option<String>), ImageError> {
    let read_only =
        || writable.then(|| format!("{} images are served read-only (docs/usage.md, VM disks)", format.title()));
    Ok(match format {
        Format::Qcow2 => {
            let (disk, why) = Qcow2Device::open(image, writable)?;
            (Box::new(disk), why)
        }
        Format::Vmdk => (Box::new(MappedDisk::new(image, vmdk::Vmdk::open)?), read_only()),
        Format::Vhdx => (Box::new(MappedDisk::new(image, vhdx::Vhdx::open)?), read_only()),
        Format::Sparse => (Box::new(MappedDisk::new(image, android_sparse::Sparse::open)?), read_only()),
        Format::Auto | Format::Raw => return Err(ImageError::NoVirtualDisk),
    })
}

/// A window of `len` bytes from `base` of another device: a partition or an offset inside a virtual
/// disk.
pub struct Window<D> {
    inner: D,
    base: u64,
    size: u64,
}

impl<D: BlockDevice> Window<D> {
    pub fn new(inner: D, base: u64, len: u64) -> Result<Window<D>, ImageError> {
        if base.checked_add(len).is_none_or(|end| end > inner.size()) {
            return Err(ImageError::WindowPastEnd);
        }
        Ok(Window { inner, base, size: len })
    }

    fn at(&self, offset: u64, len: usize) -> io::Result<u64> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.size => Ok(self.base + offset),
            _ => Err(past_the_end(offset, len)),
        }
    }
}

fn past_the_end(offset: u64, len: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("access of {len} bytes at {offset} lies past the end of the device"),
    )
}

impl<D: BlockDevice> BlockDevice for Window<D> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_exact_at(buf, self.at(offset, buf.len())?)
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_all_at(buf, self.at(offset, buf.len())?)
    }
    fn flush(&self) -> io::Result<()> {
        self.inner.flush()
    }
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        let n = usize::try_from(len).map_err(|_| past_the_end(offset, usize::MAX))?;
        self.inner.discard(self.at(offset, n)?, len)
    }
}

impl BlockDevice for Box<dyn BlockDevice> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        (**self).write_all_at(buf, offset)
    }
    fn flush(&self) -> io::Result<()> {
        (**self).flush()
    }
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        (**self).discard(offset, len)
    }
}

/// Fills `buf` from `offset` of `image`; the image ending first is an error.
fn read_exact(image: &dyn Positioned, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let at = offset.checked_add(done as u64).ok_or_else(|| past_the_end(offset, buf.len()))?;
        match image.read_at(&mut buf[done..], at) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the image ends inside {} bytes at {offset}", buf.len()),
                ));
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Where an image's bytes are: its descriptor (or, for fuzzing and tests, memory).
pub trait Positioned: Send + Sync {
    /// Reads from `offset`; 0 at the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// The image's length in bytes.
    fn byte_len(&self) -> io::Result<u64>;
    fn sync(&self) -> io::Result<()>;
    /// Gives `len` bytes at `offset` back to the storage (they read as zeros afterwards), keeping the
    /// length: a format's freed clusters no longer take space in the image file.
    fn punch(&self, offset: u64, len: u64) -> io::Result<()>;
}

impl<T: Positioned + ?Sized> Positioned for std::sync::Arc<T> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        (**self).read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        (**self).write_all_at(buf, offset)
    }
    fn byte_len(&self) -> io::Result<u64> {
        (**self).byte_len()
    }
    fn sync(&self) -> io::Result<()> {
        (**self).sync()
    }
    fn punch(&self, offset: u64, len: u64) -> io::Result<()> {
        (**self).punch(offset, len)
    }
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
    fn punch(&self, offset: u64, len: u64) -> io::Result<()> {
        let at = i64::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let n = i64::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        use nix::fcntl::{FallocateFlags, fallocate};
        let mode = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        fallocate(self, mode, at, n).map_err(io::Error::from)
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
    fn punch(&self, offset: u64, len: u64) -> io::Result<()> {
        let mut v = self.bytes.lock().map_err(|_| io::Error::other("poisoned"))?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(v.len());
        let end = usize::try_from(offset.saturating_add(len)).unwrap_or(usize::MAX).min(v.len());
        v[start..end.max(start)].fill(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_magic_number() {
        assert_eq!(detect(b"QFI\xfb\0\0\0\x03").ok(), Some(Format::Qcow2));
        assert_eq!(detect(b"KDMV\x01\0\0\0").ok(), Some(Format::Vmdk));
        assert_eq!(detect(b"vhdxfile").ok(), Some(Format::Vhdx));
        assert_eq!(detect(&[0x3a, 0xff, 0x26, 0xed, 1, 0]).ok(), Some(Format::Sparse));
        assert_eq!(detect(&[0u8; 2048]).ok(), Some(Format::Raw));
        let mut vdi = [0u8; 72];
        vdi[64..68].copy_from_slice(&0xbeda_107fu32.to_le_bytes());
        for (magic, word) in [(&b"conectix"[..], "VHD"), (&vdi[..], "VDI")] {
            let e = detect(magic).unwrap_err();
            assert!(matches!(e, ImageError::ImageNotServed(_)), "{e:?}");
            let e = e.to_string();
            assert!(e.contains(word) && e.contains("qemu-img convert"), "{e}");
        }
        assert!(
            detect(b"# Disk DescriptorFile\nRW 8 FLAT \"x-flat.vmdk\" 0\n")
                .unwrap_err()
                .to_string()
                .contains("x-flat.vmdk")
        );
        assert_eq!(Format::parse("sparse").ok(), Some(Format::Sparse));
        assert!(matches!(Format::parse("vpc"), Err(FormatNameError::NotServed(_))));
        assert!(Format::parse("vpc").unwrap_err().to_string().contains("not supported yet"));
        assert!(matches!(Format::parse("floppy"), Err(FormatNameError::Unknown(_))));
    }
}
