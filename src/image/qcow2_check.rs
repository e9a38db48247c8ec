//! The check a qcow2 image passes before it is opened for writing, as `qemu-img check` does it: every
//! cluster's reference count, recomputed from the metadata that references it (the header cluster,
//! the refcount table and its blocks, the L1 table, the L2 tables and the data and compressed clusters
//! they map), must be at least what the refcount blocks store, every reference must lie inside the
//! image, and a data cluster must be referenced by nothing else (with no snapshots, qemu's images
//! never share one; a discard punches a freed data cluster out of the file). A leak (a stored count higher than the references) is harmless and allowed, as qemu allows
//! it. Writing is what makes this needed: imago allocates clusters by the stored counts, so a count
//! too low would hand a live cluster out again, and missing refcount blocks can make its allocation
//! recurse without bound (found by fuzzing).
//!
//! What this check does not cover keeps the image read-only instead: internal snapshots (their L1
//! tables share clusters), header extensions other than the feature name table (persistent bitmaps
//! among them), refcount widths other than the 16 bits every qemu-img image has.

use std::io;

use super::Positioned;
use super::read_exact;

/// The most clusters counted (a u16 each): 4 TiB of 64 KiB clusters.
const MAX_CLUSTERS: u64 = 64 << 20;
/// qemu's bounds on the tables it reads whole: 32 MiB of L1, 8 MiB of refcount table.
const MAX_L1_BYTES: u64 = 32 << 20;
const MAX_REFTABLE_BYTES: u64 = 8 << 20;
const L1_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const L2_COMPRESSED: u64 = 1 << 62;
const REFTABLE_OFFSET_MASK: u64 = !0x1ff;
const EXT_END: u32 = 0;
const EXT_FEATURE_NAMES: u32 = 0x6803_f857;

fn be_u32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).and_then(|s| s.try_into().ok()).map_or(0, u32::from_be_bytes)
}
fn be_u64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).and_then(|s| s.try_into().ok()).map_or(0, u64::from_be_bytes)
}

/// Why a qcow2 image cannot be written safely: it is then served read-only, with this reason.
#[derive(Debug, thiserror::Error)]
pub enum Unsafe {
    #[error("cannot read the image: {0}")]
    Unreadable(#[source] io::Error),
    #[error("its header: {0}")]
    Header(#[source] io::Error),
    #[error("cluster size 2^{0}")]
    ClusterSize(u32),
    #[error("its refcounts are {0} bits wide (only 16 are written)")]
    RefcountWidth(u64),
    #[error("it has internal snapshots")]
    Snapshots,
    #[error("it has a backing file")]
    BackingFile,
    #[error("it has {0} clusters, more than are checked ({MAX_CLUSTERS})", MAX_CLUSTERS = MAX_CLUSTERS)]
    TooManyClusters(u64),
    #[error("its refcount or L1 table is larger than qemu allows")]
    TablesTooLarge,
    #[error("its header extensions: {0}")]
    Extensions(#[source] io::Error),
    #[error("it has header extension {0:#x}")]
    UnknownExtension(u32),
    #[error("its header extensions run past the first cluster")]
    ExtensionsPastFirstCluster,
    #[error("a table at {at}: {source}")]
    Table { at: u64, source: io::Error },
    #[error("{what} at {offset} lies past the image's end")]
    PastEnd { what: &'static str, offset: u64 },
    #[error("{what} at {offset} is not aligned to a cluster")]
    Unaligned { what: &'static str, offset: u64 },
    #[error("cluster {cluster} holds data and also {what}")]
    DataAndMetadata { cluster: u64, what: &'static str },
    #[error("cluster {0} is referenced too often")]
    TooManyReferences(u64),
    #[error("data cluster {0} is referenced by more than one L2 entry")]
    DataSharedByL2Entries(usize),
    #[error("data cluster {0} is also a table or a compressed cluster")]
    DataAlsoTable(usize),
    #[error("cluster {cluster} past the image's end has refcount {refcount}")]
    RefcountPastEnd { cluster: u64, refcount: u16 },
    #[error("cluster {cluster} is referenced {want} times, its refcount is {have}")]
    RefcountTooLow { cluster: usize, want: u16, have: u16 },
}

/// Why the image cannot be written safely, or `Ok` when its refcounts agree with its metadata.
pub(super) fn check_for_writing(image: &dyn Positioned) -> Result<(), Unsafe> {
    let len = image.byte_len().map_err(Unsafe::Unreadable)?;
    let mut h = [0u8; 104];
    read_exact(image, &mut h, 0).map_err(Unsafe::Header)?;
    let version = be_u32(&h, 4);
    let cluster_bits = be_u32(&h, 20);
    if !(9..=21).contains(&cluster_bits) {
        return Err(Unsafe::ClusterSize(cluster_bits));
    }
    let cluster = 1u64 << cluster_bits;
    let (refcount_order, header_len) = if version >= 3 { (be_u32(&h, 96), be_u32(&h, 100)) } else { (4, 72) };
    if refcount_order != 4 {
        return Err(Unsafe::RefcountWidth(1u64 << refcount_order.min(63)));
    }
    if be_u32(&h, 60) != 0 {
        return Err(Unsafe::Snapshots);
    }
    if be_u64(&h, 8) != 0 {
        return Err(Unsafe::BackingFile);
    }
    if version >= 3 {
        check_extensions(image, u64::from(header_len), cluster)?;
    }
    let clusters = len.div_ceil(cluster);
    if clusters > MAX_CLUSTERS {
        return Err(Unsafe::TooManyClusters(clusters));
    }
    let mut counts = Counts { refs: vec![0u16; clusters as usize], cluster_bits, len };
    counts.add(0, 1, "the header")?;
    let reftable = be_u64(&h, 48);
    let reftable_bytes = u64::from(be_u32(&h, 56)) * cluster;
    let l1 = be_u64(&h, 40);
    let l1_bytes = u64::from(be_u32(&h, 36)) * 8;
    if reftable_bytes > MAX_REFTABLE_BYTES || l1_bytes > MAX_L1_BYTES {
        return Err(Unsafe::TablesTooLarge);
    }
    counts.add(reftable, reftable_bytes, "the refcount table")?;
    counts.add(l1, l1_bytes, "the L1 table")?;
    let entries_per_cluster = cluster / 8;
    let l1_table = read_table(image, l1, l1_bytes)?;
    for i in 0..l1_bytes as usize / 8 {
        let l2 = be_u64(&l1_table, i * 8) & L1_OFFSET_MASK;
        if l2 == 0 {
            continue;
        }
        counts.add(l2, cluster, "an L2 table")?;
        let table = read_table(image, l2, cluster)?;
        for e in 0..entries_per_cluster as usize {
            let entry = be_u64(&table, e * 8);
            if entry & L2_COMPRESSED != 0 {
                // Offset in the low x bits, sector count - 1 above them (the qcow2 spec).
                let x = 62 - (cluster_bits - 8);
                let offset = entry & ((1u64 << x) - 1);
                let sectors = ((entry >> x) & ((1u64 << (cluster_bits - 8)) - 1)) + 1;
                let end = (offset & !511) + sectors * 512;
                counts.add(offset, end - offset, "a compressed cluster")?;
            } else if entry & L1_OFFSET_MASK != 0 {
                counts.add_data(entry & L1_OFFSET_MASK)?;
            }
        }
    }
    // The refcount blocks: referenced once each, and holding the stored counts.
    let refs_per_block = cluster / 2;
    let mut stored = vec![0u16; clusters as usize];
    let reftable_table = read_table(image, reftable, reftable_bytes)?;
    for i in 0..reftable_bytes / 8 {
        let block = be_u64(&reftable_table, i as usize * 8) & REFTABLE_OFFSET_MASK;
        if block == 0 {
            continue;
        }
        counts.add(block, cluster, "a refcount block")?;
        let b = read_table(image, block, cluster)?;
        for j in 0..refs_per_block {
            let c = i * refs_per_block + j;
            let v = u16::from_be_bytes([b[(j * 2) as usize], b[(j * 2 + 1) as usize]]);
            match stored.get_mut(c as usize) {
                Some(s) => *s = v,
                None if v != 0 => return Err(Unsafe::RefcountPastEnd { cluster: c, refcount: v }),
                None => {}
            }
        }
    }
    for (c, (&refs, &have)) in counts.refs.iter().zip(&stored).enumerate() {
        let want = if refs == DATA { 1 } else { refs };
        if have < want {
            return Err(Unsafe::RefcountTooLow { cluster: c, want, have });
        }
    }
    Ok(())
}

/// Header extensions: the feature name table is all that may be there.
fn check_extensions(image: &dyn Positioned, mut at: u64, cluster: u64) -> Result<(), Unsafe> {
    loop {
        let mut e = [0u8; 8];
        read_exact(image, &mut e, at).map_err(Unsafe::Extensions)?;
        let (kind, len) = (be_u32(&e, 0), u64::from(be_u32(&e, 4)));
        match kind {
            EXT_END => return Ok(()),
            EXT_FEATURE_NAMES => {}
            other => return Err(Unsafe::UnknownExtension(other)),
        }
        at = at + 8 + len.next_multiple_of(8);
        if at >= cluster {
            return Err(Unsafe::ExtensionsPastFirstCluster);
        }
    }
}

fn read_table(image: &dyn Positioned, at: u64, len: u64) -> Result<Vec<u8>, Unsafe> {
    let mut b = vec![0u8; len as usize];
    read_exact(image, &mut b, at).map_err(|source| Unsafe::Table { at, source })?;
    Ok(b)
}

/// The count of a cluster a data cluster's L2 entry references, which nothing else may reference.
const DATA: u16 = u16::MAX;

/// References counted per cluster ([`DATA`] for a data cluster's).
struct Counts {
    refs: Vec<u16>,
    cluster_bits: u32,
    len: u64,
}

impl Counts {
    /// Counts one reference to every cluster `len` bytes from `offset` touch.
    fn add(&mut self, offset: u64, len: u64, what: &'static str) -> Result<(), Unsafe> {
        let end = offset.checked_add(len.max(1)).filter(|&e| e <= self.len.next_multiple_of(1 << self.cluster_bits));
        let Some(end) = end else { return Err(Unsafe::PastEnd { what, offset }) };
        if !offset.is_multiple_of(1 << self.cluster_bits) && what != "a compressed cluster" {
            return Err(Unsafe::Unaligned { what, offset });
        }
        for c in offset >> self.cluster_bits..=(end - 1) >> self.cluster_bits {
            let r = &mut self.refs[c as usize];
            if *r == DATA {
                return Err(Unsafe::DataAndMetadata { cluster: c, what });
            }
            *r = r.checked_add(1).filter(|&n| n != DATA).ok_or(Unsafe::TooManyReferences(c))?;
        }
        Ok(())
    }

    /// Counts the reference of an L2 entry to the data cluster at `offset`, which must be its only one.
    fn add_data(&mut self, offset: u64) -> Result<(), Unsafe> {
        let c = (offset >> self.cluster_bits) as usize;
        if self.refs.get(c) == Some(&DATA) {
            return Err(Unsafe::DataSharedByL2Entries(c));
        }
        self.add(offset, 1, "a data cluster")?;
        match self.refs[c] {
            1 => {
                self.refs[c] = DATA;
                Ok(())
            }
            _ => Err(Unsafe::DataAlsoTable(c)),
        }
    }
}
