//! VMDK's hosted sparse extent (VMware's "Virtual Disk Format 1.1"; `monolithicSparse` and
//! `streamOptimized`, as VMware, VirtualBox and `qemu-img` write them): a 512-byte header ("KDMV"), an
//! embedded text descriptor, a grain directory of sector offsets of grain tables, and grain tables of
//! sector offsets of grains (0: never written, 1: zeroed). In a `streamOptimized` image the grain
//! directory's place is in a footer, a copy of the header at the image's end, and grains are
//! zlib-compressed behind a 12-byte marker.
//!
//! A VMDK in several files (a descriptor file beside its extents, `twoGbMaxExtent*`) or with a parent
//! (a delta link) needs other files opened by name, which the worker cannot: the first is refused
//! naming the file to mount instead, the others naming the command that joins them.

use std::io;
use std::sync::{Arc, Mutex};

use super::mapped::{Layout, PageCache, Piece, le_u16, le_u32, le_u64};
use super::{ImageError, Positioned, read_exact};

/// How a VMDK descriptor file (text) begins.
pub const DESCRIPTOR_MAGIC: &[u8] = b"# Disk DescriptorFile";
const MAGIC: &[u8] = b"KDMV";
const SECTOR: u64 = 512;
const FLAG_COMPRESSED: u32 = 1 << 16;
const FLAG_MARKERS: u32 = 1 << 17;
const COMPRESS_DEFLATE: u16 = 1;
/// The grain directory's offset when it is in the footer.
const GD_AT_END: u64 = u64::MAX;
/// VMware writes 64 KiB grains; up to 1 MiB is read (a compressed grain is held decompressed).
const MAX_GRAIN_SECTORS: u64 = 2048;
/// VMware writes 512 entries per grain table, and qemu reads no more.
const MAX_GTES: u32 = 512;
/// The embedded descriptor is read when it is at most this long (it is a few hundred bytes).
const MAX_DESCRIPTOR: u64 = 64 << 10;
/// Decompressed grains kept, for the reads of one grain's blocks after another.
const GRAINS_KEPT: usize = 16;

pub(super) struct Vmdk {
    capacity: u64,
    grain: u64,
    gtes: u64,
    gd: u64,
    gd_entries: u64,
    compressed: bool,
    tables: PageCache,
    grains: Mutex<Vec<(u64, Arc<[u8]>)>>,
}

fn bad(what: impl std::fmt::Display) -> ImageError {
    ImageError::Damaged { format: "VMDK", what: what.to_string() }
}

impl Vmdk {
    pub(super) fn open(image: &dyn Positioned) -> Result<Vmdk, ImageError> {
        let len = image.byte_len().map_err(ImageError::Unreadable)?;
        let mut h = [0u8; SECTOR as usize];
        read_exact(image, &mut h, 0).map_err(|e| bad(format!("its header: {e}")))?;
        if !h.starts_with(MAGIC) {
            return Err(bad("no sparse extent magic number"));
        }
        let version = le_u32(&h, 4);
        if !(1..=3).contains(&version) {
            return Err(ImageError::Version { format: "VMDK sparse extent", version, supported: "1 to 3 are" });
        }
        check_descriptor(image, &h)?;
        if le_u64(&h, 56) == GD_AT_END {
            // streamOptimized: the header to use is the footer's, 1024 bytes before the end (after a
            // footer marker, before the end-of-stream marker).
            let at = len.checked_sub(2 * SECTOR).ok_or_else(|| bad("no footer"))?;
            read_exact(image, &mut h, at).map_err(|e| bad(format!("its footer: {e}")))?;
            if !h.starts_with(MAGIC) || le_u64(&h, 56) == GD_AT_END {
                return Err(bad("the footer holds no grain directory"));
            }
        }
        let (flags, capacity, grain, gtes, gd) =
            (le_u32(&h, 8), le_u64(&h, 12), le_u64(&h, 20), le_u32(&h, 44), le_u64(&h, 56));
        let compressed = flags & FLAG_COMPRESSED != 0;
        if compressed && (le_u16(&h, 77) != COMPRESS_DEFLATE || flags & FLAG_MARKERS == 0) {
            return Err(ImageError::VmdkCompression(le_u16(&h, 77)));
        }
        if !grain.is_power_of_two() || grain > MAX_GRAIN_SECTORS {
            return Err(bad(format!("grain size {grain} sectors")));
        }
        if gtes == 0 || gtes > MAX_GTES {
            return Err(bad(format!("{gtes} entries per grain table")));
        }
        let capacity = capacity.checked_mul(SECTOR).filter(|c| *c < 1 << 62).ok_or_else(|| bad("capacity"))?;
        let grain = grain * SECTOR;
        let span = grain * u64::from(gtes);
        let gd_entries = capacity.div_ceil(span);
        let gd = gd.checked_mul(SECTOR).ok_or_else(|| bad("grain directory offset"))?;
        if gd.checked_add(gd_entries * 4).is_none_or(|end| end > len) {
            return Err(bad("the grain directory lies past the image's end"));
        }
        Ok(Vmdk {
            capacity,
            grain,
            gtes: u64::from(gtes),
            gd,
            gd_entries,
            compressed,
            tables: PageCache::default(),
            grains: Mutex::new(Vec::new()),
        })
    }

    /// The decompressed grain whose marker is at `at` in the image.
    fn inflate(&self, image: &dyn Positioned, index: u64, at: u64) -> io::Result<Arc<[u8]>> {
        let damaged = |what: String| io::Error::new(io::ErrorKind::InvalidData, bad(what));
        if let Some((_, g)) = self.lock()?.iter().find(|(i, _)| *i == index) {
            return Ok(g.clone());
        }
        let mut marker = [0u8; 12];
        read_exact(image, &mut marker, at)?;
        let size = u64::from(le_u32(&marker, 8));
        // Deflate never grows data by more than a little; qemu allows twice the grain.
        if size == 0 || size > 2 * self.grain {
            return Err(damaged(format!("compressed grain {index} claims {size} bytes")));
        }
        let mut packed = vec![0u8; size as usize];
        read_exact(image, &mut packed, at + 12)?;
        let mut grain = miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(&packed, self.grain as usize)
            .map_err(|e| damaged(format!("grain {index} does not decompress ({:?})", e.status)))?;
        // The last grain of a disk may be short; what it lacks was never written.
        grain.resize(self.grain as usize, 0);
        let grain: Arc<[u8]> = grain.into();
        let mut kept = self.lock()?;
        if kept.len() >= GRAINS_KEPT {
            kept.remove(0);
        }
        kept.push((index, grain.clone()));
        Ok(grain)
    }

    #[allow(clippy::type_complexity)]
    fn lock(&self) -> io::Result<std::sync::MutexGuard<'_, Vec<(u64, Arc<[u8]>)>>> {
        self.grains.lock().map_err(|_| io::Error::other("the VMDK grain cache is poisoned"))
    }
}

impl Layout for Vmdk {
    fn size(&self) -> u64 {
        self.capacity
    }

    fn piece(&self, image: &dyn Positioned, offset: u64, max: u64) -> io::Result<(Piece, u64)> {
        let index = offset / self.grain;
        let within = offset % self.grain;
        let n = (self.grain - within).min(max);
        let table = index / self.gtes;
        if table >= self.gd_entries {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        let gt = u64::from(self.tables.u32_at(image, self.gd + table * 4)?);
        if gt == 0 {
            return Ok((Piece::Zero, n));
        }
        let entry = gt * SECTOR + (index % self.gtes) * 4;
        let sector = u64::from(self.tables.u32_at(image, entry)?);
        if sector <= 1 {
            return Ok((Piece::Zero, n));
        }
        let at = sector * SECTOR;
        if self.compressed {
            let grain = self.inflate(image, index, at)?;
            return Ok((Piece::Inflated(grain, within as usize), n));
        }
        Ok((Piece::Stored(at + within), n))
    }
}

/// Refuses a sparse extent that is one of several, or has a parent, by what its embedded descriptor
/// says.
fn check_descriptor(image: &dyn Positioned, header: &[u8]) -> Result<(), ImageError> {
    let (at, len) = (le_u64(header, 28), le_u64(header, 36));
    let Some(len) = len.checked_mul(SECTOR).filter(|l| (1..=MAX_DESCRIPTOR).contains(l)) else { return Ok(()) };
    let mut text = vec![0u8; len as usize];
    let at = at.checked_mul(SECTOR).ok_or_else(|| bad("descriptor offset"))?;
    read_exact(image, &mut text, at).map_err(|e| bad(format!("its descriptor: {e}")))?;
    let d = Descriptor::parse(&text);
    if d.parent {
        return Err(ImageError::VmdkDeltaLink);
    }
    if d.extents.len() > 1 {
        return Err(ImageError::VmdkSplit(d.extents.len()));
    }
    Ok(())
}

/// The refusal of a VMDK descriptor file (`first`: its first bytes): its data is in other files.
pub fn descriptor_file_refusal(first: &[u8]) -> ImageError {
    let d = Descriptor::parse(first);
    let extent = match d.extents.as_slice() {
        [(kind, name)] if !d.parent => Some((name.clone(), kind == "FLAT")),
        _ => None,
    };
    ImageError::VmdkDescriptor { extent }
}

/// What ext4box needs of a VMDK descriptor: its extents (kind, file name) and whether it has a parent.
struct Descriptor {
    extents: Vec<(String, String)>,
    parent: bool,
}

impl Descriptor {
    /// Reads the descriptor's lines; a line it does not understand is ignored (the text is at most
    /// [`MAX_DESCRIPTOR`] or the detection bytes long, so the result is bounded).
    fn parse(text: &[u8]) -> Descriptor {
        let text = String::from_utf8_lossy(text.split(|&b| b == 0).next().unwrap_or_default());
        let mut d = Descriptor { extents: Vec::new(), parent: false };
        for line in text.lines().map(str::trim) {
            if let Some(v) = line.strip_prefix("parentCID") {
                let v = v.trim_start().trim_start_matches('=').trim();
                d.parent = !v.eq_ignore_ascii_case("ffffffff");
            }
            let mut words = line.split_whitespace();
            if matches!(words.next(), Some("RW" | "RDONLY" | "NOACCESS")) {
                let kind = words.nth(1).unwrap_or_default().to_string();
                let name = line.split('"').nth(1).unwrap_or_default();
                let name: String = name.chars().filter(|c| !c.is_control()).take(255).collect();
                d.extents.push((kind, name));
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ext4::BlockDevice;
    use crate::image::{MappedDisk, MemImage};

    /// A streamOptimized image as VMware writes it: the header says the grain directory is at the end,
    /// the footer (1024 bytes before the end) says where; grain 0 is compressed behind its marker,
    /// grain 1 never written. 64 KiB disk, 4 KiB grains, one grain table.
    fn stream_optimized(grain0: &[u8]) -> Vec<u8> {
        let mut header = vec![0u8; 512];
        header[..4].copy_from_slice(MAGIC);
        header[4..8].copy_from_slice(&3u32.to_le_bytes());
        header[8..12].copy_from_slice(&(FLAG_COMPRESSED | FLAG_MARKERS | 3).to_le_bytes());
        header[12..20].copy_from_slice(&128u64.to_le_bytes()); // capacity, sectors
        header[20..28].copy_from_slice(&8u64.to_le_bytes()); // grain, sectors
        header[44..48].copy_from_slice(&512u32.to_le_bytes());
        header[77..79].copy_from_slice(&COMPRESS_DEFLATE.to_le_bytes());
        let mut img = header.clone();
        img[56..64].copy_from_slice(&GD_AT_END.to_le_bytes());
        // Sector 1 (where the descriptor would be) is left empty; sector 2: grain 0's marker and data.
        img.extend_from_slice(&[0u8; 512]);
        let packed = miniz_oxide::deflate::compress_to_vec_zlib(grain0, 6);
        img.extend_from_slice(&0u64.to_le_bytes());
        img.extend_from_slice(&(packed.len() as u32).to_le_bytes());
        img.extend_from_slice(&packed);
        img.resize(img.len().div_ceil(512) * 512, 0);
        // The grain table, then the directory.
        let gt = img.len() as u32 / 512;
        let mut table = vec![0u8; 2048];
        table[..4].copy_from_slice(&2u32.to_le_bytes());
        img.extend_from_slice(&table);
        let gd = img.len() as u64 / 512;
        img.extend_from_slice(&gt.to_le_bytes());
        img.resize(img.len().div_ceil(512) * 512, 0);
        // Footer marker, footer, end-of-stream marker.
        img.extend_from_slice(&[0u8; 512]);
        header[56..64].copy_from_slice(&gd.to_le_bytes());
        img.extend_from_slice(&header);
        img.extend_from_slice(&[0u8; 512]);
        img
    }

    #[test]
    fn stream_optimized_images_are_read_through_their_footer_and_compressed_grains() {
        let grain0: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
        let img = stream_optimized(&grain0);
        let disk = MappedDisk::new(MemImage::new(img.clone(), img.len()), Vmdk::open).unwrap();
        assert_eq!(disk.size(), 65536);
        let mut buf = vec![0xeeu8; 8192];
        disk.read_exact_at(&mut buf, 0).unwrap();
        assert!(buf[..4096] == grain0[..], "grain 0 reads wrong");
        assert!(buf[4096..].iter().all(|&b| b == 0), "grain 1 was never written");
        disk.read_exact_at(&mut buf[..100], 4000).unwrap();
        assert!(buf[..96] == grain0[4000..], "a read across grains reads wrong");
        // A footer that says "at the end" too is damage, not a loop.
        let mut bad = img.clone();
        let footer = bad.len() - 1024;
        bad[footer + 56..footer + 64].copy_from_slice(&GD_AT_END.to_le_bytes());
        assert!(MappedDisk::new(MemImage::new(bad.clone(), bad.len()), Vmdk::open).is_err());
        // A compressed grain that does not inflate is an error for that read alone.
        let mut bad = img;
        bad[1024 + 14] ^= 0xff;
        let disk = MappedDisk::new(MemImage::new(bad.clone(), bad.len()), Vmdk::open).unwrap();
        assert!(disk.read_exact_at(&mut buf[..512], 0).is_err());
        disk.read_exact_at(&mut buf[..512], 8192).unwrap();
    }

    #[test]
    fn descriptors_say_where_the_data_is() {
        let flat = b"# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
                     createType=\"monolithicFlat\"\n\n# Extent description\nRW 204800 FLAT \"disk-flat.vmdk\" 0\n";
        let e = descriptor_file_refusal(flat).to_string();
        assert!(e.contains("\"disk-flat.vmdk\"") && e.contains("raw"), "{e}");
        let split = b"# Disk DescriptorFile\nparentCID=ffffffff\nRW 4192256 SPARSE \"a-s001.vmdk\"\n\
                      RW 4192256 SPARSE \"a-s002.vmdk\"\n";
        assert!(matches!(descriptor_file_refusal(split), ImageError::VmdkDescriptor { extent: None }));
        assert!(descriptor_file_refusal(split).to_string().contains("qemu-img convert"));
        let delta = b"# Disk DescriptorFile\nparentCID=12345678\nRW 100 SPARSE \"child.vmdk\"\n";
        assert!(descriptor_file_refusal(delta).to_string().contains("delta link"));
    }
}
