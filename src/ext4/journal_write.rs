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
//!
//! Here: the running transaction and the commit and checkpoint sequence. Opening the log and its ring of
//! blocks (positions, free space, where a log block lies on the device) are in `journal_log.rs`; the
//! blocks a transaction is logged as (layout, descriptors and tags, revoke and commit blocks) in
//! `journal_blocks.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::bytes::index;
use super::error::{CorruptKind, Error, Object, Result};
use super::fs::Filesystem;
use super::jbd2::{INCOMPAT_REVOKE, JournalSuperblock};
use super::journal_log::byte_offset;

/// Freed block ranges a running transaction may collect before it is committed (each is a few bytes).
const MAX_FREED_RANGES: usize = 1 << 16;
/// The commit interval when the mount does not name one (`commit=`), as the kernel's.
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_secs(5);

/// The journal as the write side uses it.
pub(crate) struct Log {
    pub(super) state: Mutex<LogState>,
    /// Blocks a running transaction may hold before it commits.
    pub(super) max_blocks: usize,
    pub(super) interval: Mutex<Duration>,
}

pub(super) struct LogState {
    pub(super) jsb: JournalSuperblock,
    pub(super) raw_jsb: Vec<u8>,
    /// Where the journal superblock lies on the device (a byte offset).
    pub(super) jsb_at: u64,
    pub(super) uuid: [u8; 16],
    /// Where the log lives: (first log block, first device block, length).
    pub(super) runs: Vec<(u32, u64, u32)>,
    pub(super) block_size: u32,
    /// Metadata blocks changed by operations that finished since the last commit: their newest contents.
    pub(super) running: BTreeMap<u64, Arc<Vec<u8>>>,
    /// The superblock (1024 bytes) as the last finished operation left it.
    pub(super) superblock: Option<Vec<u8>>,
    /// Blocks that must not be replayed from older transactions any more (freed metadata).
    pub(super) revoke: BTreeSet<u64>,
    /// Blocks freed since the last commit (start → length): not to be allocated until it.
    pub(super) busy: BTreeMap<u64, u64>,
    /// Home blocks the previous transaction logged: still replayable until the next commit.
    pub(super) previous: BTreeSet<u64>,
    /// Next log block to write.
    pub(super) head: u32,
    /// First log block of the oldest transaction recovery would replay, as the journal superblock on
    /// disk says; 0 when the log is empty.
    pub(super) tail: u32,
    /// Sequence number of the running transaction.
    pub(super) sequence: u32,
    /// Whether revoke records were ever written (the journal superblock then names the feature).
    pub(super) revokes_used: bool,
    /// A commit failed part way: the log's state on disk is unknown, so nothing is written any more
    /// (jbd2's journal abort). The last complete commit on disk still replays.
    pub(super) aborted: bool,
    pub(super) last_commit: Instant,
}

impl Log {
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

impl LogState {
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
