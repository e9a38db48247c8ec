//! Quota images (`-O quota`, with project quota too): ext4box mounts them read-write and keeps the
//! usage in the hidden quota files exact through every kind of change (files written, grown, truncated,
//! hard-linked, unlinked also while open, renamed over, chowned and chgrped across hundreds of ids so that
//! the quota trees grow, xattr blocks, EA inodes, directories made and removed). After the unmount
//! `e2fsck -fn`, which recomputes every id's usage and compares it with the files, is clean, and the
//! kernel reads the tree back as ext4box does. Needs root (loop mounts, chown) and /dev/fuse.

use std::fs;
use std::io::Write;
use std::os::unix::fs::lchown;
use std::path::Path;
use std::time::Duration;

use crate::common::*;

/// `e2fsck -fn` clean, quota included: it recomputes the usage of every id and compares it with the
/// quota files, naming QUOTA where they differ.
fn assert_quota_clean(img: &Path, what: &str) {
    let out =
        run_timeout(std::process::Command::new("e2fsck").arg("-fn").arg(img), std::time::Duration::from_secs(300))
            .unwrap();
    let text = output_text(&out);
    assert!(out.status.success() && !text.contains("QUOTA"), "{what}: e2fsck -fn:\n{text}");
}

/// A 64 MiB image with project quota (256-byte inodes: room for `i_projid`).
fn project_quota_image(s: &Scratch) -> std::path::PathBuf {
    let img = s.path("img");
    mkfs(&img, 64 << 20, &["-b", "4096", "-I", "256", "-O", "quota,project", "-E", "quotatype=prjquota"]);
    img
}

/// Changes of every kind the quota files must follow, in `mnt`.
fn workload(mnt: &Path, with_ea_inodes: bool) {
    let d = mnt.join("owners");
    fs::create_dir(&d).unwrap();
    // 300 owners: more ids than a data block of the quota tree holds (14), across three tree branches.
    for i in 0..300u32 {
        let f = d.join(format!("f{i}"));
        fs::write(&f, pseudo_random(u64::from(i), (i as usize % 7) * 3000)).unwrap();
        lchown(&f, Some(1000 + i), Some(2000 + i % 50)).unwrap();
    }
    // Owners change: the charge moves from id to id.
    for i in (0..300u32).step_by(3) {
        lchown(d.join(format!("f{i}")), Some(5000), None).unwrap();
    }
    for i in (0..300u32).step_by(5) {
        lchown(d.join(format!("f{i}")), None, Some(7000)).unwrap();
    }
    // Growing, truncating, deleting.
    let mut f = fs::OpenOptions::new().append(true).open(d.join("f1")).unwrap();
    f.write_all(&pseudo_random(9, 200_000)).unwrap();
    drop(f);
    fs::OpenOptions::new().write(true).open(d.join("f2")).unwrap().set_len(1).unwrap();
    fs::OpenOptions::new().write(true).open(d.join("f4")).unwrap().set_len(5_000_000).unwrap();
    for i in (10..300u32).step_by(10) {
        fs::remove_file(d.join(format!("f{i}"))).unwrap();
    }
    // A hard link counts once; renaming over a file deletes it; a file unlinked while open is deleted at
    // its last close.
    fs::hard_link(d.join("f11"), mnt.join("link")).unwrap();
    fs::rename(d.join("f13"), d.join("f14")).unwrap();
    let open = fs::File::create(mnt.join("open-unlinked")).unwrap();
    lchown(mnt.join("open-unlinked"), Some(4242), Some(4242)).unwrap();
    (&open).write_all(&pseudo_random(3, 50_000)).unwrap();
    open.sync_all().unwrap();
    fs::remove_file(mnt.join("open-unlinked")).unwrap();
    drop(open);
    // Directories, symlinks and attribute blocks owned by others.
    let sub = mnt.join("sub");
    fs::create_dir(&sub).unwrap();
    for i in 0..200 {
        fs::write(sub.join(format!("entry-with-a-long-name-{i}")), b"x").unwrap();
    }
    lchown(&sub, Some(3000), Some(3000)).unwrap();
    fs::create_dir(mnt.join("gone")).unwrap();
    lchown(mnt.join("gone"), Some(3001), Some(3001)).unwrap();
    fs::remove_dir(mnt.join("gone")).unwrap();
    std::os::unix::fs::symlink("t/".repeat(100), mnt.join("slow-link")).unwrap();
    lchown(mnt.join("slow-link"), Some(3002), Some(3002)).unwrap();
    set_xattr(&d.join("f5"), "user.block", &pseudo_random(5, 600)).unwrap();
    set_xattr(&d.join("f6"), "user.block", &pseudo_random(6, 600)).unwrap();
    set_xattr(&d.join("f6"), "user.block", b"small now").unwrap();
    if with_ea_inodes {
        // Values in EA inodes count as their owner's blocks and inodes, and move with a new owner.
        set_xattr(&d.join("f7"), "user.big", &pseudo_random(7, 30_000)).unwrap();
        set_xattr(&d.join("f8"), "user.big", &pseudo_random(8, 30_000)).unwrap();
        lchown(d.join("f8"), Some(6000), Some(6000)).unwrap();
        set_xattr(&d.join("f9"), "user.big", &pseudo_random(9, 30_000)).unwrap();
        remove_xattr(&d.join("f9"), "user.big").unwrap();
        set_xattr(&d.join("f11"), "user.big", &pseudo_random(11, 30_000)).unwrap();
        fs::remove_file(d.join("f11")).unwrap();
        fs::remove_file(mnt.join("link")).unwrap();
    }
}

#[test]
fn quota_usage_stays_exact_through_every_kind_of_change() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let shapes: [(&str, &[&str], bool); 3] = [
        ("4k", &["-b", "4096", "-O", "quota"], false),
        (
            "1k-project",
            &["-b", "1024", "-I", "256", "-O", "quota,project", "-E", "quotatype=usrquota:grpquota:prjquota"],
            false,
        ),
        ("ea-inode", &["-b", "4096", "-O", "quota,ea_inode"], true),
    ];
    for (name, args, ea) in shapes {
        let s = Scratch::new(&format!("quota-{name}"));
        let img = s.path("img");
        mkfs(&img, 128 << 20, args);
        let mnt = s.mkdir("mnt");
        let m = ext4box_mount_ok(&img, &mnt, "");
        workload(&mnt, ea);
        m.unmount();
        assert_quota_clean(&img, name);

        let k = s.mkdir("kernel");
        kernel_mount(&img, &k, "ro");
        let expected = walk(&k, &WalkOpts::default());
        kernel_umount(&k);
        let m = ext4box_mount_ok(&img, &mnt, "ro");
        let seen = walk(&mnt, &WalkOpts::default());
        m.unmount();
        assert_walks_equal("kernel", &expected, "ext4box", &seen);
        assert!(expected.entries.len() > 450, "{name}: the tree is there: {} entries", expected.entries.len());
    }
}

/// Sets the limits of `id` in quota file inode `qino` of `img` (unmounted): block limits in KiB, inode
/// limits in inodes. The id must have an entry (some usage). No tool here sets limits on an unmounted
/// image (the kernel here has no quota format to mount it read-write), so the entry is patched in place.
fn set_limits(img: &Path, qino: u32, id: u32, blocks: (u64, u64), inodes: (u64, u64)) {
    use std::os::unix::fs::FileExt;
    let bs: u64 = run_ok(std::process::Command::new("dumpe2fs").arg("-h").arg(img))
        .lines()
        .find_map(|l| l.strip_prefix("Block size:").map(|v| v.trim().parse().unwrap()))
        .unwrap();
    let list = debugfs(img, &format!("blocks <{qino}>"));
    let f = fs::OpenOptions::new().read(true).write(true).open(img).unwrap();
    let mut patched = 0;
    for pblk in list.split_whitespace().map(|b| b.parse::<u64>().unwrap()) {
        let mut block = vec![0u8; bs as usize];
        f.read_exact_at(&mut block, pblk * bs).unwrap();
        for q in (0..bs as usize).step_by(1024) {
            for slot in (q + 16..q + 1024 - 71).step_by(72) {
                let e = &mut block[slot..slot + 72];
                let le = |e: &[u8], at: usize| u64::from_le_bytes(e[at..at + 8].try_into().unwrap());
                if u32::from_le_bytes(e[..4].try_into().unwrap()) != id || le(e, 24) == 0 {
                    continue;
                }
                for (at, v) in [(8, inodes.1), (16, inodes.0), (32, blocks.1), (40, blocks.0)] {
                    e[at..at + 8].copy_from_slice(&v.to_le_bytes());
                }
                patched += 1;
            }
        }
        f.write_all_at(&block, pblk * bs).unwrap();
    }
    assert_eq!(patched, 1, "one entry for id {id} in quota inode {qino}");
}

/// Runs `script` with `sh -c` as `uid:gid`.
fn sh_as(uid: u32, gid: u32, script: &str) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    std::process::Command::new("sh").arg("-c").arg(script).uid(uid).gid(gid).output().unwrap()
}

#[test]
fn limits_are_enforced_with_usrquota_and_grpquota_and_root_is_exempt() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("quota-limits");
    let img = s.path("img");
    mkfs(&img, 128 << 20, &["-b", "4096", "-O", "quota"]);
    let mnt = s.mkdir("mnt");
    // Entries for the ids whose limits are set below.
    let m = ext4box_mount_ok(&img, &mnt, "");
    fs::create_dir(mnt.join("u")).unwrap();
    fs::set_permissions(mnt.join("u"), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    fs::write(mnt.join("u/mine"), b"x").unwrap();
    lchown(mnt.join("u/mine"), Some(1000), Some(1000)).unwrap();
    fs::write(mnt.join("u/group"), b"x").unwrap();
    lchown(mnt.join("u/group"), Some(1001), Some(2000)).unwrap();
    m.unmount();
    // uid 1000: at most 1 MiB and 4 inodes; gid 2000: a soft limit of 1 MiB (7 days' grace) only.
    set_limits(&img, 3, 1000, (0, 1024), (0, 4));
    set_limits(&img, 4, 2000, (1024, 0), (0, 0));

    // Other users must reach the mount point.
    fs::set_permissions(mnt.parent().unwrap(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let m = ext4box_mount_ok(&img, &mnt, "usrquota,grpquota,allow_other");
    let out = sh_as(1000, 1000, &format!("dd if=/dev/zero of={}/u/big bs=64k count=32", mnt.display()));
    assert!(!out.status.success(), "writing 2 MiB past a 1 MiB hard limit fails");
    assert!(output_text(&out).contains("Disk quota exceeded"), "{}", output_text(&out));
    let big = fs::metadata(mnt.join("u/big")).unwrap().len();
    assert!(big > 0 && big <= 1 << 20, "written up to the limit: {big}");
    // Inodes: mine and big are two of four.
    let out = sh_as(1000, 1000, &format!("cd {}/u && touch a && touch b && touch c", mnt.display()));
    assert!(output_text(&out).contains("Disk quota exceeded"), "{}", output_text(&out));
    assert!(mnt.join("u/b").exists() && !mnt.join("u/c").exists());
    // Root is not held: a file of uid 1000 grows past the limit when root writes it.
    fs::write(mnt.join("u/rootwritten"), pseudo_random(1, 3 << 20)).unwrap();
    lchown(mnt.join("u/rootwritten"), Some(1000), Some(1000)).unwrap();
    fs::OpenOptions::new().append(true).open(mnt.join("u/rootwritten")).unwrap().write_all(&[1; 100_000]).unwrap();
    // A soft limit only starts the grace period.
    let out = sh_as(1001, 2000, &format!("dd if=/dev/zero of={}/u/soft bs=64k count=32 conv=fsync", mnt.display()));
    assert!(out.status.success(), "past a soft limit within its grace: {}", output_text(&out));
    // Freed space is given back: under the limit again, uid 1000 can write.
    let free_inodes = || statvfs(&mnt).unwrap().f_ffree;
    let before = free_inodes();
    fs::remove_file(mnt.join("u/rootwritten")).unwrap();
    fs::remove_file(mnt.join("u/big")).unwrap();
    // An unlinked file is deleted, and its quota given back, at the kernel's last reference to it: its
    // RELEASE and FORGET come after unlink(2) returns, FORGET on /dev/fuse even with io_uring rings.
    wait_until("both removed files to be deleted", Duration::from_secs(10), || free_inodes() >= before + 2);
    let out = sh_as(1000, 1000, &format!("dd if=/dev/zero of={}/u/again bs=64k count=8", mnt.display()));
    assert!(out.status.success(), "{}", output_text(&out));
    m.unmount();

    assert_quota_clean(&img, "limits");
    let users = debugfs(&img, "lq user");
    let line = users.lines().find(|l| l.split_whitespace().next() == Some("1000")).unwrap();
    assert_eq!(line.split_whitespace().nth(4), Some("4"), "mine, a, b, again: {users}");
}

#[test]
fn a_project_directory_hands_down_its_project_and_keeps_other_projects_out() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("quota-projinherit");
    let img = project_quota_image(&s);
    let mnt = s.mkdir("mnt");
    let m = ext4box_mount_ok(&img, &mnt, "");
    fs::create_dir(mnt.join("proj")).unwrap();
    fs::write(mnt.join("outside"), b"project 0").unwrap();
    m.unmount();
    // No tool here sets a project id on an unmounted image but debugfs (the kernel here cannot mount a
    // quota image read-write): project 42, and PROJINHERIT with the extents flag the directory has.
    let flags = debugfs(&img, "stat /proj")
        .lines()
        .find_map(|l| {
            l.split("Flags: ").nth(1).map(|f| u32::from_str_radix(f.trim().trim_start_matches("0x"), 16).unwrap())
        })
        .unwrap();
    debugfs_w(&img, &format!("set_inode_field /proj flags {:#x}", flags | 0x2000_0000));
    debugfs_w(&img, "set_inode_field /proj projid 42");
    // e2fsck moves the directory's usage to project 42 in the quota file (exit 1: corrected).
    let out = std::process::Command::new("e2fsck").arg("-fy").arg(&img).output().unwrap();
    assert!(matches!(out.status.code(), Some(0 | 1)), "e2fsck -fy:\n{}", output_text(&out));

    let m = ext4box_mount_ok(&img, &mnt, "");
    fs::write(mnt.join("proj/file"), pseudo_random(1, 100_000)).unwrap();
    fs::create_dir(mnt.join("proj/sub")).unwrap();
    fs::write(mnt.join("proj/sub/deeper"), b"also project 42").unwrap();
    std::os::unix::fs::symlink("file", mnt.join("proj/link")).unwrap();
    let exdev = |r: std::io::Result<()>| r.unwrap_err().raw_os_error();
    assert_eq!(exdev(fs::hard_link(mnt.join("outside"), mnt.join("proj/hard"))), Some(libc::EXDEV));
    assert_eq!(exdev(fs::rename(mnt.join("outside"), mnt.join("proj/moved"))), Some(libc::EXDEV));
    // Out of the project is allowed, as in the kernel (the file keeps its project).
    fs::rename(mnt.join("proj/sub/deeper"), mnt.join("left")).unwrap();
    m.unmount();

    assert_quota_clean(&img, "project ids");
    // The kernel's view: lsattr -p prints each file's project id and flags.
    let k = s.mkdir("kernel");
    kernel_mount(&img, &k, "ro");
    let project = |p: &str| -> (u32, String) {
        let out = run_ok(std::process::Command::new("lsattr").arg("-pd").arg(k.join(p)));
        let mut w = out.split_whitespace();
        (w.next().unwrap().parse().unwrap(), w.next().unwrap().to_string())
    };
    let results: Vec<_> = ["proj/file", "proj/sub", "left", "outside"].iter().map(|p| project(p)).collect();
    kernel_umount(&k);
    assert_eq!(results[0].0, 42, "a new file takes its directory's project");
    assert!(!results[0].1.contains('P'), "the flag is for directories, as the kernel's: {}", results[0].1);
    assert_eq!(results[1].0, 42, "so does a new directory");
    assert!(results[1].1.contains('P'), "which inherits the flag: {}", results[1].1);
    assert_eq!(results[2].0, 42, "a file moved out keeps its project");
    assert_eq!(results[3].0, 0, "files outside stay in project 0");
}

/// `chattr -p ID +P` and `lsattr -p` through ext4box (FS_IOC_FSSETXATTR / FSGETXATTR with fsx_projid):
/// the project id and PROJINHERIT are set as the kernel sets them, the file's usage moves to the new
/// project (e2fsck's project usage has no difference), files made in the directory inherit it, and the
/// kernel reads the ids back. Without the project feature a non-zero id is EOPNOTSUPP.
#[test]
fn chattr_sets_project_ids_through_ext4box() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("quota-chattr-project");
    let img = project_quota_image(&s);
    let mnt = s.mkdir("mnt");
    let m = ext4box_mount_ok(&img, &mnt, "");
    fs::create_dir(mnt.join("proj")).unwrap();
    fs::write(mnt.join("proj/before"), pseudo_random(1, 200_000)).unwrap();
    run_ok(std::process::Command::new("chattr").args(["-p", "77", "+P"]).arg(mnt.join("proj")));
    run_ok(std::process::Command::new("chattr").args(["-p", "77"]).arg(mnt.join("proj/before")));
    fs::write(mnt.join("proj/after"), pseudo_random(2, 50_000)).unwrap();
    let lsattr = |p: &Path| -> (u32, String) {
        let out = run_ok(std::process::Command::new("lsattr").arg("-pd").arg(p));
        let mut w = out.split_whitespace();
        (w.next().unwrap().parse().unwrap(), w.next().unwrap().to_string())
    };
    let (id, flags) = lsattr(&mnt.join("proj"));
    assert_eq!(id, 77, "lsattr -p through ext4box");
    assert!(flags.contains('P'), "PROJINHERIT through ext4box: {flags}");
    assert_eq!(lsattr(&mnt.join("proj/after")).0, 77, "a new file inherits the project set by chattr");
    m.unmount();
    assert_quota_clean(&img, "project ids");
    let k = s.mkdir("kernel");
    kernel_mount(&img, &k, "ro");
    let seen: Vec<_> = ["proj", "proj/before", "proj/after"].iter().map(|p| lsattr(&k.join(p))).collect();
    kernel_umount(&k);
    assert!(seen.iter().all(|(id, _)| *id == 77), "the kernel's lsattr -p: {seen:?}");
    assert!(seen[0].1.contains('P') && !seen[1].1.contains('P'), "the kernel's flags: {seen:?}");

    let plain = s.path("plain");
    mkfs(&plain, 32 << 20, &["-b", "4096"]);
    let m = ext4box_mount_ok(&plain, &mnt, "");
    fs::write(mnt.join("f"), b"x").unwrap();
    let out = std::process::Command::new("chattr").args(["-p", "5"]).arg(mnt.join("f")).output().unwrap();
    assert!(
        !out.status.success() && output_text(&out).contains("Operation not supported"),
        "chattr -p without the project feature:\n{}",
        output_text(&out)
    );
    run_ok(std::process::Command::new("chattr").args(["-p", "0"]).arg(mnt.join("f")));
    m.unmount();
    assert_fsck_clean(&plain);
}
