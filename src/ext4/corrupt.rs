//! What is wrong with a corrupt structure: one kind per check the engine makes on what it reads, so a
//! caller can tell them apart by value (the htree fallback does) and a log line says which check failed.
//! The object it concerns travels beside it in [`Error::Corrupt`](super::Error::Corrupt).

/// The check a structure failed, grouped by the module that makes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorruptKind {
    // acl.rs
    /// Malformed ACL.
    MalformedAcl,
    // alloc.rs
    /// No such group.
    NoSuchGroup,
    /// Free block count below the bitmap's.
    FreeBlockCountBelowBitmap,
    /// Block bitmap marks metadata as free.
    BlockBitmapMarksMetadataAsFree,
    /// Freeing a block that is already free.
    FreeingBlockThatIsAlreadyFree,
    /// Free inode count above the bitmap's.
    FreeInodeCountAboveBitmap,
    /// Inode bitmap marks a reserved inode free.
    InodeBitmapMarksReservedInodeFree,
    /// Inode number out of range.
    InodeNumberOutOfRange,
    /// Freeing an inode that is already free.
    FreeingInodeThatIsAlreadyFree,
    // dir_block.rs
    /// Directory entry overruns its block.
    DirectoryEntryOverrunsItsBlock,
    /// Directory entry shorter than the minimum.
    DirectoryEntryShorterThanMinimum,
    /// Directory entry length not a multiple of 4.
    DirectoryEntryLengthNotMultipleOf4,
    /// Directory entry too short for its name.
    DirectoryEntryTooShortForItsName,
    /// Directory entry name longer than 255 bytes.
    DirectoryEntryNameLongerThan255Bytes,
    /// Directory entry points past the last inode.
    DirectoryEntryPointsPastLastInode,
    /// Directory entry name overruns its block.
    DirectoryEntryNameOverrunsItsBlock,
    // dir_htree.rs
    /// Hash collision chain revisits a leaf.
    HashCollisionChainRevisitsLeaf,
    /// Htree points at a hole.
    HtreePointsAtHole,
    /// Htree node without its empty directory entry.
    HtreeNodeWithoutItsEmptyDirectoryEntry,
    /// Htree node count or limit out of range.
    HtreeNodeCountOrLimitOutOfRange,
    /// No root block.
    NoRootBlock,
    /// Unknown hash version.
    UnknownHashVersion,
    /// Bad dx_root info.
    BadDxRootInfo,
    /// Htree has too many levels.
    HtreeHasTooManyLevels,
    /// Htree leaf chain does not end.
    HtreeLeafChainDoesNotEnd,
    // dir_read.rs
    /// Directory maps more blocks than the filesystem holds.
    DirectoryMapsMoreBlocksThanFilesystemHolds,
    /// Directory maps one block twice.
    DirectoryMapsOneBlockTwice,
    /// Encrypted name shorter than a cipher block.
    EncryptedNameShorterThanCipherBlock,
    // the directory writers (dir_write.rs, dir_block_write.rs, dir_htree_write.rs, dir_create.rs)
    /// Directory block is a hole.
    DirectoryBlockIsHole,
    /// No .. entry.
    NoDotDotEntry,
    /// Htree root count or limit out of range.
    HtreeRootCountOrLimitOutOfRange,
    /// Htree points past the directory.
    HtreePointsPastDirectory,
    /// Htree leaf is a hole.
    HtreeLeafIsHole,
    /// Full leaf without live entries.
    FullLeafWithoutLiveEntries,
    /// Leaf entries do not fit two blocks.
    LeafEntriesDoNotFitTwoBlocks,
    // ea_inode.rs
    /// An xattr entry names an inode that is not an EA inode.
    XattrEntryNamesInodeThatIsNotEaInode,
    /// EA inode reference count.
    EaInodeReferenceCount,
    // extent.rs
    /// No room for the extent tail.
    NoRoomForExtentTail,
    /// Extent index node without entries.
    ExtentIndexNodeWithoutEntries,
    /// Extent node depth does not match its parent.
    ExtentNodeDepthDoesNotMatchItsParent,
    /// Zero-length extent.
    ZeroLengthExtent,
    /// Extents overlap or are out of order.
    ExtentsOverlapOrAreOutOfOrder,
    /// Extent tree block referenced twice.
    ExtentTreeBlockReferencedTwice,
    /// Bad extent header magic.
    BadExtentHeaderMagic,
    /// Extent node entry count exceeds its size.
    ExtentNodeEntryCountExceedsItsSize,
    /// Extent tree too deep.
    ExtentTreeTooDeep,
    // fast_commit.rs
    /// Inode record outside its block.
    InodeRecordOutsideItsBlock,
    /// A fast commit creates an inode it did not record.
    FastCommitCreatesInodeItDidNotRecord,
    /// A fast-commit inode record of the wrong size.
    FastCommitInodeRecordOfWrongSize,
    // a file's block map edited (map_edit.rs; the misaligned cluster, cluster.rs)
    /// Block-mapped file on a bigalloc filesystem.
    BlockMappedFileOnBigallocFilesystem,
    /// Allocating a mapped block.
    AllocatingMappedBlock,
    /// A cluster is mapped out of step with its blocks.
    ClusterIsMappedOutOfStepWithItsBlocks,
    // file_read.rs
    /// Inline inode has no block map.
    InlineInodeHasNoBlockMap,
    /// Encrypted symlink length out of range.
    EncryptedSymlinkLengthOutOfRange,
    /// Symlink size out of range.
    SymlinkSizeOutOfRange,
    /// Fast symlink longer than i_block.
    FastSymlinkLongerThanIBlock,
    /// Symlink shorter than its size.
    SymlinkShorterThanItsSize,
    /// File maps more runs than the filesystem holds.
    FileMapsMoreRunsThanFilesystemHolds,
    // fs.rs
    /// Block count exceeds the size of the device.
    BlockCountExceedsSizeOfDevice,
    /// The root directory is not a directory.
    RootDirectoryIsNotDirectory,
    /// Group descriptor table out of range.
    GroupDescriptorTableOutOfRange,
    /// Block number out of range.
    BlockNumberOutOfRange,
    /// No group for inode.
    NoGroupForInode,
    /// Inode table out of range.
    InodeTableOutOfRange,
    /// Reference to a reserved inode.
    ReferenceToReservedInode,
    /// Reference to an xattr value inode.
    ReferenceToXattrValueInode,
    // inline_data.rs
    /// System.data stored in an EA inode.
    SystemDataStoredInEaInode,
    // inode.rs
    /// Record shorter than the inode size.
    RecordShorterThanInodeSize,
    /// I_extra_isize out of range.
    IExtraIsizeOutOfRange,
    /// Inode is not in use.
    InodeIsNotInUse,
    /// Invalid file type in i_mode.
    InvalidFileTypeInIMode,
    /// Size is negative.
    SizeIsNegative,
    // journal.rs
    /// No journal superblock magic.
    NoJournalSuperblockMagic,
    /// Journal superblock has an unknown block type.
    JournalSuperblockHasUnknownBlockType,
    /// Journal block size differs from the filesystem's.
    JournalBlockSizeDiffersFromFilesystem,
    /// Journal is larger than any mke2fs makes.
    JournalIsLargerThanAnyMke2fsMakes,
    /// Journal's first log block lies outside the journal.
    JournalFirstLogBlockLiesOutsideJournal,
    /// Journal's log start lies outside the log.
    JournalLogStartLiesOutsideLog,
    /// Journal superblock names an unknown checksum type.
    JournalSuperblockNamesUnknownChecksumType,
    /// Journal superblock claims more blocks than the journal inode holds.
    JournalSuperblockClaimsMoreBlocksThanJournalInodeHolds,
    /// Journal inode has a hole.
    JournalInodeHasHole,
    /// Journal block out of range.
    JournalBlockOutOfRange,
    /// Revoke block's record count overruns the block.
    RevokeRecordCountOverrunsBlock,
    /// Journal logs a block past the end of the filesystem.
    JournalLogsBlockPastEndOfFilesystem,
    // journal_log.rs
    /// Log block unmapped.
    LogBlockUnmapped,
    // mmp.rs
    /// The MMP block lies outside the filesystem.
    MmpBlockLiesOutsideFilesystem,
    /// The MMP block's byte offset overflows.
    MmpBlockOffsetOverflows,
    /// Bad magic.
    BadMagic,
    // orphan.rs
    /// Orphan not found on the orphan list.
    OrphanNotFoundOnOrphanList,
    /// The orphan chain loops.
    OrphanChainLoops,
    /// Orphan number out of range.
    OrphanNumberOutOfRange,
    // quota.rs
    /// Not a quota file of its type (v2, version 1).
    NotV2QuotaFileOfItsType,
    /// Quota file block count out of range.
    QuotaFileBlockCountOutOfRange,
    /// Quota file free list beyond the file.
    QuotaFileFreeListBeyondFile,
    /// Quota tree names a data block for an id it lacks.
    QuotaTreeNamesDataBlockForIdItLacks,
    /// Quota data block on the free list is full.
    QuotaDataBlockOnFreeListIsFull,
    /// Quota file reference beyond the file.
    QuotaFileReferenceBeyondFile,
    /// Quota file block unwritten.
    QuotaFileBlockUnwritten,
    // recovery.rs
    /// The journal superblock's byte offset overflows.
    JournalSuperblockOffsetOverflows,
    /// The journal superblock is shorter than its fields.
    JournalSuperblockShorterThanItsFields,
    // superblock.rs
    /// Block size above 64 KiB.
    BlockSizeAbove64Kib,
    /// Inode size is not a power of two between 128 and the block size.
    InodeSizeIsNotPowerOfTwoBetween128AndBlockSize,
    /// Group descriptor size out of range.
    GroupDescriptorSizeOutOfRange,
    /// Unknown checksum type.
    UnknownChecksumType,
    /// Cluster size out of range.
    ClusterSizeOutOfRange,
    /// Blocks per group is not a whole number of clusters.
    BlocksPerGroupIsNotWholeNumberOfClusters,
    /// Blocks per group out of range.
    BlocksPerGroupOutOfRange,
    /// Inodes per group out of range.
    InodesPerGroupOutOfRange,
    /// First data block does not match the block size.
    FirstDataBlockDoesNotMatchBlockSize,
    /// Block count too small.
    BlockCountTooSmall,
    /// Inode count is not inodes per group times group count.
    InodeCountIsNotInodesPerGroupTimesGroupCount,
    /// First non-reserved inode out of range.
    FirstNonReservedInodeOutOfRange,
    /// Inodes per group is not a whole number of inode table blocks.
    InodesPerGroupIsNotWholeNumberOfInodeTableBlocks,
    // txn.rs
    /// Descriptor block out of range.
    DescriptorBlockOutOfRange,
    // xattr.rs
    /// Bad xattr block magic.
    BadXattrBlockMagic,
    /// Xattr block spans more than one block.
    XattrBlockSpansMoreThanOneBlock,
    /// Xattr entries run past their area.
    XattrEntriesRunPastTheirArea,
    /// Xattr name runs past its area.
    XattrNameRunsPastItsArea,
    /// Xattr value larger than 64 KiB.
    XattrValueLargerThan64Kib,
    /// Xattr value runs past its area.
    XattrValueRunsPastItsArea,
    /// Xattr values overlap.
    XattrValuesOverlap,
    // xattr_read.rs
    /// Xattr value in an inode without the ea_inode feature.
    XattrValueInInodeWithoutEaInodeFeature,
    /// Xattr value inode does not match its entry.
    XattrValueInodeDoesNotMatchItsEntry,
    /// Xattr value inode is short.
    XattrValueInodeIsShort,
}

impl CorruptKind {
    /// The kind as a log line and an error message say it.
    pub fn message(self) -> &'static str {
        match self {
            CorruptKind::MalformedAcl => "malformed ACL",
            CorruptKind::NoSuchGroup => "no such group",
            CorruptKind::FreeBlockCountBelowBitmap => "free block count below the bitmap's",
            CorruptKind::BlockBitmapMarksMetadataAsFree => "block bitmap marks metadata as free",
            CorruptKind::FreeingBlockThatIsAlreadyFree => "freeing a block that is already free",
            CorruptKind::FreeInodeCountAboveBitmap => "free inode count above the bitmap's",
            CorruptKind::InodeBitmapMarksReservedInodeFree => "inode bitmap marks a reserved inode free",
            CorruptKind::InodeNumberOutOfRange => "inode number out of range",
            CorruptKind::FreeingInodeThatIsAlreadyFree => "freeing an inode that is already free",
            CorruptKind::DirectoryEntryOverrunsItsBlock => "directory entry overruns its block",
            CorruptKind::DirectoryEntryShorterThanMinimum => "directory entry shorter than the minimum",
            CorruptKind::DirectoryEntryLengthNotMultipleOf4 => "directory entry length not a multiple of 4",
            CorruptKind::DirectoryEntryTooShortForItsName => "directory entry too short for its name",
            CorruptKind::DirectoryEntryNameLongerThan255Bytes => "directory entry name longer than 255 bytes",
            CorruptKind::DirectoryEntryPointsPastLastInode => "directory entry points past the last inode",
            CorruptKind::DirectoryEntryNameOverrunsItsBlock => "directory entry name overruns its block",
            CorruptKind::HashCollisionChainRevisitsLeaf => "hash collision chain revisits a leaf",
            CorruptKind::HtreePointsAtHole => "htree points at a hole",
            CorruptKind::HtreeNodeWithoutItsEmptyDirectoryEntry => "htree node without its empty directory entry",
            CorruptKind::HtreeNodeCountOrLimitOutOfRange => "htree node count or limit out of range",
            CorruptKind::NoRootBlock => "no root block",
            CorruptKind::UnknownHashVersion => "unknown hash version",
            CorruptKind::BadDxRootInfo => "bad dx_root info",
            CorruptKind::HtreeHasTooManyLevels => "htree has too many levels",
            CorruptKind::HtreeLeafChainDoesNotEnd => "htree leaf chain does not end",
            CorruptKind::DirectoryMapsMoreBlocksThanFilesystemHolds => {
                "directory maps more blocks than the filesystem holds"
            }
            CorruptKind::DirectoryMapsOneBlockTwice => "directory maps one block twice",
            CorruptKind::EncryptedNameShorterThanCipherBlock => "encrypted name shorter than a cipher block",
            CorruptKind::DirectoryBlockIsHole => "directory block is a hole",
            CorruptKind::NoDotDotEntry => "no .. entry",
            CorruptKind::HtreeRootCountOrLimitOutOfRange => "htree root count or limit out of range",
            CorruptKind::HtreePointsPastDirectory => "htree points past the directory",
            CorruptKind::HtreeLeafIsHole => "htree leaf is a hole",
            CorruptKind::FullLeafWithoutLiveEntries => "full leaf without live entries",
            CorruptKind::LeafEntriesDoNotFitTwoBlocks => "leaf entries do not fit two blocks",
            CorruptKind::XattrEntryNamesInodeThatIsNotEaInode => {
                "an xattr entry names an inode that is not an EA inode"
            }
            CorruptKind::EaInodeReferenceCount => "EA inode reference count",
            CorruptKind::NoRoomForExtentTail => "no room for the extent tail",
            CorruptKind::ExtentIndexNodeWithoutEntries => "extent index node without entries",
            CorruptKind::ExtentNodeDepthDoesNotMatchItsParent => "extent node depth does not match its parent",
            CorruptKind::ZeroLengthExtent => "zero-length extent",
            CorruptKind::ExtentsOverlapOrAreOutOfOrder => "extents overlap or are out of order",
            CorruptKind::ExtentTreeBlockReferencedTwice => "extent tree block referenced twice",
            CorruptKind::BadExtentHeaderMagic => "bad extent header magic",
            CorruptKind::ExtentNodeEntryCountExceedsItsSize => "extent node entry count exceeds its size",
            CorruptKind::ExtentTreeTooDeep => "extent tree too deep",
            CorruptKind::InodeRecordOutsideItsBlock => "inode record outside its block",
            CorruptKind::FastCommitCreatesInodeItDidNotRecord => "a fast commit creates an inode it did not record",
            CorruptKind::FastCommitInodeRecordOfWrongSize => "a fast-commit inode record of the wrong size",
            CorruptKind::BlockMappedFileOnBigallocFilesystem => "block-mapped file on a bigalloc filesystem",
            CorruptKind::AllocatingMappedBlock => "allocating a mapped block",
            CorruptKind::ClusterIsMappedOutOfStepWithItsBlocks => "a cluster is mapped out of step with its blocks",
            CorruptKind::InlineInodeHasNoBlockMap => "inline inode has no block map",
            CorruptKind::EncryptedSymlinkLengthOutOfRange => "encrypted symlink length out of range",
            CorruptKind::SymlinkSizeOutOfRange => "symlink size out of range",
            CorruptKind::FastSymlinkLongerThanIBlock => "fast symlink longer than i_block",
            CorruptKind::SymlinkShorterThanItsSize => "symlink shorter than its size",
            CorruptKind::FileMapsMoreRunsThanFilesystemHolds => "file maps more runs than the filesystem holds",
            CorruptKind::BlockCountExceedsSizeOfDevice => "block count exceeds the size of the device",
            CorruptKind::RootDirectoryIsNotDirectory => "the root directory is not a directory",
            CorruptKind::GroupDescriptorTableOutOfRange => "group descriptor table out of range",
            CorruptKind::BlockNumberOutOfRange => "block number out of range",
            CorruptKind::NoGroupForInode => "no group for inode",
            CorruptKind::InodeTableOutOfRange => "inode table out of range",
            CorruptKind::ReferenceToReservedInode => "reference to a reserved inode",
            CorruptKind::ReferenceToXattrValueInode => "reference to an xattr value inode",
            CorruptKind::SystemDataStoredInEaInode => "system.data stored in an EA inode",
            CorruptKind::RecordShorterThanInodeSize => "record shorter than the inode size",
            CorruptKind::IExtraIsizeOutOfRange => "i_extra_isize out of range",
            CorruptKind::InodeIsNotInUse => "inode is not in use",
            CorruptKind::InvalidFileTypeInIMode => "invalid file type in i_mode",
            CorruptKind::SizeIsNegative => "size is negative",
            CorruptKind::NoJournalSuperblockMagic => "no journal superblock magic",
            CorruptKind::JournalSuperblockHasUnknownBlockType => "journal superblock has an unknown block type",
            CorruptKind::JournalBlockSizeDiffersFromFilesystem => "journal block size differs from the filesystem's",
            CorruptKind::JournalIsLargerThanAnyMke2fsMakes => "journal is larger than any mke2fs makes",
            CorruptKind::JournalFirstLogBlockLiesOutsideJournal => "journal's first log block lies outside the journal",
            CorruptKind::JournalLogStartLiesOutsideLog => "journal's log start lies outside the log",
            CorruptKind::JournalSuperblockNamesUnknownChecksumType => {
                "journal superblock names an unknown checksum type"
            }
            CorruptKind::JournalSuperblockClaimsMoreBlocksThanJournalInodeHolds => {
                "journal superblock claims more blocks than the journal inode holds"
            }
            CorruptKind::JournalInodeHasHole => "journal inode has a hole",
            CorruptKind::JournalBlockOutOfRange => "journal block out of range",
            CorruptKind::RevokeRecordCountOverrunsBlock => "revoke block's record count overruns the block",
            CorruptKind::JournalLogsBlockPastEndOfFilesystem => "journal logs a block past the end of the filesystem",
            CorruptKind::LogBlockUnmapped => "log block unmapped",
            CorruptKind::MmpBlockLiesOutsideFilesystem => "the MMP block lies outside the filesystem",
            CorruptKind::MmpBlockOffsetOverflows => "the MMP block's byte offset overflows",
            CorruptKind::BadMagic => "bad magic",
            CorruptKind::OrphanNotFoundOnOrphanList => "orphan not found on the orphan list",
            CorruptKind::OrphanChainLoops => "the orphan chain loops",
            CorruptKind::OrphanNumberOutOfRange => "orphan number out of range",
            CorruptKind::NotV2QuotaFileOfItsType => "not a quota file of its type (v2, version 1)",
            CorruptKind::QuotaFileBlockCountOutOfRange => "quota file block count out of range",
            CorruptKind::QuotaFileFreeListBeyondFile => "quota file free list beyond the file",
            CorruptKind::QuotaTreeNamesDataBlockForIdItLacks => "quota tree names a data block for an id it lacks",
            CorruptKind::QuotaDataBlockOnFreeListIsFull => "quota data block on the free list is full",
            CorruptKind::QuotaFileReferenceBeyondFile => "quota file reference beyond the file",
            CorruptKind::QuotaFileBlockUnwritten => "quota file block unwritten",
            CorruptKind::JournalSuperblockOffsetOverflows => "the journal superblock's byte offset overflows",
            CorruptKind::JournalSuperblockShorterThanItsFields => "the journal superblock is shorter than its fields",
            CorruptKind::BlockSizeAbove64Kib => "block size above 64 KiB",
            CorruptKind::InodeSizeIsNotPowerOfTwoBetween128AndBlockSize => {
                "inode size is not a power of two between 128 and the block size"
            }
            CorruptKind::GroupDescriptorSizeOutOfRange => "group descriptor size out of range",
            CorruptKind::UnknownChecksumType => "unknown checksum type",
            CorruptKind::ClusterSizeOutOfRange => "cluster size out of range",
            CorruptKind::BlocksPerGroupIsNotWholeNumberOfClusters => {
                "blocks per group is not a whole number of clusters"
            }
            CorruptKind::BlocksPerGroupOutOfRange => "blocks per group out of range",
            CorruptKind::InodesPerGroupOutOfRange => "inodes per group out of range",
            CorruptKind::FirstDataBlockDoesNotMatchBlockSize => "first data block does not match the block size",
            CorruptKind::BlockCountTooSmall => "block count too small",
            CorruptKind::InodeCountIsNotInodesPerGroupTimesGroupCount => {
                "inode count is not inodes per group times group count"
            }
            CorruptKind::FirstNonReservedInodeOutOfRange => "first non-reserved inode out of range",
            CorruptKind::InodesPerGroupIsNotWholeNumberOfInodeTableBlocks => {
                "inodes per group is not a whole number of inode table blocks"
            }
            CorruptKind::DescriptorBlockOutOfRange => "descriptor block out of range",
            CorruptKind::BadXattrBlockMagic => "bad xattr block magic",
            CorruptKind::XattrBlockSpansMoreThanOneBlock => "xattr block spans more than one block",
            CorruptKind::XattrEntriesRunPastTheirArea => "xattr entries run past their area",
            CorruptKind::XattrNameRunsPastItsArea => "xattr name runs past its area",
            CorruptKind::XattrValueLargerThan64Kib => "xattr value larger than 64 KiB",
            CorruptKind::XattrValueRunsPastItsArea => "xattr value runs past its area",
            CorruptKind::XattrValuesOverlap => "xattr values overlap",
            CorruptKind::XattrValueInInodeWithoutEaInodeFeature => {
                "xattr value in an inode without the ea_inode feature"
            }
            CorruptKind::XattrValueInodeDoesNotMatchItsEntry => "xattr value inode does not match its entry",
            CorruptKind::XattrValueInodeIsShort => "xattr value inode is short",
        }
    }
}

impl std::fmt::Display for CorruptKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}
