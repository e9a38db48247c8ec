//! The block device the engine reads: a trait, and its implementation over a file descriptor.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// A byte-addressed device. Implementations must be usable from several threads at once.
pub trait BlockDevice: Send + Sync {
    /// Fills `buf` from byte `offset`; bytes past the end of the device read as an error.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
    /// The device's size in bytes.
    fn size(&self) -> u64;
}

/// An image file or block device, optionally starting `base` bytes in (a partition inside a disk image).
pub struct FileDevice {
    file: File,
    base: u64,
    size: u64,
}

impl FileDevice {
    /// Wraps an open file; `base` is the byte offset of the filesystem inside it.
    pub fn new(file: File, base: u64) -> std::io::Result<FileDevice> {
        let total = device_size(&file)?;
        let size = total.checked_sub(base).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "offset lies past the end of the image")
        })?;
        Ok(FileDevice { file, base, size })
    }
}

/// The size of a regular file or block device (seeking to the end works for both).
fn device_size(file: &File) -> std::io::Result<u64> {
    use std::io::Seek;
    let mut f = file;
    f.seek(std::io::SeekFrom::End(0))
}

impl BlockDevice for FileDevice {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let len = buf.len() as u64;
        match offset.checked_add(len) {
            Some(end) if end <= self.size => {}
            _ => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("read of {len} bytes at {offset} lies past the end of the device"),
                ));
            }
        }
        // Cannot overflow: offset + len <= size and base + size is the file's size.
        self.file.read_exact_at(buf, self.base + offset)
    }

    fn size(&self) -> u64 {
        self.size
    }
}

/// A device held in memory (tests and fuzzing).
pub struct MemDevice(pub Vec<u8>);

impl BlockDevice for MemDevice {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| std::io::ErrorKind::UnexpectedEof)?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.0.get(start..end))
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn size(&self) -> u64 {
        self.0.len() as u64
    }
}
