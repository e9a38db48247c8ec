//! EA inodes (`-O ea_inode`): attribute values too large for the inode body and one attribute block
//! are written into an inode of their own, with the hash and reference count the kernel keeps, and
//! changed and removed (the EA inode deleted with its last reference); values the kernel wrote, shared
//! by two files through one EA inode, are released one reference at a time. After each: `e2fsck -fn`
//! clean and the kernel reads back every value exactly. Needs root (loop mounts) and /dev/fuse.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::common::*;

/// Every attribute of every file in the root of `mnt`, by file and name.
fn all_xattrs(mnt: &Path) -> BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut all = BTreeMap::new();
    for e in fs::read_dir(mnt).unwrap() {
        let e = e.unwrap();
        if e.file_name() == "lost+found" {
            continue;
        }
        let p = e.path();
        let names = list_xattrs(&p).unwrap();
        let values = names.into_iter().map(|n| (n.clone(), get_xattr(&p, &n).unwrap())).collect();
        all.insert(e.file_name().to_string_lossy().into_owned(), values);
    }
    all
}

fn kernel_xattrs(img: &Path, s: &Scratch) -> BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>> {
    assert_fsck_clean(img);
    let k = s.mkdir("kernel");
    kernel_mount(img, &k, "ro");
    let seen = all_xattrs(&k);
    kernel_umount(&k);
    seen
}

/// The number of inodes in use, per the superblock after e2fsck's check.
fn inodes_used(img: &Path) -> u64 {
    let stats = debugfs(img, "stats");
    let field = |name: &str| -> u64 {
        let line = stats.lines().find_map(|l| l.strip_prefix(name)).unwrap_or_else(|| panic!("{name} in:\n{stats}"));
        line.trim().parse().unwrap()
    };
    field("Inode count:") - field("Free inodes:")
}

#[test]
fn large_values_go_to_ea_inodes_and_are_changed_and_removed_as_the_kernel_reads_them() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    for block_size in ["4096", "1024"] {
        let s = Scratch::new(&format!("ea-inode-{block_size}"));
        let img = s.path("img");
        mkfs(&img, 64 << 20, &["-b", block_size, "-O", "ea_inode"]);
        let base = inodes_used(&img);
        let mnt = s.mkdir("mnt");
        let m = ext4box_mount_ok(&img, &mnt, "");
        for f in ["big", "two", "changed", "removed", "deleted", "small"] {
            fs::write(mnt.join(f), f.as_bytes()).unwrap();
        }
        let max = pseudo_random(1, 65536);
        let other = pseudo_random(2, 40000);
        set_xattr(&mnt.join("big"), "user.max", &max).unwrap();
        set_xattr(&mnt.join("two"), "user.first", &pseudo_random(3, 20000)).unwrap();
        set_xattr(&mnt.join("two"), "security.second", &pseudo_random(4, 5000)).unwrap();
        set_xattr(&mnt.join("two"), "user.inline", b"in the inode").unwrap();
        // Large to large, then large to small (into the inode or block), then small to large.
        set_xattr(&mnt.join("changed"), "user.v", &max).unwrap();
        set_xattr(&mnt.join("changed"), "user.v", &other).unwrap();
        set_xattr(&mnt.join("changed"), "user.w", &max).unwrap();
        set_xattr(&mnt.join("changed"), "user.w", b"now small").unwrap();
        set_xattr(&mnt.join("changed"), "user.x", b"small first").unwrap();
        set_xattr(&mnt.join("changed"), "user.x", &other).unwrap();
        set_xattr(&mnt.join("removed"), "user.gone", &max).unwrap();
        remove_xattr(&mnt.join("removed"), "user.gone").unwrap();
        set_xattr(&mnt.join("deleted"), "user.with", &max).unwrap();
        fs::hard_link(mnt.join("deleted"), mnt.join("deleted-link")).unwrap();
        fs::remove_file(mnt.join("deleted")).unwrap();
        fs::remove_file(mnt.join("deleted-link")).unwrap();
        set_xattr(&mnt.join("small"), "user.s", b"fits").unwrap();
        assert_eq!(get_xattr(&mnt.join("big"), b"user.max").unwrap(), max);
        let written = all_xattrs(&mnt);
        m.unmount();
        assert_eq!(written["changed"][&b"user.v"[..]], other);
        assert_eq!(written["changed"][&b"user.w"[..]], b"now small");
        assert!(written["removed"].is_empty());
        assert_eq!(kernel_xattrs(&img, &s), written, "{block_size}: the kernel's view of what ext4box wrote");
        // Five files, and an EA inode for each large value still set (max, first, second, v and x): none
        // left over from the changes, removals and the deleted file.
        assert_eq!(inodes_used(&img), base + 5 + 5, "{block_size}: inodes in use (an EA inode leaked or is missing)");
    }
}

#[test]
fn values_the_kernel_shares_between_files_are_released_one_reference_at_a_time() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    let s = Scratch::new("ea-inode-kernel");
    let img = s.path("img");
    mkfs(&img, 64 << 20, &["-O", "ea_inode"]);
    let k = s.mkdir("k");
    kernel_mount(&img, &k, "");
    let shared = pseudo_random(5, 30000);
    for f in ["a", "b", "c"] {
        fs::write(k.join(f), f).unwrap();
        // The kernel keeps one EA inode for the same value (its mbcache), referenced three times.
        set_xattr(&k.join(f), "user.shared", &shared).unwrap();
    }
    kernel_umount(&k);
    let base = inodes_used(&img);
    let mnt = s.mkdir("mnt");
    let m = ext4box_mount_ok(&img, &mnt, "");
    remove_xattr(&mnt.join("a"), "user.shared").unwrap();
    set_xattr(&mnt.join("b"), "user.shared", b"replaced").unwrap();
    let written = all_xattrs(&mnt);
    m.unmount();
    assert_eq!(written["c"][&b"user.shared"[..]], shared);
    assert_eq!(kernel_xattrs(&img, &s), written);
    assert_eq!(inodes_used(&img), base, "the shared EA inode is still referenced by c");
    let m = ext4box_mount_ok(&img, &mnt, "");
    fs::remove_file(mnt.join("c")).unwrap();
    m.unmount();
    assert_fsck_clean(&img);
    assert_eq!(inodes_used(&img), base - 2, "c and the EA inode of its last reference are gone");
}
