//! Little-endian field readers for on-disk structures.
//!
//! Callers check a structure's length once, before parsing it; these readers then never panic: a field that
//! would lie outside the buffer reads as zero, which the structure's own validation turns into an error.

/// Reads the `u8` at `off`.
pub fn u8_at(buf: &[u8], off: usize) -> u8 {
    buf.get(off).copied().unwrap_or(0)
}

/// Reads the little-endian `u16` at `off`.
pub fn le16(buf: &[u8], off: usize) -> u16 {
    match buf.get(off..off.saturating_add(2)) {
        Some(b) => u16::from_le_bytes([b[0], b[1]]),
        None => 0,
    }
}

/// Reads the little-endian `u32` at `off`.
pub fn le32(buf: &[u8], off: usize) -> u32 {
    match buf.get(off..off.saturating_add(4)) {
        Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        None => 0,
    }
}

/// Reads the little-endian `u64` at `off`.
pub fn le64(buf: &[u8], off: usize) -> u64 {
    u64::from(le32(buf, off)) | (u64::from(le32(buf, off.saturating_add(4))) << 32)
}

/// Returns `len` bytes at `off`, or `None` when they do not lie inside `buf`.
pub fn slice(buf: &[u8], off: usize, len: usize) -> Option<&[u8]> {
    buf.get(off..off.checked_add(len)?)
}

/// The low 32 bits of `v` (the `_lo` field of a split on-disk value).
#[expect(clippy::as_conversions, reason = "truncation is the point: the low half")]
pub fn low32(v: u64) -> u32 {
    v as u32
}

/// The high 32 bits of `v` (the `_hi` field of a split on-disk value).
pub fn high32(v: u64) -> u32 {
    low32(v >> 32)
}

/// The low 16 bits of `v`.
#[expect(clippy::as_conversions, reason = "truncation is the point: the low half")]
pub fn low16(v: u32) -> u16 {
    v as u16
}

/// The high 16 bits of `v`.
pub fn high16(v: u32) -> u16 {
    low16(v >> 16)
}

/// `v` as an index: a `u32` always fits in `usize` on the targets ext4box builds for (64-bit Linux;
/// the assertion below keeps it so).
pub fn index(v: u32) -> usize {
    const _: () = assert!(usize::BITS >= 32);
    usize::try_from(v).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_end_are_zero() {
        let b = [1u8, 2, 3, 4, 5];
        assert_eq!(le16(&b, 0), 0x0201);
        assert_eq!(le32(&b, 1), 0x0504_0302);
        assert_eq!(le32(&b, 2), 0);
        assert_eq!(le16(&b, usize::MAX), 0);
        assert_eq!(slice(&b, 4, 2), None);
        assert_eq!(slice(&b, 3, 2), Some(&b[3..5]));
        assert_eq!((low32(0x1234_5678_9abc_def0), high32(0x1234_5678_9abc_def0)), (0x9abc_def0, 0x1234_5678));
        assert_eq!((low16(0x1234_5678), high16(0x1234_5678)), (0x5678, 0x1234));
    }
}
