//! The orphan list: inodes that were unlinked while still open, or were being truncated, when the
//! filesystem stopped. The superblock's `s_last_orphan` names the first, and each orphan's `i_dtime` the
//! next (the kernel's original orphan chain, which both the kernel and e2fsck process on every image,
//! with or without the orphan_file feature).

use std::collections::HashSet;

use super::error::{Error, Object, Result};
use super::fs::Filesystem;
use super::inode::{Inode, InodeNo};
use super::txn::{Txn, inode_mut};

impl Txn<'_> {
    /// Puts `inode` at the head of the orphan list (the caller writes the inode).
    pub fn orphan_add(&mut self, inode: &mut Inode) {
        let mut head = 0;
        self.update_state(true, |s| {
            head = s.last_orphan;
            s.last_orphan = inode.ino.0;
        });
        inode.dtime = head;
    }

    /// Takes `inode` off the orphan list (the caller writes the inode).
    pub fn orphan_remove(&mut self, inode: &mut Inode) -> Result<()> {
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
        Err(Error::corrupt(Object::Inode(inode.ino.0), "orphan not found on the orphan list"))
    }
}

impl Filesystem {
    /// Finishes what a crash interrupted, as the kernel's `ext4_orphan_cleanup` does at mount: orphans
    /// without links are deleted, the others truncated to their size. Then the list is empty.
    pub(crate) fn process_orphans(&self) -> Result<()> {
        let mut seen = HashSet::new();
        loop {
            let head = self.state.lock().unwrap_or_else(|p| p.into_inner()).last_orphan;
            if head == 0 {
                return Ok(());
            }
            let mut tx = self.begin()?;
            if !seen.insert(head) || head > self.sb.inodes_count {
                tracing::warn!(inode = head, "orphan list is damaged; cutting it here");
                tx.update_state(true, |s| s.last_orphan = 0);
                tx.commit()?;
                return Ok(());
            }
            let mut inode = match inode_mut(&tx, InodeNo(head)) {
                Ok(i) => i,
                Err(e) => {
                    tracing::warn!(inode = head, error = %e, "unreadable orphan; cutting the orphan list here");
                    tx.update_state(true, |s| s.last_orphan = 0);
                    tx.commit()?;
                    return Ok(());
                }
            };
            tx.orphan_remove(&mut inode)?;
            if inode.links_count == 0 {
                tracing::info!(inode = head, "deleting orphan inode");
                self.delete_inode(&mut tx, &mut inode)?;
            } else {
                tracing::info!(inode = head, "truncating orphan inode to its size");
                if inode.kind == super::inode::FileKind::Regular {
                    let size = inode.size;
                    inode.size = u64::MAX;
                    self.set_size(&mut tx, &mut inode, size)?;
                }
                tx.write_inode(&inode)?;
            }
            tx.commit()?;
        }
    }
}
