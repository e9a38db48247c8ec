//! Journaled writes: gathering finished write operations into jbd2 transactions and committing them.
//!
//! Every write operation ([`super::txn::Txn`]) ends by handing its changed metadata blocks to the
//! *running transaction*, held in memory (reads see it before the disk), together with the superblock
//! as that operation left it. A commit (fsync, the commit interval, a full transaction, unmount) writes
//! the running transaction to the log in ordered mode:
//!
//! 1. descriptor blocks with the logged copies, then revoke blocks; flush. File data is written to its
//!    blocks before the operation that points at it finishes, so this flush also puts the data on disk
//!    before any commit block that refers to it.
//! 2. the commit block, and the journal superblock moved to this transaction's first block (the previous
//!    transaction's home writes became durable with step 1's flush); flush.
//! 3. the blocks written home, unflushed: the next commit's first flush makes them durable, and until then
//!    the journal superblock still points at this transaction, so a crash replays it.
//!
//! The log therefore holds at most two transactions: the one committing and the one before it. Blocks
//! freed by operations not yet committed are not handed out again until their transaction has committed
//! (a crash would otherwise leave the old owner, still on disk, pointing at the new owner's data), and
//! freed blocks the log still holds copies of get revoke records, so a replay cannot write old metadata
//! over what the block holds now.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::bytes::{high32, index, low16, low32};
use super::checksum::crc32c;
use super::error::{CorruptKind, Error, Object, Result};
use super::fs::Filesystem;
use super::jbd2::{
    BLOCKTYPE_COMMIT, BLOCKTYPE_DESCRIPTOR, BLOCKTYPE_REVOKE, INCOMPAT_REVOKE, JBD2_MAGIC, JournalSuperblock,
    TAG_ESCAPE, TAG_LAST, TAG_SAME_UUID, put_be32,
};
use super::journal::Journal;

/// A journal fragmented into more pieces than this is not written (see [`Journal::runs`]).
const MAX_RUNS: usize = 4096;
/// Memory a running transaction may hold before it is committed, whatever the journal's size.
const MAX_TRANSACTION_BYTES: usize = 32 << 20;
/// Freed block ranges a running transaction may collect before it is committed (each is a few bytes).
const MAX_FREED_RANGES: usize = 1 << 16;
/// The commit interval when the mount does not name one (`commit=`), as the kernel's.
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_secs(5);
/// A log block's header (`journal_header_t`: magic, block type, sequence).
const HEADER_BYTES: usize = 12;
/// What a descriptor block holds besides its tags: the header, and the journal's UUID after the first tag.
const DESCRIPTOR_OVERHEAD: usize = HEADER_BYTES + 16;
/// A revoke block's header: `journal_header_t` and `r_count`.
const REVOKE_HEADER: usize = HEADER_BYTES + 4;
/// The checksum tail of a descriptor or revoke block (v2/v3).
const TAIL_BYTES: usize = 4;

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

/// The journal as the write side uses it.
pub(crate) struct Log {
    state: Mutex<LogState>,
    /// Blocks a running transaction may hold before it commits.
    max_blocks: usize,
    interval: Mutex<Duration>,
}

struct LogState {
    jsb: JournalSuperblock,
    raw_jsb: Vec<u8>,
    /// Where the journal superblock lies on the device (a byte offset).
    jsb_at: u64,
    uuid: [u8; 16],
    /// Where the log lives: (first log block, first device block, length).
    runs: Vec<(u32, u64, u32)>,
    block_size: u32,
    /// Metadata blocks changed by operations that finished since the last commit: their newest contents.
    running: BTreeMap<u64, Arc<Vec<u8>>>,
    /// The superblock (1024 bytes) as the last finished operation left it.
    superblock: Option<Vec<u8>>,
    /// Blocks that must not be replayed from older transactions any more (freed metadata).
    revoke: BTreeSet<u64>,
    /// Blocks freed since the last commit (start → length): not to be allocated until it.
    busy: BTreeMap<u64, u64>,
    /// Home blocks the previous transaction logged: still replayable until the next commit.
    previous: BTreeSet<u64>,
    /// Next log block to write.
    head: u32,
    /// First log block of the oldest transaction recovery would replay, as the journal superblock on
    /// disk says; 0 when the log is empty.
    tail: u32,
    /// Sequence number of the running transaction.
    sequence: u32,
    /// Whether revoke records were ever written (the journal superblock then names the feature).
    revokes_used: bool,
    /// A commit failed part way: the log's state on disk is unknown, so nothing is written any more
    /// (jbd2's journal abort). The last complete commit on disk still replays.
    aborted: bool,
    last_commit: Instant,
}

/// How many log blocks a transaction takes.
struct Layout {
    per_descriptor: usize,
    per_revoke: usize,
    total: u32,
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

    fn lock(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_interval(&self, interval: Duration) {
        *self.interval.lock().unwrap_or_else(|p| p.into_inner()) = interval;
    }

    /// The newest contents of metadata block `nr` when a finished operation changed it since the last
    /// commit (the disk does not hold them yet).
    pub(crate) fn get(&self, nr: u64) -> Option<Arc<Vec<u8>>> {
        self.lock().running.get(&nr).cloned()
    }

    /// The ranges freed since the last commit (not to be reused before it) that overlap
    /// `start..end`, clipped to it.
    pub(crate) fn busy_in(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let st = self.lock();
        let mut out = Vec::new();
        // Ranges do not overlap, so walking back from `end` can stop at the first that ends before `start`.
        for (&s, &l) in st.busy.range(..end).rev() {
            let e = s.saturating_add(l);
            if e <= start {
                break;
            }
            out.push((s.max(start), e.min(end)));
        }
        out
    }

    pub(crate) fn has_busy(&self) -> bool {
        !self.lock().busy.is_empty()
    }

    /// Adds a finished operation: its changed blocks, the superblock it left, and the block ranges it
    /// freed. Commits first when the operation would overfill the running transaction, and after when
    /// the transaction is full. The caller holds the filesystem's write lock.
    pub(crate) fn add(
        &self,
        fs: &Filesystem,
        blocks: Vec<(u64, Arc<Vec<u8>>)>,
        superblock: Vec<u8>,
        freed: &[(u64, u64)],
    ) -> Result<()> {
        let full = {
            let st = self.lock();
            // Lengths of collections in memory: their sum does not reach `usize::MAX`.
            !st.running.is_empty() && st.running.len().saturating_add(blocks.len()) > self.max_blocks
        };
        if full {
            self.commit(fs)?;
        }
        let mut st = self.lock();
        for (nr, data) in blocks {
            // Logged again in this transaction: its revoke would cancel the new copy at replay.
            st.revoke.remove(&nr);
            st.running.insert(nr, data);
        }
        st.superblock = Some(superblock);
        for &(start, len) in freed {
            let end = start.saturating_add(len);
            let dropped: Vec<u64> = st.running.range(start..end).map(|(&nr, _)| nr).collect();
            for nr in dropped {
                st.running.remove(&nr);
                st.revoke.insert(nr);
            }
            let replayable: Vec<u64> = st.previous.range(start..end).copied().collect();
            st.revoke.extend(replayable);
            st.busy.insert(start, len);
        }
        let full = st.running.len() >= self.max_blocks
            || st.busy.len() >= MAX_FREED_RANGES
            || st.revoke.len() >= self.max_blocks;
        drop(st);
        if full { self.commit(fs) } else { Ok(()) }
    }

    /// Commits when the commit interval has passed since the last commit and there is something to
    /// commit. The caller holds the filesystem's write lock.
    pub(crate) fn commit_if_due(&self, fs: &Filesystem) -> Result<bool> {
        let interval = *self.interval.lock().unwrap_or_else(|p| p.into_inner());
        let due = {
            let st = self.lock();
            !(st.running.is_empty() && st.revoke.is_empty() && st.busy.is_empty())
                && st.last_commit.elapsed() >= interval
        };
        if due {
            self.commit(fs)?;
        }
        Ok(due)
    }

    /// Commits the running transaction (see the module comment); with nothing to commit, only makes the
    /// file data written so far durable. The caller holds the filesystem's write lock. A commit that
    /// fails part way aborts the log: the filesystem turns read-only, and what the last complete commit
    /// put on disk is what a later mount replays.
    pub(crate) fn commit(&self, fs: &Filesystem) -> Result<()> {
        let mut st = self.lock();
        if st.aborted {
            return Err(Error::ReadOnly);
        }
        let r = self.commit_locked(fs, &mut st);
        if let Err(e) = &r {
            st.aborted = true;
            fs.abort(&format!("the journal commit failed ({e}); the journal is aborted"));
        }
        r
    }

    fn commit_locked(&self, fs: &Filesystem, st: &mut LogState) -> Result<()> {
        let dev = fs.device();
        // Freed by the operations this commit makes durable: free for good once it is on disk.
        let freed: Vec<(u64, u64)> = st.busy.iter().map(|(&s, &l)| (s, l)).collect();
        if st.running.is_empty() && st.revoke.is_empty() && st.superblock.is_none() {
            dev.flush()?;
            st.busy.clear();
            fs.discard_freed(&freed);
            st.last_commit = Instant::now();
            return Ok(());
        }
        let bs = u64::from(st.block_size);
        let mut blocks: Vec<(u64, Arc<Vec<u8>>)> = st.running.iter().map(|(&nr, d)| (nr, d.clone())).collect();
        if let Some(sb) = &st.superblock {
            let (nr, block) = superblock_block(fs, sb)?;
            blocks.retain(|(b, _)| *b != nr);
            blocks.push((nr, Arc::new(block)));
            blocks.sort_unstable_by_key(|(nr, _)| *nr);
        }
        let revokes: Vec<u64> = st.revoke.iter().copied().collect();
        let layout = st.layout(blocks.len(), revokes.len());
        let log_blocks = st.log_len();
        // Strictly less than the free space: the head never catches up with the tail, so a full log is
        // never taken for an empty one.
        if layout.total >= st.free()? {
            st.checkpoint(fs)?;
        }
        if layout.total >= log_blocks {
            // Larger than the whole log (one operation on an image with a tiny journal): written home
            // directly, with the log empty, after marking the filesystem not clean (flushed first), so a
            // crash in the middle leaves an image e2fsck checks in full. Rare enough to say so.
            tracing::warn!(blocks = blocks.len(), "transaction larger than the journal: written without it");
            fs.mark_not_clean()?;
            write_home(fs, &blocks, bs)?;
            dev.flush()?;
            st.finish(&blocks, false);
            fs.discard_freed(&freed);
            return Ok(());
        }
        let start = st.head;
        let sequence = st.sequence;
        // Step 1: descriptors, logged copies and revoke records; the superblock points here if the log
        // was empty (no transaction for it to point at before).
        let image = st.log_image(&blocks, &revokes, &layout);
        st.write_log(fs, start, &image)?;
        let incompat = if revokes.is_empty() && !st.revokes_used { 0 } else { INCOMPAT_REVOKE };
        if st.tail == 0 {
            let raw = st.jsb.positioned(&st.raw_jsb, sequence, start, incompat);
            dev.write_all_at(&raw, st.jsb_at)?;
            st.raw_jsb = raw;
        }
        dev.flush()?;
        // Step 2: the commit block, and the tail moved past the previous transaction (its home copies
        // are durable now).
        // `total` counts the commit block: it is at least 1.
        let commit_at = st.advance(start, layout.total.saturating_sub(1))?;
        let commit = st.commit_block(sequence);
        st.write_log(fs, commit_at, &commit)?;
        if st.tail != 0 && st.tail != start {
            let raw = st.jsb.positioned(&st.raw_jsb, sequence, start, incompat);
            dev.write_all_at(&raw, st.jsb_at)?;
            st.raw_jsb = raw;
        }
        dev.flush()?;
        st.tail = start;
        st.revokes_used |= incompat != 0;
        st.head = st.advance(commit_at, 1)?;
        // Step 3: home, unflushed.
        write_home(fs, &blocks, bs)?;
        st.finish(&blocks, true);
        fs.discard_freed(&freed);
        Ok(())
    }

    /// Commits, makes the home copies durable and empties the log: a clean unmount. The caller holds
    /// the filesystem's write lock.
    pub(crate) fn close(&self, fs: &Filesystem) -> Result<()> {
        self.commit(fs)?;
        self.lock().checkpoint(fs)
    }
}

/// A log block outside the log: the log's state in memory no longer matches the journal's layout.
fn outside_log() -> Error {
    Error::corrupt(Object::Journal, CorruptKind::JournalBlockOutOfRange)
}

/// The byte offset of device block `nr`: a block of the log or of the filesystem, both checked to lie
/// inside the device, so only a broken layout makes this fail.
fn byte_offset(nr: u64, bs: u64) -> Result<u64> {
    nr.checked_mul(bs).ok_or_else(outside_log)
}

impl LogState {
    /// The log's length in blocks: the journal superblock keeps its end past its first block.
    fn log_len(&self) -> u32 {
        self.jsb.log_end().saturating_sub(self.jsb.first)
    }

    /// Log block `n` as a position in the log, from 0 at its first block.
    fn position(&self, n: u32) -> Result<u32> {
        n.checked_sub(self.jsb.first).filter(|&p| p < self.log_len()).ok_or_else(outside_log)
    }

    /// The log blocks between the tail and the head are in use; the rest is free.
    fn free(&self) -> Result<u32> {
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
    fn advance(&self, n: u32, by: u32) -> Result<u32> {
        let len = self.log_len();
        let at = self.position(n)?;
        by.checked_rem(len)
            .and_then(|by| at.checked_add(by))
            .and_then(|p| p.checked_rem(len))
            .and_then(|p| self.jsb.first.checked_add(p))
            .ok_or_else(outside_log)
    }

    fn layout(&self, blocks: usize, revokes: usize) -> Layout {
        // A block holds at least 1 KiB, a tag at most 16 bytes and a revoke record 8: the subtractions
        // leave room for dozens of either, and the divisors are not zero (`max(1)` only keeps
        // `chunks` from panicking).
        let bs = index(self.block_size);
        let tail = if self.jsb.has_csum() { TAIL_BYTES } else { 0 };
        let tag = self.jsb.tag_bytes();
        let per_descriptor =
            bs.saturating_sub(DESCRIPTOR_OVERHEAD).saturating_sub(tail).checked_div(tag).unwrap_or(0).max(1);
        let width = if self.jsb.is_64bit() { 8 } else { 4 };
        let per_revoke = bs.saturating_sub(REVOKE_HEADER).saturating_sub(tail).checked_div(width).unwrap_or(0).max(1);
        let descriptors = blocks.div_ceil(per_descriptor);
        let revoke_blocks = revokes.div_ceil(per_revoke);
        // Saturating is harmless: a transaction that large is larger than any log, and written without it.
        let total = descriptors.saturating_add(blocks).saturating_add(revoke_blocks).saturating_add(1);
        Layout { per_descriptor, per_revoke, total: u32::try_from(total).unwrap_or(u32::MAX) }
    }

    fn header(&self, kind: u32, sequence: u32) -> Vec<u8> {
        let mut b = vec![0u8; index(self.block_size)];
        put_be32(&mut b, 0, JBD2_MAGIC);
        put_be32(&mut b, 4, kind);
        put_be32(&mut b, 8, sequence);
        b
    }

    /// Seals a descriptor or revoke block with its tail checksum (v2/v3).
    fn seal_tail(&self, b: &mut [u8]) {
        if let Some(at) = b.len().checked_sub(TAIL_BYTES).filter(|_| self.jsb.has_csum()) {
            put_be32(b, at, 0);
            let c = crc32c(self.jsb.csum_seed, b);
            put_be32(b, at, c);
        }
    }

    /// Descriptor blocks, logged copies (escaped where they begin with the journal's magic number) and
    /// revoke blocks of the running transaction, as consecutive log blocks (without the commit block).
    fn log_image(&self, blocks: &[(u64, Arc<Vec<u8>>)], revokes: &[u64], layout: &Layout) -> Vec<u8> {
        let bs = index(self.block_size);
        let seq = self.sequence;
        // A capacity only; the transaction fits in the log (below 2^24 blocks), so this is exact.
        let mut out = Vec::with_capacity(index(layout.total.saturating_sub(1)).saturating_mul(bs));
        let seq_seed = crc32c(self.jsb.csum_seed, &seq.to_be_bytes());
        for chunk in blocks.chunks(layout.per_descriptor) {
            let mut desc = self.header(BLOCKTYPE_DESCRIPTOR, seq);
            // The tags follow the header, then zeros to the tail: the layout leaves them room.
            desc.truncate(HEADER_BYTES);
            let mut copies = Vec::with_capacity(chunk.len().saturating_mul(bs));
            // Chunks are never empty.
            let last = chunk.len().saturating_sub(1);
            for (i, (home, data)) in chunk.iter().enumerate() {
                let mut copy = data.as_ref().clone();
                let mut flags = 0;
                if copy.get(0..4) == Some(&JBD2_MAGIC.to_be_bytes()[..]) {
                    copy[0..4].fill(0);
                    flags |= TAG_ESCAPE;
                }
                if i > 0 {
                    flags |= TAG_SAME_UUID;
                }
                if i == last {
                    flags |= TAG_LAST;
                }
                let csum = if self.jsb.has_csum() { crc32c(seq_seed, &copy) } else { 0 };
                desc.extend_from_slice(&self.tag(*home, flags, csum));
                if i == 0 {
                    desc.extend_from_slice(&self.uuid);
                }
                copies.extend_from_slice(&copy);
            }
            desc.resize(bs, 0);
            self.seal_tail(&mut desc);
            out.extend_from_slice(&desc);
            out.extend_from_slice(&copies);
        }
        for chunk in revokes.chunks(layout.per_revoke) {
            let mut b = self.header(BLOCKTYPE_REVOKE, seq);
            // The records follow the header and r_count: big-endian, 64 bits with the 64bit feature (a
            // journal without it only serves filesystems below 2^32 blocks).
            b.truncate(REVOKE_HEADER);
            for &nr in chunk {
                if self.jsb.is_64bit() {
                    b.extend_from_slice(&nr.to_be_bytes());
                } else {
                    b.extend_from_slice(&low32(nr).to_be_bytes());
                }
            }
            // r_count: the bytes in use, header included (within the block, so below 2^17).
            let used = u32::try_from(b.len()).unwrap_or(u32::MAX);
            b.resize(bs, 0);
            put_be32(&mut b, 12, used);
            self.seal_tail(&mut b);
            out.extend_from_slice(&b);
        }
        out
    }

    /// Descriptor tag `journal_block_tag3_t` (v3 checksums) or `journal_block_tag_t` for home block
    /// `home`, `tag_bytes` long. A journal without the 64bit feature only serves filesystems below 2^32
    /// blocks (see [`Log::open`]).
    fn tag(&self, home: u64, flags: u32, csum: u32) -> Vec<u8> {
        let mut t = vec![0u8; self.jsb.tag_bytes()];
        put_be32(&mut t, 0, low32(home));
        if self.jsb.csum_v3() {
            put_be32(&mut t, 4, flags);
            put_be32(&mut t, 8, high32(home));
            put_be32(&mut t, 12, csum);
        } else {
            // 16-bit fields: v2 keeps the checksum's low half; the flags all fit.
            t[4..6].copy_from_slice(&low16(csum).to_be_bytes());
            t[6..8].copy_from_slice(&low16(flags).to_be_bytes());
            if self.jsb.is_64bit() {
                put_be32(&mut t, 8, high32(home));
            }
        }
        t
    }

    fn commit_block(&self, sequence: u32) -> Vec<u8> {
        let mut b = self.header(BLOCKTYPE_COMMIT, sequence);
        let now = super::inode::Timestamp::now();
        // h_commit_sec: the seconds as the kernel stores them, a 64-bit two's-complement value.
        b[0x30..0x38].copy_from_slice(&now.sec.to_be_bytes());
        put_be32(&mut b, 0x38, now.nsec);
        if self.jsb.has_csum() {
            let c = crc32c(self.jsb.csum_seed, &b);
            put_be32(&mut b, 0x10, c);
        }
        b
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
    fn write_log(&self, fs: &Filesystem, at: u32, bytes: &[u8]) -> Result<()> {
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

    /// Makes every home copy durable and empties the log on disk.
    fn checkpoint(&mut self, fs: &Filesystem) -> Result<()> {
        let dev = fs.device();
        dev.flush()?;
        if self.tail != 0 {
            let raw = self.jsb.positioned(&self.raw_jsb, self.sequence, 0, 0);
            dev.write_all_at(&raw, self.jsb_at)?;
            dev.flush()?;
            self.raw_jsb = raw;
            self.tail = 0;
        }
        self.previous.clear();
        self.head = self.jsb.first;
        Ok(())
    }

    /// The running transaction is on disk: start the next one.
    fn finish(&mut self, blocks: &[(u64, Arc<Vec<u8>>)], logged: bool) {
        self.previous = if logged { blocks.iter().map(|(nr, _)| *nr).collect() } else { BTreeSet::new() };
        self.running.clear();
        self.superblock = None;
        self.revoke.clear();
        self.busy.clear();
        // Transaction ids wrap at 2^32 by design (jbd2 compares them across the wrap).
        self.sequence = self.sequence.wrapping_add(1);
        self.last_commit = Instant::now();
    }
}

/// The block holding the superblock, with `sb` (1024 bytes) in place and the rest as on disk.
fn superblock_block(fs: &Filesystem, sb: &[u8]) -> Result<(u64, Vec<u8>)> {
    let bs = fs.block_size();
    let (nr, off) = super::fs::superblock_block(bs);
    let mut block = vec![0u8; index(bs)];
    fs.device().read_exact_at(&mut block, byte_offset(nr, u64::from(bs))?)?;
    // 1024 bytes at byte 1024: inside block 1 of 1 KiB, or block 0 of a larger size.
    block
        .get_mut(off..)
        .and_then(|rest| rest.get_mut(..sb.len()))
        .ok_or(Error::corrupt(Object::Superblock, CorruptKind::BlockNumberOutOfRange))?
        .copy_from_slice(sb);
    Ok((nr, block))
}

/// Writes blocks (sorted by number) to their homes, one write per run of consecutive blocks.
fn write_home(fs: &Filesystem, blocks: &[(u64, Arc<Vec<u8>>)], bs: u64) -> Result<()> {
    for run in blocks.chunk_by(|(a, _), (b, _)| a.checked_add(1) == Some(*b)) {
        let Some((first, data)) = run.first() else { continue };
        let at = byte_offset(*first, bs)?;
        if run.len() == 1 {
            fs.device().write_all_at(data, at)?;
        } else {
            let buf = run.iter().map(|(_, d)| d.as_slice()).collect::<Vec<&[u8]>>().concat();
            fs.device().write_all_at(&buf, at)?;
        }
    }
    Ok(())
}
