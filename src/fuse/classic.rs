//! The classic transport: requests read from /dev/fuse, one per `read(2)`, replies written back with
//! one `writev(2)` each. Several threads may read the same descriptor; the kernel hands each request to
//! one of them.

use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;

use zerocopy::{FromBytes, IntoBytes};

use super::abi::{self, InHeader};
use super::reply::Response;
use super::request::{self, Operation, Request};
use super::session::Handler;

/// The mounted /dev/fuse descriptor.
#[derive(Clone)]
pub struct Channel(Arc<File>);

/// How a read from /dev/fuse ended.
pub enum Received {
    Request(usize),
    /// The filesystem was unmounted (ENODEV): the session is over.
    Unmounted,
}

impl Channel {
    pub fn new(dev: File) -> Channel {
        Channel(Arc::new(dev))
    }

    pub fn file(&self) -> &File {
        &self.0
    }

    /// The next request into `buf`. Retries what the kernel means as "try again": ENOENT (the request
    /// was interrupted before we read it), EINTR and EAGAIN.
    pub fn receive(&self, buf: &mut [u8]) -> io::Result<Received> {
        loop {
            match (&*self.0).read(buf) {
                Ok(n) => return Ok(Received::Request(n)),
                Err(e) => match e.raw_os_error() {
                    Some(libc::ENOENT | libc::EINTR | libc::EAGAIN) => continue,
                    Some(libc::ENODEV) => return Ok(Received::Unmounted),
                    _ => return Err(e),
                },
            }
        }
    }

    /// Writes one message: `header` then `body`, in one writev.
    pub fn send(&self, header: &abi::OutHeader, body: &[u8]) -> io::Result<()> {
        let parts = [IoSlice::new(header.as_bytes()), IoSlice::new(body)];
        match (&*self.0).write_vectored(&parts) {
            Ok(n) if n == header.len as usize => Ok(()),
            Ok(n) => Err(io::Error::other(format!("short write to /dev/fuse: {n} of {} bytes", header.len))),
            // The request was interrupted and is gone: nobody waits for the reply.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Sends `response` to request `unique`, if a reply is due.
    pub fn reply(&self, unique: u64, response: &Response) -> io::Result<()> {
        match response.framed(unique) {
            Some((header, body)) => self.send(&header, body),
            None => Ok(()),
        }
    }
}

/// Serves requests from `channel` until the filesystem is unmounted.
pub fn serve<H: Handler>(channel: &Channel, handler: &H, buffer: usize) -> io::Result<()> {
    let mut buf = vec![0u8; buffer];
    loop {
        let n = match channel.receive(&mut buf)? {
            Received::Request(n) => n,
            Received::Unmounted => return Ok(()),
        };
        let msg = &buf[..n];
        let (unique, response) = match request::decode(msg) {
            Ok(req) => (req.unique(), answer(handler, &req)),
            Err(e) => {
                tracing::warn!(error = %e, "malformed FUSE request");
                match InHeader::read_from_prefix(msg) {
                    Ok((h, _)) => (h.unique, Response::Error(libc::EIO)),
                    Err(_) => continue,
                }
            }
        };
        if let Err(e) = channel.reply(unique, &response) {
            if e.raw_os_error() == Some(libc::ENODEV) {
                return Ok(());
            }
            tracing::warn!(error = %e, "could not send a FUSE reply");
        }
    }
}

/// The response to a request after the handshake, on either transport. INIT comes once, and
/// INTERRUPT is answered ENOSYS (every handler runs to completion), which tells the kernel to stop
/// sending them.
pub fn answer<H: Handler>(handler: &H, req: &Request<'_>) -> Response {
    match req.op {
        Operation::Init(_) => Response::Error(libc::EIO),
        Operation::Interrupt { .. } => Response::Error(libc::ENOSYS),
        _ => handler.handle(req),
    }
}
