//! A FUSE session: the INIT handshake, the choice of transport, and the threads that serve it.

use std::fs::File;
use std::io;
use std::sync::Arc;

use zerocopy::IntoBytes;

use super::abi::{self, init_flags};
use super::classic::{self, Channel, Received};
use super::init::{self, Negotiated};
use super::reply::Response;
use super::request::{self, Operation, Request};
use super::uring;

/// What serves the requests: the protocol layer calls it from its threads.
pub trait Handler: Send + Sync + 'static {
    /// The INIT capabilities (`init_flags`) to ask for, given those the kernel offers.
    fn wanted(&self, offered: u64) -> u64;
    /// What INIT settled, before the first request.
    fn initialized(&self, negotiated: &Negotiated);
    /// The response to one request (never INIT or INTERRUPT).
    fn handle(&self, req: &Request<'_>) -> Response;
    /// The session is over: every thread has stopped.
    fn destroy(&self);
}

/// Which transport carries the requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Classic,
    IoUring { queues: usize, depth: u32 },
}

/// The transport and why it was chosen.
#[derive(Debug, Clone)]
pub struct Choice {
    pub transport: Transport,
    pub why: String,
}

impl std::fmt::Display for Choice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.transport {
            Transport::Classic => write!(f, "classic /dev/fuse ({})", self.why),
            Transport::IoUring { queues, depth } => {
                write!(f, "io_uring, {queues} queues of {depth} entries ({})", self.why)
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("reading FUSE_INIT: {0}")]
    Io(#[from] io::Error),
    #[error("the filesystem was unmounted before FUSE_INIT")]
    Unmounted,
    #[error("the first FUSE request was not INIT (opcode {0})")]
    NotInit(u32),
    #[error("malformed FUSE_INIT: {0}")]
    Decode(#[from] request::DecodeError),
    #[error("{0}")]
    Init(#[from] init::InitError),
}

/// How the transport is to be chosen.
pub enum RingPlan {
    /// Rings set up before confinement, to be used if the kernel offers FUSE over io_uring.
    Ready(uring::Rings),
    /// Classic, for this reason.
    Classic(String),
}

/// A session after INIT.
pub struct Session {
    channel: Channel,
    negotiated: Negotiated,
    rings: Option<uring::Rings>,
    choice: Choice,
    threads: usize,
}

impl Session {
    /// Answers the kernel's INIT on `dev` (the mounted /dev/fuse) and settles the transport.
    /// `threads` is the number of /dev/fuse readers of the classic transport.
    pub fn handshake<H: Handler>(
        dev: File,
        handler: &H,
        plan: RingPlan,
        threads: usize,
    ) -> Result<Session, SessionError> {
        let channel = Channel::new(dev);
        let mut buf = vec![0u8; init::MAX_PAGES as usize * init::PAGE_SIZE as usize + init::PAGE_SIZE as usize];
        let n = match channel.receive(&mut buf)? {
            Received::Request(n) => n,
            Received::Unmounted => return Err(SessionError::Unmounted),
        };
        let req = request::decode(&buf[..n])?;
        let Operation::Init(init_in) = req.op else {
            let _ = channel.reply(req.unique(), &Response::Error(libc::EIO));
            return Err(SessionError::NotInit(req.header.opcode));
        };
        let offered = init::offered(&init_in);
        let (mut rings, why) = match plan {
            RingPlan::Ready(r) if offered & init_flags::OVER_IO_URING != 0 => {
                (Some(r), "the kernel offers it".to_string())
            }
            RingPlan::Ready(_) => (None, "the kernel did not offer FUSE over io_uring at INIT".to_string()),
            RingPlan::Classic(why) => (None, why),
        };
        let mut wanted = handler.wanted(offered);
        if rings.is_some() {
            wanted |= init_flags::OVER_IO_URING;
        }
        let (out, negotiated) = match init::negotiate(&init_in, wanted) {
            Ok(r) => r,
            Err(e) => {
                let _ = channel.reply(req.unique(), &Response::Error(libc::EPROTO));
                return Err(e.into());
            }
        };
        if !negotiated.has(init_flags::OVER_IO_URING) {
            rings = None;
        }
        let choice = match &rings {
            Some(r) => Choice { transport: Transport::IoUring { queues: r.queues(), depth: r.depth() }, why },
            None => Choice { transport: Transport::Classic, why },
        };
        handler.initialized(&negotiated);
        // The kernel processes the reply within this write: once it returns, ring registration is allowed.
        channel.reply(req.unique(), &Response::Data(out.as_bytes().to_vec()))?;
        Ok(Session { channel, negotiated, rings, choice, threads: threads.max(1) })
    }

    pub fn choice(&self) -> &Choice {
        &self.choice
    }

    pub fn negotiated(&self) -> &Negotiated {
        &self.negotiated
    }

    /// How to send the kernel notifications (they always travel on /dev/fuse).
    pub fn notifier(&self) -> Notifier {
        Notifier(self.channel.clone())
    }

    /// Serves until the filesystem is unmounted, then calls [`Handler::destroy`].
    pub fn run<H: Handler>(self, handler: Arc<H>) -> io::Result<()> {
        let Session { channel, negotiated, rings, threads, .. } = self;
        let mut workers = Vec::new();
        // With rings, /dev/fuse still carries FORGET, INTERRUPT and what was queued before the rings
        // were ready: one reader is enough. Without, it carries everything.
        let readers = if rings.is_some() { 1 } else { threads };
        if let Some(rings) = rings {
            for (qid, ring) in rings.into_queues().into_iter().enumerate() {
                let (h, n) = (handler.clone(), negotiated);
                workers.push(
                    std::thread::Builder::new()
                        .name(format!("fuse-uring-{qid}"))
                        .spawn(move || uring::serve(ring, qid, &n, &*h))?,
                );
            }
        }
        for i in 1..readers {
            let (h, c, size) = (handler.clone(), channel.clone(), negotiated.request_buffer());
            workers.push(
                std::thread::Builder::new().name(format!("fuse-{i}")).spawn(move || classic::serve(&c, &*h, size))?,
            );
        }
        let mut result = classic::serve(&channel, &*handler, negotiated.request_buffer());
        for w in workers {
            match w.join() {
                Ok(Err(e)) if result.is_ok() => result = Err(e),
                Ok(_) => {}
                Err(_) => result = Err(io::Error::other("a FUSE thread panicked")),
            }
        }
        handler.destroy();
        result
    }
}

/// Sends notifications to the kernel.
#[derive(Clone)]
pub struct Notifier(Channel);

impl Notifier {
    /// Drops the kernel's cached attributes of `nodeid` and, from `offset` for `len` bytes (0: to the
    /// end), its cached pages; a negative offset keeps every page.
    pub fn inval_inode(&self, nodeid: u64, offset: i64, len: i64) -> io::Result<()> {
        let body = abi::NotifyInvalInodeOut { ino: nodeid, off: offset, len };
        let len = std::mem::size_of::<abi::OutHeader>() + std::mem::size_of_val(&body);
        let header = abi::OutHeader { len: len as u32, error: abi::NOTIFY_INVAL_INODE, unique: 0 };
        self.0.send(&header, body.as_bytes())
    }
}
