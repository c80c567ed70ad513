//! Segments plumbed as Neutron's linuxbridge agent does (see docs/ARCHITECTURE.md, "Segments
//! and tenant networks"): a VXLAN device or a VLAN sub-interface in the network's bridge, or a
//! flat network's physical interface in it.

use std::net::Ipv4Addr;

use futures_util::TryStreamExt;
use rtnetlink::{Handle, LinkUnspec, LinkVxlan};

use crate::{ensure_bridge, in_netns, link_index, nl, no_ipv6, PlumbError};

/// A VXLAN segment, plumbed as Neutron's linuxbridge agent does: a device `vxlan-<vni>` over
/// the interface that holds `local`, flooding to a multicast `group`, in the network's bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSegment {
    /// The VNI.
    pub vni: u32,
    /// This host's tunnel endpoint address (`local_ip`).
    pub local: Ipv4Addr,
    /// Multicast group for broadcast and unknown destinations (`vxlan_group`).
    pub group: Ipv4Addr,
    /// UDP port; 0 is the kernel's default (8472, what the linuxbridge agent uses).
    pub port: u16,
    /// The network's bridge (`brq<network-id[:11]>`).
    pub bridge: String,
}

impl VxlanSegment {
    /// The device's name, `vxlan-<vni>`.
    pub fn device(&self) -> String {
        format!("vxlan-{}", self.vni)
    }
}

/// Tunnel addresses and the index of the interface holding each, found once: the lookup dumps
/// every address of the host.
static TUNNEL_DEVICES: parking_lot::Mutex<Option<(Ipv4Addr, u32)>> = parking_lot::Mutex::new(None);

/// The index of the interface holding `addr`: a dump of IPv4 addresses only (getifaddrs would
/// dump every link too, and a host with thousands of networks has thousands of links).
async fn iface_with(h: &Handle, addr: Ipv4Addr) -> Result<Option<u32>, PlumbError> {
    use rtnetlink::packet_route::address::AddressAttribute;
    let mut addrs = h
        .address()
        .get()
        .set_address_filter(std::net::IpAddr::V4(addr))
        .execute();
    while let Some(a) = addrs.try_next().await.map_err(nl("get addresses"))? {
        let holds = a
            .attributes
            .iter()
            .any(|at| matches!(at, AddressAttribute::Local(std::net::IpAddr::V4(ip)) | AddressAttribute::Address(std::net::IpAddr::V4(ip)) if *ip == addr));
        if holds {
            return Ok(Some(a.header.index));
        }
    }
    Ok(None)
}

/// Creates (unless it exists) the segment's bridge and its `vxlan-<vni>` device in it, up.
pub fn ensure_vxlan(v: &VxlanSegment) -> Result<(), PlumbError> {
    ensure_bridge(&v.bridge)?;
    let v = v.clone();
    in_netns(None, move |h| async move {
        let name = v.device();
        if link_index(&h, &name).await?.is_none() {
            let cached = *TUNNEL_DEVICES.lock();
            let dev = match cached {
                Some((a, i)) if a == v.local => i,
                _ => {
                    let i = iface_with(&h, v.local).await?.ok_or_else(|| {
                        PlumbError::Netlink(format!(
                            "no interface holds the tunnel address {}",
                            v.local
                        ))
                    })?;
                    *TUNNEL_DEVICES.lock() = Some((v.local, i));
                    i
                }
            };
            h.link()
                .add(
                    LinkVxlan::new(&name, v.vni)
                        .dev(dev)
                        .local(v.local)
                        .group(v.group)
                        .port(v.port)
                        .learning(true)
                        .build(),
                )
                .execute()
                .await
                .map_err(|e| {
                    // the interface may have gone: look it up again next time
                    *TUNNEL_DEVICES.lock() = None;
                    PlumbError::Netlink(format!("add vxlan: {e}"))
                })?;
        }
        no_ipv6(&name);
        let idx = link_index(&h, &name)
            .await?
            .ok_or_else(|| PlumbError::Netlink(format!("{name} vanished")))?;
        into_bridge(&h, idx, &v.bridge).await
    })
}

/// A VLAN segment, plumbed as Neutron's linuxbridge agent does: a sub-interface
/// `<physical interface>.<vid>` of the interface that `physical_interface_mappings` names for
/// the network's physical network, in the network's bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VlanSegment {
    /// The physical interface carrying the tagged frames (`eth1`).
    pub parent: String,
    /// The VLAN id.
    pub vid: u16,
    /// The network's bridge (`brq<network-id[:11]>`).
    pub bridge: String,
}

impl VlanSegment {
    /// The sub-interface's name, `<parent>.<vid>`; a parent name too long for the kernel's 15
    /// characters is shortened to fit, keeping the `.<vid>` that says which VLAN it is.
    pub fn device(&self) -> String {
        let suffix = format!(".{}", self.vid);
        let keep = 15usize.saturating_sub(suffix.len());
        let parent: String = self.parent.chars().take(keep).collect();
        format!("{parent}{suffix}")
    }

    /// The netlink request that creates the sub-interface over the parent at `parent_index`.
    pub fn create_request(&self, parent_index: u32) -> rtnetlink::packet_route::link::LinkMessage {
        rtnetlink::LinkVlan::new(&self.device(), parent_index, self.vid).build()
    }
}

/// Creates (unless it exists) the segment's bridge and the VLAN sub-interface in it, up, with
/// its parent up. A kernel without 802.1Q answers "Operation not supported" (or "Unknown
/// device type"), which is returned as the error.
pub fn ensure_vlan(v: &VlanSegment) -> Result<(), PlumbError> {
    ensure_bridge(&v.bridge)?;
    let v = v.clone();
    in_netns(None, move |h| async move {
        let name = v.device();
        let parent = link_index(&h, &v.parent).await?.ok_or_else(|| {
            PlumbError::Netlink(format!("physical interface {} does not exist", v.parent))
        })?;
        h.link()
            .set(LinkUnspec::new_with_index(parent).up().build())
            .execute()
            .await
            .map_err(nl("physical interface up"))?;
        if link_index(&h, &name).await?.is_none() {
            h.link()
                .add(v.create_request(parent))
                .execute()
                .await
                .map_err(|e| PlumbError::Netlink(format!("add VLAN {name}: {e}")))?;
        }
        no_ipv6(&name);
        let idx = link_index(&h, &name)
            .await?
            .ok_or_else(|| PlumbError::Netlink(format!("{name} vanished")))?;
        into_bridge(&h, idx, &v.bridge).await
    })
}

/// Puts the interface `iface` (a flat network's physical interface) into `bridge`, both up,
/// creating the bridge unless it exists.
pub fn ensure_in_bridge(iface: &str, bridge: &str) -> Result<(), PlumbError> {
    ensure_bridge(bridge)?;
    let (iface, bridge) = (iface.to_string(), bridge.to_string());
    in_netns(None, move |h| async move {
        let idx = link_index(&h, &iface).await?.ok_or_else(|| {
            PlumbError::Netlink(format!("physical interface {iface} does not exist"))
        })?;
        into_bridge(&h, idx, &bridge).await
    })
}

/// Puts the link at `idx` into `bridge`, up: the last step of every segment.
async fn into_bridge(h: &Handle, idx: u32, bridge: &str) -> Result<(), PlumbError> {
    let br = link_index(h, bridge)
        .await?
        .ok_or_else(|| PlumbError::Netlink(format!("bridge {bridge} missing")))?;
    h.link()
        .set(LinkUnspec::new_with_index(idx).controller(br).up().build())
        .execute()
        .await
        .map_err(nl("into bridge"))
}
