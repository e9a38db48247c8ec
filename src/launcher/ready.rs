//! Telling whoever started ext4box that the mount is live, so that no caller has to poll for it:
//! systemd's notification socket (`READY=1` on `$NOTIFY_SOCKET`, for `Type=notify` units running
//! `ext4box -f`) and `-o notify_pipe=FD`, a descriptor the caller passed, which gets `READY=1\n` and is
//! closed. If the mount fails the descriptor is closed without a word: end of file means no mount.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};

use super::errno_text;

/// The environment variable systemd sets for a service that may notify it.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Why `notify_pipe=FD` cannot be used: the descriptor, and the error of F_GETFL.
#[derive(Debug, thiserror::Error)]
pub enum ReadyError {
    #[error("notify_pipe={fd}: {}", errno_text(.error))]
    NotOpen { fd: i32, error: std::io::Error },
    #[error("notify_pipe={0}: the descriptor is not open for writing")]
    NotWritable(i32),
}

/// Whom to tell, taken at start-up (the descriptor and the variable are ours from then on).
#[derive(Debug, Default)]
pub struct Readiness {
    pipe: Option<File>,
    socket: Option<OsString>,
}

impl Readiness {
    /// Takes `notify_pipe=` (checked: open for writing) and `$NOTIFY_SOCKET`. The descriptor is made
    /// close-on-exec so that the worker never holds it (the caller would wait for its end of file).
    pub fn take(notify_pipe: Option<i32>) -> Result<Readiness, ReadyError> {
        let pipe = match notify_pipe {
            None => None,
            Some(fd) => {
                // SAFETY: F_GETFL on a descriptor number; a closed one fails with EBADF.
                let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
                if flags < 0 {
                    return Err(ReadyError::NotOpen { fd, error: std::io::Error::last_os_error() });
                }
                if flags & libc::O_ACCMODE == libc::O_RDONLY {
                    return Err(ReadyError::NotWritable(fd));
                }
                // SAFETY: as above; sets close-on-exec on it.
                unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
                // SAFETY: the caller handed us this descriptor for this use: nothing else in ext4box owns it.
                Some(unsafe { File::from_raw_fd(fd) })
            }
        };
        let socket = std::env::var_os(NOTIFY_SOCKET).filter(|s| !s.is_empty());
        Ok(Readiness { pipe, socket })
    }

    /// The mount is live: tell everyone who asked.
    pub fn ready(self) {
        if let Some(mut pipe) = self.pipe {
            if let Err(e) = pipe.write_all(b"READY=1\n") {
                tracing::warn!(fd = pipe.as_raw_fd(), error = %e, "cannot write to notify_pipe");
            }
        }
        if let Some(socket) = self.socket {
            if let Err(e) = sd_notify(&socket, "READY=1") {
                tracing::warn!(socket = ?socket, error = %e, "cannot notify systemd");
            }
        }
    }
}

/// Sends `state` to systemd's socket: a path, or an abstract name written with a leading `@`.
fn sd_notify(socket: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let bytes = socket.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(std::path::Path::new(socket))?,
    };
    UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn systemd_gets_ready_on_a_path_and_an_abstract_socket() {
        let dir = std::env::temp_dir().join(format!("ext4box-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        sd_notify(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("ext4box-notify-test-{}", std::process::id());
        let abs = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&abs).unwrap();
        sd_notify(std::ffi::OsStr::new(&format!("@{name}")), "READY=1").unwrap();
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_notify_pipe_must_be_open_for_writing() {
        let (r, w) = super::super::pipe().unwrap();
        let e = Readiness::take(Some(r.as_raw_fd())).unwrap_err();
        assert!(matches!(e, ReadyError::NotWritable(fd) if fd == r.as_raw_fd()), "{e}");
        let e = Readiness::take(Some(987_654)).unwrap_err();
        assert!(matches!(e, ReadyError::NotOpen { fd: 987_654, .. }), "{e}");
        assert_eq!(e.to_string(), "notify_pipe=987654: Bad file descriptor");
        let fd = w.as_raw_fd();
        std::mem::forget(w);
        let ready = Readiness::take(Some(fd)).unwrap();
        ready.ready();
        let mut got = String::new();
        std::io::Read::read_to_string(&mut &r, &mut got).unwrap();
        assert_eq!(got, "READY=1\n");
    }
}
