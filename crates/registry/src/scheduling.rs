//! The DHCP agent scheduler's settings: how many nodes serve each network, which nodes are
//! alive, and which one this is. Plain data, read by the registry and the scheduler
//! (`dhcp_ports`).

use crate::ids::NodeName;

/// The scheduler's settings and the nodes it schedules onto.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scheduling {
    /// Nodes per network (Neutron's `dhcp_agents_per_network`); 0 is taken as 1.
    pub per_network: usize,
    /// The live nodes, sorted. None known: one unbound DHCP port that any node serves (a
    /// registry used without nodes, as in unit tests and `qdhcp api`).
    pub live: Vec<NodeName>,
    /// This node's name (empty: not one of several).
    pub me: NodeName,
}

impl Scheduling {
    /// This node's place among the live nodes and how many there are, `(0, 1)` when alone or
    /// not among them: which share of the addresses it prefers to hand out.
    pub fn rank(&self) -> (u32, u32) {
        match self.live.iter().position(|n| *n == self.me) {
            Some(i) if self.live.len() > 1 => (i as u32, self.live.len() as u32),
            _ => (0, 1),
        }
    }

    /// The node that reschedules for everyone (the first live one), so that two nodes do not
    /// move the same port at once.
    pub fn leader(&self) -> Option<&str> {
        self.live.first().map(NodeName::as_str)
    }
}
