//! Engine errors: values that name the object they concern.

use std::fmt;

pub use super::corrupt::CorruptKind;

/// The on-disk object an error is about, so that a log line says which inode or block is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    Superblock,
    GroupDescriptor(u32),
    Inode(u32),
    ExtentTree(u32),
    BlockMap(u32),
    DirBlock {
        ino: u32,
        lblk: u64,
    },
    Htree(u32),
    Xattr(u32),
    XattrBlock(u64),
    Symlink(u32),
    InlineData(u32),
    FileData(u32),
    Journal,
    /// Block `n` of the orphan file.
    OrphanFile(u64),
    /// The multiple mount protection block.
    Mmp,
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Object::Superblock => write!(f, "superblock"),
            Object::GroupDescriptor(g) => write!(f, "group descriptor {g}"),
            Object::Inode(i) => write!(f, "inode {i}"),
            Object::ExtentTree(i) => write!(f, "extent tree of inode {i}"),
            Object::BlockMap(i) => write!(f, "block map of inode {i}"),
            Object::DirBlock { ino, lblk } => write!(f, "directory block {lblk} of inode {ino}"),
            Object::Htree(i) => write!(f, "htree index of inode {i}"),
            Object::Xattr(i) => write!(f, "extended attributes of inode {i}"),
            Object::XattrBlock(b) => write!(f, "xattr block {b}"),
            Object::Symlink(i) => write!(f, "symlink inode {i}"),
            Object::InlineData(i) => write!(f, "inline data of inode {i}"),
            Object::FileData(i) => write!(f, "data of inode {i}"),
            Object::Journal => write!(f, "journal"),
            Object::OrphanFile(n) => write!(f, "orphan file block {n}"),
            Object::Mmp => write!(f, "MMP block"),
        }
    }
}

/// Everything the engine can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("{object}: corrupt: {kind}")]
    Corrupt { object: Object, kind: CorruptKind },
    #[error("{0}: checksum mismatch")]
    Checksum(Object),
    #[error("not an ext2/ext3/ext4 filesystem: {0}")]
    NotExt(&'static str),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("no such file or directory")]
    NotFound,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("invalid argument")]
    Invalid,
    #[error("file name too long")]
    NameTooLong,
    #[error("no such attribute")]
    NoAttr,
    #[error("operation not supported")]
    NotSupported,
    #[error("read-only filesystem")]
    ReadOnly,
    /// Another node or e2fsck has the image (multiple mount protection): the message says who.
    #[error("{0}")]
    Busy(String),
    #[error("no space left on device")]
    NoSpace,
    #[error("file exists")]
    Exists,
    #[error("directory not empty")]
    NotEmpty,
    #[error("too many links")]
    TooManyLinks,
    #[error("operation not permitted")]
    NotPermitted,
    #[error("file too large")]
    TooBig,
    #[error("numerical result out of range")]
    Range,
    /// A quota limit the mount enforces would be passed.
    #[error("disk quota exceeded")]
    QuotaExceeded,
    /// A link or rename into a project directory from another project.
    #[error("invalid cross-device link")]
    CrossDevice,
    /// An encrypted file's contents need its key, which a FUSE server never has.
    #[error("required key not available")]
    NoKey,
    /// A value the inode record has no room for (a project id in a record without the field).
    #[error("value too large for defined data type")]
    Overflow,
}

/// `EUCLEAN`, which the kernel's ext4 calls `EFSCORRUPTED`.
pub const EUCLEAN: i32 = libc::EUCLEAN;

impl Error {
    /// Shorthand for a corruption error.
    pub fn corrupt(object: Object, kind: CorruptKind) -> Error {
        Error::Corrupt { object, kind }
    }

    /// The errno a caller should report for this error.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
            // A corrupt structure or a failed checksum is corruption of that object (EUCLEAN).
            Error::Corrupt { .. } | Error::Checksum(_) | Error::NotExt(_) => EUCLEAN,
            Error::Unsupported(_) | Error::NotSupported => libc::EOPNOTSUPP,
            Error::NotFound => libc::ENOENT,
            Error::NotDir => libc::ENOTDIR,
            Error::IsDir => libc::EISDIR,
            Error::Invalid => libc::EINVAL,
            Error::NameTooLong => libc::ENAMETOOLONG,
            Error::NoAttr => libc::ENODATA,
            Error::ReadOnly => libc::EROFS,
            Error::Busy(_) => libc::EBUSY,
            Error::NoSpace => libc::ENOSPC,
            Error::Exists => libc::EEXIST,
            Error::NotEmpty => libc::ENOTEMPTY,
            Error::TooManyLinks => libc::EMLINK,
            Error::NotPermitted => libc::EPERM,
            Error::TooBig => libc::EFBIG,
            Error::Range => libc::ERANGE,
            Error::NoKey => libc::ENOKEY,
            Error::QuotaExceeded => libc::EDQUOT,
            Error::CrossDevice => libc::EXDEV,
            Error::Overflow => libc::EOVERFLOW,
        }
    }

    /// True when this error reports damage on the image (as opposed to a missing name, say).
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corrupt { .. } | Error::Checksum(_))
    }
}

pub type Result<T> = std::result::Result<T, Error>;
