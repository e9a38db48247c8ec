//! The options fuse2fs users pass, with fuse2fs's meaning: errors=, allow_root, kernel, minixdf/bsddf,
//! subtype=, cache_size=, acl, -s. (fakeroot, uid/gid/umask, partition=, lockfile= and descriptors as
//! sources are tested as an ordinary user in rootless.rs.) Needs root and /dev/fuse.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::common::*;

/// An image whose group 0 block bitmap is zeroed: reads are fine, the first allocation in group 0 finds
/// the group's own metadata marked free, a corruption found while writing.
fn image_with_a_zeroed_bitmap(s: &Scratch, name: &str) -> std::path::PathBuf {
    let img = s.path(name);
    mkfs(&img, 64 << 20, &["-b", "4096"]);
    let dump = run_ok(Command::new("dumpe2fs").arg(&img));
    let block: u64 = dump
        .lines()
        .find_map(|l| l.trim().strip_prefix("Block bitmap at "))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .expect("dumpe2fs names group 0's block bitmap");
    let f = fs::OpenOptions::new().write(true).open(&img).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0u8; 4096], block * 4096).unwrap();
    img
}

/// Writes a file and fsyncs it; the errno of the first failure, if any.
fn write_fsync(p: &Path) -> Option<i32> {
    use std::io::Write;
    let mut f = fs::File::create(p).ok()?;
    let r = f.write_all(&[7u8; 20000]).and_then(|_| f.sync_all());
    r.err().and_then(|e| e.raw_os_error())
}

/// The mount itself turns read-only (as the kernel's remount-ro shows in /proc/mounts): the supervisor
/// remounts it when the worker says so, a moment after the failing request.
fn assert_read_only_soon(mnt: &Path) {
    let ro = |m: &MountInfo| m.mount_opts.split(',').any(|o| o == "ro");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !mountinfo_entry(mnt).is_some_and(|m| ro(&m)) {
        assert!(std::time::Instant::now() < deadline, "the mount is still rw: {:?}", mountinfo_entry(mnt));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn errors_option_decides_what_a_corruption_found_while_writing_does() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("opt-errors");
    let mnt = s.mkdir("mnt");
    // continue: the write fails, the mount stays writable.
    let img = image_with_a_zeroed_bitmap(&s, "continue.img");
    let m = ext4box_mount_ok(&img, &mnt, "errors=continue");
    assert_eq!(write_fsync(&mnt.join("new")), Some(libc::EUCLEAN), "errors=continue: the damaged write");
    // (Anything needing a block of group 0 meets the damage again; an empty file needs none.)
    fs::File::create(mnt.join("still-writable")).expect("errors=continue keeps the mount writable");
    m.unmount();
    // remount-ro: the write fails, every later write is EROFS, reads go on.
    let img = image_with_a_zeroed_bitmap(&s, "ro.img");
    let m = ext4box_mount_ok(&img, &mnt, "errors=remount-ro");
    assert_eq!(write_fsync(&mnt.join("new")), Some(libc::EUCLEAN), "errors=remount-ro: the damaged write");
    let e = fs::File::create(mnt.join("after")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "errors=remount-ro: later writes");
    assert!(fs::read_dir(&mnt).is_ok(), "reads go on after remount-ro");
    assert_read_only_soon(&mnt);
    m.unmount();
    // panic: the server stops and the mount is taken away.
    let img = image_with_a_zeroed_bitmap(&s, "panic.img");
    let m = ext4box_mount_ok(&img, &mnt, "errors=panic");
    let _ = write_fsync(&mnt.join("new"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while (m.pids.iter().any(|&p| pid_alive(p)) || mountinfo_entry(&mnt).is_some())
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(m.pids.iter().all(|&p| !pid_alive(p)), "errors=panic: the server still runs");
    assert!(mountinfo_entry(&mnt).is_none(), "errors=panic: the mount is still there");
}

#[test]
fn allow_root_lets_in_root_and_the_owner_only() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let Some(_) = test_user() else { return };
    let s = Scratch::new("opt-allow-root");
    std::fs::set_permissions(s.path(""), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let img = s.path("img");
    mkfs(&img, 16 << 20, &[]);
    let mnt = s.mkdir("mnt");
    let as_test_user = |mnt: &Path| {
        Command::new("runuser").args(["-u", TEST_USER, "--", "ls", "-d"]).arg(mnt.join("lost+found")).output().unwrap()
    };
    // allow_root on a mount made by root: the test user is turned away.
    let m = ext4box_mount_ok(&img, &mnt, "allow_root");
    let mi = mountinfo_entry(&mnt).unwrap();
    assert!(mi.super_opts.contains("allow_other"), "allow_root asks the kernel for allow_other: {mi:?}");
    let out = as_test_user(&mnt);
    assert!(!out.status.success() && output_text(&out).contains("Permission denied"), "{}", output_text(&out));
    assert!(fs::metadata(mnt.join("lost+found")).is_ok(), "root (the owner) gets in");
    m.unmount();
    // allow_other: everyone.
    let m = ext4box_mount_ok(&img, &mnt, "allow_other");
    let out = as_test_user(&mnt);
    assert!(out.status.success(), "allow_other: {}", output_text(&out));
    m.unmount();
}

#[test]
fn kernel_subtype_statfs_style_cache_size_acl_and_single_thread() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("opt-misc");
    let img = s.path("img");
    mkfs(&img, 64 << 20, &[]);
    let mnt = s.mkdir("mnt");
    // kernel: allow_other, kernel permission checks, suid and device files.
    let m = ext4box_mount_ok(&img, &mnt, "kernel");
    let mi = mountinfo_entry(&mnt).unwrap();
    assert!(mi.super_opts.contains("allow_other") && mi.super_opts.contains("default_permissions"), "{mi:?}");
    assert!(!mi.mount_opts.contains("nosuid") && !mi.mount_opts.contains("nodev"), "{mi:?}");
    m.unmount();
    // subtype: the type /proc/mounts shows; unmount still finds it.
    let out = ext4box_mount(&img, &mnt, "subtype=diskimage");
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(mountinfo_entry(&mnt).unwrap().fstype, "fuse.diskimage");
    assert!(ext4box_unmount(&mnt).status.success());
    // bsddf (the default) leaves the metadata out of the size; minixdf counts every block.
    let blocks = |opts: &str| {
        let m = ext4box_mount_ok(&img, &mnt, opts);
        let st = statvfs(&mnt).unwrap();
        m.unmount();
        st.f_blocks * st.f_frsize / 1024
    };
    let (bsd, minix) = (blocks("ro,bsddf"), blocks("ro,minixdf"));
    assert_eq!(minix, 64 << 10, "minixdf: every block of the 64 MiB image");
    assert!(bsd < minix, "bsddf leaves the metadata out: {bsd} vs {minix}");
    assert_eq!(bsd, blocks("ro"), "bsddf is the default");
    // A tiny block cache, POSIX ACLs, one serving thread: a tree written and read back the same.
    let mut args = vec!["mount".to_string(), img.display().to_string(), mnt.display().to_string()];
    args.extend(["-o".into(), "cache_size=64K,acl,noatime".into(), "-s".into()]);
    let out = Command::new(env!("CARGO_BIN_EXE_ext4box")).args(&args).output().unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    for i in 0..200 {
        fs::create_dir_all(mnt.join(format!("d{}/e{i}", i % 7))).unwrap();
        fs::write(mnt.join(format!("d{}/e{i}/f", i % 7)), pseudo_random(i, 3000)).unwrap();
    }
    set_xattr(&mnt.join("d0"), "system.posix_acl_access", &acl_user_read(4242)).unwrap();
    let before = walk(&mnt, &WalkOpts::default());
    assert!(ext4box_unmount(&mnt).status.success());
    assert_fsck_clean(&img);
    let kmnt = s.mkdir("kernel");
    kernel_mount(&img, &kmnt, "ro");
    let after = walk(&kmnt, &WalkOpts::default());
    kernel_umount(&kmnt);
    assert_walks_equal("ext4box (cache_size=64K, -s)", &before, "kernel", &after);
}

/// A POSIX ACL granting user `uid` read access, in the xattr format (`system.posix_acl_access`).
fn acl_user_read(uid: u32) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec(); // version
    let mut entry = |tag: u16, perm: u16, id: u32| {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    };
    entry(0x01, 7, u32::MAX); // USER_OBJ rwx
    entry(0x02, 4, uid); // USER r
    entry(0x04, 5, u32::MAX); // GROUP_OBJ r-x
    entry(0x10, 5, u32::MAX); // MASK r-x
    entry(0x20, 5, u32::MAX); // OTHER r-x
    v
}

#[test]
fn bad_fuse2fs_options_get_one_line() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("opt-bad");
    let img = s.path("img");
    mkfs(&img, 16 << 20, &[]);
    let mnt = s.mkdir("mnt");
    for (opts, word) in [
        ("errors=sometimes", "errors"),
        ("umask=99", "umask"),
        ("cache_size=huge", "cache_size"),
        ("allow_root,allow_other", "allow_root"),
        ("partition=1,offset=4096", "partition"),
        ("partition=0", "partition"),
        ("subtype=a/b", "subtype"),
        ("no_default_opts", "no_default_opts"),
        ("fakeroot,kernel", "fakeroot"),
        ("fakeroot,allow_other", "fakeroot"),
    ] {
        let out = ext4box_mount(&img, &mnt, opts);
        assert!(!out.status.success(), "-o {opts} must be refused");
        let lines = stderr_lines(&out);
        assert!(lines.len() == 1 && lines[0].contains(word), "-o {opts}: {lines:?}");
        assert!(mountinfo_entry(&mnt).is_none());
    }
}

/// `ext4box unmount` takes away only ext4box mounts: another FUSE filesystem (here fuse2fs) is refused
/// with one line and stays mounted.
#[test]
fn unmount_refuses_another_fuse_filesystem() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("opt-foreign");
    let img = s.path("img");
    mkfs(&img, 16 << 20, &[]);
    let mnt = s.mkdir("mnt");
    let out = Command::new("fuse2fs").arg(&img).arg(&mnt).args(["-o", "ro"]).output().expect("fuse2fs");
    assert!(out.status.success(), "fuse2fs: {}", output_text(&out));
    let fstype = mountinfo_entry(&mnt).expect("fuse2fs mounted").fstype;
    let out = ext4box_unmount(&mnt);
    let still = mountinfo_entry(&mnt).is_some();
    let _ = Command::new("umount").arg(&mnt).status();
    assert!(!out.status.success(), "ext4box unmount took away a {fstype} mount");
    assert_eq!(stderr_lines(&out).len(), 1, "{}", output_text(&out));
    assert!(output_text(&out).contains("not an ext4box mount"), "{}", output_text(&out));
    assert!(still, "the foreign mount was taken away");
}

/// An image whose directory `/d` has a block with a bad checksum: listing it finds the damage.
fn image_with_a_damaged_directory(s: &Scratch, name: &str) -> std::path::PathBuf {
    let img = s.path(name);
    mkfs(&img, 16 << 20, &["-b", "4096"]);
    debugfs_w(&img, "mkdir d");
    debugfs_w(&img, "write /dev/null d/file");
    let block: u64 = debugfs(&img, "blocks /d").trim().parse().expect("debugfs names /d's block");
    // Byte 40 is inside the entries (`.`, `..`, `file`), covered by the block's checksum.
    let f = fs::OpenOptions::new().read(true).write(true).open(&img).unwrap();
    let mut b = [0u8; 1];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, block * 4096 + 40).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[b[0] ^ 0x5a], block * 4096 + 40).unwrap();
    img
}

/// As in the kernel, `errors=` applies to a corruption any operation finds on a writable mount, a read
/// too: a directory block with a bad checksum, skipped by a listing (the kernel skips it as well), stops
/// writing as surely as one found by a create.
#[test]
fn errors_option_applies_to_a_corruption_found_by_a_read() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("opt-errors-read");
    let mnt = s.mkdir("mnt");
    let listing = |mnt: &Path| -> Vec<String> {
        let d = fs::read_dir(mnt.join("d")).expect("the damaged directory opens");
        d.map(|e| e.expect("listing").file_name().to_string_lossy().into_owned()).collect()
    };
    let img = image_with_a_damaged_directory(&s, "ro.img");
    let m = ext4box_mount_ok(&img, &mnt, "errors=remount-ro");
    fs::File::create(mnt.join("before")).expect("writable before the damage is found");
    assert_eq!(listing(&mnt), Vec::<String>::new(), "the damaged block is skipped");
    let e = fs::File::create(mnt.join("after")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "errors=remount-ro: a write after the damaged read");
    m.unmount();
    let img = image_with_a_damaged_directory(&s, "continue.img");
    let m = ext4box_mount_ok(&img, &mnt, "errors=continue");
    assert_eq!(listing(&mnt), Vec::<String>::new(), "the damaged block is skipped");
    fs::File::create(mnt.join("after")).expect("errors=continue keeps the mount writable");
    m.unmount();
    // A lookup in it finds the damage too, and reports it.
    let img = image_with_a_damaged_directory(&s, "lookup.img");
    let m = ext4box_mount_ok(&img, &mnt, "errors=remount-ro");
    assert_eq!(fs::metadata(mnt.join("d/file")).unwrap_err().raw_os_error(), Some(libc::EUCLEAN), "lookup");
    let e = fs::File::create(mnt.join("after")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "errors=remount-ro: a write after the damaged lookup");
    assert_read_only_soon(&mnt);
    m.unmount();
}
