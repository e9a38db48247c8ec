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
}

/// The journal commit interval when none is given, as the kernel's.
pub const DEFAULT_COMMIT_SECONDS: u32 = 5;

/// Parses a `commit=` value: seconds, 0 meaning the default (as the kernel reads it), at most a day.
pub fn commit_seconds(v: &str) -> Result<u32, String> {
    match v.parse::<u32>() {
        Ok(0) => Ok(DEFAULT_COMMIT_SECONDS),
        Ok(n) if n <= 86_400 => Ok(n),
        _ => Err(format!("commit={v}: not a number of seconds between 0 and 86400")),
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
            (self.allow_other, "allow_other"),
            (self.default_permissions, "default_permissions"),
        ] {
            if on {
                o.push(name.into());
            }
        }
        // fusermount3 splits at commas and takes a backslash as an escape, as libfuse writes them.
        let escaped = source.replace('\\', "\\\\").replace(',', "\\,");
        o.push(format!("fsname={escaped}"));
        o.push("subtype=ext4box".into());
        o.join(",")
    }

    /// Parses a comma-separated option string (several `-o` are joined with commas first).
    pub fn parse(s: &str) -> Result<MountOptions, String> {
        let mut o = MountOptions::default();
        for opt in s.split(',').filter(|x| !x.is_empty()) {
            let (key, value) = match opt.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (opt, None),
            };
            let need = || value.ok_or_else(|| format!("option '{key}' needs a value ({key}=...)"));
            let flag = |v: Option<&str>| match v {
                None => Ok(()),
                Some(_) => Err(format!("option '{key}' takes no value")),
            };
            match key {
                "ro" => flag(value).map(|_| o.read_only = true)?,
                "rw" => flag(value).map(|_| o.read_only = false)?,
                "norecovery" | "noload" => flag(value).map(|_| o.norecovery = true)?,
                "commit" => o.commit = commit_seconds(need()?)?,
                "offset" => {
                    let v = need()?;
                    o.offset = v.parse().map_err(|_| format!("offset={v}: not a byte count"))?;
                }
                "allow_other" => flag(value).map(|_| o.allow_other = true)?,
                "default_permissions" => flag(value).map(|_| o.default_permissions = true)?,
                "fsname" => o.fsname = Some(need()?.to_string()),
                "uid" => {
                    o.uid = Some(need()?.parse().map_err(|_| format!("uid={}: not a number", value.unwrap_or("")))?)
                }
                "gid" => {
                    o.gid = Some(need()?.parse().map_err(|_| format!("gid={}: not a number", value.unwrap_or("")))?)
                }
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
                k if IGNORED.contains(&k) => {}
                // mount(8) passes x-* (systemd and friends) and comment= through to helpers.
                k if k.starts_with("x-") || k == "comment" => {}
                _ => return Err(format!("unknown mount option '{opt}'")),
            }
        }
        Ok(o)
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
    fn rejects_bad_options() {
        assert!(MountOptions::parse("frobnicate").unwrap_err().contains("frobnicate"));
        assert!(MountOptions::parse("offset=abc").is_err());
        assert!(MountOptions::parse("offset").is_err());
        assert!(MountOptions::parse("ro=1").is_err());
        assert!(!MountOptions::parse("rw").unwrap().read_only);
        assert!(!MountOptions::parse("").unwrap().read_only, "rw is the default");
        assert!(MountOptions::parse("rw,ro").unwrap().read_only);
    }
}
