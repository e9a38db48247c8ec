//! Android's sparse image (`img2simg`, fastboot's flashing format; AOSP's
//! `system/core/libsparse/sparse_format.h`): a 28-byte header, then chunks in order, each a 12-byte
//! header and its data. A raw chunk holds its blocks, a fill chunk one 4-byte pattern for all of them, a
//! "don't care" chunk none (they read as zeros), a CRC32 chunk covers no blocks. The chunk list is read
//! once at open into an index of runs, bounded by [`MAX_CHUNKS`]; the chunks must cover exactly the
//! header's block count.

use std::io;

use super::mapped::{Layout, Piece, le_u16, le_u32};
use super::{ImageError, Positioned, read_exact};

/// `sparse_header.magic`.
pub const MAGIC: u32 = 0xed26_ff3a;
const HEADER_LEN: u16 = 28;
const CHUNK_HEADER_LEN: u16 = 12;
const CHUNK_RAW: u16 = 0xcac1;
const CHUNK_FILL: u16 = 0xcac2;
const CHUNK_DONT_CARE: u16 = 0xcac3;
const CHUNK_CRC32: u16 = 0xcac4;
/// More chunks than any real image has (a few thousand); the index costs 24 bytes each.
const MAX_CHUNKS: u32 = 1 << 22;
/// libsparse's block size is 4096; anything from 4 bytes to 64 MiB, a multiple of 4, is read.
const MAX_BLOCK: u32 = 64 << 20;

enum Run {
    Raw(u64),
    Fill([u8; 4]),
    Zero,
}

/// The index: runs of blocks in order, each from its first block.
pub(super) struct Sparse {
    block: u64,
    blocks: u64,
    runs: Vec<(u64, Run)>,
}

impl Sparse {
    pub(super) fn open(image: &dyn Positioned) -> Result<Sparse, ImageError> {
        let bad = |what: String| ImageError::Damaged { format: "Android sparse", what };
        let len = image.byte_len().map_err(ImageError::Unreadable)?;
        let mut h = [0u8; HEADER_LEN as usize];
        read_exact(image, &mut h, 0).map_err(|e| bad(format!("its header: {e}")))?;
        if le_u32(&h, 0) != MAGIC {
            return Err(bad("no sparse magic number".into()));
        }
        let (major, file_hdr, chunk_hdr) = (le_u16(&h, 4), le_u16(&h, 8), le_u16(&h, 10));
        if major != 1 {
            let version = u32::from(major);
            return Err(ImageError::Version { format: "Android sparse image", version, supported: "only 1 is" });
        }
        if file_hdr < HEADER_LEN || chunk_hdr < CHUNK_HEADER_LEN {
            return Err(bad(format!("header sizes {file_hdr} and {chunk_hdr} are too small")));
        }
        let (block, total_blocks, total_chunks) = (le_u32(&h, 12), le_u32(&h, 16), le_u32(&h, 20));
        if block == 0 || block % 4 != 0 || block > MAX_BLOCK {
            return Err(bad(format!("block size {block}")));
        }
        if total_chunks > MAX_CHUNKS {
            return Err(bad(format!("{total_chunks} chunks, more than {MAX_CHUNKS}")));
        }
        let block = u64::from(block);
        let mut runs = Vec::new();
        let mut at = u64::from(file_hdr);
        let mut next_block = 0u64;
        for n in 0..total_chunks {
            let mut c = [0u8; CHUNK_HEADER_LEN as usize];
            read_exact(image, &mut c, at).map_err(|e| bad(format!("chunk {n}'s header: {e}")))?;
            let (kind, blocks, total) = (le_u16(&c, 0), u64::from(le_u32(&c, 4)), u64::from(le_u32(&c, 8)));
            let data = at + u64::from(chunk_hdr);
            let data_len = total.checked_sub(u64::from(chunk_hdr)).ok_or_else(|| bad(format!("chunk {n}'s size")))?;
            let expect = match kind {
                CHUNK_RAW => blocks.checked_mul(block),
                CHUNK_FILL | CHUNK_CRC32 => Some(4),
                CHUNK_DONT_CARE => Some(0),
                _ => return Err(bad(format!("chunk {n} has unknown type {kind:#x}"))),
            };
            if expect != Some(data_len) || data.checked_add(data_len).is_none_or(|end| end > len) {
                return Err(bad(format!("chunk {n} ({kind:#x}) holds {data_len} bytes, or lies past the image's end")));
            }
            let run = match kind {
                CHUNK_RAW => Some(Run::Raw(data)),
                CHUNK_FILL => {
                    let mut p = [0u8; 4];
                    read_exact(image, &mut p, data).map_err(|e| bad(format!("chunk {n}: {e}")))?;
                    Some(Run::Fill(p))
                }
                CHUNK_DONT_CARE => Some(Run::Zero),
                _ => None,
            };
            if let Some(run) = run.filter(|_| blocks > 0) {
                runs.push((next_block, run));
                next_block = next_block.checked_add(blocks).ok_or_else(|| bad("block count overflows".into()))?;
            }
            at = data + data_len;
        }
        if next_block != u64::from(total_blocks) {
            return Err(bad(format!("its chunks cover {next_block} blocks, its header says {total_blocks}")));
        }
        Ok(Sparse { block, blocks: next_block, runs })
    }
}

impl Layout for Sparse {
    fn size(&self) -> u64 {
        self.blocks * self.block
    }

    fn piece(&self, _image: &dyn Positioned, offset: u64, max: u64) -> io::Result<(Piece, u64)> {
        let b = offset / self.block;
        // The run holding block b: the last one starting at or before it (runs cover 0..blocks).
        let i = self.runs.partition_point(|(first, _)| *first <= b).saturating_sub(1);
        let (first, run) = self.runs.get(i).ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let end_block = self.runs.get(i + 1).map_or(self.blocks, |(next, _)| *next);
        let run_start = first * self.block;
        let n = (end_block * self.block - offset).min(max);
        let piece = match run {
            Run::Raw(data) => Piece::Stored(data + (offset - run_start)),
            Run::Fill(p) => {
                // The pattern repeats from the run's start, which is block-aligned and so 4-aligned.
                Piece::Fill(*p)
            }
            Run::Zero => Piece::Zero,
        };
        Ok((piece, n))
    }
}
