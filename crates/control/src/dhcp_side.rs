//! The DHCP side's thread (see docs/ARCHITECTURE.md, "The walk of an API call"): it hears
//! every change the writer publishes, in the order published, and only then answers the
//! writes of that change, so a port exists for DHCP by the time its create returns. Plumbing
//! (namespaces, links, sockets: milliseconds each) runs here, so the writer goes on with the
//! next writes meanwhile and readers never wait for it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;

use qdhcp_registry::{Effect, Registry};

use crate::DhcpSink;

/// Work that runs on the DHCP side after a change is told: a write's answer, or work that
/// must not interleave with plumbing.
pub(crate) type Then = Box<dyn FnOnce(&Arc<Registry>) + Send>;

/// One published change for the DHCP side.
pub(crate) struct Telling {
    /// The registry as the change published it.
    pub(crate) reg: Arc<Registry>,
    /// What the change means for DHCP.
    pub(crate) effects: Vec<Effect>,
    /// Run once the DHCP side has it.
    pub(crate) then: Vec<Then>,
}

/// Starts the DHCP side's thread; it ends when the writer (its one sender) does. Returns its
/// queue and the count of tellings not finished yet (the writer adds one per telling).
pub(crate) fn start(
    sink: Arc<dyn DhcpSink>,
) -> std::io::Result<(Sender<Telling>, Arc<AtomicUsize>)> {
    let (tx, rx) = mpsc::channel();
    let untold = Arc::new(AtomicUsize::new(0));
    let done = untold.clone();
    std::thread::Builder::new()
        .name("dhcp-side".into())
        .spawn(move || run(&*sink, rx, &done))?;
    Ok((tx, untold))
}

fn run(sink: &dyn DhcpSink, rx: Receiver<Telling>, untold: &AtomicUsize) {
    for t in rx {
        if !t.effects.is_empty()
            && catch_unwind(AssertUnwindSafe(|| sink.apply(&t.reg, &t.effects))).is_err()
        {
            tracing::error!("applying a change to the DHCP side panicked; serving goes on");
        }
        for f in t.then {
            f(&t.reg);
        }
        untold.fetch_sub(1, Ordering::AcqRel);
    }
}
