//! The worker: the unprivileged process that parses the image and serves FUSE. It inherits three
//! descriptors from the launcher (the mounted `/dev/fuse`, the image, and a status pipe), confines itself
//! (see `crate::sandbox`) before it reads a byte of the image or starts a thread, then serves until the
//! filesystem is unmounted.
//!
//! Status lines to the launcher: `W <text>` (a warning, e.g. `W ro <why>` when the image can only be
//! mounted read-only), then `R` when serving, or `E <text>` when it cannot serve.

use std::fs::File;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;

use crate::ext4::{self, FileDevice, Filesystem};
use crate::fuse::{self as protocol, RingPlan, Session, Transport};
use crate::sandbox::{self, Identity, Policy};
use crate::server::dispatch::{self, Dispatcher};
use crate::server::{Server, ServerOptions};

use super::options::TransportPolicy;
use super::status::Status;
use super::worker_config::WorkerConfig;

/// The descriptor numbers the launcher hands over.
pub const FUSE_FD: i32 = 3;
pub const IMAGE_FD: i32 = 4;
pub const STATUS_FD: i32 = 5;

/// What the worker is asked to do: the configuration (from its command line or the handoff) and the
/// sandbox to serve in.
#[derive(Debug, Clone)]
pub struct WorkerArgs {
    pub config: WorkerConfig,
    /// Who to become and which seccomp policy file (the built-in one when `None`); `None` altogether: run
    /// without the sandbox (`--no-sandbox`, debugging only).
    pub sandbox: Option<(Identity, Option<std::path::PathBuf>)>,
}

/// What stops the worker from serving, one variant per step: the `E` line the launcher shows.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Sandbox(#[from] sandbox::SandboxError),
    #[error("cannot read the image: {0}")]
    ReadImage(#[source] std::io::Error),
    #[error("cannot size the image: {0}")]
    SizeImage(#[source] std::io::Error),
    /// The image module's refusal (a VM disk format, or the window into it).
    #[error(transparent)]
    Image(crate::image::ImageError),
    #[error(transparent)]
    Partition(#[from] crate::partition::PartitionError),
    #[error("offset lies past the end of the image")]
    OffsetPastEnd { offset: u64, size: u64 },
    #[error("{0}")]
    Device(#[source] std::io::Error),
    #[error(transparent)]
    Filesystem(#[from] ext4::Error),
    #[error("FUSE handshake failed: {0}")]
    Handshake(#[source] protocol::session::SessionError),
    #[error("-o transport=io_uring: FUSE over io_uring cannot be used: {0}")]
    NoIoUring(String),
    #[error("FUSE session ended with an error: {0}")]
    Session(#[source] std::io::Error),
}

/// Why a worker behind `--fd-socket` refused a handoff (the `E` line says `handoff refused: ...`).
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("{0}")]
    Dup(#[source] std::io::Error),
    #[error(transparent)]
    Socket(#[from] super::fd_socket::SocketError),
    #[error(transparent)]
    Config(#[from] super::worker_config::ConfigError),
    #[error("no image descriptor")]
    NoImage,
    #[error("no FUSE descriptor")]
    NoFuse,
}

fn send(mut status: &File, s: Status) {
    let _ = status.write_all(format!("{s}\n").as_bytes());
}

/// The worker's main: returns the process exit code.
pub fn run(args: WorkerArgs) -> i32 {
    // SAFETY: the launcher put these descriptors in place for us and nothing else owns them.
    let (fuse, image, status) =
        unsafe { (OwnedFd::from_raw_fd(FUSE_FD), File::from_raw_fd(IMAGE_FD), File::from_raw_fd(STATUS_FD)) };
    let status = Arc::new(status);
    match serve(args, fuse, image, &status) {
        Ok(()) => 0,
        Err(msg) => {
            // The launcher prints it as its one error line; the log (the journal) keeps a copy.
            send(&status, Status::Error(msg.to_string()));
            tracing::info!("stopping: {msg}");
            1
        }
    }
}

/// The worker's main when its descriptors come over a socket (`--fd-socket PATH`): accept one handoff,
/// then serve as a started worker does, answering on the connection.
pub fn run_from_socket(path: &std::path::Path, sandbox: Option<(Identity, Option<std::path::PathBuf>)>) -> i32 {
    use super::fd_socket;
    let conn = match fd_socket::accept_one(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return 1;
        }
    };
    let status = Arc::new(File::from(conn.try_clone().unwrap_or(conn)));
    let received = std::os::fd::AsFd::as_fd(&status)
        .try_clone_to_owned()
        .map_err(HandoffError::Dup)
        .and_then(|c| Ok(fd_socket::receive(&c, 2)?))
        .and_then(|(header, mut fds)| {
            let h = fd_socket::Handoff::decode(&header)?;
            let image = fds.pop().ok_or(HandoffError::NoImage)?;
            let fuse = fds.pop().ok_or(HandoffError::NoFuse)?;
            fd_socket::check_kinds(&fuse, &image)?;
            Ok((h, fuse, image))
        });
    let (h, fuse, image) = match received {
        Ok(r) => r,
        Err(e) => {
            send(&status, Status::Error(format!("handoff refused: {e}")));
            tracing::error!("handoff refused: {e}");
            return 1;
        }
    };
    let args = WorkerArgs { config: h.0, sandbox };
    match serve(args, fuse, File::from(image), &status) {
        Ok(()) => 0,
        Err(msg) => {
            send(&status, Status::Error(msg.to_string()));
            tracing::error!("{msg}");
            1
        }
    }
}

/// The device the engine reads: the image as it is (raw) or the virtual disk inside a VM disk format,
/// then the partition or offset within it; and why it must be read-only when the format cannot be
/// written. Runs confined: the format's metadata and the partition table are read from the image like
/// everything else.
fn open_device(
    image: File,
    cfg: &WorkerConfig,
    block_device: bool,
) -> Result<(Box<dyn ext4::BlockDevice>, Option<String>), WorkerError> {
    use crate::image::{self, Format, Window};
    use std::os::unix::fs::FileExt;
    let format = match cfg.tuning.format {
        Format::Auto => {
            let mut first = vec![0u8; image::DETECT_BYTES];
            let n = image.read_at(&mut first, 0).map_err(WorkerError::ReadImage)?;
            image::detect(&first[..n]).map_err(WorkerError::Image)?
        }
        f => f,
    };
    if format != Format::Raw {
        let (disk, read_only) = image::open_virtual_disk(format, image, !cfg.read_only).map_err(WorkerError::Image)?;
        tracing::info!(format = format.name(), size = disk.size(), "serving the virtual disk of a VM disk image");
        let (offset, len) = region(cfg, disk.size(), &|off, buf| disk.read_exact_at(buf, off))?;
        let disk = Window::new(disk, offset, len).map_err(WorkerError::Image)?;
        return Ok((Box::new(disk), read_only));
    }
    let (offset, len) = region(cfg, image_size(&image)?, &|off, buf| image.read_exact_at(buf, off))?;
    let dev = FileDevice::with_range(image, offset, len).map_err(WorkerError::Device)?;
    let discard = match (block_device, cfg.tuning.discard) {
        (false, _) => ext4::Discard::PunchHole,
        (true, true) => ext4::Discard::With(image::blkdiscard),
        (true, false) => ext4::Discard::Off,
    };
    Ok((Box::new(dev.discarding(discard)), None))
}

/// Where the filesystem lies in a disk of `size` bytes (first byte, length): partition N of its table
/// (read through `read`), or from `offset=` to the end.
fn region(
    cfg: &WorkerConfig,
    size: u64,
    read: &dyn Fn(u64, &mut [u8]) -> std::io::Result<()>,
) -> Result<(u64, u64), WorkerError> {
    match cfg.tuning.partition {
        Some(n) => {
            let found = crate::partition::find(n, size, read)?;
            tracing::info!(partition = n, offset = found.offset, len = found.len, "serving a partition of the image");
            Ok((found.offset, found.len))
        }
        None => {
            let past = WorkerError::OffsetPastEnd { offset: cfg.offset, size };
            Ok((cfg.offset, size.checked_sub(cfg.offset).ok_or(past)?))
        }
    }
}

/// This host's name and the image's file name, as the kernel writes its node and device names into the
/// MMP block: what another host that finds the image busy is told.
fn mmp_owner(image: &File) -> ext4::mmp::Owner {
    use std::os::fd::AsRawFd;
    let node = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
    let path = std::fs::read_link(format!("/proc/self/fd/{}", image.as_raw_fd())).unwrap_or_default();
    let device = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    ext4::mmp::Owner { node, device }
}

fn serve(args: WorkerArgs, fuse: OwnedFd, image: File, status: &Arc<File>) -> Result<(), WorkerError> {
    let cfg = &args.config;
    let fuse = File::from(fuse);
    // Asked before confinement (fstat is not in the worker's policy): a block device gets discards
    // (BLKDISCARD) only when the mount says `discard`, an image file always (FITRIM punches holes in it).
    let block_device = image.metadata().is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()));
    // Who this mount is, for the MMP block of an `mmp` image: asked before confinement too.
    let mmp_owner = mmp_owner(&image);
    // The rings of FUSE over io_uring are made before confinement, which forbids making them.
    let plan = match cfg.tuning.transport {
        TransportPolicy::Classic => RingPlan::Classic("-o transport=classic".into()),
        _ => match protocol::uring::prepare(&fuse, protocol::uring::DEFAULT_DEPTH) {
            Ok(rings) => RingPlan::Ready(rings),
            Err(why) => RingPlan::Classic(why.to_string()),
        },
    };
    match &args.sandbox {
        Some((id, policy_file)) => {
            let policy = Policy::compile(&sandbox::policy_text(policy_file.as_deref())?)?;
            // Descriptors 0-5 are in use; the worker opens none after this.
            for step in sandbox::confine(&policy, *id, 16)? {
                tracing::info!("sandbox: {step}");
                send(status, Status::Step(step));
            }
        }
        None => {
            tracing::warn!("running WITHOUT the sandbox (--no-sandbox): the image is parsed with full privileges");
            send(status, Status::Step("none: --no-sandbox, the image is parsed with full privileges".into()));
        }
    }
    let (dev, format_read_only) = open_device(image, cfg, block_device)?;
    let t = &cfg.tuning;
    let defaults = ext4::MountOptions::default();
    let opts = ext4::MountOptions {
        norecovery: cfg.norecovery,
        read_only: cfg.read_only || format_read_only.is_some(),
        cache_bytes: t.cache_size.map_or(defaults.cache_bytes, |c| usize::try_from(c).unwrap_or(usize::MAX)),
        mmp_owner,
        quota_limits: t.quota_limits,
        ..defaults
    };
    let fs = Arc::new(Filesystem::open(dev, &opts)?);
    fs.set_commit_interval(std::time::Duration::from_secs(u64::from(cfg.commit)));
    fs.set_discard(t.discard);
    if let Some(e) = t.errors {
        fs.set_error_behavior(e);
    }
    crate::server::spawn_committer(&fs);
    if let (false, Some(why)) = (cfg.read_only, format_read_only) {
        send(status, Status::ReadOnly(why.to_string()));
    } else if !cfg.read_only {
        if let Some(why) = fs.read_only_reason() {
            send(status, Status::ReadOnly(why.to_string()));
        }
        // Turning read-only later (errors=remount-ro, a journal abort) is told the same way, so that the
        // supervisor makes the mount read-only too, as the kernel's remount-ro shows in /proc/mounts.
        let later = status.clone();
        fs.on_read_only(Box::new(move |why| send(&later, Status::ReadOnly(why.to_string()))));
    }
    let server = Arc::new(Server::new(
        fs,
        ServerOptions {
            atime: cfg.atime,
            uid: cfg.uid,
            gid: cfg.gid,
            umask: t.umask,
            fakeroot: t.fakeroot,
            allow_root_owner: t.allow_root_owner,
            minixdf: t.minixdf,
            ..Default::default()
        },
    ));
    let threads =
        if t.single_thread { 1 } else { std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8) };
    let handler = Arc::new(Dispatcher::new(server.clone()));
    let session = Session::handshake(fuse, &*handler, plan, threads).map_err(WorkerError::Handshake)?;
    let choice = session.choice().clone();
    if t.transport == TransportPolicy::IoUring && choice.transport == Transport::Classic {
        return Err(WorkerError::NoIoUring(choice.why.clone()));
    }
    tracing::info!("FUSE transport: {choice}");
    send(status, Status::Step(format!("transport: {choice}")));
    server.set_invalidator(dispatch::invalidator(session.notifier()));
    send(status, Status::Ready);
    session.run(handler).map_err(WorkerError::Session)
}

/// The size of the image, file or block device: seek to its end (lseek is in the seccomp policy; the
/// stat family is not needed for anything else).
fn image_size(image: &File) -> Result<u64, WorkerError> {
    use std::io::Seek;
    let mut f = image;
    f.seek(std::io::SeekFrom::End(0)).map_err(WorkerError::SizeImage)
}
