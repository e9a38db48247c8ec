//! Mounting without root through `fusermount3`, libfuse's setuid helper (Debian's `fuse3` package), the
//! way libfuse does it: a Unix socket pair, one end passed to `fusermount3` in `_FUSE_COMMFD`; the helper
//! opens `/dev/fuse`, mounts it on the mount point with the options it allows an ordinary user
//! (always `nosuid,nodev`), and sends the descriptor back over the socket (SCM_RIGHTS). Unmounting is
//! `fusermount3 -u`, which checks that the caller owns the mount.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
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

/// Mounts a FUSE filesystem on `target` with `options` (fusermount3's `-o` syntax) and returns the FUSE
/// descriptor the helper opened.
pub fn mount(helper: &Path, target: &Path, options: &str) -> Result<File, String> {
    let mut pair = [0; 2];
    // SAFETY: pair is a valid array of two ints.
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, pair.as_mut_ptr()) } != 0 {
        return Err(format!("socketpair: {}", errno_text(&std::io::Error::last_os_error())));
    }
    // SAFETY: socketpair returned two new descriptors nothing else owns.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) };
    // The helper's end must survive exec: clear its close-on-exec flag for the spawn only.
    // SAFETY: fcntl on a descriptor we own.
    if unsafe { libc::fcntl(theirs.as_raw_fd(), libc::F_SETFD, 0) } != 0 {
        return Err(format!("fcntl: {}", errno_text(&std::io::Error::last_os_error())));
    }
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
        .map_err(|e| format!("cannot run {}: {}", helper.display(), errno_text(&e)))?;
    drop(theirs);
    let received = super::fd_socket::receive(&ours, 1);
    let out = child.wait_with_output().map_err(|e| format!("{PROGRAM}: {}", errno_text(&e)))?;
    let said = String::from_utf8_lossy(&out.stderr).lines().map(str::trim).rfind(|l| !l.is_empty()).map(str::to_string);
    match received {
        Ok((_, mut fds)) if out.status.success() => match fds.pop() {
            Some(fd) => Ok(File::from(fd)),
            None => Err(format!("{PROGRAM} sent no descriptor")),
        },
        _ => Err(match said {
            Some(line) => {
                format!("{PROGRAM} could not mount {}: {}", target.display(), line.trim_start_matches("fusermount3: "))
            }
            None => format!("{PROGRAM} could not mount {} ({})", target.display(), out.status),
        }),
    }
}

/// Unmounts `target` with `fusermount3 -u` (`-z`: lazily, for a mount whose server died).
pub fn unmount(helper: &Path, target: &Path, lazy: bool) -> Result<(), String> {
    let mut cmd = Command::new(helper);
    cmd.arg(if lazy { "-uz" } else { "-u" }).arg("--").arg(target);
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run {}: {}", helper.display(), errno_text(&e)))?;
    if out.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&out.stderr);
    let line = said.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("failed");
    Err(if line.contains("Device or resource busy") {
        format!("{} is busy: a process still uses it", target.display())
    } else {
        format!("{PROGRAM} -u {}: {}", target.display(), line.trim_start_matches("fusermount3: "))
    })
}
