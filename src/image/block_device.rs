//! What a block device under the filesystem needs beyond reads and writes: BLKDISCARD, so that
//! `-o discard` and `fstrim` tell an SSD or a thin volume which blocks are free. (fallocate's
//! PUNCH_HOLE on a block device asks for zeroes written without fallback instead, which many
//! devices refuse and none takes as a trim.)

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

// BLKDISCARD is _IO(0x12, 119) in <linux/fs.h>, its argument a pointer to { start, length } in bytes.
nix::ioctl_write_ptr_bad!(blkdiscard_ioctl, nix::request_code_none!(0x12, 119), [u64; 2]);

/// Discards `len` bytes at byte `offset` of the block device `file` (BLKDISCARD). The range must be
/// aligned to the device's logical block size, as the engine's block ranges are.
pub fn blkdiscard(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let range = [offset, len];
    // SAFETY: the descriptor is open for as long as `file` is borrowed, and BLKDISCARD reads the two
    // u64 at the pointer, which points at `range` on this stack frame, alive across the call.
    unsafe { blkdiscard_ioctl(file.as_raw_fd(), &range) }.map(|_| ()).map_err(io::Error::from)
}
