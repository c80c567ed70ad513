//! Thread priorities. Background threads that share a core with the serving threads (the
//! leases file, reaping, journal compaction) run at idle priority, so that their work yields to
//! replies, and at normal priority only while they hold a lock the serving threads wait for,
//! so that a listener never waits for idle time (priority inversion). With `realtime` on, the
//! serving threads (listeners and the journal writer) run at SCHED_FIFO: on a kernel that
//! preempts only at its 4 ms tick (HZ=250, no kernel preemption), a listener that another
//! thread on its core had preempted waited up to a tick; at real-time priority it does not.
// Unsafe code here only to call the kernel directly (thread scheduling priorities); every block
// says why it is sound.
#![allow(unsafe_code)]

fn set_policy(policy: libc::c_int, priority: libc::c_int) -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: pid 0 is the calling thread; param is a valid sched_param.
    match unsafe { libc::sched_setscheduler(0, policy, &param) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// The SCHED_FIFO priority of the serving threads: low among real-time priorities, so that the
/// kernel's own real-time threads (migration, watchdogs at 99) still come first.
pub const REALTIME_PRIORITY: libc::c_int = 10;

/// Puts the calling thread at idle priority (SCHED_IDLE): it runs only when the serving
/// threads leave the core free. Failing that (no permission), it stays as it is.
pub fn lower_to_idle() {
    if let Err(e) = set_policy(libc::SCHED_IDLE, 0) {
        tracing::debug!("background thread keeps normal priority: {e}");
    }
}

/// True when the calling thread runs at idle priority.
pub fn is_idle() -> bool {
    // SAFETY: pid 0 is the calling thread.
    unsafe { libc::sched_getscheduler(0) == libc::SCHED_IDLE }
}

/// Puts a serving thread at its priority: SCHED_FIFO at [`REALTIME_PRIORITY`] when `realtime`,
/// else normal (a serving thread started from a background thread would otherwise inherit idle
/// priority). Returns the error when real-time priority was refused (no CAP_SYS_NICE).
pub fn serving(realtime: bool) -> std::io::Result<()> {
    if realtime {
        set_policy(libc::SCHED_FIFO, REALTIME_PRIORITY)
    } else if is_idle() {
        set_policy(libc::SCHED_OTHER, 0)
    } else {
        Ok(())
    }
}

/// Gives the core back between chunks of background work. A kernel that preempts only at its
/// tick can leave an idle-priority thread the core for up to a tick while a listener waits
/// (traced: 4 ms); yielding every ~0.1 ms of work bounds that wait.
pub fn yield_to_serving() {
    std::thread::yield_now();
}

/// Runs `f` at normal priority when the calling thread is at idle priority, then lowers it
/// again; a no-op elsewhere. Wrap every section that holds a lock the serving threads take.
pub fn at_normal_priority<T>(f: impl FnOnce() -> T) -> T {
    let raised = is_idle() && set_policy(libc::SCHED_OTHER, 0).is_ok();
    let out = f();
    if raised {
        lower_to_idle();
    }
    out
}

/// The journal's pacing in a server: its sections that hold the journal run at normal
/// priority, and it yields between chunks of background work (see [`at_normal_priority`] and
/// [`yield_to_serving`]).
pub struct ThreadPriority;

impl crate::journal::Pacing for ThreadPriority {
    fn urgent(&self) -> bool {
        is_idle() && set_policy(libc::SCHED_OTHER, 0).is_ok()
    }
    fn done(&self, raised: bool) {
        if raised {
            lower_to_idle();
        }
    }
    fn yield_now(&self) {
        yield_to_serving();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> libc::c_int {
        // SAFETY: pid 0 is the calling thread.
        unsafe { libc::sched_getscheduler(0) }
    }

    /// Runs `f` on a thread of its own (priorities are per thread).
    fn on_thread(f: impl FnOnce() + Send + 'static) {
        std::thread::spawn(f).join().unwrap();
    }

    /// True as root; elsewhere says the test is skipped (never under CI, which runs as root).
    fn privileged() -> bool {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        assert!(
            root || std::env::var_os("CI").is_none(),
            "CI runs as root: these priorities must be settable"
        );
        if !root {
            eprintln!("SKIPPED: not root, idle priority cannot be left");
        }
        root
    }

    #[test]
    fn an_idle_thread_is_raised_for_a_locked_section_and_lowered_after() {
        if !privileged() {
            return;
        }
        on_thread(|| {
            lower_to_idle();
            assert!(is_idle());
            assert!(at_normal_priority(|| policy() == libc::SCHED_OTHER));
            assert!(is_idle(), "lowered after");
        });
        // a normal thread stays normal
        on_thread(|| {
            assert!(at_normal_priority(|| !is_idle()));
            assert_eq!(policy(), libc::SCHED_OTHER);
        });
    }

    #[test]
    fn a_serving_thread_started_from_an_idle_one_leaves_idle_priority() {
        if !privileged() {
            return;
        }
        on_thread(|| {
            lower_to_idle();
            on_thread(|| {
                assert!(is_idle(), "inherited from the idle thread");
                serving(false).unwrap();
                assert_eq!(policy(), libc::SCHED_OTHER);
            });
            on_thread(|| {
                serving(true).unwrap();
                assert_eq!(policy(), libc::SCHED_FIFO);
            });
        });
    }
}
