//! Giving up root once the sockets and files are open, as dnsmasq does (`--user`, default
//! `nobody`): the process keeps only the capabilities its packet path still needs. Linux keeps
//! credentials per thread, so the drop must happen while the process has a single thread;
//! threads spawned afterwards inherit the reduced credentials.
// Unsafe code here only to call the kernel directly (capabilities and user switching); every block
// says why it is sound.
#![allow(unsafe_code)]

use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::{Gid, Group, Uid, User};

/// Why privileges could not be dropped; the server refuses to run rather than stay root.
#[derive(Debug, thiserror::Error)]
pub enum PrivError {
    /// `--user` or `--group` names nobody on this system (dnsmasq: "unknown user or group").
    #[error("unknown user or group: {0}")]
    Unknown(String),
    /// Threads were already running, which would keep root's credentials.
    #[error("cannot drop privileges with {0} threads running (credentials are per thread)")]
    Threads(usize),
    /// A system call refused.
    #[error("cannot drop privileges: {0}")]
    Os(String),
}

/// Whom to become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The user's name, for the log line.
    pub user: String,
    /// Its uid.
    pub uid: u32,
    /// The group to run as.
    pub gid: u32,
}

/// The capabilities the DHCP packet path keeps after the drop: a socket for an interface that
/// appears later (`SO_BINDTODEVICE` needs NET_RAW, port 67 needs NET_BIND_SERVICE), the ARP
/// entry that lets a reply reach a client without an address and a forced receive buffer
/// (NET_ADMIN) — the three dnsmasq keeps — and SYS_NICE, without which an idle-priority
/// background thread holding a serving lock could not step back up to normal priority (see
/// [`crate::priority`]), nor the serving threads take real-time priority.
pub fn packet_path_caps() -> CapsHashSet {
    [
        Capability::CAP_NET_ADMIN,
        Capability::CAP_NET_RAW,
        Capability::CAP_NET_BIND_SERVICE,
        Capability::CAP_SYS_NICE,
    ]
    .into_iter()
    .collect()
}

/// Looks up `user` (a name or a number) and `group` (default: the user's primary group).
pub fn resolve(user: &str, group: Option<&str>) -> Result<Target, PrivError> {
    let unknown = || PrivError::Unknown(user.to_string());
    let u = match user.parse::<u32>() {
        Ok(n) => User::from_uid(Uid::from_raw(n)).map_err(|_| unknown())?,
        Err(_) => User::from_name(user).map_err(|_| unknown())?,
    };
    let (uid, primary) = match (u, user.parse::<u32>()) {
        (Some(u), _) => (u.uid.as_raw(), u.gid.as_raw()),
        // a bare number without a passwd entry is still a uid
        (None, Ok(n)) => (n, n),
        (None, Err(_)) => return Err(unknown()),
    };
    let gid = match group {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => Group::from_name(g)
                .ok()
                .flatten()
                .ok_or_else(|| PrivError::Unknown(g.to_string()))?
                .gid
                .as_raw(),
        },
    };
    Ok(Target {
        user: user.to_string(),
        uid,
        gid,
    })
}

/// Threads of this process now.
pub fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn os(what: &str) -> impl FnOnce(String) -> PrivError + '_ {
    move |e| PrivError::Os(format!("{what}: {e}"))
}

/// Becomes `t` keeping only `keep`, never to regain more: the bounding set is cut, the
/// inheritable and ambient sets emptied, and `no_new_privs` set. Call with one thread.
pub fn drop_to(t: &Target, keep: &CapsHashSet) -> Result<(), PrivError> {
    let n = thread_count();
    if n != 1 {
        return Err(PrivError::Threads(n));
    }
    // The bounding set first, while CAP_SETPCAP is still held.
    for c in caps::all() {
        if !keep.contains(&c) {
            caps::drop(None, CapSet::Bounding, c).map_err(|e| os("bounding set")(e.to_string()))?;
        }
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
        return Err(os("PR_SET_KEEPCAPS")(
            std::io::Error::last_os_error().to_string(),
        ));
    }
    let gid = Gid::from_raw(t.gid);
    let uid = Uid::from_raw(t.uid);
    nix::unistd::setgroups(&[gid]).map_err(|e| os("setgroups")(e.to_string()))?;
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| os("setresgid")(e.to_string()))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| os("setresuid")(e.to_string()))?;
    caps::set(None, CapSet::Permitted, keep).map_err(|e| os("permitted set")(e.to_string()))?;
    caps::set(None, CapSet::Effective, keep).map_err(|e| os("effective set")(e.to_string()))?;
    caps::clear(None, CapSet::Inheritable).map_err(|e| os("inheritable set")(e.to_string()))?;
    caps::clear(None, CapSet::Ambient).map_err(|e| os("ambient set")(e.to_string()))?;
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0);
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(os("PR_SET_NO_NEW_PRIVS")(
                std::io::Error::last_os_error().to_string(),
            ));
        }
    }
    // Proof, not hope: root must be out of reach now.
    if t.uid != 0 && nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err(PrivError::Os("setuid(0) still succeeds".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_groups_resolve_by_name_and_number() {
        let root = resolve("root", None).unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        let n = resolve("65534", Some("0")).unwrap();
        assert_eq!((n.uid, n.gid), (65534, 0));
        assert!(matches!(
            resolve("no-such-user-qdhcp", None),
            Err(PrivError::Unknown(_))
        ));
        assert!(matches!(
            resolve("root", Some("no-such-group-qdhcp")),
            Err(PrivError::Unknown(_))
        ));
    }

    #[test]
    fn a_drop_with_threads_running_is_refused() {
        // the test harness runs this on a thread of its own: more than one thread
        let t = resolve("root", None).unwrap();
        assert!(matches!(
            drop_to(&t, &packet_path_caps()),
            Err(PrivError::Threads(_))
        ));
    }
}
