//! Reading `/proc/self/mountinfo`, to find a mount by its mount point without touching the mount itself
//! (a dead FUSE server would make any stat of it fail).

use std::path::{Path, PathBuf};

/// One line of mountinfo.
#[derive(Debug, Clone)]
pub struct MountEntry {
    /// `major:minor` of the mounted filesystem.
    pub dev: String,
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
    /// Per-mount options (`rw`/`ro`, `nosuid`, ...).
    pub options: String,
}

impl MountEntry {
    pub fn read_only(&self) -> bool {
        self.options.split(',').any(|o| o == "ro")
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    // id parent major:minor root mount-point options [optional fields...] - fstype source super-options
    let (left, right) = line.split_once(" - ")?;
    let l: Vec<&str> = left.split(' ').collect();
    let r: Vec<&str> = right.split(' ').collect();
    Some(MountEntry {
        dev: l.get(2)?.to_string(),
        mount_point: PathBuf::from(unescape(l.get(4)?)),
        options: l.get(5)?.to_string(),
        fstype: r.first()?.to_string(),
        source: unescape(r.get(1)?),
    })
}

/// The topmost mount at `target` (an absolute path), if any.
pub fn find(target: &Path) -> Option<MountEntry> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().filter_map(parse_line).rfind(|m| m.mount_point == target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_fuse_line() {
        let l = "36 35 0:50 / /mnt/my\\040disk rw,nosuid,nodev shared:1 - fuse.ext4box /srv/a.img ro,user_id=0";
        let m = parse_line(l).unwrap();
        assert_eq!(m.dev, "0:50");
        assert_eq!(m.mount_point, PathBuf::from("/mnt/my disk"));
        assert_eq!(m.fstype, "fuse.ext4box");
        assert_eq!(m.source, "/srv/a.img");
    }
}
