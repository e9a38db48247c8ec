//! `read`: read-only phases on one cached image, each on a fresh read-only mount with dropped
//! caches, for ROUNDS rounds (systems interleaved: round 1 = kernel, fuse2fs, ext4box; round 2 =
//! ...). Prints a markdown table of medians, also written to BENCH_DIR/read-results.md.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::common::{self, Bench, Results, die, log, ratio};
use crate::host;

/// Phases, in run order.
const PHASES: [&str; 5] = ["find", "ls-lR", "stat", "read-all", "seqread"];
const IMG_SIZE: u64 = 2 << 30;

pub fn run() -> bool {
    let b = Bench::init(5, "kernel fuse2fs ext4box");
    // BIG_MB (default 1024) shrinks /big for a quick try; the image's name says its contents.
    let big_mb = common::env_count("BIG_MB", 1024);
    if big_mb > 1800 {
        die("BIG_MB must be at most 1800 (the image is 2 GiB)");
    }
    let big_bytes = big_mb << 20;
    let img = b.dir.join(if big_mb == 1024 { "read-v1.img".into() } else { format!("read-v1-big{big_mb}M.img") });
    make_image(&b, &img, big_bytes);

    let mut res = Results::new(b.dir.join("read-raw.tsv"));
    // Entry count seen by `find`, per system: a cheap check that every system sees the same tree.
    let mut find_count: BTreeMap<String, u64> = BTreeMap::new();
    for round in 1..=b.rounds {
        res.round = round;
        for sys in b.round_systems(round) {
            for phase in PHASES {
                common::check_signal();
                let mnt = b.mnt(&sys);
                b.mount(&sys, &img, &mnt, "ro");
                common::drop_caches();
                let err = b.dir.join("phase.err");
                let t0 = Instant::now();
                let r = run_phase(phase, &mnt, big_bytes, &err);
                let t = t0.elapsed().as_secs_f64();
                match r {
                    Ok(n) => {
                        if let Some(n) = n {
                            find_count.insert(sys.clone(), n);
                        }
                        res.record(&sys, phase, Some(t));
                        log(&format!("round {round}/{}  {sys:<8} {phase:<9} {t:9.3} s", b.rounds));
                    }
                    Err(e) => {
                        res.record(&sys, phase, None);
                        log(&format!("round {round}/{}  {sys} {phase} FAILED: {e}; stderr tail:", b.rounds));
                        let text = fs::read_to_string(&err).unwrap_or_default();
                        let lines: Vec<&str> = text.lines().collect();
                        for l in &lines[lines.len().saturating_sub(5)..] {
                            eprintln!("{l}");
                        }
                    }
                }
                if let Some(p) = common::unmount(&mnt) {
                    log(&format!("warning: {p}"));
                }
            }
        }
    }

    let counts: Vec<u64> = find_count.values().copied().collect();
    let agree = counts.windows(2).all(|w| w[0] == w[1]);
    let mut out =
        b.header("ext4box read benchmark", "caches dropped and filesystem freshly mounted before every phase");
    out += &format!(
        "- image: {} (ext4, 4 KiB blocks; /include = copy of /usr/include, /big = {} random)\n\n",
        img.display(),
        if big_mb == 1024 { "1 GiB".to_string() } else { format!("{big_mb} MiB") }
    );
    let rows: Vec<(&str, Option<u64>)> = PHASES.iter().map(|&p| (p, (p == "seqread").then_some(big_bytes))).collect();
    out += &res.table(&b, &rows);
    out += &format!("\n{}\n", res.legend(&b));
    if !counts.is_empty() {
        if agree {
            out += &format!("\nAll systems saw {} entries in find.\n", counts[0]);
        } else {
            out += "\nWARNING: systems disagree on the entry count from find (timings are not comparable):\n";
            for (s, n) in &find_count {
                out += &format!("- {s}: {n}\n");
            }
        }
    }
    out += &targets(&b, &res);
    out += &res.sandbox_report(&b, &PHASES);
    out += &format!("\nRaw samples: {}\n", res.raw_path.display());
    common::tee(&out, &b.dir.join("read-results.md"));

    // Any failed run or disagreement fails the phase (after reporting).
    if res.any_failed() {
        log("error: some runs failed (FAIL cells above)");
        return false;
    }
    if !agree {
        log("error: systems disagree on the entry count (see above)");
        return false;
    }
    true
}

/// Builds the image (sparse, 4 KiB blocks, mkfs.ext4's defaults otherwise) unless it exists,
/// under a temporary name renamed at the end, so that an interrupted build leaves no half-filled
/// image behind as the cache.
fn make_image(b: &Bench, img: &Path, big_bytes: u64) {
    if img.is_file() {
        log(&format!("using cached image {}", img.display()));
        return;
    }
    let tmp = PathBuf::from(format!("{}.tmp", img.display()));
    log(&format!("building image {}", img.display()));
    host::mkfs(&tmp, IMG_SIZE, &["-b", "4096"]);
    let mnt = b.mnt("build");
    b.mount("kernel", &tmp, &mnt, "rw");
    log("copying /usr/include");
    if let Err(e) = common::status_ok(Command::new("cp").arg("-a").arg("/usr/include").arg(mnt.join("include"))) {
        die(&e);
    }
    log(&format!("writing {} MiB of random data to /big", big_bytes >> 20));
    let fill = || -> io::Result<()> {
        let mut rnd = File::open("/dev/urandom")?;
        let mut out = File::create(mnt.join("big"))?;
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..big_bytes >> 20 {
            rnd.read_exact(&mut buf)?;
            out.write_all(&buf)?;
        }
        Ok(())
    };
    fill().unwrap_or_else(|e| die(&format!("writing /big: {e}")));
    if let Some(p) = common::unmount(&mnt) {
        die(&p);
    }
    let fsck = host::run_timeout(Command::new("e2fsck").arg("-fn").arg(&tmp), std::time::Duration::from_secs(600));
    match fsck {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            die(&format!("e2fsck reports problems in freshly built {}:\n{}", tmp.display(), host::output_text(&o)))
        }
        Err(e) => die(&e),
    }
    fs::rename(&tmp, img).unwrap_or_else(|e| die(&format!("rename {}: {e}", tmp.display())));
    log(&format!("image ready: {}", img.display()));
}

/// Runs one phase on `mnt` (stderr to `err`); `find` returns the number of entries it saw.
fn run_phase(phase: &str, mnt: &Path, big_bytes: u64, err: &Path) -> Result<Option<u64>, String> {
    let stderr = || File::create(err).map_err(|e| e.to_string());
    let wait = |cmd: &mut Command| -> Result<(), String> {
        let st = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr()?).status();
        match st {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(format!("{cmd:?}: {s}")),
            Err(e) => Err(format!("{cmd:?}: {e}")),
        }
    };
    match phase {
        // readdir + lookup; the lines counted through a pipe (as `find | wc -l`), same for everyone
        "find" => {
            let mut child = Command::new("find")
                .arg(mnt)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(stderr()?)
                .spawn()
                .map_err(|e| format!("find: {e}"))?;
            let mut n = 0u64;
            let mut r = BufReader::with_capacity(1 << 16, child.stdout.take().unwrap());
            let mut line = Vec::new();
            while r.read_until(b'\n', &mut line).map_err(|e| e.to_string())? > 0 {
                n += 1;
                line.clear();
            }
            let st = child.wait().map_err(|e| e.to_string())?;
            if !st.success() {
                return Err(format!("find: {st}"));
            }
            Ok(Some(n))
        }
        "ls-lR" => wait(Command::new("ls").arg("-lR").arg(mnt)).map(|_| None),
        "stat" => wait(Command::new("find").arg(mnt).args(["-exec", "stat", "{}", "+"])).map(|_| None),
        // find MNT/include -type f -print0 | xargs -0 cat >/dev/null
        "read-all" => {
            let mut find = Command::new("find")
                .arg(mnt.join("include"))
                .args(["-type", "f", "-print0"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(stderr()?)
                .spawn()
                .map_err(|e| format!("find: {e}"))?;
            let pipe = find.stdout.take().unwrap();
            let xargs =
                Command::new("xargs").args(["-0", "cat"]).stdin(pipe).stdout(Stdio::null()).stderr(stderr()?).status();
            let fst = find.wait().map_err(|e| e.to_string())?;
            match xargs {
                Ok(s) if s.success() && fst.success() => Ok(None),
                Ok(s) => Err(format!("find: {fst}, xargs cat: {s}")),
                Err(e) => Err(format!("xargs: {e}")),
            }
        }
        // dd's summary (stderr) gives the bytes actually read: it must be all of /big.
        "seqread" => {
            let out = Command::new("dd")
                .arg(format!("if={}", mnt.join("big").display()))
                .args(["of=/dev/null", "bs=1M"])
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("dd: {e}"))?;
            let text = String::from_utf8_lossy(&out.stderr).into_owned();
            let _ = fs::write(err, &text);
            if !out.status.success() {
                return Err(format!("dd: {}", out.status));
            }
            let bytes =
                text.lines().find_map(|l| l.split_once(" bytes").and_then(|(n, _)| n.trim().parse::<u64>().ok()));
            if bytes != Some(big_bytes) {
                return Err(format!("seqread: short read: {}", text.trim()));
            }
            Ok(None)
        }
        _ => unreachable!("phase {phase}"),
    }
}

/// A pass/fail line per phase against the project's read targets (see README).
fn targets(b: &Bench, res: &Results) -> String {
    if !(b.has("ext4box") && (b.has("kernel") || b.has("fuse2fs"))) {
        return String::new();
    }
    let mut r = String::from("\nTargets (ext4box):\n\n");
    let pass = |ok: bool| if ok { "PASS" } else { "FAIL" };
    // (compared as shown, to 2 decimals)
    let q = |a: f64, b: f64| format!("{:.2}", a / b).parse::<f64>().unwrap_or(f64::NAN);
    for phase in PHASES {
        let (k, f, e) =
            (res.median_of("kernel", phase), res.median_of("fuse2fs", phase), res.median_of("ext4box", phase));
        let Some(ev) = e else {
            r += &format!("- {phase}: ext4box failed or missing\n");
            continue;
        };
        if let Some(fv) = f {
            r += &format!("- {phase}: >= 3x faster than fuse2fs: {} ({}x)\n", pass(q(fv, ev) >= 3.0), ratio(f, e));
        }
        let Some(kv) = k else { continue };
        match phase {
            "find" | "ls-lR" | "stat" => {
                r += &format!(
                    "- {phase}: within 2x of kernel: {} ({}x kernel time)\n",
                    pass(q(ev, kv) <= 2.0),
                    ratio(e, k)
                );
            }
            "seqread" => {
                r += &format!(
                    "- {phase}: >= 80% of kernel throughput: {} ({:.0}%)\n",
                    pass(q(kv, ev) >= 0.8),
                    100.0 * kv / ev
                );
            }
            _ => {}
        }
    }
    r
}
