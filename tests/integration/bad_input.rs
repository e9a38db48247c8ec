//! Bad input: each mistake gives a non-zero exit and exactly one clear line
//! on stderr, and leaves nothing mounted or running.

use crate::common::*;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Asserts a failed command with exactly one non-empty stderr line that
/// contains one of `words` (case-insensitive); returns the line.
fn assert_one_line_error(what: &str, out: &std::process::Output, words: &[&str]) -> String {
    assert!(!out.status.success(), "{what}: expected failure, got success:\n{}", output_text(out));
    let lines = stderr_lines(out);
    assert_eq!(
        lines.len(),
        1,
        "{what}: stderr must be exactly one line, got {} line(s):\n{}",
        lines.len(),
        String::from_utf8_lossy(&out.stderr)
    );
    let l = lines[0].trim();
    assert!(!l.is_empty(), "{what}: the stderr line is empty");
    let low = l.to_lowercase();
    assert!(
        words.iter().any(|w| low.contains(&w.to_lowercase())),
        "{what}: the error line {l:?} mentions none of {words:?}"
    );
    eprintln!("{what}: {l}");
    l.to_string()
}

fn assert_nothing_mounted(mnt: &Path) {
    assert!(mountinfo_entry(mnt).is_none(), "{mnt:?} is mounted after a failed mount");
    let p = server_pids(mnt);
    assert!(p.is_empty(), "ext4box process(es) {p:?} for {mnt:?} still run after a failed mount");
}

fn small_image(s: &Scratch) -> std::path::PathBuf {
    let img = s.path("image");
    mkfs(&img, 16 << 20, &[]);
    img
}

#[test]
fn missing_image() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("bad-missing-image");
    let mnt = s.mkdir("mnt");
    let img = s.path("no-such-image.img");
    let out = ext4box_mount(&img, &mnt, "ro");
    assert_one_line_error(
        "missing image",
        &out,
        &["no-such-image.img", "no such file", "not found", "does not exist", "missing", "cannot open", "can't open"],
    );
    assert_nothing_mounted(&mnt);
}

#[test]
fn not_an_ext_filesystem() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("bad-not-ext");
    let mnt = s.mkdir("mnt");
    let words = ["ext", "superblock", "magic", "filesystem", "file system"];
    let zeros = s.path("zeros.img");
    fs::write(&zeros, vec![0u8; 4 << 20]).unwrap();
    assert_one_line_error("image of zeros", &ext4box_mount(&zeros, &mnt, "ro"), &words);
    assert_nothing_mounted(&mnt);
    let random = s.path("random.img");
    fs::write(&random, pseudo_random(99, 4 << 20)).unwrap();
    assert_one_line_error("image of random bytes", &ext4box_mount(&random, &mnt, "ro"), &words);
    assert_nothing_mounted(&mnt);
    let empty = s.path("empty.img");
    fs::write(&empty, b"").unwrap();
    assert_one_line_error("empty image", &ext4box_mount(&empty, &mnt, "ro"), &words);
    assert_nothing_mounted(&mnt);
    // A valid ext4 superblock with the magic destroyed.
    let img = small_image(&s);
    let f = fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.write_all_at(&[0, 0], 1024 + 0x38).unwrap();
    drop(f);
    assert_one_line_error("ext4 image without its magic", &ext4box_mount(&img, &mnt, "ro"), &words);
    assert_nothing_mounted(&mnt);
}

#[test]
fn missing_or_bad_mountpoint() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("bad-mountpoint");
    let img = small_image(&s);
    let mnt = s.path("no-such-dir");
    let out = ext4box_mount(&img, &mnt, "ro");
    assert_one_line_error(
        "missing mount point",
        &out,
        &["no-such-dir", "mount point", "mountpoint", "no such", "not found", "does not exist"],
    );
    assert_nothing_mounted(&mnt);
    let file = s.path("a-regular-file");
    fs::write(&file, b"x").unwrap();
    let out = ext4box_mount(&img, &file, "ro");
    assert_one_line_error("mount point is a file", &out, &["a-regular-file", "directory", "mount point", "mountpoint"]);
    assert_nothing_mounted(&file);
}

#[test]
fn image_already_mounted() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("bad-already");
    let img = small_image(&s);
    let (m1, m2, m3) = (s.mkdir("first"), s.mkdir("second"), s.mkdir("third"));
    let words = ["locked", "already", "mounted"];
    // Read-only mounts share the image (many jobs of one image at once); a read-write one is refused
    // while they hold it, by name and by a hard link to the same file.
    let first = ext4box_mount_ok(&img, &m1, "ro");
    let second = ext4box_mount_ok(&img, &m2, "ro");
    for m in [&m1, &m2] {
        assert!(m.join("lost+found").is_dir(), "the read-only mount at {m:?} does not show the image");
    }
    let out = ext4box_mount(&img, &m3, "");
    assert_one_line_error("read-write mount of an image mounted read-only", &out, &words);
    assert!(output_text(&out).contains("read-only"), "the refusal should say who holds it:\n{}", output_text(&out));
    assert_nothing_mounted(&m3);
    let link = s.path("image-link");
    fs::hard_link(&img, &link).unwrap();
    let out = ext4box_mount(&link, &m3, "");
    assert_one_line_error("read-write mount of a hard link to a mounted image", &out, &words);
    assert_nothing_mounted(&m3);
    assert!(first.alive() && second.alive(), "the read-only mounts were disturbed by the refused ones");
    first.unmount();
    // Still held by the second read-only mount.
    let out = ext4box_mount(&img, &m3, "");
    assert_one_line_error("read-write mount while one read-only mount is left", &out, &words);
    second.unmount();
    // Once they are gone the image is free: a read-write mount takes it alone, and refuses both kinds.
    let rw = ext4box_mount_ok(&img, &m1, "");
    for (opts, what) in [("ro", "read-only mount of an image mounted read-write"), ("", "second read-write mount")] {
        let out = ext4box_mount(&link, &m2, opts);
        assert_one_line_error(what, &out, &words);
        assert!(
            output_text(&out).contains("read-write"),
            "the refusal should say who holds it:\n{}",
            output_text(&out)
        );
        assert_nothing_mounted(&m2);
    }
    rw.unmount();
    assert_fsck_clean(&img);
}

#[test]
fn unknown_option() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("bad-option");
    let img = small_image(&s);
    let mnt = s.mkdir("mnt");
    let out = ext4box_mount(&img, &mnt, "ro,bogus_opt_xyz");
    assert_one_line_error("unknown option", &out, &["bogus_opt_xyz"]);
    assert_nothing_mounted(&mnt);
    let out = ext4box_mount(&img, &mnt, "offset=notanumber");
    assert_one_line_error("bad offset value", &out, &["offset", "notanumber"]);
    assert_nothing_mounted(&mnt);
    for bad in ["commit=-1", "commit=soon", "commit=86401", "commit"] {
        let out = ext4box_mount(&img, &mnt, bad);
        assert_one_line_error("bad commit interval", &out, &["commit"]);
        assert_nothing_mounted(&mnt);
    }
}

/// A read-write mount of an image with a feature the engine cannot write (verity, whose Merkle trees
/// it does not build; a journal on an external device, which it cannot open), with bigalloc but without
/// extents (the kernel refuses those), or with a damaged orphan file goes ahead read-only, with one line
/// naming the reason.
#[test]
fn unwritable_feature_mounts_read_only_with_a_message() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("bad-rw-feature");
    let verity = s.path("verity.img");
    mkfs(&verity, 32 << 20, &["-b", "4096", "-O", "verity"]);
    let bigalloc = s.path("bigalloc-no-extents.img");
    mkfs(&bigalloc, 32 << 20, &["-b", "4096", "-O", "bigalloc"]);
    run_ok(std::process::Command::new("debugfs").args(["-w", "-R", "feature -extent"]).arg(&bigalloc));
    let external = s.path("external-journal.img");
    mkfs(&external, 32 << 20, &[]);
    debugfs_w(&external, "ssv journal_dev 0x801");
    debugfs_w(&external, "ssv journal_inum 0");
    // An orphan file block without its magic: the kernel refuses the mount, e2fsck rebuilds the file.
    let orphans = s.path("orphan-file.img");
    mkfs(&orphans, 32 << 20, &["-b", "4096", "-O", "orphan_file"]);
    let block: u64 = debugfs(&orphans, "bmap <12> 0").trim().parse().expect("the orphan file's first block");
    std::os::unix::fs::FileExt::write_all_at(
        &fs::OpenOptions::new().write(true).open(&orphans).unwrap(),
        &[0; 8],
        block * 4096 + 4088,
    )
    .unwrap();
    for (img, word) in
        [(&verity, "verity"), (&bigalloc, "bigalloc"), (&external, "external device"), (&orphans, "orphan file")]
    {
        unwritable_mounts_read_only(&s, img, word);
    }
}

fn unwritable_mounts_read_only(s: &Scratch, img: &Path, word: &str) {
    let mnt = s.mkdir("mnt");
    let before = hash_path(img);
    let out = ext4box_mount(img, &mnt, "rw");
    assert!(out.status.success(), "rw mount of {img:?} should fall back to read-only:\n{}", output_text(&out));
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "expected one line on stderr: {lines:?}");
    assert!(
        lines[0].contains("read-only") && lines[0].contains(word),
        "message should say read-only and name {word}: {lines:?}"
    );
    let mi = mountinfo_entry(&mnt).expect("mounted");
    assert!(mi.mount_opts.split(',').any(|o| o == "ro"), "mount is not read-only: {mi:?}");
    let e = fs::write(mnt.join("new"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    assert!(ext4box_unmount(&mnt).status.success());
    assert_eq!(hash_path(img), before, "a read-only mount changed the image");
}

/// An image whose journal needs recovery, made by the kernel: files written,
/// then the filesystem shut down after flushing the log, then unmounted.
fn image_needing_recovery(s: &Scratch) -> std::path::PathBuf {
    let img = s.path("dirty.img");
    mkfs(&img, 64 << 20, &[]);
    let pm = s.mkdir("populate");
    kernel_mount(&img, &pm, "rw");
    fs::write(pm.join("committed"), b"written and synced before the shutdown").unwrap();
    fs::create_dir(pm.join("dir")).unwrap();
    unsafe { libc::sync() };
    for i in 0..50 {
        fs::write(pm.join(format!("dir/late-{i}")), pseudo_random(i, 3000)).unwrap();
    }
    kernel_shutdown(&pm, EXT4_GOING_FLAGS_LOGFLUSH);
    kernel_umount(&pm);
    assert!(
        fs_features(&img).iter().any(|f| f == "needs_recovery"),
        "setup: the shut-down image does not need recovery: {:?}",
        fs_features(&img)
    );
    img
}

#[test]
fn journal_needing_recovery_but_damaged() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("bad-recovery");
    let img = image_needing_recovery(&s);
    let mnt = s.mkdir("mnt");

    // With norecovery it mounts, and shows what the kernel shows without
    // replaying the journal.
    let before = hash_path(&img);
    let m = ext4box_mount_ok(&img, &mnt, "ro,norecovery");
    let km = s.mkdir("kernel");
    kernel_mount(&img, &km, "ro,norecovery");
    let kw = walk(&km, &WalkOpts::default());
    let mnt2 = mnt.clone();
    let ew = with_timeout("walk", std::time::Duration::from_secs(60), &mnt, move || walk(&mnt2, &WalkOpts::default()));
    assert_eq!(kw.error_count(), 0, "kernel walk had errors");
    assert_walks_equal("kernel (norecovery)", &kw, "ext4box (norecovery)", &ew);
    m.unmount();
    kernel_umount(&km);
    assert_eq!(hash_path(&img), before, "a read-only norecovery mount changed the image");

    // Damage the journal superblock (its magic): replay is refused, ro or rw, with one line.
    let bmap = debugfs(&img, "bmap <8> 0");
    let jsb: u64 = bmap.trim().parse().unwrap_or_else(|_| panic!("debugfs bmap <8> 0: {bmap:?}"));
    let stats = debugfs(&img, "stats");
    let block_size: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("Block size:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no block size in debugfs stats:\n{stats}"));
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new().write(true).open(&img).unwrap();
        f.write_all_at(b"\0\0\0\0", jsb * block_size).unwrap();
    }
    let before = hash_path(&img);
    let out = ext4box_mount(&img, &mnt, "");
    assert_one_line_error("damaged journal needing recovery (no options)", &out, &["recovery", "journal"]);
    assert_nothing_mounted(&mnt);
    let out = ext4box_mount(&img, &mnt, "ro");
    assert_one_line_error("damaged journal needing recovery (-o ro)", &out, &["recovery", "journal"]);
    assert_nothing_mounted(&mnt);
    assert_eq!(hash_path(&img), before, "a refused mount changed the image");
    let m = ext4box_mount_ok(&img, &mnt, "ro,norecovery");
    m.unmount();
}

#[test]
fn unmount_of_something_not_mounted_by_ext4box() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("bad-unmount");
    let dir = s.mkdir("not-mounted");
    let out = ext4box(&[OsStr::new("unmount"), dir.as_os_str()], CMD_TIMEOUT);
    assert_one_line_error(
        "unmount of a directory that is not mounted",
        &out,
        &["not-mounted", "not mounted", "not an ext4box", "no ext4box", "mount"],
    );
    let missing = s.path("missing");
    let out = ext4box(&[OsStr::new("unmount"), missing.as_os_str()], CMD_TIMEOUT);
    assert_one_line_error(
        "unmount of a missing path",
        &out,
        &["missing", "no such", "not found", "not mounted", "exist"],
    );
    // A kernel mount is not ext4box's to unmount: refused, left mounted.
    let img = small_image(&s);
    let km = s.mkdir("kernel");
    kernel_mount(&img, &km, "ro");
    let out = ext4box(&[OsStr::new("unmount"), km.as_os_str()], CMD_TIMEOUT);
    let still = mountinfo_entry(&km).is_some();
    if still {
        kernel_umount(&km);
    }
    assert_one_line_error("unmount of a kernel ext4 mount", &out, &["ext4box", "not", "mount"]);
    assert!(still, "ext4box unmount removed a mount that was not its own");
}

#[test]
fn unmount_of_a_busy_mount() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("bad-busy");
    let img = s.path("image");
    mkfs(&img, 16 << 20, &[]);
    let pm = s.mkdir("populate");
    kernel_mount(&img, &pm, "rw");
    fs::write(pm.join("file"), b"held open").unwrap();
    kernel_umount(&pm);
    let mnt = s.mkdir("mnt");
    let m = ext4box_mount_ok(&img, &mnt, "ro");
    let held = fs::File::open(mnt.join("file")).unwrap();
    let out = ext4box(&[OsStr::new("unmount"), mnt.as_os_str()], CMD_TIMEOUT);
    assert_one_line_error("unmount while a file is open", &out, &["busy", "in use"]);
    assert!(m.alive(), "a refused unmount disturbed the mount");
    let mut buf = String::new();
    std::io::Read::read_to_string(&mut &held, &mut buf).unwrap();
    assert_eq!(buf, "held open");
    drop(held);
    m.unmount();
}
