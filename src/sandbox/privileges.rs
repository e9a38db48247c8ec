//! Giving up privileges: supplementary groups, uid and gid, every capability set, and the ability to gain
//! any back (no_new_privs), to be debugged (dumpable), or to leave core files and many descriptors.

use caps::CapSet;
use nix::sys::prctl;
use nix::sys::resource::{Resource, setrlimit};
use nix::unistd::{Gid, Uid, geteuid, setgroups, setresgid, setresuid};

use super::SandboxError;
use super::error::syscall;

/// Who the worker becomes.
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
}

/// `nobody`/`nogroup` on Debian and most distributions.
pub const DEFAULT_IDENTITY: Identity = Identity { uid: 65534, gid: 65534 };

/// Whether this process runs in a user namespace other than the initial one (its uid map is not the
/// identity over every uid).
pub fn in_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .map(|m| m.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"])
        .unwrap_or(false)
}

/// Whether `id` (inside this user namespace) maps to some uid outside it, in the map at `map`.
fn mapped(map: &str, id: u32) -> bool {
    std::fs::read_to_string(map).is_ok_and(|m| {
        m.lines().any(|l| {
            let f: Vec<u64> = l.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            f.len() == 3 && u64::from(id) >= f[0] && u64::from(id) < f[0] + f[2]
        })
    })
}

/// Drops to `id` (when running as root, and `id` exists in this user namespace; otherwise the identity
/// stays, which the report says), clears every capability set including the bounding and ambient sets,
/// and sets no_new_privs and non-dumpable.
pub fn drop_all(id: Identity) -> Result<Vec<String>, SandboxError> {
    let mut report = Vec::new();
    let euid = geteuid().as_raw();
    let drop_bounding = || {
        caps::all().into_iter().try_for_each(|cap| {
            caps::drop(None, CapSet::Bounding, cap).map_err(|source| SandboxError::BoundingSet { cap, source })
        })
    };
    let switchable = mapped("/proc/self/uid_map", id.uid) && mapped("/proc/self/gid_map", id.gid);
    // Only in a user namespace may the switch be skipped: outside one, root always becomes `id` (and
    // fails loudly if it cannot), whatever /proc says.
    if euid == 0 && in_user_namespace() && !switchable {
        // Root of a user namespace that maps only the user who made it (unshare -Urm, rootless Podman):
        // there is no other uid to become. The bounding set is ours to empty.
        drop_bounding()?;
        report.push(format!(
            "identity: kept (uid 0 of a user namespace, which maps no uid {}; switching users needs one)",
            id.uid
        ));
    } else if euid == 0 {
        // In a user namespace whose setgroups is denied, the groups are already fixed.
        let setgroups_denied = std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "deny");
        if !setgroups_denied {
            syscall("setgroups", setgroups(&[]))?;
        }
        // The bounding set can only shrink while CAP_SETPCAP is still held, so before the uid changes.
        drop_bounding()?;
        let (gid, uid) = (Gid::from_raw(id.gid), Uid::from_raw(id.uid));
        syscall("setresgid", setresgid(gid, gid, gid))?;
        syscall("setresuid", setresuid(uid, uid, uid))?;
        report.push(if setgroups_denied {
            format!("identity: uid {} gid {}, supplementary groups as the user namespace fixed them", id.uid, id.gid)
        } else {
            format!("identity: uid {} gid {}, no supplementary groups", id.uid, id.gid)
        });
    } else {
        report.push(format!("identity: kept (uid {euid}; switching users needs root)"));
    }
    for set in [CapSet::Ambient, CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
        caps::clear(None, set).map_err(|source| SandboxError::ClearCapabilities { set, source })?;
    }
    report.push(if euid == 0 {
        "capabilities: all sets empty (effective, permitted, inheritable, ambient, bounding)".into()
    } else {
        "capabilities: effective, permitted, inheritable and ambient empty; the bounding set stays (emptying it \
         needs CAP_SETPCAP), and no_new_privs keeps anything in it out of reach"
            .into()
    });
    syscall("no_new_privs", prctl::set_no_new_privs())?;
    syscall("non-dumpable", prctl::set_dumpable(false))?;
    report.push("no_new_privs set, not dumpable".into());
    Ok(report)
}

/// No core files, and no more descriptors than `max_fds` (the worker opens none after it starts).
pub fn lower_limits(max_fds: u64) -> Result<String, SandboxError> {
    syscall("setrlimit", setrlimit(Resource::RLIMIT_CORE, 0, 0))?;
    syscall("setrlimit", setrlimit(Resource::RLIMIT_NOFILE, max_fds, max_fds))?;
    Ok(format!("limits: no core files, at most {max_fds} descriptors"))
}
