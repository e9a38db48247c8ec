//! The jbd2 journal: finding the transactions a crash left behind and replaying them.
//!
//! Format: `Documentation/filesystems/ext4/journal.rst`, its shared parts in `jbd2.rs` (all big-endian).
//! The log is a ring of blocks inside the journal inode; a transaction is one or more descriptor blocks
//! (each listing the home block numbers of the data blocks that follow it), optional revoke blocks, and a
//! commit block, all stamped with the transaction's sequence number. Recovery as the kernel and e2fsck do
//! it: scan from `s_start` while blocks carry the expected sequence and checksums hold, gather revokes,
//! then copy every logged block of a complete transaction to its home unless a revoke at least as new
//! cancels it.
//!
//! Scanning produces a [`Replay`]: for each home block, where its newest logged copy sits. The caller
//! decides where the copies go: onto the image for a read-write mount, or under an overlay
//! (`overlay::OverlayDevice`) for a read-only one, so an untrusted image is never written. The replay holds
//! block numbers, not contents, so its memory is a few dozen bytes per logged block whatever the block size.

use std::collections::{BTreeMap, HashMap};

use super::checksum::crc32c;
use super::device::BlockDevice;
use super::error::{CorruptKind, Error, Object, Result};
use super::fs::{Filesystem, Mapping};
use super::inode::Inode;
use super::jbd2::{
    BLOCKTYPE_COMMIT, BLOCKTYPE_DESCRIPTOR, BLOCKTYPE_REVOKE, JBD2_MAGIC, JournalSuperblock, TAG_ESCAPE, TAG_LAST,
    TAG_SAME_UUID, be16, be32, corrupt, put_be32, tid_diff,
};

/// Where the contents a replay puts in a home block come from.
#[derive(Debug, Clone)]
pub enum BlockSource {
    /// The logged copy at device block `pblk`; `escaped` when its first four bytes held the journal's
    /// magic number and were zeroed in the log.
    Log { pblk: u64, escaped: bool },
    /// Contents held in memory (the superblock, patched after replay).
    Data(Vec<u8>),
}

impl BlockSource {
    /// The block's contents, `block_size` bytes, read from `dev` for a logged copy.
    pub fn read(&self, dev: &dyn BlockDevice, block_size: u32) -> std::io::Result<Vec<u8>> {
        match self {
            BlockSource::Data(d) => Ok(d.clone()),
            BlockSource::Log { pblk, escaped } => {
                let bs = u64::from(block_size);
                let offset = pblk.checked_mul(bs).ok_or(std::io::ErrorKind::InvalidInput)?;
                let mut buf = vec![0u8; super::bytes::index(block_size)];
                dev.read_exact_at(&mut buf, offset)?;
                if *escaped {
                    put_be32(&mut buf, 0, JBD2_MAGIC);
                }
                Ok(buf)
            }
        }
    }
}

/// What recovery found: the blocks to write home, newest copies only.
#[derive(Debug, Default)]
pub struct Replay {
    /// Home block number → where its replayed contents are.
    pub blocks: BTreeMap<u64, BlockSource>,
    /// Complete transactions found.
    pub transactions: u32,
    /// Sequence number for the next transaction (the journal superblock's after recovery).
    pub next_sequence: u32,
    /// Logged blocks skipped because their checksum did not match (the kernel skips them too).
    pub bad_blocks: u32,
    /// The changes of the fast commits after the last full commit, to replay once the blocks are home.
    pub fast_commits: Vec<super::fast_commit::Tag>,
}

/// The journal inode, opened for reading its log blocks.
pub struct Journal<'a> {
    fs: &'a Filesystem,
    inode: std::sync::Arc<Inode>,
    pub sb: JournalSuperblock,
    /// The journal superblock as read (for rewriting it after recovery).
    pub raw_sb: Vec<u8>,
    /// Where the journal superblock lives on the device.
    pub sb_block: u64,
}

/// One logged block of a transaction: where it goes and where its copy sits in the log.
struct LoggedBlock {
    home: u64,
    log_block: u32,
    escaped: bool,
    checksum: u32,
}

impl<'a> Journal<'a> {
    /// Opens the internal journal of `fs` (which must have been opened with `norecovery`).
    pub fn open(fs: &'a Filesystem) -> Result<Journal<'a>> {
        let sb = fs.superblock();
        if sb.journal_dev != 0 || sb.journal_inum == 0 {
            return Err(Error::Unsupported(
                "the journal lives on an external device, which ext4box cannot open".into(),
            ));
        }
        let inode = fs.inode(super::inode::InodeNo(sb.journal_inum))?;
        let mut journal = Journal { fs, inode, sb: JournalSuperblock::unparsed(), raw_sb: Vec::new(), sb_block: 0 };
        journal.sb_block = journal.physical(0)?;
        journal.raw_sb = journal.read_physical(journal.sb_block)?;
        journal.sb = JournalSuperblock::parse(&journal.raw_sb, fs.block_size())?;
        let inode_blocks = journal.inode.size.checked_div(u64::from(fs.block_size())).unwrap_or(0);
        if u64::from(journal.sb.maxlen) > inode_blocks {
            return Err(corrupt(CorruptKind::JournalSuperblockClaimsMoreBlocksThanJournalInodeHolds));
        }
        Ok(journal)
    }

    /// The device block holding log block `n`.
    fn physical(&self, n: u32) -> Result<u64> {
        match self.fs.map(&self.inode, u64::from(n))? {
            Mapping::Mapped { pblk, .. } => Ok(pblk),
            Mapping::Hole { .. } => Err(corrupt(CorruptKind::JournalInodeHasHole)),
        }
    }

    /// Where the log lives on the device: runs of (first log block, first device block, length) covering
    /// log blocks `0..maxlen`, or an error past `max_runs` pieces (a journal that fragmented is refused
    /// rather than held in memory).
    pub(super) fn runs(&self, max_runs: usize) -> Result<Vec<(u32, u64, u32)>> {
        let mut runs: Vec<(u32, u64, u32)> = Vec::new();
        let mut n = 0u32;
        while n < self.sb.maxlen {
            let (pblk, len) = match self.fs.map(&self.inode, u64::from(n))? {
                Mapping::Mapped { pblk, len, .. } => (pblk, len),
                Mapping::Hole { .. } => return Err(corrupt(CorruptKind::JournalInodeHasHole)),
            };
            // n < maxlen, and runs end at most at maxlen: nothing below overflows.
            let len = u32::try_from(len).unwrap_or(u32::MAX).clamp(1, self.sb.maxlen.saturating_sub(n));
            self.fs.check_range(pblk, u64::from(len), Object::Journal)?;
            match runs.last_mut() {
                Some(last)
                    if last.0.saturating_add(last.2) == n && last.1.saturating_add(u64::from(last.2)) == pblk =>
                {
                    last.2 = last.2.saturating_add(len)
                }
                _ => {
                    if runs.len() == max_runs {
                        return Err(Error::Unsupported(format!(
                            "the journal is fragmented into more than {max_runs} pieces"
                        )));
                    }
                    runs.push((n, pblk, len));
                }
            }
            n = n.saturating_add(len);
        }
        Ok(runs)
    }

    fn read_physical(&self, pblk: u64) -> Result<Vec<u8>> {
        let bs = self.fs.block_size();
        self.fs.check_range(pblk, 1, Object::Journal)?;
        let mut buf = vec![0u8; super::bytes::index(bs)];
        let offset = pblk.checked_mul(u64::from(bs)).ok_or_else(|| corrupt(CorruptKind::JournalBlockOutOfRange))?;
        self.fs.device().read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    fn read_log(&self, n: u32) -> Result<Vec<u8>> {
        self.read_physical(self.physical(n)?)
    }

    /// The log block after `n`, wrapping at the end of the log.
    fn next(&self, n: u32) -> u32 {
        let n = n.wrapping_add(1);
        if n >= self.sb.log_end() { self.sb.first } else { n }
    }

    /// Where the records of a descriptor or revoke block end: before the checksum tail, when there is one.
    fn records_end(&self, b: &[u8]) -> usize {
        if self.sb.has_csum() { b.len().saturating_sub(4) } else { b.len() }
    }

    /// Checks the tail checksum of a descriptor or revoke block (v2/v3).
    fn tail_ok(&self, b: &[u8]) -> bool {
        if !self.sb.has_csum() {
            return true;
        }
        let Some(tail) = b.len().checked_sub(4) else { return false };
        let mut copy = b.to_vec();
        put_be32(&mut copy, tail, 0);
        crc32c(self.sb.csum_seed, &copy) == be32(b, tail)
    }

    fn commit_ok(&self, b: &[u8]) -> bool {
        if !self.sb.has_csum() {
            return true; // v1 checksums (COMPAT_CHECKSUM) are e2fsck's to verify; the kernel ignores them too
        }
        let mut copy = b.to_vec();
        put_be32(&mut copy, 0x10, 0);
        crc32c(self.sb.csum_seed, &copy) == be32(b, 0x10)
    }

    fn data_ok(&self, sequence: u32, data: &[u8], expected: u32) -> bool {
        if !self.sb.has_csum() {
            return true;
        }
        let c = crc32c(crc32c(self.sb.csum_seed, &sequence.to_be_bytes()), data);
        if self.sb.csum_v3() { c == expected } else { (c & 0xFFFF) == (expected & 0xFFFF) }
    }

    /// Parses the tags of a descriptor block into `out`.
    fn parse_tags(&self, b: &[u8], mut log_block: u32, out: &mut Vec<LoggedBlock>) -> Result<u32> {
        let tag_bytes = self.sb.tag_bytes();
        // The tags lie between the 12-byte header and the checksum tail.
        let tags = b.get(..self.records_end(b)).unwrap_or_default();
        let mut off = 12usize;
        while let Some(t) = tags.get(off..).and_then(|rest| rest.get(..tag_bytes)) {
            let (low, flags, high, checksum) = if self.sb.csum_v3() {
                (be32(t, 0), be32(t, 4), be32(t, 8), be32(t, 12))
            } else {
                let high = if self.sb.is_64bit() { be32(t, 8) } else { 0 };
                (be32(t, 0), u32::from(be16(t, 6)), high, u32::from(be16(t, 4)))
            };
            let high = if self.sb.is_64bit() { u64::from(high) } else { 0 };
            let home = (high << 32) | u64::from(low);
            log_block = self.next(log_block);
            out.push(LoggedBlock { home, log_block, escaped: flags & TAG_ESCAPE != 0, checksum });
            // A tag without SAME_UUID is followed by the 16-byte UUID.
            let uuid = if flags & TAG_SAME_UUID == 0 { 16 } else { 0 };
            off = off.saturating_add(tag_bytes).saturating_add(uuid);
            if flags & TAG_LAST != 0 {
                return Ok(log_block);
            }
        }
        Ok(log_block)
    }

    /// The complete fast commits of transaction `tid` in the fast-commit area (none without one).
    fn fast_commits(&self, tid: u32) -> Result<Vec<super::fast_commit::Tag>> {
        if !self.sb.has_fast_commit() {
            return Ok(Vec::new());
        }
        let mut scan = super::fast_commit::Scanner::new(tid);
        // jbd2's `j_fc_first`: the block after the log's end is left unused.
        for n in self.sb.log_end().saturating_add(1)..self.sb.maxlen {
            if !scan.feed(&self.read_log(n)?)? {
                break;
            }
        }
        if let Some(why) = scan.torn {
            tracing::warn!(why, "journal: the last fast commit is incomplete and is not replayed");
        }
        Ok(scan.finish())
    }

    /// Scans the log and gathers what replay must write. Nothing is written.
    pub fn recover(&self) -> Result<Replay> {
        let mut replay = Replay { next_sequence: self.sb.sequence, ..Replay::default() };
        if self.sb.start == 0 {
            return Ok(replay); // an empty journal
        }
        // Pass 1: the complete transactions, their logged blocks, and revoke records.
        let mut transactions: Vec<(u32, Vec<LoggedBlock>)> = Vec::new();
        let mut revoked: HashMap<u64, u32> = HashMap::new();
        let mut pending: Vec<LoggedBlock> = Vec::new();
        // A set, and only blocks inside the filesystem: a log of revoke blocks repeating the same records
        // (one block mapped at every log position) cannot grow it past the filesystem's block count.
        let mut pending_revokes: std::collections::HashSet<u64> = std::collections::HashSet::new();
        let blocks_count = self.fs.superblock().blocks_count;
        let mut sequence = self.sb.sequence;
        let mut block = self.sb.start;
        // Every log block is visited at most once per lap; a journal cannot hold more than one lap.
        let mut budget = self.sb.maxlen;
        loop {
            if budget == 0 {
                break;
            }
            budget = budget.saturating_sub(1);
            let b = self.read_log(block)?;
            if be32(&b, 0) != JBD2_MAGIC || be32(&b, 8) != sequence {
                break; // the end of the log
            }
            match be32(&b, 4) {
                BLOCKTYPE_DESCRIPTOR => {
                    if !self.tail_ok(&b) {
                        break; // a stale descriptor: the log ends before it
                    }
                    let before = pending.len();
                    let last = self.parse_tags(&b, block, &mut pending)?;
                    let used = u32::try_from(pending.len().saturating_sub(before)).unwrap_or(u32::MAX);
                    budget = budget.saturating_sub(used);
                    block = self.next(last);
                }
                BLOCKTYPE_COMMIT => {
                    if !self.commit_ok(&b) {
                        break; // a torn commit: this transaction never completed
                    }
                    for home in pending_revokes.drain() {
                        let e = revoked.entry(home).or_insert(sequence);
                        if tid_diff(sequence, *e) > 0 {
                            *e = sequence;
                        }
                    }
                    transactions.push((sequence, std::mem::take(&mut pending)));
                    sequence = sequence.wrapping_add(1);
                    block = self.next(block);
                }
                BLOCKTYPE_REVOKE => {
                    if !self.tail_ok(&b) {
                        break;
                    }
                    let count = super::bytes::index(be32(&b, 12));
                    if count < 16 || count > self.records_end(&b) {
                        return Err(corrupt(CorruptKind::RevokeRecordCountOverrunsBlock));
                    }
                    let width = if self.sb.is_64bit() { 8 } else { 4 };
                    // The records: big-endian block numbers of `width` bytes from byte 16 to `count`.
                    let records = b.get(16..count).unwrap_or_default();
                    for r in records.chunks_exact(width) {
                        let home = if width == 8 {
                            (u64::from(be32(r, 0)) << 32) | u64::from(be32(r, 4))
                        } else {
                            u64::from(be32(r, 0))
                        };
                        if home < blocks_count {
                            pending_revokes.insert(home);
                        }
                    }
                    block = self.next(block);
                }
                _ => break,
            }
        }
        replay.transactions = u32::try_from(transactions.len()).unwrap_or(u32::MAX);
        // The fast commits made after the last full commit carry its successor's number.
        replay.fast_commits = self.fast_commits(sequence)?;
        // As jbd2 and e2fsck: the log restarts one past that number, so that no fast commit left in
        // the area can ever match the transaction that follows the next crash.
        replay.next_sequence = sequence.wrapping_add(1);
        // Pass 2: copy each logged block home unless a revoke at least as new cancels it.
        let blocks_count = self.fs.superblock().blocks_count;
        for (seq, logged) in &transactions {
            for l in logged {
                if revoked.get(&l.home).is_some_and(|&r| tid_diff(r, *seq) >= 0) {
                    continue;
                }
                if l.home >= blocks_count {
                    return Err(corrupt(CorruptKind::JournalLogsBlockPastEndOfFilesystem));
                }
                let pblk = self.physical(l.log_block)?;
                self.fs.check_range(pblk, 1, Object::Journal)?;
                if self.sb.has_csum() && !self.data_ok(*seq, &self.read_physical(pblk)?, l.checksum) {
                    replay.bad_blocks = replay.bad_blocks.saturating_add(1);
                    continue;
                }
                replay.blocks.insert(l.home, BlockSource::Log { pblk, escaped: l.escaped });
            }
        }
        Ok(replay)
    }
}
