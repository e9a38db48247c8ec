//! The block device the engine reads: a trait, and its implementation over a file descriptor.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// A byte-addressed device. Implementations must be usable from several threads at once.
pub trait BlockDevice: Send + Sync {
    /// Fills `buf` from byte `offset`; bytes past the end of the device read as an error.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
    /// The device's size in bytes.
    fn size(&self) -> u64;
    /// Writes all of `buf` at byte `offset` (inside the device).
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()>;
    /// Makes everything written so far durable.
    fn flush(&self) -> std::io::Result<()>;
    /// As [`BlockDevice::read_exact_at`], for bytes another host may have written meanwhile (the MMP
    /// block): past any cache this host keeps of them.
    fn read_fresh(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.read_exact_at(buf, offset)
    }
    /// Tells the storage that `len` bytes at `offset` hold nothing (free blocks): an image file punches
    /// them out, so it takes no space. Devices that cannot answer `Unsupported`.
    fn discard(&self, _offset: u64, _len: u64) -> std::io::Result<()> {
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

/// An image file or block device, optionally starting `base` bytes in (a partition inside a disk image).
pub struct FileDevice {
    file: File,
    base: u64,
    size: u64,
    discard: Discard,
}

/// How a [`FileDevice`] passes a discard on to its storage.
#[derive(Clone, Copy)]
pub enum Discard {
    /// Not at all: the device answers `Unsupported` (a block device whose mount did not ask for
    /// `discard`).
    Off,
    /// By punching a hole in the file (an image file).
    PunchHole,
    /// By a call the owner supplies (a block device's BLKDISCARD, an ioctl the engine does not make),
    /// given the file and its absolute byte range.
    With(fn(&File, u64, u64) -> std::io::Result<()>),
}

impl FileDevice {
    /// Wraps an open file; `base` is the byte offset of the filesystem inside it.
    pub fn new(file: File, base: u64) -> std::io::Result<FileDevice> {
        let total = device_size(&file)?;
        let size = total.checked_sub(base).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "offset lies past the end of the image")
        })?;
        Ok(FileDevice { file, base, size, discard: Discard::PunchHole })
    }

    /// Wraps `len` bytes of an open file from byte `base` (a partition): nothing outside is read or written.
    pub fn with_range(file: File, base: u64, len: u64) -> std::io::Result<FileDevice> {
        let total = device_size(&file)?;
        if base.checked_add(len).is_none_or(|end| end > total) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the partition lies past the end of the image",
            ));
        }
        Ok(FileDevice { file, base, size: len, discard: Discard::PunchHole })
    }

    /// How discards reach the storage (punching holes unless told otherwise).
    pub fn discarding(mut self, how: Discard) -> FileDevice {
        self.discard = how;
        self
    }
}

/// The size of a regular file or block device (seeking to the end works for both).
fn device_size(file: &File) -> std::io::Result<u64> {
    use std::io::Seek;
    let mut f = file;
    f.seek(std::io::SeekFrom::End(0))
}

impl FileDevice {
    /// Fails unless `len` bytes at `offset` lie inside the device.
    /// Where device byte `offset` lies in the file (after the partition's or `offset=`'s start). Checked
    /// accesses end inside the device and base + size is within the file, so this does not fail for them.
    fn at(&self, offset: u64) -> std::io::Result<u64> {
        self.base.checked_add(offset).ok_or_else(|| std::io::ErrorKind::InvalidInput.into())
    }

    fn check(&self, offset: u64, len: usize) -> std::io::Result<()> {
        match u64::try_from(len).ok().and_then(|len| offset.checked_add(len)) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("access of {len} bytes at {offset} lies past the end of the device"),
            )),
        }
    }
}

impl BlockDevice for FileDevice {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.check(offset, buf.len())?;
        self.file.read_exact_at(buf, self.at(offset)?)
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.check(offset, buf.len())?;
        self.file.write_all_at(buf, self.at(offset)?)
    }

    fn flush(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    fn read_fresh(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.check(offset, buf.len())?;
        // Drops this host's cached pages of the range (they are clean: every write is flushed), so the
        // read goes to the device, where another host's write is.
        let at = i64::try_from(self.at(offset)?).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        let len = i64::try_from(buf.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
        posix_fadvise(&self.file, at, len, PosixFadviseAdvice::POSIX_FADV_DONTNEED).map_err(std::io::Error::from)?;
        self.file.read_exact_at(buf, self.at(offset)?)
    }

    fn discard(&self, offset: u64, len: u64) -> std::io::Result<()> {
        if matches!(self.discard, Discard::Off) {
            return Err(std::io::ErrorKind::Unsupported.into());
        }
        self.check(offset, usize::try_from(len).map_err(|_| std::io::ErrorKind::InvalidInput)?)?;
        let at = self.base.checked_add(offset).ok_or(std::io::ErrorKind::InvalidInput)?;
        match self.discard {
            Discard::Off => Err(std::io::ErrorKind::Unsupported.into()),
            Discard::PunchHole => {
                let at = i64::try_from(at).map_err(|_| std::io::ErrorKind::InvalidInput)?;
                let n = i64::try_from(len).map_err(|_| std::io::ErrorKind::InvalidInput)?;
                use nix::fcntl::{FallocateFlags, fallocate};
                let mode = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
                fallocate(&self.file, mode, at, n).map_err(std::io::Error::from)
            }
            Discard::With(call) => call(&self.file, at, len),
        }
    }
}

/// A device held in memory (tests and fuzzing).
pub struct MemDevice(pub std::sync::Mutex<Vec<u8>>);

impl MemDevice {
    pub fn new(bytes: Vec<u8>) -> MemDevice {
        MemDevice(std::sync::Mutex::new(bytes))
    }

    fn range(&self, offset: u64, len: usize) -> std::io::Result<std::ops::Range<usize>> {
        let start = usize::try_from(offset).map_err(|_| std::io::ErrorKind::UnexpectedEof)?;
        let end = start.checked_add(len).ok_or(std::io::ErrorKind::UnexpectedEof)?;
        if end > self.0.lock().map_or(0, |v| v.len()) {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(start..end)
    }
}

impl BlockDevice for MemDevice {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let r = self.range(offset, buf.len())?;
        let v = self.0.lock().map_err(|_| std::io::ErrorKind::Other)?;
        buf.copy_from_slice(&v[r]);
        Ok(())
    }

    fn size(&self) -> u64 {
        self.0.lock().map_or(0, |v| u64::try_from(v.len()).unwrap_or(u64::MAX))
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        let r = self.range(offset, buf.len())?;
        let mut v = self.0.lock().map_err(|_| std::io::ErrorKind::Other)?;
        v[r].copy_from_slice(buf);
        Ok(())
    }

    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}
