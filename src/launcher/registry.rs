//! Where running servers are recorded, so that `ext4box unmount` can wait for the right process to exit.
//!
//! One file per mount, named after the mounted filesystem's device number (`major:minor` from mountinfo),
//! holding the server's pid. The server writes it once it serves and removes it when it exits.

use std::path::PathBuf;

/// Where the registry may be, in order of preference. Root uses /run; a user their runtime directory.
/// Without one (runuser, `unshare -Urm`), a directory under /tmp named after the user (as seen outside
/// any user namespace) and the namespace; since another user could have made that name first, and
/// namespace numbers are reused, a few numbered alternatives follow.
fn candidates() -> Vec<PathBuf> {
    let euid = nix::unistd::geteuid().as_raw();
    if euid == 0 && !crate::sandbox::privileges::in_user_namespace() {
        return vec![PathBuf::from("/run/ext4box")];
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        return vec![PathBuf::from(d).join("ext4box")];
    }
    let ns = std::fs::read_link("/proc/self/ns/user")
        .map(|l| l.to_string_lossy().chars().filter(char::is_ascii_digit).collect::<String>())
        .unwrap_or_default();
    let base = format!("ext4box-{}-{ns}", outer_uid(euid));
    let tmp = std::env::temp_dir();
    std::iter::once(tmp.join(&base)).chain((1..8).map(|i| tmp.join(format!("{base}-{i}")))).collect()
}

/// `uid` as the initial user namespace knows it (from /proc/self/uid_map), so that two users' namespaces
/// never share a name.
fn outer_uid(uid: u32) -> u32 {
    outer_uid_in(&std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default(), uid)
}

fn outer_uid_in(map: &str, uid: u32) -> u32 {
    map.lines()
        .filter_map(|l| {
            let f: Vec<u32> = l.split_whitespace().filter_map(|v| v.parse().ok()).collect();
            let (&inside, &outside, &count) = (f.first()?, f.get(1)?, f.get(2)?);
            (uid >= inside && uid - inside < count).then(|| outside.saturating_add(uid - inside))
        })
        .next()
        .unwrap_or(uid)
}

/// The registry directory: the first candidate that is ours alone (a real directory, not a link, owned
/// by this user, closed to others; one of ours that an older version left open is closed now). A
/// candidate that does not exist is made when `create`, and ends the search otherwise (a record would
/// have been made there).
fn dir(create: bool) -> Option<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    for d in candidates() {
        let m = match std::fs::symlink_metadata(&d) {
            Ok(m) => m,
            Err(_) if create => {
                let _ = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&d);
                match std::fs::symlink_metadata(&d) {
                    Ok(m) => m,
                    Err(_) => continue,
                }
            }
            Err(_) => return None,
        };
        if !m.is_dir() || m.uid() != nix::unistd::geteuid().as_raw() {
            continue;
        }
        if m.permissions().mode() & 0o077 != 0
            && std::fs::set_permissions(&d, PermissionsExt::from_mode(0o700)).is_err()
        {
            continue;
        }
        return Some(d);
    }
    None
}

fn path(dev: &str) -> Option<PathBuf> {
    Some(dir(false)?.join(dev.replace('/', "_")))
}

/// Records `pid` as the server of the mount with device number `dev`, mounted for user `owner`.
pub fn record(dev: &str, pid: u32, owner: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let d = dir(true).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::PermissionDenied, "no private directory for the registry of mounts")
    })?;
    let _lock = Lock::take(&d);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(d.join(dev.replace('/', "_")))?;
    f.write_all(format!("{pid}\n{owner}\n").as_bytes())
}

/// An exclusive flock on the registry directory, held while a record is written or removed: device
/// numbers are reused as soon as a mount is gone, so an exiting server's check-then-remove must not
/// interleave with a new mount recording the same number (its unmount would then not wait).
struct Lock {
    _held: Option<std::fs::File>,
}

impl Lock {
    fn take(dir: &std::path::Path) -> Lock {
        let f = std::fs::File::open(dir).ok();
        if let Some(f) = &f {
            use std::os::fd::AsRawFd;
            // SAFETY: flock on a descriptor we own; it is released when the descriptor closes.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
                tracing::debug!(error = %std::io::Error::last_os_error(), "registry lock not taken");
            }
        }
        Lock { _held: f }
    }
}

fn fields(dev: &str) -> Option<Vec<u32>> {
    let text = std::fs::read_to_string(path(dev)?).ok()?;
    Some(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// The pid recorded for `dev`, if any.
pub fn lookup(dev: &str) -> Option<u32> {
    fields(dev)?.first().copied()
}

/// The user the mount of `dev` was made for.
pub fn owner(dev: &str) -> Option<u32> {
    fields(dev)?.get(1).copied()
}

/// How many live mounts were made for `uid`.
pub fn count_for(uid: u32) -> usize {
    let Some(Ok(entries)) = dir(false).map(std::fs::read_dir) else { return 0 };
    entries
        .flatten()
        .filter_map(|e| fields(&e.file_name().to_string_lossy()))
        .filter(|f| {
            f.get(1) == Some(&uid) && f.first().is_some_and(|&p| std::path::Path::new(&format!("/proc/{p}")).exists())
        })
        .count()
}

/// Removes the record of `dev` if it still names `pid`: device numbers are reused as soon as a mount
/// is gone, so a newer mount's record must not be removed by an older server or its unmount.
pub fn remove(dev: &str, pid: u32) {
    let Some(d) = dir(false) else { return };
    let _lock = Lock::take(&d);
    if lookup(dev) == Some(pid) {
        let _ = std::fs::remove_file(d.join(dev.replace('/', "_")));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn outer_uid_follows_the_namespace_map() {
        assert_eq!(super::outer_uid_in("         0       1001          1\n", 0), 1001);
        assert_eq!(super::outer_uid_in("         0     100000      65536\n", 1000), 101000);
        assert_eq!(super::outer_uid_in("         0          0 4294967295\n", 1000), 1000);
        assert_eq!(super::outer_uid_in("         0       1001          1\n", 5), 5);
        assert_eq!(super::outer_uid_in("", 7), 7);
    }
}
