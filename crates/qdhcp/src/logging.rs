//! Where log lines go, in the format operators know from dnsmasq:
//! `Nov 25 14:50:22 dnsmasq-dhcp[1234]: DHCPACK(ns-…) 172.16.1.103 fa:16:3e:… host-…`,
//! to a file (`--log-facility=/path`), stderr (`-`), or syslog (`/dev/log`, the default).

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

/// Where lines are written.
pub enum Sink {
    /// Standard error.
    Stderr,
    /// Appended to a file.
    File(PathBuf, Mutex<File>),
    /// Sent to the local syslog socket with this facility number.
    Syslog(UnixDatagram, u8),
}

/// Chooses the sink from dnsmasq's `--log-facility` value (`None` = syslog, falling back to
/// stderr when there is no `/dev/log`).
pub fn sink_for(facility: Option<&str>, foreground_debug: bool) -> anyhow::Result<Sink> {
    match facility {
        Some("-") => Ok(Sink::Stderr),
        Some(p) if p.contains('/') => {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| anyhow::anyhow!("cannot open log file {p}: {e}"))?;
            Ok(Sink::File(PathBuf::from(p), Mutex::new(f)))
        }
        _ if foreground_debug => Ok(Sink::Stderr),
        other => {
            let facility = match other.map(str::to_ascii_uppercase).as_deref() {
                None | Some("DAEMON") => 3,
                Some("USER") => 1,
                Some("LOCAL0") => 16,
                Some("LOCAL1") => 17,
                Some("LOCAL2") => 18,
                Some("LOCAL3") => 19,
                Some("LOCAL4") => 20,
                Some("LOCAL5") => 21,
                Some("LOCAL6") => 22,
                Some("LOCAL7") => 23,
                Some(f) => anyhow::bail!("unknown log facility {f}"),
            };
            let s = UnixDatagram::unbound()?;
            // QDHCP_SYSLOG_SOCKET points tests (or unusual hosts) at another syslog socket.
            let path = std::env::var("QDHCP_SYSLOG_SOCKET").unwrap_or_else(|_| "/dev/log".into());
            match s.connect(path) {
                Ok(()) => Ok(Sink::Syslog(s, facility)),
                Err(_) => Ok(Sink::Stderr),
            }
        }
    }
}

struct DnsmasqLayer {
    sink: Sink,
    /// Program tag for DHCP lines (`dnsmasq-dhcp` in compat mode) and for the rest.
    dhcp_tag: &'static str,
    tag: &'static str,
    pid: u32,
}

struct MessageVisitor<'a>(&'a mut String);

impl Visit for MessageVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        }
    }
}

impl<S: Subscriber> Layer<S> for DnsmasqLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > Level::INFO {
            return;
        }
        let mut msg = String::with_capacity(96);
        event.record(&mut MessageVisitor(&mut msg));
        let tag = if meta.target() == "dhcp" {
            self.dhcp_tag
        } else {
            self.tag
        };
        let stamp = chrono::Local::now().format("%b %e %H:%M:%S");
        match &self.sink {
            Sink::Stderr => {
                eprintln!("{tag}[{}]: {msg}", self.pid);
            }
            Sink::File(_, f) => {
                let line = format!("{stamp} {tag}[{}]: {msg}\n", self.pid);
                if let Ok(mut f) = f.lock() {
                    let _ = f.write_all(line.as_bytes());
                }
            }
            Sink::Syslog(s, facility) => {
                let sev = match *meta.level() {
                    Level::ERROR => 3,
                    Level::WARN => 4,
                    _ => 6,
                };
                let pri = facility * 8 + sev;
                let line = format!("<{pri}>{stamp} {tag}[{}]: {msg}", self.pid);
                let _ = s.send(line.as_bytes());
            }
        }
    }
}

/// Installs the global subscriber writing to `sink`.
pub fn init(sink: Sink, dhcp_tag: &'static str, tag: &'static str) {
    let layer = DnsmasqLayer {
        sink,
        dhcp_tag,
        tag,
        pid: std::process::id(),
    };
    let _ = tracing_subscriber::registry().with(layer).try_init();
}
