//! Replays, on the stable toolchain, what the fuzz targets (`fuzz/`) run: every minimized finding kept
//! under `fuzz/regressions/<target>/` (each once crashed, hung or ran out of memory; fixed since), a
//! fresh mkfs image through every image target, and the damaged images of `../shared/corpus` up to
//! 2 MiB through the read and write targets. A fixed bug stays fixed without nightly or cargo-fuzz.
//! Needs e2fsprogs only.

use std::path::Path;

use crate::common::*;
use ext4box::fuzzing::TARGETS;

/// Runs `f` on `data` on a thread with a time limit: a hang is a failure, not a stuck test.
fn run_bounded(name: &str, what: &str, f: fn(&[u8]), data: Vec<u8>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        f(&data);
        let _ = tx.send(());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(()) => {}
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("{name} on {what}: still running after 60 s"),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            let msg = handle.join().err().map(|e| {
                e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            });
            panic!("{name} on {what} panicked: {msg:?}");
        }
    }
}

#[test]
fn every_minimized_finding_stays_fixed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut replayed = 0;
    for (name, f) in TARGETS {
        run_bounded(name, "an empty input", *f, Vec::new());
        let Ok(entries) = std::fs::read_dir(dir.join(name)) else { continue };
        for e in entries.flatten() {
            let data = std::fs::read(e.path()).unwrap();
            run_bounded(name, &e.path().display().to_string(), *f, data);
            replayed += 1;
        }
    }
    // Every directory under fuzz/regressions names a target (a typo would skip its files silently).
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        assert!(n == "README.md" || TARGETS.iter().any(|(t, _)| *t == n), "fuzz/regressions/{n} is no target");
    }
    eprintln!("{replayed} minimized findings replayed");
}

#[test]
fn every_image_target_takes_a_real_image() {
    let s = Scratch::new("fuzz-real");
    for (shape, args) in [("4k", &["-b", "4096"][..]), ("1k-inline", &["-b", "1024", "-O", "inline_data"][..])] {
        let img = s.path(&format!("{shape}.img"));
        mkfs(&img, 8 << 20, args);
        let data = std::fs::read(&img).unwrap();
        for (name, f) in TARGETS {
            run_bounded(name, &format!("a fresh {shape} image"), *f, data.clone());
        }
    }
}

#[test]
fn the_damaged_corpus_through_the_read_and_write_targets() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/e2fsprogs");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        assert!(!is_ci(), "../shared/corpus/e2fsprogs is missing");
        eprintln!("../shared/corpus/e2fsprogs is missing: skipped");
        return;
    };
    let targets: Vec<_> =
        TARGETS.iter().filter(|(n, _)| ["image_read", "image_write", "journal", "orphan"].contains(n)).collect();
    let mut images = 0;
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "gz") {
            continue;
        }
        let out = std::process::Command::new("zcat").arg(&p).output().unwrap();
        if out.stdout.len() > 2 << 20 {
            continue;
        }
        images += 1;
        for (name, f) in &targets {
            run_bounded(name, &p.display().to_string(), *f, out.stdout.clone());
        }
    }
    assert!(images > 50, "only {images} corpus images were small enough");
}
