//! Hard links: several names of one ext4 inode are one inode through ext4box,
//! both in what stat reports and in the kernel's inode cache.

use crate::common::*;
use std::ffi::CString;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

/// inotify_add_watch returns the same watch descriptor for the same kernel
/// inode; two different inodes get two descriptors.
fn inotify_wd(fd: i32, p: &Path) -> i32 {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let wd = unsafe { libc::inotify_add_watch(fd, c.as_ptr(), libc::IN_ACCESS | libc::IN_DONT_FOLLOW) };
    assert!(wd >= 0, "inotify_add_watch {p:?}: {}", std::io::Error::last_os_error());
    wd
}

#[test]
fn hard_links_are_one_inode() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("hardlinks");
    let img = s.path("image");
    mkfs(&img, 64 << 20, &["-b", "4096"]);
    let pm = s.mkdir("populate");
    kernel_mount(&img, &pm, "rw");
    fs::create_dir_all(pm.join("d1/sub")).unwrap();
    fs::create_dir_all(pm.join("d2")).unwrap();
    let content = pseudo_random(3, 200_000);
    fs::write(pm.join("d1/original"), &content).unwrap();
    fs::hard_link(pm.join("d1/original"), pm.join("d2/second")).unwrap();
    fs::hard_link(pm.join("d1/original"), pm.join("d1/sub/third")).unwrap();
    fs::write(pm.join("d2/other"), b"a different inode").unwrap();
    kernel_umount(&pm);
    assert_fsck_clean(&img);
    let want_ino = debugfs_inode(&img, "/d1/original");
    assert_eq!(debugfs_inode(&img, "/d2/second"), want_ino);
    let other_ino = debugfs_inode(&img, "/d2/other");
    let image_hash = hash_path(&img);

    let km = s.mkdir("kernel");
    kernel_mount(&img, &km, "ro");
    let em = s.mkdir("ext4box");
    let m = ext4box_mount_ok(&img, &em, "ro");

    let names = ["d1/original", "d2/second", "d1/sub/third"];
    let em2 = em.clone();
    let content2 = content.clone();
    let (stats, wds, other_wd, other_stat) =
        with_timeout("hard link checks", Duration::from_secs(60), &em, move || {
            let mut stats = Vec::new();
            for n in names {
                let p = em2.join(n);
                let mut f = File::open(&p).unwrap_or_else(|e| panic!("open {p:?} via ext4box: {e}"));
                let md = f.metadata().unwrap(); // fstat on the open descriptor
                let mut got = Vec::new();
                f.read_to_end(&mut got).unwrap();
                assert!(got == content2, "{n} via ext4box: content differs ({} bytes read)", got.len());
                stats.push((md.ino(), md.dev(), md.nlink(), fs::symlink_metadata(&p).unwrap().ino()));
            }
            let ifd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
            assert!(ifd >= 0);
            let wds: Vec<i32> = names.iter().map(|n| inotify_wd(ifd, &em2.join(n))).collect();
            let other_wd = inotify_wd(ifd, &em2.join("d2/other"));
            unsafe { libc::close(ifd) };
            let other_stat = fs::metadata(em2.join("d2/other")).unwrap();
            (stats, wds, other_wd, (other_stat.ino(), other_stat.dev()))
        });

    for (i, n) in names.iter().enumerate() {
        let (ino, dev, nlink, lino) = stats[i];
        assert_eq!(ino, want_ino, "fstat st_ino of {n} via ext4box (debugfs says {want_ino})");
        assert_eq!(lino, want_ino, "lstat st_ino of {n} via ext4box");
        assert_eq!(dev, stats[0].1, "st_dev of {n} differs from {}", names[0]);
        assert_eq!(nlink, 3, "st_nlink of {n} via ext4box");
        let k = fs::metadata(km.join(n)).unwrap();
        assert_eq!(ino, k.ino(), "st_ino of {n}: ext4box vs kernel");
    }
    assert_eq!(other_stat.0, other_ino, "st_ino of d2/other via ext4box");
    assert_eq!(other_stat.1, stats[0].1, "st_dev of d2/other");
    // One kernel inode for the three names (same inotify watch), another one
    // for the unrelated file.
    assert!(
        wds.iter().all(|&w| w == wds[0]),
        "the three names of one ext4 inode are different kernel inodes on the ext4box mount (inotify watch descriptors {wds:?})"
    );
    assert_ne!(other_wd, wds[0], "an unrelated file shares the kernel inode of the hard-linked one");

    // readdir's d_ino agrees too.
    for (dir, name) in [("d1", "original"), ("d2", "second"), ("d1/sub", "third")] {
        use std::os::unix::fs::DirEntryExt;
        let de = fs::read_dir(em.join(dir))
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.file_name() == name)
            .unwrap_or_else(|| panic!("{dir}/{name} missing from readdir via ext4box"));
        assert_eq!(de.ino(), want_ino, "d_ino of {dir}/{name} via ext4box");
    }

    assert!(m.alive());
    m.unmount();
    kernel_umount(&km);
    assert_eq!(hash_path(&img), image_hash, "the image changed while mounted read-only");
}
