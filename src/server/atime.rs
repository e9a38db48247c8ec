//! Access times: the mount's rule (noatime, relatime, strictatime, as the kernel applies them to a local
//! filesystem), and the update a read makes due.

use super::Server;
use crate::ext4::inode::Inode;
use crate::ext4::{self, FileKind, InodeNo};

/// The access-time rule of the mount options, as the kernel applies them to a local filesystem.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AtimePolicy {
    /// `noatime`: never.
    Never,
    /// `relatime` (the default): when the access time is not after the modification or change time, or is
    /// more than a day old.
    #[default]
    Relative,
    /// `strictatime`: on every read.
    Always,
}

impl AtimePolicy {
    /// The name the worker's command line and the fd-socket handoff carry.
    pub fn name(self) -> &'static str {
        match self {
            AtimePolicy::Never => "never",
            AtimePolicy::Relative => "relative",
            AtimePolicy::Always => "always",
        }
    }
}

/// A name that is none of [`AtimePolicy::name`]'s (the text that was given).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad atime {0:?} (never, relative or always)")]
pub struct UnknownAtime(pub String);

/// The inverse of [`AtimePolicy::name`]; any other text is an error (not a default).
impl std::str::FromStr for AtimePolicy {
    type Err = UnknownAtime;

    fn from_str(s: &str) -> Result<AtimePolicy, UnknownAtime> {
        [AtimePolicy::Never, AtimePolicy::Relative, AtimePolicy::Always]
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownAtime(s.to_string()))
    }
}

impl Server {
    /// The kernel keeps no access times for FUSE files and answers cached reads itself, so the server
    /// sets them when it sees an access (a read from the image, or an open for reading) and tells the
    /// kernel to fetch the attributes again.
    pub(super) fn update_atime(&self, ino: InodeNo) {
        match self.fs.touch_atime(ino) {
            Ok(()) => {
                if let Some(f) = self.invalidate.get() {
                    f(ino);
                }
            }
            Err(e) => tracing::debug!(error = %e, "access time not updated"),
        }
    }

    /// Whether a read of `inode` should update its access time under the mount's rule.
    pub(super) fn atime_due(&self, inode: &Inode) -> bool {
        if !self.writable() || inode.kind != FileKind::Regular {
            return false;
        }
        match self.opts.atime {
            AtimePolicy::Never => false,
            AtimePolicy::Always => true,
            AtimePolicy::Relative => {
                let (a, m, c) = (inode.atime, inode.mtime, inode.ctime);
                let older = |x: ext4::Timestamp, y: ext4::Timestamp| (x.sec, x.nsec) <= (y.sec, y.nsec);
                older(a, m) || older(a, c) || ext4::Timestamp::now().sec - a.sec >= 24 * 3600
            }
        }
    }
}

#[cfg(test)]
mod atime_tests {
    use super::AtimePolicy;

    #[test]
    fn atime_names_read_back_and_other_text_is_refused() {
        for p in [AtimePolicy::Never, AtimePolicy::Relative, AtimePolicy::Always] {
            assert_eq!(p.name().parse::<AtimePolicy>(), Ok(p));
        }
        assert_eq!("sometimes".parse::<AtimePolicy>(), Err(super::UnknownAtime("sometimes".into())));
        assert!("".parse::<AtimePolicy>().is_err());
    }
}
