//! The launcher: opens and locks the image, checks it, opens `/dev/fuse`, mounts with mount(2) (or has
//! fusermount3 do it), and hands the descriptors to a worker process it spawns and supervises
//! (`supervisor.rs`); the worker (`worker.rs`) confines itself and serves. The launcher never parses the
//! image. It returns once the mount is live (background) or stays with the worker (foreground).
//! `unmount` (`unmount.rs`) detaches a mount and waits until its server has exited.

pub mod fd_socket;
pub mod fusermount;
pub mod lock;
pub mod mountinfo;
pub mod options;
pub mod ready;
pub mod registry;
pub mod service;
pub mod status;
pub mod supervisor;
pub mod unmount;
pub mod wire;
pub mod worker;
pub mod worker_config;
pub mod worker_output;

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub use options::MountOptions;
pub use unmount::{UnmountError, unmount};

/// What `ext4box mount` was asked to do.
#[derive(Debug, Clone)]
pub struct MountRequest {
    pub image: PathBuf,
    pub mountpoint: PathBuf,
    pub options: MountOptions,
    pub foreground: bool,
    /// The worker's identity and seccomp policy file (built-in when `None`); `None` altogether disables
    /// the sandbox (`--no-sandbox`).
    pub sandbox: Option<(crate::sandbox::Identity, Option<PathBuf>)>,
    /// Hand the mounted descriptors to a worker listening on this socket (`ext4box worker --fd-socket`)
    /// instead of starting one.
    pub fd_socket: Option<PathBuf>,
    /// Print the way of mounting and every confinement step in force (`--explain`).
    pub explain: bool,
    /// Serve requests on one thread (fuse2fs's `-s`).
    pub single_thread: bool,
}

/// Why `ext4box mount` did not mount, one variant per step (the path or descriptor that was wrong, and
/// the cause); the message is the one error line the user sees.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(
        "mounting without root needs the ext4box mount service (sudo systemctl enable --now ext4box.socket), \
         fusermount3 installed setuid root (Debian/Ubuntu: apt install fuse3), or a user namespace that owns \
         its mount namespace (unshare -Urm)"
    )]
    NoWayToMount,
    /// The mount point names a descriptor (`/dev/fd/N`) that is not open.
    #[error("mount point {}: descriptor {fd} is not open ({})", .path.display(), errno_text(.error))]
    GivenNotOpen { path: PathBuf, fd: i32, error: std::io::Error },
    #[error("mount point {}: {}", .path.display(), errno_text(.error))]
    MountPoint { path: PathBuf, error: std::io::Error },
    #[error("mount point {} does not exist", .0.display())]
    NoMountPoint(PathBuf),
    #[error("mount point {} is not a directory", .0.display())]
    MountPointNotDirectory(PathBuf),
    #[error("notify_pipe={0}: descriptor {0} is the image or the mount point")]
    NotifyPipeTaken(i32),
    #[error(transparent)]
    Ready(#[from] ready::ReadyError),
    /// An image passed as `/proc/self/fd/N`: the descriptor is not open.
    #[error("cannot use image {}: descriptor {fd} is not open", .path.display())]
    InheritedNotOpen { path: PathBuf, fd: i32 },
    #[error("image {} is open read-only (descriptor {fd}): mount it with -o ro", .path.display())]
    InheritedReadOnly { path: PathBuf, fd: i32 },
    #[error("cannot use image {}: {}", .path.display(), errno_text(.error))]
    InheritedStat { path: PathBuf, error: std::io::Error },
    #[error("image {} is not a regular file or block device", .0.display())]
    NotAnImage(PathBuf),
    #[error("cannot open image {}: {}", .path.display(), errno_text(.error))]
    OpenImage { path: PathBuf, error: std::io::Error },
    #[error("cannot open image {} for writing: {} (mount it with -o ro)", .path.display(), errno_text(.error))]
    OpenImageForWriting { path: PathBuf, error: std::io::Error },
    #[error("{} is busy: it is mounted or in use", .0.display())]
    ImageBusy(PathBuf),
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    #[error(transparent)]
    Fusermount(#[from] fusermount::FusermountError),
    #[error("cannot open /dev/fuse: {}", errno_text(.0))]
    OpenFuse(std::io::Error),
    #[error(transparent)]
    Supervise(#[from] supervisor::SuperviseError),
    #[error("pipe: {}", errno_text(.0))]
    Pipe(std::io::Error),
    #[error("fork: {}", errno_text(.0))]
    Fork(std::io::Error),
    /// The background supervisor's `E` line.
    #[error("{0}")]
    Failed(String),
    #[error("the server exited before the mount was ready")]
    ServerExited,
}

/// Why mount(2) failed.
#[derive(Debug, thiserror::Error)]
pub enum MountCallError {
    #[error("path contains a NUL byte")]
    Nul,
    #[error("mounting needs root (or CAP_SYS_ADMIN)")]
    NeedsRoot,
    #[error("{0} is busy: it is mounted or in use")]
    Busy(String),
    #[error("mount of {} failed: {}", .target.display(), errno_text(.error))]
    Failed { target: PathBuf, error: std::io::Error },
}

/// How the mount itself is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountMode {
    /// mount(2) with CAP_SYS_ADMIN (root).
    Root,
    /// mount(2) as root of a user namespace that owns its mount namespace (`unshare -Urm`, rootless
    /// Podman): FUSE mounts are allowed there.
    UserNamespace,
    /// libfuse's setuid helper mounts and hands back the descriptor; it also unmounts.
    Fusermount(PathBuf),
    /// The caller mounted already and passed the /dev/fuse descriptor as the mount point (`/dev/fd/N`,
    /// as Apptainer and libfuse 3.3+ do): ext4box only serves it, and never unmounts or remounts.
    Given,
}

impl MountMode {
    /// The first way that works for this process, or why none does and what to install or configure.
    /// (The mount service, the first choice without root, is tried by the CLI before this.)
    pub fn choose() -> Result<MountMode, LaunchError> {
        if nix::unistd::geteuid().is_root() {
            return Ok(if crate::sandbox::privileges::in_user_namespace() {
                MountMode::UserNamespace
            } else {
                MountMode::Root
            });
        }
        match fusermount::find() {
            Some(helper) => Ok(MountMode::Fusermount(helper)),
            None => Err(LaunchError::NoWayToMount),
        }
    }

    /// Whether ext4box makes the mount with mount(2) (and so may remount it read-only).
    pub fn uses_mount_syscall(&self) -> bool {
        matches!(self, MountMode::Root | MountMode::UserNamespace)
    }

    pub fn describe(&self) -> String {
        match self {
            MountMode::Given => "mounted by the caller, who passed the /dev/fuse descriptor".into(),
            MountMode::Root => "mount(2) as root".into(),
            MountMode::UserNamespace => "mount(2) inside a user namespace that owns its mount namespace".into(),
            MountMode::Fusermount(h) => format!("{} (setuid helper) mounts and unmounts", h.display()),
        }
    }
}

pub(crate) fn errno_text(e: &std::io::Error) -> String {
    // std adds " (os error N)"; the message alone reads better in a one-line error.
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// The descriptor number in `/proc/self/fd/N` or `/dev/fd/N`.
fn inherited_fd(path: &Path) -> Option<i32> {
    let s = path.to_str()?;
    let n = s.strip_prefix("/proc/self/fd/").or_else(|| s.strip_prefix("/dev/fd/"))?;
    n.parse().ok().filter(|&n| n >= 0)
}

/// The caller's /dev/fuse descriptor when the mount point is `/dev/fd/N` (or `/proc/self/fd/N`) naming
/// one: the caller has mounted it and ext4box is to serve it. `None` for any other mount point (a
/// directory's descriptor is a mount point like any directory).
fn given_fuse(path: &Path) -> Result<Option<File>, LaunchError> {
    let Some(fd) = inherited_fd(path) else { return Ok(None) };
    // SAFETY: fstat into a zeroed struct on a descriptor number; a bad number fails with EBADF.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        let error = std::io::Error::last_os_error();
        return Err(LaunchError::GivenNotOpen { path: path.to_path_buf(), fd, error });
    }
    const FUSE_DEVICE: (u32, u32) = (10, 229);
    if st.st_mode & libc::S_IFMT != libc::S_IFCHR || (libc::major(st.st_rdev), libc::minor(st.st_rdev)) != FUSE_DEVICE {
        return Ok(None);
    }
    // SAFETY: F_DUPFD_CLOEXEC on an open descriptor.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if dup < 0 {
        return Err(LaunchError::MountPoint { path: path.to_path_buf(), error: std::io::Error::last_os_error() });
    }
    // SAFETY: fcntl returned a new descriptor that nothing else owns.
    Ok(Some(unsafe { File::from_raw_fd(dup) }))
}

/// Whether `mountpoint` is a /dev/fuse descriptor the caller mounted (see `given_fuse`).
pub fn names_mounted_fuse(mountpoint: &Path) -> bool {
    matches!(given_fuse(mountpoint), Ok(Some(_)))
}

/// An image the caller opened and passed as a descriptor (`/proc/self/fd/N`, as runtimes that open the
/// image themselves pass it): used as it is, not opened again by name (its name may be out of reach).
fn open_inherited(fd: i32, path: &Path, write: bool) -> Result<File, LaunchError> {
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor number; a bad number fails with EBADF.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if dup < 0 {
        return Err(LaunchError::InheritedNotOpen { path: path.to_path_buf(), fd });
    }
    // SAFETY: fcntl returned a new descriptor that nothing else owns.
    let file = unsafe { File::from_raw_fd(dup) };
    // SAFETY: F_GETFL on a descriptor we own.
    let mode = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) } & libc::O_ACCMODE;
    if write && mode == libc::O_RDONLY {
        return Err(LaunchError::InheritedReadOnly { path: path.to_path_buf(), fd });
    }
    let meta = file.metadata().map_err(|error| LaunchError::InheritedStat { path: path.to_path_buf(), error })?;
    let ft = meta.file_type();
    if !ft.is_file() && !ft.is_block_device() {
        return Err(LaunchError::NotAnImage(path.to_path_buf()));
    }
    Ok(file)
}

/// Opens the image (read-only, or read-write) and takes its lock (see `lock`), held until the server
/// exits.
fn open_image(path: &Path, o: &MountOptions) -> Result<File, LaunchError> {
    let write = !o.read_only;
    let shown = path.display();
    let access = lock::Access::for_mount(o.read_only);
    if let Some(fd) = inherited_fd(path) {
        let file = open_inherited(fd, path, write)?;
        return Ok(lock::lock_image(file, &shown.to_string(), access, o.nolock)?);
    }
    let open_error = |error: std::io::Error| LaunchError::OpenImage { path: path.to_path_buf(), error };
    let meta = std::fs::metadata(path).map_err(open_error)?;
    let ft = meta.file_type();
    let mut oo = OpenOptions::new();
    oo.read(true).write(write).custom_flags(libc::O_CLOEXEC);
    if ft.is_block_device() {
        // An exclusive open fails if the kernel (or anyone) has the device mounted or claimed: a clear
        // error now. It is let go at once: the fuseblk mount claims the device itself, for its lifetime.
        OpenOptions::new().read(true).custom_flags(libc::O_CLOEXEC | libc::O_EXCL).open(path).map_err(|e| {
            match e.raw_os_error() {
                Some(libc::EBUSY) => LaunchError::ImageBusy(path.to_path_buf()),
                _ => open_error(e),
            }
        })?;
    } else if !ft.is_file() {
        return Err(LaunchError::NotAnImage(path.to_path_buf()));
    }
    let file = oo.open(path).map_err(|e| match e.raw_os_error() {
        Some(libc::EBUSY) => LaunchError::ImageBusy(path.to_path_buf()),
        Some(libc::EACCES) | Some(libc::EROFS) if write => {
            LaunchError::OpenImageForWriting { path: path.to_path_buf(), error: e }
        }
        _ => open_error(e),
    })?;
    Ok(lock::lock_image(file, &shown.to_string(), access, o.nolock)?)
}

fn check_mountpoint(path: &Path) -> Result<PathBuf, LaunchError> {
    let other = |error| LaunchError::MountPoint { path: path.to_path_buf(), error };
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => LaunchError::NoMountPoint(path.to_path_buf()),
        _ => other(e),
    })?;
    if !meta.is_dir() {
        return Err(LaunchError::MountPointNotDirectory(path.to_path_buf()));
    }
    std::fs::canonicalize(path).map_err(other)
}

pub(crate) fn mount_syscall(
    source: &str,
    target: &Path,
    fuse_fd: i32,
    opts: &MountOptions,
    block_device: bool,
    (uid, gid): (u32, u32),
) -> Result<(), MountCallError> {
    let mut data = format!("fd={fuse_fd},rootmode=40000,user_id={uid},group_id={gid}");
    // allow_root: the kernel lets everyone in and the server turns away all but root and the owner.
    if opts.allow_other || opts.allow_root {
        data.push_str(",allow_other");
    }
    if opts.default_permissions {
        data.push_str(",default_permissions");
    }
    let c = |s: &[u8]| CString::new(s).map_err(|_| MountCallError::Nul);
    // `fuse.ext4box`, or `fuseblk.ext4box` for a block device (the kernel then holds the device itself,
    // exclusively, and waits for the server at unmount); `subtype=` replaces the `ext4box`.
    let fstype = opts.fstype(block_device);
    let (src, tgt, fstype, data) =
        (c(source.as_bytes())?, c(target.as_os_str().as_bytes())?, c(fstype.as_bytes())?, c(data.as_bytes())?);
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), fstype.as_ptr(), opts.ms_flags(), data.as_ptr().cast()) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EPERM) => MountCallError::NeedsRoot,
            Some(libc::EBUSY) if block_device => MountCallError::Busy(source.to_string()),
            _ => MountCallError::Failed { target: target.to_path_buf(), error: e },
        });
    }
    Ok(())
}

pub(crate) fn detach(target: &Path) {
    if let Ok(t) = CString::new(target.as_os_str().as_bytes()) {
        let _ = nix::mount::umount2(t.as_c_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Mounts `req.image` on `req.mountpoint` and serves it from a confined worker. Returns once the mount is
/// live (background), or when it is unmounted (`foreground`). The launcher itself never reads the image:
/// the worker parses it, after confining itself, and reports back.
pub fn mount(req: &MountRequest) -> Result<(), LaunchError> {
    let given = given_fuse(&req.mountpoint)?;
    let mode = if given.is_some() { MountMode::Given } else { MountMode::choose()? };
    if let Some(fd) = req.options.notify_pipe {
        if [inherited_fd(&req.image), inherited_fd(&req.mountpoint)].contains(&Some(fd)) {
            return Err(LaunchError::NotifyPipeTaken(fd));
        }
    }
    // Taken first: on any failure below it is closed unwritten, which tells the caller.
    let readiness = ready::Readiness::take(req.options.notify_pipe)?;
    let image = open_image(&req.image, &req.options)?;
    // Held from here to the server's exit: the supervisor removes it then (or on any failure before).
    let lockfile = match &req.options.lockfile {
        Some(path) => Some(lock::Lockfile::create(path)?),
        None => None,
    };
    // A given /dev/fuse descriptor is named as the caller named it (in logs and `ps`); it has no path.
    let target = if given.is_some() { req.mountpoint.clone() } else { check_mountpoint(&req.mountpoint)? };
    // A policy that does not parse stops the mount here, before anything is mounted. (A worker behind
    // --fd-socket confines itself with its own.)
    if req.fd_socket.is_some() {
    } else if let Some((_, file)) = &req.sandbox {
        crate::sandbox::Policy::compile(&crate::sandbox::policy_text(file.as_deref())?)?;
    } else {
        eprintln!("ext4box: WARNING: --no-sandbox: the image will be parsed by a process with full privileges");
    }
    // Only root can have the kernel claim a block device (fuseblk); otherwise it is served as a plain
    // FUSE mount.
    let block_device =
        matches!(mode, MountMode::Root) && std::fs::metadata(&req.image).is_ok_and(|m| m.file_type().is_block_device());
    let canonical = std::fs::canonicalize(&req.image).unwrap_or(req.image.clone()).to_string_lossy().into_owned();
    // A fuseblk mount's source must be the device (the kernel opens it); fsname= names file images only.
    let source = match &req.options.fsname {
        Some(n) if !block_device => n.clone(),
        _ => canonical,
    };
    if req.explain {
        println!("mount: {}", mode.describe());
    }
    let fuse = match (&mode, given) {
        (MountMode::Fusermount(helper), _) => {
            fusermount::mount(helper, &target, &req.options.fusermount_options(&source))?
        }
        (_, Some(fuse)) => fuse,
        _ => OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open("/dev/fuse")
            .map_err(LaunchError::OpenFuse)?,
    };
    let o = &req.options;
    let prepared = supervisor::Prepared {
        image,
        fuse,
        target: target.clone(),
        source,
        options: o.clone(),
        worker: worker::WorkerArgs {
            config: o.worker_config(nix::unistd::getuid().as_raw(), req.single_thread),
            sandbox: req.sandbox.clone(),
        },
        image_shown: req.image.display().to_string(),
        fd_socket: req.fd_socket.clone(),
        block_device,
        owner: (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw()),
        mount_at: None,
        mode,
        explain: req.explain,
        lockfile,
        ready: None,
    };
    if req.foreground {
        return Ok(supervisor::supervise(supervisor::Prepared { ready: Some(readiness), ..prepared }, None)?);
    }
    let (ready_r, ready_w) = pipe().map_err(LaunchError::Pipe)?;
    // SAFETY: the process has a single thread here, so fork is safe.
    match unsafe { libc::fork() } {
        -1 => Err(LaunchError::Fork(std::io::Error::last_os_error())),
        0 => {
            drop(ready_r);
            // The caller's waiting process tells whoever asked; this copy must not keep their pipe open.
            drop(readiness);
            if let Some(lock) = &prepared.lockfile {
                lock.claim();
            }
            daemonize();
            let code = i32::from(supervisor::supervise(prepared, Some(ready_w)).is_err());
            std::process::exit(code)
        }
        _child => {
            drop(ready_w);
            // The lock file is the background supervisor's to remove, when its worker has exited.
            if let Some(lock) = prepared.lockfile {
                std::mem::forget(lock);
            }
            wait_ready(ready_r, req.explain)?;
            readiness.ready();
            Ok(())
        }
    }
}

/// The caller's side of the start-up: warnings are printed as they come, `R` means the mount is live,
/// `E` is the error that stopped it.
fn wait_ready(ready: File, explain: bool) -> Result<(), LaunchError> {
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(ready).lines().map_while(Result::ok);
    while let Some(line) = lines.next() {
        match status::Status::parse(&line) {
            Some(status::Status::Ready) => return Ok(()),
            Some(status::Status::Step(step)) if explain => println!("sandbox: {step}"),
            Some(status::Status::Warning(w)) => eprintln!("ext4box: {w}"),
            Some(status::Status::ReadOnly(why)) => eprintln!("ext4box: ro {why}"),
            Some(status::Status::Error(e)) => {
                // The supervisor exits once it has said why (its worker already has): wait for its end of
                // the pipe to close, so that nothing of a failed mount outlives the command.
                lines.by_ref().for_each(drop);
                return Err(LaunchError::Failed(e));
            }
            _ => {}
        }
    }
    Err(LaunchError::ServerExited)
}

pub(crate) fn pipe() -> std::io::Result<(File, File)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((File::from(r), File::from(w)))
}

/// Detaches the background server from the terminal and the caller's working directory.
fn daemonize() {
    // SAFETY: plain syscalls on our own process; /dev/null is opened and dup'ed over stdio.
    unsafe {
        libc::setsid();
        let _ = libc::chdir(c"/".as_ptr());
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::dup2(null, 2);
            if null > 2 {
                libc::close(null);
            }
        }
    }
}
