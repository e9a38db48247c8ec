//! Giving up privileges: supplementary groups, uid and gid, every capability set, and the ability to gain
//! any back (no_new_privs), to be debugged (dumpable), or to leave core files and many descriptors.

use caps::CapSet;

/// Who the worker becomes.
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
}

/// `nobody`/`nogroup` on Debian and most distributions.
pub const DEFAULT_IDENTITY: Identity = Identity { uid: 65534, gid: 65534 };

fn check(rc: libc::c_int, what: &str) -> Result<(), String> {
    if rc == 0 { Ok(()) } else { Err(format!("{what}: {}", std::io::Error::last_os_error())) }
}

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
pub fn drop_all(id: Identity) -> Result<Vec<String>, String> {
    let mut report = Vec::new();
    // SAFETY: plain syscalls on our own process.
    let euid = unsafe { libc::geteuid() };
    let switchable = mapped("/proc/self/uid_map", id.uid) && mapped("/proc/self/gid_map", id.gid);
    // Only in a user namespace may the switch be skipped: outside one, root always becomes `id` (and
    // fails loudly if it cannot), whatever /proc says.
    if euid == 0 && in_user_namespace() && !switchable {
        // Root of a user namespace that maps only the user who made it (unshare -Urm, rootless Podman):
        // there is no other uid to become. The bounding set is ours to empty.
        for cap in caps::all() {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| format!("dropping {cap} from the bounding set: {e}"))?;
        }
        report.push(format!(
            "identity: kept (uid 0 of a user namespace, which maps no uid {}; switching users needs one)",
            id.uid
        ));
    } else if euid == 0 {
        // In a user namespace whose setgroups is denied, the groups are already fixed.
        let setgroups_denied = std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "deny");
        if !setgroups_denied {
            check(unsafe { libc::setgroups(0, std::ptr::null()) }, "setgroups")?;
        }
        // The bounding set can only shrink while CAP_SETPCAP is still held, so before the uid changes.
        for cap in caps::all() {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| format!("dropping {cap} from the bounding set: {e}"))?;
        }
        check(unsafe { libc::setresgid(id.gid, id.gid, id.gid) }, "setresgid")?;
        check(unsafe { libc::setresuid(id.uid, id.uid, id.uid) }, "setresuid")?;
        report.push(if setgroups_denied {
            format!("identity: uid {} gid {}, supplementary groups as the user namespace fixed them", id.uid, id.gid)
        } else {
            format!("identity: uid {} gid {}, no supplementary groups", id.uid, id.gid)
        });
    } else {
        report.push(format!("identity: kept (uid {euid}; switching users needs root)"));
    }
    for set in [CapSet::Ambient, CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
        caps::clear(None, set).map_err(|e| format!("clearing capabilities ({set:?}): {e}"))?;
    }
    report.push(if euid == 0 {
        "capabilities: all sets empty (effective, permitted, inheritable, ambient, bounding)".into()
    } else {
        "capabilities: effective, permitted, inheritable and ambient empty; the bounding set stays (emptying it \
         needs CAP_SETPCAP), and no_new_privs keeps anything in it out of reach"
            .into()
    });
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }, "no_new_privs")?;
    check(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) }, "non-dumpable")?;
    report.push("no_new_privs set, not dumpable".into());
    Ok(report)
}

/// No core files, and no more descriptors than `max_fds` (the worker opens none after it starts).
pub fn lower_limits(max_fds: u64) -> Result<String, String> {
    let set = |res, v: u64| {
        let lim = libc::rlimit { rlim_cur: v, rlim_max: v };
        // SAFETY: setrlimit with a valid struct.
        check(unsafe { libc::setrlimit(res, &lim) }, "setrlimit")
    };
    set(libc::RLIMIT_CORE, 0)?;
    set(libc::RLIMIT_NOFILE, max_fds)?;
    Ok(format!("limits: no core files, at most {max_fds} descriptors"))
}
