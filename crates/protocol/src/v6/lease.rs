//! DHCPv6 leases as the decision sees them: one address of one IA of one client, the view of
//! them it may ask, and the changes it asks the dataplane to make (and make durable).

use std::net::Ipv6Addr;

use crate::types::Mac;
use crate::v6::frontdoor::Duid;

/// A DHCPv6 lease: one address of one IA of one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease6 {
    /// The client's DUID.
    pub duid: Duid,
    /// The IA it holds the address in.
    pub iaid: u32,
    /// The address.
    pub addr: Ipv6Addr,
    /// The MAC of the host line it was granted for.
    pub mac: Mac,
    /// Expiry, seconds since the epoch (`None`: infinite).
    pub expires: Option<u64>,
    /// Host name (without domain) recorded with it.
    pub hostname: Option<String>,
}

/// What the decision may ask of the lease state.
pub trait LeaseView6 {
    /// The lease of an address, if any.
    fn by_addr(&self, addr: Ipv6Addr) -> Option<&Lease6>;
}

/// A lease change the dataplane applies (and makes durable, for `Bind`, before replying).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change6 {
    /// Granted or extended.
    Bind(Lease6),
    /// Given back by its holder.
    Release {
        /// Holder.
        duid: Duid,
        /// Its IA.
        iaid: u32,
        /// The address.
        addr: Ipv6Addr,
    },
    /// Found in use by someone else.
    Decline {
        /// Holder.
        duid: Duid,
        /// Its IA.
        iaid: u32,
        /// The address.
        addr: Ipv6Addr,
    },
}
