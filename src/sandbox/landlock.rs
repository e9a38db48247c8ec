//! Landlock: a ruleset that handles every filesystem, network and scope right the kernel knows, with no
//! rule granting any of them, so the worker can open nothing, bind and connect nothing, and signal or
//! reach no process outside its domain. Descriptors opened before (the image, /dev/fuse) stay usable.

use super::SandboxError;
use ::landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetStatus, Scope,
};

/// The newest ABI this crate knows; the kernel's own is negotiated down from it (best effort), and
/// [`restrict`] reports what was enforced.
const NEWEST: ABI = ABI::V7;

/// Confines the calling thread (and the threads it starts later). Returns a description of the result.
pub fn restrict() -> Result<String, SandboxError> {
    let status = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(NEWEST))?
        .handle_access(AccessNet::from_all(NEWEST))?
        .scope(Scope::from_all(NEWEST))?
        .create()?
        .restrict_self()?;
    match status.ruleset {
        RulesetStatus::FullyEnforced => Ok("Landlock: fully enforced (no path, port or scope granted)".into()),
        RulesetStatus::PartiallyEnforced => {
            Ok("Landlock: partially enforced (the kernel lacks some rights this build knows)".into())
        }
        RulesetStatus::NotEnforced => Err(SandboxError::LandlockUnavailable),
    }
}
