//! The integration tests, one binary: each module is one area (the file names say which), all share
//! `common` (privilege checks, the machine fixture, scratch directories, images, mounts, tree walks).
//!
//! Run one area with `cargo test --release --test integration -- bigalloc::`. Most tests need root and
//! /dev/fuse; they say so and fail under CI=true rather than skip.

mod common;

mod bad_input;
mod bigalloc;
mod casefold;
mod container;
mod corpus;
mod crash_blocks;
mod crash_kill;
mod differential;
mod discard;
mod ea_inode;
mod encrypt;
mod fast_commit;
mod fd_socket;
mod fuse2fs_options;
mod fuzz_regressions;
mod hardlinks;
mod image_formats;
mod journal;
mod mmp;
mod mount_helper;
mod mount_options;
mod orphan_file;
mod posix;
mod quota;
mod read_matrix;
mod rootless;
mod sandbox;
mod service;
mod transport;
mod write_semantics;
