//! `ext4box unmount`: detach an ext4box mount (syncfs first if writable; umount2, or fusermount3 -u
//! without root) and wait until its server, found in the registry, has exited, so that the image is
//! final when it returns.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{errno_text, fusermount, mountinfo, registry};

/// The absolute form of `p` with its parent resolved (the last component is not touched, since it may
/// be a dead FUSE mount).
fn absolute_mountpoint(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() { p.to_path_buf() } else { std::env::current_dir().unwrap_or_default().join(p) };
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(parent).unwrap_or(parent.to_path_buf()).join(name),
        _ => abs,
    }
}

/// Why an unmount did not happen or did not finish, one variant per step.
#[derive(Debug, thiserror::Error)]
pub enum UnmountError {
    #[error("{0} is not mounted")]
    NotMounted(String),
    #[error("{shown} is not an ext4box mount (it is {fstype})")]
    NotOurs { shown: String, fstype: String },
    #[error("unmounting {0} without root needs fusermount3 (Debian/Ubuntu: apt install fuse3)")]
    NoFusermount(String),
    #[error(transparent)]
    Fusermount(#[from] fusermount::FusermountError),
    #[error("path contains a NUL byte")]
    Nul,
    #[error("{0} is busy: a process still uses it")]
    Busy(String),
    #[error("unmounting {0} needs root")]
    NeedsRoot(String),
    #[error("unmount of {shown} failed: {}", errno_text(.error))]
    Failed { shown: String, error: std::io::Error },
    #[error("{shown} is unmounted, but its server (pid {pid}) has not exited")]
    ServerLingers { shown: String, pid: u32 },
}

/// Unmounts an ext4box mount and waits until its server has exited, so that the image is final.
pub fn unmount(mountpoint: &Path) -> Result<(), UnmountError> {
    let target = absolute_mountpoint(mountpoint);
    let shown = mountpoint.display().to_string();
    let entry = mountinfo::find(&target).ok_or_else(|| UnmountError::NotMounted(shown.clone()))?;
    // fuse.ext4box, fuseblk.ext4box, or another subtype= that a running ext4box recorded.
    let ours = entry.fstype.starts_with("fuse")
        && (entry.fstype.ends_with(".ext4box") || registry::lookup(&entry.dev).is_some());
    if !ours {
        return Err(UnmountError::NotOurs { shown, fstype: entry.fstype });
    }
    let pid = registry::lookup(&entry.dev);
    let pidfd = pid.and_then(pidfd_open);
    tracing::debug!(?pid, pidfd = pidfd.is_some(), dev = %entry.dev, "the server to wait for");
    if !entry.read_only() {
        sync_mount(&target, Duration::from_secs(10));
    }
    if !nix::unistd::geteuid().is_root() {
        let helper = fusermount::find().ok_or_else(|| UnmountError::NoFusermount(shown.clone()))?;
        fusermount::unmount(&helper, &target, false)?;
        return wait_for_server(&entry.dev, pid, pidfd, &shown);
    }
    let t = CString::new(target.as_os_str().as_bytes()).map_err(|_| UnmountError::Nul)?;
    // A mount can be busy for a moment after its last user is done (a forked child that has not yet run
    // exec still holds copies of its parent's descriptors): retry briefly before calling it busy.
    let deadline = Instant::now() + Duration::from_secs(3);
    while let Err(errno) = nix::mount::umount2(t.as_c_str(), nix::mount::MntFlags::empty()) {
        if errno == nix::Error::EBUSY && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        return Err(match errno {
            nix::Error::EBUSY => UnmountError::Busy(shown),
            nix::Error::EPERM => UnmountError::NeedsRoot(shown),
            _ => UnmountError::Failed { shown, error: errno.into() },
        });
    }
    wait_for_server(&entry.dev, pid, pidfd, &shown)
}

/// Waits (bounded) for the server of an unmounted filesystem to exit, then forgets its record.
fn wait_for_server(dev: &str, pid: Option<u32>, pidfd: Option<OwnedFd>, shown: &str) -> Result<(), UnmountError> {
    if let Some(fd) = pidfd {
        if !wait_exit(&fd, Duration::from_secs(120)) {
            return Err(UnmountError::ServerLingers { shown: shown.into(), pid: pid.unwrap_or(0) });
        }
    }
    if let Some(pid) = pid {
        registry::remove(dev, pid);
    }
    Ok(())
}

/// syncfs(2) on a writable mount before it goes: the kernel aborts a FUSE connection before it would
/// write back what it still caches (dirty pages of mappings, file times kept under the writeback cache),
/// so this is the last moment those can reach the server. A hung server must not hang the unmount: after
/// `limit` the unmount goes ahead without it.
fn sync_mount(target: &Path, limit: Duration) {
    let target = target.to_path_buf();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok(dir) = OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC).open(&target) {
            let _ = nix::unistd::syncfs(&dir);
        }
        let _ = done_tx.send(());
    });
    if done_rx.recv_timeout(limit).is_err() {
        tracing::warn!("the server did not answer syncfs; unmounting without it");
    }
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a non-negative return is a descriptor we now own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits until the process behind `pidfd` has exited (the descriptor becomes readable).
fn wait_exit(pidfd: &OwnedFd, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let mut fds = [PollFd::new(std::os::fd::AsFd::as_fd(pidfd), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(1000u16)).is_ok_and(|n| n > 0) {
            return true;
        }
    }
    false
}
