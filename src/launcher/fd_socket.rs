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
//! Header (UTF-8, one `key=value` per line, at most 1 KiB):
//! ```text
//! ext4box-handoff 1
//! read_only=0|1
//! norecovery=0|1
//! offset=BYTES
//! atime=never|relative|always
//! commit=SECONDS            (optional; the journal commit interval, 5 when absent)
//! tuning=K[=V],...          (optional; umask, fakeroot, allow_root, errors, cache_size, minixdf)
//! ```
//! Anything else (another version, an unknown or repeated key, a bad value, a truncated message, another
//! number of descriptors, descriptors of the wrong kind) is refused with an `E` line.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    self, AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr, accept4,
    bind, listen, recvmsg, sendmsg, socket,
};
use std::path::Path;

use crate::server::AtimePolicy;

const MAGIC: &str = "ext4box-handoff 1";
/// The largest header accepted.
pub const MAX_HEADER: usize = 1024;

/// What travels with the descriptors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handoff {
    pub read_only: bool,
    pub norecovery: bool,
    pub offset: u64,
    pub atime: AtimePolicy,
    /// Journal commit interval in seconds.
    pub commit: u32,
    pub tuning: super::options::WorkerTuning,
}

impl Handoff {
    pub fn encode(&self) -> Vec<u8> {
        let atime = self.atime.name();
        format!(
            "{MAGIC}\nread_only={}\nnorecovery={}\noffset={}\natime={atime}\ncommit={}\ntuning={}\n",
            u8::from(self.read_only),
            u8::from(self.norecovery),
            self.offset,
            self.commit,
            self.tuning.encode()
        )
        .into_bytes()
    }

    /// Parses a header strictly (the bytes come from another process, perhaps another user).
    pub fn decode(bytes: &[u8]) -> Result<Handoff, String> {
        if bytes.len() > MAX_HEADER {
            return Err("handoff header too large".into());
        }
        let text = std::str::from_utf8(bytes).map_err(|_| "handoff header is not UTF-8".to_string())?;
        let mut lines = text.lines();
        if lines.next() != Some(MAGIC) {
            return Err(format!("not an ext4box handoff of version 1 (expected \"{MAGIC}\")"));
        }
        let (mut read_only, mut norecovery, mut offset, mut atime) = (None, None, None, None);
        let mut commit = None;
        let mut tuning = None;
        for line in lines {
            let (k, v) = line.split_once('=').ok_or_else(|| format!("bad handoff line {line:?}"))?;
            let bit = |v: &str| match v {
                "0" => Ok(false),
                "1" => Ok(true),
                _ => Err(format!("bad value for {k}: {v:?}")),
            };
            let slot_taken = |taken: bool| if taken { Err(format!("{k} given twice")) } else { Ok(()) };
            match k {
                "read_only" => {
                    slot_taken(read_only.is_some())?;
                    read_only = Some(bit(v)?);
                }
                "norecovery" => {
                    slot_taken(norecovery.is_some())?;
                    norecovery = Some(bit(v)?);
                }
                "offset" => {
                    slot_taken(offset.is_some())?;
                    offset = Some(v.parse::<u64>().map_err(|_| format!("bad offset {v:?}"))?);
                }
                "atime" => {
                    slot_taken(atime.is_some())?;
                    atime = Some(v.parse::<AtimePolicy>()?);
                }
                "commit" => {
                    slot_taken(commit.is_some())?;
                    commit = Some(super::options::commit_seconds(v)?);
                }
                "tuning" => {
                    slot_taken(tuning.is_some())?;
                    tuning = Some(super::options::WorkerTuning::decode(v)?);
                }
                _ => return Err(format!("unknown handoff key {k:?}")),
            }
        }
        match (read_only, norecovery, offset, atime) {
            (Some(read_only), Some(norecovery), Some(offset), Some(atime)) => {
                let commit = commit.unwrap_or(super::options::DEFAULT_COMMIT_SECONDS);
                Ok(Handoff { read_only, norecovery, offset, atime, commit, tuning: tuning.unwrap_or_default() })
            }
            _ => Err("handoff header is missing a key".into()),
        }
    }
}

fn sockaddr(path: &Path) -> Result<UnixAddr, String> {
    UnixAddr::new(path).map_err(|_| format!("socket path too long: {}", path.display()))
}

fn seqpacket() -> Result<OwnedFd, String> {
    socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None).map_err(|e| errno_error("socket", e))
}

fn errno_error(what: &str, e: nix::Error) -> String {
    format!("{what}: {}", std::io::Error::from(e))
}

/// A SOCK_SEQPACKET socket listening on `path` (replacing a stale socket file).
pub fn listen_on(path: &Path) -> Result<OwnedFd, String> {
    let listener = seqpacket()?;
    let addr = sockaddr(path)?;
    let _ = std::fs::remove_file(path);
    bind(listener.as_raw_fd(), &addr).map_err(|e| errno_error(&format!("bind {}", path.display()), e))?;
    let backlog = Backlog::new(16).map_err(|e| errno_error("listen", e))?;
    listen(&listener, backlog).map_err(|e| errno_error("listen", e))?;
    Ok(listener)
}

/// The worker's side: binds `path`, accepts one connection, and returns it.
pub fn accept_one(path: &Path) -> Result<OwnedFd, String> {
    let listener = listen_on(path)?;
    let conn = accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC);
    let _ = std::fs::remove_file(path);
    let conn = conn.map_err(|e| errno_error("accept", e))?;
    // SAFETY: accept4 returned a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(conn) })
}

/// The privileged side: connects to the worker at `path`.
pub fn connect(path: &Path) -> Result<OwnedFd, String> {
    let sock = seqpacket()?;
    let addr = sockaddr(path)?;
    socket::connect(sock.as_raw_fd(), &addr)
        .map_err(|e| errno_error(&format!("no worker listening on {}", path.display()), e))?;
    Ok(sock)
}

/// Sends `header` with `fds` attached as SCM_RIGHTS, in one packet.
pub fn send(sock: &OwnedFd, header: &[u8], fds: &[RawFd]) -> Result<(), String> {
    let iov = [IoSlice::new(header)];
    let cmsgs = [ControlMessage::ScmRights(fds)];
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None)
        .map_err(|e| errno_error("sendmsg", e))?;
    Ok(())
}

/// Receives one packet and up to `max` descriptors (more is an error).
pub fn receive_upto(sock: &OwnedFd, max: usize) -> Result<(Vec<u8>, Vec<OwnedFd>), String> {
    receive_inner(sock, max, None)
}

/// Receives one packet: its bytes (at most `MAX_HEADER`) and exactly `want` descriptors.
pub fn receive(sock: &OwnedFd, want: usize) -> Result<(Vec<u8>, Vec<OwnedFd>), String> {
    receive_inner(sock, want, Some(want))
}

/// The most descriptors a handoff carries (the FUSE device and the image).
const MAX_FDS: usize = 4;

/// Receives one packet: its bytes (at most `MAX_HEADER`) and exactly `want` descriptors. A longer packet,
/// cut control data, or another number of descriptors is an error (descriptors received are closed).
fn receive_inner(sock: &OwnedFd, want: usize, exact: Option<usize>) -> Result<(Vec<u8>, Vec<OwnedFd>), String> {
    if want > MAX_FDS {
        return Err(format!("at most {MAX_FDS} descriptors can be handed over"));
    }
    let mut buf = vec![0u8; MAX_HEADER + 1];
    // Room for more descriptors than wanted, so that too many is detected rather than cut silently.
    let mut cbuf = nix::cmsg_space!([RawFd; 2 * MAX_FDS]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = match recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut cbuf), MsgFlags::MSG_CMSG_CLOEXEC) {
        Ok(msg) => msg,
        Err(nix::Error::EAGAIN) => return Err("timed out waiting for the message".into()),
        Err(e) => return Err(errno_error("recvmsg", e)),
    };
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(|e| errno_error("recvmsg", e))? {
        if let ControlMessageOwned::ScmRights(received) = c {
            // SAFETY: SCM_RIGHTS gave this process new descriptors that nothing else owns.
            fds.extend(received.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    let (n, truncated) = (msg.bytes, msg.flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC));
    if truncated || n > MAX_HEADER {
        return Err("handoff message truncated or too large".into());
    }
    if n == 0 {
        return Err("the peer closed the connection without a handoff".into());
    }
    if exact.is_some_and(|w| fds.len() != w) || fds.len() > want {
        return Err(format!("expected {want} descriptors with the message, got {}", fds.len()));
    }
    buf.truncate(n);
    Ok((buf, fds))
}

/// Checks that `fuse` is the FUSE device and `image` a regular file or block device.
pub fn check_kinds(fuse: &OwnedFd, image: &OwnedFd) -> Result<(), String> {
    let stat = |fd: &OwnedFd| nix::sys::stat::fstat(fd).map_err(|e| errno_error("fstat", e));
    let f = stat(fuse)?;
    if f.st_mode & libc::S_IFMT != libc::S_IFCHR || (libc::major(f.st_rdev), libc::minor(f.st_rdev)) != (10, 229) {
        return Err("the first descriptor is not /dev/fuse".into());
    }
    let i = stat(image)?;
    if !matches!(i.st_mode & libc::S_IFMT, libc::S_IFREG | libc::S_IFBLK) {
        return Err("the second descriptor is not a regular file or block device".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_strictness() {
        let h = Handoff {
            read_only: true,
            norecovery: false,
            offset: 1 << 20,
            atime: AtimePolicy::Never,
            commit: 5,
            tuning: Default::default(),
        };
        assert_eq!(Handoff::decode(&h.encode()).unwrap(), h);
        let bad = [
            &b"ext4box-handoff 2\nread_only=1\nnorecovery=0\noffset=0\natime=never\n"[..],
            b"ext4box-handoff 1\nread_only=1\nnorecovery=0\noffset=0\n",
            b"ext4box-handoff 1\nread_only=1\nread_only=1\nnorecovery=0\noffset=0\natime=never\n",
            b"ext4box-handoff 1\nread_only=2\nnorecovery=0\noffset=0\natime=never\n",
            b"ext4box-handoff 1\nread_only=1\nnorecovery=0\noffset=-1\natime=never\n",
            b"ext4box-handoff 1\nread_only=1\nnorecovery=0\noffset=0\natime=never\nshell=rm -rf /\n",
            b"\xff\xfe",
        ];
        for b in bad {
            assert!(Handoff::decode(b).is_err(), "{:?}", String::from_utf8_lossy(b));
        }
        assert!(Handoff::decode(&vec![b'a'; MAX_HEADER + 1]).is_err());
    }
}
