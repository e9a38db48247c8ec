//! Where running servers are recorded, so that `ext4box unmount` can wait for the right process to exit.
//!
//! One file per mount, named after the mounted filesystem's device number (`major:minor` from mountinfo),
//! holding the server's pid. The server writes it once it serves and removes it when it exits.

use std::path::PathBuf;

fn dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 && !crate::sandbox::privileges::in_user_namespace() {
        PathBuf::from("/run/ext4box")
    } else if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        PathBuf::from(d).join("ext4box")
    } else {
        // Root of a user namespace is some user outside it: the namespace names the directory.
        let ns = std::fs::read_link("/proc/self/ns/user")
            .map(|l| l.to_string_lossy().chars().filter(char::is_ascii_digit).collect::<String>())
            .unwrap_or_default();
        std::env::temp_dir().join(format!("ext4box-{euid}-{ns}"))
    }
}

fn path(dev: &str) -> PathBuf {
    dir().join(dev.replace('/', "_"))
}

/// The registry directory, if it is ours alone: a real directory (not a link), owned by this user and
/// closed to others. (Its name under /tmp is guessable: another user could have made it first.)
fn trusted_dir() -> Option<PathBuf> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let d = dir();
    let m = std::fs::symlink_metadata(&d).ok()?;
    // SAFETY: geteuid has no preconditions.
    let ours = m.is_dir() && m.uid() == unsafe { libc::geteuid() } && m.permissions().mode() & 0o077 == 0;
    ours.then_some(d)
}

/// Records `pid` as the server of the mount with device number `dev`, mounted for user `owner`.
pub fn record(dev: &str, pid: u32, owner: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let _ = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir());
    // A directory of ours that an older version left open to others is closed now.
    if let Ok(m) = std::fs::symlink_metadata(dir()) {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions.
        if m.is_dir() && m.uid() == unsafe { libc::geteuid() } {
            let _ = std::fs::set_permissions(dir(), std::os::unix::fs::PermissionsExt::from_mode(0o700));
        }
    }
    let d = trusted_dir().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("{} is not a private directory", dir().display()),
        )
    })?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(d.join(dev.replace('/', "_")))?;
    f.write_all(format!("{pid}\n{owner}\n").as_bytes())
}

fn fields(dev: &str) -> Option<Vec<u32>> {
    trusted_dir()?;
    let text = std::fs::read_to_string(path(dev)).ok()?;
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
    let Ok(entries) = std::fs::read_dir(dir()) else { return 0 };
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
    if lookup(dev) == Some(pid) {
        let _ = std::fs::remove_file(path(dev));
    }
}
