//! Where running servers are recorded, so that `ext4box unmount` can wait for the right process to exit.
//!
//! One file per mount, named after the mounted filesystem's device number (`major:minor` from mountinfo),
//! holding the server's pid. The server writes it once it serves and removes it when it exits.

use std::path::PathBuf;

fn dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        PathBuf::from("/run/ext4box")
    } else if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        PathBuf::from(d).join("ext4box")
    } else {
        std::env::temp_dir().join(format!("ext4box-{euid}"))
    }
}

fn path(dev: &str) -> PathBuf {
    dir().join(dev.replace('/', "_"))
}

/// Records `pid` as the server of the mount with device number `dev`.
pub fn record(dev: &str, pid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir())?;
    std::fs::write(path(dev), format!("{pid}\n"))
}

/// The pid recorded for `dev`, if any.
pub fn lookup(dev: &str) -> Option<u32> {
    std::fs::read_to_string(path(dev)).ok()?.trim().parse().ok()
}

/// Removes the record of `dev` if it still names `pid`: device numbers are reused as soon as a mount
/// is gone, so a newer mount's record must not be removed by an older server or its unmount.
pub fn remove(dev: &str, pid: u32) {
    if lookup(dev) == Some(pid) {
        let _ = std::fs::remove_file(path(dev));
    }
}
