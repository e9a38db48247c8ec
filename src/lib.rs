//! ext4box: mount ext2/ext3/ext4 images through FUSE, with an ext4 engine written in safe Rust.
//!
//! Layers (see `docs/architecture.md`): [`ext4`] reads the on-disk format and knows nothing of FUSE;
//! [`fuse`] speaks the kernel's FUSE protocol over /dev/fuse or io_uring and knows nothing of ext4;
//! [`server`] translates FUSE requests into engine calls; [`launcher`] opens the image, mounts, and runs
//! the server; [`cli`] is the command line.

pub mod cli;
pub mod ext4;
pub mod fuse;
pub mod fuzzing;
pub mod image;
pub mod launcher;
pub mod mount_helper;
pub mod partition;
pub mod sandbox;
pub mod server;
