//! The mount service (`ext4box serve`): lets a user without privileges mount an image they can read (and
//! write, for `rw`) on a directory they own, without sudo. It listens on a SOCK_SEQPACKET socket, from
//! systemd (`LISTEN_FDS`, see `packaging/systemd/`) or `--listen PATH`.
//!
//! Protocol, version 2 (the one encoding of `wire`): one request packet per connection, one reply packet.
//! ```text
//! ext4box-request 2
//! {"op":"mount","options":"ro,noatime"}
//! ```
//! A mount carries two descriptors: the image, opened by the caller, and an O_PATH descriptor of the
//! mount point. `{"op":"unmount","path":"/abs/mnt"}` carries none (one open on the mount would keep it
//! busy). The reply is `R` (done) or `E <reason>`. The caller is identified by SO_PEERCRED: the mount point must be a directory the caller
//! owns and may write, the image descriptor must be open for writing for a read-write mount (proving the
//! caller may write it), a user has at most [`PER_USER_LIMIT`] mounts, the mount is always
//! `nosuid,nodev`, and the files are presented as the caller's. Only the user a mount was made for (or
//! root) may unmount it. Malformed, oversized or truncated requests, wrong descriptor kinds, and callers
//! that vanish or stall (5 s timeouts) get an error reply or are dropped; the service serves one
//! connection at a time and goes on with the next.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::fd_socket;
use super::lock::Access;
use super::status::Status;
use super::supervisor::{self, Prepared};
use super::worker::WorkerArgs;
use super::{MountOptions, mountinfo, registry};
use crate::sandbox;

/// Where clients look for the service (override with EXT4BOX_SERVICE_SOCKET).
pub const DEFAULT_SOCKET: &str = "/run/ext4box.sock";
/// Mounts one user may hold through the service.
pub const PER_USER_LIMIT: usize = 16;
const MAGIC: &str = "ext4box-request 2";
/// The largest request accepted (a packet of the handoff socket).
const MAX_REQUEST: usize = fd_socket::MAX_HEADER;

pub fn socket_path() -> PathBuf {
    std::env::var_os("EXT4BOX_SERVICE_SOCKET").map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from)
}

/// A parsed request.
#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    /// Mount options as `-o` takes them (the descriptors carry the image and the mount point).
    Mount {
        #[serde(default)]
        options: String,
    },
    /// The mount point, an absolute path.
    Unmount { path: PathBuf },
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        super::wire::encode(MAGIC, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Request, RequestError> {
        let r: Request = super::wire::decode("request", MAGIC, bytes, MAX_REQUEST)?;
        match r {
            Request::Unmount { path } if !path.is_absolute() => Err(RequestError::RelativePath(path)),
            _ => Ok(r),
        }
    }
}

/// Why a request does not decode.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Wire(#[from] super::wire::WireError),
    #[error("unmount needs an absolute path, not {:?}", .0.display().to_string())]
    RelativePath(PathBuf),
}

/// Why the client side (`ext4box mount` or `unmount` without privileges) did not get its mount: it could
/// not open what it sends or reach the service, or the service refused (its `E` line, as text).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot open image {}: {}", .path.display(), super::errno_text(.error))]
    OpenImage { path: PathBuf, error: std::io::Error },
    #[error("mount point {}: {}", .path.display(), super::errno_text(.error))]
    OpenMountPoint { path: PathBuf, error: std::io::Error },
    #[error("the ext4box mount service is not running ({})", .path.display())]
    NotRunning { path: PathBuf, source: fd_socket::SocketError },
    #[error(transparent)]
    Send(#[from] fd_socket::SocketError),
    /// The service's `E` line.
    #[error("{0}")]
    Refused(String),
    #[error("the mount service gave no answer")]
    NoAnswer,
}

/// Why the service refused or failed a request: the `E` line the caller reads, one variant per check.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("no socket: run from ext4box.socket (systemd) or give --listen PATH")]
    NoSocket,
    #[error("{call}: {}", std::io::Error::from(*.errno))]
    Call { call: &'static str, errno: nix::Error },
    #[error(transparent)]
    Socket(#[from] fd_socket::SocketError),
    #[error(transparent)]
    BadRequest(#[from] RequestError),
    #[error("a mount request carries two descriptors")]
    MountDescriptors,
    #[error("an unmount request carries no descriptor")]
    UnmountDescriptors,
    #[error("{} is not mounted", .0.display())]
    NotMounted(PathBuf),
    #[error("{} is not an ext4box mount", .0.display())]
    NotOurs(PathBuf),
    #[error("{} was not mounted by you", .0.display())]
    NotYours(PathBuf),
    #[error(transparent)]
    Unmount(#[from] super::UnmountError),
    #[error(transparent)]
    Options(#[from] super::options::OptionError),
    #[error("the image descriptor is not a regular file or block device")]
    ImageKind,
    #[error("a read-write mount needs the image opened for reading and writing (or mount with -o ro)")]
    ImageNotWritable,
    #[error("the mount point is not a directory")]
    NotDirectory,
    #[error("the mount point must be a directory you own and may write")]
    NotOwner,
    #[error("suid, dev, allow_other and allow_root need root")]
    NeedsRoot,
    #[error("lockfile= is not available through the mount service")]
    NoLockfile,
    #[error("you have {PER_USER_LIMIT} mounts already")]
    Limit,
    #[error("mount point: {0}")]
    MountPoint(std::io::Error),
    #[error("cannot open /dev/fuse: {0}")]
    OpenFuse(std::io::Error),
    #[error(transparent)]
    Lock(#[from] super::lock::LockError),
    /// The mount's supervisor said why it failed.
    #[error("{0}")]
    MountFailed(String),
    #[error("the mount did not come up")]
    DidNotComeUp,
    #[error("pipe: {0}")]
    Pipe(std::io::Error),
}

/// The listening socket: systemd's (LISTEN_FDS for this process: descriptor 3), or one bound on `path`.
fn listener(listen: Option<&Path>) -> Result<OwnedFd, ServiceError> {
    if let Some(path) = listen {
        let sock = fd_socket::listen_on(path)?;
        // Every user may connect: the service decides per request.
        let _ = std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o666));
        return Ok(sock);
    }
    let ours = std::env::var("LISTEN_PID").ok().and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS").ok().and_then(|n| n.parse::<u32>().ok()).unwrap_or(0);
    if !ours || count != 1 {
        return Err(ServiceError::NoSocket);
    }
    // SAFETY: systemd passes the listening socket as descriptor 3 and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(3) })
}

/// Serves requests until killed.
pub fn serve(listen: Option<&Path>) -> Result<(), ServiceError> {
    let listener = listener(listen)?;
    // Supervisors of finished mounts are not waited for: let the kernel reap them.
    // SAFETY: setting a signal disposition.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    tracing::info!("mount service listening");
    loop {
        let Ok(fd) = nix::sys::socket::accept4(listener.as_raw_fd(), nix::sys::socket::SockFlag::SOCK_CLOEXEC) else {
            continue;
        };
        // SAFETY: a fresh descriptor nothing else owns.
        let conn = unsafe { OwnedFd::from_raw_fd(fd) };
        set_timeouts(&conn, 5);
        let reply = match handle(&conn, &listener) {
            Ok(()) => Status::Ready,
            Err(e) => {
                tracing::info!("request refused: {e}");
                Status::Error(e.to_string())
            }
        }
        .to_string();
        let mut f = File::from(conn);
        let _ = f.write_all(reply.as_bytes());
    }
}

fn set_timeouts(sock: &OwnedFd, secs: i64) {
    use nix::sys::socket::{setsockopt, sockopt};
    let tv = nix::sys::time::TimeVal::new(secs, 0);
    let _ = setsockopt(sock, sockopt::ReceiveTimeout, &tv);
    let _ = setsockopt(sock, sockopt::SendTimeout, &tv);
}

/// The caller's uid and gid.
fn peer(sock: &OwnedFd) -> Result<(u32, u32), ServiceError> {
    let cred = nix::sys::socket::getsockopt(sock, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|errno| ServiceError::Call { call: "SO_PEERCRED", errno })?;
    Ok((cred.uid(), cred.gid()))
}

fn fstat(fd: &OwnedFd) -> Result<libc::stat, ServiceError> {
    nix::sys::stat::fstat(fd).map_err(|errno| ServiceError::Call { call: "fstat", errno })
}

/// The path a descriptor names (for the mount table and messages).
fn fd_path(fd: &OwnedFd) -> Result<PathBuf, ServiceError> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(ServiceError::MountPoint)
}

fn handle(conn: &OwnedFd, listener: &OwnedFd) -> Result<(), ServiceError> {
    let (uid, gid) = peer(conn)?;
    let (bytes, fds) = fd_socket::receive_upto(conn, 2)?;
    match Request::decode(&bytes)? {
        Request::Mount { options } => {
            let [image, mountpoint]: [OwnedFd; 2] = fds.try_into().map_err(|_| ServiceError::MountDescriptors)?;
            mount(uid, gid, &options, image, mountpoint, conn, listener)
        }
        Request::Unmount { path } => {
            if !fds.is_empty() {
                return Err(ServiceError::UnmountDescriptors);
            }
            let entry = mountinfo::find(&path).ok_or_else(|| ServiceError::NotMounted(path.clone()))?;
            if !entry.fstype.starts_with("fuse") || !entry.fstype.ends_with("ext4box") {
                return Err(ServiceError::NotOurs(path));
            }
            if uid != 0 && registry::owner(&entry.dev) != Some(uid) {
                return Err(ServiceError::NotYours(path));
            }
            Ok(super::unmount(&path)?)
        }
    }
}

fn mount(
    uid: u32,
    gid: u32,
    options: &str,
    image: OwnedFd,
    mountpoint: OwnedFd,
    conn: &OwnedFd,
    listener: &OwnedFd,
) -> Result<(), ServiceError> {
    let mut o = MountOptions::parse(options)?;
    let img = fstat(&image)?;
    let kind = img.st_mode & libc::S_IFMT;
    if kind != libc::S_IFREG && kind != libc::S_IFBLK {
        return Err(ServiceError::ImageKind);
    }
    // The caller proved access by opening the image: a read-write mount needs it open for writing.
    let flags = nix::fcntl::fcntl(&image, nix::fcntl::FcntlArg::F_GETFL)
        .map_err(|errno| ServiceError::Call { call: "fcntl", errno })?;
    if !o.read_only && flags & libc::O_ACCMODE != libc::O_RDWR {
        return Err(ServiceError::ImageNotWritable);
    }
    let mp = fstat(&mountpoint)?;
    if mp.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(ServiceError::NotDirectory);
    }
    if uid != 0 && (mp.st_uid != uid || mp.st_mode & 0o200 == 0) {
        return Err(ServiceError::NotOwner);
    }
    if uid != 0 {
        if !o.nosuid || !o.nodev || o.allow_other || o.allow_root {
            return Err(ServiceError::NeedsRoot);
        }
        if o.lockfile.is_some() {
            // The service would create it as root, anywhere: the caller's own tools can do that instead.
            return Err(ServiceError::NoLockfile);
        }
        if registry::count_for(uid) >= PER_USER_LIMIT {
            return Err(ServiceError::Limit);
        }
        o.uid.get_or_insert(uid);
        o.gid.get_or_insert(gid);
    }
    let target = fd_path(&mountpoint)?;
    let fuse = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/fuse")
        .map_err(ServiceError::OpenFuse)?;
    let image_shown = std::fs::read_link(format!("/proc/self/fd/{}", image.as_raw_fd()))
        .map_or_else(|_| "image".into(), |p| p.display().to_string());
    // Locked as `ext4box mount` locks it: read-only mounts share an image, a read-write one has it alone.
    let image = super::lock::lock_image(File::from(image), &image_shown, Access::for_mount(o.read_only), o.nolock)?;
    let prepared = Prepared {
        image,
        fuse,
        target,
        source: image_shown.clone(),
        options: o.clone(),
        worker: WorkerArgs { config: o.worker_config(uid, false), sandbox: Some((sandbox::DEFAULT_IDENTITY, None)) },
        image_shown,
        fd_socket: None,
        block_device: kind == libc::S_IFBLK,
        owner: (uid, gid),
        mount_at: Some(PathBuf::from(format!("/proc/self/fd/{}", mountpoint.as_raw_fd()))),
        mode: super::MountMode::Root,
        explain: false,
        lockfile: None,
        ready: None,
    };
    let (ready_r, ready_w) = super::pipe().map_err(ServiceError::Pipe)?;
    // SAFETY: the service is single-threaded, so the child may run ordinary code after fork.
    match unsafe { libc::fork() } {
        -1 => Err(ServiceError::Call { call: "fork", errno: nix::Error::last() }),
        0 => {
            drop(ready_r);
            // SAFETY: plain syscalls on our own process.
            unsafe {
                libc::signal(libc::SIGCHLD, libc::SIG_DFL);
                libc::setsid();
                libc::close(conn.as_raw_fd());
                libc::close(listener.as_raw_fd());
            }
            let code = i32::from(supervisor::supervise(prepared, Some(ready_w)).is_err());
            std::process::exit(code)
        }
        _ => {
            drop(ready_w);
            drop(prepared);
            drop(mountpoint);
            let mut lines = BufReader::new(ready_r).lines().map_while(Result::ok);
            while let Some(line) = lines.next() {
                match Status::parse(&line) {
                    Some(Status::Ready) => return Ok(()),
                    Some(Status::Error(e)) => {
                        // As `ext4box mount`: answer once the failed mount's supervisor is gone.
                        lines.by_ref().for_each(drop);
                        return Err(ServiceError::MountFailed(e));
                    }
                    _ => {}
                }
            }
            Err(ServiceError::DidNotComeUp)
        }
    }
}

/// The client side (`ext4box mount` and `ext4box unmount` run by a user without privileges): sends the
/// request with the descriptors the caller opened, and returns the service's answer.
pub fn request(req: &Request, fds: &[&OwnedFd]) -> Result<(), ClientError> {
    let path = socket_path();
    let conn = fd_socket::connect(&path).map_err(|source| ClientError::NotRunning { path: path.clone(), source })?;
    let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    fd_socket::send(&conn, &req.encode(), &raw)?;
    let mut buf = [0u8; 4096];
    let n = nix::unistd::read(&conn, &mut buf).unwrap_or(0);
    let reply = String::from_utf8_lossy(&buf[..n]).trim().to_string();
    match Status::parse(&reply) {
        Some(Status::Ready) => Ok(()),
        Some(Status::Error(e)) => Err(ClientError::Refused(e)),
        _ => Err(ClientError::NoAnswer),
    }
}

/// Opens what a client sends: the image (read-write unless `ro`) and the mount point (O_PATH).
pub fn open_for_request(image: &Path, mountpoint: &Path, read_only: bool) -> Result<(OwnedFd, OwnedFd), ClientError> {
    let img = OpenOptions::new()
        .read(true)
        .write(!read_only)
        .custom_flags(libc::O_CLOEXEC)
        .open(image)
        .map_err(|error| ClientError::OpenImage { path: image.to_path_buf(), error })?;
    let mp = open_path(mountpoint)?;
    Ok((img.into(), mp))
}

pub fn open_path(p: &Path) -> Result<OwnedFd, ClientError> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(p)
        .map_err(|error| ClientError::OpenMountPoint { path: p.to_path_buf(), error })?;
    Ok(f.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_are_strict() {
        for r in [Request::Mount { options: "ro,noatime".into() }, Request::Unmount { path: "/home/u/mnt".into() }] {
            assert_eq!(Request::decode(&r.encode()).unwrap(), r);
        }
        assert_eq!(
            Request::Unmount { path: "/m".into() }.encode(),
            b"ext4box-request 2\n{\"op\":\"unmount\",\"path\":\"/m\"}\n"
        );
        assert_eq!(
            Request::decode(b"ext4box-request 2\n{\"op\":\"mount\"}").unwrap(),
            Request::Mount { options: String::new() }
        );
        for bad in [
            &b"ext4box-request 1\nop=mount\n"[..],
            b"ext4box-request 2\n{\"op\":\"format\"}\n",
            b"ext4box-request 2\n{\"op\":\"mount\",\"op\":\"mount\"}\n",
            b"ext4box-request 2\n{\"op\":\"unmount\",\"path\":\"/m\",\"options\":\"ro\"}\n",
            b"ext4box-request 2\n{\"op\":\"unmount\",\"path\":\"relative\"}\n",
            b"ext4box-request 2\n{\"op\":\"unmount\"}\n",
            b"ext4box-request 2\n",
            b"ext4box-request 2\n{\"op\":\"mount\"}\n{\"op\":\"mount\"}\n",
            b"\xff",
        ] {
            assert!(Request::decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
