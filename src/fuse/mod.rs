//! The FUSE protocol layer: the kernel's ABI ([`abi`]), requests decoded ([`request`]) and replies
//! encoded ([`reply`]), the INIT negotiation ([`init`]), and the two transports that carry them: the
//! classic /dev/fuse ([`classic`]) and FUSE over io_uring ([`uring`]), chosen and run by [`session`].
//! It knows nothing of ext4: the server plugs in as a [`Handler`].

pub mod abi;
pub mod classic;
pub mod init;
pub mod reply;
pub mod request;
pub mod session;
pub mod uring;

pub use reply::{DirBuffer, Entry, FileAttr, FileType, Response, Time, Ttl};
pub use request::{Operation, Request};
pub use session::{Choice, Handler, Notifier, RingPlan, Session, Transport};

/// A FUSE node id: the kernel's name for an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId(pub u64);
