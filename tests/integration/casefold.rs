//! Case-insensitive directories (`-O casefold`, `chattr +F`): names are stored as given and found under
//! any case and either Unicode normal form; a name differing only in case is taken; the htree is
//! ordered by the hash of the folded name, which e2fsck checks (its own Unicode tables) after the
//! unmount, with no duplicate under folding; strict mode refuses names that are not UTF-8. The kernel
//! here is built without CONFIG_UNICODE, so it cannot mount these images: e2fsck and a second mount are
//! the judges. Needs root (chattr on the mount) and /dev/fuse.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::common::*;

fn chattr(flag: &str, p: &Path) -> std::process::Output {
    Command::new("chattr").arg(flag).arg(p).output().unwrap()
}

fn ino(p: &Path) -> u64 {
    lstat(p).unwrap_or_else(|e| panic!("{p:?}: errno {e}")).ino
}

#[test]
fn casefolded_directories_find_names_under_any_case_and_e2fsck_agrees() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    for block_size in ["4096", "1024"] {
        let s = Scratch::new(&format!("casefold-{block_size}"));
        let img = s.path("img");
        mkfs(&img, 64 << 20, &["-b", block_size, "-O", "casefold"]);
        let mnt = s.mkdir("mnt");
        let m = ext4box_mount_ok(&img, &mnt, "");
        let d = mnt.join("Games");
        fs::create_dir(&d).unwrap();
        fs::write(d.join("early"), b"x").unwrap();
        assert!(!chattr("+F", &d).status.success(), "only an empty directory becomes case-insensitive");
        fs::remove_file(d.join("early")).unwrap();
        assert!(chattr("+F", &d).status.success());
        assert!(!chattr("+F", &mnt).status.success(), "the root is not empty");

        fs::write(d.join("SteamApps"), b"steam").unwrap();
        fs::write(d.join("Straße"), b"street").unwrap();
        fs::write(d.join("\u{c9}cole"), b"nfc").unwrap(); // É precomposed
        for alias in ["steamapps", "STEAMAPPS", "sTeAmApPs"] {
            assert_eq!(fs::read(d.join(alias)).unwrap(), b"steam", "{alias}");
        }
        assert_eq!(fs::read(d.join("STRASSE")).unwrap(), b"street");
        assert_eq!(fs::read(d.join("e\u{301}COLE")).unwrap(), b"nfc", "NFD and another case");
        let taken = fs::OpenOptions::new().write(true).create_new(true).open(d.join("STEAMAPPS")).unwrap_err();
        assert_eq!(taken.raw_os_error(), Some(libc::EEXIST));
        assert_eq!(errno_of(&fs::create_dir(d.join("steamapps")).unwrap_err()), libc::EEXIST);
        // Enough names for an htree, found under another case.
        for i in 0..400 {
            fs::write(d.join(format!("Save-File-Number-{i}.DAT")), i.to_string()).unwrap();
        }
        for i in (0..400).step_by(7) {
            assert_eq!(fs::read_to_string(d.join(format!("save-file-number-{i}.dat"))).unwrap(), i.to_string());
        }
        // Removing and renaming under another spelling touch the stored name.
        fs::remove_file(d.join("save-file-number-3.dat")).unwrap();
        assert!(lstat(&d.join("Save-File-Number-3.DAT")).is_err());
        fs::rename(d.join("SAVE-FILE-NUMBER-4.DAT"), d.join("renamed")).unwrap();
        assert_eq!(fs::read_to_string(d.join("RENAMED")).unwrap(), "4");
        // Subdirectories inherit the flag; other directories are case-sensitive.
        fs::create_dir(d.join("Sub")).unwrap();
        fs::write(d.join("sub/Inner"), b"in").unwrap();
        assert_eq!(fs::read(d.join("SUB/INNER")).unwrap(), b"in");
        fs::write(mnt.join("Plain"), b"p").unwrap();
        assert!(lstat(&mnt.join("plain")).is_err(), "the root is case-sensitive");
        // Not UTF-8: kept as bytes (not strict).
        let raw = d.join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"bin\xff"));
        fs::write(&raw, b"raw").unwrap();
        let listed: Vec<_> = fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(listed.iter().any(|n| n == "SteamApps") && listed.iter().any(|n| n == "Straße"), "stored as given");
        assert_eq!(listed.len(), 3 + 400 - 1 + 1 + 1, "{} names", listed.len());
        let steam = ino(&d.join("SteamApps"));
        m.unmount();

        // e2fsck checks the htree's order with its own casefolded hash and looks for folded duplicates.
        let out =
            run_timeout(Command::new("e2fsck").arg("-fn").arg(&img), std::time::Duration::from_secs(300)).unwrap();
        assert!(out.status.success(), "e2fsck -fn:\n{}", output_text(&out));
        let flags = debugfs(&img, "stat Games");
        assert!(flags.contains("Flags: 0x4") || flags.contains("Flags: 0x5"), "casefold flag on disk: {flags}");

        let m = ext4box_mount_ok(&img, &mnt, "ro");
        assert_eq!(ino(&d.join("STEAMAPPS")), steam);
        assert_eq!(fs::read(d.join("strasse")).unwrap(), b"street");
        assert_eq!(fs::read_to_string(d.join("SAVE-FILE-NUMBER-399.dat")).unwrap(), "399");
        m.unmount();
    }
}

#[test]
fn strict_mode_refuses_names_that_are_not_utf8() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("casefold-strict");
    let img = s.path("img");
    mkfs(&img, 64 << 20, &["-O", "casefold", "-E", "encoding_flags=strict"]);
    let mnt = s.mkdir("mnt");
    let m = ext4box_mount_ok(&img, &mnt, "");
    let d = mnt.join("ci");
    fs::create_dir(&d).unwrap();
    assert!(chattr("+F", &d).status.success());
    let raw = d.join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"bin\xff"));
    assert_eq!(errno_of(&fs::write(&raw, b"raw").unwrap_err()), libc::EINVAL);
    fs::write(d.join("Ok"), b"ok").unwrap();
    assert_eq!(fs::read(d.join("OK")).unwrap(), b"ok");
    m.unmount();
    assert_fsck_clean(&img);
}

#[test]
fn an_htree_e2fsprogs_hashed_on_folded_names_is_read() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("casefold-e2fsprogs");
    let src = s.mkdir("src");
    fs::create_dir(src.join("Library")).unwrap();
    for i in 0..300 {
        fs::write(src.join(format!("Library/Über-Datei-{i}.TXT")), i.to_string()).unwrap();
    }
    let img = s.path("img");
    mkfs(&img, 64 << 20, &["-b", "1024", "-O", "casefold", "-d", src.to_str().unwrap()]);
    // The directory made case-insensitive (and indexed); e2fsck -D rebuilds its htree on folded hashes.
    debugfs_w(&img, "set_inode_field /Library flags 0x40081000");
    let _ = run_timeout(Command::new("e2fsck").arg("-fyD").arg(&img), std::time::Duration::from_secs(300));
    assert_fsck_clean(&img);
    let mnt = s.mkdir("mnt");
    let m = ext4box_mount_ok(&img, &mnt, "ro");
    for i in (0..300).step_by(11) {
        let alias = mnt.join(format!("Library/üBER-DATEI-{i}.txt"));
        assert_eq!(fs::read_to_string(&alias).unwrap_or_else(|e| panic!("{alias:?}: {e}")), i.to_string());
    }
    m.unmount();
}
