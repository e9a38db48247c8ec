//! The ext2/ext3/ext4 engine.
//!
//! Reads the on-disk format described in the kernel's `Documentation/filesystems/ext4/`, one module per
//! on-disk structure. It knows nothing of FUSE or of the sandbox: callers get plain Rust values and typed
//! errors. Every value read from the image is validated before use and all arithmetic on it is checked,
//! so a corrupt structure becomes an [`Error`] for that object alone, never a panic or an unbounded loop.
#![forbid(unsafe_code)]
// The promise above, kept by the compiler: arithmetic that could overflow, wrap or divide by zero, and
// `as` conversions that could truncate, do not build (outside tests), in every module; a deliberate
// exception is an `#[expect]` on a small item, with its reason.
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects, clippy::as_conversions))]

pub mod acl;
pub mod alloc;
pub mod attr_ops;
pub mod block_group;
pub mod block_map;
pub mod bytes;
pub mod bytes_mut;
pub mod cache;
pub mod casefold;
pub mod checksum;
pub mod cluster;
pub mod corrupt;
pub mod device;
pub mod dir_block;
pub mod dir_block_write;
pub mod dir_create;
pub mod dir_hash;
pub mod dir_htree;
pub mod dir_htree_write;
pub mod dir_read;
pub mod dir_write;
pub mod ea_inode;
pub mod error;
pub mod extent;
pub mod extent_write;
pub mod fast_commit;
pub mod feature_policy;
pub mod features;
pub mod file;
pub mod file_read;
pub mod file_space;
pub mod fs;
pub mod fscrypt;
pub mod inline_data;
pub mod inode;
pub mod jbd2;
pub mod journal;
pub mod journal_blocks;
pub mod journal_log;
pub mod journal_write;
pub mod map_edit;
pub mod mmp;
pub mod mount_state;
pub mod ops;
pub mod orphan;
pub mod orphan_file;
pub mod overlay;
pub mod quota;
pub mod read_only;
pub mod read_view;
pub mod recovery;
pub mod refs;
pub mod statfs;
pub mod superblock;
pub mod trim;
pub mod txn;
pub mod xattr;
pub mod xattr_read;
pub mod xattr_write;

pub use device::{BlockDevice, Discard, FileDevice};
pub use error::{CorruptKind, Error, Object, Result};
pub use fs::{DirEntry, FileKind, Filesystem, MountOptions, StatFs};
pub use inode::{Inode, InodeNo, Timestamp};
pub use mount_state::{ErrorBehavior, UnknownErrorBehavior};
pub use read_only::ReadOnlyReason;
pub use read_view::ReadView;

/// The root directory's inode number (`EXT4_ROOT_INO`).
pub const ROOT_INO: InodeNo = InodeNo(2);
