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

use super::checksum::crc32c;
use super::error::{CorruptKind, Error, Result};
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
    jsb_block: u64,
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
    pub(crate) fn open(fs: &Filesystem) -> std::result::Result<Log, String> {
        let journal = Journal::open(fs).map_err(|e| match e {
            Error::Unsupported(why) => why,
            e => format!("the journal cannot be opened ({e}); run e2fsck"),
        })?;
        let mut raw_jsb = journal.raw_sb.clone();
        let mut jsb = journal.sb.clone();
        if fs.sb.has_metadata_csum() && !jsb.has_csum() && jsb.version == 2 {
            // As the kernel at mount: a filesystem with metadata checksums gets v3 journal checksums.
            raw_jsb = jsb.with_csum_v3(&raw_jsb);
            jsb = JournalSuperblock::parse(&raw_jsb, fs.block_size())
                .map_err(|e| format!("the journal cannot be opened ({e}); run e2fsck"))?;
        }
        if jsb.start != 0 {
            return Err("the journal holds transactions but the superblock does not ask for their recovery; \
                        run e2fsck"
                .into());
        }
        if jsb.has_v1_checksums() {
            return Err("the journal uses v1 commit checksums, which ext4box does not write".into());
        }
        if !jsb.is_64bit() && fs.sb.blocks_count > u64::from(u32::MAX) {
            return Err("the journal cannot name blocks past 2^32 (no 64bit journal feature)".into());
        }
        let runs = journal.runs(MAX_RUNS).map_err(|e| format!("the journal cannot be written ({e})"))?;
        let block_size = fs.block_size();
        let log_blocks = jsb.log_end().saturating_sub(jsb.first) as usize;
        // The log holds the previous transaction and the committing one, each with its descriptors.
        let max_blocks = (log_blocks / 4).min(MAX_TRANSACTION_BYTES / block_size as usize);
        if max_blocks < 16 {
            return Err("the journal is too small to write transactions".into());
        }
        let state = LogState {
            uuid: JournalSuperblock::uuid(&raw_jsb),
            raw_jsb,
            jsb_block: journal.sb_block,
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
            !st.running.is_empty() && st.running.len() + blocks.len() > self.max_blocks
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
        let log_blocks = st.jsb.log_end() - st.jsb.first;
        // Strictly less than the free space: the head never catches up with the tail, so a full log is
        // never taken for an empty one.
        if layout.total >= st.free() {
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
            dev.write_all_at(&raw, st.jsb_block * bs)?;
            st.raw_jsb = raw;
        }
        dev.flush()?;
        // Step 2: the commit block, and the tail moved past the previous transaction (its home copies
        // are durable now).
        let commit_at = st.advance(start, layout.total - 1);
        let commit = st.commit_block(sequence);
        st.write_log(fs, commit_at, &commit)?;
        if st.tail != 0 && st.tail != start {
            let raw = st.jsb.positioned(&st.raw_jsb, sequence, start, incompat);
            dev.write_all_at(&raw, st.jsb_block * bs)?;
            st.raw_jsb = raw;
        }
        dev.flush()?;
        st.tail = start;
        st.revokes_used |= incompat != 0;
        st.head = st.advance(commit_at, 1);
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
    /// The log blocks between the tail and the head are in use; the rest is free.
    fn free(&self) -> u32 {
        let len = self.jsb.log_end() - self.jsb.first;
        if self.tail == 0 {
            return len;
        }
        let used = if self.head >= self.tail { self.head - self.tail } else { len - (self.tail - self.head) };
        len - used
    }

    /// Log block `n` advanced by `by`, wrapping at the end of the log.
    fn advance(&self, n: u32, by: u32) -> u32 {
        let (first, end) = (self.jsb.first, self.jsb.log_end());
        let len = end - first;
        first + ((n - first) + by % len) % len
    }

    fn layout(&self, blocks: usize, revokes: usize) -> Layout {
        let bs = self.block_size as usize;
        let tail = if self.jsb.has_csum() { 4 } else { 0 };
        let tag = self.jsb.tag_bytes();
        // The first tag of a descriptor carries the journal's UUID (16 bytes) after it.
        let per_descriptor = 1 + (bs - 12 - tail - tag - 16) / tag;
        let width = if self.jsb.is_64bit() { 8 } else { 4 };
        let per_revoke = (bs - 16 - tail) / width;
        let descriptors = blocks.div_ceil(per_descriptor);
        let revoke_blocks = revokes.div_ceil(per_revoke);
        let total = descriptors + blocks + revoke_blocks + 1;
        Layout { per_descriptor, per_revoke, total: u32::try_from(total).unwrap_or(u32::MAX) }
    }

    fn header(&self, kind: u32, sequence: u32) -> Vec<u8> {
        let mut b = vec![0u8; self.block_size as usize];
        put_be32(&mut b, 0, JBD2_MAGIC);
        put_be32(&mut b, 4, kind);
        put_be32(&mut b, 8, sequence);
        b
    }

    /// Seals a descriptor or revoke block with its tail checksum (v2/v3).
    fn seal_tail(&self, b: &mut [u8]) {
        if self.jsb.has_csum() {
            let at = b.len() - 4;
            put_be32(b, at, 0);
            let c = crc32c(self.jsb.csum_seed, b);
            put_be32(b, at, c);
        }
    }

    /// Descriptor blocks, logged copies (escaped where they begin with the journal's magic number) and
    /// revoke blocks of the running transaction, as consecutive log blocks (without the commit block).
    fn log_image(&self, blocks: &[(u64, Arc<Vec<u8>>)], revokes: &[u64], layout: &Layout) -> Vec<u8> {
        let bs = self.block_size as usize;
        let seq = self.sequence;
        let mut out = Vec::with_capacity((layout.total as usize - 1) * bs);
        let tag_bytes = self.jsb.tag_bytes();
        let seq_seed = crc32c(self.jsb.csum_seed, &seq.to_be_bytes());
        for chunk in blocks.chunks(layout.per_descriptor) {
            let mut desc = self.header(BLOCKTYPE_DESCRIPTOR, seq);
            let mut copies = Vec::with_capacity(chunk.len() * bs);
            let mut off = 12;
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
                if i + 1 == chunk.len() {
                    flags |= TAG_LAST;
                }
                let csum = if self.jsb.has_csum() { crc32c(seq_seed, &copy) } else { 0 };
                let t = &mut desc[off..off + tag_bytes];
                put_be32(t, 0, *home as u32);
                if self.jsb.csum_v3() {
                    put_be32(t, 4, flags);
                    put_be32(t, 8, (*home >> 32) as u32);
                    put_be32(t, 12, csum);
                } else {
                    t[4..6].copy_from_slice(&(csum as u16).to_be_bytes());
                    t[6..8].copy_from_slice(&(flags as u16).to_be_bytes());
                    if self.jsb.is_64bit() {
                        put_be32(t, 8, (*home >> 32) as u32);
                    }
                }
                off += tag_bytes;
                if i == 0 {
                    desc[off..off + 16].copy_from_slice(&self.uuid);
                    off += 16;
                }
                copies.extend_from_slice(&copy);
            }
            self.seal_tail(&mut desc);
            out.extend_from_slice(&desc);
            out.extend_from_slice(&copies);
        }
        let width = if self.jsb.is_64bit() { 8 } else { 4 };
        for chunk in revokes.chunks(layout.per_revoke) {
            let mut b = self.header(BLOCKTYPE_REVOKE, seq);
            let mut off = 16;
            for &nr in chunk {
                if width == 8 {
                    put_be32(&mut b, off, (nr >> 32) as u32);
                    put_be32(&mut b, off + 4, nr as u32);
                } else {
                    put_be32(&mut b, off, nr as u32);
                }
                off += width;
            }
            put_be32(&mut b, 12, off as u32);
            self.seal_tail(&mut b);
            out.extend_from_slice(&b);
        }
        out
    }

    fn commit_block(&self, sequence: u32) -> Vec<u8> {
        let mut b = self.header(BLOCKTYPE_COMMIT, sequence);
        let now = super::inode::Timestamp::now();
        b[0x30..0x38].copy_from_slice(&(now.sec as u64).to_be_bytes());
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
        let (first, pblk, len) = self.runs[i];
        let within = n - first;
        (within < len).then(|| (pblk + u64::from(within), len - within))
    }

    /// Writes `bytes` (whole blocks) to the log from log block `at`, wrapping at the end of the log, in
    /// as few writes as the journal's layout on the device allows.
    fn write_log(&self, fs: &Filesystem, at: u32, bytes: &[u8]) -> Result<()> {
        let bs = self.block_size as usize;
        let mut n = at;
        let mut done = 0;
        while done < bytes.len() {
            let (pblk, run) =
                self.physical(n).ok_or(Error::corrupt(super::error::Object::Journal, CorruptKind::LogBlockUnmapped))?;
            let to_end = self.jsb.log_end() - n;
            let blocks = ((bytes.len() - done) / bs).min(run as usize).min(to_end as usize).max(1);
            fs.device().write_all_at(&bytes[done..done + blocks * bs], pblk * bs as u64)?;
            done += blocks * bs;
            n = self.advance(n, blocks as u32);
        }
        Ok(())
    }

    /// Makes every home copy durable and empties the log on disk.
    fn checkpoint(&mut self, fs: &Filesystem) -> Result<()> {
        let dev = fs.device();
        dev.flush()?;
        if self.tail != 0 {
            let raw = self.jsb.positioned(&self.raw_jsb, self.sequence, 0, 0);
            dev.write_all_at(&raw, self.jsb_block * u64::from(self.block_size))?;
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
        self.sequence = self.sequence.wrapping_add(1);
        self.last_commit = Instant::now();
    }
}

/// The block holding the superblock, with `sb` (1024 bytes) in place and the rest as on disk.
fn superblock_block(fs: &Filesystem, sb: &[u8]) -> Result<(u64, Vec<u8>)> {
    let bs = u64::from(fs.block_size());
    let (nr, off) = super::fs::superblock_block(fs.block_size());
    let mut block = vec![0u8; bs as usize];
    fs.device().read_exact_at(&mut block, nr * bs)?;
    block[off..off + sb.len()].copy_from_slice(sb);
    Ok((nr, block))
}

/// Writes blocks (sorted by number) to their homes, one write per run of consecutive blocks.
fn write_home(fs: &Filesystem, blocks: &[(u64, Arc<Vec<u8>>)], bs: u64) -> Result<()> {
    let mut i = 0;
    while i < blocks.len() {
        let mut j = i + 1;
        while j < blocks.len() && blocks[j].0 == blocks[j - 1].0 + 1 {
            j += 1;
        }
        if j - i == 1 {
            fs.device().write_all_at(&blocks[i].1, blocks[i].0 * bs)?;
        } else {
            let mut buf = Vec::with_capacity((j - i) * bs as usize);
            for (_, d) in &blocks[i..j] {
                buf.extend_from_slice(d);
            }
            fs.device().write_all_at(&buf, blocks[i].0 * bs)?;
        }
        i = j;
    }
    Ok(())
}
