//! Multiple mount protection (`mmp`; `Documentation/filesystems/ext4/mmp.rst`, the kernel's
//! `fs/ext4/mmp.c`): a block, named by the superblock's `s_mmp_block`, that a writer rewrites every
//! `s_mmp_update_interval` seconds with a new sequence number, so that another host (or e2fsck) about to
//! open the image sees it change and stays away.
//!
//! Opening for writing follows the kernel's `ext4_multi_mount_protect`: a sequence of `SEQ_CLEAN` lets
//! the open go on at once, `SEQ_FSCK` refuses it (e2fsck is running), anything else is waited on for
//! about twice the check interval and refuses the open if it changed meanwhile (another node is
//! writing). The opener then writes a random sequence, waits the same time, and refuses if that changed.
//! While mounted, `Mmp::update` is kmmpd's loop body: the sequence goes up by one and the block is
//! written with this node's name. Unlike kmmpd, which reads the block back only when its own update came
//! late, every update first checks that the block is still the one this mount wrote: a foreign write
//! means another node took the image, and the mount stops writing. A clean unmount writes `SEQ_CLEAN`.
//!
//! The record (`struct mmp_struct`) fills the first 1 KiB of the block:
//!
//! | offset | field | |
//! |---|---|---|
//! | 0x0 | `mmp_magic` | 0x004D4D50 |
//! | 0x4 | `mmp_seq` | the sequence |
//! | 0x8 | `mmp_time` | le64 seconds of the last update |
//! | 0x10 | `mmp_nodename[64]` | the writer's host name |
//! | 0x50 | `mmp_bdevname[32]` | the writer's name for the device |
//! | 0x70 | `mmp_check_interval` | le16 seconds |
//! | 0x3FC | `mmp_checksum` | crc32c(filesystem seed, bytes 0..0x3FC), with metadata_csum |

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use super::bytes::{le16, le32};
use super::bytes_mut::{put16, put32, put64};
use super::checksum::crc32c;
use super::device::BlockDevice;
use super::error::{CorruptKind, Error, Object, Result};
use super::inode::Timestamp;
use super::superblock::Superblock;

const MAGIC: u32 = 0x004D_4D50;
/// The sequence of a filesystem nobody has open for writing.
const SEQ_CLEAN: u32 = 0xFF4D_4D50;
/// The sequence e2fsck writes while it checks the filesystem.
const SEQ_FSCK: u32 = 0xE24D_4D50;
/// The largest sequence a writer uses (larger values are the markers above).
const SEQ_MAX: u32 = 0xE24D_4D4F;
/// The check interval is twice the time an update takes, within these bounds (seconds).
const CHECK_MULT: u64 = 2;
const MIN_CHECK: u64 = 5;
const MAX_CHECK: u64 = 300;

const SIZE: usize = 1024;
const SEQ: usize = 0x4;
const TIME: usize = 0x8;
const NODENAME: std::ops::Range<usize> = 0x10..0x50;
const BDEVNAME: std::ops::Range<usize> = 0x50..0x70;
const CHECK_INTERVAL: usize = 0x70;
const CHECKSUM: usize = 0x3FC;

/// Who writes the block: shown to whoever finds the image busy.
#[derive(Debug, Clone, Default)]
pub struct Owner {
    /// The host name (`mmp_nodename`).
    pub node: String,
    /// The device or image, as this host names it (`mmp_bdevname`).
    pub device: String,
}

/// How the open waits (a parameter so that fuzzing does not sleep).
pub type Sleep = fn(Duration);

/// Sleeps on a condition variable nobody signals: a futex wait, where the worker's seccomp policy has no
/// nanosleep.
pub fn sleep(d: Duration) {
    let pair = (std::sync::Mutex::new(()), std::sync::Condvar::new());
    let deadline = Instant::now().checked_add(d).unwrap_or_else(Instant::now);
    let mut guard = pair.0.lock().unwrap_or_else(|p| p.into_inner());
    while let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|l| !l.is_zero()) {
        guard = pair.1.wait_timeout(guard, left).unwrap_or_else(|p| p.into_inner()).0;
    }
}

/// The MMP block of a filesystem this mount writes.
pub(crate) struct Mmp {
    /// Byte offset of the block on the device.
    offset: u64,
    /// The checksum seed, with metadata_csum.
    seed: Option<u32>,
    /// The record as this mount last wrote it.
    record: Vec<u8>,
    update_interval: Duration,
    /// Seconds after which an update counts as late (kmmpd's adaptive `mmp_check_interval`).
    check_interval: u64,
    last_update: Instant,
}

impl Mmp {
    /// Takes the MMP block of the filesystem on `dev` for writing, as the kernel's
    /// `ext4_multi_mount_protect`, then writes the first update with `owner`. Fails with [`Error::Busy`]
    /// when another node or e2fsck has the image.
    pub(crate) fn protect(dev: &dyn BlockDevice, sb: &Superblock, owner: &Owner, sleep: Sleep) -> Result<Mmp> {
        if sb.mmp_block < u64::from(sb.first_data_block) || sb.mmp_block >= sb.blocks_count {
            return Err(Error::corrupt(Object::Mmp, CorruptKind::MmpBlockLiesOutsideFilesystem));
        }
        let offset = sb
            .mmp_block
            .checked_mul(u64::from(sb.block_size))
            .ok_or(Error::corrupt(Object::Mmp, CorruptKind::MmpBlockOffsetOverflows))?;
        let seed = sb.has_metadata_csum().then(|| sb.csum_seed());
        let read = || read_record(dev, offset, seed);
        let mut record = read()?;
        let check = u64::from(sb.mmp_update_interval).max(MIN_CHECK).max(u64::from(le16(&record, CHECK_INTERVAL)));
        let mut wait = Duration::ZERO;
        let seq = le32(&record, SEQ);
        if seq == SEQ_FSCK {
            return Err(Error::Busy(format!("e2fsck is checking the image ({})", describe(&record))));
        }
        if seq != SEQ_CLEAN {
            // Someone wrote it last and did not unmount cleanly: a crash, or a node still writing.
            wait =
                Duration::from_secs(CHECK_MULT.saturating_mul(check).saturating_add(1).min(check.saturating_add(60)));
            tracing::info!(
                seconds = wait.as_secs(),
                "multiple mount protection: the image was not released; waiting to see whether another node writes it"
            );
            sleep(wait);
            record = read()?;
            if le32(&record, SEQ) != seq {
                return Err(in_use(&record));
            }
        }
        let seq = new_sequence();
        put32(&mut record, SEQ, seq);
        write_record(dev, offset, seed, &mut record)?;
        sleep(wait);
        let seen = read()?;
        if le32(&seen, SEQ) != seq {
            return Err(in_use(&seen));
        }
        put_name(&mut record, NODENAME, &owner.node);
        put_name(&mut record, BDEVNAME, &owner.device);
        let update_interval = Duration::from_secs(u64::from(sb.mmp_update_interval.max(1)));
        let mut mmp = Mmp {
            offset,
            seed,
            record,
            update_interval,
            check_interval: CHECK_MULT.saturating_mul(update_interval.as_secs()).max(MIN_CHECK),
            last_update: Instant::now(),
        };
        mmp.write(dev)?;
        Ok(mmp)
    }

    /// Whether an update is due (every `s_mmp_update_interval` seconds).
    pub(crate) fn due(&self) -> bool {
        self.last_update.elapsed() >= self.update_interval
    }

    /// kmmpd's loop body: checks that the block is as this mount left it, then writes the next sequence.
    /// Fails with [`Error::Busy`] when another node wrote it.
    pub(crate) fn update(&mut self, dev: &dyn BlockDevice) -> Result<()> {
        let since = self.last_update.elapsed().as_secs();
        let seen = read_record(dev, self.offset, self.seed)?;
        if le32(&seen, SEQ) != le32(&self.record, SEQ) || seen[NODENAME] != self.record[NODENAME] {
            return Err(Error::Busy(format!(
                "multiple mount protection: the image was taken by another node ({}) while mounted here",
                describe(&seen)
            )));
        }
        if since > self.check_interval {
            tracing::warn!(seconds = since, "multiple mount protection: the MMP block was updated late");
        }
        self.check_interval = CHECK_MULT.saturating_mul(since).clamp(MIN_CHECK, MAX_CHECK);
        let seq = le32(&self.record, SEQ);
        put32(&mut self.record, SEQ, if seq >= SEQ_MAX { 1 } else { seq.saturating_add(1) });
        self.write(dev)
    }

    /// Marks the image released (`SEQ_CLEAN`): a clean unmount, or a mount that turned out read-only.
    pub(crate) fn release(mut self, dev: &dyn BlockDevice) -> Result<()> {
        put32(&mut self.record, SEQ, SEQ_CLEAN);
        self.write(dev)
    }

    fn write(&mut self, dev: &dyn BlockDevice) -> Result<()> {
        put64(&mut self.record, TIME, u64::try_from(Timestamp::now().sec).unwrap_or(0));
        // The check interval fits: it is at most MAX_CHECK.
        put16(&mut self.record, CHECK_INTERVAL, u16::try_from(self.check_interval).unwrap_or(u16::MAX));
        write_record(dev, self.offset, self.seed, &mut self.record)?;
        self.last_update = Instant::now();
        Ok(())
    }
}

/// Reads the record from the device itself (never a cache: another node writes it) and checks its magic
/// and checksum, as the kernel's `read_mmp_block`.
fn read_record(dev: &dyn BlockDevice, offset: u64, seed: Option<u32>) -> Result<Vec<u8>> {
    let mut record = vec![0u8; SIZE];
    dev.read_fresh(&mut record, offset)?;
    if le32(&record, 0) != MAGIC {
        return Err(Error::corrupt(Object::Mmp, CorruptKind::BadMagic));
    }
    if seed.is_some_and(|s| crc32c(s, &record[..CHECKSUM]) != le32(&record, CHECKSUM)) {
        return Err(Error::Checksum(Object::Mmp));
    }
    Ok(record)
}

/// Seals and writes the record, and flushes it to the device so that other hosts see it.
fn write_record(dev: &dyn BlockDevice, offset: u64, seed: Option<u32>, record: &mut [u8]) -> Result<()> {
    if let Some(s) = seed {
        let c = crc32c(s, &record[..CHECKSUM]);
        put32(record, CHECKSUM, c);
    }
    dev.write_all_at(record, offset)?;
    dev.flush()?;
    Ok(())
}

/// A random sequence at most `SEQ_MAX` (the kernel's `mmp_new_seq`), from the hasher std seeds from the
/// system's random source.
fn new_sequence() -> u32 {
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
        let seq = super::bytes::low32(h.finish());
        if seq <= SEQ_MAX && seq != 0 {
            return seq;
        }
    }
}

/// `name` into a NUL-padded field, cut to leave at least one NUL.
fn put_name(record: &mut [u8], field: std::ops::Range<usize>, name: &str) {
    let dst = &mut record[field];
    dst.fill(0);
    let n = name.len().min(dst.len().saturating_sub(1));
    dst[..n].copy_from_slice(&name.as_bytes()[..n]);
}

fn name_of(record: &[u8], field: std::ops::Range<usize>) -> String {
    let raw = &record[field];
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// The node and device the record names, for messages.
fn describe(record: &[u8]) -> String {
    format!("node '{}', device '{}'", name_of(record, NODENAME), name_of(record, BDEVNAME))
}

fn in_use(record: &[u8]) -> Error {
    Error::Busy(format!(
        "the image is in use on another node (multiple mount protection: {}); it can be mounted read-only",
        describe(record)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_stay_below_the_markers() {
        for _ in 0..1000 {
            let s = new_sequence();
            assert!(s != 0 && s <= SEQ_MAX);
        }
    }

    #[test]
    fn names_are_cut_and_padded() {
        let mut r = vec![0xffu8; SIZE];
        put_name(&mut r, BDEVNAME, &"x".repeat(40));
        assert_eq!(name_of(&r, BDEVNAME), "x".repeat(31));
        put_name(&mut r, NODENAME, "host");
        assert_eq!(name_of(&r, NODENAME), "host");
        assert_eq!(r[NODENAME.start + 4..NODENAME.end], [0u8; 60]);
    }
}
