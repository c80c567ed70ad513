//! DNS for instances, as Neutron's dnsmasq serves it: each port's name under the network's
//! domain and bare, PTR for its addresses, everything else forwarded upstream with a cache.
//! `zone` and `answer` are pure; `cache` takes the time as an argument; `server` is the I/O edge.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod answer;
pub mod cache;
pub mod loops;
pub mod metrics;
pub mod server;
pub mod zone;

pub use answer::{decide, Answered, Context, Dropped, Outcome, Question};
pub use zone::Zone;
