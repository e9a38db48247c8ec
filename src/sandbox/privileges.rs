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

/// Drops to `id` (when running as root; otherwise the identity stays, which the report says), clears
/// every capability set including the bounding and ambient sets, and sets no_new_privs and non-dumpable.
pub fn drop_all(id: Identity) -> Result<Vec<String>, String> {
    let mut report = Vec::new();
    // SAFETY: plain syscalls on our own process.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        check(unsafe { libc::setgroups(0, std::ptr::null()) }, "setgroups")?;
        // The bounding set can only shrink while CAP_SETPCAP is still held, so before the uid changes.
        for cap in caps::all() {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| format!("dropping {cap} from the bounding set: {e}"))?;
        }
        check(unsafe { libc::setresgid(id.gid, id.gid, id.gid) }, "setresgid")?;
        check(unsafe { libc::setresuid(id.uid, id.uid, id.uid) }, "setresuid")?;
        report.push(format!("identity: uid {} gid {}, no supplementary groups", id.uid, id.gid));
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
