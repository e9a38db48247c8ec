//! The sandbox the worker confines itself in before it parses anything from the image. The server never
//! imports this module: the launcher calls [`confine`] in the worker process, then starts serving.
//!
//! Order matters: the policy is compiled first (a policy that does not parse stops everything), then
//! groups, bounding set, gid and uid, the other capability sets, no_new_privs, non-dumpable, limits,
//! Landlock, and last seccomp, all before the first thread starts.

#![forbid(unsafe_code)]

pub mod error;
pub mod landlock;
pub mod privileges;
pub mod seccomp;

pub use error::SandboxError;
pub use privileges::{DEFAULT_IDENTITY, Identity};
pub use seccomp::Policy;

/// The text of the seccomp policy: `file`, or the one built in for this architecture.
pub fn policy_text(file: Option<&std::path::Path>) -> Result<String, SandboxError> {
    match file {
        Some(f) => std::fs::read_to_string(f).map_err(|source| SandboxError::PolicyFile { path: f.into(), source }),
        None => Ok(seccomp::BUILTIN.to_string()),
    }
}

/// Confines the calling process. Returns one line per step in force, for the log and `--explain`.
pub fn confine(policy: &Policy, id: Identity, max_fds: u64) -> Result<Vec<String>, SandboxError> {
    let mut report = privileges::drop_all(id)?;
    report.push(privileges::lower_limits(max_fds)?);
    report.push(landlock::restrict()?);
    policy.install()?;
    report.push("seccomp: allow-list installed, other calls kill the process".into());
    Ok(report)
}
