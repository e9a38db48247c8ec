//! Finding partition N of a disk image (`-o partition=N`), so nobody computes byte offsets by hand: the
//! MBR (primary partitions 1-4, logical partitions 5 and up in the extended partition's chain) and GPT
//! (partition N is entry N of the table, as Linux numbers them).
//!
//! The table comes from an untrusted image, so it is read by the confined worker, never the launcher;
//! every field is checked and every loop is bounded.
#![forbid(unsafe_code)]

/// Sector size partition tables count in (disk images use 512-byte sectors).
const SECTOR: u64 = 512;
/// At most this many logical partitions are followed in an extended partition's chain.
const MAX_LOGICAL: u32 = 128;
/// GPT tables larger than this many entries are refused.
const MAX_GPT_ENTRIES: u32 = 1024;

/// Where a partition is: its first byte and its length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
}

/// Why partition N cannot be served, one variant per check (the number, or the read's error, carried).
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("partition numbers start at 1")]
    NumberZero,
    #[error("cannot read the partition table: {0}")]
    ReadMbr(#[source] std::io::Error),
    #[error("the image has no partition table (no MBR signature); use offset= for a bare filesystem")]
    NoTable,
    #[error("partition {0} does not exist (MBR slot {0} is empty)")]
    EmptySlot(u32),
    #[error("partition {0} is the extended partition, which holds other partitions")]
    IsExtended(u32),
    #[error("partition {0} does not exist (no extended partition)")]
    NoExtended(u32),
    #[error("partition {0} lies outside the image")]
    Outside(u32),
    #[error("extended partition chain out of range")]
    ChainOutOfRange,
    #[error("cannot read an extended boot record: {0}")]
    ReadEbr(#[source] std::io::Error),
    #[error("partition out of range")]
    OutOfRange,
    #[error("partition {0} does not exist")]
    NoSuchLogical(u32),
    #[error("cannot read the GPT header: {0}")]
    ReadGptHeader(#[source] std::io::Error),
    #[error("the MBR announces GPT but there is no GPT header at sector 1")]
    NoGptHeader,
    #[error("the GPT header describes an implausible partition table")]
    GptImplausible,
    #[error("partition {n} does not exist (the GPT table has {count} entries)")]
    PastGptTable { n: u32, count: u32 },
    #[error("the GPT partition table lies outside the image")]
    GptTableOutside,
    #[error("cannot read the GPT partition table: {0}")]
    ReadGptTable(#[source] std::io::Error),
    #[error("partition {0} does not exist (its GPT entry is unused)")]
    GptEntryUnused(u32),
    #[error("GPT entry {0} ends before it starts")]
    GptEntryBackwards(u32),
}

type Result<T> = std::result::Result<T, PartitionError>;

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn le64(b: &[u8], off: usize) -> u64 {
    u64::from(le32(b, off)) | (u64::from(le32(b, off + 4)) << 32)
}

/// Finds partition `n` (1-based) on a device of `size` bytes read through `read(offset, buf)`.
pub fn find(n: u32, size: u64, read: &dyn Fn(u64, &mut [u8]) -> std::io::Result<()>) -> Result<Extent> {
    if n == 0 {
        return Err(PartitionError::NumberZero);
    }
    let mut mbr = [0u8; 512];
    read(0, &mut mbr).map_err(PartitionError::ReadMbr)?;
    if mbr[510..512] != [0x55, 0xAA] {
        return Err(PartitionError::NoTable);
    }
    let entry = |i: usize| &mbr[446 + 16 * i..446 + 16 * (i + 1)];
    let found = if (0..4).any(|i| entry(i)[4] == 0xEE) {
        gpt(n, size, read)?
    } else if n <= 4 {
        let e = entry(n as usize - 1);
        if e[4] == 0 {
            return Err(PartitionError::EmptySlot(n));
        }
        if is_extended(e[4]) {
            return Err(PartitionError::IsExtended(n));
        }
        Extent { offset: u64::from(le32(e, 8)) * SECTOR, len: u64::from(le32(e, 12)) * SECTOR }
    } else {
        let ext = (0..4).map(entry).find(|e| is_extended(e[4]));
        let ext = ext.ok_or(PartitionError::NoExtended(n))?;
        logical(n, u64::from(le32(ext, 8)), read)?
    };
    if found.len == 0 || found.offset.checked_add(found.len).is_none_or(|end| end > size) {
        return Err(PartitionError::Outside(n));
    }
    Ok(found)
}

fn is_extended(kind: u8) -> bool {
    matches!(kind, 0x05 | 0x0F | 0x85)
}

/// Logical partition `n` (5 and up): the extended partition at sector `base` holds a chain of extended
/// boot records, each describing one logical partition (relative to itself) and the next record
/// (relative to `base`).
fn logical(n: u32, base: u64, read: &dyn Fn(u64, &mut [u8]) -> std::io::Result<()>) -> Result<Extent> {
    let mut ebr_sector = base;
    for number in 5..5 + MAX_LOGICAL {
        let mut ebr = [0u8; 512];
        let at = ebr_sector.checked_mul(SECTOR).ok_or(PartitionError::ChainOutOfRange)?;
        read(at, &mut ebr).map_err(PartitionError::ReadEbr)?;
        if ebr[510..512] != [0x55, 0xAA] {
            break;
        }
        let (first, next) = (&ebr[446..462], &ebr[462..478]);
        if number == n {
            if first[4] == 0 {
                break;
            }
            let start = ebr_sector.checked_add(u64::from(le32(first, 8))).ok_or(PartitionError::OutOfRange)?;
            return Ok(Extent { offset: start * SECTOR, len: u64::from(le32(first, 12)) * SECTOR });
        }
        if next[4] == 0 {
            break;
        }
        ebr_sector = base.checked_add(u64::from(le32(next, 8))).ok_or(PartitionError::ChainOutOfRange)?;
    }
    Err(PartitionError::NoSuchLogical(n))
}

/// Partition `n` of a GPT disk: entry `n` of the table the header at LBA 1 describes.
fn gpt(n: u32, size: u64, read: &dyn Fn(u64, &mut [u8]) -> std::io::Result<()>) -> Result<Extent> {
    let mut h = [0u8; 512];
    read(SECTOR, &mut h).map_err(PartitionError::ReadGptHeader)?;
    if &h[0..8] != b"EFI PART" {
        return Err(PartitionError::NoGptHeader);
    }
    let table_lba = le64(&h, 72);
    let count = le32(&h, 80);
    let entry_size = le32(&h, 84);
    if !(128..=4096).contains(&entry_size) || !entry_size.is_power_of_two() || count > MAX_GPT_ENTRIES {
        return Err(PartitionError::GptImplausible);
    }
    if n > count {
        return Err(PartitionError::PastGptTable { n, count });
    }
    let at = table_lba
        .checked_mul(SECTOR)
        .and_then(|t| t.checked_add(u64::from(n - 1) * u64::from(entry_size)))
        .filter(|&a| a < size)
        .ok_or(PartitionError::GptTableOutside)?;
    let mut e = vec![0u8; entry_size as usize];
    read(at, &mut e).map_err(PartitionError::ReadGptTable)?;
    if e[0..16].iter().all(|&b| b == 0) {
        return Err(PartitionError::GptEntryUnused(n));
    }
    let (first, last) = (le64(&e, 32), le64(&e, 40));
    if last < first {
        return Err(PartitionError::GptEntryBackwards(n));
    }
    let offset = first.checked_mul(SECTOR).ok_or(PartitionError::OutOfRange)?;
    let len = (last - first).checked_add(1).and_then(|n| n.checked_mul(SECTOR)).ok_or(PartitionError::OutOfRange)?;
    Ok(Extent { offset, len })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(img: &[u8]) -> impl Fn(u64, &mut [u8]) -> std::io::Result<()> + '_ {
        move |off, buf| {
            let start = off as usize;
            let src = img.get(start..start + buf.len()).ok_or(std::io::ErrorKind::UnexpectedEof)?;
            buf.copy_from_slice(src);
            Ok(())
        }
    }

    fn mbr_entry(img: &mut [u8], slot: usize, kind: u8, start: u32, sectors: u32) {
        let e = &mut img[446 + 16 * slot..446 + 16 * (slot + 1)];
        e[4] = kind;
        e[8..12].copy_from_slice(&start.to_le_bytes());
        e[12..16].copy_from_slice(&sectors.to_le_bytes());
    }

    #[test]
    fn mbr_primary_and_logical_partitions() {
        let mut img = vec![0u8; 1 << 20];
        img[510] = 0x55;
        img[511] = 0xAA;
        mbr_entry(&mut img, 0, 0x83, 64, 100);
        mbr_entry(&mut img, 1, 0x05, 200, 1000);
        // EBR at sector 200: logical 5 at 200+8, next EBR at base+300.
        img[200 * 512 + 510] = 0x55;
        img[200 * 512 + 511] = 0xAA;
        let ebr = |img: &mut Vec<u8>, sector: usize, first: (u32, u32), next: u32| {
            let b = &mut img[sector * 512..sector * 512 + 512];
            b[446 + 4] = 0x83;
            b[446 + 8..446 + 12].copy_from_slice(&first.0.to_le_bytes());
            b[446 + 12..446 + 16].copy_from_slice(&first.1.to_le_bytes());
            if next != 0 {
                b[462 + 4] = 0x05;
                b[462 + 8..462 + 12].copy_from_slice(&next.to_le_bytes());
            }
            b[510] = 0x55;
            b[511] = 0xAA;
        };
        ebr(&mut img, 200, (8, 50), 300);
        ebr(&mut img, 500, (8, 60), 0);
        let size = img.len() as u64;
        {
            let r = reader(&img);
            assert_eq!(find(1, size, &r).unwrap(), Extent { offset: 64 * 512, len: 100 * 512 });
            assert_eq!(find(5, size, &r).unwrap(), Extent { offset: 208 * 512, len: 50 * 512 });
            assert_eq!(find(6, size, &r).unwrap(), Extent { offset: 508 * 512, len: 60 * 512 });
            assert!(matches!(find(2, size, &r), Err(PartitionError::IsExtended(2))));
            assert!(matches!(find(3, size, &r), Err(PartitionError::EmptySlot(3))));
            assert!(matches!(find(7, size, &r), Err(PartitionError::NoSuchLogical(7))));
            assert!(matches!(find(0, size, &r), Err(PartitionError::NumberZero)));
        }
        // A chain that loops back on itself (the second record names the first) ends, bounded.
        let b = &mut img[500 * 512..500 * 512 + 512];
        b[462 + 4] = 0x05;
        b[462 + 8..462 + 12].copy_from_slice(&0u32.to_le_bytes());
        let r = reader(&img);
        assert!(find(1000, size, &r).is_err());
        assert_eq!(find(7, size, &r).unwrap(), Extent { offset: 208 * 512, len: 50 * 512 }, "the loop's next lap");
    }

    #[test]
    fn no_table_and_hostile_gpt_headers_are_errors() {
        let mut img = vec![0u8; 1 << 16];
        let size = img.len() as u64;
        assert!(matches!(find(1, size, &reader(&img)), Err(PartitionError::NoTable)));
        img[510] = 0x55;
        img[511] = 0xAA;
        mbr_entry(&mut img, 0, 0xEE, 1, 100);
        assert!(matches!(find(1, size, &reader(&img)), Err(PartitionError::NoGptHeader)));
        img[512..520].copy_from_slice(b"EFI PART");
        img[512 + 72..512 + 80].copy_from_slice(&u64::MAX.to_le_bytes());
        img[512 + 80..512 + 84].copy_from_slice(&4u32.to_le_bytes());
        img[512 + 84..512 + 88].copy_from_slice(&128u32.to_le_bytes());
        assert!(matches!(find(1, size, &reader(&img)), Err(PartitionError::GptTableOutside)));
        img[512 + 80..512 + 84].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(find(1, size, &reader(&img)), Err(PartitionError::GptImplausible)));
    }
}
