//! The per-source request rate, as Neutron's haproxy limiter counts it (requests per source
//! address over a window, 429 past the limit): a token bucket per source refilled at
//! `limit / window`, holding at most `limit`. Time is an input.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Sources tracked per network at most; past it, the idlest are forgotten.
const MAX_SOURCES: usize = 4096;

/// Per-source buckets of one network.
#[derive(Debug)]
pub struct RateLimit {
    limit: u32,
    window: Duration,
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

impl RateLimit {
    /// `limit` requests per `window` per source; 0 means no limit.
    pub fn new(limit: u32, window: Duration) -> RateLimit {
        RateLimit {
            limit,
            window,
            buckets: HashMap::new(),
        }
    }

    /// Whether a request from `src` at `now` is within the rate (and takes its token).
    pub fn allow(&mut self, src: IpAddr, now: Instant) -> bool {
        if self.limit == 0 {
            return true;
        }
        let per_sec = f64::from(self.limit) / self.window.as_secs_f64().max(1e-3);
        let cap = f64::from(self.limit);
        if self.buckets.len() >= MAX_SOURCES && !self.buckets.contains_key(&src) {
            let full_after = self.window;
            self.buckets
                .retain(|_, (_, last)| now.saturating_duration_since(*last) < full_after);
            if self.buckets.len() >= MAX_SOURCES {
                if let Some(oldest) = self
                    .buckets
                    .iter()
                    .min_by_key(|(_, (_, t))| *t)
                    .map(|(k, _)| *k)
                {
                    self.buckets.remove(&oldest);
                }
            }
        }
        let (tokens, last) = self.buckets.entry(src).or_insert((cap, now));
        let refill = now.saturating_duration_since(*last).as_secs_f64() * per_sec;
        *tokens = (*tokens + refill).min(cap);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_its_limit_then_429_and_refills_with_time() {
        let mut r = RateLimit::new(10, Duration::from_secs(10));
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.5".parse().unwrap();
        let b: IpAddr = "10.0.0.6".parse().unwrap();
        assert!((0..10).all(|_| r.allow(a, t0)));
        assert!(!r.allow(a, t0), "the eleventh in the window is refused");
        assert!(r.allow(b, t0), "another source has its own budget");
        assert!(!r.allow(a, t0 + Duration::from_millis(500)));
        assert!(
            r.allow(a, t0 + Duration::from_millis(1100)),
            "one a second comes back"
        );
        let mut off = RateLimit::new(0, Duration::from_secs(10));
        assert!((0..1000).all(|_| off.allow(a, t0)));
    }

    #[test]
    fn the_table_stays_bounded_under_many_sources() {
        let mut r = RateLimit::new(1, Duration::from_secs(10));
        let t0 = Instant::now();
        for i in 0..(MAX_SOURCES as u32 + 100) {
            assert!(r.allow(IpAddr::from(i.to_be_bytes()), t0));
        }
        assert!(r.buckets.len() <= MAX_SOURCES);
    }
}
