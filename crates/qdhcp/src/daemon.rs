//! Daemonizing as dnsmasq does: the parent returns only once the child is serving (or has
//! failed, with its error), because Neutron's agent waits for the command, then follows the
//! pid file. Must run before any thread is started.
// Unsafe code here only to call the kernel directly (fork and setsid, as dnsmasq daemonizes);
// every block says why it is sound.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;

use nix::unistd::{fork, pipe, setsid, ForkResult};

/// The child's end: report readiness or failure to the waiting parent.
pub struct Ready(Option<File>);

impl Ready {
    /// A no-op notifier for foreground runs.
    pub fn foreground() -> Self {
        Ready(None)
    }
    /// Tells the parent we serve; detaches standard streams.
    pub fn ok(mut self) {
        if let Some(mut f) = self.0.take() {
            let _ = f.write_all(b"OK");
            if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
                for fd in 0..3 {
                    // SAFETY: dup2 onto the standard descriptors of our own process.
                    unsafe { libc::dup2(null.as_raw_fd(), fd) };
                }
            }
        }
    }
    /// Tells the parent why we could not start.
    pub fn fail(mut self, why: &str) {
        if let Some(mut f) = self.0.take() {
            let _ = f.write_all(why.as_bytes());
        }
    }
}

/// Forks. In the parent this waits for the child's word and exits the process; in the child
/// it returns the notifier.
pub fn daemonize() -> anyhow::Result<Ready> {
    let (r, w) = pipe()?;
    // SAFETY: called before any thread exists; the child only continues single-threaded code.
    match unsafe { fork()? } {
        ForkResult::Parent { .. } => {
            drop(w);
            let mut f = File::from(r);
            let mut msg = String::new();
            let _ = f.read_to_string(&mut msg);
            if msg == "OK" {
                std::process::exit(0);
            }
            if msg.is_empty() {
                msg = "child exited before it was ready".into();
            }
            eprintln!("qdhcp: {msg}");
            std::process::exit(1);
        }
        ForkResult::Child => {
            drop(r);
            let _ = setsid();
            let _ = std::env::set_current_dir("/");
            Ok(Ready(Some(File::from(w))))
        }
    }
}
