//! qcow2, QEMU's and libvirt's format, read through `imago` (a Rust library for VM disk images by a
//! QEMU block-layer maintainer). Served read-only for now: fuzzing imago 0.2.6 found that allocating a
//! cluster in a damaged image can recurse until the stack overflows, which no error path can catch, and
//! a panic on a damaged header, which [`guarded`] turns into an error. imago reads the image only
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
        Ok(Qcow2Device { access, size })
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
        if offset.checked_add(buf.len() as u64).is_none_or(|end| end > self.size) {
            return Err(super::past_the_end(offset, buf.len()));
        }
        guarded("a read", || self.access.read(buf, offset))
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
