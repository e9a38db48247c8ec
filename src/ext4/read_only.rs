//! Why a filesystem does not write: the one list of reasons, from the mount's own `ro` to a corruption
//! found under `errors=remount-ro`. Each says itself as users read it (the worker's `W ro <why>` line,
//! the refusal of a replay); callers that need to act on one match the variant.

use std::fmt;

/// Why this filesystem is read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOnlyReason {
    /// The mount asked for it (`-o ro`).
    Asked,
    /// The journal needs recovery and `-o norecovery` kept it from being replayed.
    JournalNotReplayed,
    /// Features the engine does not write, by name.
    UnwritableFeatures(Vec<String>),
    /// bigalloc without extents, which the kernel refuses to mount too.
    BigallocWithoutExtents,
    /// bigalloc whose first data block is not 0 (clusters start at block 0).
    BigallocFirstDataBlock(u32),
    /// A group descriptor failed its checksum or lies out of place; the kernel reads such a table but does
    /// not write it.
    DamagedGroupDescriptor(usize),
    /// The orphan file cannot be used (what is wrong with it).
    OrphanFile(super::orphan_file::OrphanFileError),
    /// The quota files cannot be trusted to update (what is wrong with them).
    QuotaFiles(String),
    /// The journal cannot be written to (what is wrong with it).
    Journal(String),
    /// Writing stopped while mounted: a journal commit failed (jbd2's abort) or the MMP block was taken
    /// or could not be updated.
    Aborted(String),
    /// A corruption found while mounted, under `errors=remount-ro`: the error as it was reported.
    ErrorsRemountRo(String),
}

impl fmt::Display for ReadOnlyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadOnlyReason::Asked => write!(f, "mounted read-only"),
            ReadOnlyReason::JournalNotReplayed => write!(f, "the journal needs recovery and -o norecovery was given"),
            ReadOnlyReason::UnwritableFeatures(names) => {
                write!(f, "the engine cannot write images with feature(s): {}", names.join(", "))
            }
            ReadOnlyReason::BigallocWithoutExtents => write!(f, "bigalloc without the extent feature"),
            ReadOnlyReason::BigallocFirstDataBlock(b) => {
                write!(f, "bigalloc with first data block {b} (clusters start at block 0)")
            }
            ReadOnlyReason::DamagedGroupDescriptor(g) => {
                write!(f, "group descriptor {g} is damaged (checksum or location); run e2fsck")
            }
            ReadOnlyReason::OrphanFile(why) => write!(f, "{why}; run e2fsck"),
            ReadOnlyReason::QuotaFiles(why) => write!(f, "the quota files cannot be updated ({why}); run e2fsck"),
            ReadOnlyReason::Journal(why) | ReadOnlyReason::Aborted(why) => write!(f, "{why}"),
            ReadOnlyReason::ErrorsRemountRo(error) => write!(f, "{error} (errors=remount-ro)"),
        }
    }
}
