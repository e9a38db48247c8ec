//! Quota files (the `quota` feature): hidden inodes (`s_usr_quota_inum`, `s_grp_quota_inum`,
//! `s_prj_quota_inum`) in the kernel's v2 tree format (`QFMT_VFS_V1`, `fs/quota/quota_tree.c`), whose
//! usage the engine keeps exact: every change to an inode's blocks, owner or existence moves its charge,
//! and a transaction writes the sum of its moves into the files before it commits (journaled with it, as
//! the kernel journals its quota writes). e2fsck recomputes the usage and compares.
//!
//! The format, in 1 KiB quota blocks of the file:
//!
//! | block | holds |
//! |---|---|
//! | 0 | header (magic, version 1) and info: grace times, flags, `dqi_blocks` (the file's blocks), the free block list and the list of data blocks with free entries |
//! | 1 | the root of a four-level radix tree on the id (one byte per level, 256 block numbers a block) |
//! | tree blocks | 256 little-endian block numbers; those of the last level name data blocks |
//! | data blocks | a 16-byte header (`next_free`, `prev_free`, used entries) and 14 entries of 72 bytes |
//!
//! An entry (`v2r1_disk_dqblk`): id, limits (inodes, 1 KiB blocks), current inodes, current space in
//! bytes, grace deadlines. An all-zero entry is free, so a used one that would be all zero gets
//! `itime` 1, as the kernel's `v2r1_mem2diskdqblk` does.
//!
//! Limits are enforced only for the types the mount asks for (`usrquota`, `grpquota`, `prjquota`), as
//! the kernel's `check_bdq`/`check_idq`: a charge that would pass a hard limit fails with EDQUOT, one
//! that passes a soft limit starts its grace period and fails once the period is over; callers with
//! root's uid are exempt, as the kernel exempts CAP_SYS_RESOURCE.

use std::cell::Cell;
use std::collections::BTreeMap;

use super::bytes::{le16, le32, le64};
use super::bytes_mut::{put16, put32, put64};
use super::error::{CorruptKind, Error, Object, Result};
use super::features::{RO_COMPAT_PROJECT, RO_COMPAT_QUOTA};
use super::fs::{Filesystem, Mapping};
use super::inode::{Inode, InodeNo, flags};
use super::map_edit::MapEdit;
use super::superblock::Superblock;
use super::txn::{Txn, inode_mut};

/// Quota types in the order of their superblock fields and magic numbers: user, group, project.
pub const TYPES: usize = 3;
const MAGIC: [u32; TYPES] = [0xd9c0_1f11, 0xd9c0_1927, 0xd9c0_3f14];
const NAMES: [&str; TYPES] = ["user", "group", "project"];
/// `QT_BLKSIZE`.
const QBLK: usize = 1024;
/// `QT_TREEOFF`: the tree's root.
const TREE_ROOT: u32 = 1;
/// `QT_TREEDEPTH`.
const DEPTH: usize = 4;
/// Offsets of `v2_disk_dqinfo` fields in block 0 (after the 8-byte header).
const INFO_BLOCKS: usize = 8 + 12;
const INFO_FREE_BLK: usize = 8 + 16;
const INFO_FREE_ENTRY: usize = 8 + 20;
/// `qt_disk_dqdbheader`: next_free, prev_free, entries.
const DATA_HEADER: usize = 16;
const ENTRY: usize = 72;
const ENTRIES_PER_BLOCK: usize = (QBLK - DATA_HEADER) / ENTRY;
/// Offsets in an entry.
const E_ID: usize = 0;
const E_IHARD: usize = 8;
const E_ISOFT: usize = 16;
const E_CURINODES: usize = 24;
const E_BHARD: usize = 32;
const E_BSOFT: usize = 40;
const E_CURSPACE: usize = 48;
const E_BTIME: usize = 56;
const E_ITIME: usize = 64;
/// Grace periods in the info (`dqi_bgrace`, `dqi_igrace`).
const INFO_BGRACE: usize = 8;
const INFO_IGRACE: usize = 8 + 4;
/// Block limits are in 1 KiB units (`QIF_DQBLKSIZE`).
const LIMIT_UNIT: u64 = 1024;
/// More blocks than this in a quota file is damage (2^32 ids fill fewer than 2^28 + tree blocks).
const MAX_BLOCKS: u32 = 1 << 29;

/// What one inode counts in the quota files: its owner's ids by type, its space in bytes (`i_blocks`,
/// which includes what EA inodes charge it) and its inodes (itself and, with `ea_inode`, each value inode
/// it names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    pub ids: [u32; TYPES],
    pub space: i64,
    pub inodes: i64,
}

/// Usage changes a transaction has made and not yet written: (type, id) to (bytes, inodes).
#[derive(Debug, Default)]
pub struct Deltas(BTreeMap<(usize, u32), (i64, i64)>);

impl Deltas {
    /// Adds `sign` times `charge` (1 to charge, -1 to release).
    pub fn add(&mut self, charge: &Charge, sign: i64) {
        for (t, &id) in charge.ids.iter().enumerate() {
            let d = self.0.entry((t, id)).or_default();
            d.0 = d.0.saturating_add(sign.saturating_mul(charge.space));
            d.1 = d.1.saturating_add(sign.saturating_mul(charge.inodes));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.values().all(|&d| d == (0, 0))
    }

    fn get(&self, t: usize, id: u32) -> (i64, i64) {
        self.0.get(&(t, id)).copied().unwrap_or_default()
    }
}

thread_local! {
    /// Whether the request this thread serves comes from root, which quota limits do not hold.
    static PRIVILEGED: Cell<bool> = const { Cell::new(false) };
}

/// While alive, marks this thread's operations as those of a caller limits do or do not hold (the
/// server sets it per request from the caller's uid; the engine knows no callers otherwise).
pub struct Caller {
    before: bool,
}

impl Caller {
    pub fn enter(privileged: bool) -> Caller {
        Caller { before: PRIVILEGED.with(|p| p.replace(privileged)) }
    }
}

impl Drop for Caller {
    fn drop(&mut self) {
        PRIVILEGED.with(|p| p.set(self.before));
    }
}

/// The quota files of a filesystem, by type (`None`: that type is not tracked).
#[derive(Debug, Clone)]
pub struct QuotaFiles {
    pub inodes: [Option<InodeNo>; TYPES],
    /// The types whose limits are enforced.
    pub limits: [bool; TYPES],
}

impl QuotaFiles {
    /// The tracked types the superblock names; `None` without the quota feature.
    pub fn from_superblock(sb: &Superblock, limits: [bool; TYPES]) -> Option<QuotaFiles> {
        if !sb.has_ro_compat(RO_COMPAT_QUOTA) {
            return None;
        }
        let some = |n: u32| (n != 0).then_some(InodeNo(n));
        let prj = if sb.has_ro_compat(RO_COMPAT_PROJECT) { some(sb.quota_inums[2]) } else { None };
        let inodes = [some(sb.quota_inums[0]), some(sb.quota_inums[1]), prj];
        Some(QuotaFiles { limits: std::array::from_fn(|t| limits[t] && inodes[t].is_some()), inodes })
    }

    fn is_quota_file(&self, ino: InodeNo) -> bool {
        self.inodes.contains(&Some(ino))
    }

    /// What `inode` counts, or `None` when it counts nothing: reserved inodes other than the root, EA
    /// inodes (their owners are charged) and the quota files themselves, as e2fsck counts.
    pub fn charge(&self, sb: &Superblock, inode: &Inode) -> Option<Charge> {
        let user = inode.ino == super::ROOT_INO || inode.ino.0 >= sb.first_ino;
        if !user || inode.has_flag(flags::EA_INODE) || self.is_quota_file(inode.ino) {
            return None;
        }
        let space = i64::try_from(inode.blocks_512.saturating_mul(512)).unwrap_or(i64::MAX);
        Some(Charge { ids: [inode.uid, inode.gid, inode.projid()], space, inodes: 1 })
    }

    /// Checks that each quota file is one the engine can update: its header, and its info's counts in
    /// range. Called at mount; a file that fails makes the mount read-only.
    pub fn check(&self, fs: &Filesystem) -> Result<()> {
        for (t, ino) in self.inodes.iter().enumerate() {
            let Some(ino) = *ino else { continue };
            let inode = fs.inode(ino)?;
            let head = read_qblk(fs, &inode, 0)?;
            let obj = Object::Inode(ino.0);
            if le32(&head, 0) != MAGIC[t] || le32(&head, 4) != 1 {
                return Err(Error::corrupt(obj, CorruptKind::NotV2QuotaFileOfItsType));
            }
            let blocks = le32(&head, INFO_BLOCKS);
            if !(2..MAX_BLOCKS).contains(&blocks) {
                return Err(Error::corrupt(obj, CorruptKind::QuotaFileBlockCountOutOfRange));
            }
            for at in [INFO_FREE_BLK, INFO_FREE_ENTRY] {
                if le32(&head, at) >= blocks {
                    return Err(Error::corrupt(obj, CorruptKind::QuotaFileFreeListBeyondFile));
                }
            }
            tracing::debug!(kind = NAMES[t], ino = ino.0, blocks, "quota file");
        }
        Ok(())
    }
}

/// How a charge grew for one quota type: the id charged more, and by how much.
#[derive(Debug, Clone, Copy, Default)]
pub struct Growth {
    pub id: u32,
    pub space: i64,
    pub inodes: i64,
}

impl Growth {
    /// Per type, what moving from charge `before` to `after` adds to `after`'s ids: the difference where
    /// the id stays, all of `after` where it changes (the new owner is charged it all).
    pub fn of(before: Option<&Charge>, after: &Charge) -> [Growth; TYPES] {
        std::array::from_fn(|t| match before {
            Some(b) if b.ids[t] == after.ids[t] => Growth {
                id: after.ids[t],
                space: after.space.saturating_sub(b.space),
                inodes: after.inodes.saturating_sub(b.inodes),
            },
            _ => Growth { id: after.ids[t], space: after.space, inodes: after.inodes },
        })
    }
}

/// Fails with EDQUOT when the usage `deltas` make would pass an enforced limit of an id charged more
/// (`check_bdq`, `check_idq`).
pub(crate) fn check_limits(tx: &Txn<'_>, files: &QuotaFiles, deltas: &Deltas, grown: &[Growth; TYPES]) -> Result<()> {
    if PRIVILEGED.with(Cell::get) {
        return Ok(());
    }
    let now = now_secs();
    for t in (0..TYPES).filter(|&t| files.limits[t]) {
        let grown = grown[t];
        if grown.space <= 0 && grown.inodes <= 0 {
            continue;
        }
        let (Some(ino), id) = (files.inodes[t], grown.id) else { continue };
        let file = QuotaFile { ino, inode: inode_mut(tx, ino)?, grown: false };
        let Some((q, at)) = file.find(tx, id)? else { continue };
        let blk = file.read(tx, q)?;
        let e = entry(&blk, at);
        let (space, inodes) = deltas.get(t, id);
        let over = |cur: usize, delta: i64, hard: usize, soft: usize, time: usize, unit: u64| {
            let usage = le64(e, cur).saturating_add_signed(delta);
            let (hard, soft) = (le64(e, hard).saturating_mul(unit), le64(e, soft).saturating_mul(unit));
            let deadline = le64(e, time);
            (hard != 0 && usage > hard) || (soft != 0 && usage > soft && deadline != 0 && now >= deadline)
        };
        if (grown.space > 0 && over(E_CURSPACE, space, E_BHARD, E_BSOFT, E_BTIME, LIMIT_UNIT))
            || (grown.inodes > 0 && over(E_CURINODES, inodes, E_IHARD, E_ISOFT, E_ITIME, 1))
        {
            return Err(Error::QuotaExceeded);
        }
    }
    Ok(())
}

/// Writes `deltas` into the quota files, through `tx`.
pub(crate) fn apply(tx: &mut Txn<'_>, files: &QuotaFiles, deltas: &Deltas) -> Result<()> {
    for (t, ino) in files.inodes.iter().enumerate() {
        let Some(ino) = *ino else { continue };
        let changes: Vec<(u32, (i64, i64))> = deltas
            .0
            .range((t, 0)..=(t, u32::MAX))
            .filter(|(_, d)| **d != (0, 0))
            .map(|(&(_, id), &d)| (id, d))
            .collect();
        if changes.is_empty() {
            continue;
        }
        let mut file = QuotaFile { ino, inode: inode_mut(tx, ino)?, grown: false };
        for (id, (space, inodes)) in changes {
            file.add_usage(tx, id, space, inodes, files.limits[t])?;
        }
        if file.grown {
            tx.write_inode(&file.inode)?;
        }
    }
    Ok(())
}

/// One quota file being changed by a transaction.
struct QuotaFile {
    ino: InodeNo,
    inode: Inode,
    /// Blocks were added (the inode must be written).
    grown: bool,
}

impl QuotaFile {
    fn obj(&self) -> Object {
        Object::Inode(self.ino.0)
    }

    /// Adds to id `id`'s usage, making its entry when it has none; keeps the grace deadlines as the
    /// kernel: started when usage passes a soft limit (limits enforced), cleared when it is back under.
    fn add_usage(&mut self, tx: &mut Txn<'_>, id: u32, space: i64, inodes: i64, enforced: bool) -> Result<()> {
        let (q, at) = match self.find(tx, id)? {
            Some(found) => found,
            None => self.insert(tx, id)?,
        };
        let head = self.read(tx, 0)?;
        let mut blk = self.read(tx, q)?;
        let e = entry_mut(&mut blk, at);
        let add = |old: u64, d: i64| old.saturating_add_signed(d);
        let now = now_secs();
        for (cur, d, soft, time, unit, grace) in [
            (E_CURSPACE, space, E_BSOFT, E_BTIME, LIMIT_UNIT, INFO_BGRACE),
            (E_CURINODES, inodes, E_ISOFT, E_ITIME, 1, INFO_IGRACE),
        ] {
            let usage = add(le64(e, cur), d);
            put64(e, cur, usage);
            let soft = le64(e, soft).saturating_mul(unit);
            if soft != 0 && usage > soft {
                if enforced && le64(e, time) == 0 {
                    put64(e, time, now.saturating_add(u64::from(le32(&head, grace))));
                }
            } else if soft != 0 || le64(e, time) > 1 {
                put64(e, time, 0);
            }
        }
        if e.iter().all(|&b| b == 0) {
            put64(e, E_ITIME, 1);
        }
        self.write(tx, q, &blk)
    }

    /// The quota block and byte offset of `id`'s entry, if it has one.
    fn find(&self, tx: &Txn<'_>, id: u32) -> Result<Option<(u32, usize)>> {
        let mut q = TREE_ROOT;
        for depth in 0..DEPTH {
            q = le32(&self.read(tx, q)?, pointer_offset(id, depth));
            if q == 0 {
                return Ok(None);
            }
            self.check_ref(tx, q)?;
        }
        let blk = self.read(tx, q)?;
        Ok(entry_slots().find(|&at| is_used(entry(&blk, at)) && le32(entry(&blk, at), E_ID) == id).map(|at| (q, at)))
    }

    /// Makes an entry for `id` (which has none): tree blocks where the path is missing, a free slot in a
    /// data block, as the kernel's `do_insert_tree`.
    fn insert(&mut self, tx: &mut Txn<'_>, id: u32) -> Result<(u32, usize)> {
        let mut q = TREE_ROOT;
        for depth in 0..LAST_DEPTH {
            let mut node = self.read(tx, q)?;
            let at = pointer_offset(id, depth);
            let mut next = le32(&node, at);
            if next == 0 {
                next = self.alloc_block(tx)?;
                self.write(tx, next, &[0; QBLK])?;
                put32(&mut node, at, next);
                self.write(tx, q, &node)?;
            } else {
                self.check_ref(tx, next)?;
            }
            q = next;
        }
        let (data, at) = self.free_entry(tx, id)?;
        let mut leaf = self.read(tx, q)?;
        let slot = pointer_offset(id, LAST_DEPTH);
        if le32(&leaf, slot) != 0 {
            return Err(Error::corrupt(self.obj(), CorruptKind::QuotaTreeNamesDataBlockForIdItLacks));
        }
        put32(&mut leaf, slot, data);
        self.write(tx, q, &leaf)?;
        Ok((data, at))
    }

    /// A free entry in a data block (the first on the free-entry list, or a new block), taken for `id`.
    fn free_entry(&mut self, tx: &mut Txn<'_>, id: u32) -> Result<(u32, usize)> {
        let mut head = self.read(tx, 0)?;
        let mut q = le32(&head, INFO_FREE_ENTRY);
        let mut blk = if q == 0 {
            q = self.alloc_block(tx)?;
            head = self.read(tx, 0)?;
            put32(&mut head, INFO_FREE_ENTRY, q);
            self.write(tx, 0, &head)?;
            vec![0; QBLK]
        } else {
            self.check_ref(tx, q)?;
            self.read(tx, q)?
        };
        let entries = usize::from(le16(&blk, 8));
        // entries < ENTRIES_PER_BLOCK (a full block is not on the list), so this cannot overflow.
        let taken = entries.saturating_add(1);
        if taken >= ENTRIES_PER_BLOCK {
            // The block becomes full: off the free-entry list.
            self.unlink_free_entry(tx, &mut blk)?;
        }
        let at = entry_slots()
            .find(|&at| !is_used(entry(&blk, at)))
            .ok_or_else(|| Error::corrupt(self.obj(), CorruptKind::QuotaDataBlockOnFreeListIsFull))?;
        put16(&mut blk, 8, u16::try_from(taken).unwrap_or(u16::MAX));
        let e = entry_mut(&mut blk, at);
        e.fill(0);
        put32(e, E_ID, id);
        put64(e, E_ITIME, 1);
        self.write(tx, q, &blk)?;
        Ok((q, at))
    }

    /// Takes data block `blk` (the free-entry list's head) off the list, as `remove_free_dqentry`.
    fn unlink_free_entry(&mut self, tx: &mut Txn<'_>, blk: &mut [u8]) -> Result<()> {
        let (next, prev) = (le32(blk, 0), le32(blk, 4));
        if next != 0 {
            self.check_ref(tx, next)?;
            let mut b = self.read(tx, next)?;
            put32(&mut b, 4, prev);
            self.write(tx, next, &b)?;
        }
        if prev != 0 {
            self.check_ref(tx, prev)?;
            let mut b = self.read(tx, prev)?;
            put32(&mut b, 0, next);
            self.write(tx, prev, &b)?;
        } else {
            let mut head = self.read(tx, 0)?;
            put32(&mut head, INFO_FREE_ENTRY, next);
            self.write(tx, 0, &head)?;
        }
        put32(blk, 0, 0);
        put32(blk, 4, 0);
        Ok(())
    }

    /// A free quota block: the first of the free block list, or one more at the end of the file.
    fn alloc_block(&mut self, tx: &mut Txn<'_>) -> Result<u32> {
        let mut head = self.read(tx, 0)?;
        let free = le32(&head, INFO_FREE_BLK);
        let q = if free != 0 {
            self.check_ref(tx, free)?;
            let next = le32(&self.read(tx, free)?, 0);
            put32(&mut head, INFO_FREE_BLK, next);
            free
        } else {
            let blocks = le32(&head, INFO_BLOCKS);
            if blocks >= MAX_BLOCKS {
                return Err(Error::NoSpace);
            }
            put32(&mut head, INFO_BLOCKS, blocks.saturating_add(1));
            blocks
        };
        self.write(tx, 0, &head)?;
        Ok(q)
    }

    /// A block number read from the file must lie inside it (`check_reference`).
    fn check_ref(&self, tx: &Txn<'_>, q: u32) -> Result<()> {
        if q >= le32(&self.read(tx, 0)?, INFO_BLOCKS) || q == 0 {
            return Err(Error::corrupt(self.obj(), CorruptKind::QuotaFileReferenceBeyondFile));
        }
        Ok(())
    }

    fn read(&self, tx: &Txn<'_>, q: u32) -> Result<Vec<u8>> {
        read_qblk(tx.fs(), &self.inode, q)
    }

    /// Writes quota block `q`, giving the file a block for it when it has none there (and its size).
    fn write(&mut self, tx: &mut Txn<'_>, q: u32, data: &[u8]) -> Result<()> {
        let fs = tx.fs();
        let bs = u64::from(fs.block_size());
        let off = qblk_offset(q);
        let (lblk, within) = (off.checked_div(bs).unwrap_or(0), offset_in_block(off, bs));
        let pblk = match fs.map(&self.inode, lblk)? {
            Mapping::Mapped { pblk, unwritten: false, .. } => pblk,
            Mapping::Mapped { .. } => return Err(Error::corrupt(self.obj(), CorruptKind::QuotaFileBlockUnwritten)),
            Mapping::Hole { .. } => {
                let mut map = MapEdit::load(fs, &self.inode)?;
                let goal = match lblk.checked_sub(1).map(|l| map.lookup(fs, &self.inode, l)) {
                    Some(Ok(Mapping::Mapped { pblk, .. })) => pblk.saturating_add(1),
                    _ => 0,
                };
                let (pblk, _) = map.allocate(tx, &mut self.inode, lblk, 1, goal, false)?;
                tx.put(pblk, vec![0; super::bytes::index(fs.block_size())]);
                map.store(tx, &mut self.inode, pblk)?;
                self.grown = true;
                pblk
            }
        };
        let mut block = tx.block(pblk, self.obj())?;
        block
            .get_mut(within..within.saturating_add(QBLK))
            .ok_or_else(|| Error::corrupt(self.obj(), CorruptKind::QuotaFileReferenceBeyondFile))?
            .copy_from_slice(data);
        tx.put(pblk, block);
        let end = off.saturating_add(QBLK_BYTES);
        if self.inode.size < end {
            self.inode.size = end;
            self.grown = true;
        }
        Ok(())
    }
}

/// Quota block `q` of the file `inode`: zero past its end or in a hole, as e2fsprogs reads it.
fn read_qblk(fs: &Filesystem, inode: &Inode, q: u32) -> Result<Vec<u8>> {
    let bs = u64::from(fs.block_size());
    let off = qblk_offset(q);
    if off >= inode.size {
        return Ok(vec![0; QBLK]);
    }
    let within = offset_in_block(off, bs);
    match fs.map(inode, off.checked_div(bs).unwrap_or(0))? {
        Mapping::Mapped { pblk, unwritten: false, .. } => {
            let block = fs.meta_block(pblk, Object::Inode(inode.ino.0))?;
            Ok(block.get(within..within.saturating_add(QBLK)).map_or_else(|| vec![0; QBLK], <[u8]>::to_vec))
        }
        _ => Ok(vec![0; QBLK]),
    }
}

/// The byte offsets of the entries of a data block.
fn entry_slots() -> impl Iterator<Item = usize> {
    (0..ENTRIES_PER_BLOCK).map(|i| DATA_HEADER.saturating_add(i.saturating_mul(ENTRY)))
}

fn is_used(entry: &[u8]) -> bool {
    entry.iter().any(|&b| b != 0)
}

/// The tree index of `id` at `depth` (`get_index`): with four levels, byte `depth` of the id from the
/// most significant.
fn index(id: u32, depth: usize) -> usize {
    const _: () = assert!(DEPTH == 4);
    usize::from(id.to_be_bytes().get(depth).copied().unwrap_or(0))
}

/// The byte offset of `id`'s pointer in a tree block at `depth`.
fn pointer_offset(id: u32, depth: usize) -> usize {
    index(id, depth).saturating_mul(4)
}

/// The depth of the tree's last level (its blocks point at data blocks).
const LAST_DEPTH: usize = DEPTH - 1;
const QBLK_BITS: u32 = 10;
const QBLK_BYTES: u64 = 1 << QBLK_BITS;
const _: () = assert!(QBLK == 1 << QBLK_BITS);

/// Where quota block `q` starts in the file.
fn qblk_offset(q: u32) -> u64 {
    u64::from(q) << QBLK_BITS
}

/// Byte `off` of the file within its filesystem block (`bs` is at least 1024, so this is below 2^16).
fn offset_in_block(off: u64, bs: u64) -> usize {
    usize::try_from(off.checked_rem(bs).unwrap_or(0)).unwrap_or(0)
}

/// The entry of a data block at byte `at` (an offset from `entry_slots`, inside the block).
fn entry(blk: &[u8], at: usize) -> &[u8] {
    blk.get(at..at.saturating_add(ENTRY)).unwrap_or_default()
}

fn entry_mut(blk: &mut [u8], at: usize) -> &mut [u8] {
    blk.get_mut(at..at.saturating_add(ENTRY)).unwrap_or_default()
}

/// Now, in seconds since the epoch (0 before it), for grace deadlines.
fn now_secs() -> u64 {
    u64::try_from(super::inode::Timestamp::now().sec).unwrap_or(0)
}
