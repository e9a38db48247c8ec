//! Feature flags of the superblock (`s_feature_compat`, `s_feature_incompat`, `s_feature_ro_compat`), with
//! their names as mke2fs spells them, and which of them this engine understands.

/// One feature flag: its field, bit and mke2fs name.
pub struct Feature {
    pub kind: Kind,
    pub bit: u32,
    pub name: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Compat,
    Incompat,
    RoCompat,
}

macro_rules! features {
    ($($kind:ident $const:ident = $bit:literal $name:literal;)*) => {
        $(pub const $const: u32 = $bit;)*
        /// Every feature flag the kernel documents.
        pub const ALL: &[Feature] = &[$(Feature { kind: Kind::$kind, bit: $bit, name: $name }),*];
    };
}

features! {
    Compat COMPAT_DIR_PREALLOC = 0x1 "dir_prealloc";
    Compat COMPAT_IMAGIC_INODES = 0x2 "imagic_inodes";
    Compat COMPAT_HAS_JOURNAL = 0x4 "has_journal";
    Compat COMPAT_EXT_ATTR = 0x8 "ext_attr";
    Compat COMPAT_RESIZE_INODE = 0x10 "resize_inode";
    Compat COMPAT_DIR_INDEX = 0x20 "dir_index";
    Compat COMPAT_LAZY_BG = 0x40 "lazy_bg";
    Compat COMPAT_EXCLUDE_BITMAP = 0x100 "exclude_bitmap";
    Compat COMPAT_SPARSE_SUPER2 = 0x200 "sparse_super2";
    Compat COMPAT_FAST_COMMIT = 0x400 "fast_commit";
    Compat COMPAT_STABLE_INODES = 0x800 "stable_inodes";
    Compat COMPAT_ORPHAN_FILE = 0x1000 "orphan_file";
    Incompat INCOMPAT_COMPRESSION = 0x1 "compression";
    Incompat INCOMPAT_FILETYPE = 0x2 "filetype";
    Incompat INCOMPAT_RECOVER = 0x4 "needs_recovery";
    Incompat INCOMPAT_JOURNAL_DEV = 0x8 "journal_dev";
    Incompat INCOMPAT_META_BG = 0x10 "meta_bg";
    Incompat INCOMPAT_EXTENTS = 0x40 "extent";
    Incompat INCOMPAT_64BIT = 0x80 "64bit";
    Incompat INCOMPAT_MMP = 0x100 "mmp";
    Incompat INCOMPAT_FLEX_BG = 0x200 "flex_bg";
    Incompat INCOMPAT_EA_INODE = 0x400 "ea_inode";
    Incompat INCOMPAT_DIRDATA = 0x1000 "dirdata";
    Incompat INCOMPAT_CSUM_SEED = 0x2000 "metadata_csum_seed";
    Incompat INCOMPAT_LARGEDIR = 0x4000 "large_dir";
    Incompat INCOMPAT_INLINE_DATA = 0x8000 "inline_data";
    Incompat INCOMPAT_ENCRYPT = 0x10000 "encrypt";
    Incompat INCOMPAT_CASEFOLD = 0x20000 "casefold";
    RoCompat RO_COMPAT_SPARSE_SUPER = 0x1 "sparse_super";
    RoCompat RO_COMPAT_LARGE_FILE = 0x2 "large_file";
    RoCompat RO_COMPAT_BTREE_DIR = 0x4 "btree_dir";
    RoCompat RO_COMPAT_HUGE_FILE = 0x8 "huge_file";
    RoCompat RO_COMPAT_GDT_CSUM = 0x10 "uninit_bg";
    RoCompat RO_COMPAT_DIR_NLINK = 0x20 "dir_nlink";
    RoCompat RO_COMPAT_EXTRA_ISIZE = 0x40 "extra_isize";
    RoCompat RO_COMPAT_HAS_SNAPSHOT = 0x80 "snapshot";
    RoCompat RO_COMPAT_QUOTA = 0x100 "quota";
    RoCompat RO_COMPAT_BIGALLOC = 0x200 "bigalloc";
    RoCompat RO_COMPAT_METADATA_CSUM = 0x400 "metadata_csum";
    RoCompat RO_COMPAT_REPLICA = 0x800 "replica";
    RoCompat RO_COMPAT_READONLY = 0x1000 "read-only";
    RoCompat RO_COMPAT_PROJECT = 0x2000 "project";
    RoCompat RO_COMPAT_SHARED_BLOCKS = 0x4000 "shared_blocks";
    RoCompat RO_COMPAT_VERITY = 0x8000 "verity";
    RoCompat RO_COMPAT_ORPHAN_PRESENT = 0x10000 "orphan_present";
}

/// Incompatible features the engine reads. Anything else in `s_feature_incompat` refuses the mount.
/// (`needs_recovery` is understood: the mount is refused or allowed by the journal check, not here.)
pub const INCOMPAT_READ: u32 = INCOMPAT_FILETYPE
    | INCOMPAT_RECOVER
    | INCOMPAT_META_BG
    | INCOMPAT_EXTENTS
    | INCOMPAT_64BIT
    | INCOMPAT_MMP
    | INCOMPAT_FLEX_BG
    | INCOMPAT_EA_INODE
    | INCOMPAT_CSUM_SEED
    | INCOMPAT_LARGEDIR
    | INCOMPAT_INLINE_DATA
    | INCOMPAT_ENCRYPT
    | INCOMPAT_CASEFOLD;

/// Names of the bits set in `mask` of the given kind, unknown bits as hex.
pub fn names(kind: Kind, mask: u32) -> Vec<String> {
    (0..32)
        .map(|i| 1u32 << i)
        .filter(|b| mask & b != 0)
        .map(|b| {
            ALL.iter()
                .find(|f| f.kind == kind && f.bit == b)
                .map(|f| f.name.to_string())
                .unwrap_or_else(|| format!("{kind:?}:{b:#x}").to_lowercase())
        })
        .collect()
}
