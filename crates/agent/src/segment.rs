//! A network's segment, plumbed as Neutron's linuxbridge agent does: its bridge, and the VXLAN
//! device, VLAN sub-interface or mapped interface in it.

use qdhcp_plumbing::{ensure_in_bridge, ensure_vlan, ensure_vxlan, VlanSegment, VxlanSegment};
use qdhcp_registry::{Network, NetworkType};

use crate::AgentConfig;

/// The bridge of a network's segment, `brq<network-id[:11]>` (Neutron's linuxbridge agent).
pub(super) fn segment_bridge(net_id: &str) -> String {
    format!("brq{}", net_id.chars().take(11).collect::<String>())
}

/// The bridge a network's DHCP tap goes into, as the linuxbridge agent plumbs it: a VXLAN or
/// VLAN segment's own `brq<network>`; a flat network's mapped bridge (`bridge_mappings`), or
/// else `brq<network>` holding its mapped interface (`physical_interface_mappings`).
pub(super) fn bridge_of(cfg: &AgentConfig, n: &qdhcp_registry::Network) -> Option<String> {
    let physnet = n.physical_network.as_ref();
    match n.network_type {
        NetworkType::Vxlan | NetworkType::Vlan => Some(segment_bridge(&n.id)),
        NetworkType::Flat | NetworkType::Local => {
            match physnet.and_then(|p| cfg.bridge_mappings.get(p)) {
                Some(b) => Some(b.clone()),
                None => physnet
                    .filter(|p| cfg.interface_mappings.contains_key(*p))
                    .map(|_| segment_bridge(&n.id)),
            }
        }
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

/// Plumbs a network's segment as the linuxbridge agent does: VXLAN (bridge and
/// `vxlan-<vni>`), VLAN (bridge and `<interface>.<vid>`), or a flat network's mapped
/// interface in its bridge. Returns the links to delete with the network (none when there is
/// nothing to plumb or plumbing failed, which is logged).
pub(super) fn plumb_segment(cfg: &AgentConfig, n: &Network) -> Option<Vec<String>> {
    let net_id = n.id.as_str();
    {
        let physnet = n.physical_network.clone().unwrap_or_default();
        let plumbed = match (n.network_type, n.segmentation_id) {
            (NetworkType::Vxlan, Some(vni)) => {
                let Some(local) = cfg.vxlan.local_ip else {
                    tracing::warn!("network {net_id}: VXLAN {vni} is not plumbed: no --local-ip");
                    return None;
                };
                let seg = VxlanSegment {
                    vni,
                    local,
                    group: cfg.vxlan.group,
                    port: cfg.vxlan.port,
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
            (NetworkType::Vlan, Some(vid)) => {
                let Some(parent) = cfg.interface_mappings.get(&physnet) else {
                    tracing::warn!("network {net_id}: VLAN {vid} on {physnet} is not plumbed: no --physical-interface-mappings for {physnet}");
                    return None;
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
            (NetworkType::Flat, _) if !cfg.bridge_mappings.contains_key(&physnet) => {
                let iface = cfg.interface_mappings.get(&physnet)?;
                let bridge = segment_bridge(net_id);
                ensure_in_bridge(iface, &bridge).map(|()| Plumbed {
                    what: format!("{iface} in {bridge}"),
                    // deleting the bridge releases the interface
                    links: vec![bridge.clone()],
                })
            }
            _ => return None,
        };
        match plumbed {
            Ok(p) => {
                tracing::info!("network {net_id}: {}", p.what);
                let mut links = p.links;
                links.shrink_to_fit();
                Some(links)
            }
            Err(e) => {
                tracing::error!(
                    "network {net_id}: {} segment not plumbed: {e}",
                    n.network_type
                );
                None
            }
        }
    }
}
