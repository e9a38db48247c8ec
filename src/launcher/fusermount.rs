//! Mounting without root through `fusermount3`, libfuse's setuid helper (Debian's `fuse3` package), the
//! way libfuse does it: a Unix socket pair, one end passed to `fusermount3` in `_FUSE_COMMFD`; the helper
//! opens `/dev/fuse`, mounts it on the mount point with the options it allows an ordinary user
//! (always `nosuid,nodev`), and sends the descriptor back over the socket (SCM_RIGHTS). Unmounting is
//! `fusermount3 -u`, which checks that the caller owns the mount.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::errno_text;

/// The helper's name on the search path.
pub const PROGRAM: &str = "fusermount3";

/// Where `fusermount3` is, if it is installed and setuid root (without that it cannot mount).
pub fn find() -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path).map(|d| d.join(PROGRAM)).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| {
            m.is_file() && m.permissions().mode() & 0o4000 != 0 && std::os::unix::fs::MetadataExt::uid(&m) == 0
        })
    })
}

/// What can go wrong mounting or unmounting through fusermount3, one variant per step.
#[derive(Debug, thiserror::Error)]
pub enum FusermountError {
    #[error("{call}: {}", std::io::Error::from(*.errno))]
    Call { call: &'static str, errno: nix::Error },
    #[error("cannot run {}: {}", .helper.display(), errno_text(.error))]
    Spawn { helper: std::path::PathBuf, error: std::io::Error },
    #[error("{PROGRAM}: {}", errno_text(.0))]
    Wait(std::io::Error),
    #[error("{PROGRAM} sent no descriptor")]
    NoDescriptor,
    /// The helper failed; `said` is its last line on stderr, if any.
    #[error("{PROGRAM} could not mount {}: {}", .target.display(), .said.as_deref().unwrap_or("(it said nothing)"))]
    MountRefused { target: std::path::PathBuf, said: Option<String> },
    #[error("{} is busy: a process still uses it", .0.display())]
    Busy(std::path::PathBuf),
    #[error("{PROGRAM} -u {}: {}", .target.display(), .said)]
    UnmountRefused { target: std::path::PathBuf, said: String },
}

/// The helper's last line on stderr, without its program-name prefix.
fn last_said(stderr: &[u8]) -> Option<String> {
    let said = String::from_utf8_lossy(stderr);
    let line = said.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    Some(line.trim_start_matches("fusermount3: ").to_string())
}

/// Mounts a FUSE filesystem on `target` with `options` (fusermount3's `-o` syntax) and returns the FUSE
/// descriptor the helper opened.
pub fn mount(helper: &Path, target: &Path, options: &str) -> Result<File, FusermountError> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)
        .map_err(|errno| FusermountError::Call { call: "socketpair", errno })?;
    // The helper's end must survive exec: clear its close-on-exec flag for the spawn only.
    fcntl(&theirs, FcntlArg::F_SETFD(FdFlag::empty()))
        .map_err(|errno| FusermountError::Call { call: "fcntl", errno })?;
    let child = Command::new(helper)
        .arg("-o")
        .arg(options)
        .arg("--")
        .arg(target)
        .env("_FUSE_COMMFD", theirs.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| FusermountError::Spawn { helper: helper.to_path_buf(), error })?;
    drop(theirs);
    let received = super::fd_socket::receive(&ours, 1);
    let out = child.wait_with_output().map_err(FusermountError::Wait)?;
    match received {
        Ok((_, mut fds)) if out.status.success() => fds.pop().map(File::from).ok_or(FusermountError::NoDescriptor),
        _ => Err(FusermountError::MountRefused {
            target: target.to_path_buf(),
            said: last_said(&out.stderr).or_else(|| Some(format!("({})", out.status))),
        }),
    }
}

/// Unmounts `target` with `fusermount3 -u` (`-z`: lazily, for a mount whose server died).
pub fn unmount(helper: &Path, target: &Path, lazy: bool) -> Result<(), FusermountError> {
    let mut cmd = Command::new(helper);
    cmd.arg(if lazy { "-uz" } else { "-u" }).arg("--").arg(target);
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|error| FusermountError::Spawn { helper: helper.to_path_buf(), error })?;
    if out.status.success() {
        return Ok(());
    }
    let said = last_said(&out.stderr).unwrap_or_else(|| "failed".into());
    Err(if said.contains("Device or resource busy") {
        FusermountError::Busy(target.to_path_buf())
    } else {
        FusermountError::UnmountRefused { target: target.to_path_buf(), said }
    })
}
