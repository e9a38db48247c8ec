//! Handing a mounted `/dev/fuse` descriptor and the image to a worker over a Unix socket, for
//! deployments where the privileged side (a node agent, a privileged container) and the worker (an
//! unprivileged container with no capability at all) share only a socket: the pattern of FUSE CSI drivers.
//!
//! The worker listens (`ext4box worker --fd-socket PATH`, SOCK_SEQPACKET); the privileged side
//! (`ext4box mount IMG MNT --fd-socket PATH`) mounts, connects, and sends one message: a versioned text
//! header and, as SCM_RIGHTS, exactly two descriptors (the FUSE device, then the image). The worker
//! answers on the same connection with the status lines of a local worker (`W ...`, `R`, `E ...`), one per
//! packet, and closes it when it exits.
//!
//! Header (at most 1 KiB; the one encoding of `wire`): the version line `ext4box-handoff 2`, then the
//! worker's configuration (`WorkerConfig`) as one line of JSON. Anything else (another version, an
//! unknown, repeated or missing field, a bad value, a truncated message, another number of descriptors,
//! descriptors of the wrong kind) is refused with an `E` line.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    self, AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr, accept4,
    bind, listen, recvmsg, sendmsg, socket,
};
use std::path::Path;

use super::wire;
use super::worker_config::{ConfigError, WorkerConfig};

const MAGIC: &str = "ext4box-handoff 2";
/// The largest header accepted.
pub const MAX_HEADER: usize = 1024;

/// What travels with the descriptors: the worker's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handoff(pub WorkerConfig);

impl Handoff {
    pub fn encode(&self) -> Vec<u8> {
        wire::encode(MAGIC, &self.0)
    }

    /// Parses a header strictly (the bytes come from another process, perhaps another user).
    pub fn decode(bytes: &[u8]) -> std::result::Result<Handoff, ConfigError> {
        let config: WorkerConfig = wire::decode("handoff", MAGIC, bytes, MAX_HEADER)?;
        config.check()?;
        Ok(Handoff(config))
    }
}

/// What can go wrong on the handoff socket, one variant per step.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("socket path too long: {}", .0.display())]
    PathTooLong(std::path::PathBuf),
    /// A socket call failed (socket, listen, accept, sendmsg, recvmsg, fstat).
    #[error("{call}: {}", std::io::Error::from(*.errno))]
    Call { call: &'static str, errno: nix::Error },
    #[error("bind {}: {}", .path.display(), std::io::Error::from(*.errno))]
    Bind { path: std::path::PathBuf, errno: nix::Error },
    #[error("no worker listening on {}: {}", .path.display(), std::io::Error::from(*.errno))]
    NoListener { path: std::path::PathBuf, errno: nix::Error },
    #[error("at most {MAX_FDS} descriptors can be handed over")]
    TooManyWanted,
    #[error("timed out waiting for the message")]
    TimedOut,
    #[error("handoff message truncated or too large")]
    Truncated,
    #[error("the peer closed the connection without a handoff")]
    Closed,
    #[error("expected {want} descriptors with the message, got {got}")]
    DescriptorCount { want: usize, got: usize },
    #[error("the first descriptor is not /dev/fuse")]
    NotFuse,
    #[error("the second descriptor is not a regular file or block device")]
    NotImage,
}

type Result<T> = std::result::Result<T, SocketError>;

fn call(call: &'static str) -> impl FnOnce(nix::Error) -> SocketError {
    move |errno| SocketError::Call { call, errno }
}

fn sockaddr(path: &Path) -> Result<UnixAddr> {
    UnixAddr::new(path).map_err(|_| SocketError::PathTooLong(path.to_path_buf()))
}

fn seqpacket() -> Result<OwnedFd> {
    socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None).map_err(call("socket"))
}

/// A SOCK_SEQPACKET socket listening on `path` (replacing a stale socket file).
pub fn listen_on(path: &Path) -> Result<OwnedFd> {
    let listener = seqpacket()?;
    let addr = sockaddr(path)?;
    let _ = std::fs::remove_file(path);
    bind(listener.as_raw_fd(), &addr).map_err(|errno| SocketError::Bind { path: path.to_path_buf(), errno })?;
    let backlog = Backlog::new(16).map_err(call("listen"))?;
    listen(&listener, backlog).map_err(call("listen"))?;
    Ok(listener)
}

/// The worker's side: binds `path`, accepts one connection, and returns it.
pub fn accept_one(path: &Path) -> Result<OwnedFd> {
    let listener = listen_on(path)?;
    let conn = accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC);
    let _ = std::fs::remove_file(path);
    let conn = conn.map_err(call("accept"))?;
    // SAFETY: accept4 returned a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(conn) })
}

/// The privileged side: connects to the worker at `path`.
pub fn connect(path: &Path) -> Result<OwnedFd> {
    let sock = seqpacket()?;
    let addr = sockaddr(path)?;
    socket::connect(sock.as_raw_fd(), &addr)
        .map_err(|errno| SocketError::NoListener { path: path.to_path_buf(), errno })?;
    Ok(sock)
}

/// Sends `header` with `fds` attached as SCM_RIGHTS, in one packet.
pub fn send(sock: &OwnedFd, header: &[u8], fds: &[RawFd]) -> Result<()> {
    let iov = [IoSlice::new(header)];
    let cmsgs = [ControlMessage::ScmRights(fds)];
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None).map_err(call("sendmsg"))?;
    Ok(())
}

/// Receives one packet and up to `max` descriptors (more is an error).
pub fn receive_upto(sock: &OwnedFd, max: usize) -> Result<(Vec<u8>, Vec<OwnedFd>)> {
    receive_inner(sock, max, None)
}

/// Receives one packet: its bytes (at most `MAX_HEADER`) and exactly `want` descriptors.
pub fn receive(sock: &OwnedFd, want: usize) -> Result<(Vec<u8>, Vec<OwnedFd>)> {
    receive_inner(sock, want, Some(want))
}

/// The most descriptors a handoff carries (the FUSE device and the image).
const MAX_FDS: usize = 4;

/// Receives one packet: its bytes (at most `MAX_HEADER`) and exactly `want` descriptors. A longer packet,
/// cut control data, or another number of descriptors is an error (descriptors received are closed).
fn receive_inner(sock: &OwnedFd, want: usize, exact: Option<usize>) -> Result<(Vec<u8>, Vec<OwnedFd>)> {
    if want > MAX_FDS {
        return Err(SocketError::TooManyWanted);
    }
    let mut buf = vec![0u8; MAX_HEADER + 1];
    // Room for more descriptors than wanted, so that too many is detected rather than cut silently.
    let mut cbuf = nix::cmsg_space!([RawFd; 2 * MAX_FDS]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = match recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut cbuf), MsgFlags::MSG_CMSG_CLOEXEC) {
        Ok(msg) => msg,
        Err(nix::Error::EAGAIN) => return Err(SocketError::TimedOut),
        Err(e) => return Err(call("recvmsg")(e)),
    };
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(call("recvmsg"))? {
        if let ControlMessageOwned::ScmRights(received) = c {
            // SAFETY: SCM_RIGHTS gave this process new descriptors that nothing else owns.
            fds.extend(received.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    let (n, truncated) = (msg.bytes, msg.flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC));
    if truncated || n > MAX_HEADER {
        return Err(SocketError::Truncated);
    }
    if n == 0 {
        return Err(SocketError::Closed);
    }
    if exact.is_some_and(|w| fds.len() != w) || fds.len() > want {
        return Err(SocketError::DescriptorCount { want, got: fds.len() });
    }
    buf.truncate(n);
    Ok((buf, fds))
}

/// Checks that `fuse` is the FUSE device and `image` a regular file or block device.
pub fn check_kinds(fuse: &OwnedFd, image: &OwnedFd) -> Result<()> {
    let stat = |fd: &OwnedFd| nix::sys::stat::fstat(fd).map_err(call("fstat"));
    let f = stat(fuse)?;
    if f.st_mode & libc::S_IFMT != libc::S_IFCHR || (libc::major(f.st_rdev), libc::minor(f.st_rdev)) != (10, 229) {
        return Err(SocketError::NotFuse);
    }
    let i = stat(image)?;
    if !matches!(i.st_mode & libc::S_IFMT, libc::S_IFREG | libc::S_IFBLK) {
        return Err(SocketError::NotImage);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_strictness() {
        let h = Handoff(WorkerConfig { read_only: true, offset: 1 << 20, ..Default::default() });
        let bytes = h.encode();
        assert!(bytes.starts_with(b"ext4box-handoff 2\n{"), "{}", String::from_utf8_lossy(&bytes));
        assert_eq!(Handoff::decode(&bytes).unwrap(), h);
        // Every field, as another program would write it (fuzz/seeds.sh has the same header).
        let full = br#"ext4box-handoff 2
{"offset":1048576,"read_only":true,"norecovery":false,"atime":"never","commit":5,"uid":7,"gid":8,"tuning":{"umask":18,"fakeroot":true,"errors":"remount-ro","partition":1,"transport":"classic","format":"qcow2","quota_limits":[true,false,true]}}
"#;
        let c = Handoff::decode(full).unwrap().0;
        assert_eq!(
            (c.uid, c.tuning.umask, c.tuning.partition, c.tuning.quota_limits),
            (Some(7), Some(0o22), Some(1), [true, false, true])
        );
        let body = &bytes[MAGIC.len() + 1..];
        let bad: Vec<Vec<u8>> = vec![
            b"ext4box-handoff 1\nread_only=1\nnorecovery=0\noffset=0\natime=never\n".to_vec(),
            [b"ext4box-handoff 3\n", body].concat(),
            [b"ext4box-handoff 2\n", &body[..body.len() / 2]].concat(),
            [&bytes[..], b"{}\n"].concat(),
            String::from_utf8_lossy(&bytes).replacen("\"offset\":1048576", "\"offset\":-1", 1).into_bytes(),
            String::from_utf8_lossy(&bytes).replacen("{", "{\"shell\":\"rm -rf /\",", 1).into_bytes(),
            String::from_utf8_lossy(&bytes).replacen("\"commit\":5", "\"commit\":0", 1).into_bytes(),
            b"\xff\xfe".to_vec(),
            vec![b'a'; MAX_HEADER + 1],
        ];
        for b in bad {
            assert!(Handoff::decode(&b).is_err(), "{:?}", String::from_utf8_lossy(&b));
        }
    }
}
