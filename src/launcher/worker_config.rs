//! What the worker is told to do: one type, [`WorkerConfig`], built from the mount options in one place
//! ([`MountOptions::worker_config`]) and carried in one encoding (`wire`, JSON) wherever it travels: on
//! the command line of a started worker (`ext4box worker --config JSON`) and in the fd-socket handoff.
//! Decoding checks what the option parser checks, so a config from another process cannot ask for
//! more than `-o` could.

use serde::{Deserialize, Serialize};

use super::options::{DEFAULT_COMMIT_SECONDS, ErrorsPolicy, MAX_COMMIT_SECONDS, MountOptions, TransportPolicy};
use super::wire::{self, serde_by_name};
use crate::image::Format;
use crate::server::AtimePolicy;

serde_by_name!(AtimePolicy, |s| s.parse());
serde_by_name!(ErrorsPolicy, ErrorsPolicy::parse);
serde_by_name!(TransportPolicy, TransportPolicy::parse);
serde_by_name!(Format, Format::parse);

/// Everything the worker applies to the image and the mount it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Byte offset of the filesystem in the image (`offset=`).
    pub offset: u64,
    pub read_only: bool,
    pub norecovery: bool,
    pub atime: AtimePolicy,
    /// Journal commit interval, seconds (1 to [`MAX_COMMIT_SECONDS`]).
    pub commit: u32,
    /// Owners to present every file with (`uid=`, `gid=`).
    #[serde(default)]
    pub uid: Option<u32>,
    #[serde(default)]
    pub gid: Option<u32>,
    #[serde(default)]
    pub tuning: WorkerTuning,
}

/// The options the worker applies beyond the filesystem's basics: fuse2fs's (umask, fakeroot, allow_root,
/// errors, cache_size, minixdf, -s) and ext4box's (partition, transport, format, discard, quota limits).
/// Absent fields are the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerTuning {
    pub umask: Option<u32>,
    pub fakeroot: bool,
    /// `allow_root`: the mounting user's uid (root is always let in).
    pub allow_root_owner: Option<u32>,
    pub errors: Option<ErrorsPolicy>,
    pub cache_size: Option<u64>,
    pub minixdf: bool,
    /// Serve requests on one thread (`-s`).
    pub single_thread: bool,
    /// Serve partition N of the image (the worker reads the partition table, confined).
    pub partition: Option<u32>,
    pub transport: TransportPolicy,
    /// What the image file holds (`format=`).
    pub format: Format,
    /// Discard blocks as they are freed (`discard`).
    pub discard: bool,
    /// Quota types whose limits are enforced (user, group, project).
    pub quota_limits: [bool; 3],
}

impl MountOptions {
    /// What the worker needs of these options; `owner` is the mounting user, `single_thread` is `-s`.
    pub fn worker_config(&self, owner: u32, single_thread: bool) -> WorkerConfig {
        WorkerConfig {
            offset: self.offset,
            read_only: self.read_only,
            norecovery: self.norecovery,
            atime: self.atime_policy(),
            commit: self.commit,
            uid: self.uid,
            gid: self.gid,
            tuning: WorkerTuning {
                umask: self.umask,
                fakeroot: self.fakeroot,
                allow_root_owner: self.allow_root.then_some(owner),
                errors: self.errors,
                cache_size: self.cache_size,
                minixdf: self.minixdf,
                single_thread,
                partition: self.partition,
                transport: self.transport,
                format: self.format,
                discard: self.discard,
                quota_limits: self.quota_limits,
            },
        }
    }
}

impl WorkerConfig {
    /// One line of JSON.
    pub fn encode(&self) -> String {
        wire::to_json(self)
    }

    /// Parses strictly and checks the values as the option parser does.
    pub fn decode(line: &str) -> Result<WorkerConfig, ConfigError> {
        let c: WorkerConfig = wire::from_json("worker config", line)?;
        c.check()?;
        Ok(c)
    }

    /// The bounds `-o` puts on these values.
    pub fn check(&self) -> Result<(), ConfigError> {
        let t = &self.tuning;
        if !(1..=MAX_COMMIT_SECONDS).contains(&self.commit) {
            return Err(ConfigError::Commit(self.commit));
        }
        if let Some(m) = t.umask.filter(|&m| m > 0o7777) {
            return Err(ConfigError::Umask(m));
        }
        if t.partition == Some(0) {
            return Err(ConfigError::PartitionZero);
        }
        if let Some(n) = t.cache_size.filter(|n| !(64 << 10..=1 << 40).contains(n)) {
            return Err(ConfigError::CacheSize(n));
        }
        Ok(())
    }
}

/// Why a worker configuration (from a command line or a handoff) is refused: it did not decode, or a
/// value is out of the bounds `-o` puts on it (the value carried).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Wire(#[from] wire::WireError),
    #[error("commit {0}: not between 1 and {MAX_COMMIT_SECONDS} seconds")]
    Commit(u32),
    #[error("umask: not a mode (at most 7777)")]
    Umask(u32),
    #[error("partition 0: partitions are numbered from 1")]
    PartitionZero,
    #[error("cache_size: between 64K and 1024G")]
    CacheSize(u64),
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            offset: 0,
            read_only: false,
            norecovery: false,
            atime: AtimePolicy::Relative,
            commit: DEFAULT_COMMIT_SECONDS,
            uid: None,
            gid: None,
            tuning: WorkerTuning::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_of_every_option_round_trips() {
        let o = MountOptions::parse(
            "ro,norecovery,noatime,commit=30,uid=7,gid=8,umask=027,allow_root,errors=panic,\
             cache_size=8M,minixdf,partition=2,transport=classic,format=qcow2,discard,usrquota,prjquota",
        )
        .unwrap();
        let c = o.worker_config(1000, true);
        assert_eq!(c.tuning.allow_root_owner, Some(1000));
        assert_eq!(c.tuning.quota_limits, [true, false, true]);
        assert_eq!((c.atime, c.commit, c.uid, c.gid), (AtimePolicy::Never, 30, Some(7), Some(8)));
        assert_eq!(WorkerConfig::decode(&c.encode()).unwrap(), c);
        let fakeroot = MountOptions::parse("fakeroot,rw").unwrap().worker_config(0, false);
        assert!(fakeroot.tuning.fakeroot);
        assert_eq!(WorkerConfig::decode(&fakeroot.encode()).unwrap(), fakeroot);
        let plain = MountOptions::parse("").unwrap().worker_config(0, false);
        // transport= takes its default from EXT4BOX_TRANSPORT (the io_uring pass of the tests sets it).
        let tuning = WorkerTuning { transport: plain.tuning.transport, ..WorkerTuning::default() };
        assert_eq!(plain, WorkerConfig { tuning, ..WorkerConfig::default() });
        assert_eq!(WorkerConfig::decode(&plain.encode()).unwrap(), plain);
    }

    #[test]
    fn decoding_is_strict() {
        let good = WorkerConfig::default().encode();
        assert!(WorkerConfig::decode(&good).is_ok());
        let with = |from: &str, to: &str| {
            assert!(good.contains(from), "{good}");
            good.replacen(from, to, 1)
        };
        for bad in [
            with("\"offset\":0", "\"offset\":0,\"evil\":1"),
            with("\"offset\":0", "\"offset\":0,\"offset\":1"),
            with("\"offset\":0,", ""),
            with("\"relative\"", "\"sometimes\""),
            with("\"commit\":5", "\"commit\":0"),
            with("\"commit\":5", "\"commit\":86401"),
            with("\"tuning\":{", "\"tuning\":{\"umask\":8192,"),
            with("\"tuning\":{", "\"tuning\":{\"partition\":0,"),
            with("\"tuning\":{", "\"tuning\":{\"cache_size\":1,"),
            with("\"tuning\":{", "\"tuning\":{\"transport\":\"carrier pigeon\","),
            with("\"tuning\":{", "\"tuning\":{\"bogus\":true,"),
            format!("{good}\n{good}"),
            "".into(),
        ] {
            assert!(WorkerConfig::decode(&bad).is_err(), "{bad}");
        }
    }
}
