//! qcow2, QEMU's and libvirt's format, read through `imago` (a Rust library for VM disk images by a
//! QEMU block-layer maintainer), read and written. Fuzzing imago 0.2.6 found that allocating a cluster
//! in a damaged image can recurse until the stack overflows, which no error path can catch: so an image
//! is written only after it passes `qcow2_check` (its refcounts agree with its metadata), and is
//! served read-only otherwise. It also found a panic on a damaged header, which [`guarded`] turns into
//! an error. imago reads the image only
//! through [`ImageStorage`], which does nothing but pread, pwrite and fdatasync on the descriptor the
//! launcher opened (no paths, so a backing file is refused: it would have to be opened by name).

use std::fmt;
use std::fs::File;
use std::io;

use imago::io_buffers::{IoVector, IoVectorMut};
use imago::qcow2::Qcow2;
use imago::storage::drivers::CommonStorageHelper;
use imago::{DenyImplicitOpenGate, FormatAccess, FormatDriverBuilder, Storage};

use super::Positioned;
use super::qcow2_check::check_for_writing;
use crate::ext4::BlockDevice;

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

/// A qcow2 image as the engine's device: its guest view (the virtual disk).
pub struct Qcow2Device<P: Positioned + 'static = File> {
    access: FormatAccess<ImageStorage<P>>,
    size: u64,
    writable: bool,
}

impl<P: Positioned + 'static> Qcow2Device<P> {
    /// Opens `image` as qcow2: its header and tables are read and checked by imago. A backing file, an
    /// external data file or an unknown incompatible feature (the dirty and corrupt bits among them)
    /// fails here. For `writable`, the image must first pass [`check_for_writing`]; if it does not, it
    /// is opened read-only and the second value says why.
    pub fn open(image: P, writable: bool) -> Result<(Qcow2Device<P>, Option<String>), String> {
        let refused = match writable {
            true => check_for_writing(&image).err().map(|why| {
                format!("the qcow2 image cannot be written safely ({why}); `qemu-img check -r all` may repair it")
            }),
            false => None,
        };
        let write = writable && refused.is_none();
        let qcow2 = guarded("opening it", || {
            Qcow2::<ImageStorage<P>>::builder(ImageStorage::new(image))
                .write(write)
                .open(DenyImplicitOpenGate::default())
        })
        .map_err(|e| format!("cannot open the qcow2 image: {e}"))?;
        let access = FormatAccess::new(qcow2);
        let size = access.size();
        Ok((Qcow2Device { access, size, writable: write }, refused))
    }

    fn check(&self, offset: u64, len: usize) -> io::Result<()> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(super::past_the_end(offset, len)),
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
        self.check(offset, buf.len())?;
        guarded("a read", || self.access.read(buf, offset))
    }

    fn size(&self) -> u64 {
        self.size
    }

    /// Writes through imago, which allocates clusters and updates the L2 tables and refcounts in its
    /// caches; [`flush`](Self::flush) writes those out.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::from_raw_os_error(libc::EROFS));
        }
        self.check(offset, buf.len())?;
        guarded("a write", || self.access.write(buf, offset))
    }

    /// Writes imago's cached metadata (refcount blocks before the L2 tables that need them), then
    /// fdatasync: the engine's journal commits rely on this ordering point.
    fn flush(&self) -> io::Result<()> {
        if !self.writable {
            return Ok(());
        }
        guarded("a flush", || {
            self.access.flush()?;
            self.access.sync()
        })
    }
}
