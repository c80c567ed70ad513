//! The serving path's one clock read (the protocol core is handed the time, never reads it).

use std::time::{SystemTime, UNIX_EPOCH};

/// Current time in epoch seconds: the one clock read of the serving path.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
