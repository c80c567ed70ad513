//! A network's segment, plumbed as Neutron's linuxbridge agent does: its bridge, and the VXLAN
//! device, VLAN sub-interface or mapped interface in it.

use qdhcp_plumbing::{ensure_in_bridge, ensure_vlan, ensure_vxlan, VlanSegment, VxlanSegment};
use qdhcp_registry::Registry;

use super::DhcpSync;
use crate::serve::ServeConfig;

/// The bridge of a network's segment, `brq<network-id[:11]>` (Neutron's linuxbridge agent).
pub(super) fn segment_bridge(net_id: &str) -> String {
    format!("brq{}", net_id.chars().take(11).collect::<String>())
}

/// The bridge a network's DHCP tap goes into, as the linuxbridge agent plumbs it: a VXLAN or
/// VLAN segment's own `brq<network>`; a flat network's mapped bridge (`bridge_mappings`), or
/// else `brq<network>` holding its mapped interface (`physical_interface_mappings`).
pub(super) fn bridge_of(cfg: &ServeConfig, n: &qdhcp_registry::Network) -> Option<String> {
    let physnet = n.physical_network.as_ref();
    match n.network_type.as_str() {
        "vxlan" | "vlan" => Some(segment_bridge(&n.id)),
        _ => match physnet.and_then(|p| cfg.bridge_mappings.get(p)) {
            Some(b) => Some(b.clone()),
            None => physnet
                .filter(|p| cfg.interface_mappings.contains_key(*p))
                .map(|_| segment_bridge(&n.id)),
        },
    }
}

/// Links plumbed for a network's segment, removed with it.
#[derive(Debug, Clone)]
struct Plumbed {
    /// What they are, for the log line once plumbed (not kept: ten thousand networks).
    what: String,
    /// Links to delete, in order.
    links: Vec<String>,
}

impl DhcpSync {
    /// Plumbs a network's segment as the linuxbridge agent does: VXLAN (bridge and
    /// `vxlan-<vni>`), VLAN (bridge and `<interface>.<vid>`), or a flat network's mapped
    /// interface in its bridge.
    pub(super) fn plumb_segment(&self, reg: &Registry, net_id: &str) {
        let Some(n) = reg.network(net_id) else { return };
        let physnet = n.physical_network.clone().unwrap_or_default();
        let plumbed = match (n.network_type.as_str(), n.segmentation_id) {
            ("vxlan", Some(vni)) => {
                let Some(local) = self.cfg.vxlan.local_ip else {
                    tracing::warn!("network {net_id}: VXLAN {vni} is not plumbed: no --local-ip");
                    return;
                };
                let seg = VxlanSegment {
                    vni,
                    local,
                    group: self.cfg.vxlan.group,
                    port: self.cfg.vxlan.port,
                    bridge: segment_bridge(net_id),
                };
                ensure_vxlan(&seg).map(|()| Plumbed {
                    what: format!(
                        "{} in {} (local {local}, group {})",
                        seg.device(),
                        seg.bridge,
                        seg.group
                    ),
                    links: vec![seg.device(), seg.bridge.clone()],
                })
            }
            ("vlan", Some(vid)) => {
                let Some(parent) = self.cfg.interface_mappings.get(&physnet) else {
                    tracing::warn!("network {net_id}: VLAN {vid} on {physnet} is not plumbed: no --physical-interface-mappings for {physnet}");
                    return;
                };
                let seg = VlanSegment {
                    parent: parent.clone(),
                    vid: vid as u16,
                    bridge: segment_bridge(net_id),
                };
                ensure_vlan(&seg).map(|()| Plumbed {
                    what: format!("{} in {}", seg.device(), seg.bridge),
                    links: vec![seg.device(), seg.bridge.clone()],
                })
            }
            ("flat", _) if !self.cfg.bridge_mappings.contains_key(&physnet) => {
                let Some(iface) = self.cfg.interface_mappings.get(&physnet) else {
                    return;
                };
                let bridge = segment_bridge(net_id);
                ensure_in_bridge(iface, &bridge).map(|()| Plumbed {
                    what: format!("{iface} in {bridge}"),
                    // deleting the bridge releases the interface
                    links: vec![bridge.clone()],
                })
            }
            _ => return,
        };
        match plumbed {
            Ok(p) => {
                tracing::info!("network {net_id}: {}", p.what);
                let mut links = p.links;
                links.shrink_to_fit();
                self.segments
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(net_id.into(), links);
            }
            Err(e) => tracing::error!(
                "network {net_id}: {} segment not plumbed: {e}",
                n.network_type
            ),
        }
    }
}
