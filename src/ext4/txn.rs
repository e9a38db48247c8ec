//! Transactions: the one place every metadata change goes through.
//!
//! A write operation begins a [`Txn`], which holds the filesystem's lock exclusively (readers wait), reads
//! blocks through the block cache and puts changed copies in the pending overlay, where every read of the
//! same operation sees them. `commit` writes the pending blocks home (file data was written before, so
//! the metadata never points at stale data), then moves them into the cache. Dropping a transaction without
//! committing (an error part way) throws the changes away: the pending blocks, the inodes it cached, and the
//! group descriptor and superblock fields it changed. Journaling replaces `commit`'s body, not its callers.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLockWriteGuard};

use super::block_group::{self, GroupDesc};
use super::error::{CorruptKind, Error, Object, Result};
use super::features::{INCOMPAT_RECOVER, RO_COMPAT_ORPHAN_PRESENT};
use super::fs::{Filesystem, SbState};
use super::inode::{Inode, InodeNo, Timestamp};
use super::quota::{Charge, Deltas, Growth};
use super::superblock::{RawSuperblock, STATE_ERROR, STATE_VALID, SUPERBLOCK_OFFSET};

/// A write operation in progress.
pub struct Txn<'a> {
    fs: &'a Filesystem,
    _guard: RwLockWriteGuard<'a, ()>,
    inodes: Vec<u32>,
    groups_before: HashMap<u32, GroupDesc>,
    state_before: Option<SbState>,
    sb_dirty: bool,
    committed: bool,
    /// Block ranges this operation freed (kept from reuse until the journal commits them).
    pub(crate) freed: Vec<(u64, u64)>,
    /// Quota usage this operation moved, written into the quota files at commit.
    quota: Deltas,
    /// Inodes this operation allocated and has not written yet: their records on disk are free slots,
    /// which charge nothing.
    fresh: HashSet<u32>,
}

impl Filesystem {
    /// Starts a write operation; fails with `EROFS` on a read-only filesystem.
    pub(crate) fn begin(&self) -> Result<Txn<'_>> {
        if self.is_read_only() {
            return Err(Error::ReadOnly);
        }
        let guard = self.lock.write().unwrap_or_else(|p| p.into_inner());
        Ok(Txn {
            fs: self,
            _guard: guard,
            inodes: Vec::new(),
            groups_before: HashMap::new(),
            state_before: None,
            sb_dirty: false,
            committed: false,
            freed: Vec::new(),
            quota: Deltas::default(),
            fresh: HashSet::new(),
        })
    }

    /// The superblock as it should be on disk now: the raw copy with the live counters and `state`.
    pub(crate) fn superblock_bytes(&self, st: &SbState, state: Option<u16>) -> RawSuperblock {
        let mut sb = st.raw.clone();
        // The superblock counts free blocks, the group descriptors free clusters (the kernel's `EXT4_C2B`).
        sb.set_free_blocks(st.free_clusters << self.sb.cluster_bits());
        // At most the inode count, a u32.
        sb.set_free_inodes(u32::try_from(st.free_inodes).unwrap_or(u32::MAX));
        sb.set_last_orphan(st.last_orphan);
        if let Some(s) = state {
            sb.set_state(s);
        }
        sb.set_write_time(seconds32(Timestamp::now()));
        sb
    }

    /// Writes the superblock as `st` says (live counters, `state` when given) and keeps that as its raw
    /// copy. The caller flushes.
    fn store_superblock(&self, st: &mut SbState, state: Option<u16>) -> Result<()> {
        let sb = self.superblock_bytes(st, state);
        self.dev.write_all_at(&sb.sealed(), SUPERBLOCK_OFFSET)?;
        st.raw = sb;
        Ok(())
    }

    /// Marks the filesystem in use, as the kernel does on a read-write mount, then cleans up orphans a
    /// crash left behind. With a journal the superblock says needs_recovery while mounted (a crash is
    /// then replayed); without one it says not clean (e2fsck must check it).
    pub(crate) fn mount_rw(&self) -> Result<()> {
        {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            st.raw.count_mount(seconds32(Timestamp::now()));
            if self.log.is_some() {
                st.raw.set_incompat(INCOMPAT_RECOVER, true);
            } else {
                let state = st.raw.state() & !STATE_VALID;
                st.raw.set_state(state);
            }
            if self.orphan_file.is_some() {
                // As the kernel: the orphan file may hold orphans while the mount lasts.
                st.raw.set_ro_compat(RO_COMPAT_ORPHAN_PRESENT, true);
            }
            self.store_superblock(&mut st, None)?;
        }
        self.dev.flush()?;
        self.process_orphans()
    }

    /// Commits the journal and writes the final superblock (exact free counts, clean state, no
    /// recovery needed), flushing: a clean unmount. Then releases the MMP block, whatever became of the
    /// rest: nothing writes the image after this.
    pub fn close(&self) -> Result<()> {
        let closed = self.write_final_state();
        let released = self.release_mmp();
        closed.and(released)
    }

    fn write_final_state(&self) -> Result<()> {
        let errored = self.errored.lock().unwrap_or_else(|p| p.into_inner()).is_some();
        let aborted = self.aborted.lock().unwrap_or_else(|p| p.into_inner()).is_some();
        if self.read_only.is_some() || aborted {
            // Never writable, or a commit failed: nothing is written (the journal replays what committed).
            return Ok(());
        }
        if !errored {
            // Inodes unlinked while the kernel still held them, and not forgotten before the unmount, are
            // deleted now, as the kernel's final iput would.
            self.process_orphans()?;
        }
        let _guard = self.lock.write().unwrap_or_else(|p| p.into_inner());
        // After errors=remount-ro the running transaction still holds only whole operations: commit it,
        // and record the error in the superblock so that e2fsck checks the image in full.
        if let Some(log) = &self.log {
            log.close(self)?;
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let state = st.raw.state() | STATE_VALID | if errored { STATE_ERROR } else { 0 };
        st.raw.set_incompat(INCOMPAT_RECOVER, false);
        if let Some(file) = &self.orphan_file {
            // The orphan file is empty unless errors stopped the orphans' deletion above.
            if file.first(self)?.is_none() {
                st.raw.set_ro_compat(RO_COMPAT_ORPHAN_PRESENT, false);
            }
        }
        self.store_superblock(&mut st, Some(state))?;
        self.dev.flush()?;
        Ok(())
    }

    /// Writes the superblock marked not clean, and flushes: before anything is written outside the
    /// journal, so that a crash in the middle is found by e2fsck.
    pub(crate) fn mark_not_clean(&self) -> Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let state = st.raw.state() & !STATE_VALID;
        st.raw.set_state(state);
        self.store_superblock(&mut st, None)?;
        self.dev.flush()?;
        Ok(())
    }

    /// Makes everything written so far durable (fsync, fsyncdir, syncfs): with a journal, commits it.
    pub fn sync(&self) -> Result<()> {
        if self.log.is_some() {
            let _guard = self.lock.write().unwrap_or_else(|p| p.into_inner());
            return self.commit_journal();
        }
        let _guard = self.shared();
        self.dev.flush()?;
        Ok(())
    }

    /// Commits the running journal transaction; the caller holds the write lock (a [`Txn`] or `sync`).
    pub(crate) fn commit_journal(&self) -> Result<()> {
        match &self.log {
            Some(log) => log.commit(self),
            None => Ok(self.dev.flush()?),
        }
    }

    /// Commits the journal when the commit interval has passed (called periodically by the server);
    /// returns whether it committed.
    pub fn commit_if_due(&self) -> Result<bool> {
        let Some(log) = &self.log else { return Ok(false) };
        if self.is_read_only() {
            return Ok(false);
        }
        let _guard = self.lock.write().unwrap_or_else(|p| p.into_inner());
        log.commit_if_due(self)
    }

    /// Sets how long finished operations may wait in memory before the journal commits them (`commit=`).
    pub fn set_commit_interval(&self, interval: std::time::Duration) {
        if let Some(log) = &self.log {
            log.set_interval(interval);
        }
    }

    /// Whether writes go through the journal.
    pub fn is_journaled(&self) -> bool {
        self.log.is_some()
    }
}

impl<'a> Txn<'a> {
    pub fn fs(&self) -> &'a Filesystem {
        self.fs
    }

    /// A copy of metadata block `nr` as this transaction sees it, to change and [`Txn::put`] back.
    pub fn block(&self, nr: u64, obj: Object) -> Result<Vec<u8>> {
        Ok(self.fs.meta_block(nr, obj)?.as_ref().clone())
    }

    /// Records the new content of metadata block `nr`.
    pub fn put(&mut self, nr: u64, data: Vec<u8>) {
        self.fs.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(nr, Arc::new(data));
    }

    /// Writes `inode` into its inode table block and the inode cache, moving its quota charge.
    pub fn write_inode(&mut self, inode: &Inode) -> Result<Arc<Inode>> {
        self.recharge(inode)?;
        let (nr, off) = self.fs.inode_location(inode.ino)?;
        let mut block = self.block(nr, Object::Inode(inode.ino.0))?;
        let rec = inode.encode(&self.fs.sb);
        block
            .get_mut(off..off.saturating_add(rec.len()))
            .ok_or_else(|| Error::corrupt(Object::Inode(inode.ino.0), CorruptKind::InodeRecordOutsideItsBlock))?
            .copy_from_slice(&rec);
        self.put(nr, block);
        // Re-parse what will be on disk, so the cache holds exactly that (raw bytes and checksum seed).
        let parsed = Arc::new(Inode::parse(&self.fs.sb, inode.ino, &rec)?);
        self.fs.inodes.insert(inode.ino.0, parsed.clone());
        self.inodes.push(inode.ino.0);
        Ok(parsed)
    }

    /// Moves the quota charge of `inode` from what its record says now to what `new` will.
    fn recharge(&mut self, new: &Inode) -> Result<()> {
        let Some(files) = &self.fs.quota else { return Ok(()) };
        let after = files.charge(&self.fs.sb, new);
        let before = if self.fresh.remove(&new.ino.0) {
            None
        } else {
            // A record that cannot be read charged nothing the engine knows of.
            self.fs.inode(new.ino).ok().and_then(|old| files.charge(&self.fs.sb, &old))
        };
        if before == after {
            return Ok(());
        }
        let mut moves = Vec::new();
        if let Some(c) = before {
            moves.push((c, -1));
        }
        if let Some(c) = after {
            moves.push((c, 1));
        }
        // The EA inodes an owner names count as its inodes: they go with it to a new owner.
        let mut after_all = after;
        if let (Some(b), Some(a)) = (before, after) {
            if b.ids != a.ids {
                let n = self.fs.ea_inode_refs(new)?;
                moves.push((Charge { inodes: n, space: 0, ..b }, -1));
                moves.push((Charge { inodes: n, space: 0, ..a }, 1));
                after_all = Some(Charge { inodes: a.inodes.saturating_add(n), ..a });
            }
        }
        let grown = after_all.map(|a| Growth::of(before.as_ref(), &a));
        self.charge(&moves, grown.as_ref())
    }

    /// Applies quota moves (charges, each with its sign) to this operation's deltas, unless `grown`, the
    /// growth they make, passes an enforced limit: then nothing is moved and the operation fails.
    fn charge(&mut self, moves: &[(Charge, i64)], grown: Option<&[Growth; 3]>) -> Result<()> {
        for (c, sign) in moves {
            self.quota.add(c, *sign);
        }
        if let (Some(files), Some(grown)) = (&self.fs.quota, grown) {
            if let Err(e) = super::quota::check_limits(self, files, &self.quota, grown) {
                for (c, sign) in moves {
                    self.quota.add(c, sign.saturating_neg());
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Charges `owner` for `n` more EA inodes (negative: fewer), which the kernel counts as its inodes.
    pub(crate) fn charge_ea_inodes(&mut self, owner: &Inode, n: i64) -> Result<()> {
        let Some(c) = self.fs.quota.as_ref().and_then(|f| f.charge(&self.fs.sb, owner)) else { return Ok(()) };
        let c = Charge { inodes: n, space: 0, ..c };
        let grown = Growth::of(None, &c);
        self.charge(&[(c, 1)], Some(&grown))
    }

    /// An inode this operation allocated: until written, it charges nothing.
    pub(crate) fn allocated_inode(&mut self, ino: InodeNo) {
        if self.fs.quota.is_some() {
            self.fresh.insert(ino.0);
        }
    }

    /// An inode this operation frees: its record's charge is released.
    pub(crate) fn freeing_inode(&mut self, ino: InodeNo) {
        let Some(files) = &self.fs.quota else { return };
        if self.fresh.remove(&ino.0) {
            return;
        }
        if let Some(c) = self.fs.inode(ino).ok().and_then(|cur| files.charge(&self.fs.sb, &cur)) {
            self.quota.add(&c, -1);
        }
    }

    /// Changes group `g`'s descriptor and writes it into its descriptor block.
    pub fn update_group(&mut self, g: u32, f: impl FnOnce(&mut GroupDesc)) -> Result<()> {
        let sb = &self.fs.sb;
        let desc = {
            let mut groups = self.fs.groups.write().unwrap_or_else(|p| p.into_inner());
            let d = groups
                .get_mut(super::bytes::index(g))
                .ok_or(Error::corrupt(Object::GroupDescriptor(g), CorruptKind::NoSuchGroup))?;
            self.groups_before.entry(g).or_insert_with(|| d.clone());
            f(d);
            d.encode(sb, g)
        };
        let per_block = sb.descs_per_block();
        let out_of_range = Error::corrupt(Object::GroupDescriptor(g), CorruptKind::DescriptorBlockOutOfRange);
        let (table_block, slot) = u64::from(g)
            .checked_div(per_block)
            .zip(u64::from(g).checked_rem(per_block))
            .ok_or(Error::corrupt(Object::GroupDescriptor(g), CorruptKind::DescriptorBlockOutOfRange))?;
        let nr = block_group::descriptor_block(sb, table_block).ok_or(out_of_range)?;
        let off = usize::try_from(slot).unwrap_or(usize::MAX).saturating_mul(usize::from(sb.desc_size));
        let mut block = self.block(nr, Object::GroupDescriptor(g))?;
        block
            .get_mut(off..off.saturating_add(desc.len()))
            .ok_or(Error::corrupt(Object::GroupDescriptor(g), CorruptKind::DescriptorBlockOutOfRange))?
            .copy_from_slice(&desc);
        self.put(nr, block);
        Ok(())
    }

    /// Changes the superblock's live fields; `persist` writes the superblock at commit (for the orphan
    /// list head, which must be on disk before the inode it names is left unlinked).
    pub(crate) fn update_state(&mut self, persist: bool, f: impl FnOnce(&mut SbState)) {
        let mut st = self.fs.state.lock().unwrap_or_else(|p| p.into_inner());
        if self.state_before.is_none() {
            self.state_before = Some(st.clone());
        }
        f(&mut st);
        self.sb_dirty |= persist;
    }

    /// A fresh `i_generation` (xorshift: distinct, unpredictable enough for NFS-style handles).
    pub fn next_generation(&mut self) -> u32 {
        use std::sync::atomic::Ordering;
        let mut x = self.fs.generation.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.fs.generation.store(x, Ordering::Relaxed);
        x
    }

    /// Ends the operation: hands the pending blocks to the journal's running transaction, or without a
    /// journal writes them home in block order; they become the cached versions.
    pub fn commit(mut self) -> Result<()> {
        if let Some(files) = &self.fs.quota {
            let deltas = std::mem::take(&mut self.quota);
            if !deltas.is_empty() {
                super::quota::apply(&mut self, files, &deltas)?;
            }
        }
        let pending: Vec<(u64, Arc<Vec<u8>>)> = {
            let mut p = self.fs.pending.lock().unwrap_or_else(|p| p.into_inner());
            let mut v: Vec<_> = p.drain().collect();
            v.sort_unstable_by_key(|(nr, _)| *nr);
            v
        };
        if let Some(log) = &self.fs.log {
            for (nr, data) in &pending {
                self.fs.blocks.insert(*nr, data.clone());
            }
            let sb = {
                let st = self.fs.state.lock().unwrap_or_else(|p| p.into_inner());
                self.fs.superblock_bytes(&st, None).sealed()
            };
            // The operation is part of the running transaction from here on, whatever the commit below
            // (when the transaction is full) returns: its changes are not rolled back.
            self.committed = true;
            return log.add(self.fs, pending, sb, &self.freed);
        }
        let bs = u64::from(self.fs.sb.block_size);
        let mut result = Ok(());
        for (nr, data) in &pending {
            if let Err(e) = self.fs.dev.write_all_at(data, nr.saturating_mul(bs)) {
                result = Err(Error::Io(e));
                break;
            }
        }
        if result.is_ok() && self.sb_dirty {
            let st = self.fs.state.lock().unwrap_or_else(|p| p.into_inner());
            let bytes = self.fs.superblock_bytes(&st, None).sealed();
            result = self.fs.dev.write_all_at(&bytes, SUPERBLOCK_OFFSET).map_err(Error::Io);
        }
        if result.is_err() {
            // The cache must not claim what the disk may not hold.
            for (nr, _) in &pending {
                self.fs.blocks.remove(nr);
            }
            return result;
        }
        for (nr, data) in pending {
            self.fs.blocks.insert(nr, data);
        }
        self.committed = true;
        // Without a journal the blocks this operation freed are free as soon as their bitmap is home.
        self.fs.discard_freed(&self.freed);
        Ok(())
    }
}

impl Drop for Txn<'_> {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        self.fs.pending.lock().unwrap_or_else(|p| p.into_inner()).clear();
        for ino in &self.inodes {
            self.fs.inodes.remove(ino);
        }
        let mut groups = self.fs.groups.write().unwrap_or_else(|p| p.into_inner());
        for (g, d) in self.groups_before.drain() {
            if let Some(slot) = groups.get_mut(super::bytes::index(g)) {
                *slot = d;
            }
        }
        if let Some(st) = self.state_before.take() {
            *self.fs.state.lock().unwrap_or_else(|p| p.into_inner()) = st;
        }
    }
}

/// Re-reads an inode as the transaction sees it (a mutable copy).
pub fn inode_mut(tx: &Txn<'_>, ino: InodeNo) -> Result<Inode> {
    Ok(tx.fs().inode(ino)?.as_ref().clone())
}

/// A time as the superblock's 32-bit seconds fields hold it (the low 32 bits, as the kernel's
/// `ext4_update_tstamp` stores them without the `_hi` byte).
fn seconds32(t: Timestamp) -> u32 {
    super::bytes::low32(u64::from_ne_bytes(t.sec.to_ne_bytes()))
}
