//! The checksums ext4 uses: crc32c (metadata_csum) and crc16 (the older gdt_csum).

/// crc32c as the kernel's `ext4_chksum` computes it: the raw CRC, with no inversion before or after.
///
/// The `crc32c` crate implements the usual convention (invert in and out), so invert around it.
pub fn crc32c(seed: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!seed, data)
}

/// crc16 (polynomial 0x8005, reflected) as e2fsprogs' and the kernel's `crc16` compute it.
pub fn crc16(mut crc: u16, data: &[u8]) -> u16 {
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xA001 } else { crc >> 1 };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_kernel_convention() {
        // The standard check value of CRC-32C over "123456789" is 0xE3069283 with inversion in and out.
        assert_eq!(!crc32c(!0, b"123456789"), 0xE306_9283);
        // Chaining equals one pass.
        assert_eq!(crc32c(crc32c(7, b"1234"), b"56789"), crc32c(7, b"123456789"));
    }

    #[test]
    fn crc16_check_value() {
        // CRC-16/ARC of "123456789" is 0xBB3D.
        assert_eq!(crc16(0, b"123456789"), 0xBB3D);
    }
}
