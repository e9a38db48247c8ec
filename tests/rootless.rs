//! Mounting without root, as an ordinary user (`ext4box-test`, made by scripts/setup.sh):
//! - through fusermount3 (libfuse's setuid helper);
//! - inside a user namespace that owns its mount namespace (`unshare -Urm`).
//! In both the user mounts with `--explain`, writes a tree, checks its worker's confinement in /proc, and
//! unmounts; then `e2fsck -fn` is clean and the kernel reads the tree back.
//!
//! `/dev/fuse` is 0600 on these machines (distributions ship it 0666): each test runs in a private mount
//! namespace with a 0666 node bound over it, leaving the host's alone. Needs root (to set that up and to
//! become the user) and /dev/fuse.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use common::*;

pub const TEST_USER: &str = "ext4box-test";

/// The test user's uid and gid, or `None` (then the test says so; under CI it fails).
fn test_user() -> Option<(u32, u32)> {
    let out = Command::new("id").arg(TEST_USER).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let num = |key: &str| text.split(key).nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok();
    match (out.status.success(), num("uid="), num("gid=")) {
        (true, Some(u), Some(g)) => Some((u, g)),
        _ => {
            assert!(!is_ci(), "user {TEST_USER} is missing: scripts/setup.sh makes it");
            eprintln!("user {TEST_USER} is missing (scripts/setup.sh makes it): skipped");
            None
        }
    }
}

/// Runs `script` (bash) as the test user, in a private mount namespace whose /dev/fuse is 0666.
fn as_user(scratch: &Scratch, script: &str, wrap: &str) -> Output {
    let file = scratch.path("script.sh");
    fs::write(
        &file,
        format!("set -u\nB={}\ncd {}\n{script}\n", env!("CARGO_BIN_EXE_ext4box"), scratch.path("").display()),
    )
    .unwrap();
    let node = scratch.path("fuse-node");
    let outer = format!(
        "mknod {node} c 10 229 && chmod 666 {node} && mount --bind {node} /dev/fuse && \
         runuser -u {TEST_USER} -- {wrap} bash {file}",
        node = node.display(),
        file = file.display()
    );
    Command::new("unshare").args(["-m", "--propagation", "private", "sh", "-c", &outer]).output().unwrap()
}

/// Gives the scratch directory and `paths` in it to the test user.
fn hand_to_user(scratch: &Scratch, paths: &[&Path], (uid, gid): (u32, u32)) {
    for p in std::iter::once(scratch.path("").as_path()).chain(paths.iter().copied()) {
        std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
    }
}

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

fn status_field(status: &str, key: &str) -> String {
    status.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.trim().to_string()).unwrap_or_default()
}

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
    assert_eq!(status_field(&status, "NoNewPrivs:"), "1", "no_new_privs:\n{status}");
    assert_eq!(status_field(&status, "Seccomp:"), "2", "seccomp filter mode:\n{status}");
    assert_eq!(status_field(&status, "CapEff:"), "0000000000000000", "effective capabilities:\n{status}");
    assert_eq!(status_field(&status, "CapPrm:"), "0000000000000000", "permitted capabilities:\n{status}");
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
    if !require_root_and_fuse() {
        return;
    }
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
    if !require_root_and_fuse() {
        return;
    }
    let Some(user) = test_user() else { return };
    let s = Scratch::new("rootless-userns");
    let img = s.path("img");
    // Inside `unshare -Urm` the user is uid 0: the image's root directory belongs to root.
    mkfs(&img, 64 << 20, &[]);
    let mnt = s.mkdir("mnt");
    hand_to_user(&s, &[&img, &mnt], user);
    let out = as_user(&s, WORKLOAD, "unshare -Urm");
    check(&s, &out, "user namespace");
    let explain = fs::read_to_string(s.path("explain.txt")).unwrap();
    assert!(explain.contains("identity: kept"), "the identity that cannot change must be said:\n{explain}");
}

#[test]
fn without_any_way_to_mount_one_line_says_what_to_install() {
    if !require_root_and_fuse() {
        return;
    }
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
