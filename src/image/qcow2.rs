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
use std::sync::{Arc, RwLock, RwLockReadGuard};

use imago::io_buffers::{IoVector, IoVectorMut};
use imago::qcow2::Qcow2;
use imago::storage::drivers::CommonStorageHelper;
use imago::{DenyImplicitOpenGate, FormatAccess, FormatDriverBuilder, Mapping, Storage};

use super::qcow2_check::check_for_writing;
use super::{ImageError, Positioned};
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
    /// Reads and writes share it; a discard holds it alone, because freeing clusters breaks the
    /// mappings a concurrent read or write may hold (imago asks for `&mut` there).
    access: RwLock<FormatAccess<ImageStorage<Arc<P>>>>,
    /// The image imago's storage holds too, for punching freed clusters out (imago frees them in
    /// its refcounts only).
    image: Arc<P>,
    size: u64,
    cluster: u64,
    writable: bool,
}

/// A discard frees this much of the virtual disk at a time: it bounds the host ranges remembered
/// between learning where the clusters are and punching them out.
const DISCARD_CHUNK: u64 = 64 << 20;

impl<P: Positioned + 'static> Qcow2Device<P> {
    /// Opens `image` as qcow2: its header and tables are read and checked by imago. A backing file, an
    /// external data file or an unknown incompatible feature (the dirty and corrupt bits among them)
    /// fails here. For `writable`, the image must first pass `check_for_writing`; if it does not, it
    /// is opened read-only and the second value says why.
    pub fn open(image: P, writable: bool) -> Result<(Qcow2Device<P>, Option<String>), ImageError> {
        let refused = match writable {
            true => check_for_writing(&image).err().map(|why| {
                format!("the qcow2 image cannot be written safely ({why}); `qemu-img check -r all` may repair it")
            }),
            false => None,
        };
        let write = writable && refused.is_none();
        let mut header = [0u8; 24];
        super::read_exact(&image, &mut header, 0).map_err(ImageError::Qcow2Header)?;
        let cluster_bits = u32::from_be_bytes([header[20], header[21], header[22], header[23]]);
        let image = Arc::new(image);
        let qcow2 = guarded("opening it", || {
            Qcow2::<ImageStorage<Arc<P>>>::builder(ImageStorage::new(image.clone()))
                .write(write)
                .open(DenyImplicitOpenGate::default())
        })
        .map_err(ImageError::Qcow2)?;
        let access = FormatAccess::new(qcow2);
        let size = access.size();
        // imago opened it, so the cluster size is one qcow2 allows (512 B to 2 MiB).
        let cluster = 1u64
            .checked_shl(cluster_bits)
            .filter(|c| (512..=2 << 20).contains(c))
            .ok_or_else(|| ImageError::Damaged { format: "qcow2", what: "cluster size".into() })?;
        Ok((Qcow2Device { access: RwLock::new(access), image, size, cluster, writable: write }, refused))
    }

    fn access(&self) -> io::Result<RwLockReadGuard<'_, FormatAccess<ImageStorage<Arc<P>>>>> {
        self.access.read().map_err(|_| io::Error::other("the qcow2 device is poisoned"))
    }

    /// Frees the whole clusters of `[start, end)` of the virtual disk (they read as zeros afterwards:
    /// there is no backing file) and punches the host clusters that held them out of the image file.
    /// A host cluster is punched only when its mapping is writable, i.e. referenced by this one guest
    /// cluster (qcow2's COPIED flag; `qcow2_check` refuses images whose data clusters are shared), and
    /// only after the mapping is gone, under the lock no read or write holds meanwhile.
    fn discard_clusters(&self, start: u64, end: u64) -> io::Result<()> {
        let mut access = self.access.write().map_err(|_| io::Error::other("the qcow2 device is poisoned"))?;
        let mut host: Vec<(u64, u64)> = Vec::new();
        let mut at = start;
        while at < end {
            let (mapping, n) = access.get_mapping(at, end - at)?;
            if n == 0 {
                break;
            }
            if let Mapping::Raw { offset, writable: true, .. } = mapping {
                match host.last_mut() {
                    Some((s, l)) if *s + *l == offset => *l += n,
                    _ => host.push((offset, n)),
                }
            }
            at += n;
        }
        access.discard_to_backing(start, end - start)?;
        for (offset, len) in host {
            match self.image.punch(offset, len) {
                Ok(()) => {}
                // The clusters are free either way; only the space stays taken.
                Err(e) if e.kind() == io::ErrorKind::Unsupported => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
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
        let access = self.access()?;
        guarded("a read", || access.read(buf, offset))
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
        let access = self.access()?;
        guarded("a write", || access.write(buf, offset))
    }

    /// Writes imago's cached metadata (refcount blocks before the L2 tables that need them), then
    /// fdatasync: the engine's journal commits rely on this ordering point.
    fn flush(&self) -> io::Result<()> {
        if !self.writable {
            return Ok(());
        }
        let access = self.access()?;
        guarded("a flush", || {
            access.flush()?;
            access.sync()
        })
    }

    /// Frees the whole clusters inside the range (`fstrim`, `-o discard`); the parts of a cluster at
    /// either end keep their data, as a discard allows. With no backing file (refused), a freed
    /// cluster reads as zeros, on qcow2 v2 images too.
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        if !self.writable {
            return Err(io::ErrorKind::Unsupported.into());
        }
        self.check(offset, usize::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?)?;
        let start = offset.next_multiple_of(self.cluster);
        let end = (offset + len) / self.cluster * self.cluster;
        let mut at = start;
        while at < end {
            let n = (end - at).min(DISCARD_CHUNK);
            guarded("a discard", || self.discard_clusters(at, at + n))?;
            at += n;
        }
        Ok(())
    }
}
