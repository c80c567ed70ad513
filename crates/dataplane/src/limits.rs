//! What one client or one kind of log line may cost: a per-MAC message budget, so a spoofed
//! or looping client cannot make the server commit leases in a loop, and budgets for log lines
//! about bad input.

use std::time::{Duration, Instant};

use ahash::HashMap;
use qdhcp_protocol::Mac;

/// Log lines a second, per interface, for messages that get no answer (unknown clients).
pub const UNANSWERED_LINES_PER_SECOND: u16 = 200;

/// Per-client message budget: a client (MAC) may send `PER_SECOND` messages a second; more
/// are dropped before any work is done, so one misbehaving or spoofed client cannot make the
/// server commit leases in a loop. Memory is bounded: the map is cleared each second.
pub struct MacLimiter {
    second: u64,
    per_second: u16,
    counts: HashMap<Mac, u16>,
}

impl MacLimiter {
    /// Default budget: a real client retries about once a second, so 30 is generous.
    pub const PER_SECOND: u16 = 30;

    /// A limiter allowing `per_second` messages per client (0 = no limit).
    pub fn new(per_second: u16) -> Self {
        MacLimiter {
            second: 0,
            per_second,
            counts: HashMap::default(),
        }
    }

    /// Whether `mac` may send one more message in second `now`.
    pub fn allow(&mut self, mac: Mac, now: u64) -> bool {
        if self.per_second == 0 {
            return true;
        }
        if now != self.second {
            self.second = now;
            self.counts.clear();
        }
        let c = self.counts.entry(mac).or_insert(0);
        *c = c.saturating_add(1);
        *c <= self.per_second
    }
}

impl Default for MacLimiter {
    fn default() -> Self {
        Self::new(Self::PER_SECOND)
    }
}

/// Rate limit for log lines about bad input: a burst, then a count of what was suppressed.
pub(crate) struct RateLimit {
    window: Instant,
    sent: u32,
    suppressed: u64,
}

impl RateLimit {
    const PER_WINDOW: u32 = 10;
    const WINDOW: Duration = Duration::from_secs(10);

    pub(crate) fn new() -> Self {
        RateLimit {
            window: Instant::now(),
            sent: 0,
            suppressed: 0,
        }
    }

    /// Returns whether to log now; reports suppressed lines when a new window starts.
    pub(crate) fn allow(&mut self, what: &str) -> bool {
        if self.window.elapsed() >= Self::WINDOW {
            if self.suppressed > 0 {
                tracing::warn!(target: "dhcp", "{} more {what} suppressed", self.suppressed);
            }
            self.window = Instant::now();
            self.sent = 0;
            self.suppressed = 0;
        }
        if self.sent < Self::PER_WINDOW {
            self.sent += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_over_budget_is_limited_others_are_not() {
        let mut l = MacLimiter::default();
        let a = Mac([0xfa, 0x16, 0x3e, 0, 0, 1]);
        let b = Mac([0xfa, 0x16, 0x3e, 0, 0, 2]);
        for _ in 0..MacLimiter::PER_SECOND {
            assert!(l.allow(a, 100));
        }
        assert!(!l.allow(a, 100), "over budget in the same second");
        assert!(l.allow(b, 100), "another client is unaffected");
        assert!(l.allow(a, 101), "a new second, a new budget");
    }
}
