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

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
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

fn last_error(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn sockaddr(path: &Path) -> Result<(libc::sockaddr_un, libc::socklen_t), String> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: an all-zero sockaddr_un is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(format!("socket path too long: {}", path.display()));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok((addr, std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t))
}

fn seqpacket() -> Result<OwnedFd, String> {
    // SAFETY: socket(2) returns a new descriptor or -1.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(last_error("socket"));
    }
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A SOCK_SEQPACKET socket listening on `path` (replacing a stale socket file).
pub fn listen_on(path: &Path) -> Result<OwnedFd, String> {
    let listener = seqpacket()?;
    let (addr, len) = sockaddr(path)?;
    let _ = std::fs::remove_file(path);
    // SAFETY: valid socket and address.
    if unsafe { libc::bind(listener.as_raw_fd(), (&addr as *const libc::sockaddr_un).cast(), len) } != 0 {
        return Err(last_error(&format!("bind {}", path.display())));
    }
    // SAFETY: valid socket.
    if unsafe { libc::listen(listener.as_raw_fd(), 16) } != 0 {
        return Err(last_error("listen"));
    }
    Ok(listener)
}

/// The worker's side: binds `path`, accepts one connection, and returns it.
pub fn accept_one(path: &Path) -> Result<OwnedFd, String> {
    let listener = listen_on(path)?;
    // SAFETY: valid listening socket; the peer address is not needed.
    let conn =
        unsafe { libc::accept4(listener.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC) };
    let _ = std::fs::remove_file(path);
    if conn < 0 {
        return Err(last_error("accept"));
    }
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(conn) })
}

/// The privileged side: connects to the worker at `path`.
pub fn connect(path: &Path) -> Result<OwnedFd, String> {
    let sock = seqpacket()?;
    let (addr, len) = sockaddr(path)?;
    // SAFETY: valid socket and address.
    if unsafe { libc::connect(sock.as_raw_fd(), (&addr as *const libc::sockaddr_un).cast(), len) } != 0 {
        return Err(last_error(&format!("no worker listening on {}", path.display())));
    }
    Ok(sock)
}

/// Sends `header` with `fds` attached as SCM_RIGHTS, in one packet.
pub fn send(sock: &OwnedFd, header: &[u8], fds: &[RawFd]) -> Result<(), String> {
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    let mut iov = libc::iovec { iov_base: header.as_ptr() as *mut libc::c_void, iov_len: header.len() };
    // SAFETY: an all-zero msghdr is valid; the fields set point at live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: the control buffer has room for one header with `fds`.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as usize;
        std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(c), fd_bytes);
        if libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) < 0 {
            return Err(last_error("sendmsg"));
        }
    }
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

/// Receives one packet: its bytes (at most `MAX_HEADER`) and exactly `want` descriptors. A longer packet,
/// cut control data, or another number of descriptors is an error (descriptors received are closed).
fn receive_inner(sock: &OwnedFd, want: usize, exact: Option<usize>) -> Result<(Vec<u8>, Vec<OwnedFd>), String> {
    let mut buf = vec![0u8; MAX_HEADER + 1];
    // Room for more descriptors than wanted, so that too many is detected rather than cut silently.
    let room = want + 4;
    // SAFETY: pure computation.
    let space = unsafe { libc::CMSG_SPACE((room * std::mem::size_of::<RawFd>()) as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: as in `send`.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: valid socket and message buffers.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EAGAIN) => "timed out waiting for the message".into(),
            _ => format!("recvmsg: {e}"),
        });
    }
    let mut fds = Vec::new();
    // SAFETY: walking the control messages the kernel wrote into `cbuf`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c);
                let count = ((*c).cmsg_len - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 || n as usize > MAX_HEADER {
        return Err("handoff message truncated or too large".into());
    }
    if n == 0 {
        return Err("the peer closed the connection without a handoff".into());
    }
    if exact.is_some_and(|w| fds.len() != w) || fds.len() > want {
        return Err(format!("expected {want} descriptors with the message, got {}", fds.len()));
    }
    buf.truncate(n as usize);
    Ok((buf, fds))
}

/// Checks that `fuse` is the FUSE device and `image` a regular file or block device.
pub fn check_kinds(fuse: &OwnedFd, image: &OwnedFd) -> Result<(), String> {
    let stat = |fd: &OwnedFd| {
        // SAFETY: fstat into a zeroed struct on a descriptor we own.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(last_error("fstat"));
        }
        Ok(st)
    };
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
