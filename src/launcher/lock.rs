//! Who may use an image at once. Read-only mounts share it, so that many jobs can mount one image
//! together; a read-write mount has it alone, and is refused while any other mount holds it (and the
//! other way round). The lock lives on the image's open file description, which the worker holds, so it
//! is let go exactly when the server has exited, however it ended.
//!
//! flock(2) first. Where it is refused (NFS emulates flock with byte-range locks, which a read-only
//! descriptor cannot take in write mode; some network and FUSE filesystems have no locks at all), an
//! open-file-description lock of the same kind. Where neither works the mount is refused in one line,
//! unless `-o nolock` says to go ahead.
//!
//! Also `lockfile=PATH` (fuse2fs's): a file that exists exactly while the mount does, holding the pid of
//! the process that removes it; one left behind by a killed mount is taken over.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::errno_text;

/// How an image is to be shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A read-only mount: other read-only mounts may hold it too.
    Shared,
    /// A read-write mount: nobody else.
    Exclusive,
}

impl Access {
    pub fn for_mount(read_only: bool) -> Access {
        if read_only { Access::Shared } else { Access::Exclusive }
    }
}

/// What holds the lock we could not take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    ReadOnly,
    ReadWrite,
}

/// Why an image or a lock file could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another ext4box holds the image: `holder` says how, `access` what this mount asked for.
    #[error("{}", in_use(.shown, *.access, *.holder))]
    InUse { shown: String, access: Access, holder: Holder },
    /// flock failed for another reason than a holder.
    #[error("cannot lock {shown}: {}", errno_text(.error))]
    Flock { shown: String, error: std::io::Error },
    /// Neither flock nor an OFD lock works on the filesystem holding the image.
    #[error(
        "cannot lock {shown}: {} (the filesystem holding it has no locks; -o nolock mounts it anyway, \
         which is unsafe for a read-write mount if anything else may open the image)",
        errno_text(.error)
    )]
    NoLocks { shown: String, error: std::io::Error },
    /// `lockfile=` names a file that exists and whose owner is alive.
    #[error("lock file {} exists: the image is in use", .0.display())]
    LockfileExists(PathBuf),
    #[error("cannot create lock file {}: {}", .path.display(), errno_text(.error))]
    LockfileCreate { path: PathBuf, error: std::io::Error },
}

/// Takes the image's lock for `access` (kept with `file` until every copy of it is closed), or says in
/// one line why not. `nolock` skips it.
pub fn lock_image(file: File, shown: &str, access: Access, nolock: bool) -> Result<File, LockError> {
    if nolock {
        return Ok(file);
    }
    let fd = file.as_raw_fd();
    let op = match access {
        Access::Shared => libc::LOCK_SH,
        Access::Exclusive => libc::LOCK_EX,
    };
    // Not nix's `Flock`: it unlocks when dropped (and panics if it cannot), while this lock belongs to the
    // open file description and must outlive the launcher's copy, in the worker's.
    // SAFETY: flock on a descriptor we own.
    let refused = match unsafe { libc::flock(fd, op | libc::LOCK_NB) } {
        0 => return Ok(file),
        _ => std::io::Error::last_os_error(),
    };
    if refused.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Err(LockError::InUse { shown: shown.into(), access, holder: flock_holder(fd, access) });
    }
    if !flock_unsupported(&refused) {
        return Err(LockError::Flock { shown: shown.into(), error: refused });
    }
    match ofd_lock(&file, access) {
        Ok(()) => {
            tracing::info!(image = shown, error = %refused, "flock refused; the image is locked with an OFD lock");
            Ok(file)
        }
        Err(OfdError::Held(holder)) => Err(LockError::InUse { shown: shown.into(), access, holder }),
        Err(OfdError::Other(error)) => Err(LockError::NoLocks { shown: shown.into(), error }),
    }
}

/// The errors that mean "this filesystem (or this descriptor) cannot flock", not "someone holds it".
fn flock_unsupported(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EBADF | libc::ENOLCK | libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS))
}

fn in_use(shown: &str, access: Access, holder: Holder) -> String {
    match (access, holder) {
        (Access::Exclusive, Holder::ReadOnly) => format!(
            "{shown} is already mounted read-only by another ext4box (it is locked): a read-write mount needs it alone"
        ),
        (Access::Shared, _) | (Access::Exclusive, Holder::ReadWrite) => {
            format!("{shown} is already mounted read-write by another ext4box (it is locked)")
        }
    }
}

/// Who holds the flock that refused `access`: a shared request is refused only by an exclusive holder;
/// an exclusive one by either, told apart by trying (and at once dropping) a shared lock.
fn flock_holder(fd: i32, access: Access) -> Holder {
    if access == Access::Shared {
        return Holder::ReadWrite;
    }
    // SAFETY: flock on a descriptor we own; we held no lock on it before.
    if unsafe { libc::flock(fd, libc::LOCK_SH | libc::LOCK_NB) } == 0 {
        // SAFETY: as above: drops the probe.
        unsafe { libc::flock(fd, libc::LOCK_UN) };
        Holder::ReadOnly
    } else {
        Holder::ReadWrite
    }
}

enum OfdError {
    Held(Holder),
    Other(std::io::Error),
}

/// An open-file-description lock on the whole file: read for shared, write for exclusive.
fn ofd_lock(file: &File, access: Access) -> Result<(), OfdError> {
    use nix::fcntl::{FcntlArg, fcntl};
    let kind = match access {
        Access::Shared => libc::F_RDLCK,
        Access::Exclusive => libc::F_WRLCK,
    };
    // From byte 0 (SEEK_SET, start 0) for length 0: the whole file, however it grows. The lock types and
    // SEEK_SET are small constants (0 to 2), so they fit the C struct's short fields.
    let (l_type, l_whence) = (kind as libc::c_short, libc::SEEK_SET as libc::c_short);
    let fl = libc::flock { l_type, l_whence, l_start: 0, l_len: 0, l_pid: 0 };
    let e = match fcntl(file, FcntlArg::F_OFD_SETLK(&fl)) {
        Ok(_) => return Ok(()),
        Err(errno) => errno,
    };
    if !matches!(e, nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) {
        return Err(OfdError::Other(e.into()));
    }
    // F_OFD_GETLK fills `probe` with a conflicting lock.
    let mut probe = fl;
    let holder =
        if fcntl(file, FcntlArg::F_OFD_GETLK(&mut probe)).is_ok() && probe.l_type == libc::F_RDLCK as libc::c_short {
            Holder::ReadOnly
        } else {
            Holder::ReadWrite
        };
    Err(OfdError::Held(holder))
}

/// `lockfile=PATH`: created exclusively with the pid of the process that will remove it, so a second
/// mount naming it is refused; removed when dropped (after the server has exited).
#[derive(Debug)]
pub struct Lockfile(PathBuf);

impl Lockfile {
    pub fn create(path: &Path) -> Result<Lockfile, LockError> {
        let abs = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir().unwrap_or_default().join(path)
        };
        match Self::create_new(&abs) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let Some(pid) = stale_owner(&abs) else {
                    return Err(LockError::LockfileExists(abs));
                };
                eprintln!(
                    "ext4box: lock file {} was left by process {pid}, which is gone: taking it over",
                    abs.display()
                );
                // Another mount may take it over at the same moment: the exclusive create decides.
                let _ = std::fs::remove_file(&abs);
                Self::create_new(&abs).map_err(|error| match error.kind() {
                    std::io::ErrorKind::AlreadyExists => LockError::LockfileExists(abs.clone()),
                    _ => LockError::LockfileCreate { path: abs.clone(), error },
                })
            }
            Err(error) => Err(LockError::LockfileCreate { path: abs, error }),
            Ok(l) => Ok(l),
        }
    }

    fn create_new(abs: &Path) -> std::io::Result<Lockfile> {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o644).open(abs)?;
        f.write_all(format!("{}\n", std::process::id()).as_bytes())?;
        Ok(Lockfile(abs.to_path_buf()))
    }

    /// Records the calling process as the one that removes the file (the background supervisor, after
    /// the fork: the process that created it returns as soon as the mount is live).
    pub fn claim(&self) {
        let _ = std::fs::write(&self.0, format!("{}\n", std::process::id()));
    }
}

impl Drop for Lockfile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The pid in a lock file whose process is gone, or runs something other than ext4box (pids are
/// reused); `None` while it may still be in use (an ext4box, or a process we may not look at), or when
/// the file does not name a pid (someone else's lock).
fn stale_owner(path: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(path).ok()?;
    let pid: i32 = text.trim().parse().ok().filter(|&p| p > 0)?;
    match std::fs::read_link(format!("/proc/{pid}/exe")) {
        // By name, not by path: an upgraded binary shows as "... (deleted)", and mount.fuse.ext4box
        // links to the same program.
        Ok(exe) => (!exe.to_string_lossy().rsplit('/').next().unwrap_or("").contains("ext4box")).then_some(pid),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(pid),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ext4box-lock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn open(p: &Path) -> File {
        OpenOptions::new().read(true).write(true).open(p).unwrap()
    }

    /// `f` until it succeeds, for up to 5 s. A lock belongs to an open file description, and another
    /// test thread's fork (before its exec closes the close-on-exec descriptors) can keep one alive for a
    /// moment after this thread closed it.
    fn soon<T, E: std::fmt::Debug>(mut f: impl FnMut() -> Result<T, E>) -> T {
        let start = std::time::Instant::now();
        loop {
            match f() {
                Ok(v) => return v,
                Err(e) if start.elapsed() > std::time::Duration::from_secs(5) => panic!("still refused: {e:?}"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
    }

    #[test]
    fn read_only_mounts_share_and_a_read_write_one_is_alone() {
        let d = scratch("share");
        let img = d.join("img");
        std::fs::write(&img, b"x").unwrap();
        let a = lock_image(open(&img), "img", Access::Shared, false).unwrap();
        let b = lock_image(open(&img), "img", Access::Shared, false).unwrap();
        let e = lock_image(open(&img), "img", Access::Exclusive, false).unwrap_err();
        assert!(matches!(e, LockError::InUse { holder: Holder::ReadOnly, .. }), "{e}");
        assert!(e.to_string().contains("read-only by another ext4box"), "{e}");
        drop((a, b));
        let w = soon(|| lock_image(open(&img), "img", Access::Exclusive, false));
        let e = lock_image(open(&img), "img", Access::Shared, false).unwrap_err();
        assert!(e.to_string().contains("read-write by another ext4box"), "{e}");
        let e = lock_image(open(&img), "img", Access::Exclusive, false).unwrap_err();
        assert!(e.to_string().contains("read-write by another ext4box"), "{e}");
        // nolock goes ahead whatever holds it.
        lock_image(open(&img), "img", Access::Exclusive, true).unwrap();
        drop(w);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn ofd_locks_conflict_by_kind() {
        let d = scratch("ofd");
        let img = d.join("img");
        std::fs::write(&img, b"x").unwrap();
        let (a, b, c) = (open(&img), open(&img), open(&img));
        assert!(ofd_lock(&a, Access::Shared).is_ok());
        assert!(ofd_lock(&b, Access::Shared).is_ok());
        assert!(matches!(ofd_lock(&c, Access::Exclusive), Err(OfdError::Held(Holder::ReadOnly))));
        drop((a, b));
        soon(|| ofd_lock(&c, Access::Exclusive).map_err(|_| "held"));
        let d2 = open(&img);
        assert!(matches!(ofd_lock(&d2, Access::Shared), Err(OfdError::Held(Holder::ReadWrite))));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn flock_errors_that_mean_no_locks_here() {
        for e in [libc::EBADF, libc::ENOLCK, libc::EOPNOTSUPP, libc::EINVAL, libc::ENOSYS] {
            assert!(flock_unsupported(&std::io::Error::from_raw_os_error(e)), "{e}");
        }
        assert!(!flock_unsupported(&std::io::Error::from_raw_os_error(libc::EWOULDBLOCK)));
        assert!(!flock_unsupported(&std::io::Error::from_raw_os_error(libc::EINTR)));
    }

    #[test]
    fn a_lock_file_left_by_a_dead_process_is_taken_over() {
        let d = scratch("lockfile");
        let path = d.join("lock");
        // A pid that is certainly gone: a child that has exited and been reaped.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        std::fs::write(&path, format!("{dead}\n")).unwrap();
        let l = Lockfile::create(&path).expect("stale lock file not taken over");
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), std::process::id().to_string());
        // A live process that is not an ext4box (the pid was reused): stale too.
        drop(l);
        let mut sleeper = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        std::fs::write(&path, format!("{}\n", sleeper.id())).unwrap();
        let taken = Lockfile::create(&path);
        let _ = sleeper.kill();
        let _ = sleeper.wait();
        assert!(taken.is_ok(), "a lock file naming a live non-ext4box process was not taken over");
        drop(taken);
        // A live ext4box (this test binary is one, by name): in use.
        std::fs::write(&path, format!("{}\n", std::process::id())).unwrap();
        let e = Lockfile::create(&path).unwrap_err();
        assert!(matches!(e, LockError::LockfileExists(_)), "{e}");
        // Not a pid at all: someone else's lock, left alone.
        std::fs::write(&path, "held by a person\n").unwrap();
        let e = Lockfile::create(&path).unwrap_err();
        assert!(matches!(e, LockError::LockfileExists(_)), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
