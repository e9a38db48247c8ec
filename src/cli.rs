//! The command line: `ext4box mount`, `ext4box unmount`, `ext4box demo`.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::{Parser, Subcommand};

use crate::launcher::options::OptionError;
use crate::launcher::service::{ClientError, ServiceError};
use crate::launcher::worker_config::{ConfigError, WorkerConfig};
use crate::launcher::{self, LaunchError, MountOptions, MountRequest, UnmountError, worker};
use crate::sandbox::{self, SandboxError};

/// What a command failed at: the one line `ext4box: ...` the user sees.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Options(#[from] OptionError),
    #[error("--user {0}: expected UID or UID:GID")]
    User(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error(transparent)]
    Unmount(#[from] UnmountError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The mount point made absolute (for the service), or the demo's files.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("cannot run mkfs.ext4 (install e2fsprogs): {0}")]
    RunMkfs(#[source] std::io::Error),
    #[error("mkfs.ext4 failed: {0}")]
    Mkfs(String),
}

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
        /// Mount options, comma-separated: ro, norecovery, offset=BYTES, commit=SECONDS, allow_other,
        /// default_permissions, fsname=NAME, and the generic ones mount(8) passes (nosuid, nodev, noexec, noatime, ...).
        #[arg(short = 'o', value_name = "OPTIONS")]
        options: Vec<String>,
        /// Serve in this process until unmounted, logging to stderr.
        #[arg(short, long)]
        foreground: bool,
        /// Hand the mounted /dev/fuse and the image to a worker listening on this socket
        /// (`ext4box worker --fd-socket PATH`, e.g. in an unprivileged container) instead of starting one.
        #[arg(long, value_name = "PATH")]
        fd_socket: Option<PathBuf>,
        /// Print how the mount is made (as root, in a user namespace, through fusermount3) and every
        /// confinement step in force in the worker.
        #[arg(long)]
        explain: bool,
        /// Serve requests on a single thread (as fuse2fs -s).
        #[arg(short = 's')]
        single_thread: bool,
        /// Debug: stay in the foreground and log debug detail (as fuse2fs -d).
        #[arg(short = 'd')]
        debug: bool,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    /// Unmount MOUNTPOINT and wait until its server has exited (so the image is final).
    #[command(alias = "umount")]
    Unmount { mountpoint: PathBuf },
    /// Build a small sample image with mkfs.ext4 from files shipped with ext4box, mount it, list it,
    /// and unmount it.
    Demo,
    /// The mount service for users without privileges: listens for mount and unmount requests on a
    /// socket from systemd (ext4box.socket) or on `--listen PATH`.
    Serve {
        #[arg(long, value_name = "PATH")]
        listen: Option<PathBuf>,
    },
    /// Seccomp policies: `ext4box policy check [FILE]` validates one (default: the built-in policy) and
    /// prints what it allows.
    Policy {
        #[command(subcommand)]
        action: PolicyCmd,
    },
    /// The confined worker the launcher starts (internal).
    #[command(hide = true)]
    Worker {
        /// The mount point served (for `ps` and the log).
        #[arg(long)]
        mountpoint: Option<PathBuf>,
        /// Receive the descriptors over this socket (listen, accept one handoff) instead of inheriting them.
        #[arg(long, value_name = "PATH")]
        fd_socket: Option<PathBuf>,
        /// What to serve and how: the worker's configuration as one line of JSON, as the launcher
        /// writes it (the defaults when absent).
        #[arg(long, value_name = "JSON")]
        config: Option<String>,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    /// Confines itself as the worker does, then tries one thing a compromised worker would (internal,
    /// for tests): open, socket, execve, ptrace, mount, or write (allowed: writes to stdout).
    #[command(hide = true)]
    SandboxProbe {
        attempt: String,
        /// The file to open, or the directory to mount a tmpfs on.
        #[arg(default_value = "/etc/hostname")]
        path: PathBuf,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Validate a policy file (default: the built-in one) and print what it allows.
    Check { file: Option<PathBuf> },
}

/// How the worker is confined.
#[derive(clap::Args, Clone)]
struct SandboxArgs {
    /// Run the worker without the sandbox. For debugging only: the image is then parsed with full
    /// privileges.
    #[arg(long)]
    no_sandbox: bool,
    /// The user the worker runs as, UID or UID:GID (default 65534:65534, nobody:nogroup).
    #[arg(long, value_name = "UID[:GID]")]
    user: Option<String>,
    /// A seccomp policy file to use instead of the built-in one (see policy/).
    #[arg(long, value_name = "FILE")]
    seccomp_policy: Option<PathBuf>,
}

impl SandboxArgs {
    fn resolve(&self) -> Result<Option<(sandbox::Identity, Option<PathBuf>)>, CliError> {
        if self.no_sandbox {
            return Ok(None);
        }
        let id = match &self.user {
            None => sandbox::DEFAULT_IDENTITY,
            Some(u) => {
                let (uid, gid) = u.split_once(':').unwrap_or((u, u));
                let num = |v: &str| v.parse::<u32>().map_err(|_| CliError::User(u.clone()));
                sandbox::Identity { uid: num(uid)?, gid: num(gid)? }
            }
        };
        Ok(Some((id, self.seccomp_policy.clone())))
    }
}

/// Logs go to stderr at `default` level (without colours: the worker's stderr is a pipe, and probing
/// the terminal would be a system call its sandbox refuses), and to the systemd journal when one runs,
/// at info level at least: how each mount was made and how its worker is confined are always recorded.
pub fn init_logging(verbose: bool, default: tracing::Level) {
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::prelude::*;
    let level = if verbose { tracing::Level::DEBUG } else { default };
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .with_filter(LevelFilter::from_level(level));
    let journal_level = if verbose { tracing::Level::DEBUG } else { tracing::Level::INFO };
    let journal = if std::path::Path::new("/run/systemd/journal/socket").exists() {
        tracing_journald::layer().ok().map(|l| l.with_filter(LevelFilter::from_level(journal_level)))
    } else {
        None
    };
    let _ = tracing_subscriber::registry().with(stderr).with(journal).try_init();
}

/// The command line, with fuse2fs's call shape (`ext4box IMAGE MOUNTPOINT [-o OPTS] [-f] [-d] [-s]`)
/// read as `ext4box mount ...`, so that a script switches by changing the program name.
fn arguments() -> Vec<std::ffi::OsString> {
    use clap::CommandFactory;
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(first) = args.get(1).and_then(|a| a.to_str()) {
        let cmd = Cli::command();
        let known = cmd.get_subcommands().any(|s| s.get_name() == first || s.get_all_aliases().any(|a| a == first))
            || first == "help";
        if !known && !first.starts_with('-') && args.len() >= 3 {
            args.insert(1, "mount".into());
        }
    }
    args
}

/// Runs the command line; returns the process exit code. Errors are one line on stderr.
pub fn main() -> i32 {
    let mut cli = Cli::parse_from(arguments());
    if let Cmd::Mount { debug: true, .. } = &cli.command {
        cli.verbose = true;
    }
    // The worker reports what it does at info level: its log goes to the launcher, which files it.
    let is_worker = matches!(cli.command, Cmd::Worker { .. });
    init_logging(cli.verbose, if is_worker { tracing::Level::INFO } else { tracing::Level::WARN });
    let result: Result<(), CliError> = match cli.command {
        Cmd::Mount { image, mountpoint, options, foreground, fd_socket, explain, single_thread, debug, sandbox } => {
            let foreground = foreground || debug;
            MountOptions::parse(&options.join(",")).map_err(CliError::from).and_then(|parsed| {
                if unprivileged()
                    && launcher::service::socket_path().exists()
                    && !launcher::names_mounted_fuse(&mountpoint)
                {
                    // No privilege to mount: the mount service does it, with what this user can open.
                    let (img, mp) = launcher::service::open_for_request(&image, &mountpoint, parsed.read_only)?;
                    let req = launcher::service::Request::Mount { options: options.join(",") };
                    return Ok(launcher::service::request(&req, &[&img, &mp])?);
                }
                let sandbox = sandbox.resolve()?;
                Ok(launcher::mount(&MountRequest {
                    image,
                    mountpoint,
                    options: parsed,
                    foreground,
                    sandbox,
                    fd_socket,
                    explain,
                    single_thread,
                })?)
            })
        }
        Cmd::Serve { listen } => launcher::service::serve(listen.as_deref()).map_err(CliError::from),
        Cmd::Worker { fd_socket: Some(path), sandbox, .. } => {
            return match sandbox.resolve() {
                Ok(sandbox) => worker::run_from_socket(&path, sandbox),
                Err(e) => {
                    eprintln!("ext4box worker: {e}");
                    2
                }
            };
        }
        Cmd::Worker { mountpoint: _, fd_socket: None, config, sandbox } => {
            let config = config.map_or_else(|| Ok(Default::default()), |c| WorkerConfig::decode(&c));
            let args = sandbox.resolve().and_then(|sandbox| Ok(worker::WorkerArgs { config: config?, sandbox }));
            return match args {
                Ok(args) => worker::run(args),
                Err(e) => {
                    eprintln!("ext4box worker: {e}");
                    2
                }
            };
        }
        Cmd::Policy { action: PolicyCmd::Check { file } } => policy_check(file.as_deref()),
        Cmd::SandboxProbe { attempt, path, sandbox } => return sandbox_probe(&attempt, &path, &sandbox),
        Cmd::Unmount { mountpoint } => {
            if unprivileged() && launcher::service::socket_path().exists() {
                std::path::absolute(&mountpoint).map_err(CliError::from).and_then(|path| {
                    Ok(launcher::service::request(&launcher::service::Request::Unmount { path }, &[])?)
                })
            } else {
                launcher::unmount(&mountpoint).map_err(CliError::from)
            }
        }
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

fn demo() -> Result<(), CliError> {
    let work = std::env::temp_dir().join(format!("ext4box-demo-{}", std::process::id()));
    let result = run_demo(&work);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn run_demo(work: &Path) -> Result<(), CliError> {
    let (tree, image, mnt) = (work.join("tree"), work.join("demo.img"), work.join("mnt"));
    for (path, text) in DEMO_FILES {
        let p = tree.join(path);
        std::fs::create_dir_all(p.parent().unwrap_or(&tree))?;
        std::fs::write(&p, text)?;
    }
    std::os::unix::fs::symlink("notes/formats.md", tree.join("formats-link"))?;
    std::fs::create_dir_all(&mnt)?;
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "ext4box-demo", "-d"])
        .arg(&tree)
        .arg(&image)
        .arg("8M")
        .output()
        .map_err(CliError::RunMkfs)?;
    if !out.status.success() {
        return Err(CliError::Mkfs(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    println!("built {} with mkfs.ext4 -d; mounting it read-only on {}", image.display(), mnt.display());
    let options = MountOptions::parse("ro")?;
    let sandbox = Some((sandbox::DEFAULT_IDENTITY, None));
    launcher::mount(&MountRequest {
        image: image.clone(),
        mountpoint: mnt.clone(),
        options,
        foreground: false,
        sandbox,
        fd_socket: None,
        explain: false,
        single_thread: false,
    })?;
    let listed = list(&mnt, &mnt).and_then(|()| {
        let text = std::fs::read_to_string(mnt.join("hello.txt"))?;
        println!("\n--- hello.txt ---\n{text}");
        Ok(())
    });
    launcher::unmount(&mnt)?;
    listed?;
    println!("unmounted; the server has exited");
    Ok(())
}

/// Prints the tree under `dir` with each entry's inode number, mode, link count and size.
fn list(root: &Path, dir: &Path) -> Result<(), CliError> {
    use std::os::unix::fs::MetadataExt;
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let m = e.path().symlink_metadata()?;
        let rel = e.path().strip_prefix(root).unwrap_or(&e.path()).display().to_string();
        println!("{:>6} {:o} {:>2} {:>6}  {}", m.ino(), m.mode(), m.nlink(), m.size(), rel);
        if m.is_dir() {
            list(root, &e.path())?;
        }
    }
    Ok(())
}

/// Without root, mounting goes through the mount service.
fn unprivileged() -> bool {
    !nix::unistd::geteuid().is_root()
}

fn policy_check(file: Option<&Path>) -> Result<(), CliError> {
    let text = sandbox::policy_text(file)?;
    let policy = sandbox::Policy::compile(&text)?;
    println!("{}: valid", file.map_or_else(|| "built-in policy".to_string(), |f| f.display().to_string()));
    for line in policy.describe() {
        println!("{line}");
    }
    Ok(())
}

/// Confines this process exactly as the worker confines itself, then makes one attempt; the exit status
/// says what happened (0: the attempt succeeded; 13: it failed with EACCES; 1: another error; death by
/// SIGSYS: seccomp killed it).
fn sandbox_probe(attempt: &str, path: &Path, args: &SandboxArgs) -> i32 {
    let Ok(cpath) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else { return 2 };
    let sandbox = match args.resolve() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    if let Some((id, file)) = sandbox {
        let confined = sandbox::policy_text(file.as_deref())
            .and_then(|t| sandbox::Policy::compile(&t))
            .and_then(|p| sandbox::confine(&p, id, 16));
        if let Err(e) = confined {
            eprintln!("{e}");
            return 2;
        }
    }
    // SAFETY: each attempt is a plain syscall with valid arguments.
    let rc = unsafe {
        match attempt {
            "open" => libc::open(cpath.as_ptr(), libc::O_RDONLY),
            "socket" => libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0),
            "execve" => {
                let argv = [c"/bin/true".as_ptr(), std::ptr::null()];
                libc::execve(c"/bin/true".as_ptr(), argv.as_ptr(), std::ptr::null())
            }
            "ptrace" => libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) as i32,
            "mount" => libc::mount(c"none".as_ptr(), cpath.as_ptr(), c"tmpfs".as_ptr(), 0, std::ptr::null()),
            "write" => libc::write(1, b"ok\n".as_ptr().cast(), 3) as i32,
            _ => {
                eprintln!("unknown attempt {attempt}");
                return 2;
            }
        }
    };
    if rc >= 0 {
        return 0;
    }
    let e = std::io::Error::last_os_error();
    eprintln!("{attempt}: {e}");
    if e.raw_os_error() == Some(libc::EACCES) { 13 } else { 1 }
}
