//! FUSE_INIT: which protocol version and capabilities both sides speak, and how large requests may be.

use super::abi::{self, InitIn, InitOut, init_flags};

/// The largest request payload asked for: 256 pages, 1 MiB (the kernel's default `max_pages_limit`).
/// Reads and writes of up to this size travel in one request.
pub const MAX_PAGES: u16 = 256;
pub const PAGE_SIZE: u32 = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InitError {
    #[error("the kernel speaks FUSE {0}.{1}; this server needs 7.{min} or later", min = abi::MIN_MINOR_VERSION)]
    Version(u32, u32),
}

/// What the INIT exchange settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The kernel's minor version (the smaller of ours and its own is spoken).
    pub minor: u32,
    /// The capabilities both sides have (`init_flags`, 64 bits).
    pub flags: u64,
    /// The largest WRITE payload the kernel will send, and the largest READ it will ask for.
    pub max_write: u32,
    pub max_pages: u16,
}

impl Negotiated {
    pub fn has(&self, flag: u64) -> bool {
        self.flags & flag == flag
    }

    /// The request buffer a /dev/fuse reader needs: the largest write plus its headers.
    pub fn request_buffer(&self) -> usize {
        (self.max_write as usize + PAGE_SIZE as usize).max(abi::MIN_READ_BUFFER)
    }

    /// The payload an io_uring entry needs (the kernel's `max_payload_sz`).
    pub fn ring_payload(&self) -> usize {
        (self.max_write as usize).max(usize::from(self.max_pages) * PAGE_SIZE as usize).max(abi::MIN_READ_BUFFER)
    }
}

/// The 64 capability bits the kernel offers.
pub fn offered(init: &InitIn) -> u64 {
    let high = if u64::from(init.flags) & init_flags::INIT_EXT != 0 { u64::from(init.flags2) << 32 } else { 0 };
    u64::from(init.flags) | high
}

/// The reply to `init`, granting the `wanted` capabilities the kernel offers.
pub fn negotiate(init: &InitIn, wanted: u64) -> Result<(InitOut, Negotiated), InitError> {
    if init.major != abi::KERNEL_VERSION || init.minor < abi::MIN_MINOR_VERSION {
        return Err(InitError::Version(init.major, init.minor));
    }
    let offered = offered(init);
    // MAX_PAGES and BIG_WRITES are asked for always: they are what lets requests grow past a page.
    let flags = offered & (wanted | init_flags::MAX_PAGES | init_flags::BIG_WRITES);
    let max_pages = if flags & init_flags::MAX_PAGES != 0 { MAX_PAGES } else { 32 };
    let max_write = u32::from(max_pages) * PAGE_SIZE;
    let ext = offered & init_flags::INIT_EXT;
    let out = InitOut {
        major: abi::KERNEL_VERSION,
        minor: abi::KERNEL_MINOR_VERSION,
        max_readahead: init.max_readahead,
        flags: ((flags | ext) & 0xffff_ffff) as u32,
        // Background requests (readahead, writeback) the kernel keeps in flight: enough for two queues'
        // worth of writeback without flooding a server that has a handful of threads.
        max_background: 64,
        congestion_threshold: 48,
        max_write,
        // Timestamps are kept to the nanosecond.
        time_gran: 1,
        max_pages,
        flags2: if ext != 0 { (flags >> 32) as u32 } else { 0 },
        ..Default::default()
    };
    let minor = init.minor.min(abi::KERNEL_MINOR_VERSION);
    Ok((out, Negotiated { minor, flags: flags & !init_flags::INIT_EXT, max_write, max_pages }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel(flags: u64) -> InitIn {
        InitIn {
            major: 7,
            minor: 45,
            max_readahead: 1 << 17,
            flags: (flags | init_flags::INIT_EXT) as u32,
            flags2: (flags >> 32) as u32,
            ..Default::default()
        }
    }

    #[test]
    fn grants_only_what_both_sides_have() {
        let offered = init_flags::ASYNC_READ | init_flags::MAX_PAGES | init_flags::OVER_IO_URING;
        let (out, n) = negotiate(&kernel(offered), init_flags::OVER_IO_URING | init_flags::WRITEBACK_CACHE).unwrap();
        assert!(n.has(init_flags::OVER_IO_URING) && n.has(init_flags::MAX_PAGES));
        assert!(!n.has(init_flags::WRITEBACK_CACHE) && !n.has(init_flags::ASYNC_READ));
        assert_eq!(out.flags2, 1 << 9);
        assert_eq!((out.max_write, out.max_pages), (1 << 20, 256));
        assert_ne!(u64::from(out.flags) & init_flags::INIT_EXT, 0);
    }

    #[test]
    fn without_init_ext_the_high_bits_are_not_read() {
        let mut k = kernel(init_flags::OVER_IO_URING);
        k.flags &= !(init_flags::INIT_EXT as u32);
        let (out, n) = negotiate(&k, init_flags::OVER_IO_URING).unwrap();
        assert!(!n.has(init_flags::OVER_IO_URING));
        assert_eq!(out.flags2, 0);
        assert_eq!(n.max_write, 32 * 4096);
    }

    #[test]
    fn old_kernels_are_refused() {
        let k = InitIn { major: 7, minor: 26, ..Default::default() };
        assert_eq!(negotiate(&k, 0).unwrap_err(), InitError::Version(7, 26));
    }
}
