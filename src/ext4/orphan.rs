//! The orphan list: inodes that were unlinked while still open, or were being truncated, when the
//! filesystem stopped. With the orphan_file feature they are kept in the orphan file's slots (see
//! `orphan_file`), as the kernel does, and on the chain only when every slot is taken. The chain: the
//! superblock's `s_last_orphan` names the first, and each orphan's `i_dtime` the next (the kernel's
//! original orphan list, which both the kernel and e2fsck process on every image). A mount processes
//! the chain, then the orphan file.

use std::collections::HashSet;

use super::error::{CorruptKind, Error, Object, Result};
use super::fs::Filesystem;
use super::inode::{Inode, InodeNo};
use super::txn::{Txn, inode_mut};

impl Txn<'_> {
    /// Puts `inode` on the orphan list: in a free slot of the orphan file, or at the head of the chain
    /// (the caller writes the inode).
    pub fn orphan_add(&mut self, inode: &mut Inode) -> Result<()> {
        if let Some(file) = &self.fs().orphan_file {
            if file.add(self, inode.ino.0)? {
                return Ok(());
            }
        }
        let mut head = 0;
        self.update_state(true, |s| {
            head = s.last_orphan;
            s.last_orphan = inode.ino.0;
        });
        inode.dtime = head;
        Ok(())
    }

    /// Takes `inode` off the orphan list, wherever it is (the caller writes the inode).
    pub fn orphan_remove(&mut self, inode: &mut Inode) -> Result<()> {
        if let Some(file) = &self.fs().orphan_file {
            if file.remove(self, inode.ino.0)? {
                return Ok(());
            }
        }
        let next = inode.dtime;
        let fs = self.fs();
        let head = fs.state.lock().unwrap_or_else(|p| p.into_inner()).last_orphan;
        inode.dtime = 0;
        if head == inode.ino.0 {
            self.update_state(true, |s| s.last_orphan = next);
            return Ok(());
        }
        let mut cur = head;
        let mut seen = HashSet::new();
        while cur != 0 && seen.insert(cur) {
            let mut c = inode_mut(self, InodeNo(cur))?;
            if c.dtime == inode.ino.0 {
                c.dtime = next;
                self.write_inode(&c)?;
                return Ok(());
            }
            cur = c.dtime;
        }
        Err(Error::corrupt(Object::Inode(inode.ino.0), CorruptKind::OrphanNotFoundOnOrphanList))
    }
}

impl Filesystem {
    /// Finishes what a crash interrupted, as the kernel's `ext4_orphan_cleanup` does at mount: orphans
    /// without links are deleted, the others truncated to their size. Then the chain is empty, and so
    /// is the orphan file.
    pub(crate) fn process_orphans(&self) -> Result<()> {
        let mut seen = HashSet::new();
        loop {
            let head = self.state.lock().unwrap_or_else(|p| p.into_inner()).last_orphan;
            if head == 0 {
                break;
            }
            let mut tx = self.begin()?;
            let found = match seen.insert(head) {
                true => self.orphan_inode(&tx, head),
                false => Err(Error::corrupt(Object::Inode(head), CorruptKind::OrphanChainLoops)),
            };
            match found {
                Ok(inode) => self.finish_orphan(tx, inode)?,
                Err(e) => {
                    tracing::warn!(inode = head, error = %e, "orphan list is damaged; cutting it here");
                    tx.update_state(true, |s| s.last_orphan = 0);
                    tx.commit()?;
                    break;
                }
            }
        }
        let Some(file) = &self.orphan_file else { return Ok(()) };
        while let Some(ino) = file.first(self)? {
            let mut tx = self.begin()?;
            match self.orphan_inode(&tx, ino) {
                Ok(inode) => self.finish_orphan(tx, inode)?,
                Err(e) => {
                    tracing::warn!(inode = ino, error = %e, "unreadable orphan in the orphan file; dropping its entry");
                    file.remove(&mut tx, ino)?;
                    tx.commit()?;
                }
            }
        }
        Ok(())
    }

    /// Orphan `ino`, readable and in range.
    fn orphan_inode(&self, tx: &Txn<'_>, ino: u32) -> Result<Inode> {
        if ino > self.sb.inodes_count {
            return Err(Error::corrupt(Object::Inode(ino), CorruptKind::OrphanNumberOutOfRange));
        }
        inode_mut(tx, InodeNo(ino))
    }

    /// Takes `inode` off the orphan list and deletes it (no links) or truncates it to its size.
    fn finish_orphan(&self, mut tx: Txn<'_>, mut inode: Inode) -> Result<()> {
        let ino = inode.ino.0;
        tx.orphan_remove(&mut inode)?;
        if inode.links_count == 0 {
            tracing::info!(inode = ino, "deleting orphan inode");
            self.delete_inode(&mut tx, &mut inode)?;
        } else {
            tracing::info!(inode = ino, "truncating orphan inode to its size");
            if inode.kind == super::inode::FileKind::Regular {
                let size = inode.size;
                inode.size = u64::MAX;
                self.set_size(&mut tx, &mut inode, size)?;
            }
            tx.write_inode(&inode)?;
        }
        tx.commit()
    }
}
