//! The launcher's privileged side after the checks: mount, start the worker with only its descriptors,
//! relay its log (read as `worker_output.rs` says), and watch it. When the worker dies of anything but a
//! clean unmount (a crash, a seccomp kill, the OOM killer), the mount is detached so that no dead mount
//! point is left, and the cause is reported.

use std::ffi::CString;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::status::Status;
use super::worker::{FUSE_FD, IMAGE_FD, STATUS_FD, WorkerArgs};
use super::worker_output::{WorkerLines, WorkerLog, printable};
use super::{MountOptions, detach, errno_text, mountinfo, registry};

/// Everything the supervisor needs, opened and checked by the launcher.
pub struct Prepared {
    pub image: File,
    pub fuse: File,
    pub target: std::path::PathBuf,
    pub source: String,
    pub options: MountOptions,
    pub worker: WorkerArgs,
    pub image_shown: String,
    /// Hand the descriptors to a worker listening on this socket instead of starting one.
    pub fd_socket: Option<std::path::PathBuf>,
    /// The source is a block device: mounted as fuseblk.
    pub block_device: bool,
    /// The user the mount is for (the kernel lets only them in, without allow_other), and their group.
    pub owner: (u32, u32),
    /// Where to mount when it differs from `target` (the mount service mounts on `/proc/self/fd/N`, the
    /// very directory it checked, rather than on a path the caller could swap).
    pub mount_at: Option<std::path::PathBuf>,
    /// How the mount is made (with fusermount3 it is already made, and the helper also unmounts).
    pub mode: super::MountMode,
    /// Forward the worker's confinement steps to the caller (`--explain`).
    pub explain: bool,
    /// `lockfile=`: removed when this is dropped, after the worker has exited.
    pub lockfile: Option<super::lock::Lockfile>,
    /// Whom to tell once the mount is live (in the foreground; in the background the launcher's
    /// waiting process does).
    pub ready: Option<super::ready::Readiness>,
}

/// What ended a supervised mount, one variant per step; its message is also the `E` line sent to
/// whoever waits for the mount.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error(transparent)]
    Mount(#[from] super::MountCallError),
    #[error("pipe: {}", errno_text(.0))]
    Pipe(std::io::Error),
    #[error("cannot find the ext4box binary: {0}")]
    NoBinary(#[source] std::io::Error),
    #[error("argument contains NUL")]
    ArgumentNul,
    #[error("path contains NUL")]
    PathNul,
    #[error("fork: {}", errno_text(.0))]
    Fork(std::io::Error),
    #[error(transparent)]
    Handoff(#[from] super::fd_socket::SocketError),
    /// The worker's `E` line (text from another process), with the image it is about.
    #[error("{image}: {said}")]
    Worker { image: String, said: String },
    #[error("the worker exited before the mount was ready ({0})")]
    WorkerExited(String),
    #[error("the worker serving {} died ({cause}); the mount was detached", .target.display())]
    WorkerDied { target: std::path::PathBuf, cause: String },
}

/// Takes the mount at `target` away (the worker failed or died), the way it was made.
fn take_away(mode: &super::MountMode, target: &Path) {
    match mode {
        super::MountMode::Fusermount(helper) => {
            if let Err(e) = super::fusermount::unmount(helper, target, true) {
                tracing::error!("{e}");
            }
        }
        // The caller's mount: the caller takes it away (it sees the connection end).
        super::MountMode::Given => {}
        super::MountMode::Root | super::MountMode::UserNamespace => detach(target),
    }
}

/// The worker being supervised: a child process, or a peer on the other end of a handoff socket.
enum Worker {
    Local(libc::pid_t),
    Remote,
}

impl Worker {
    /// Waits until the worker is gone; returns whether it ended cleanly (the filesystem was unmounted),
    /// and how it ended.
    fn wait(self, rest: &mut WorkerLines<File>, target: &Path) -> (bool, String) {
        match self {
            Worker::Local(pid) => wait_worker(pid),
            Worker::Remote => {
                // The remote worker closes the connection when it exits.
                for _ in rest.by_ref() {}
                if mountinfo::find(target).is_some() {
                    (false, "the remote worker closed its connection while still mounted".into())
                } else {
                    (true, "unmounted".into())
                }
            }
        }
    }
}

/// Reports to whoever waits for the mount (the launcher's foreground process): status lines as the
/// worker's, plus `E` for the launcher's own errors.
pub type Reporter = Option<File>;

fn report(r: &mut Reporter, status: &Status) {
    match r {
        Some(f) => {
            let _ = f.write_all(format!("{}\n", printable(&status.to_string())).as_bytes());
        }
        None => {
            // Foreground: the supervisor is the process the user runs.
            match status {
                Status::Warning(w) => eprintln!("ext4box: {}", printable(w)),
                Status::ReadOnly(why) => eprintln!("ext4box: {}", printable(&format!("ro {why}"))),
                Status::Step(step) => println!("sandbox: {}", printable(step)),
                Status::Ready | Status::Error(_) => {}
            }
        }
    }
}

/// Mounts, runs the worker, and waits for it. Returns when the worker has exited.
pub fn supervise(mut p: Prepared, mut reporter: Reporter) -> Result<(), SuperviseError> {
    let at = p.mount_at.as_deref().unwrap_or(&p.target);
    tracing::info!(mountpoint = %p.target.display(), "mounting: {}", p.mode.describe());
    if p.mode.uses_mount_syscall() {
        super::mount_syscall(&p.source, at, p.fuse.as_raw_fd(), &p.options, p.block_device, p.owner)?;
    }
    let log = WorkerLog::new(p.image_shown.clone(), p.target.display().to_string());
    let (status_r, worker, relayed) = match &p.fd_socket {
        None => {
            let (status_r, status_w) = super::pipe().map_err(SuperviseError::Pipe)?;
            let (log_r, log_w) = super::pipe().map_err(SuperviseError::Pipe)?;
            let pid = match spawn_worker(&p, &status_w, &log_w) {
                Ok(pid) => pid,
                Err(e) => {
                    take_away(&p.mode, &p.target);
                    return Err(e);
                }
            };
            let relay = log.clone();
            let (done, relayed) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                relay.relay(log_r);
                let _ = done.send(());
            });
            (status_r, Worker::Local(pid), Some(relayed))
        }
        Some(path) => match hand_off(&p, path) {
            Ok(conn) => (conn, Worker::Remote, None),
            Err(e) => {
                take_away(&p.mode, &p.target);
                return Err(e);
            }
        },
    };
    // The supervisor keeps no copy of /dev/fuse or the image: the worker holds them (and the image lock).
    drop(p.fuse);
    drop(p.image);

    let mut ready = false;
    let mut failure = None;
    let mut lines = WorkerLines::new(status_r);
    for line in lines.by_ref() {
        let Some(status) = Status::parse(&line) else { continue };
        match status {
            Status::Step(_) => {
                if p.explain {
                    report(&mut reporter, &status);
                }
            }
            Status::ReadOnly(why) => {
                // (fusermount3 cannot remount, nor can a mount the caller made: the server answers EROFS
                // all the same.) (Nothing can be open on it yet, so the remount cannot be busy.)
                if p.mode.uses_mount_syscall() {
                    remount_read_only(&p.target);
                }
                report(&mut reporter, &Status::Warning(format!("{}: mounting read-only: {why}", p.image_shown)));
            }
            Status::Warning(_) => report(&mut reporter, &status),
            Status::Ready => {
                ready = true;
                if let Some(m) = mountinfo::find(&p.target) {
                    if let Err(e) = registry::record(&m.dev, std::process::id(), p.owner.0) {
                        tracing::warn!(error = %e, "cannot record the mount; unmount will not wait for it");
                    }
                }
                report(&mut reporter, &Status::Ready);
                if let Some(r) = p.ready.take() {
                    r.ready();
                }
                break;
            }
            Status::Error(msg) => {
                failure = Some(SuperviseError::Worker { image: p.image_shown.clone(), said: msg });
                break;
            }
        }
    }
    log.open(ready);
    if !ready {
        take_away(&p.mode, &p.target);
        let cause = worker.wait(&mut lines, &p.target);
        last_log_lines(relayed);
        let e = failure.unwrap_or(SuperviseError::WorkerExited(cause.1));
        report(&mut reporter, &Status::Error(e.to_string()));
        return Err(e);
    }
    let dev = mountinfo::find(&p.target).map(|m| m.dev);
    let can_remount = p.mode.uses_mount_syscall();
    let (clean, cause) = match worker {
        Worker::Local(pid) => {
            let target = p.target.clone();
            std::thread::spawn(move || watch_status(lines, can_remount, &target));
            wait_worker(pid)
        }
        Worker::Remote => {
            watch_status(lines.by_ref(), can_remount, &p.target);
            worker.wait(&mut lines, &p.target)
        }
    };
    last_log_lines(relayed);
    if let Some(dev) = &dev {
        registry::remove(dev, std::process::id());
    }
    if clean {
        return Ok(());
    }
    // The worker died: take the mount away rather than leave programs hanging on a dead connection.
    take_away(&p.mode, &p.target);
    let e = SuperviseError::WorkerDied { target: p.target.clone(), cause };
    tracing::error!("{e}");
    Err(e)
}

/// Waits (a little) for the relay of the worker's log to reach the end of its pipe, which the worker's
/// exit closes: the last lines, often the ones that say why it stopped or turned read-only, would
/// otherwise be lost when the supervisor exits first.
fn last_log_lines(relayed: Option<std::sync::mpsc::Receiver<()>>) {
    if let Some(r) = relayed {
        let _ = r.recv_timeout(std::time::Duration::from_secs(5));
    }
}

/// The worker's status lines once the mount is ready: a filesystem that turned read-only (errors=remount-ro,
/// a journal abort) says `W ro <why>`, and the mount is made read-only too, as the kernel's remount-ro
/// shows in /proc/mounts (not through fusermount3, which cannot remount: the server answers EROFS all the
/// same). Returns when the worker closes its end.
fn watch_status(lines: impl Iterator<Item = String>, can_remount: bool, target: &Path) {
    for line in lines {
        if let Some(Status::ReadOnly(why)) = Status::parse(&line) {
            tracing::info!(mountpoint = %target.display(), "the filesystem is read-only now: {why}");
            if can_remount && !remount_read_only(target) {
                // EBUSY while a file is open for writing on the mount (the kernel's own remount-ro sets
                // the superblock's flag directly; a remount must wait): try again until it works or
                // the mount is gone.
                let target = target.to_path_buf();
                std::thread::spawn(move || {
                    while mountinfo::find(&target).is_some() && !remount_read_only(&target) {
                        std::thread::sleep(std::time::Duration::from_millis(500));
                    }
                });
            }
        }
    }
}

/// Connects to a worker listening on `path` and hands it the descriptors; returns the connection, on
/// which the worker answers with status lines.
fn hand_off(p: &Prepared, path: &Path) -> Result<File, SuperviseError> {
    use super::fd_socket;
    let conn = fd_socket::connect(path)?;
    let h = fd_socket::Handoff(p.worker.config.clone());
    fd_socket::send(&conn, &h.encode(), &[p.fuse.as_raw_fd(), p.image.as_raw_fd()])?;
    Ok(File::from(conn))
}

/// Forks and execs `ext4box worker` with descriptors 3, 4, 5 (fuse, image, status) and stderr on the log
/// pipe; nothing else is inherited (every other descriptor is close-on-exec).
fn spawn_worker(p: &Prepared, status_w: &File, log_w: &File) -> Result<libc::pid_t, SuperviseError> {
    let exe = std::env::current_exe().map_err(SuperviseError::NoBinary)?;
    let mut argv: Vec<String> = vec![
        exe.display().to_string(),
        "worker".into(),
        // Names the mount in `ps` and in the worker's log; the worker does nothing else with it.
        "--mountpoint".into(),
        p.target.display().to_string(),
        "--config".into(),
        p.worker.config.encode(),
    ];
    match &p.worker.sandbox {
        Some((id, policy)) => {
            argv.extend(["--user".into(), format!("{}:{}", id.uid, id.gid)]);
            if let Some(file) = policy {
                argv.extend(["--seccomp-policy".into(), file.display().to_string()]);
            }
        }
        None => argv.push("--no-sandbox".into()),
    }
    let cargs: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| SuperviseError::ArgumentNul)?;
    let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let exe_c = CString::new(exe.as_os_str().as_bytes()).map_err(|_| SuperviseError::PathNul)?;
    let env_c = [c"PATH=/usr/sbin:/usr/bin:/sbin:/bin".as_ptr(), std::ptr::null()];
    let fds = [p.fuse.as_raw_fd(), p.image.as_raw_fd(), status_w.as_raw_fd(), log_w.as_raw_fd()];
    // SAFETY: between fork and exec the child calls only async-signal-safe functions (dup, dup2, fcntl,
    // open, execve, _exit) on values prepared before the fork.
    match unsafe { libc::fork() } {
        -1 => Err(SuperviseError::Fork(std::io::Error::last_os_error())),
        0 => unsafe {
            // Move the four descriptors out of the way first (they may already sit on 3..5), then into place.
            let tmp: Vec<i32> = fds.iter().map(|&fd| libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10)).collect();
            if tmp.iter().any(|&t| t < 0) {
                libc::_exit(127);
            }
            for (fd, target) in [(tmp[0], FUSE_FD), (tmp[1], IMAGE_FD), (tmp[2], STATUS_FD), (tmp[3], 2)] {
                // dup2 clears close-on-exec on the new descriptor.
                if libc::dup2(fd, target) < 0 {
                    libc::_exit(127);
                }
            }
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
            if null >= 0 {
                libc::dup2(null, 0);
                libc::dup2(null, 1);
            }
            // Nothing else crosses over, whatever the caller left open without close-on-exec.
            libc::syscall(libc::SYS_close_range, 6u32, u32::MAX, 0u32);
            libc::execve(exe_c.as_ptr(), ptrs.as_ptr(), env_c.as_ptr());
            libc::_exit(127)
        },
        pid => Ok(pid),
    }
}

/// Waits for the worker; returns whether it exited cleanly, and how it ended.
fn wait_worker(pid: libc::pid_t) -> (bool, String) {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    if rc < 0 {
        return (false, format!("waitpid: {}", std::io::Error::last_os_error()));
    }
    if libc::WIFEXITED(status) {
        let code = libc::WEXITSTATUS(status);
        return (code == 0, format!("exit status {code}"));
    }
    let sig = libc::WTERMSIG(status);
    let mut cause = format!("killed by signal {sig} ({})", signal_name(sig));
    if sig == libc::SIGSYS {
        match seccomp_victim_syscall(pid) {
            Some(nr) => cause.push_str(&format!(": the seccomp policy does not allow syscall {nr}")),
            None => cause.push_str(": a system call outside the seccomp policy"),
        }
    }
    (false, cause)
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGSYS => "SIGSYS",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

/// The syscall number of a seccomp kill, from the kernel's audit record (`type=1326 ... pid=P ...
/// syscall=N`) in the kernel log, when the kernel logs it.
fn seccomp_victim_syscall(pid: libc::pid_t) -> Option<u64> {
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open("/dev/kmsg").ok()?;
    let mut found = None;
    let needle = format!("pid={pid} ");
    let mut reader = BufReader::new(f);
    let mut line = String::new();
    // /dev/kmsg returns one record per read and EAGAIN at the end.
    while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
        if line.contains("type=1326") && line.contains(&needle) {
            found = line.split_whitespace().find_map(|w| w.strip_prefix("syscall=")?.parse().ok());
        }
        line.clear();
    }
    found
}

use std::os::unix::fs::OpenOptionsExt;

/// Makes the mount read-only (per mount point: the worker found a feature it cannot write, or turned the
/// filesystem read-only); false when the kernel refused (EBUSY while a file is open for writing).
fn remount_read_only(target: &Path) -> bool {
    use nix::mount::MsFlags;
    let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>).is_ok()
}
