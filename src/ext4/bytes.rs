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
    }
}
