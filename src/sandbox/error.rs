//! What can stop the worker from confining itself, one variant per step (as virtiofsd's sandbox does):
//! each says which step failed and carries the cause. There is no fallback to a weaker sandbox.

use std::path::PathBuf;

use caps::{CapSet, Capability, errors::CapsError};

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot read seccomp policy {}: {source}", path.display())]
    PolicyFile { path: PathBuf, source: std::io::Error },
    /// TOML's message on one line (its own draws the spot over several), with the byte it points at.
    #[error("seccomp policy does not parse: {message}{}", at.map(|b| format!(" (at byte {b})")).unwrap_or_default())]
    PolicyParse { message: String, at: Option<usize> },
    #[error("seccomp policy: {0}")]
    PolicyJson(#[from] serde_json::Error),
    #[error("seccomp policy does not compile: {0}")]
    PolicyCompile(seccompiler::Error),
    #[error("seccomp policy must hold a [worker] filter, each filter as a [table]")]
    PolicyShape,
    #[error("dropping {cap} from the bounding set: {source}")]
    BoundingSet { cap: Capability, source: CapsError },
    #[error("clearing capabilities ({set:?}): {source}")]
    ClearCapabilities { set: CapSet, source: CapsError },
    /// A system call of the identity switch, no_new_privs, dumpable or the limits.
    #[error("{step}: {source}")]
    Syscall { step: &'static str, source: nix::Error },
    #[error("Landlock: {0}")]
    Landlock(#[from] ::landlock::RulesetError),
    #[error("Landlock is not available in this kernel")]
    LandlockUnavailable,
    #[error("installing seccomp filter {name}: {source}")]
    SeccompInstall { name: String, source: seccompiler::Error },
}

/// `step`'s name on the error of a system call.
pub(crate) fn syscall<T>(step: &'static str, r: nix::Result<T>) -> Result<T, SandboxError> {
    r.map_err(|source| SandboxError::Syscall { step, source })
}
