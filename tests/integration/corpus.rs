//! Robustness on damaged images: every image of the e2fsprogs test corpus
//! (../shared/corpus/e2fsprogs/*.img.gz) either is refused with one clear
//! line, or mounts and survives a full walk (readdir, lstat, read, readlink,
//! listxattr/getxattr) within a time bound, with errors confined to the
//! damaged objects; the server must still be serving afterwards and unmount
//! cleanly.

use crate::common::*;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WALK_TIME: Duration = Duration::from_secs(60);
const PEAK_RSS_LIMIT_KIB: u64 = 1 << 20; // 1 GiB for an image of a few MiB

fn corpus_dir() -> Option<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/e2fsprogs");
    if d.is_dir() {
        return Some(d);
    }
    if is_ci() {
        panic!("CI=true but the image corpus {d:?} is missing");
    }
    eprintln!("skipping: image corpus {d:?} is absent");
    None
}

fn corpus_images(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".img.gz"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no *.img.gz in {dir:?}");
    v
}

fn short_name(gz: &Path) -> String {
    gz.file_name().unwrap().to_string_lossy().trim_end_matches(".img.gz").to_string()
}

/// Decompresses into `dest` (never in place).
fn gunzip(gz: &Path, dest: &Path) {
    let out = File::create(dest).unwrap();
    let st = Command::new("gzip").arg("-dc").arg(gz).stdout(out).stderr(Stdio::inherit()).status().unwrap();
    assert!(st.success(), "gzip -dc {gz:?} failed");
}

#[derive(Debug)]
struct Outcome {
    image: String,
    /// "mounted" or "refused: <line>".
    result: String,
    entries: usize,
    errors: usize,
    /// Errors by operation and errno, for the table.
    error_kinds: String,
    secs: f64,
    peak_rss_kib: Option<u64>,
    note: String,
}

/// Mounts one image with `opts` (ro,norecovery: the image as it is; ro: its
/// journal replayed into memory) and walks it. Problems that are ext4box
/// failures are returned as Err.
fn check_image(s: &Scratch, gz: &Path, opts: &str) -> Result<Outcome, String> {
    let t0 = Instant::now();
    let replay = opts == "ro";
    let name = if replay { format!("{} (replayed)", short_name(gz)) } else { short_name(gz) };
    let img = s.path(&format!("{}.img", short_name(gz)));
    gunzip(gz, &img);
    let mnt = s.mkdir(&format!("mnt-{}-{}", short_name(gz), opts.replace(',', "-")));
    let out = ext4box_mount(&img, &mnt, opts);
    let mut o = Outcome {
        image: name.clone(),
        result: String::new(),
        entries: 0,
        errors: 0,
        error_kinds: String::new(),
        secs: 0.0,
        peak_rss_kib: None,
        note: String::new(),
    };
    if !out.status.success() {
        let lines = stderr_lines(&out);
        if lines.len() != 1 || lines[0].trim().is_empty() {
            return Err(format!(
                "{name}: refused (status {}) but stderr is not exactly one non-empty line: {lines:?}",
                out.status
            ));
        }
        if mountinfo_entry(&mnt).is_some() {
            return Err(format!("{name}: mount exited {} but {mnt:?} is mounted", out.status));
        }
        let left = server_pids(&mnt);
        if !left.is_empty() {
            return Err(format!("{name}: mount was refused but server process(es) {left:?} run"));
        }
        o.result = format!("refused: {}", lines[0].trim());
        o.secs = t0.elapsed().as_secs_f64();
        return Ok(o);
    }
    o.result = "mounted".into();
    let mi = mountinfo_entry(&mnt).ok_or_else(|| format!("{name}: mount returned 0 but {mnt:?} is not mounted"))?;
    if mi.fstype != "fuse.ext4box" {
        return Err(format!("{name}: fstype {:?}, expected fuse.ext4box", mi.fstype));
    }
    let pids = server_pids(&mnt);
    if pids.is_empty() {
        return Err(format!("{name}: no server process names {mnt:?}"));
    }

    // The walk runs on its own thread; a hang is a failure and the server is
    // killed so that the stuck thread gets an error.
    let root = mnt.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let opts = WalkOpts {
            max_depth: 64,
            max_entries: 100_000,
            read_cap: 256 << 20,
            deadline: Some(Instant::now() + WALK_TIME),
        };
        let _ = tx.send(walk(&root, &opts));
    });
    let w = match rx.recv_timeout(WALK_TIME + Duration::from_secs(10)) {
        Ok(w) => w,
        Err(_) => {
            force_kill_mount(&mnt);
            return Err(format!("{name}: walk did not finish within {WALK_TIME:?} (server killed)"));
        }
    };
    o.entries = w.entries.len();
    o.errors = w.error_count();
    let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
    for e in &w.entries {
        for (op, errno) in e.errors() {
            *kinds.entry(format!("{op}:{}", errno_name(errno))).or_default() += 1;
        }
    }
    o.error_kinds = kinds.iter().map(|(k, n)| format!("{k}x{n}")).collect::<Vec<_>>().join(" ");
    if let Some(t) = &w.truncated {
        if t.starts_with("deadline") {
            return Err(format!("{name}: walk too slow: {t}"));
        }
        o.note = format!("walk truncated: {t}");
    }
    if w.entries.is_empty() || w.entries[0].path != b"" {
        return Err(format!("{name}: walk has no root entry"));
    }
    let capped: Vec<String> =
        w.entries.iter().filter(|e| matches!(e.content, Some(Ok(c)) if c.capped)).map(|e| esc(&e.path)).collect();
    if !capped.is_empty() {
        o.note.push_str(&format!(" reads capped at 256 MiB: {capped:?}"));
    }

    // Still serving: the mount answers (a damaged root inode may answer with
    // an error, but not "not connected"), is listed, and the server lives.
    let root = mnt.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(fs::metadata(&root).map(|m| m.is_dir()).map_err(|e| errno_of(&e)));
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(true)) => {}
        Ok(Err(e)) if e != libc::ENOTCONN && e != libc::ECONNABORTED => {
            o.note.push_str(&format!(" root: {}", errno_name(e)));
        }
        Ok(r) => {
            force_kill_mount(&mnt);
            return Err(format!("{name}: after the walk, stat of the mount point gives {r:?}"));
        }
        Err(_) => {
            force_kill_mount(&mnt);
            return Err(format!("{name}: after the walk, stat of the mount point hangs"));
        }
    }
    if mountinfo_entry(&mnt).is_none() {
        return Err(format!("{name}: the mount disappeared during the walk"));
    }
    let dead: Vec<i32> = pids.iter().copied().filter(|&p| !pid_alive(p)).collect();
    if !dead.is_empty() {
        force_kill_mount(&mnt);
        return Err(format!("{name}: server process(es) {dead:?} died during the walk"));
    }
    o.peak_rss_kib = pids.iter().filter_map(|&p| peak_rss_kib(p)).max();
    if let Some(k) = o.peak_rss_kib {
        if k > PEAK_RSS_LIMIT_KIB {
            force_kill_mount(&mnt);
            return Err(format!("{name}: server peak RSS {k} KiB exceeds {PEAK_RSS_LIMIT_KIB} KiB"));
        }
    }
    let m = Ext4boxMount { mnt: mnt.clone(), pids };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| m.unmount()))
        .map_err(|p| format!("{name}: unmount: {}", panic_text(&p)))?;
    o.secs = t0.elapsed().as_secs_f64();
    Ok(o)
}

/// Whether dumpe2fs lists needs_recovery (dumpe2fs may fail on a damaged image: then no).
fn needs_recovery(img: &Path) -> bool {
    Command::new("dumpe2fs").arg("-h").arg(img).stderr(Stdio::null()).output().is_ok_and(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("Filesystem features:"))
            .any(|f| f.split_whitespace().any(|x| x == "needs_recovery"))
    })
}

fn errno_name(e: i32) -> String {
    match e {
        libc::EIO => "EIO".into(),
        libc::EUCLEAN => "EUCLEAN".into(),
        libc::ENOENT => "ENOENT".into(),
        libc::ENODATA => "ENODATA".into(),
        libc::EOPNOTSUPP => "EOPNOTSUPP".into(),
        libc::EINVAL => "EINVAL".into(),
        libc::ENOTDIR => "ENOTDIR".into(),
        libc::ELOOP => "ELOOP".into(),
        libc::EFBIG => "EFBIG".into(),
        libc::ENOMEM => "ENOMEM".into(),
        libc::ENOTCONN => "ENOTCONN".into(),
        libc::EACCES => "EACCES".into(),
        libc::ENAMETOOLONG => "ENAMETOOLONG".into(),
        libc::ERANGE => "ERANGE".into(),
        libc::E2BIG => "E2BIG".into(),
        libc::EOVERFLOW => "EOVERFLOW".into(),
        libc::ESTALE => "ESTALE".into(),
        libc::ENOSYS => "ENOSYS".into(),
        _ => format!("errno{e}"),
    }
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else {
        "panic".into()
    }
}

#[test]
fn every_corpus_image_is_refused_or_survives_a_full_walk() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let Some(dir) = corpus_dir() else { return };
    let queue = Arc::new(Mutex::new(corpus_images(&dir)));
    let total = queue.lock().unwrap().len();
    let results: Arc<Mutex<Vec<Result<Outcome, String>>>> = Arc::new(Mutex::new(Vec::new()));
    let t0 = Instant::now();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let queue = queue.clone();
            let results = results.clone();
            std::thread::spawn(move || {
                loop {
                    let Some(gz) = queue.lock().unwrap().pop() else { break };
                    let s = Scratch::new(&format!("corpus-{}", short_name(&gz)));
                    // Every image as it is; those whose journal needs recovery also replayed (the
                    // journal parser on hostile input).
                    for opts in ["ro,norecovery", "ro"] {
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check_image(&s, &gz, opts)))
                            .unwrap_or_else(|p| Err(format!("{}: {}", short_name(&gz), panic_text(&p))));
                        results.lock().unwrap().push(r);
                        let img = s.path(&format!("{}.img", short_name(&gz)));
                        if !needs_recovery(&img) {
                            break;
                        }
                    }
                    drop(s);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let mut results = Arc::try_unwrap(results).unwrap().into_inner().unwrap();
    results.sort_by_key(|r| match r {
        Ok(o) => o.image.clone(),
        Err(e) => e.clone(),
    });
    assert!(results.len() >= total, "{} results for {total} images", results.len());

    let mut table = String::new();
    table.push_str(&format!(
        "{:<36} {:>7} {:>6} {:>6} {:>8}  {}\n",
        "image", "entries", "errors", "secs", "rss KiB", "result / errors / notes"
    ));
    let mut failures = Vec::new();
    let (mut mounted, mut refused) = (0, 0);
    for r in &results {
        match r {
            Ok(o) => {
                if o.result == "mounted" {
                    mounted += 1;
                } else {
                    refused += 1;
                }
                table.push_str(&format!(
                    "{:<36} {:>7} {:>6} {:>6.2} {:>8}  {} {} {}\n",
                    o.image,
                    o.entries,
                    o.errors,
                    o.secs,
                    o.peak_rss_kib.map(|k| k.to_string()).unwrap_or_else(|| "-".into()),
                    o.result,
                    o.error_kinds,
                    o.note
                ));
            }
            Err(e) => {
                table.push_str(&format!("FAILED {e}\n"));
                failures.push(e.clone());
            }
        }
    }
    eprintln!(
        "{table}{total} images: {mounted} mounted and walked, {refused} refused, {} failed, in {:.1}s",
        failures.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{} corpus image(s) failed:\n{}", failures.len(), failures.join("\n"));
    assert!(mounted > 0, "no corpus image mounted at all");
}

/// True when `e2fsck -fn` finds nothing wrong with inodes, blocks, the
/// directory structure, connectivity or reference counts (passes 1 to 4);
/// only summary information such as bitmaps or group descriptor checksums
/// may be off.
fn tree_is_intact(img: &Path) -> bool {
    let Ok(out) = run_timeout(Command::new("e2fsck").arg("-fn").arg(img), Duration::from_secs(20)) else {
        return false; // e2fsck itself loops on some of these images
    };
    let text = String::from_utf8_lossy(&out.stdout).replace('\0', "") + &String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = text.lines().collect();
    let (Some(p1), Some(p5)) =
        (lines.iter().position(|l| l.starts_with("Pass 1:")), lines.iter().position(|l| l.starts_with("Pass 5:")))
    else {
        return false;
    };
    lines[p1..p5].iter().all(|l| l.starts_with("Pass ") || l.trim().is_empty())
}

/// What is intact stays readable: on every corpus image whose tree e2fsck
/// finds sound (passes 1-4 clean) and that both the kernel (loop,
/// ro,norecovery) and ext4box mount, each object the kernel reads without
/// error must read the same through ext4box, without error.
#[test]
fn corpus_intact_objects_stay_readable() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let Some(dir) = corpus_dir() else { return };
    let mut problems = Vec::new();
    let mut compared = 0;
    for gz in corpus_images(&dir) {
        let name = short_name(&gz);
        let s = Scratch::new(&format!("intact-{name}"));
        let img = s.path("image");
        gunzip(&gz, &img);
        let km = s.mkdir("kernel");
        let em = s.mkdir("ext4box");
        let k = run_timeout(
            Command::new("mount").arg("-o").arg("loop,ro,norecovery").arg(&img).arg(&km),
            Duration::from_secs(60),
        )
        .unwrap();
        if !k.status.success() {
            continue; // the kernel cannot read it either
        }
        if !tree_is_intact(&img) {
            kernel_umount(&km);
            continue;
        }
        let out = ext4box_mount(&img, &em, "ro,norecovery");
        if !out.status.success() {
            kernel_umount(&km);
            continue; // refusing is allowed
        }
        let opts = WalkOpts { read_cap: 256 << 20, deadline: Some(Instant::now() + WALK_TIME), ..Default::default() };
        let kw = walk(&km, &opts);
        let em2 = em.clone();
        let ew = with_timeout(&format!("{name}: ext4box walk"), WALK_TIME + Duration::from_secs(10), &em, move || {
            walk(&em2, &opts)
        });
        compared += 1;
        let by_path: std::collections::HashMap<&[u8], &Entry> =
            ew.entries.iter().map(|e| (e.path.as_slice(), e)).collect();
        let mut bad = Vec::new();
        for ke in kw.entries.iter().filter(|e| e.errors().is_empty()) {
            let shown = format!("/{}", esc(&ke.path));
            let Some(ee) = by_path.get(ke.path.as_slice()) else {
                bad.push(format!("{shown}: readable by the kernel, missing through ext4box"));
                continue;
            };
            if !ee.errors().is_empty() {
                let errs: Vec<String> = ee.errors().iter().map(|(op, e)| format!("{op} {}", errno_name(*e))).collect();
                bad.push(format!("{shown}: the kernel reads it; through ext4box: {}", errs.join(", ")));
                continue;
            }
            if *ke != **ee {
                let fk = fields(ke);
                let fe = fields(ee);
                let d: Vec<String> = fk
                    .iter()
                    .filter(|f| !fe.contains(f))
                    .map(|(n, v)| {
                        let got = fe.iter().find(|(m, _)| m == n).map(|(_, w)| w.as_str()).unwrap_or("(absent)");
                        format!("{n}: kernel {v}, ext4box {got}")
                    })
                    .chain(
                        fe.iter()
                            .filter(|(n, _)| !fk.iter().any(|(m, _)| m == n))
                            .map(|(n, w)| format!("{n}: kernel (absent), ext4box {w}")),
                    )
                    .collect();
                bad.push(format!("{shown}: {}", d.join("; ")));
            }
        }
        let m = Ext4boxMount { mnt: em.clone(), pids: server_pids(&em) };
        m.unmount();
        kernel_umount(&km);
        if !bad.is_empty() {
            problems.push(format!(
                "{name}: {} intact object(s) differ:\n    {}",
                bad.len(),
                bad.iter().take(4).cloned().collect::<Vec<_>>().join("\n    ")
            ));
        }
    }
    eprintln!("compared {compared} sound images mounted by both the kernel and ext4box");
    assert!(compared > 0, "no corpus image mounted by both");
    assert!(
        problems.is_empty(),
        "{} image(s) where ext4box fails on objects the kernel reads:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The writes of a read-write session on a damaged image: each one's errno (0: it worked).
fn write_session(mnt: &Path) -> Vec<i32> {
    use std::io::Write;
    let errno = |r: std::io::Result<()>| r.err().map_or(0, |e| e.raw_os_error().unwrap_or(-1));
    let mut v = Vec::new();
    v.push(errno((|| {
        let mut f = std::fs::File::create(mnt.join("ext4box-new"))?;
        f.write_all(&vec![0x5A; 100_000])?;
        f.sync_all()
    })()));
    v.push(errno(std::fs::create_dir(mnt.join("ext4box-dir"))));
    v.push(errno(std::fs::write(mnt.join("ext4box-dir/inner"), b"inner")));
    v.push(errno(std::fs::rename(mnt.join("ext4box-new"), mnt.join("ext4box-renamed"))));
    v.push(errno(std::fs::remove_file(mnt.join("ext4box-renamed"))));
    // And something already on the image, if the root lists anything.
    if let Some(first) = std::fs::read_dir(mnt).ok().and_then(|mut d| d.next()).and_then(|e| e.ok()) {
        v.push(errno(std::fs::rename(first.path(), mnt.join("ext4box-moved"))));
    }
    v
}

/// Every corpus image in a read-write session under the sandbox (a scratch copy each, errors=remount-ro,
/// in the foreground so that the server's log is kept): it is refused with one line, or it mounts, takes
/// creates, writes, renames and unlinks, never takes the server down or hangs, and unmounts, with the
/// server gone. A session ends either cleanly (every write worked) or with the filesystem read-only and a
/// log line saying why; a write that met damage (EUCLEAN) must have turned it read-only, and a read-only
/// ending needs its log line.
#[test]
fn every_corpus_image_survives_a_read_write_session() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let Some(dir) = corpus_dir() else { return };
    let (mut refused, mut clean, mut ended_ro, mut other_errors) = (0, 0, 0, 0);
    let mut problems = Vec::new();
    for gz in corpus_images(&dir) {
        let s = Scratch::new(&format!("corpus-rw-{}", short_name(&gz)));
        let img = s.path("img");
        gunzip(&gz, &img);
        let mnt = s.mkdir("mnt");
        let log = s.path("log");
        let name = short_name(&gz);
        let mut child = match ext4box_foreground(&img, &mnt, "rw,errors=remount-ro", &log) {
            Ok(child) => child,
            Err(st) => {
                let text = fs::read_to_string(&log).unwrap_or_default();
                assert!(!st.success(), "{name}: the launcher exited 0 without mounting");
                assert_eq!(text.lines().count(), 1, "{name}: refused without exactly one line: {text}");
                assert!(mountinfo_entry(&mnt).is_none(), "{name}: refused but mounted");
                refused += 1;
                continue;
            }
        };
        let pids = server_pids(&mnt);
        let target = mnt.clone();
        let errnos =
            with_timeout(&format!("{name}: the write session"), WALK_TIME, &mnt, move || write_session(&target));
        assert!(pids.iter().all(|&p| pid_alive(p)), "{name}: the server died during the session ({errnos:?})");
        let probe = fs::File::create(mnt.join("ext4box-probe")).err().and_then(|e| e.raw_os_error());
        let out = ext4box_unmount(&mnt);
        assert!(out.status.success(), "{name}: unmount failed: {}", output_text(&out));
        assert!(pids.iter().all(|&p| !pid_alive(p)), "{name}: the server outlived its unmount");
        let st = child.wait().unwrap();
        let text = fs::read_to_string(&log).unwrap_or_default();
        assert!(st.success(), "{name}: the foreground launcher exited {st} after the unmount:\n{text}");
        assert!(!text.contains("panicked"), "{name}: the server panicked:\n{text}");
        // Read-only from the mount on (features it cannot write, damaged group descriptors), or turned so
        // by errors=remount-ro: either way the log says so. (A probe may still get EUCLEAN rather than
        // EROFS: the kernel looks the name up first, in a root that may be the damage.)
        let said_ro = text.lines().any(|l| l.contains("read-only"));
        if errnos.contains(&libc::EUCLEAN) && !said_ro {
            problems.push(format!("{name}: a write met damage ({errnos:?}) but the filesystem stayed writable"));
        }
        if probe == Some(libc::EROFS) && !said_ro {
            problems.push(format!("{name}: ended read-only without a log line saying so:\n{text}"));
        }
        let read_only = said_ro || probe == Some(libc::EROFS);
        if read_only {
            ended_ro += 1;
        } else if errnos.iter().all(|&e| e == 0) && probe.is_none() {
            clean += 1;
        } else {
            // Writable to the end, with some write refused for an ordinary reason (ENOSPC on a full
            // image, ENOENT, ...), never for damage: that is asserted above.
            other_errors += 1;
            eprintln!("{name}: writable to the end; errnos {errnos:?}, probe {probe:?}");
        }
    }
    eprintln!(
        "read-write sessions: {refused} refused with one line, {clean} clean, {ended_ro} ended read-only with a \
         message, {other_errors} writable with ordinary errors"
    );
    assert!(problems.is_empty(), "{} session(s) ended badly:\n{}", problems.len(), problems.join("\n"));
    assert!(clean + ended_ro + other_errors > 50, "too few corpus images mounted read-write to test anything");
}
