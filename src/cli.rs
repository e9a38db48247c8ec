//! The command line: `ext4box mount`, `ext4box unmount`, `ext4box demo`.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::{Parser, Subcommand};

use crate::launcher::{self, MountOptions, MountRequest};

#[derive(Parser)]
#[command(name = "ext4box", version, about = "Mount ext2/ext3/ext4 images through FUSE, parsed by a safe-Rust engine")]
struct Cli {
    /// Log debug detail to stderr.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Mount IMAGE (a file or block device) on MOUNTPOINT. Returns once the mount is live.
    Mount {
        image: PathBuf,
        mountpoint: PathBuf,
        /// Mount options, comma-separated: ro, norecovery, offset=BYTES, allow_other, default_permissions,
        /// fsname=NAME, and the generic ones mount(8) passes (nosuid, nodev, noexec, noatime, ...).
        #[arg(short = 'o', value_name = "OPTIONS")]
        options: Vec<String>,
        /// Serve in this process until unmounted, logging to stderr.
        #[arg(short, long)]
        foreground: bool,
    },
    /// Unmount MOUNTPOINT and wait until its server has exited (so the image is final).
    #[command(alias = "umount")]
    Unmount { mountpoint: PathBuf },
    /// Build a small sample image with mkfs.ext4 from files shipped with ext4box, mount it, list it,
    /// and unmount it.
    Demo,
}

fn init_logging(verbose: bool) {
    let level = if verbose { tracing::Level::DEBUG } else { tracing::Level::WARN };
    let _ = tracing_subscriber::fmt().with_max_level(level).with_writer(std::io::stderr).without_time().try_init();
}

/// Runs the command line; returns the process exit code. Errors are one line on stderr.
pub fn main() -> i32 {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Cmd::Mount { image, mountpoint, options, foreground } => MountOptions::parse(&options.join(","))
            .and_then(|options| launcher::mount(&MountRequest { image, mountpoint, options, foreground })),
        Cmd::Unmount { mountpoint } => launcher::unmount(&mountpoint),
        Cmd::Demo => demo(),
    };
    match result {
        Ok(()) => 0,
        Err(msg) => {
            eprintln!("ext4box: {msg}");
            1
        }
    }
}

/// The sample files, embedded so that `ext4box demo` works from any directory.
const DEMO_FILES: &[(&str, &str)] = &[
    ("hello.txt", include_str!("../demo/hello.txt")),
    ("notes/formats.md", include_str!("../demo/notes/formats.md")),
    ("notes/why-low-level.md", include_str!("../demo/notes/why-low-level.md")),
];

fn demo() -> Result<(), String> {
    let work = std::env::temp_dir().join(format!("ext4box-demo-{}", std::process::id()));
    let result = run_demo(&work);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn run_demo(work: &Path) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    let (tree, image, mnt) = (work.join("tree"), work.join("demo.img"), work.join("mnt"));
    for (path, text) in DEMO_FILES {
        let p = tree.join(path);
        std::fs::create_dir_all(p.parent().unwrap_or(&tree)).map_err(io)?;
        std::fs::write(&p, text).map_err(io)?;
    }
    std::os::unix::fs::symlink("notes/formats.md", tree.join("formats-link")).map_err(io)?;
    std::fs::create_dir_all(&mnt).map_err(io)?;
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "ext4box-demo", "-d"])
        .arg(&tree)
        .arg(&image)
        .arg("8M")
        .output()
        .map_err(|e| format!("cannot run mkfs.ext4 (install e2fsprogs): {e}"))?;
    if !out.status.success() {
        return Err(format!("mkfs.ext4 failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    println!("built {} with mkfs.ext4 -d; mounting it read-only on {}", image.display(), mnt.display());
    let options = MountOptions::parse("ro")?;
    launcher::mount(&MountRequest { image: image.clone(), mountpoint: mnt.clone(), options, foreground: false })?;
    let listed = list(&mnt, &mnt).and_then(|()| {
        let text = std::fs::read_to_string(mnt.join("hello.txt")).map_err(io)?;
        println!("\n--- hello.txt ---\n{text}");
        Ok(())
    });
    launcher::unmount(&mnt)?;
    listed?;
    println!("unmounted; the server has exited");
    Ok(())
}

/// Prints the tree under `dir` with each entry's inode number, mode, link count and size.
fn list(root: &Path, dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let mut entries: Vec<_> = std::fs::read_dir(dir).map_err(|e| e.to_string())?.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let m = e.path().symlink_metadata().map_err(|e| e.to_string())?;
        let rel = e.path().strip_prefix(root).unwrap_or(&e.path()).display().to_string();
        println!("{:>6} {:o} {:>2} {:>6}  {}", m.ino(), m.mode(), m.nlink(), m.size(), rel);
        if m.is_dir() {
            list(root, &e.path())?;
        }
    }
    Ok(())
}
