//! The log as the writer uses it: opening the internal journal for writing (`Log::open`, and why it
//! cannot be: `LogOpenError`), and the log's ring of blocks: positions in it, its free space, where a
//! log block lies on the device, and writing whole blocks to it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Instant;

use super::bytes::index;
use super::error::{CorruptKind, Error, Object, Result};
use super::fs::Filesystem;
use super::jbd2::{INCOMPAT_REVOKE, JournalSuperblock};
use super::journal::Journal;
use super::journal_write::{DEFAULT_COMMIT_INTERVAL, Log, LogState};

/// A journal fragmented into more pieces than this is not written (see [`Journal::runs`]).
const MAX_RUNS: usize = 4096;
/// Memory a running transaction may hold before it is committed, whatever the journal's size.
const MAX_TRANSACTION_BYTES: usize = 32 << 20;

/// Why the journal cannot be written to: the mount is then read-only, and says this.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LogOpenError {
    /// A journal the engine does not write (an external one, unknown features), as [`Journal::open`]
    /// says.
    #[error("{0}")]
    Unsupported(String),
    /// The journal or its superblock is damaged.
    #[error("the journal cannot be opened ({0}); run e2fsck")]
    Damaged(Error),
    #[error("the journal holds transactions but the superblock does not ask for their recovery; run e2fsck")]
    NotRecovered,
    #[error("the journal uses v1 commit checksums, which ext4box does not write")]
    V1Checksums,
    #[error("the journal cannot name blocks past 2^32 (no 64bit journal feature)")]
    No64bit,
    /// Where its blocks lie cannot be worked out or held (a hole, a journal in too many pieces).
    #[error("the journal cannot be written ({0})")]
    Unmapped(Error),
    #[error("the journal is too small to write transactions")]
    TooSmall,
}

impl Log {
    /// Opens the internal journal of `fs` for writing. `Err` is the reason it cannot be (the mount is
    /// then read-only): an external journal, a damaged or fragmented one, or a format the writer does
    /// not produce.
    pub(crate) fn open(fs: &Filesystem) -> std::result::Result<Log, LogOpenError> {
        let journal = Journal::open(fs).map_err(|e| match e {
            Error::Unsupported(why) => LogOpenError::Unsupported(why),
            e => LogOpenError::Damaged(e),
        })?;
        let mut raw_jsb = journal.raw_sb.clone();
        let mut jsb = journal.sb.clone();
        if fs.sb.has_metadata_csum() && !jsb.has_csum() && jsb.version == 2 {
            // As the kernel at mount: a filesystem with metadata checksums gets v3 journal checksums.
            raw_jsb = jsb.with_csum_v3(&raw_jsb);
            jsb = JournalSuperblock::parse(&raw_jsb, fs.block_size()).map_err(LogOpenError::Damaged)?;
        }
        if jsb.start != 0 {
            return Err(LogOpenError::NotRecovered);
        }
        if jsb.has_v1_checksums() {
            return Err(LogOpenError::V1Checksums);
        }
        if !jsb.is_64bit() && fs.sb.blocks_count > u64::from(u32::MAX) {
            return Err(LogOpenError::No64bit);
        }
        let runs = journal.runs(MAX_RUNS).map_err(LogOpenError::Unmapped)?;
        let block_size = fs.block_size();
        let jsb_at = journal.sb_block.checked_mul(u64::from(block_size)).ok_or(LogOpenError::Damaged(
            Error::corrupt(Object::Journal, CorruptKind::JournalSuperblockOffsetOverflows),
        ))?;
        let log_blocks = index(jsb.log_end().saturating_sub(jsb.first));
        // The log holds the previous transaction and the committing one, each with its descriptors.
        let max_blocks = (log_blocks / 4).min(MAX_TRANSACTION_BYTES.checked_div(index(block_size)).unwrap_or(0));
        if max_blocks < 16 {
            return Err(LogOpenError::TooSmall);
        }
        let state = LogState {
            uuid: JournalSuperblock::uuid(&raw_jsb),
            raw_jsb,
            jsb_at,
            head: jsb.first,
            tail: 0,
            sequence: jsb.sequence,
            revokes_used: jsb.incompat & INCOMPAT_REVOKE != 0,
            aborted: false,
            jsb,
            runs,
            block_size,
            running: BTreeMap::new(),
            superblock: None,
            revoke: BTreeSet::new(),
            busy: BTreeMap::new(),
            previous: BTreeSet::new(),
            last_commit: Instant::now(),
        };
        Ok(Log { state: Mutex::new(state), max_blocks, interval: Mutex::new(DEFAULT_COMMIT_INTERVAL) })
    }
}

/// A log block outside the log: the log's state in memory no longer matches the journal's layout.
fn outside_log() -> Error {
    Error::corrupt(Object::Journal, CorruptKind::JournalBlockOutOfRange)
}

/// The byte offset of device block `nr`: a block of the log or of the filesystem, both checked to lie
/// inside the device, so only a broken layout makes this fail.
pub(super) fn byte_offset(nr: u64, bs: u64) -> Result<u64> {
    nr.checked_mul(bs).ok_or_else(outside_log)
}

impl LogState {
    /// The log's length in blocks: the journal superblock keeps its end past its first block.
    pub(super) fn log_len(&self) -> u32 {
        self.jsb.log_end().saturating_sub(self.jsb.first)
    }

    /// Log block `n` as a position in the log, from 0 at its first block.
    fn position(&self, n: u32) -> Result<u32> {
        n.checked_sub(self.jsb.first).filter(|&p| p < self.log_len()).ok_or_else(outside_log)
    }

    /// The log blocks between the tail and the head are in use; the rest is free.
    pub(super) fn free(&self) -> Result<u32> {
        let len = self.log_len();
        if self.tail == 0 {
            return Ok(len);
        }
        // Both lie in the log (below 2^24 blocks): the used part runs from the tail forward to the head,
        // wrapping at the log's end.
        let (head, tail) = (self.position(self.head)?, self.position(self.tail)?);
        let used = head.checked_add(len).and_then(|n| n.checked_sub(tail)).and_then(|n| n.checked_rem(len));
        used.and_then(|used| len.checked_sub(used)).ok_or_else(outside_log)
    }

    /// Log block `n` advanced by `by`, wrapping at the end of the log.
    pub(super) fn advance(&self, n: u32, by: u32) -> Result<u32> {
        let len = self.log_len();
        let at = self.position(n)?;
        by.checked_rem(len)
            .and_then(|by| at.checked_add(by))
            .and_then(|p| p.checked_rem(len))
            .and_then(|p| self.jsb.first.checked_add(p))
            .ok_or_else(outside_log)
    }

    /// The device block holding log block `n`.
    fn physical(&self, n: u32) -> Option<(u64, u32)> {
        let i = self.runs.partition_point(|r| r.0 <= n).checked_sub(1)?;
        let &(first, pblk, len) = self.runs.get(i)?;
        let within = n.checked_sub(first)?;
        let left = len.checked_sub(within).filter(|&left| left > 0)?;
        // The run lies inside the filesystem (checked when the journal was mapped).
        Some((pblk.checked_add(u64::from(within))?, left))
    }

    /// Writes `bytes` (whole blocks) to the log from log block `at`, wrapping at the end of the log, in
    /// as few writes as the journal's layout on the device allows.
    pub(super) fn write_log(&self, fs: &Filesystem, at: u32, bytes: &[u8]) -> Result<()> {
        let bs = index(self.block_size);
        let mut n = at;
        let mut rest = bytes;
        while !rest.is_empty() {
            let (pblk, run) = self.physical(n).ok_or(Error::corrupt(Object::Journal, CorruptKind::LogBlockUnmapped))?;
            let to_end = self.jsb.log_end().saturating_sub(n);
            // Whole blocks, fewer than the log holds (below 2^24), so the byte count fits.
            let left = u32::try_from(rest.len().checked_div(bs).unwrap_or(0)).unwrap_or(u32::MAX);
            let blocks = left.min(run).min(to_end).max(1);
            let (now, later) = rest.split_at(rest.len().min(index(blocks).saturating_mul(bs)));
            fs.device().write_all_at(now, byte_offset(pblk, u64::from(self.block_size))?)?;
            rest = later;
            n = self.advance(n, blocks)?;
        }
        Ok(())
    }
}
