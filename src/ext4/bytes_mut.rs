//! Little-endian field writers, the counterparts of [`super::bytes`]. Writes outside the buffer are
//! dropped: callers size their buffers from the structure's layout before writing.

pub fn put8(buf: &mut [u8], off: usize, v: u8) {
    if let Some(b) = buf.get_mut(off) {
        *b = v;
    }
}

pub fn put16(buf: &mut [u8], off: usize, v: u16) {
    if let Some(b) = buf.get_mut(off..off.saturating_add(2)) {
        b.copy_from_slice(&v.to_le_bytes());
    }
}

pub fn put32(buf: &mut [u8], off: usize, v: u32) {
    if let Some(b) = buf.get_mut(off..off.saturating_add(4)) {
        b.copy_from_slice(&v.to_le_bytes());
    }
}

pub fn put64(buf: &mut [u8], off: usize, v: u64) {
    put32(buf, off, super::bytes::low32(v));
    put32(buf, off.saturating_add(4), super::bytes::high32(v));
}
