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

/// Records `pid` as the server of the mount with device number `dev`, mounted for user `owner`.
pub fn record(dev: &str, pid: u32, owner: u32) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir())?;
    std::fs::write(path(dev), format!("{pid}\n{owner}\n"))
}

fn fields(dev: &str) -> Option<Vec<u32>> {
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
