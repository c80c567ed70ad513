//! A visit of the calling thread to another network namespace, and back (reading an
//! interface's addresses, opening a packet socket there).

use std::fs::File;

thread_local! {
    /// The network namespace this thread started in (it returns there after a visit).
    static HOME_NS: Option<File> = File::open("/proc/thread-self/ns/net").ok();
}

/// Runs `f` in the network namespace `ns`, then returns the thread to its own.
pub(crate) fn in_namespace<T>(ns: &File, f: impl FnOnce() -> T) -> std::io::Result<T> {
    use nix::sched::{setns, CloneFlags};
    HOME_NS.with(|home| {
        let home = home
            .as_ref()
            .ok_or_else(|| std::io::Error::other("own namespace unknown"))?;
        setns(ns, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
        let out = f();
        if let Err(e) = setns(home, CloneFlags::CLONE_NEWNET) {
            // A loop thread left in another namespace would read wrong addresses from then on.
            panic!("cannot return to the loop's own network namespace: {e}");
        }
        Ok(out)
    })
}
