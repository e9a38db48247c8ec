//! Mounting without root, as an ordinary user (`ext4box-test`, made by scripts/setup.sh):
//! - through fusermount3 (libfuse's setuid helper);
//! - inside a user namespace that owns its mount namespace (`unshare -Urm`).
//!
//! In both the user mounts with `--explain`, writes a tree, checks its worker's confinement in /proc, and
//! unmounts; then `e2fsck -fn` is clean and the kernel reads the tree back.
//!
//! `/dev/fuse` is 0600 on these machines (distributions ship it 0666): each test runs in a private mount
//! namespace with a 0666 node bound over it, leaving the host's alone. Needs root (to set that up and to
//! become the user) and /dev/fuse.

use std::fs::{self, File};
use std::path::Path;
use std::process::Command;
use std::process::Output;

use crate::common::*;

/// The shell workload: mount with --explain, write a tree, save the worker's /proc status, unmount.
const WORKLOAD: &str = r#"
$B mount --explain img mnt > explain.txt 2> mount.err || { echo "mount failed: $(cat mount.err)"; exit 1; }
grep " $(pwd)/mnt " /proc/self/mountinfo > mountinfo.txt
mkdir -p mnt/dir/sub && echo hello > mnt/dir/hello && ln -s dir/hello mnt/link
head -c 300000 /dev/urandom > mnt/dir/sub/big && cp mnt/dir/sub/big big.copy
setfattr -n user.note -v remembered mnt/dir/hello 2>/dev/null || true
for pid in $(pgrep -f "ext4box worker --mountpoint $(pwd)/mnt"); do cat /proc/$pid/status > worker.status; done
$B unmount mnt || { echo unmount failed; exit 1; }
if grep -q " $(pwd)/mnt " /proc/self/mountinfo; then echo still mounted; exit 1; fi
if pgrep -f "ext4box worker --mountpoint $(pwd)/mnt" >/dev/null; then echo worker still runs; exit 1; fi
"#;

/// Checks what the workload left: the explain output, the confinement, the image.
fn check(scratch: &Scratch, out: &Output, mode_words: &str) {
    assert!(out.status.success(), "the user's session failed:\n{}", output_text(out));
    let explain = fs::read_to_string(scratch.path("explain.txt")).unwrap();
    assert!(explain.contains(mode_words), "--explain does not name the mode ({mode_words}):\n{explain}");
    for step in ["no_new_privs", "Landlock: fully enforced", "seccomp: allow-list installed", "capabilities:"] {
        assert!(explain.contains(step), "--explain lacks '{step}':\n{explain}");
    }
    let mi = fs::read_to_string(scratch.path("mountinfo.txt")).unwrap();
    assert!(mi.contains(" - fuse.ext4box "), "not a fuse.ext4box mount: {mi}");
    let status = fs::read_to_string(scratch.path("worker.status")).expect("the worker's /proc status");
    assert_eq!(status_field(&status, "NoNewPrivs"), "1", "no_new_privs:\n{status}");
    assert_eq!(status_field(&status, "Seccomp"), "2", "seccomp filter mode:\n{status}");
    assert_eq!(status_field(&status, "CapEff"), "0000000000000000", "effective capabilities:\n{status}");
    assert_eq!(status_field(&status, "CapPrm"), "0000000000000000", "permitted capabilities:\n{status}");
    let img = scratch.path("img");
    assert_fsck_clean(&img);
    let kmnt = scratch.mkdir("kernel");
    kernel_mount(&img, &kmnt, "ro");
    let hello = fs::read(kmnt.join("dir/hello"));
    let big = fs::read(kmnt.join("dir/sub/big"));
    let link = fs::read_link(kmnt.join("link"));
    kernel_umount(&kmnt);
    assert_eq!(hello.unwrap(), b"hello\n");
    assert!(big.unwrap() == fs::read(scratch.path("big.copy")).unwrap(), "dir/sub/big differs");
    assert_eq!(link.unwrap(), Path::new("dir/hello"));
}

#[test]
fn an_ordinary_user_mounts_through_fusermount3() {
    // `as_user` runs in a copy of the mount namespace, which would keep every other test's FUSE mount
    // alive past its unmount (its server waits for the copy to go): no other test mounts meanwhile.
    let Some(_machine) = require_root_and_fuse_alone() else {
        return;
    };
    let Some(user) = test_user() else { return };
    let s = Scratch::new("rootless-fusermount");
    let img = s.path("img");
    mkfs(&img, 64 << 20, &["-E", &format!("root_owner={}:{}", user.0, user.1)]);
    let mnt = s.mkdir("mnt");
    hand_to_user(&s, &[&img, &mnt], user);
    let out = as_user(&s, WORKLOAD, "");
    check(&s, &out, "fusermount3");
}

#[test]
fn root_of_a_user_namespace_mounts_with_mount2() {
    // `as_user` runs in a copy of the mount namespace, which would keep every other test's FUSE mount
    // alive past its unmount (its server waits for the copy to go): no other test mounts meanwhile.
    let Some(_machine) = require_root_and_fuse_alone() else {
        return;
    };
    let Some(user) = test_user() else { return };
    let s = Scratch::new("rootless-userns");
    let img = s.path("img");
    // Inside `unshare -Urm` the user is uid 0: the image's root directory belongs to root.
    mkfs(&img, 64 << 20, &[]);
    let mnt = s.mkdir("mnt");
    hand_to_user(&s, &[&img, &mnt], user);
    // The registry's first place under /tmp is taken (as by another user, or a namespace number reused):
    // unmount must still find the server and wait for it (the workload checks the worker is gone).
    let taken = "first=\"/tmp/ext4box-$(awk '{print $2}' /proc/self/uid_map)-$(readlink /proc/self/ns/user | tr -dc 0-9)\"\n\
                 rm -rf \"$first\" && ln -s /nonexistent \"$first\"";
    let out = as_user(&s, &format!("{taken}\n{WORKLOAD}"), "unshare -Urm");
    check(&s, &out, "user namespace");
    let explain = fs::read_to_string(s.path("explain.txt")).unwrap();
    assert!(explain.contains("identity: kept"), "the identity that cannot change must be said:\n{explain}");
}

#[test]
fn without_any_way_to_mount_one_line_says_what_to_install() {
    // `as_user` runs in a copy of the mount namespace, which would keep every other test's FUSE mount
    // alive past its unmount (its server waits for the copy to go): no other test mounts meanwhile.
    let Some(_machine) = require_root_and_fuse_alone() else {
        return;
    };
    let Some(user) = test_user() else { return };
    let s = Scratch::new("rootless-none");
    let img = s.path("img");
    mkfs(&img, 16 << 20, &[]);
    let mnt = s.mkdir("mnt");
    hand_to_user(&s, &[&img, &mnt], user);
    // A PATH without fusermount3, and no mount service socket at its default place in this namespace.
    let out = as_user(
        &s,
        "mkdir -p empty-bin; PATH=$(pwd)/empty-bin $B mount img mnt 2> err.txt; echo \"rc=$?\" > rc.txt",
        "",
    );
    assert!(out.status.success(), "{}", output_text(&out));
    let rc = fs::read_to_string(s.path("rc.txt")).unwrap();
    let err = fs::read_to_string(s.path("err.txt")).unwrap();
    assert_eq!(rc.trim(), "rc=1", "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    for word in ["fusermount3", "fuse3", "unshare -Urm", "mount service"] {
        assert!(err.contains(word), "the message should name {word}: {err}");
    }
}

/// Runs `script` as the test user and returns what it printed on stdout, failing on a non-zero exit.
fn user_script(s: &Scratch, script: &str) -> String {
    let out = as_user(s, script, "");
    assert!(out.status.success(), "the user's session failed:\n{}", output_text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `fakeroot`: an ordinary user populates an image with root-owned files, a setuid file and a root-owned
/// directory, which the kernel then sees so. `uid=`/`gid=`/`umask=` change what `stat` shows and leave the
/// image as it is.
#[test]
fn fakeroot_and_presented_owners_as_an_ordinary_user() {
    // `as_user` runs in a copy of the mount namespace, which would keep every other test's FUSE mount
    // alive past its unmount (its server waits for the copy to go): no other test mounts meanwhile.
    let Some(_machine) = require_root_and_fuse_alone() else {
        return;
    };
    let Some(user) = test_user() else { return };
    let s = Scratch::new("rootless-fakeroot");
    let img = s.path("img");
    mkfs(&img, 32 << 20, &["-E", &format!("root_owner={}:{}", user.0, user.1)]);
    let mnt = s.mkdir("mnt");
    hand_to_user(&s, &[&img, &mnt], user);
    // fuse2fs's call shape, as a script written for fuse2fs would call it.
    user_script(
        &s,
        r#"$B img mnt -o fakeroot
mkdir mnt/etc && echo secret > mnt/etc/shadow && echo '#!/bin/sh' > mnt/su
chown 0:0 mnt/etc mnt/etc/shadow mnt/su && chmod 0700 mnt/etc && chmod 4755 mnt/su && chmod 0600 mnt/etc/shadow
$B unmount mnt"#,
    );
    assert_fsck_clean(&img);
    let kmnt = s.mkdir("kernel");
    kernel_mount(&img, &kmnt, "ro");
    let st = |p: &str| lstat(&kmnt.join(p)).unwrap();
    let (etc, shadow, su) = (st("etc"), st("etc/shadow"), st("su"));
    let secret = fs::read(kmnt.join("etc/shadow"));
    kernel_umount(&kmnt);
    assert_eq!((etc.uid, etc.gid, etc.mode & 0o7777), (0, 0, 0o700), "etc as the kernel sees it");
    assert_eq!((shadow.uid, shadow.mode & 0o7777), (0, 0o600));
    assert_eq!((su.uid, su.gid, su.mode & 0o7777), (0, 0, 0o4755), "a setuid root file");
    assert_eq!(secret.unwrap(), b"secret\n");

    let before = hash_path(&img);
    // Presented as the user's own (the kernel checks permissions against what is presented).
    let shown = user_script(
        &s,
        &format!(
            "$B mount img mnt -o ro,uid={},gid=5678,umask=027\nstat -c '%u %g %a %n' mnt/etc mnt/su\n$B unmount mnt",
            user.0
        ),
    );
    assert_eq!(hash_path(&img), before, "presenting other owners must not change the image");
    let lines: Vec<&str> = shown.lines().collect();
    assert!(lines.contains(&format!("{} 5678 700 mnt/etc", user.0).as_str()), "{shown}");
    assert!(lines.contains(&format!("{} 5678 4750 mnt/su", user.0).as_str()), "umask 027 clears o+rx: {shown}");
}

/// A GPT disk image with two ext4 partitions: each mounts by partition number and by byte offset, and
/// writing one leaves the other byte-for-byte unchanged.
#[test]
fn partitions_of_a_gpt_disk_image_by_number_and_offset() {
    // `as_user` runs in a copy of the mount namespace, which would keep every other test's FUSE mount
    // alive past its unmount (its server waits for the copy to go): no other test mounts meanwhile.
    let Some(_machine) = require_root_and_fuse_alone() else {
        return;
    };
    let Some(user) = test_user() else { return };
    let s = Scratch::new("rootless-gpt");
    let disk = s.path("img");
    let f = File::create(&disk).unwrap();
    f.set_len(80 << 20).unwrap();
    drop(f);
    sfdisk(&disk, "label: gpt\nstart=2048, size=65536, type=linux\nstart=69632, size=81920, type=linux\n");
    let parts = [(2048u64 * 512, 65536u64 * 512), (69632 * 512, 81920 * 512)];
    for (i, (off, len)) in parts.iter().enumerate() {
        let out = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", &format!("part{}", i + 1)])
            .arg("-E")
            .arg(format!("offset={off},root_owner={}:{}", user.0, user.1))
            .arg(&disk)
            .arg(format!("{}k", len / 1024))
            .output()
            .unwrap();
        assert!(out.status.success(), "mkfs: {}", output_text(&out));
    }
    let mnt = s.mkdir("mnt");
    hand_to_user(&s, &[&disk, &mnt], user);
    let range = |i: usize| {
        let all = fs::read(&disk).unwrap();
        let (off, len) = parts[i];
        hash_bytes(&all[off as usize..(off + len) as usize])
    };
    let p2_before = range(1);
    user_script(&s, "$B mount img mnt -o partition=1 && echo one > mnt/which && $B unmount mnt");
    assert_eq!(range(1), p2_before, "writing partition 1 changed partition 2");
    let p1_before = range(0);
    user_script(&s, &format!("$B mount img mnt -o offset={} && echo two > mnt/which && $B unmount mnt", parts[1].0));
    assert_eq!(range(0), p1_before, "writing partition 2 changed partition 1");
    let read = user_script(
        &s,
        &format!(
            "$B mount img mnt -o ro,partition=2 && cat mnt/which && $B unmount mnt && \
             $B mount img mnt -o ro,offset={} && cat mnt/which && $B unmount mnt",
            parts[0].0
        ),
    );
    assert_eq!(read, "two\none\n");
    // Each partition, cut out of the disk, is a clean filesystem.
    let all = fs::read(&disk).unwrap();
    for (i, (off, len)) in parts.iter().enumerate() {
        let p = s.path(&format!("part{i}.img"));
        fs::write(&p, &all[*off as usize..(off + len) as usize]).unwrap();
        assert_fsck_clean(&p);
    }
    // A partition that does not exist, and a bare filesystem asked for a partition: one line each.
    let out = as_user(&s, "$B mount img mnt -o partition=3", "");
    assert!(!out.status.success());
    assert_eq!(stderr_lines(&out).len(), 1, "{}", output_text(&out));
    assert!(output_text(&out).contains("partition 3"), "{}", output_text(&out));
}

/// An image passed as an inherited descriptor (`/proc/self/fd/N`), as container runtimes pass images
/// they opened themselves; a read-only descriptor with `rw` is one clear line, not a silent fallback.
#[test]
fn image_as_an_inherited_descriptor() {
    // `as_user` runs in a copy of the mount namespace, which would keep every other test's FUSE mount
    // alive past its unmount (its server waits for the copy to go): no other test mounts meanwhile.
    let Some(_machine) = require_root_and_fuse_alone() else {
        return;
    };
    let Some(user) = test_user() else { return };
    let s = Scratch::new("rootless-fd");
    let img = s.path("img");
    mkfs(&img, 32 << 20, &["-E", &format!("root_owner={}:{}", user.0, user.1)]);
    let mnt = s.mkdir("mnt");
    hand_to_user(&s, &[&img, &mnt], user);
    user_script(&s, "exec 7<>img; $B mount /proc/self/fd/7 mnt && echo via-fd > mnt/f && $B unmount mnt");
    assert_fsck_clean(&img);
    assert!(debugfs(&img, "cat /f").contains("via-fd"));
    let out = as_user(&s, "exec 7<img; $B mount /proc/self/fd/7 mnt", "");
    assert!(!out.status.success(), "rw on a read-only descriptor must fail");
    let lines = stderr_lines(&out);
    assert!(lines.len() == 1 && lines[0].contains("read-only") && lines[0].contains("-o ro"), "{lines:?}");
    let text = user_script(&s, "exec 7<img; $B mount /proc/self/fd/7 mnt -o ro && cat mnt/f && $B unmount mnt");
    assert_eq!(text, "via-fd\n");
    // rw on an image the user may only read: one line, never a silent read-only mount.
    std::os::unix::fs::PermissionsExt::set_mode(&mut fs::metadata(&img).unwrap().permissions(), 0o444);
    fs::set_permissions(&img, std::os::unix::fs::PermissionsExt::from_mode(0o444)).unwrap();
    let out = as_user(&s, "$B mount img mnt", "");
    assert!(!out.status.success(), "rw on a read-only image must fail");
    let lines = stderr_lines(&out);
    assert!(lines.len() == 1 && lines[0].contains("-o ro"), "{lines:?}");
}

/// `lockfile=`: exists while mounted, a second mount naming it is refused, gone after the unmount.
#[test]
fn lockfile_lives_as_long_as_the_mount() {
    // `as_user` runs in a copy of the mount namespace, which would keep every other test's FUSE mount
    // alive past its unmount (its server waits for the copy to go): no other test mounts meanwhile.
    let Some(_machine) = require_root_and_fuse_alone() else {
        return;
    };
    let Some(user) = test_user() else { return };
    let s = Scratch::new("rootless-lockfile");
    let img = s.path("img");
    let img2 = s.path("img2");
    mkfs(&img, 16 << 20, &[]);
    mkfs(&img2, 16 << 20, &[]);
    let mnt = s.mkdir("mnt");
    let mnt2 = s.mkdir("mnt2");
    hand_to_user(&s, &[&img, &img2, &mnt, &mnt2], user);
    let text = user_script(
        &s,
        r#"$B mount img mnt -o ro,lockfile=lock && test -f lock && echo held
$B mount img2 mnt2 -o ro,lockfile=lock 2> second.err; echo "second=$?"
$B unmount mnt && test ! -e lock && echo released"#,
    );
    assert_eq!(text, "held\nsecond=1\nreleased\n");
    let err = fs::read_to_string(s.path("second.err")).unwrap();
    assert!(err.lines().count() == 1 && err.contains("lock file"), "{err}");
}
