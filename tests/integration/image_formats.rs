//! Images inside VM disk formats: qcow2 (versions 2 and 3, compressed clusters), VMDK (monolithicSparse,
//! streamOptimized), VHDX (dynamic, fixed) and Android sparse images, with a partition inside or not,
//! read through the confined worker exactly as the kernel reads the raw form. qcow2 images are written
//! (`qemu-img check`, e2fsck and the kernel judge the result) unless their refcounts cannot be vouched
//! for; the other formats stay read-only (a read-write mount says so and leaves the image untouched).
//! VHD, VDI, VMDK descriptors and damaged images are refused in one line.
//! Images come from the real `mkfs.ext4 -d`, `qemu-img convert` (Debian's qemu-utils) and `img2simg`
//! (android-sdk-libsparse-utils). Needs root, /dev/fuse, qemu-img and img2simg.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

fn qemu_img(args: &[&OsStr]) -> String {
    run_ok(Command::new("qemu-img").args(args))
}

/// A raw ext4 image made by `mkfs.ext4 -d` from a tree with small, large and sparse files, a symlink and
/// a directory; returns the image and the tree.
fn populated_raw(s: &Scratch, block_size: &str) -> (PathBuf, PathBuf) {
    let tree = s.mkdir("tree");
    fs::write(tree.join("hello"), b"hello from a VM disk\n").unwrap();
    fs::write(tree.join("big"), pseudo_random(7, 3 << 20)).unwrap();
    fs::create_dir(tree.join("dir")).unwrap();
    fs::write(tree.join("dir/inner"), pseudo_random(8, 70_000)).unwrap();
    let sparse = fs::File::create(tree.join("sparse")).unwrap();
    sparse.set_len(20 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"end", (20 << 20) - 3).unwrap();
    std::os::unix::fs::symlink("dir/inner", tree.join("link")).unwrap();
    let raw = s.path("raw.img");
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", block_size, "-d"])
        .arg(&tree)
        .arg(&raw)
        .arg("96M")
        .output()
        .unwrap();
    assert!(out.status.success(), "mkfs.ext4 -d: {}", output_text(&out));
    (raw, tree)
}

fn kernel_walk(raw: &Path, s: &Scratch, name: &str) -> Walk {
    let k = s.mkdir(name);
    kernel_mount(raw, &k, "ro");
    let w = walk(&k, &WalkOpts::default());
    kernel_umount(&k);
    w
}

fn qcow2_check(img: &Path) {
    let out = Command::new("qemu-img").arg("check").arg(img).output().unwrap();
    assert!(out.status.success(), "qemu-img check {img:?}:\n{}", output_text(&out));
}

#[test]
fn qcow2_images_read_as_the_kernel_reads_their_raw_form() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("fmt-qcow2-read");
    let (raw, _) = populated_raw(&s, "4096");
    let expected = kernel_walk(&raw, &s, "kernel");
    let mnt = s.mkdir("mnt");
    for (name, extra) in [("v3", &["-o", "compat=1.1"][..]), ("v2", &["-o", "compat=0.10"]), ("compressed", &["-c"])] {
        let img = s.path(&format!("{name}.qcow2"));
        let mut args: Vec<&OsStr> = vec![OsStr::new("convert"), OsStr::new("-O"), OsStr::new("qcow2")];
        args.extend(extra.iter().map(OsStr::new));
        args.extend([raw.as_os_str(), img.as_os_str()]);
        qemu_img(&args);
        // Told by its magic number; named explicitly, the same.
        for opts in ["ro", "ro,format=qcow2"] {
            let m = ext4box_mount_ok(&img, &mnt, opts);
            let got = walk(&mnt, &WalkOpts::default());
            assert_walks_equal("kernel (raw)", &expected, &format!("ext4box ({name} qcow2, {opts})"), &got);
            m.unmount();
        }
        // The same image read as raw is no filesystem at all: one line, nothing mounted.
        let out = ext4box_mount(&img, &mnt, "ro,format=raw");
        assert!(!out.status.success(), "a qcow2 image mounted as raw:\n{}", output_text(&out));
        assert_eq!(stderr_lines(&out).len(), 1, "{}", output_text(&out));
        assert!(mountinfo_entry(&mnt).is_none());
    }
}

/// qcow2 images are written: files created, overwritten, removed and renamed through ext4box in
/// each shape qemu-img makes (v3, v2, compressed clusters rewritten, 4 KiB clusters, lazy refcounts),
/// then `qemu-img check` clean, converted back to raw, `e2fsck -fn` clean, and the kernel reads what
/// ext4box showed.
#[test]
fn qcow2_images_are_written_and_qemu_img_check_stays_clean() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("fmt-qcow2-rw");
    let (raw, _) = populated_raw(&s, "4096");
    let mnt = s.mkdir("mnt");
    let shapes: [(&str, &[&str]); 5] = [
        ("v3", &[]),
        ("v2", &["-o", "compat=0.10"]),
        ("compressed", &["-c"]),
        ("small-clusters", &["-o", "cluster_size=4096"]),
        ("lazy", &["-o", "lazy_refcounts=on"]),
    ];
    for (name, extra) in shapes {
        let img = s.path(&format!("{name}.qcow2"));
        let mut args: Vec<&OsStr> = vec![OsStr::new("convert"), OsStr::new("-O"), OsStr::new("qcow2")];
        args.extend(extra.iter().map(OsStr::new));
        args.extend([raw.as_os_str(), img.as_os_str()]);
        qemu_img(&args);
        // noatime: the walk below reads every file, and must leave what it compares as it was.
        let out = ext4box_mount(&img, &mnt, "noatime");
        assert!(out.status.success() && stderr_lines(&out).is_empty(), "{name}: {}", output_text(&out));
        let m = Ext4boxMount::adopt(&mnt);
        fs::write(mnt.join("new"), pseudo_random(11, 5 << 20)).unwrap();
        fs::create_dir(mnt.join("made")).unwrap();
        for i in 0..50 {
            fs::write(mnt.join(format!("made/f{i}")), pseudo_random(i, 3000 + i as usize * 100)).unwrap();
        }
        // Overwriting a file rewrites its clusters (compressed ones are copied out first).
        let f = fs::OpenOptions::new().write(true).open(mnt.join("big")).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &pseudo_random(12, 100_000), 1 << 20).unwrap();
        drop(f);
        fs::remove_file(mnt.join("dir/inner")).unwrap();
        fs::rename(mnt.join("hello"), mnt.join("made/hello")).unwrap();
        let written = walk(&mnt, &WalkOpts::default());
        m.unmount();
        qcow2_check(&img);
        let back = s.path(&format!("{name}.raw"));
        qemu_img(&[OsStr::new("convert"), OsStr::new("-O"), OsStr::new("raw"), img.as_os_str(), back.as_os_str()]);
        assert_fsck_clean(&back);
        let kernel = kernel_walk(&back, &s, &format!("kernel-{name}"));
        assert_walks_equal(&format!("ext4box ({name} qcow2)"), &written, "kernel (converted back)", &kernel);
        // And mounted again, ext4box reads what it wrote.
        let m = ext4box_mount_ok(&img, &mnt, "ro");
        assert_walks_equal("first mount", &written, "second mount", &walk(&mnt, &WalkOpts::default()));
        m.unmount();
    }
}

/// An image the refcount check cannot vouch for (internal snapshots; a refcount too low) mounts
/// read-only with one line saying why and naming `qemu-img check -r all`, and stays untouched.
#[test]
fn qcow2_images_that_cannot_be_written_safely_mount_read_only() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("fmt-qcow2-ro");
    let (raw, _) = populated_raw(&s, "1024");
    let mnt = s.mkdir("mnt");
    let snap = s.path("snap.qcow2");
    qemu_img(&[OsStr::new("convert"), OsStr::new("-O"), OsStr::new("qcow2"), raw.as_os_str(), snap.as_os_str()]);
    qemu_img(&[OsStr::new("snapshot"), OsStr::new("-c"), OsStr::new("before"), snap.as_os_str()]);
    // A refcount too low: the refcount of the last cluster (a data cluster, as qemu-img convert lays
    // images out) is set to 0, so imago would hand it out again.
    let low = s.path("low.qcow2");
    qemu_img(&[OsStr::new("convert"), OsStr::new("-O"), OsStr::new("qcow2"), raw.as_os_str(), low.as_os_str()]);
    let mut b = fs::read(&low).unwrap();
    let be64 = |b: &[u8], at: usize| u64::from_be_bytes(b[at..at + 8].try_into().unwrap());
    let cluster_bits = u32::from_be_bytes(b[20..24].try_into().unwrap());
    let reftable = be64(&b, 48) as usize;
    let block = be64(&b, reftable) as usize;
    let last = (b.len() >> cluster_bits) - 1;
    assert!(last < 1 << (cluster_bits - 1), "the image needs more than one refcount block");
    b[block + last * 2..block + last * 2 + 2].fill(0);
    fs::write(&low, &b).unwrap();
    let out = Command::new("qemu-img").arg("check").arg(&low).output().unwrap();
    assert!(!out.status.success(), "qemu-img check finds no error in the damaged image:\n{}", output_text(&out));
    // A data cluster shared by two L2 entries, its refcount 2 to match: a discard of one would punch
    // the other's data out of the file.
    let shared = s.path("shared.qcow2");
    qemu_img(&[OsStr::new("convert"), OsStr::new("-O"), OsStr::new("qcow2"), raw.as_os_str(), shared.as_os_str()]);
    let mut b = fs::read(&shared).unwrap();
    let l2 = (be64(&b, be64(&b, 40) as usize) & 0x00ff_ffff_ffff_fe00) as usize;
    let data = (be64(&b, l2) & 0x00ff_ffff_ffff_fe00) as usize;
    assert!(data != 0 && be64(&b, l2 + 8) != 0, "the first two clusters are not both allocated");
    b.copy_within(l2..l2 + 8, l2 + 8);
    let block = be64(&b, be64(&b, 48) as usize) as usize;
    let at = block + (data >> cluster_bits) * 2;
    b[at..at + 2].copy_from_slice(&2u16.to_be_bytes());
    fs::write(&shared, &b).unwrap();
    for (img, why) in [(&snap, "snapshots"), (&low, "refcount"), (&shared, "more than one L2 entry")] {
        let before = fs::read(img).unwrap();
        let out = ext4box_mount(img, &mnt, "");
        assert!(out.status.success(), "{why}: {}", output_text(&out));
        let lines = stderr_lines(&out);
        assert!(
            lines.len() == 1
                && lines[0].contains("read-only")
                && lines[0].contains(why)
                && lines[0].contains("qemu-img check"),
            "{why}: {lines:?}"
        );
        let m = Ext4boxMount::adopt(&mnt);
        let e = fs::write(mnt.join("new"), b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
        assert_eq!(fs::read(mnt.join("hello")).unwrap(), b"hello from a VM disk\n");
        m.unmount();
        assert!(fs::read(img).unwrap() == before, "a read-only qcow2 mount changed the image ({why})");
    }
}

/// The VM disk formats besides qcow2, each as its tool makes it from a raw image: (name, tool's
/// arguments before the source and target, `format=`).
const CONVERSIONS: [(&str, &[&str], &str); 5] = [
    ("vmdk-sparse", &["convert", "-O", "vmdk", "-o", "subformat=monolithicSparse"], "vmdk"),
    ("vmdk-stream", &["convert", "-O", "vmdk", "-o", "subformat=streamOptimized"], "vmdk"),
    ("vhdx-dynamic", &["convert", "-O", "vhdx", "-o", "subformat=dynamic"], "vhdx"),
    ("vhdx-fixed", &["convert", "-O", "vhdx", "-o", "subformat=fixed"], "vhdx"),
    ("android-sparse", &[], "sparse"),
];

/// Makes `name` of [`CONVERSIONS`] from `raw`.
fn convert(raw: &Path, name: &str, s: &Scratch) -> PathBuf {
    let (_, args, _) = CONVERSIONS.iter().find(|(n, _, _)| *n == name).unwrap();
    let img = s.path(&format!("{name}.img"));
    if args.is_empty() {
        run_ok(Command::new("img2simg").arg(raw).arg(&img));
    } else {
        let mut all: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        all.extend([raw.as_os_str(), img.as_os_str()]);
        qemu_img(&all);
    }
    img
}

#[test]
fn vmdk_vhdx_and_android_sparse_images_read_as_the_kernel_reads_their_raw_form() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("fmt-others-read");
    let mnt = s.mkdir("mnt");
    for block_size in ["4096", "1024"] {
        let sub = Scratch::new(&format!("fmt-others-read-{block_size}"));
        let (raw, _) = populated_raw(&sub, block_size);
        let expected = kernel_walk(&raw, &sub, "kernel");
        for (name, _, format) in CONVERSIONS {
            let img = convert(&raw, name, &sub);
            for opts in ["ro".to_string(), format!("ro,format={format}")] {
                let m = ext4box_mount_ok(&img, &mnt, &opts);
                let got = walk(&mnt, &WalkOpts::default());
                assert_walks_equal("kernel (raw)", &expected, &format!("ext4box ({name}, {block_size}, {opts})"), &got);
                m.unmount();
            }
            // Named as another format, it is refused in one line.
            let wrong = if format == "vhdx" { "vmdk" } else { "vhdx" };
            let out = ext4box_mount(&img, &mnt, &format!("ro,format={wrong}"));
            assert!(!out.status.success(), "{name} mounted as {wrong}:\n{}", output_text(&out));
            assert_eq!(stderr_lines(&out).len(), 1, "{}", output_text(&out));
            assert!(mountinfo_entry(&mnt).is_none());
        }
    }
}

/// They are served read-only: a read-write mount says so in one line, writes answer EROFS,
/// and the image stays byte for byte what it was.
#[test]
fn vmdk_vhdx_and_android_sparse_images_mount_read_only_and_stay_untouched() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("fmt-others-ro");
    let (raw, _) = populated_raw(&s, "4096");
    let mnt = s.mkdir("mnt");
    for (name, _, format) in CONVERSIONS {
        let img = convert(&raw, name, &s);
        let before = fs::read(&img).unwrap();
        let out = ext4box_mount(&img, &mnt, "");
        assert!(out.status.success(), "{name}: {}", output_text(&out));
        let lines = stderr_lines(&out);
        let title = match format {
            "sparse" => "Android sparse",
            f => &f.to_uppercase(),
        };
        assert!(lines.len() == 1 && lines[0].contains("read-only") && lines[0].contains(title), "{name}: {lines:?}");
        let m = Ext4boxMount::adopt(&mnt);
        let e = fs::write(mnt.join("new"), b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{name}: {e}");
        assert_eq!(fs::read(mnt.join("hello")).unwrap(), b"hello from a VM disk\n");
        m.unmount();
        assert!(fs::read(&img).unwrap() == before, "a read-only {name} mount changed the image");
        if format != "sparse" {
            qcow2_check(&img);
        }
    }
}

#[test]
fn a_partition_inside_a_vm_disk() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("fmt-part");
    let disk = s.path("disk.raw");
    fs::File::create(&disk).unwrap().set_len(48 << 20).unwrap();
    sfdisk(&disk, "label: dos\nstart=2048, type=83\n");
    let out =
        Command::new("mkfs.ext4").args(["-q", "-F", "-E", "offset=1048576"]).arg(&disk).arg("40M").output().unwrap();
    assert!(out.status.success(), "mkfs: {}", output_text(&out));
    let k = s.mkdir("kernel");
    run_ok(Command::new("mount").arg("-o").arg("loop,offset=1048576").arg(&disk).arg(&k));
    fs::write(k.join("inside"), b"a partition of a VM disk\n").unwrap();
    kernel_umount(&k);
    let qcow2 = s.path("disk.qcow2");
    qemu_img(&[OsStr::new("convert"), OsStr::new("-O"), OsStr::new("qcow2"), disk.as_os_str(), qcow2.as_os_str()]);
    let mut images = vec![("qcow2", qcow2)];
    images.extend(CONVERSIONS.iter().map(|(name, _, _)| (*name, convert(&disk, name, &s))));
    let mnt = s.mkdir("mnt");
    for (name, img) in &images {
        for opts in ["ro,partition=1", "ro,offset=1048576"] {
            let m = ext4box_mount_ok(img, &mnt, opts);
            assert_eq!(fs::read(mnt.join("inside")).unwrap(), b"a partition of a VM disk\n", "{name}: {opts}");
            m.unmount();
        }
    }
}

/// A VMDK descriptor's data is in other files: the flat one is named (and mounts, being raw); split and
/// damaged images of each format are refused in one line, nothing mounted.
#[test]
fn vmdk_descriptors_and_damaged_vm_disks_are_refused_in_one_line() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("fmt-damaged");
    let raw = s.path("raw.img");
    mkfs(&raw, 16 << 20, &[]);
    let mnt = s.mkdir("mnt");
    let refused = |img: &Path, what: &str| -> String {
        let out = ext4box_mount(img, &mnt, "ro");
        let lines = stderr_lines(&out);
        assert!(!out.status.success() && lines.len() == 1, "{what}: {}", output_text(&out));
        assert!(mountinfo_entry(&mnt).is_none(), "{what}");
        lines[0].clone()
    };
    let flat = s.path("flat.vmdk");
    qemu_img(&[
        OsStr::new("convert"),
        OsStr::new("-O"),
        OsStr::new("vmdk"),
        OsStr::new("-o"),
        OsStr::new("subformat=monolithicFlat"),
        raw.as_os_str(),
        flat.as_os_str(),
    ]);
    let line = refused(&flat, "a monolithicFlat descriptor");
    assert!(line.contains("\"flat-flat.vmdk\"") && line.contains("mount that file"), "{line}");
    ext4box_mount_ok(&s.path("flat-flat.vmdk"), &mnt, "ro").unmount();
    // Split in 2 GiB extents: a disk of one extent names it (a sparse extent, which mounts); of two, the
    // command that joins them.
    let split = s.path("split.vmdk");
    let big = s.path("big.raw");
    fs::copy(&raw, &big).unwrap();
    fs::OpenOptions::new().write(true).open(&big).unwrap().set_len(2100 << 20).unwrap();
    for (disk, extents) in [(&raw, 1), (&big, 2)] {
        let _ = fs::remove_file(&split);
        qemu_img(&[
            OsStr::new("convert"),
            OsStr::new("-O"),
            OsStr::new("vmdk"),
            OsStr::new("-o"),
            OsStr::new("subformat=twoGbMaxExtentSparse"),
            disk.as_os_str(),
            split.as_os_str(),
        ]);
        let line = refused(&split, &format!("a VMDK descriptor of {extents} extents"));
        if extents == 1 {
            assert!(line.contains("\"split-s001.vmdk\"") && line.contains("mount that file"), "{line}");
            ext4box_mount_ok(&s.path("split-s001.vmdk"), &mnt, "ro").unmount();
        } else {
            assert!(line.contains("qemu-img convert"), "{line}");
        }
    }
    // Damage: a VHDX with both headers' checksums broken, a VMDK whose grain directory lies past the
    // end, an Android sparse image cut short, and each cut to its first 64 KiB.
    for (name, _, _) in CONVERSIONS {
        let img = convert(&raw, name, &s);
        let good = fs::read(&img).unwrap();
        let mut bytes = good.clone();
        match name {
            n if n.starts_with("vhdx") => {
                bytes[64 * 1024 + 100] ^= 1;
                bytes[128 * 1024 + 100] ^= 1;
            }
            n if n.starts_with("vmdk") => {
                // The grain directory's offset, in the header (or, when that says "at the end", the
                // footer's copy 1024 bytes before the end).
                let at_end = bytes[56..64] == [0xff; 8];
                let at = if at_end { bytes.len() - 1024 } else { 0 };
                bytes[at + 56..at + 64].copy_from_slice(&(1u64 << 40).to_le_bytes());
            }
            _ => bytes.truncate(bytes.len() - 100),
        }
        fs::write(&img, &bytes).unwrap();
        let line = refused(&img, name);
        assert!(line.contains("damaged"), "{name}: {line}");
        fs::write(&img, &good[..65536]).unwrap();
        refused(&img, &format!("{name} cut short"));
    }
}

#[test]
fn formats_not_served_are_refused_in_one_line() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("fmt-refused");
    let raw = s.path("raw.img");
    mkfs(&raw, 16 << 20, &[]);
    let mnt = s.mkdir("mnt");
    for (fmt, word) in [("vpc", "VHD"), ("vdi", "VDI")] {
        let img = s.path(&format!("disk.{fmt}"));
        qemu_img(&[OsStr::new("convert"), OsStr::new("-O"), OsStr::new(fmt), raw.as_os_str(), img.as_os_str()]);
        let out = ext4box_mount(&img, &mnt, "ro");
        let lines = stderr_lines(&out);
        assert!(!out.status.success() && lines.len() == 1, "{fmt}: {}", output_text(&out));
        assert!(lines[0].contains(word) && lines[0].contains("qemu-img convert"), "{fmt}: {lines:?}");
        assert!(mountinfo_entry(&mnt).is_none());
    }
    // A qcow2 with a backing file: the file would have to be opened by name, which the worker cannot.
    let base = s.path("base.qcow2");
    qemu_img(&[OsStr::new("convert"), OsStr::new("-O"), OsStr::new("qcow2"), raw.as_os_str(), base.as_os_str()]);
    let overlay = s.path("overlay.qcow2");
    qemu_img(&[
        OsStr::new("create"),
        OsStr::new("-q"),
        OsStr::new("-f"),
        OsStr::new("qcow2"),
        OsStr::new("-F"),
        OsStr::new("qcow2"),
        OsStr::new("-b"),
        base.as_os_str(),
        overlay.as_os_str(),
    ]);
    let before = fs::read(&overlay).unwrap();
    let out = ext4box_mount(&overlay, &mnt, "");
    let lines = stderr_lines(&out);
    assert!(!out.status.success() && lines.len() == 1, "{}", output_text(&out));
    assert!(mountinfo_entry(&mnt).is_none());
    assert!(fs::read(&overlay).unwrap() == before, "a refused qcow2 image was changed");
}

/// A VHDX whose log holds an entry not yet written in place (its host crashed) is refused read-only,
/// as qemu refuses it; once `qemu-img check -r all` has replayed the log it mounts. The dirty log is
/// made from a real one: qemu-io writes (which go through the log), then the current header is given
/// the log entry's GUID back, as it was between the log write and the in-place write.
#[test]
fn a_vhdx_with_a_log_to_replay_is_refused_until_it_is_replayed() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("fmt-vhdx-log");
    let (raw, _) = populated_raw(&s, "4096");
    let img = convert(&raw, "vhdx-dynamic", &s);
    run_ok(Command::new("qemu-io").args(["-c", "write -P 0x55 90M 1M"]).arg(&img));
    let mut b = fs::read(&img).unwrap();
    let seq = |b: &[u8], h: usize| u64::from_le_bytes(b[h + 8..h + 16].try_into().unwrap());
    let current = if seq(&b, 128 << 10) > seq(&b, 64 << 10) { 128 << 10 } else { 64 << 10 };
    let log = u64::from_le_bytes(b[current + 72..current + 80].try_into().unwrap()) as usize;
    assert_eq!(&b[log..log + 4], b"loge", "qemu-io left no log entry to work from");
    let guid = b[log + 32..log + 48].to_vec();
    b[current + 48..current + 64].copy_from_slice(&guid);
    b[current + 4..current + 8].fill(0);
    let sum = crc32c::crc32c(&b[current..current + 4096]);
    b[current + 4..current + 8].copy_from_slice(&sum.to_le_bytes());
    fs::write(&img, &b).unwrap();
    let out = Command::new("qemu-img").arg("info").arg(&img).output().unwrap();
    assert!(!out.status.success(), "qemu opens the dirty VHDX read-only:\n{}", output_text(&out));
    let mnt = s.mkdir("mnt");
    let out = ext4box_mount(&img, &mnt, "ro");
    let lines = stderr_lines(&out);
    assert!(!out.status.success() && lines.len() == 1 && lines[0].contains("log"), "{}", output_text(&out));
    assert!(mountinfo_entry(&mnt).is_none());
    run_ok(Command::new("qemu-img").args(["check", "-r", "all"]).arg(&img));
    let m = ext4box_mount_ok(&img, &mnt, "ro");
    assert_eq!(fs::read(mnt.join("hello")).unwrap(), b"hello from a VM disk\n");
    m.unmount();
}
