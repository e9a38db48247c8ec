//! VHDX, Hyper-V's disk format and WSL's `ext4.vhdx` (Microsoft's [MS-VHDX] 1.0), dynamic and fixed:
//! a file type identifier ("vhdxfile"), two headers (at 64 and 128 KiB; the valid one with the higher
//! sequence number is current), two copies of a region table (at 192 and 256 KiB) locating the block
//! allocation table (BAT) and the metadata region, whose items give the block size, the virtual disk's
//! size and its logical sector size. The BAT has one entry per payload block (its state and its offset
//! in MiB), with a sector-bitmap entry after every "chunk ratio" of them. Headers and region tables are
//! CRC-32C checked.
//!
//! A differencing disk (it has a parent, opened by name) and an image whose log holds changes not yet
//! written in place (it was not closed cleanly) are refused, as qemu refuses the second read-only.

use std::io;

use super::mapped::{Layout, PageCache, Piece, le_u16, le_u32, le_u64};
use super::{ImageError, Positioned, read_exact};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const HEADERS: [u64; 2] = [64 * KIB, 128 * KIB];
const HEADER_LEN: usize = 4096;
const REGION_TABLES: [u64; 2] = [192 * KIB, 256 * KIB];
const REGION_TABLE_LEN: usize = 64 * KIB as usize;
const MAX_ENTRIES: u32 = 2047;
const BAT: [u8; 16] = guid("2DC27766-F623-4200-9D64-115E9BFD4A08");
const METADATA: [u8; 16] = guid("8B7CA206-4790-4B9A-B8FE-575F050F886E");
const FILE_PARAMETERS: [u8; 16] = guid("CAA16737-FA36-4D43-B3B6-33F0AA44E76B");
const VIRTUAL_DISK_SIZE: [u8; 16] = guid("2FA54224-CD1B-4876-B211-5DBED83BF4B8");
const LOGICAL_SECTOR_SIZE: [u8; 16] = guid("8141BF1D-A96F-4709-BA47-F233A8FAAB5F");
const KNOWN_ITEMS: [[u8; 16]; 6] = [
    FILE_PARAMETERS,
    VIRTUAL_DISK_SIZE,
    LOGICAL_SECTOR_SIZE,
    guid("CDA348C7-445D-4471-9CC9-E9885251C556"), // physical sector size
    guid("BECA12AB-B2E6-4523-93EF-C309E000C746"), // page 83 data
    guid("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C"), // parent locator
];
/// The largest virtual disk the format allows.
const MAX_DISK: u64 = 64 << 40;
/// BAT states of a payload block.
const PAYLOAD_FULLY_PRESENT: u64 = 6;
/// Log entries are checksummed up to this many bytes in all at open; past it the log counts as
/// holding changes (a damaged image cannot make the open read without bound).
const LOG_CHECK_BUDGET: u64 = 256 * MIB;

/// A GUID as it is stored: its first three fields little-endian.
const fn guid(s: &str) -> [u8; 16] {
    const fn hex(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => c - b'A' + 10,
        }
    }
    let s = s.as_bytes();
    let mut text = [0u8; 16];
    let (mut i, mut n) = (0, 0);
    while i < s.len() {
        if s[i] != b'-' {
            text[n / 2] = text[n / 2] << 4 | hex(s[i]);
            n += 1;
        }
        i += 1;
    }
    let order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
    let mut out = [0u8; 16];
    let mut k = 0;
    while k < 16 {
        out[k] = text[order[k]];
        k += 1;
    }
    out
}

fn bad(what: impl std::fmt::Display) -> ImageError {
    ImageError::Damaged { format: "VHDX", what: what.to_string() }
}

/// CRC-32C of `b` with its checksum field (4 bytes at 4) taken as zero, as every VHDX checksum is.
fn checksum(b: &[u8]) -> u32 {
    let c = crc32c::crc32c(b.get(..4).unwrap_or_default());
    let c = crc32c::crc32c_append(c, &[0; 4]);
    crc32c::crc32c_append(c, b.get(8..).unwrap_or_default())
}

fn checksummed(b: &[u8], signature: &[u8]) -> bool {
    b.starts_with(signature) && le_u32(b, 4) == checksum(b)
}

pub(super) struct Vhdx {
    size: u64,
    block: u64,
    chunk_ratio: u64,
    bat: u64,
    tables: PageCache,
}

impl Vhdx {
    pub(super) fn open(image: &dyn Positioned) -> Result<Vhdx, ImageError> {
        let len = image.byte_len().map_err(ImageError::Unreadable)?;
        let header = current_header(image)?;
        if le_u16(&header, 66) != 1 {
            let version = u32::from(le_u16(&header, 66));
            return Err(ImageError::Version { format: "VHDX", version, supported: "only 1 is" });
        }
        if log_needs_replay(image, &header, len)? {
            return Err(ImageError::VhdxLogNotReplayed);
        }
        let (bat, bat_len, meta, meta_len) = regions(image, len)?;
        let m = Metadata::read(image, meta, meta_len)?;
        if m.has_parent {
            return Err(ImageError::VhdxDifferencing);
        }
        if !m.block.is_power_of_two() || !(MIB..=256 * MIB).contains(&m.block) {
            return Err(bad(format!("block size {}", m.block)));
        }
        if m.sector != 512 && m.sector != 4096 {
            return Err(bad(format!("logical sector size {}", m.sector)));
        }
        if m.size == 0 || m.size > MAX_DISK || m.size % m.sector != 0 {
            return Err(bad(format!("virtual disk size {}", m.size)));
        }
        let chunk_ratio = (1u64 << 23) * m.sector / m.block;
        let blocks = m.size.div_ceil(m.block);
        let entries = blocks + (blocks - 1) / chunk_ratio;
        if entries * 8 > bat_len {
            return Err(bad(format!("the BAT holds {} entries, the disk needs {entries}", bat_len / 8)));
        }
        Ok(Vhdx { size: m.size, block: m.block, chunk_ratio, bat, tables: PageCache::default() })
    }
}

impl Layout for Vhdx {
    fn size(&self) -> u64 {
        self.size
    }

    fn piece(&self, image: &dyn Positioned, offset: u64, max: u64) -> io::Result<(Piece, u64)> {
        let block = offset / self.block;
        let within = offset % self.block;
        let n = (self.block - within).min(max);
        let entry = self.tables.u64_at(image, self.bat + (block + block / self.chunk_ratio) * 8)?;
        match entry & 7 {
            PAYLOAD_FULLY_PRESENT => {
                let at = (entry >> 20).checked_mul(MIB).and_then(|a| a.checked_add(within)).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, bad(format!("block {block}'s offset")))
                })?;
                Ok((Piece::Stored(at), n))
            }
            // Not present, undefined, zero, unmapped: nothing was written there.
            0..=3 => Ok((Piece::Zero, n)),
            state => Err(io::Error::new(io::ErrorKind::InvalidData, bad(format!("block {block} has state {state}")))),
        }
    }
}

/// The current header: of the two, the valid one with the higher sequence number.
fn current_header(image: &dyn Positioned) -> Result<Vec<u8>, ImageError> {
    let mut best: Option<Vec<u8>> = None;
    for at in HEADERS {
        let mut h = vec![0u8; HEADER_LEN];
        if read_exact(image, &mut h, at).is_err() || !checksummed(&h, b"head") {
            continue;
        }
        if best.as_ref().is_none_or(|b| le_u64(&h, 8) > le_u64(b, 8)) {
            best = Some(h);
        }
    }
    best.ok_or_else(|| bad("neither header is valid"))
}

/// Whether the log holds an entry of the header's log GUID with a valid checksum (changes to replay).
fn log_needs_replay(image: &dyn Positioned, header: &[u8], len: u64) -> Result<bool, ImageError> {
    let log_guid = header.get(48..64).unwrap_or_default();
    if log_guid.iter().all(|&b| b == 0) {
        return Ok(false);
    }
    let (log_len, log_at) = (u64::from(le_u32(header, 68)), le_u64(header, 72));
    if log_at.checked_add(log_len).is_none_or(|end| end > len) || log_len % (4 * KIB) != 0 {
        return Err(bad("the log lies past the image's end"));
    }
    let mut budget = LOG_CHECK_BUDGET;
    let mut page = [0u8; 4096];
    for slot in (0..log_len).step_by(4096) {
        read_exact(image, &mut page, log_at + slot).map_err(|e| bad(format!("its log: {e}")))?;
        if !page.starts_with(b"loge") || page.get(32..48) != Some(log_guid) {
            continue;
        }
        let entry_len = u64::from(le_u32(&page, 8));
        if entry_len == 0 || entry_len % (4 * KIB) != 0 || entry_len > log_len {
            continue;
        }
        if slot + entry_len > log_len || entry_len > budget {
            // Wrapping around the log's end, or past what is checked: count it as changes.
            return Ok(true);
        }
        budget -= entry_len;
        let mut entry = vec![0u8; entry_len as usize];
        read_exact(image, &mut entry, log_at + slot).map_err(|e| bad(format!("its log: {e}")))?;
        if checksummed(&entry, b"loge") {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The BAT's and the metadata region's offsets and lengths, from the first valid region table; a
/// region the reader does not know that is marked required is refused.
fn regions(image: &dyn Positioned, len: u64) -> Result<(u64, u64, u64, u64), ImageError> {
    let mut t = vec![0u8; REGION_TABLE_LEN];
    let valid = REGION_TABLES.iter().any(|&at| read_exact(image, &mut t, at).is_ok() && checksummed(&t, b"regi"));
    if !valid {
        return Err(bad("neither region table is valid"));
    }
    let count = le_u32(&t, 8);
    if count > MAX_ENTRIES {
        return Err(bad(format!("{count} regions")));
    }
    let (mut bat, mut meta) = (None, None);
    for e in t[16..].chunks_exact(32).take(count as usize) {
        let (at, rlen, required) = (le_u64(e, 16), u64::from(le_u32(e, 24)), le_u32(e, 28) & 1 != 0);
        if at % MIB != 0 || at < MIB || at.checked_add(rlen).is_none_or(|end| end > len) {
            return Err(bad("a region lies outside the image"));
        }
        match &e[..16] {
            g if g == BAT => bat = Some((at, rlen)),
            g if g == METADATA => meta = Some((at, rlen)),
            _ if required => return Err(ImageError::VhdxUnknownRequired("region")),
            _ => {}
        }
    }
    match (bat, meta) {
        (Some((b, bl)), Some((m, ml))) => Ok((b, bl, m, ml)),
        _ => Err(bad("no BAT or no metadata region")),
    }
}

struct Metadata {
    block: u64,
    has_parent: bool,
    size: u64,
    sector: u64,
}

impl Metadata {
    fn read(image: &dyn Positioned, at: u64, len: u64) -> Result<Metadata, ImageError> {
        let mut table = vec![0u8; REGION_TABLE_LEN];
        if len < REGION_TABLE_LEN as u64 {
            return Err(bad("the metadata region is too small"));
        }
        read_exact(image, &mut table, at).map_err(|e| bad(format!("its metadata: {e}")))?;
        if !table.starts_with(b"metadata") {
            return Err(bad("no metadata table"));
        }
        let count = le_u16(&table, 10);
        if u32::from(count) > MAX_ENTRIES {
            return Err(bad(format!("{count} metadata items")));
        }
        let item = |id: &[u8; 16], want: usize| -> Result<Vec<u8>, ImageError> {
            let e = table[32..].chunks_exact(32).take(count.into()).find(|e| &e[..16] == id);
            let e = e.ok_or_else(|| bad("a metadata item is missing"))?;
            let (off, ilen) = (u64::from(le_u32(e, 16)), u64::from(le_u32(e, 20)));
            if ilen < want as u64 || off < REGION_TABLE_LEN as u64 || off.checked_add(ilen).is_none_or(|end| end > len)
            {
                return Err(bad("a metadata item lies outside its region"));
            }
            let mut v = vec![0u8; want];
            read_exact(image, &mut v, at + off).map_err(|e| bad(format!("its metadata: {e}")))?;
            Ok(v)
        };
        for e in table[32..].chunks_exact(32).take(count.into()) {
            if le_u32(e, 24) & 4 != 0 && !KNOWN_ITEMS.iter().any(|k| k[..] == e[..16]) {
                return Err(ImageError::VhdxUnknownRequired("metadata item"));
            }
        }
        let params = item(&FILE_PARAMETERS, 8)?;
        Ok(Metadata {
            block: u64::from(le_u32(&params, 0)),
            has_parent: le_u32(&params, 4) & 2 != 0,
            size: le_u64(&item(&VIRTUAL_DISK_SIZE, 8)?, 0),
            sector: u64::from(le_u32(&item(&LOGICAL_SECTOR_SIZE, 4)?, 0)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_stored_with_their_first_fields_little_endian() {
        assert_eq!(
            BAT,
            [0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08]
        );
    }
}
