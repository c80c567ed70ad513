//! Entering a network namespace, the one way every crate does it: a visit by the calling
//! thread that always comes back (also when what it runs panics), or a thread that moves there
//! for good. A socket keeps the namespace it was made in, so this is how one process serves
//! thousands of namespaces. No netlink, no sockets here: only `setns` there and back.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io;

/// The calling thread's own network namespace, as the kernel names it for this thread.
const OWN: &str = "/proc/thread-self/ns/net";

/// The calling thread inside another network namespace until dropped: then it returns to the
/// namespace it came from, also while unwinding from a panic. A thread that cannot return
/// aborts the process: every later socket it made would be in the wrong namespace.
#[must_use = "the thread returns to its own namespace when the visit is dropped"]
pub struct Visit {
    home: File,
}

impl Visit {
    /// Moves the calling thread into `ns` (an open namespace file, `/run/netns/NAME`).
    pub fn enter(ns: &File) -> io::Result<Visit> {
        let home = File::open(OWN)?;
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        Ok(Visit { home })
    }
}

impl Drop for Visit {
    fn drop(&mut self) {
        if let Err(e) = nix::sched::setns(&self.home, nix::sched::CloneFlags::CLONE_NEWNET) {
            eprintln!("qdhcp: cannot return a thread to its network namespace: {e}");
            std::process::abort();
        }
    }
}

/// Runs `f` with the calling thread in `ns`, then returns it to its own namespace.
pub fn visit<T>(ns: &File, f: impl FnOnce() -> T) -> io::Result<T> {
    let _there = Visit::enter(ns)?;
    Ok(f())
}

/// Moves the calling thread into `ns` for the rest of its life (a thread started to work
/// there, or the process at start with `--netns`).
pub fn enter_for_good(ns: &File) -> io::Result<()> {
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_inode() -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(OWN).unwrap().ino()
    }

    /// A fresh network namespace, made by a helper thread that leaves it at once (it lives as
    /// long as the file). Needs root: outside CI an unprivileged run skips, saying so.
    fn fresh_namespace() -> Option<File> {
        let made = std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
            File::open(OWN)
        })
        .join()
        .unwrap();
        match made {
            Ok(f) => Some(f),
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!("skipped: cannot make a network namespace ({e}); run as root");
                None
            }
            Err(e) => panic!("cannot make a network namespace in CI: {e}"),
        }
    }

    #[test]
    fn a_visit_comes_back_also_when_what_it_runs_panics() {
        let Some(there) = fresh_namespace() else {
            return;
        };
        let home = own_inode();
        let inside = visit(&there, own_inode).unwrap();
        assert_ne!(inside, home, "the visit was in the other namespace");
        assert_eq!(own_inode(), home, "and came back");
        let r = std::panic::catch_unwind(|| {
            let _ = visit(&there, || panic!("a bug during the visit"));
        });
        assert!(r.is_err());
        assert_eq!(own_inode(), home, "back after a panic too");
    }
}
