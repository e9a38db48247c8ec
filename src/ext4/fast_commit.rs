//! Fast commits: the journal's fine-grained log of what an `fsync` changed since the last full commit.
//!
//! Format: `Documentation/filesystems/ext4/journal.rst` ("Fast commits") and the kernel's
//! `fs/ext4/fast_commit.h`. The fast-commit area is the last blocks of the journal, after the log (jbd2
//! leaves the first of them unused). It holds tag-length-value records, little-endian, that never cross
//! a block: `HEAD` (features, tid), then per commit the directory-entry, range and inode records, and a
//! `TAIL` (tid, crc32c of every record since the previous tail). A commit counts only when its tail is
//! intact and names the transaction after the last full commit in the log; a torn last commit is an
//! `fsync` that never returned, and is dropped.
//!
//! Replay (`Filesystem::replay_fast_commits`) does what the kernel's `ext4_fc_replay_*` do, through
//! the engine's own transactions, on a filesystem opened read-write over the replayed log: records
//! naming inodes that do not exist are skipped, as the kernel skips them. The block bitmaps are set
//! from the result, as the kernel's `ext4_fc_set_bitmaps_and_counters`: every block a replayed inode or
//! range held before and does not hold after is freed, every block it holds after is marked in use.

use std::collections::BTreeSet;

use super::bytes::{le16, le32};
use super::checksum::crc32c;
use super::error::{CorruptKind, Error, Object, Result};
use super::extent::{self, Extent};
use super::extent_write;
use super::fs::{Filesystem, Mapping};
use super::inode::{FileKind, GOOD_OLD_INODE_SIZE, Inode, InodeNo, Timestamp, flags};
use super::txn::Txn;

const TAG_ADD_RANGE: u16 = 1;
const TAG_DEL_RANGE: u16 = 2;
const TAG_CREAT: u16 = 3;
const TAG_LINK: u16 = 4;
const TAG_UNLINK: u16 = 5;
const TAG_INODE: u16 = 6;
const TAG_PAD: u16 = 7;
const TAG_TAIL: u16 = 8;
const TAG_HEAD: u16 = 9;

/// `ext4_fc_tl`: tag and value length.
const TL_SIZE: usize = 4;
/// `ext4_fc_dentry_info` before the name: parent and inode numbers.
const DENTRY_SIZE: usize = 8;
/// `i_block` inside an inode record, which an inode record in a fast commit does not replace.
const I_BLOCK: std::ops::Range<usize> = 0x28..0x64;
/// `EXT_INIT_MAX_LEN`: an extent length above it marks the extent unwritten.
const EXT_INIT_MAX_LEN: u32 = 32768;
/// Memory the records of one scan may take (each counted with its bytes and a fixed overhead): far
/// above what a real fast-commit area holds (it fills, then the kernel makes a full commit), and a
/// bound whatever size a hostile journal claims for its area.
const MAX_RECORD_BYTES: usize = 256 << 20;
const RECORD_OVERHEAD: usize = 64;

/// A directory entry a fast commit adds or removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dentry {
    pub parent: u32,
    pub ino: u32,
    pub name: Vec<u8>,
}

/// One change recorded by a fast commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tag {
    /// Blocks mapped into a file (`EXT4_FC_TAG_ADD_RANGE`).
    AddRange { ino: u32, extent: Extent },
    /// Logical blocks `lblk..lblk + len` unmapped (`EXT4_FC_TAG_DEL_RANGE`).
    DelRange { ino: u32, lblk: u32, len: u32 },
    /// A new inode linked into its directory (`EXT4_FC_TAG_CREAT`).
    Creat(Dentry),
    /// Another name for an inode (`EXT4_FC_TAG_LINK`).
    Link(Dentry),
    /// A name removed (`EXT4_FC_TAG_UNLINK`).
    Unlink(Dentry),
    /// An inode record as it was at the commit (`EXT4_FC_TAG_INODE`).
    Inode { ino: u32, raw: Vec<u8> },
}

impl Tag {
    /// The inode whose blocks the change may move.
    fn block_owner(&self) -> Option<u32> {
        match self {
            Tag::AddRange { ino, .. } | Tag::DelRange { ino, .. } | Tag::Inode { ino, .. } => Some(*ino),
            _ => None,
        }
    }
}

/// Reads the fast-commit area block by block (`ext4_fc_replay_scan`), keeping the records of every
/// commit whose tail holds.
pub struct Scanner {
    tid: u32,
    crc: u32,
    started: bool,
    pending: Vec<Tag>,
    committed: Vec<Tag>,
    /// Bytes of records still allowed ([`MAX_RECORD_BYTES`]).
    room: usize,
    /// Why the scan ended before the area did, when a commit was torn.
    pub torn: Option<&'static str>,
}

impl Scanner {
    /// A scan for the fast commits of transaction `tid` (the one after the last full commit).
    pub fn new(tid: u32) -> Scanner {
        Scanner {
            tid,
            crc: 0,
            started: false,
            pending: Vec::new(),
            committed: Vec::new(),
            room: MAX_RECORD_BYTES,
            torn: None,
        }
    }

    /// The records of the complete commits.
    pub fn finish(self) -> Vec<Tag> {
        self.committed
    }

    fn stop(&mut self, why: &'static str) -> bool {
        if !self.pending.is_empty() || self.crc != 0 {
            self.torn = Some(why);
        }
        self.pending.clear();
        false
    }

    /// Takes the next block of the area; `Ok(false)` when the scan is over.
    pub fn feed(&mut self, b: &[u8]) -> Result<bool> {
        if !self.started {
            if le16(b, 0) != TAG_HEAD {
                return Ok(false); // no fast commit since the area was last used
            }
            self.started = true;
        }
        let mut off = 0usize;
        while let Some(rest) = b.get(off..).filter(|r| r.len() >= TL_SIZE) {
            let tag = le16(rest, 0);
            let len = usize::from(le16(rest, 2));
            // The record: the tag and length, then `len` bytes of value (len <= 65535: no overflow).
            let Some(whole) = rest.get(..TL_SIZE.saturating_add(len)) else {
                return Ok(self.stop("a record overruns its block"));
            };
            let val = whole.get(TL_SIZE..).unwrap_or_default();
            let record = match tag {
                TAG_HEAD => {
                    if len != 8 {
                        return Ok(self.stop("a head record of the wrong size"));
                    }
                    let features = le32(val, 0);
                    if features != 0 {
                        return Err(Error::Unsupported(format!(
                            "the journal's fast commits use features {features:#x} ext4box does not know"
                        )));
                    }
                    if le32(val, 4) != self.tid {
                        return Ok(false); // fast commits of an older transaction: nothing to replay
                    }
                    None
                }
                TAG_TAIL => {
                    if len < 8 {
                        return Ok(self.stop("a tail record of the wrong size"));
                    }
                    let crc = crc32c(self.crc, whole.get(..TL_SIZE.saturating_add(4)).unwrap_or_default());
                    if le32(val, 0) != self.tid || le32(val, 4) != crc {
                        return Ok(self.stop("a fast commit's tail does not match its records"));
                    }
                    self.committed.append(&mut self.pending);
                    self.crc = 0;
                    off = off.saturating_add(whole.len());
                    continue;
                }
                TAG_PAD => None,
                TAG_ADD_RANGE if len == 16 => {
                    let ee_len = u32::from(le16(val, 8));
                    let (len, unwritten) = match ee_len.checked_sub(EXT_INIT_MAX_LEN).filter(|&n| n > 0) {
                        Some(n) => (n, true),
                        None => (ee_len, false),
                    };
                    let pblk = (u64::from(le16(val, 10)) << 32) | u64::from(le32(val, 12));
                    let e = Extent { lblk: le32(val, 4), len, pblk, unwritten };
                    // An extent past the last logical block (2^32) no file can hold.
                    if len == 0 || e.end() > 1 << 32 {
                        return Ok(self.stop("a range record past the last logical block"));
                    }
                    Some(Tag::AddRange { ino: le32(val, 0), extent: e })
                }
                TAG_DEL_RANGE if len == 12 => {
                    Some(Tag::DelRange { ino: le32(val, 0), lblk: le32(val, 4), len: le32(val, 8) })
                }
                TAG_CREAT | TAG_LINK | TAG_UNLINK if len > DENTRY_SIZE => {
                    let name = val.get(DENTRY_SIZE..).unwrap_or_default().to_vec();
                    let d = Dentry { parent: le32(val, 0), ino: le32(val, 4), name };
                    Some(match tag {
                        TAG_CREAT => Tag::Creat(d),
                        TAG_LINK => Tag::Link(d),
                        _ => Tag::Unlink(d),
                    })
                }
                TAG_INODE if len > 4 => {
                    Some(Tag::Inode { ino: le32(val, 0), raw: val.get(4..).unwrap_or_default().to_vec() })
                }
                _ => return Ok(self.stop("an unknown or malformed fast-commit record")),
            };
            self.crc = crc32c(self.crc, whole);
            if record.is_some() {
                self.room = self.room.checked_sub(whole.len().saturating_add(RECORD_OVERHEAD)).ok_or_else(|| {
                    Error::Unsupported("the journal's fast commits hold more records than ext4box replays".into())
                })?;
            }
            self.pending.extend(record);
            off = off.saturating_add(whole.len());
        }
        Ok(true)
    }
}

/// Sorts and coalesces block runs `(start, len)`.
fn merged(mut runs: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    runs.retain(|r| r.1 > 0);
    runs.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(runs.len());
    for (s, l) in runs {
        match out.last_mut() {
            // Block runs inside the filesystem: their ends fit in u64; s >= last.0 (sorted).
            Some(last) if s <= last.0.saturating_add(last.1) => {
                last.1 = last.1.max(s.saturating_add(l).saturating_sub(last.0))
            }
            _ => out.push((s, l)),
        }
    }
    out
}

/// The blocks of merged runs `a` that are in no run of merged `b`.
fn subtract(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut j = 0;
    for &(s, l) in a {
        let (mut cur, end) = (s, s.saturating_add(l));
        while b.get(j).is_some_and(|r| r.0.saturating_add(r.1) <= cur) {
            j = j.saturating_add(1);
        }
        let mut k = j;
        while cur < end {
            match b.get(k) {
                Some(&(bs, bl)) if bs < end => {
                    if bs > cur {
                        out.push((cur, bs.saturating_sub(cur)));
                    }
                    cur = cur.max(bs.saturating_add(bl));
                    k = k.saturating_add(1);
                }
                _ => {
                    out.push((cur, end.saturating_sub(cur)));
                    cur = end;
                }
            }
        }
    }
    out
}

fn corrupt(kind: CorruptKind) -> Error {
    Error::corrupt(Object::Journal, kind)
}

impl Filesystem {
    /// Replays fast-commit records `tags` (the complete commits, in order) onto this read-write
    /// filesystem, then frees the blocks they left without an owner and deletes inodes left without links.
    pub(crate) fn replay_fast_commits(&self, tags: &[Tag]) -> Result<()> {
        let owners: BTreeSet<u32> = tags.iter().filter_map(Tag::block_owner).collect();
        let mut before = Vec::new();
        for &ino in &owners {
            before.extend(self.blocks_held(InodeNo(ino))?);
        }
        // The blocks the ranges map are taken first, so that no tree block allocated while replaying
        // lands on one of them (the kernel's excluded regions).
        let mut tx = self.begin()?;
        for tag in tags {
            if let Tag::AddRange { extent: e, .. } = tag {
                self.check_range(e.pblk, u64::from(e.len), Object::Journal)?;
                tx.set_blocks_state(e.pblk, u64::from(e.len), true)?;
                before.push((e.pblk, u64::from(e.len)));
            }
        }
        tx.commit()?;
        let mut linked = BTreeSet::new();
        let mut dirs = BTreeSet::new();
        for tag in tags {
            let mut tx = self.begin()?;
            self.replay_tag(&mut tx, tag)?;
            tx.commit()?;
            if let Tag::Creat(d) | Tag::Link(d) | Tag::Unlink(d) = tag {
                linked.insert(d.ino);
                dirs.extend([d.parent, d.ino]);
            }
        }
        self.recount_dir_links(&dirs)?;
        // As eviction after the kernel's replay: inodes the commits left without a name are deleted.
        for &ino in owners.union(&linked) {
            let Ok(inode) = self.inode(InodeNo(ino)) else { continue };
            if inode.links_count == 0 {
                let mut tx = self.begin()?;
                self.delete_inode(&mut tx, &mut inode.as_ref().clone())?;
                tx.commit()?;
            }
        }
        let mut after = Vec::new();
        for &ino in &owners {
            let held = self.blocks_held(InodeNo(ino))?;
            if let Ok(inode) = self.inode(InodeNo(ino)) {
                // i_blocks is not replayed (the allocator may have chosen differently): derived, as the kernel.
                let count = held.iter().fold(u64::from(inode.file_acl != 0), |n, r| n.saturating_add(r.1));
                let blocks_512 = count.saturating_mul(u64::from(self.block_size() / 512));
                if inode.has_flag(flags::EXTENTS) && inode.blocks_512 != blocks_512 {
                    let mut tx = self.begin()?;
                    let mut inode = inode.as_ref().clone();
                    inode.blocks_512 = blocks_512;
                    tx.write_inode(&inode)?;
                    tx.commit()?;
                }
            }
            after.extend(held);
        }
        let (before, after) = (merged(before), merged(after));
        let mut tx = self.begin()?;
        for (start, len) in subtract(&before, &after) {
            tx.set_blocks_state(start, len, false)?;
        }
        for &(start, len) in &after {
            tx.set_blocks_state(start, len, true)?;
        }
        tx.commit()
    }

    /// Sets the link count of each directory of `dirs` (others are skipped) to what its entries make
    /// it, as e2fsck counts: 2 and one for each subdirectory, 1 past `EXT4_LINK_MAX` (dir_nlink). The
    /// kernel's replay of a mkdir or rmdir leaves the parent's count as it was before (e2fsck then
    /// fixes it); here the replay ends consistent.
    fn recount_dir_links(&self, dirs: &BTreeSet<u32>) -> Result<()> {
        const LINK_MAX: u64 = 65000;
        for &ino in dirs {
            let Ok(dir) = self.inode(InodeNo(ino)) else { continue };
            if dir.kind != FileKind::Directory || dir.links_count == 0 {
                continue;
            }
            let mut subdirs = 0u64;
            self.read_dir(&dir, 0, &mut |e, _| {
                if e.name != b"." && e.name != b".." {
                    let kind = e.kind.or_else(|| self.inode(e.ino).ok().map(|i| i.kind));
                    subdirs = subdirs.saturating_add(u64::from(kind == Some(FileKind::Directory)));
                }
                false // all of them
            })?;
            // "." and the parent's entry, then one per subdirectory; past the limit, 1 (dir_nlink).
            let links =
                u16::try_from(subdirs.saturating_add(2)).ok().filter(|&n| u64::from(n) <= LINK_MAX).unwrap_or(1);
            if dir.links_count != links {
                let mut dir = dir.as_ref().clone();
                dir.links_count = links;
                let mut tx = self.begin()?;
                tx.write_inode(&dir)?;
                tx.commit()?;
            }
        }
        Ok(())
    }

    /// The blocks inode `ino`'s extent tree maps and is made of; none when it is not in use or not
    /// extent-mapped.
    fn blocks_held(&self, ino: InodeNo) -> Result<Vec<(u64, u64)>> {
        let Ok(inode) = self.inode(ino) else { return Ok(Vec::new()) };
        if !inode.has_flag(flags::EXTENTS) || inode.has_flag(flags::INLINE_DATA) {
            return Ok(Vec::new());
        }
        let (list, tree) = extent::collect(self, &inode)?;
        Ok(list.iter().map(|e| (e.pblk, u64::from(e.len))).chain(tree.into_iter().map(|b| (b, 1))).collect())
    }

    fn replay_tag(&self, tx: &mut Txn<'_>, tag: &Tag) -> Result<()> {
        match tag {
            Tag::Inode { ino, raw } => self.replay_inode(tx, InodeNo(*ino), raw),
            Tag::AddRange { ino, extent: e } => self.replay_range(tx, InodeNo(*ino), e.lblk, e.end(), Some(*e)),
            Tag::DelRange { ino, lblk, len } => {
                let end = u64::from(*lblk).saturating_add(u64::from(*len)).min(1 << 32);
                self.replay_range(tx, InodeNo(*ino), *lblk, end, None)
            }
            Tag::Creat(d) => {
                let ino = InodeNo(d.ino);
                // The inode record comes first in the commit: without it the commit cannot be replayed.
                let inode = self.inode(ino).map_err(|_| corrupt(CorruptKind::FastCommitCreatesInodeItDidNotRecord))?;
                let mut inode = inode.as_ref().clone();
                let is_dir = inode.kind == FileKind::Directory;
                tx.claim_inode(ino, is_dir, is_dir)?;
                // As the kernel's `ext4_init_new_dir` in its create replay: fast commits do not record
                // directory blocks, so a directory made after the last full commit gets its `.` and `..`
                // block here (its entries come from the commits' own records).
                let unmapped = || -> Result<bool> { Ok(matches!(self.map(&inode, 0)?, Mapping::Hole { .. })) };
                if is_dir && inode.has_flag(flags::EXTENTS) && (inode.size == 0 || unmapped()?) {
                    inode.i_block = extent_write::empty_root();
                    inode.size = 0;
                    self.init_dir(tx, &mut inode, InodeNo(d.parent))?;
                }
                self.replay_link(tx, d, &mut inode)?;
                inode.links_count = if is_dir { 2 } else { 1 };
                tx.write_inode(&inode)?;
                Ok(())
            }
            Tag::Link(d) => {
                let Ok(inode) = self.inode(InodeNo(d.ino)) else { return Ok(()) };
                let mut inode = inode.as_ref().clone();
                if self.replay_link(tx, d, &mut inode)? {
                    inode.links_count = inode.links_count.saturating_add(1);
                    tx.write_inode(&inode)?;
                }
                Ok(())
            }
            Tag::Unlink(d) => {
                let Ok(inode) = self.inode(InodeNo(d.ino)) else { return Ok(()) };
                let Ok(dir) = self.inode(InodeNo(d.parent)) else { return Ok(()) };
                if dir.kind != FileKind::Directory {
                    return Ok(());
                }
                if self.find_entry(&dir, &d.name)? != Some(inode.ino) {
                    return Ok(()); // gone already, or another file now
                }
                let mut dir = dir.as_ref().clone();
                self.remove_entry(tx, &mut dir, &d.name)?;
                let now = Timestamp::now();
                (dir.mtime, dir.ctime) = (now, now);
                tx.write_inode(&dir)?;
                let mut inode = inode.as_ref().clone();
                // A directory has one name (rmdir: it was empty); a file may have more.
                inode.links_count =
                    if inode.kind == FileKind::Directory { 0 } else { inode.links_count.saturating_sub(1) };
                inode.ctime = now;
                tx.write_inode(&inode)?;
                Ok(())
            }
        }
    }

    /// Links `inode` into `d.parent` as `d.name` unless the name is there already; whether it was added.
    fn replay_link(&self, tx: &mut Txn<'_>, d: &Dentry, inode: &mut Inode) -> Result<bool> {
        let Ok(dir) = self.inode(InodeNo(d.parent)) else { return Ok(false) };
        if dir.kind != FileKind::Directory {
            return Ok(false);
        }
        if self.find_entry(&dir, &d.name)?.is_some() {
            return Ok(false);
        }
        let mut dir = dir.as_ref().clone();
        self.add_entry(tx, &mut dir, &d.name, inode.ino, inode.kind)?;
        // As the kernel's `__ext4_link`: the directory changed now (its own times are not recorded).
        let now = Timestamp::now();
        (dir.mtime, dir.ctime) = (now, now);
        tx.write_inode(&dir)?;
        inode.ctime = now;
        Ok(true)
    }

    /// `ext4_fc_replay_inode`: the recorded fields over the record on disk, except the block map or
    /// extent root (which the range records rebuild) unless the inode holds inline data or no map.
    fn replay_inode(&self, tx: &mut Txn<'_>, ino: InodeNo, fc: &[u8]) -> Result<()> {
        let size = usize::from(self.sb.inode_size);
        if fc.len() < GOOD_OLD_INODE_SIZE || fc.len() > size {
            return Err(corrupt(CorruptKind::FastCommitInodeRecordOfWrongSize));
        }
        let (nr, off) = self.inode_location(ino)?;
        let block = tx.block(nr, Object::Inode(ino.0))?;
        let mut rec = block
            .get(off..off.saturating_add(size))
            .ok_or_else(|| Error::corrupt(Object::Inode(ino.0), CorruptKind::InodeRecordOutsideItsBlock))?
            .to_vec();
        rec[..I_BLOCK.start].copy_from_slice(&fc[..I_BLOCK.start]);
        rec[I_BLOCK.end..fc.len()].copy_from_slice(&fc[I_BLOCK.end..]);
        let inode_flags = le32(&rec, 0x20);
        if inode_flags & flags::EXTENTS != 0 {
            if le16(&rec, I_BLOCK.start) != extent::EXT4_EXT_MAGIC {
                rec[I_BLOCK].copy_from_slice(&extent_write::empty_root());
            }
        } else {
            // Inline data, a fast symlink's target, a device number: all in the record itself.
            rec[I_BLOCK].copy_from_slice(&fc[I_BLOCK]);
        }
        // What the record held before (a directory removed by these commits may come back as a file).
        let was_dir = self.inode(ino).is_ok_and(|old| old.kind == FileKind::Directory);
        super::inode::seal_record(&self.sb, ino, &mut rec);
        let inode = Inode::parse(&self.sb, ino, &rec)?;
        if inode.links_count > 0 || inode.mode != 0 {
            tx.claim_inode(ino, inode.kind == FileKind::Directory, was_dir)?;
        }
        tx.write_inode(&inode)?;
        Ok(())
    }

    /// `ext4_fc_replay_add_range` (with `add`) or `ext4_fc_replay_del_range`: logical blocks
    /// `from..to` of `ino` unmapped, then mapped as `add` says. The blocks unmapped stay marked in use
    /// until the end of the replay, which frees those no inode holds.
    fn replay_range(&self, tx: &mut Txn<'_>, ino: InodeNo, from: u32, to: u64, add: Option<Extent>) -> Result<()> {
        let Ok(inode) = self.inode(ino) else { return Ok(()) };
        if !inode.has_flag(flags::EXTENTS) || inode.has_flag(flags::INLINE_DATA) {
            tracing::warn!(ino = ino.0, "fast commit: a range record for an inode without extents is skipped");
            return Ok(());
        }
        let mut inode = inode.as_ref().clone();
        let (mut list, tree) = extent::collect(self, &inode)?;
        extent_write::remove_range(&mut list, u64::from(from), to);
        let goal = match add {
            Some(e) if e.len > 0 => {
                extent_write::insert(&mut list, e);
                e.pblk
            }
            _ => list.first().map_or(0, |e| e.pblk),
        };
        extent_write::store(tx, &mut inode, &list, tree, goal)?;
        tx.write_inode(&inode)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(tag: u16, value: &[u8]) -> Vec<u8> {
        let mut r = tag.to_le_bytes().to_vec();
        r.extend((value.len() as u16).to_le_bytes());
        r.extend(value);
        r
    }

    fn commit(tid: u32, records: &[Vec<u8>], crc_start: u32) -> (Vec<u8>, u32) {
        let mut out = Vec::new();
        let mut crc = crc_start;
        for r in records {
            crc = crc32c(crc, r);
            out.extend(r);
        }
        let mut tail = record(TAG_TAIL, &[tid.to_le_bytes(), [0; 4]].concat());
        crc = crc32c(crc, &tail[..8]);
        tail[8..12].copy_from_slice(&crc.to_le_bytes());
        out.extend(tail);
        (out, 0)
    }

    fn head(tid: u32) -> Vec<u8> {
        record(TAG_HEAD, &[0u32.to_le_bytes(), tid.to_le_bytes()].concat())
    }

    fn del(ino: u32) -> Vec<u8> {
        record(TAG_DEL_RANGE, &[ino.to_le_bytes(), 0u32.to_le_bytes(), 5u32.to_le_bytes()].concat())
    }

    #[test]
    fn only_commits_with_a_matching_tail_are_kept() {
        let (first, _) = commit(7, &[head(7), del(12)], 0);
        let (second, _) = commit(7, &[del(13)], 0);
        let mut block = [first, second].concat();
        let good = block.len();
        // A third commit whose tail checksum is wrong: torn, dropped.
        let (mut third, _) = commit(7, &[del(14)], 0);
        let n = third.len();
        third[n - 1] ^= 1;
        block.extend(third);
        block.resize(4096, 0);
        let mut scan = Scanner::new(7);
        assert!(!scan.feed(&block).unwrap(), "the torn commit ends the scan");
        assert!(scan.torn.is_some());
        assert_eq!(
            scan.finish(),
            vec![Tag::DelRange { ino: 12, lblk: 0, len: 5 }, Tag::DelRange { ino: 13, lblk: 0, len: 5 }]
        );
        // The same area for another transaction replays nothing.
        let mut scan = Scanner::new(8);
        assert!(!scan.feed(&block[..good]).unwrap());
        assert!(scan.finish().is_empty());
        // An area that does not start with a head has no fast commits.
        let mut scan = Scanner::new(7);
        assert!(!scan.feed(&block[head(7).len()..]).unwrap());
        assert!(scan.finish().is_empty());
    }

    #[test]
    fn runs_subtract_and_merge() {
        let a = merged(vec![(10, 5), (12, 10), (40, 2)]);
        assert_eq!(a, vec![(10, 12), (40, 2)]);
        let b = merged(vec![(11, 2), (20, 30)]);
        assert_eq!(subtract(&a, &b), vec![(10, 1), (13, 7)]);
        assert_eq!(subtract(&a, &[]), a);
    }
}
