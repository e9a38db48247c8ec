//! Mount options (`-o a,b=c`): ext4box's own, FUSE's, and the generic ones mount(8) passes along.

/// Everything `-o` can say, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    pub read_only: bool,
    pub norecovery: bool,
    /// Byte offset of the filesystem inside the image (a partition in a disk image).
    pub offset: u64,
    pub allow_other: bool,
    pub default_permissions: bool,
    pub fsname: Option<String>,
    /// Present every file as owned by this uid / gid (the image keeps its own owners).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// mount(2) flags: MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_NOATIME, ...
    pub nosuid: bool,
    pub nodev: bool,
    pub noexec: bool,
    pub noatime: bool,
    pub nodiratime: bool,
    pub relatime: bool,
    pub strictatime: bool,
    /// Journal commit interval, seconds (`commit=`).
    pub commit: u32,
    /// Present every file's mode with these permission bits cleared (`umask=`).
    pub umask: Option<u32>,
    /// Permission checks as if every caller were root (`fakeroot`): no kernel checks, the server grants.
    pub fakeroot: bool,
    /// Only the mounting user and root may use the mount (`allow_root`).
    pub allow_root: bool,
    /// What a corruption found on a writable mount does (`errors=`); the superblock's choice when `None`.
    pub errors: Option<ErrorsPolicy>,
    /// Metadata block cache bound in bytes (`cache_size=`).
    pub cache_size: Option<u64>,
    /// A file created (exclusively) for the mount's lifetime (`lockfile=`).
    pub lockfile: Option<std::path::PathBuf>,
    /// Mount without locking the image (`nolock`): for filesystems that cannot lock.
    pub nolock: bool,
    /// A descriptor to write `READY=1` to once the mount is live (`notify_pipe=FD`).
    pub notify_pipe: Option<i32>,
    /// statfs counts the metadata overhead in the size (`minixdf`) instead of leaving it out (`bsddf`).
    pub minixdf: bool,
    /// The filesystem type is `fuse.SUBTYPE` (`subtype=`; `ext4box` by default).
    pub subtype: Option<String>,
    /// The filesystem is partition N of a disk image (MBR or GPT), found by the worker (`partition=`).
    pub partition: Option<u32>,
    /// Which FUSE transport carries the requests (`transport=`).
    pub transport: TransportPolicy,
    /// What the image file holds (`format=`): told by its magic number by default.
    pub format: crate::image::Format,
    /// Discard blocks as they are freed (`discard`), as the kernel's ext4 option.
    pub discard: bool,
    /// Enforce the limits of the user, group, project quota files (`usrquota` or `quota`, `grpquota`,
    /// `prjquota`; `noquota` clears them), as the kernel's ext4 options. Usage is tracked regardless.
    pub quota_limits: [bool; 3],
}

/// Why `-o` (or a value of one option) does not parse: one variant per check, naming the option and
/// carrying the value that was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    #[error("transport={0}: auto, classic or io_uring")]
    Transport(String),
    /// `$EXT4BOX_TRANSPORT` is not a transport.
    #[error("{TRANSPORT_ENV}: transport={0}: auto, classic or io_uring")]
    TransportEnv(String),
    #[error("commit={0}: not a number of seconds between 0 and {MAX_COMMIT_SECONDS}")]
    Commit(String),
    #[error("option '{0}' needs a value ({0}=...)")]
    NeedsValue(String),
    #[error("option '{0}' takes no value")]
    TakesNoValue(String),
    #[error("offset={0}: not a byte count")]
    Offset(String),
    /// `uid=` or `gid=`.
    #[error("{option}={value}: not a number")]
    NotANumber { option: &'static str, value: String },
    #[error("umask={0}: not an octal mode")]
    UmaskNotOctal(String),
    #[error("umask={0}: not a mode (at most 7777)")]
    UmaskTooLarge(String),
    /// `errors=`: the engine's parser says why.
    #[error(transparent)]
    Errors(crate::ext4::UnknownErrorBehavior),
    #[error("cache_size={0}")]
    CacheSize(#[source] SizeError),
    #[error("cache_size={0}: between 64K and 1024G")]
    CacheSizeRange(String),
    #[error("partition={0}: not a partition number")]
    Partition(String),
    #[error("partition=0: partitions are numbered from 1")]
    PartitionZero,
    /// `format=`: the image module's parser says why.
    #[error(transparent)]
    Format(crate::image::FormatNameError),
    #[error("notify_pipe={0}: not a descriptor number (3 or more, open for writing)")]
    NotifyPipe(String),
    #[error("subtype={0}: letters, digits, '_', '-' and '.' only")]
    Subtype(String),
    #[error("unknown mount option '{0}'")]
    Unknown(String),
    #[error("partition= and offset= exclude each other (partition= finds the offset)")]
    PartitionAndOffset,
    #[error("allow_other and allow_root exclude each other")]
    AllowOtherAndRoot,
    #[error("fakeroot is for a mount only its owner uses: not with allow_other, allow_root, kernel or suid")]
    FakerootShared,
}

/// A value that is not a size (the text given).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}: not a size (a number of bytes, optionally with K, M or G)")]
pub struct SizeError(pub String);

/// The environment variable that sets the default of `transport=`.
pub const TRANSPORT_ENV: &str = "EXT4BOX_TRANSPORT";

/// `transport=`: how the worker picks the FUSE transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TransportPolicy {
    /// FUSE over io_uring when the kernel offers it and the worker can set the rings up, else classic.
    #[default]
    Auto,
    /// Always /dev/fuse.
    Classic,
    /// FUSE over io_uring or no mount at all (to be sure of what a benchmark measures).
    IoUring,
}

impl TransportPolicy {
    pub fn parse(v: &str) -> Result<TransportPolicy, OptionError> {
        match v {
            "auto" => Ok(TransportPolicy::Auto),
            "classic" => Ok(TransportPolicy::Classic),
            "io_uring" | "uring" => Ok(TransportPolicy::IoUring),
            _ => Err(OptionError::Transport(v.to_string())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TransportPolicy::Auto => "auto",
            TransportPolicy::Classic => "classic",
            TransportPolicy::IoUring => "io_uring",
        }
    }
}

/// `errors=`: the engine's choice of what a corruption found on a writable mount does.
pub use crate::ext4::ErrorBehavior as ErrorsPolicy;

/// Parses a size with an optional K, M or G suffix (powers of 1024), as fuse2fs's `cache_size=`.
pub fn parse_size(v: &str) -> Result<u64, SizeError> {
    let bad = || SizeError(v.to_string());
    let (digits, shift) = match v.chars().last() {
        Some('k' | 'K') => (&v[..v.len() - 1], 10),
        Some('m' | 'M') => (&v[..v.len() - 1], 20),
        Some('g' | 'G') => (&v[..v.len() - 1], 30),
        _ => (v, 0),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    n.checked_mul(1 << shift).ok_or_else(bad)
}

/// The journal commit interval when none is given, as the kernel's.
pub const DEFAULT_COMMIT_SECONDS: u32 = 5;

/// The longest journal commit interval `commit=` takes, seconds (a day).
pub const MAX_COMMIT_SECONDS: u32 = 86_400;

/// Parses a `commit=` value: seconds, 0 meaning the default (as the kernel reads it), at most a day.
pub fn commit_seconds(v: &str) -> Result<u32, OptionError> {
    match v.parse::<u32>() {
        Ok(0) => Ok(DEFAULT_COMMIT_SECONDS),
        Ok(n) if n <= MAX_COMMIT_SECONDS => Ok(n),
        _ => Err(OptionError::Commit(v.to_string())),
    }
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            read_only: false,
            norecovery: false,
            offset: 0,
            allow_other: false,
            default_permissions: true,
            fsname: None,
            uid: None,
            gid: None,
            // Files on an untrusted image must not grant privileges or reach devices unless asked.
            nosuid: true,
            nodev: true,
            noexec: false,
            noatime: false,
            nodiratime: false,
            relatime: false,
            strictatime: false,
            commit: DEFAULT_COMMIT_SECONDS,
            umask: None,
            fakeroot: false,
            allow_root: false,
            errors: None,
            cache_size: None,
            lockfile: None,
            nolock: false,
            notify_pipe: None,
            minixdf: false,
            subtype: None,
            partition: None,
            transport: TransportPolicy::Auto,
            format: crate::image::Format::Auto,
            discard: false,
            quota_limits: [false; 3],
        }
    }
}

/// Options mount(8) and fstab use that mean nothing to a FUSE server, accepted and ignored.
const IGNORED: &[&str] = &[
    "defaults",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "owner",
    "group",
    "_netdev",
    "nofail",
    "sync",
    "async",
    "dirsync",
    "lazytime",
    "nolazytime",
    "loud",
    "silent",
    "nomand",
    "iversion",
    "noiversion",
];

impl MountOptions {
    /// The options fusermount3 mounts with: what it lets an ordinary user ask for (it adds nosuid and
    /// nodev itself), the source and the `fuse.ext4box` type.
    pub fn fusermount_options(&self, source: &str) -> String {
        let mut o = vec![if self.read_only { "ro" } else { "rw" }.to_string(), "nosuid".into(), "nodev".into()];
        for (on, name) in [
            (self.noexec, "noexec"),
            (self.noatime, "noatime"),
            (self.nodiratime, "nodiratime"),
            (self.relatime, "relatime"),
            (self.strictatime, "strictatime"),
            (self.allow_other || self.allow_root, "allow_other"),
            (self.default_permissions, "default_permissions"),
        ] {
            if on {
                o.push(name.into());
            }
        }
        // fusermount3 splits at commas and takes a backslash as an escape, as libfuse writes them.
        let escaped = source.replace('\\', "\\\\").replace(',', "\\,");
        o.push(format!("fsname={escaped}"));
        o.push(format!("subtype={}", self.subtype.as_deref().unwrap_or("ext4box")));
        o.join(",")
    }

    /// Parses a comma-separated option string (several `-o` are joined with commas first).
    pub fn parse(s: &str) -> Result<MountOptions, OptionError> {
        let mut o = MountOptions::default();
        // The default of transport= may come from the environment (a unit file's, or the test suite's
        // io_uring run); an explicit option wins.
        if let Ok(v) = std::env::var(TRANSPORT_ENV) {
            o.transport = TransportPolicy::parse(&v).map_err(|_| OptionError::TransportEnv(v.clone()))?;
        }
        let number = |option: &'static str, v: &str| {
            v.parse::<u32>().map_err(|_| OptionError::NotANumber { option, value: v.to_string() })
        };
        for opt in s.split(',').filter(|x| !x.is_empty()) {
            let (key, value) = match opt.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (opt, None),
            };
            let need = || value.ok_or_else(|| OptionError::NeedsValue(key.to_string()));
            let flag = |v: Option<&str>| match v {
                None => Ok(()),
                Some(_) => Err(OptionError::TakesNoValue(key.to_string())),
            };
            match key {
                "ro" => flag(value).map(|_| o.read_only = true)?,
                "rw" => flag(value).map(|_| o.read_only = false)?,
                "norecovery" | "noload" => flag(value).map(|_| o.norecovery = true)?,
                "commit" => o.commit = commit_seconds(need()?)?,
                "offset" => {
                    let v = need()?;
                    o.offset = v.parse().map_err(|_| OptionError::Offset(v.to_string()))?;
                }
                "allow_other" => flag(value).map(|_| o.allow_other = true)?,
                "default_permissions" => flag(value).map(|_| o.default_permissions = true)?,
                "fsname" => o.fsname = Some(need()?.to_string()),
                "uid" => o.uid = Some(number("uid", need()?)?),
                "gid" => o.gid = Some(number("gid", need()?)?),
                "suid" => flag(value).map(|_| o.nosuid = false)?,
                "nosuid" => flag(value).map(|_| o.nosuid = true)?,
                "dev" => flag(value).map(|_| o.nodev = false)?,
                "nodev" => flag(value).map(|_| o.nodev = true)?,
                "exec" => flag(value).map(|_| o.noexec = false)?,
                "noexec" => flag(value).map(|_| o.noexec = true)?,
                "atime" => flag(value).map(|_| o.noatime = false)?,
                "noatime" => flag(value).map(|_| o.noatime = true)?,
                "diratime" => flag(value).map(|_| o.nodiratime = false)?,
                "nodiratime" => flag(value).map(|_| o.nodiratime = true)?,
                "relatime" => flag(value).map(|_| o.relatime = true)?,
                "norelatime" => flag(value).map(|_| o.relatime = false)?,
                "strictatime" => flag(value).map(|_| o.strictatime = true)?,
                "umask" => {
                    let v = need()?;
                    let m = u32::from_str_radix(v, 8).map_err(|_| OptionError::UmaskNotOctal(v.to_string()))?;
                    if m > 0o7777 {
                        return Err(OptionError::UmaskTooLarge(v.to_string()));
                    }
                    o.umask = Some(m);
                }
                "fakeroot" => flag(value).map(|_| o.fakeroot = true)?,
                "allow_root" => flag(value).map(|_| o.allow_root = true)?,
                // fuse2fs's: allow_other, kernel permission checks, suid and device files.
                "kernel" => flag(value).map(|_| {
                    o.allow_other = true;
                    o.default_permissions = true;
                    o.nosuid = false;
                    o.nodev = false;
                })?,
                "errors" => o.errors = Some(ErrorsPolicy::parse(need()?).map_err(OptionError::Errors)?),
                "cache_size" => {
                    let v = need()?;
                    let n = parse_size(v).map_err(OptionError::CacheSize)?;
                    if !(64 << 10..=1 << 40).contains(&n) {
                        return Err(OptionError::CacheSizeRange(v.to_string()));
                    }
                    o.cache_size = Some(n);
                }
                "partition" => {
                    let v = need()?;
                    let n: u32 = v.parse().map_err(|_| OptionError::Partition(v.to_string()))?;
                    if n == 0 {
                        return Err(OptionError::PartitionZero);
                    }
                    o.partition = Some(n);
                }
                "transport" => o.transport = TransportPolicy::parse(need()?)?,
                "format" => o.format = crate::image::Format::parse(need()?).map_err(OptionError::Format)?,
                "discard" => flag(value).map(|_| o.discard = true)?,
                "nodiscard" => flag(value).map(|_| o.discard = false)?,
                "usrquota" | "quota" => flag(value).map(|_| o.quota_limits[0] = true)?,
                "grpquota" => flag(value).map(|_| o.quota_limits[1] = true)?,
                "prjquota" => flag(value).map(|_| o.quota_limits[2] = true)?,
                "noquota" => flag(value).map(|_| o.quota_limits = [false; 3])?,
                "lockfile" => o.lockfile = Some(std::path::PathBuf::from(need()?)),
                "nolock" => flag(value).map(|_| o.nolock = true)?,
                "notify_pipe" => {
                    let v = need()?;
                    let fd: i32 =
                        v.parse().ok().filter(|&n| n > 2).ok_or_else(|| OptionError::NotifyPipe(v.to_string()))?;
                    o.notify_pipe = Some(fd);
                }
                // POSIX ACLs are always enforced (the kernel checks them); the option is accepted.
                "acl" => flag(value)?,
                "bsddf" => flag(value).map(|_| o.minixdf = false)?,
                "minixdf" => flag(value).map(|_| o.minixdf = true)?,
                "subtype" => {
                    let v = need()?;
                    if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) {
                        return Err(OptionError::Subtype(v.to_string()));
                    }
                    o.subtype = Some(v.to_string());
                }
                k if IGNORED.contains(&k) => {}
                // mount(8) passes x-* (systemd and friends) and comment= through to helpers.
                k if k.starts_with("x-") || k == "comment" => {}
                _ => return Err(OptionError::Unknown(opt.to_string())),
            }
        }
        if o.partition.is_some() && o.offset != 0 {
            return Err(OptionError::PartitionAndOffset);
        }
        if o.allow_root && o.allow_other {
            return Err(OptionError::AllowOtherAndRoot);
        }
        if o.fakeroot {
            // Every caller would be root: with other users let in (and suid honoured), any of them could
            // make a setuid root program.
            if o.allow_other || o.allow_root || !o.nosuid {
                return Err(OptionError::FakerootShared);
            }
            // The server grants every request as root would: the kernel must not check first.
            o.default_permissions = false;
        }
        Ok(o)
    }

    /// When reads update the access time, from noatime/strictatime (relatime otherwise).
    pub fn atime_policy(&self) -> crate::server::AtimePolicy {
        use crate::server::AtimePolicy;
        if self.noatime {
            AtimePolicy::Never
        } else if self.strictatime {
            AtimePolicy::Always
        } else {
            AtimePolicy::Relative
        }
    }

    /// The filesystem type mount(2) and /proc/mounts show.
    pub fn fstype(&self, block_device: bool) -> String {
        let sub = self.subtype.as_deref().unwrap_or("ext4box");
        if block_device { format!("fuseblk.{sub}") } else { format!("fuse.{sub}") }
    }

    /// The mount(2) flags these options ask for.
    pub fn ms_flags(&self) -> libc::c_ulong {
        let mut f = 0;
        let set = |cond: bool, bit: libc::c_ulong, f: &mut libc::c_ulong| {
            if cond {
                *f |= bit
            }
        };
        set(self.read_only, libc::MS_RDONLY, &mut f);
        set(self.nosuid, libc::MS_NOSUID, &mut f);
        set(self.nodev, libc::MS_NODEV, &mut f);
        set(self.noexec, libc::MS_NOEXEC, &mut f);
        set(self.noatime, libc::MS_NOATIME, &mut f);
        set(self.nodiratime, libc::MS_NODIRATIME, &mut f);
        set(self.relatime, libc::MS_RELATIME, &mut f);
        set(self.strictatime, libc::MS_STRICTATIME, &mut f);
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_options() {
        let o = MountOptions::parse(
            "ro,norecovery,offset=1048576,allow_other,fsname=disk,noexec,defaults,x-systemd.automount",
        )
        .unwrap();
        assert!(o.read_only && o.norecovery && o.allow_other && o.noexec && o.nosuid && o.nodev);
        assert_eq!(o.offset, 1 << 20);
        assert_eq!(o.fsname.as_deref(), Some("disk"));
        assert_ne!(o.ms_flags() & libc::MS_NOEXEC, 0);
    }

    #[test]
    fn fuse2fs_options() {
        let o = MountOptions::parse(
            "umask=027,fakeroot,errors=panic,cache_size=8M,minixdf,subtype=img,lockfile=/x,usrquota,prjquota",
        )
        .unwrap();
        assert_eq!(o.quota_limits, [true, false, true]);
        assert_eq!(MountOptions::parse("quota,grpquota,noquota").unwrap().quota_limits, [false; 3]);
        assert_eq!(o.umask, Some(0o27));
        assert!(o.fakeroot && !o.default_permissions, "fakeroot leaves the checks to the server");
        assert_eq!(o.cache_size, Some(8 << 20));
        assert_eq!(o.fstype(false), "fuse.img");
        let k = MountOptions::parse("kernel").unwrap();
        assert!(k.allow_other && k.default_permissions && !k.nosuid && !k.nodev);
        assert_eq!(MountOptions::parse("allow_root,allow_other"), Err(OptionError::AllowOtherAndRoot));
        assert!(matches!(MountOptions::parse("errors=maybe"), Err(OptionError::Errors(_))));
        assert_eq!(MountOptions::parse("umask=999"), Err(OptionError::UmaskNotOctal("999".into())));
        assert_eq!(MountOptions::parse("umask=17777"), Err(OptionError::UmaskTooLarge("17777".into())));
        assert_eq!(MountOptions::parse("cache_size=1"), Err(OptionError::CacheSizeRange("1".into())));
        let e = MountOptions::parse("cache_size=lots").unwrap_err();
        assert_eq!(e, OptionError::CacheSize(SizeError("lots".into())));
        assert_eq!(e.to_string(), "cache_size=lots: not a size (a number of bytes, optionally with K, M or G)");
    }

    #[test]
    fn rejects_bad_options() {
        assert_eq!(MountOptions::parse("frobnicate"), Err(OptionError::Unknown("frobnicate".into())));
        assert_eq!(MountOptions::parse("offset=abc"), Err(OptionError::Offset("abc".into())));
        assert_eq!(MountOptions::parse("offset"), Err(OptionError::NeedsValue("offset".into())));
        assert_eq!(MountOptions::parse("ro=1"), Err(OptionError::TakesNoValue("ro".into())));
        let e = MountOptions::parse("gid=x").unwrap_err();
        assert_eq!(e, OptionError::NotANumber { option: "gid", value: "x".into() });
        assert_eq!(e.to_string(), "gid=x: not a number");
        assert!(!MountOptions::parse("rw").unwrap().read_only);
        assert!(!MountOptions::parse("").unwrap().read_only, "rw is the default");
        assert!(MountOptions::parse("rw,ro").unwrap().read_only);
    }
}
