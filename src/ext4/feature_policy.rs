//! What the engine does with each feature: the incompatible features it can read (others refuse the
//! mount, naming them), and the features it can write (others make a read-write mount read-only, with
//! the reason). docs/features.md is the user's view of the same table.

use super::error::{Error, Result};
use super::features::{self, *};
use super::read_only::ReadOnlyReason;
use super::superblock::Superblock;

/// Refuses images whose incompatible features the engine cannot read, naming them.
pub(crate) fn check_features(sb: &Superblock) -> Result<()> {
    if sb.has_incompat(INCOMPAT_JOURNAL_DEV) {
        return Err(Error::Unsupported("this is an external journal device, not a filesystem".into()));
    }
    if sb.has_incompat(INCOMPAT_CASEFOLD) && sb.has_incompat(INCOMPAT_ENCRYPT) {
        // Encrypted casefolded directories keep a SipHash of the plaintext name in each entry.
        return Err(Error::Unsupported(
            "encrypted case-insensitive directories (encrypt with casefold) are not supported".into(),
        ));
    }
    super::casefold::Encoding::from_superblock(sb)?;
    let unknown = sb.feature_incompat & !INCOMPAT_READ;
    if unknown != 0 {
        let names = features::names(features::Kind::Incompat, unknown).join(", ");
        return Err(Error::Unsupported(format!("incompatible filesystem features: {names}")));
    }
    Ok(())
}

/// Why an image with these features cannot be written by this engine (`None`: it can).
pub(crate) fn write_refusal(sb: &Superblock) -> Option<ReadOnlyReason> {
    if sb.needs_recovery() {
        return Some(ReadOnlyReason::JournalNotReplayed);
    }
    feature_write_refusal(sb)
}

/// Why the engine cannot write an image with these features (`None`: it can).
pub(crate) fn feature_write_refusal(sb: &Superblock) -> Option<ReadOnlyReason> {
    const INCOMPAT_WRITE: u32 = INCOMPAT_FILETYPE
        | INCOMPAT_META_BG
        | INCOMPAT_EXTENTS
        | INCOMPAT_64BIT
        | INCOMPAT_FLEX_BG
        | INCOMPAT_EA_INODE
        | INCOMPAT_CSUM_SEED
        | INCOMPAT_LARGEDIR
        | INCOMPAT_INLINE_DATA
        | INCOMPAT_MMP
        | INCOMPAT_CASEFOLD;
    const RO_COMPAT_WRITE: u32 = RO_COMPAT_SPARSE_SUPER
        | RO_COMPAT_LARGE_FILE
        | RO_COMPAT_HUGE_FILE
        | RO_COMPAT_GDT_CSUM
        | RO_COMPAT_DIR_NLINK
        | RO_COMPAT_EXTRA_ISIZE
        | RO_COMPAT_METADATA_CSUM
        | RO_COMPAT_PROJECT
        | RO_COMPAT_QUOTA
        | RO_COMPAT_BIGALLOC;
    // needs_recovery is the journal's state, not a feature of the format: `write_refusal` handles it.
    let incompat = sb.feature_incompat & !INCOMPAT_WRITE & !INCOMPAT_RECOVER;
    // orphan_present says the orphan file may hold orphans: they are processed at mount.
    let orphans = if sb.has_compat(COMPAT_ORPHAN_FILE) { RO_COMPAT_ORPHAN_PRESENT } else { 0 };
    let ro_compat = sb.feature_ro_compat & !RO_COMPAT_WRITE & !orphans;
    let mut names = features::names(features::Kind::Incompat, incompat);
    names.extend(features::names(features::Kind::RoCompat, ro_compat));
    if !names.is_empty() {
        return Some(ReadOnlyReason::UnwritableFeatures(names));
    }
    // The kernel mounts bigalloc only with extents and clusters that start at block 0 (its
    // `ext4_fill_super` checks); the cluster arithmetic here assumes both.
    if sb.has_ro_compat(RO_COMPAT_BIGALLOC) && !sb.has_incompat(INCOMPAT_EXTENTS) {
        return Some(ReadOnlyReason::BigallocWithoutExtents);
    }
    if sb.has_ro_compat(RO_COMPAT_BIGALLOC) && sb.first_data_block != 0 {
        return Some(ReadOnlyReason::BigallocFirstDataBlock(sb.first_data_block));
    }
    None
}
