//! `formats`: sequential read and write of one large file through ext4box over each VM disk format
//! it reads (raw, qcow2, VMDK sparse and streamOptimized, VHDX, Android sparse), cold cache.
//!
//! Reads: `cat MNT/file` after a fresh mount and dropped caches. Writes: `dd ... conv=fsync` of MB
//! megabytes into a fresh image, for raw and qcow2 (the formats ext4box writes); `qemu-img check`
//! must pass afterwards. Needs qemu-img (qemu-utils) and img2simg (android-sdk-libsparse-utils).
//! Prints the table on stdout and every sample on stderr.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::common::{self, Bench, die, log, median};
use crate::host;

const READS: [&str; 6] = ["read.raw", "read.qcow2", "read.vmdk", "read-stream.vmdk", "read.vhdx", "read.simg"];
const WRITES: [&str; 2] = ["raw", "qcow2"];

fn ok(cmd: &mut Command) {
    if let Err(e) = common::status_ok(cmd) {
        die(&e);
    }
}

/// Runs `cmd` with stdout to /dev/null; its wall time in seconds.
fn timed(cmd: &mut Command) -> f64 {
    let t0 = Instant::now();
    ok(cmd.stdin(Stdio::null()).stdout(Stdio::null()));
    t0.elapsed().as_secs_f64()
}

pub fn run() -> bool {
    let b = Bench::init_with(3, "ext4box".into());
    let mb = common::env_count("MB", 400);
    common::need("qemu-img", "apt-get install qemu-utils");
    common::need("img2simg", "apt-get install android-sdk-libsparse-utils");

    let w = b.dir.join("formats");
    let mnt = b.mnt("formats");
    let _ = fs::remove_dir_all(&w);
    fs::create_dir_all(w.join("tree")).unwrap_or_else(|e| die(&format!("mkdir {}: {e}", w.display())));
    let src = w.join("src");
    let fill = || -> std::io::Result<()> {
        let mut rnd = File::open("/dev/urandom")?;
        let mut out = File::create(&src)?;
        let mut buf = vec![0u8; 1_000_000];
        for _ in 0..mb {
            rnd.read_exact(&mut buf)?;
            out.write_all(&buf)?;
        }
        Ok(())
    };
    fill().unwrap_or_else(|e| die(&format!("{}: {e}", src.display())));
    fs::copy(&src, w.join("tree/file")).unwrap_or_else(|e| die(&format!("copy: {e}")));
    let tree = w.join("tree");
    host::mkfs(&w.join("read.raw"), 1 << 30, &["-d", tree.to_str().unwrap()]);
    let _ = fs::remove_dir_all(&tree);
    let raw = w.join("read.raw");
    let convert = |to: &str, opts: &[&str]| {
        ok(Command::new("qemu-img").args(["convert", "-O"]).arg(opts[0]).args(&opts[1..]).arg(&raw).arg(w.join(to)));
    };
    convert("read.qcow2", &["qcow2"]);
    convert("read.vmdk", &["vmdk"]);
    convert("read-stream.vmdk", &["vmdk", "-o", "subformat=streamOptimized"]);
    convert("read.vhdx", &["vhdx"]);
    ok(Command::new("img2simg").arg(&raw).arg(w.join("read.simg")));
    let empty = w.join("empty.raw");
    host::mkfs(&empty, 1 << 30, &[]);

    let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for round in 1..=b.rounds {
        log(&format!("round {round} of {}", b.rounds));
        for img in READS {
            common::check_signal();
            b.mount("ext4box", &w.join(img), &mnt, "ro");
            common::drop_caches();
            let t = timed(Command::new("cat").arg(mnt.join("file")));
            if let Some(p) = common::unmount(&mnt) {
                die(&p);
            }
            samples.entry(img.to_string()).or_default().push(t);
        }
        for fmt in WRITES {
            common::check_signal();
            let wimg = w.join("w.img");
            if fmt == "raw" {
                ok(Command::new("cp").arg("--sparse=always").arg(&empty).arg(&wimg));
            } else {
                ok(Command::new("qemu-img").args(["convert", "-O", fmt]).arg(&empty).arg(&wimg));
            }
            b.mount("ext4box", &wimg, &mnt, "rw");
            let t = timed(
                Command::new("dd")
                    .arg(format!("if={}", src.display()))
                    .arg(format!("of={}", mnt.join("w").display()))
                    .args(["bs=1M", "conv=fsync", "status=none"]),
            );
            if let Some(p) = common::unmount(&mnt) {
                die(&p);
            }
            if fmt != "raw" && common::status_ok(Command::new("qemu-img").args(["check", "-q"]).arg(&wimg)).is_err() {
                die(&format!("qemu-img check failed on the {fmt} image"));
            }
            let _ = fs::remove_file(&wimg);
            samples.entry(format!("write-{fmt}")).or_default().push(t);
        }
    }

    let mut out = format!("\n| {mb} MB file, cold cache | seconds (median of {}) | MB/s |\n|---|---|---|\n", b.rounds);
    let keys = READS.iter().map(|r| r.to_string()).chain(WRITES.iter().map(|f| format!("write-{f}")));
    for key in keys {
        let v = &samples[&key];
        log(&format!("samples, {key}: {}", v.iter().map(|t| format!("{t:.6}")).collect::<Vec<_>>().join(" ")));
        let m = median(v).unwrap_or(f64::NAN);
        let what = match key.strip_prefix("write-") {
            Some(f) => format!("write, {f}"),
            None => format!("read, {}", key.strip_prefix("read.").or(key.strip_prefix("read-")).unwrap_or(&key)),
        };
        out += &format!("| {what} | {m:.2} | {:.0} |\n", mb as f64 / m);
    }
    print!("{out}");
    let _ = fs::remove_dir_all(&w);
    true
}
