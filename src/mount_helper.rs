//! The mount(8) and umount(8) helper conventions, so that `mount -t fuse.ext4box IMAGE MNT`, fstab lines
//! (`/srv/disk.img /mnt/disk fuse.ext4box defaults,ro 0 0`) and `umount MNT` work. The binary is installed
//! under the helper names as links (`packaging/install.sh`):
//!
//! - `mount.fuse.ext4box SOURCE MOUNTPOINT [-sfnv] [-N NS] [-o OPTIONS] [-t TYPE]`
//! - `umount.fuse.ext4box MOUNTPOINT [-nlfvr] [-t TYPE]`

use std::path::PathBuf;

use crate::launcher::{self, MountOptions, MountRequest};
use crate::sandbox;

/// Which helper the program was started as, from the name it was called by.
pub enum Helper {
    Mount,
    Unmount,
}

pub fn helper_for(argv0: &str) -> Option<Helper> {
    let name = argv0.rsplit('/').next().unwrap_or(argv0);
    match name {
        "mount.fuse.ext4box" | "mount.ext4box" => Some(Helper::Mount),
        "umount.fuse.ext4box" | "umount.ext4box" => Some(Helper::Unmount),
        _ => None,
    }
}

/// Runs as a helper with the arguments after `argv[0]`; returns the exit code (mount(8) passes it on:
/// 0 success, 1 usage, 32 mount failure).
pub fn run(helper: Helper, args: &[String]) -> i32 {
    let result = match helper {
        Helper::Mount => mount(args),
        Helper::Unmount => unmount(args),
    };
    match result {
        Ok(()) => 0,
        Err((code, msg)) => {
            eprintln!("ext4box: {msg}");
            code
        }
    }
}

fn mount(args: &[String]) -> Result<(), (i32, String)> {
    let usage = |m: &str| (1, format!("{m} (usage: mount.fuse.ext4box SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS])"));
    let mut positional = Vec::new();
    let mut options = Vec::new();
    let (mut fake, mut sloppy) = (false, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-o" => options.push(it.next().ok_or_else(|| usage("-o needs options"))?.clone()),
            "-t" | "-N" => {
                it.next().ok_or_else(|| usage(&format!("{a} needs a value")))?;
            }
            s if s.starts_with("-o") && s.len() > 2 => options.push(s[2..].to_string()),
            s if s.starts_with('-') && s.len() > 1 => {
                for flag in s[1..].chars() {
                    match flag {
                        'f' => fake = true,
                        's' => sloppy = true,
                        'n' | 'v' => {} // no mtab to write; verbosity is the log's business
                        other => return Err(usage(&format!("unknown flag -{other}"))),
                    }
                }
            }
            _ => positional.push(a.clone()),
        }
    }
    let [source, mountpoint] = positional.as_slice() else {
        return Err(usage("expected SOURCE and MOUNTPOINT"));
    };
    // mount(8) may hand us the whole fstab option string, helper-only parts included.
    let joined: Vec<String> = options
        .join(",")
        .split(',')
        .filter(|o| !(o.is_empty() || sloppy && MountOptions::parse(o).is_err()))
        .map(str::to_string)
        .collect();
    let options = MountOptions::parse(&joined.join(",")).map_err(|e| (1, e.to_string()))?;
    if fake {
        return Ok(());
    }
    let req = MountRequest {
        image: PathBuf::from(source),
        mountpoint: PathBuf::from(mountpoint),
        options,
        foreground: false,
        sandbox: Some((sandbox::DEFAULT_IDENTITY, None)),
        fd_socket: None,
        explain: false,
        single_thread: false,
    };
    launcher::mount(&req).map_err(|e| (32, e.to_string()))
}

fn unmount(args: &[String]) -> Result<(), (i32, String)> {
    let mut it = args.iter();
    let mut target = None;
    while let Some(a) = it.next() {
        match a.as_str() {
            "-t" => {
                it.next();
            }
            s if s.starts_with('-') => {} // -n -l -f -v -r: ext4box unmount always waits for its server
            s => target = Some(PathBuf::from(s)),
        }
    }
    let target = target.ok_or((1, "usage: umount.fuse.ext4box MOUNTPOINT".to_string()))?;
    launcher::unmount(&target).map_err(|e| (32, e.to_string()))
}
