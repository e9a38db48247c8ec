//! POSIX conformance with the `pjdfstest` crate (the Rust rewrite of pjdfstest): the suite runs on a kernel
//! ext4 mount and on an ext4box mount of identical images, and every test that passes on the kernel must
//! pass on ext4box. Afterwards the ext4box image must be e2fsck-clean.
//!
//! Needs root, /dev/fuse, the `pjdfstest` binary (`scripts/setup.sh` installs it with cargo) and a user
//! named `tests` (created here when missing, as the suite's configuration names it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;

/// Tests pjdfstest skips on any FUSE mount because glibc cannot learn the limit it checks; each is covered
/// by a test of its own instead.
const SKIPPED_ON_FUSE: &[(&str, &str)] = &[(
    "link::link_count_max",
    "pathconf(_PC_LINK_MAX) is unknown for FUSE mounts; write_semantics::link_count_stops_at_65000 checks EMLINK",
)];

fn pjdfstest_binary() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    let candidates = [home.join(".cargo/bin/pjdfstest"), PathBuf::from("/usr/local/bin/pjdfstest")];
    candidates.into_iter().find(|p| p.exists()).or_else(|| {
        let out = Command::new("sh").arg("-c").arg("command -v pjdfstest").output().ok()?;
        let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (!p.is_empty()).then(|| PathBuf::from(p))
    })
}

/// Runs the suite on `dir` (with `secondary` on another filesystem for the EXDEV cases); returns each
/// test's outcome (`ok`, `FAILED`, `skipped`, ...) by name, and the whole output.
fn run_suite(bin: &Path, dir: &Path, secondary: &Path) -> (BTreeMap<String, String>, String) {
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pjdfstest.toml");
    let out = run_timeout(
        Command::new(bin).arg("-c").arg(&conf).arg("-p").arg(dir).arg("-s").arg(secondary).env("NO_COLOR", "1"),
        Duration::from_secs(600),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut results = BTreeMap::new();
    for line in text.lines() {
        let clean: String = line.chars().filter(|c| !c.is_control()).collect();
        let mut words = clean.split_whitespace();
        if let (Some(name), Some(_)) = (words.next(), clean.find("  ")) {
            if name.contains("::") {
                let outcome = clean[name.len()..].trim().to_string();
                results.insert(name.to_string(), outcome);
            }
        }
    }
    assert!(
        text.contains("Summary:") && results.len() > 300,
        "pjdfstest did not run to the end on {dir:?}:\n{}\n{}",
        text.lines().rev().take(20).collect::<Vec<_>>().join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
    (results, text)
}

#[test]
fn pjdfstest_passes_wherever_it_passes_on_kernel_ext4() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let Some(bin) = pjdfstest_binary() else {
        assert!(!is_ci(), "pjdfstest is not installed (scripts/setup.sh installs it)");
        eprintln!("skipping: pjdfstest is not installed (cargo install pjdfstest)");
        return;
    };
    if Command::new("getent").args(["passwd", "tests"]).output().map(|o| !o.status.success()).unwrap_or(true) {
        let mut c = Command::new("newusers").stdin(std::process::Stdio::piped()).spawn().unwrap();
        use std::io::Write;
        c.stdin.take().unwrap().write_all(b"tests:x:::Dummy User for pjdfstest:/:/usr/sbin/nologin\n").unwrap();
        assert!(c.wait().unwrap().success(), "could not create the user 'tests'");
    }
    let s = Scratch::new("posix");
    // The suite's unprivileged users must be able to reach the mount points.
    let mut p = s.path("");
    loop {
        let _ = Command::new("chmod").arg("o+x").arg(&p).status();
        if !p.pop() || p.as_os_str().is_empty() {
            break;
        }
    }
    let (kimg, eimg) = (s.path("kernel.img"), s.path("ext4box.img"));
    mkfs(&kimg, 1 << 30, &[]);
    std::fs::copy(&kimg, &eimg).unwrap();
    let (kmnt, emnt, sec) = (s.mkdir("k"), s.mkdir("e"), s.mkdir("secondary"));
    run_ok(Command::new("mount").args(["-t", "tmpfs", "-o", "size=16m", "pjd-secondary"]).arg(&sec));
    kernel_mount(&kimg, &kmnt, "");
    let (kernel, _) = run_suite(&bin, &kmnt, &sec);
    kernel_umount(&kmnt);
    // suid,dev as on the kernel mount, so the same tests apply.
    let m = ext4box_mount_ok(&eimg, &emnt, "allow_other,suid,dev");
    let (ours, text) = run_suite(&bin, &emnt, &sec);
    m.unmount();
    kernel_umount(&sec);
    let regressions: Vec<String> = kernel
        .iter()
        .filter(|(_, r)| r.as_str() == "ok")
        .filter(|(name, _)| ours.get(*name).map(String::as_str) != Some("ok"))
        .filter(|(name, _)| {
            !(ours.get(*name).map(String::as_str) == Some("skipped") && SKIPPED_ON_FUSE.iter().any(|(n, _)| n == name))
        })
        .map(|(name, _)| format!("{name}: {}", ours.get(name).map_or("missing", String::as_str)))
        .collect();
    let passed = ours.values().filter(|r| r.as_str() == "ok").count();
    eprintln!(
        "pjdfstest: kernel ext4 {} ok; ext4box {passed} ok of {}",
        kernel.values().filter(|r| *r == "ok").count(),
        ours.len()
    );
    assert!(
        regressions.is_empty(),
        "tests that pass on kernel ext4 but not on ext4box:\n{}\n--- ext4box output (tail) ---\n{}",
        regressions.join("\n"),
        text.lines().rev().take(40).collect::<Vec<_>>().join("\n")
    );
    assert_fsck_clean(&eimg);
}
