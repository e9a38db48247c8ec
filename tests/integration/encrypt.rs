//! fscrypt images (`-O encrypt`): a tree the kernel encrypted (policy v2, its own key) is read by ext4box
//! as the kernel's own mount shows it without the key: no-key names for entries (short ones whole, long
//! ones by prefix and digest, in linear, single-block and htree directories), symlink targets as no-key
//! names with matching sizes, encrypted files refusing open with ENOKEY, unencrypted directories as they
//! are. The mount goes read-only by itself and the image is not changed. Needs root (loop mounts, the
//! kernel's fscrypt ioctls) and /dev/fuse.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::common::*;

/// `FS_IOC_ADD_ENCRYPTION_KEY`: `_IOWR('f', 23, struct fscrypt_add_key_arg)` (80 bytes).
const FS_IOC_ADD_ENCRYPTION_KEY: libc::c_ulong = 0xC050_6617;
/// `FS_IOC_SET_ENCRYPTION_POLICY`: `_IOR('f', 19, struct fscrypt_policy_v1)`; a v2 policy is told apart
/// by its first byte.
const FS_IOC_SET_ENCRYPTION_POLICY: libc::c_ulong = 0x800C_6613;

/// Adds a 64-byte key to the filesystem's keyring (it goes with the mount) and returns its identifier.
fn add_key(mnt: &Path) -> [u8; 16] {
    let mut arg = vec![0u8; 80 + 64];
    arg[0..4].copy_from_slice(&2u32.to_le_bytes()); // FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER
    arg[40..44].copy_from_slice(&64u32.to_le_bytes()); // raw_size
    arg[80..].copy_from_slice(&pseudo_random(77, 64));
    let dir = fs::File::open(mnt).unwrap();
    // SAFETY: `arg` is a valid `fscrypt_add_key_arg` followed by its 64 raw bytes, for the call's duration.
    let r = unsafe { libc::ioctl(dir.as_raw_fd(), FS_IOC_ADD_ENCRYPTION_KEY, arg.as_mut_ptr()) };
    assert_eq!(r, 0, "FS_IOC_ADD_ENCRYPTION_KEY: errno {}", errno());
    arg[8..24].try_into().unwrap()
}

/// Makes the empty directory `dir` encrypted with a v2 policy (AES-256-XTS contents, AES-256-CTS names,
/// names padded to 32 bytes) under the key `id`.
fn encrypt_dir(dir: &Path, id: &[u8; 16]) {
    let mut policy = [0u8; 24];
    policy[..4].copy_from_slice(&[2, 1, 4, 0x03]);
    policy[8..].copy_from_slice(id);
    let d = fs::File::open(dir).unwrap();
    // SAFETY: `policy` is a valid `fscrypt_policy_v2` for the call's duration.
    let r = unsafe { libc::ioctl(d.as_raw_fd(), FS_IOC_SET_ENCRYPTION_POLICY, policy.as_ptr()) };
    assert_eq!(r, 0, "FS_IOC_SET_ENCRYPTION_POLICY: errno {}", errno());
}

/// The tree the kernel writes, with the key, into `mnt`.
fn populate(mnt: &Path) {
    let id = add_key(mnt);
    let secret = mnt.join("secret");
    fs::create_dir(&secret).unwrap();
    encrypt_dir(&secret, &id);
    fs::write(secret.join("a"), b"short name").unwrap();
    fs::write(secret.join("notes.txt"), pseudo_random(1, 10_000)).unwrap();
    fs::write(secret.join("empty"), b"").unwrap();
    // Ciphertexts longer than the 149 bytes a no-key name holds: named by prefix and digest.
    for c in ['x', 'y'] {
        fs::write(secret.join(c.to_string().repeat(230)), c.to_string()).unwrap();
    }
    std::os::unix::fs::symlink("notes.txt", secret.join("fast-link")).unwrap();
    std::os::unix::fs::symlink("a/".repeat(60), secret.join("slow-link")).unwrap();
    let small = secret.join("small");
    fs::create_dir(&small).unwrap();
    fs::write(small.join("inner"), b"inherited encryption").unwrap();
    // Enough entries for an htree, long names among them so both kinds hash.
    let big = secret.join("big");
    fs::create_dir(&big).unwrap();
    for i in 0..400 {
        let name = if i % 10 == 0 { format!("{i:0>200}") } else { format!("entry-{i}") };
        fs::write(big.join(name), i.to_string()).unwrap();
    }
    fs::create_dir(mnt.join("plain")).unwrap();
    fs::write(mnt.join("plain/readable"), b"not encrypted").unwrap();
}

#[test]
fn an_encrypted_tree_reads_as_the_kernel_shows_it_without_the_key() {
    let Some(_machine) = require_root_and_fuse() else {
        return;
    };
    for block_size in ["4096", "1024"] {
        let s = Scratch::new(&format!("encrypt-{block_size}"));
        let img = s.path("img");
        mkfs(&img, 64 << 20, &["-b", block_size, "-O", "encrypt"]);
        let k = s.mkdir("kernel");
        kernel_mount(&img, &k, "");
        populate(&k);
        // The key goes with the mount: from here on nobody has it.
        kernel_umount(&k);
        assert_fsck_clean(&img);

        kernel_mount(&img, &k, "ro");
        let expected = walk(&k, &WalkOpts::default());
        let dirs: Vec<_> =
            fs::read_dir(k.join("secret")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
        let flags: Vec<String> =
            dirs.iter().map(|d| run_ok(std::process::Command::new("lsattr").arg("-d").arg(d))).collect();
        assert!(
            flags.iter().any(|f| f.split_whitespace().next().unwrap().contains('I')),
            "one directory is an htree: {flags:?}"
        );
        kernel_umount(&k);
        let before = hash_path(&img);

        let mnt = s.mkdir("mnt");
        let m = ext4box_mount_ok(&img, &mnt, "");
        let seen = walk(&mnt, &WalkOpts::default());
        assert_walks_equal("kernel without the key", &expected, "ext4box", &seen);

        let secret = mnt.join("secret");
        let names: Vec<_> = fs::read_dir(&secret).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 9, "{names:?}");
        assert!(!names.iter().any(|n| n == "notes.txt"), "names are not shown in the clear: {names:?}");
        let long = names.iter().filter(|n| n.len() == 252).count();
        assert_eq!(long, 2, "both 230-byte names are long no-key names: {names:?}");
        let file = names.iter().find(|n| lstat(&secret.join(n)).unwrap().size == 10_000).unwrap();
        let err = fs::read(secret.join(file)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOKEY), "{err}");
        assert_eq!(errno_of(&fs::metadata(secret.join("notes.txt")).unwrap_err()), libc::ENOENT);
        assert_eq!(fs::read(mnt.join("plain/readable")).unwrap(), b"not encrypted");
        let write = fs::write(mnt.join("plain/new"), b"x").unwrap_err();
        assert_eq!(write.raw_os_error(), Some(libc::EROFS), "the mount is read-only: {write}");
        m.unmount();
        assert_eq!(hash_path(&img), before, "the image was not changed");
    }
}
