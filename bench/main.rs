//! The benchmarks: ext4box against the kernel's ext4 and fuse2fs (see bench/README.md).
//!
//! `cargo bench --bench ext4box -- PHASE...` as root, PHASE one of `read`, `write`, `fsync`,
//! `formats`; the settings come from the environment (ROUNDS, SYSTEMS, ORDER, BENCH_DIR, ...).
//! Without a phase it prints its usage and does nothing, so `cargo test --benches` runs nothing.
//! `op OP MNT [ARG]` runs one timed operation of the write phases (the write phases run it as a
//! child process, which can be killed if it hangs on a mount).

#[path = "../tests/shared/host.rs"]
#[allow(dead_code)] // the tests use the rest
mod host;

mod common;
mod formats;
mod fsync;
mod ops;
mod read;
mod write;

const USAGE: &str = "\
usage (as root): [VAR=VALUE...] cargo bench --bench ext4box -- PHASE...
  read     find, ls -lR, stat, read-all, seqread on a cached image, cold caches (ROUNDS=5)
  write    untar, create, stat, rename, unlink, deepstat, rm-rf, seqwrite on fresh images (ROUNDS=3)
  fsync    create + write SIZE bytes + fsync, N files per round (ROUNDS=3)
  formats  read and write of one MB-megabyte file through each VM disk format (ROUNDS=3)
Settings (environment): BENCH_DIR, EXT4BOX, ROUNDS, SYSTEMS, ORDER, UNMOUNT_TIMEOUT, and per phase
the ones bench/README.md lists.";

fn main() {
    // `cargo bench` adds --bench; a phase name is what makes anything run.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    if args.first().map(String::as_str) == Some("op") {
        std::process::exit(ops::main(&args[1..]));
    }
    if args.is_empty() {
        eprintln!("{USAGE}");
        return;
    }
    if let Some(bad) = args.iter().find(|a| !["read", "write", "fsync", "formats"].contains(&a.as_str())) {
        eprintln!("unknown phase '{bad}'\n{USAGE}");
        std::process::exit(2);
    }
    common::install_signal_handlers();
    let _cleanup = common::Cleanup;
    let mut ok = true;
    for phase in &args {
        ok &= match phase.as_str() {
            "read" => read::run(),
            "write" => write::run(),
            "fsync" => fsync::run(),
            _ => formats::run(),
        };
    }
    if !ok {
        common::unmount_all();
        std::process::exit(1);
    }
}
