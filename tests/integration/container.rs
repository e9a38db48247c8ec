//! The Containerfile: built with podman from local images (no registry is reachable here), and its final
//! image run with `--device /dev/fuse --cap-add SYS_ADMIN` to mount an image from a volume, read it, write
//! it and unmount it; the image is e2fsck-clean and holds what was written. See scripts/container-test.sh.
//! Needs root, podman, runc and debootstrap (scripts/setup.sh installs them).

use std::process::Command;
use std::time::Duration;

use crate::common::*;

#[test]
fn containerfile_builds_and_its_image_mounts_an_image_from_a_volume() {
    // A container starts in a copy of the mount namespace, which would keep every other test's FUSE
    // mount alive past its unmount (its server waits for the copy to go): no other test mounts meanwhile.
    let Some(_machine) = require_root_and_fuse_alone() else {
        return;
    };
    if Command::new("podman").arg("--version").output().is_err() {
        assert!(!is_ci(), "podman is not installed (scripts/setup.sh installs it)");
        eprintln!("skipping: podman is not installed");
        return;
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/container-test.sh");
    let out =
        run_timeout(Command::new("bash").arg(script), Duration::from_secs(1200)).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("container: ok"),
        "{}",
        output_text(&out)
    );
}
