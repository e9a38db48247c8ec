//! mount(8), fstab and umount(8): through the `mount.fuse.ext4box` / `umount.fuse.ext4box` helper links
//! (what `packaging/install.sh` installs). The test puts links to the built binary in /sbin for its run
//! and removes them after. Needs root and /dev/fuse.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_ext4box");

/// Links the helpers into /sbin (where mount(8) looks for them) for the test's duration.
struct Helpers;

impl Helpers {
    fn install() -> Helpers {
        for name in ["mount.fuse.ext4box", "umount.fuse.ext4box"] {
            let link = Path::new("/sbin").join(name);
            let _ = fs::remove_file(&link);
            std::os::unix::fs::symlink(BIN, &link).unwrap();
        }
        Helpers
    }
}

impl Drop for Helpers {
    fn drop(&mut self) {
        for name in ["mount.fuse.ext4box", "umount.fuse.ext4box"] {
            let _ = fs::remove_file(Path::new("/sbin").join(name));
        }
    }
}

#[test]
fn mount_t_fstab_and_umount() {
    // The helper links in /sbin change what umount(8) does for every fuse.ext4box mount.
    let Some(_machine) = require_root_and_fuse_alone() else {
        return;
    };
    let _h = Helpers::install();
    let s = Scratch::new("helper");
    let img = s.path("disk.img");
    mkfs(&img, 32 << 20, &[]);
    let mnt = s.mkdir("mnt");

    // mount -t fuse.ext4box IMAGE MNT -o OPTS
    run_ok(Command::new("mount").args(["-t", "fuse.ext4box"]).arg(&img).arg(&mnt).args(["-o", "ro,noexec"]));
    let mi = mountinfo_entry(&mnt).expect("mounted by mount(8)");
    assert_eq!(mi.fstype, "fuse.ext4box");
    assert!(mi.mount_opts.split(',').any(|o| o == "ro") && mi.mount_opts.contains("noexec"), "{mi:?}");
    let pids = server_pids(&mnt);
    // umount MNT goes through umount.fuse.ext4box, which returns once the server has exited.
    run_ok(Command::new("umount").arg(&mnt));
    assert!(mountinfo_entry(&mnt).is_none());
    assert!(pids.iter().all(|&p| !pid_alive(p)), "umount returned before the server exited");

    // An fstab line, read-write, mounted by its mount point.
    let fstab = s.path("fstab");
    fs::write(&fstab, format!("{} {} fuse.ext4box defaults,rw 0 0\n", img.display(), mnt.display())).unwrap();
    run_ok(Command::new("mount").arg("-T").arg(&fstab).arg(&mnt));
    fs::write(mnt.join("written-through-fstab"), b"hello").unwrap();
    run_ok(Command::new("umount").arg(&mnt));
    assert_fsck_clean(&img);
    kernel_mount(&img, &mnt, "ro");
    assert_eq!(fs::read(mnt.join("written-through-fstab")).unwrap(), b"hello");
    kernel_umount(&mnt);

    // -f (fake) mounts nothing; a bad option is one line and mount(8)'s failure status.
    let out = Command::new("mount").args(["-f", "-t", "fuse.ext4box"]).arg(&img).arg(&mnt).output().unwrap();
    assert!(out.status.success());
    assert!(mountinfo_entry(&mnt).is_none(), "mount -f must not mount");
    let out = Command::new("/sbin/mount.fuse.ext4box").arg(&img).arg(&mnt).args(["-o", "frobnicate"]).output().unwrap();
    assert!(!out.status.success());
    assert_eq!(stderr_lines(&out).len(), 1, "{}", output_text(&out));
    assert!(mountinfo_entry(&mnt).is_none());
}
