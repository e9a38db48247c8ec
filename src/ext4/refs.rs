//! The kernel's references to inodes (FUSE lookups, which open files and mappings hold): an inode
//! unlinked while referenced stays, on the orphan list, until the last reference goes.

use super::error::Result;
use super::fs::Filesystem;
use super::inode::InodeNo;
use super::txn::inode_mut;

impl Filesystem {
    pub(super) fn ref_count(&self, ino: InodeNo) -> u64 {
        self.refs.lock().unwrap_or_else(|p| p.into_inner()).get(&ino.0).copied().unwrap_or(0)
    }

    /// Counts a reference the caller took to `ino` (a FUSE lookup: the kernel then holds the inode until
    /// it forgets it, open files and mappings included).
    pub fn pin(&self, ino: InodeNo) {
        let mut refs = self.refs.lock().unwrap_or_else(|p| p.into_inner());
        let n = refs.entry(ino.0).or_insert(0);
        *n = n.saturating_add(1);
    }

    /// Drops `n` references to `ino`; when the last goes and the inode has no links left (it was unlinked
    /// while still in use), it is taken off the orphan list and deleted.
    pub fn unpin(&self, ino: InodeNo, n: u64) -> Result<()> {
        {
            let mut refs = self.refs.lock().unwrap_or_else(|p| p.into_inner());
            let Some(c) = refs.get_mut(&ino.0) else { return Ok(()) };
            *c = c.saturating_sub(n);
            if *c > 0 {
                return Ok(());
            }
            refs.remove(&ino.0);
        }
        if !self.doomed.lock().unwrap_or_else(|p| p.into_inner()).contains(&ino.0) {
            return Ok(());
        }
        let mut tx = self.begin()?;
        // Pinned again meanwhile (a lookup raced the forget), or already deleted: leave it.
        if self.ref_count(ino) > 0 || !self.doomed.lock().unwrap_or_else(|p| p.into_inner()).remove(&ino.0) {
            return Ok(());
        }
        let mut inode = inode_mut(&tx, ino)?;
        if inode.links_count != 0 {
            return Ok(());
        }
        tx.orphan_remove(&mut inode)?;
        self.delete_inode(&mut tx, &mut inode)?;
        tx.commit()
    }
}
