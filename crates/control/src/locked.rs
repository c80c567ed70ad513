//! The registry locked for a writer, publishing readers' snapshots when let go (see
//! docs/ARCHITECTURE.md, "Snapshots").

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, MutexGuard};

use arc_swap::ArcSwap;
use qdhcp_registry::Registry;

/// The registry locked by [`Control::lock`]. Memory is as committed whenever the lock is let
/// go (writers put back what is not stored yet before they let it go), so a changed registry
/// is published as the readers' snapshot then.
pub struct Locked<'a> {
    reg: MutexGuard<'a, Registry>,
    published: &'a ArcSwap<Registry>,
    stale: &'a AtomicBool,
    changed: bool,
}

impl<'a> Locked<'a> {
    pub(crate) fn new(
        reg: MutexGuard<'a, Registry>,
        published: &'a ArcSwap<Registry>,
        stale: &'a AtomicBool,
    ) -> Self {
        Locked {
            reg,
            published,
            stale,
            changed: false,
        }
    }
}

impl std::ops::Deref for Locked<'_> {
    type Target = Registry;
    fn deref(&self) -> &Registry {
        &self.reg
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Registry {
        self.changed = true;
        &mut self.reg
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if !self.changed {
            return;
        }
        if std::thread::panicking() {
            // a writer that panicked may have left a write half applied: readers keep the
            // last snapshot, and the next write reads the registry back from the store first
            self.stale.store(true, Ordering::SeqCst);
        } else {
            self.published.store(Arc::new(self.reg.snapshot()));
        }
    }
}
