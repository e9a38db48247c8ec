//! The blocks a transaction is logged as: how many log blocks it takes (`Layout`), its descriptor
//! blocks with their tags and the logged copies (escaped where they begin with the journal's magic
//! number), its revoke blocks, and its commit block, each sealed with the checksums the journal uses.

use std::sync::Arc;

use super::bytes::{high32, index, low16, low32};
use super::checksum::crc32c;
use super::jbd2::{
    BLOCKTYPE_COMMIT, BLOCKTYPE_DESCRIPTOR, BLOCKTYPE_REVOKE, JBD2_MAGIC, TAG_ESCAPE, TAG_LAST, TAG_SAME_UUID, put_be32,
};
use super::journal_write::LogState;

/// A log block's header (`journal_header_t`: magic, block type, sequence).
const HEADER_BYTES: usize = 12;
/// What a descriptor block holds besides its tags: the header, and the journal's UUID after the first tag.
const DESCRIPTOR_OVERHEAD: usize = HEADER_BYTES + 16;
/// A revoke block's header: `journal_header_t` and `r_count`.
const REVOKE_HEADER: usize = HEADER_BYTES + 4;
/// The checksum tail of a descriptor or revoke block (v2/v3).
const TAIL_BYTES: usize = 4;

/// How many log blocks a transaction takes.
pub(super) struct Layout {
    per_descriptor: usize,
    per_revoke: usize,
    pub(super) total: u32,
}

impl LogState {
    pub(super) fn layout(&self, blocks: usize, revokes: usize) -> Layout {
        // A block holds at least 1 KiB, a tag at most 16 bytes and a revoke record 8: the subtractions
        // leave room for dozens of either, and the divisors are not zero (`max(1)` only keeps
        // `chunks` from panicking).
        let bs = index(self.block_size);
        let tail = if self.jsb.has_csum() { TAIL_BYTES } else { 0 };
        let tag = self.jsb.tag_bytes();
        let per_descriptor =
            bs.saturating_sub(DESCRIPTOR_OVERHEAD).saturating_sub(tail).checked_div(tag).unwrap_or(0).max(1);
        let width = if self.jsb.is_64bit() { 8 } else { 4 };
        let per_revoke = bs.saturating_sub(REVOKE_HEADER).saturating_sub(tail).checked_div(width).unwrap_or(0).max(1);
        let descriptors = blocks.div_ceil(per_descriptor);
        let revoke_blocks = revokes.div_ceil(per_revoke);
        // Saturating is harmless: a transaction that large is larger than any log, and written without it.
        let total = descriptors.saturating_add(blocks).saturating_add(revoke_blocks).saturating_add(1);
        Layout { per_descriptor, per_revoke, total: u32::try_from(total).unwrap_or(u32::MAX) }
    }

    fn header(&self, kind: u32, sequence: u32) -> Vec<u8> {
        let mut b = vec![0u8; index(self.block_size)];
        put_be32(&mut b, 0, JBD2_MAGIC);
        put_be32(&mut b, 4, kind);
        put_be32(&mut b, 8, sequence);
        b
    }

    /// Seals a descriptor or revoke block with its tail checksum (v2/v3).
    fn seal_tail(&self, b: &mut [u8]) {
        if let Some(at) = b.len().checked_sub(TAIL_BYTES).filter(|_| self.jsb.has_csum()) {
            put_be32(b, at, 0);
            let c = crc32c(self.jsb.csum_seed, b);
            put_be32(b, at, c);
        }
    }

    /// Descriptor blocks, logged copies (escaped where they begin with the journal's magic number) and
    /// revoke blocks of the running transaction, as consecutive log blocks (without the commit block).
    pub(super) fn log_image(&self, blocks: &[(u64, Arc<Vec<u8>>)], revokes: &[u64], layout: &Layout) -> Vec<u8> {
        let bs = index(self.block_size);
        let seq = self.sequence;
        // A capacity only; the transaction fits in the log (below 2^24 blocks), so this is exact.
        let mut out = Vec::with_capacity(index(layout.total.saturating_sub(1)).saturating_mul(bs));
        let seq_seed = crc32c(self.jsb.csum_seed, &seq.to_be_bytes());
        for chunk in blocks.chunks(layout.per_descriptor) {
            let mut desc = self.header(BLOCKTYPE_DESCRIPTOR, seq);
            // The tags follow the header, then zeros to the tail: the layout leaves them room.
            desc.truncate(HEADER_BYTES);
            let mut copies = Vec::with_capacity(chunk.len().saturating_mul(bs));
            // Chunks are never empty.
            let last = chunk.len().saturating_sub(1);
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
                if i == last {
                    flags |= TAG_LAST;
                }
                let csum = if self.jsb.has_csum() { crc32c(seq_seed, &copy) } else { 0 };
                desc.extend_from_slice(&self.tag(*home, flags, csum));
                if i == 0 {
                    desc.extend_from_slice(&self.uuid);
                }
                copies.extend_from_slice(&copy);
            }
            desc.resize(bs, 0);
            self.seal_tail(&mut desc);
            out.extend_from_slice(&desc);
            out.extend_from_slice(&copies);
        }
        for chunk in revokes.chunks(layout.per_revoke) {
            let mut b = self.header(BLOCKTYPE_REVOKE, seq);
            // The records follow the header and r_count: big-endian, 64 bits with the 64bit feature (a
            // journal without it only serves filesystems below 2^32 blocks).
            b.truncate(REVOKE_HEADER);
            for &nr in chunk {
                if self.jsb.is_64bit() {
                    b.extend_from_slice(&nr.to_be_bytes());
                } else {
                    b.extend_from_slice(&low32(nr).to_be_bytes());
                }
            }
            // r_count: the bytes in use, header included (within the block, so below 2^17).
            let used = u32::try_from(b.len()).unwrap_or(u32::MAX);
            b.resize(bs, 0);
            put_be32(&mut b, 12, used);
            self.seal_tail(&mut b);
            out.extend_from_slice(&b);
        }
        out
    }

    /// Descriptor tag `journal_block_tag3_t` (v3 checksums) or `journal_block_tag_t` for home block
    /// `home`, `tag_bytes` long. A journal without the 64bit feature only serves filesystems below 2^32
    /// blocks (see [`Log::open`](super::journal_write::Log::open)).
    fn tag(&self, home: u64, flags: u32, csum: u32) -> Vec<u8> {
        let mut t = vec![0u8; self.jsb.tag_bytes()];
        put_be32(&mut t, 0, low32(home));
        if self.jsb.csum_v3() {
            put_be32(&mut t, 4, flags);
            put_be32(&mut t, 8, high32(home));
            put_be32(&mut t, 12, csum);
        } else {
            // 16-bit fields: v2 keeps the checksum's low half; the flags all fit.
            t[4..6].copy_from_slice(&low16(csum).to_be_bytes());
            t[6..8].copy_from_slice(&low16(flags).to_be_bytes());
            if self.jsb.is_64bit() {
                put_be32(&mut t, 8, high32(home));
            }
        }
        t
    }

    pub(super) fn commit_block(&self, sequence: u32) -> Vec<u8> {
        let mut b = self.header(BLOCKTYPE_COMMIT, sequence);
        let now = super::inode::Timestamp::now();
        // h_commit_sec: the seconds as the kernel stores them, a 64-bit two's-complement value.
        b[0x30..0x38].copy_from_slice(&now.sec.to_be_bytes());
        put_be32(&mut b, 0x38, now.nsec);
        if self.jsb.has_csum() {
            let c = crc32c(self.jsb.csum_seed, &b);
            put_be32(&mut b, 0x10, c);
        }
        b
    }
}
