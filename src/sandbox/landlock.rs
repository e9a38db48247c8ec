//! Landlock: a ruleset that handles every filesystem, network and scope right the kernel knows, with no
//! rule granting any of them, so the worker can open nothing, bind and connect nothing, and signal or
//! reach no process outside its domain. Descriptors opened before (the image, /dev/fuse) stay usable.

use ::landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetStatus, Scope,
};

/// The newest ABI this crate knows; the kernel's own is negotiated down from it (best effort), and
/// [`restrict`] reports what was enforced.
const NEWEST: ABI = ABI::V7;

/// Confines the calling thread (and the threads it starts later). Returns a description of the result.
pub fn restrict() -> Result<String, String> {
    let err = |e: ::landlock::RulesetError| format!("Landlock: {e}");
    let status = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(NEWEST))
        .map_err(err)?
        .handle_access(AccessNet::from_all(NEWEST))
        .map_err(err)?
        .scope(Scope::from_all(NEWEST))
        .map_err(err)?
        .create()
        .map_err(err)?
        .restrict_self()
        .map_err(err)?;
    match status.ruleset {
        RulesetStatus::FullyEnforced => Ok("Landlock: fully enforced (no path, port or scope granted)".into()),
        RulesetStatus::PartiallyEnforced => {
            Ok("Landlock: partially enforced (the kernel lacks some rights this build knows)".into())
        }
        RulesetStatus::NotEnforced => Err("Landlock is not available in this kernel".into()),
    }
}
