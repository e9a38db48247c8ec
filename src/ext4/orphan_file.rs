//! The orphan file (`orphan_file`; `Documentation/filesystems/ext4/orphan.rst`): an inode named by the
//! superblock's `s_orphan_file_inum` whose blocks hold the numbers of orphan inodes, so that putting an
//! inode on the orphan list changes one block of that file instead of the superblock and a chain of
//! inodes. Each block is an array of `__le32` inode numbers (0: a free slot) and an 8-byte tail: the
//! magic `0x0b10ca04`, then with metadata_csum a crc32c seeded with the orphan file inode's checksum
//! seed, over the block's physical number (`__le64`) and the array.
//!
//! The file's blocks are mapped once, at mount, and never change (the kernel neither grows nor shrinks
//! the file); their contents go through the transaction's view like any metadata, so a transaction
//! dropped without committing leaves no slot taken. When every slot is taken the chain is used, as in
//! the kernel. While a read-write mount lasts, the superblock says `orphan_present`; a clean unmount
//! with no slot taken clears it.

use super::bytes::le32;
use super::bytes_mut::put32;
use super::checksum::crc32c;
use super::error::{CorruptKind, Error, Object, Result};
use super::fs::{Filesystem, Mapping};
use super::inode::{FileKind, InodeNo};
use super::txn::Txn;

/// `ob_magic`, in the tail of every orphan file block.
const MAGIC: u32 = 0x0b10_ca04;
/// The tail: `ob_magic` and `ob_checksum`.
const TAIL: usize = 8;
/// More blocks than mke2fs ever makes (its largest orphan file is 8 MiB): a bound on what is mapped.
const MAX_BLOCKS: u64 = 1 << 16;

/// The orphan file's layout, fixed while mounted.
pub(crate) struct OrphanFile {
    /// The physical block of each block of the file, in order.
    blocks: Vec<u64>,
    /// The orphan file inode's checksum seed (crc32c of the filesystem seed, its number, its generation).
    seed: u32,
    /// Whether the blocks carry checksums (metadata_csum).
    checksummed: bool,
}

/// Why the orphan file cannot be used: the mount then stays read-only (the kernel refuses it; e2fsck
/// rebuilds the file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrphanFileError {
    #[error("the superblock names inode {0} as its orphan file")]
    BadInodeNumber(u32),
    #[error("the orphan file (inode {0}) is not a regular file of whole blocks")]
    NotWholeBlocks(u32),
    #[error("block {lblk} of the orphan file (inode {ino}) is not allocated")]
    Unallocated { lblk: u64, ino: u32 },
    /// Its inode, its map or one of its blocks failed to read or check: the engine's error, as reported.
    #[error("the orphan file: {0}")]
    Unreadable(String),
}

impl OrphanFile {
    /// Maps and checks the orphan file of a filesystem with `orphan_file`: every block allocated, with
    /// the magic and, with metadata_csum, a good checksum. The error says what is wrong (the mount then
    /// stays read-only, as the kernel refuses it; e2fsck rebuilds the file).
    pub(crate) fn open(fs: &Filesystem) -> std::result::Result<OrphanFile, OrphanFileError> {
        let ino = fs.sb.orphan_file_inum;
        if ino == 0 || ino > fs.sb.inodes_count {
            return Err(OrphanFileError::BadInodeNumber(ino));
        }
        let unreadable = |e: Error| OrphanFileError::Unreadable(e.to_string());
        let inode = fs.inode(InodeNo(ino)).map_err(unreadable)?;
        let bs = u64::from(fs.sb.block_size);
        let count = inode.size.checked_div(bs).unwrap_or(u64::MAX);
        if inode.kind != FileKind::Regular || inode.size.checked_rem(bs) != Some(0) || count > MAX_BLOCKS {
            return Err(OrphanFileError::NotWholeBlocks(ino));
        }
        let mut blocks = Vec::new();
        for lblk in 0..count {
            match fs.map(&inode, lblk).map_err(unreadable)? {
                Mapping::Mapped { pblk, unwritten: false, .. } => blocks.push(pblk),
                _ => return Err(OrphanFileError::Unallocated { lblk, ino }),
            }
        }
        let file = OrphanFile { blocks, seed: inode.csum_seed, checksummed: fs.sb.has_metadata_csum() };
        for &pblk in &file.blocks {
            let block = fs.meta_block(pblk, Object::OrphanFile(pblk)).map_err(unreadable)?;
            file.verify(&block, pblk).map_err(unreadable)?;
        }
        Ok(file)
    }

    /// A block's inode slots and its tail (magic, checksum).
    fn split(block: &[u8]) -> (&[u8], &[u8]) {
        block.split_at(block.len().saturating_sub(TAIL))
    }

    /// The slot number of the first slot of `block` holding `ino`.
    fn slot_of(block: &[u8], ino: u32) -> Option<usize> {
        Self::split(block).0.chunks_exact(4).position(|s| le32(s, 0) == ino)
    }

    fn checksum(&self, block: &[u8], pblk: u64) -> u32 {
        let c = crc32c(self.seed, &pblk.to_le_bytes());
        let slots = Self::split(block).0;
        // The whole slots only (a block size is a multiple of 4).
        crc32c(c, slots.get(..slots.len() & !3).unwrap_or_default())
    }

    fn verify(&self, block: &[u8], pblk: u64) -> Result<()> {
        let tail = Self::split(block).1;
        if le32(tail, 0) != MAGIC {
            return Err(Error::corrupt(Object::OrphanFile(pblk), CorruptKind::BadMagic));
        }
        if self.checksummed && le32(tail, 4) != self.checksum(block, pblk) {
            return Err(Error::Checksum(Object::OrphanFile(pblk)));
        }
        Ok(())
    }

    /// Reads block `pblk` as the operation in progress sees it, checked again (it may have left the
    /// cache and been read anew since the mount checked it).
    fn read(&self, fs: &Filesystem, pblk: u64) -> Result<std::sync::Arc<Vec<u8>>> {
        let block = fs.meta_block(pblk, Object::OrphanFile(pblk))?;
        self.verify(&block, pblk)?;
        Ok(block)
    }

    fn seal_and_put(&self, tx: &mut Txn<'_>, pblk: u64, mut block: Vec<u8>) {
        if self.checksummed {
            let c = self.checksum(&block, pblk);
            let at = block.len().saturating_sub(TAIL).saturating_add(4);
            put32(&mut block, at, c);
        }
        tx.put(pblk, block);
    }

    /// Writes `ino` into the first free slot; `false` when every slot is taken (the caller then uses
    /// the chain).
    pub(crate) fn add(&self, tx: &mut Txn<'_>, ino: u32) -> Result<bool> {
        for &pblk in &self.blocks {
            let block = self.read(tx.fs(), pblk)?;
            if let Some(slot) = Self::slot_of(&block, 0) {
                let mut block = block.as_ref().clone();
                put32(&mut block, slot.saturating_mul(4), ino);
                self.seal_and_put(tx, pblk, block);
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Frees the slot that holds `ino`; `false` when none does (it is on the chain, then).
    pub(crate) fn remove(&self, tx: &mut Txn<'_>, ino: u32) -> Result<bool> {
        for &pblk in &self.blocks {
            let block = self.read(tx.fs(), pblk)?;
            if let Some(slot) = Self::slot_of(&block, ino) {
                let mut block = block.as_ref().clone();
                put32(&mut block, slot.saturating_mul(4), 0);
                self.seal_and_put(tx, pblk, block);
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The first inode number in a taken slot, if any.
    pub(crate) fn first(&self, fs: &Filesystem) -> Result<Option<u32>> {
        for &pblk in &self.blocks {
            let block = self.read(fs, pblk)?;
            if let Some(ino) = Self::split(&block).0.chunks_exact(4).map(|s| le32(s, 0)).find(|&n| n != 0) {
                return Ok(Some(ino));
            }
        }
        Ok(None)
    }
}
