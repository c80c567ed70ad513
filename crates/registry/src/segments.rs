//! ML2's type drivers: which segment (`provider:network_type`, `provider:physical_network`,
//! `provider:segmentation_id`) a network may have, and a free one for a tenant network, from
//! `network_vlan_ranges`, `vni_ranges` and `tenant_network_types`. The segments in use are those
//! of the networks that exist, so a delete releases its segment and a restart keeps them.
//! Pure: no I/O here.

use std::collections::BTreeMap;

use crate::error::{invalid, RegistryError};
use crate::model::{Network, NetworkType};

/// Highest VLAN id (802.1Q).
pub const MAX_VLAN: u32 = 4094;
/// Highest VXLAN network identifier (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// The ML2 settings that decide segments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentConfig {
    /// Physical networks for VLAN networks, each with the ranges tenant networks are given ids
    /// from (none: provider networks only), as `network_vlan_ranges`.
    pub vlan_ranges: BTreeMap<String, Vec<(u32, u32)>>,
    /// VNI ranges tenant VXLAN networks are given ids from, as `vni_ranges`.
    pub vni_ranges: Vec<(u32, u32)>,
    /// Types a network created without provider attributes gets, first with room first, as
    /// `tenant_network_types`; empty: such a network is `flat` without a physical network.
    pub tenant_types: Vec<NetworkType>,
}

fn range(s: &str, max: u32, what: &str) -> Result<(u32, u32), String> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| format!("{what} range {s:?} is not MIN:MAX"))?;
    let (a, b): (u32, u32) = (
        a.trim()
            .parse()
            .map_err(|_| format!("{a:?} is not a number"))?,
        b.trim()
            .parse()
            .map_err(|_| format!("{b:?} is not a number"))?,
    );
    if a == 0 || a > b || b > max {
        return Err(format!(
            "{what} range {s:?} must be within 1:{max}, lowest first"
        ));
    }
    Ok((a, b))
}

impl SegmentConfig {
    /// Parses `network_vlan_ranges`: `PHYSNET[:MIN:MAX][,…]`.
    pub fn parse_vlan_ranges(s: &str) -> Result<BTreeMap<String, Vec<(u32, u32)>>, String> {
        let mut out: BTreeMap<String, Vec<(u32, u32)>> = BTreeMap::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (physnet, r) = match item.split_once(':') {
                Some((p, r)) => (p, Some(range(r, MAX_VLAN, "VLAN")?)),
                None => (item, None),
            };
            let e = out.entry(physnet.to_string()).or_default();
            e.extend(r);
        }
        Ok(out)
    }

    /// Parses `vni_ranges`: `MIN:MAX[,…]`.
    pub fn parse_vni_ranges(s: &str) -> Result<Vec<(u32, u32)>, String> {
        s.split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .map(|r| range(r, MAX_VNI, "VNI"))
            .collect()
    }

    /// Parses `tenant_network_types`, checking each is a type this server can allocate.
    pub fn parse_tenant_types(s: &str) -> Result<Vec<NetworkType>, String> {
        s.split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .map(|t| match t.parse() {
                Ok(t @ (NetworkType::Vxlan | NetworkType::Vlan | NetworkType::Local)) => Ok(t),
                _ => Err(format!("tenant network type {t:?} (vxlan, vlan, local)")),
            })
            .collect()
    }
}

/// The segment a network gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Its type.
    pub network_type: NetworkType,
    /// The physical network (flat, vlan).
    pub physical_network: Option<String>,
    /// VLAN id or VNI.
    pub segmentation_id: Option<u32>,
}

/// What a create request asked for.
pub struct Requested<'a> {
    /// `provider:network_type`.
    pub network_type: Option<&'a str>,
    /// `provider:physical_network`.
    pub physical_network: Option<&'a str>,
    /// `provider:segmentation_id`.
    pub segmentation_id: Option<u32>,
    /// Admins may name any segment; others only one inside the ranges.
    pub is_admin: bool,
}

fn in_ranges(ranges: &[(u32, u32)], id: u32) -> bool {
    ranges.iter().any(|&(a, b)| (a..=b).contains(&id))
}

/// The segments the networks hold, kept with the network map (every insert and removal of a
/// network goes through [`InUse::add`] and [`InUse::remove`]), so that a create checks its
/// segment and finds a free one without a scan of every network (that scan was 4% of a
/// create's CPU at 4,000 networks, and grew with them). Persistent maps, as the registry's
/// others (a clone of the registry costs a few reference counts).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct InUse {
    /// VNI → networks holding it (more than one only in data written around the checks).
    vnis: imbl::OrdMap<u32, u32>,
    /// The lowest VNI (from 1) no network holds: a tenant network's search starts there, not
    /// at the bottom of a range held end to end (kept exact by `add` and `remove`).
    vni_free_from: VniFloor,
    /// (physical network, VLAN id) → networks holding it.
    vlans: imbl::OrdMap<(String, u32), u32>,
    /// physical network → its flat networks.
    flats: imbl::OrdMap<String, u32>,
}

impl InUse {
    /// Counts the segment of a network that is put in the network map.
    pub(crate) fn add(&mut self, n: &Network) {
        match Self::key(n) {
            Some(Key::Vni(id)) => {
                *self.vnis.entry(id).or_default() += 1;
                while self.vnis.contains_key(&self.vni_free_from.0) {
                    self.vni_free_from.0 += 1;
                }
            }
            Some(Key::Vlan(p, id)) => *self.vlans.entry((p.to_string(), id)).or_default() += 1,
            Some(Key::Flat(p)) => *self.flats.entry(p.to_string()).or_default() += 1,
            None => {}
        }
    }

    /// Releases the segment of a network taken out of the network map.
    pub(crate) fn remove(&mut self, n: &Network) {
        fn dec<K: Ord + Clone>(m: &mut imbl::OrdMap<K, u32>, k: K) {
            if let imbl::ordmap::Entry::Occupied(mut e) = m.entry(k) {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
        match Self::key(n) {
            Some(Key::Vni(id)) => {
                dec(&mut self.vnis, id);
                if !self.vnis.contains_key(&id) && id < self.vni_free_from.0 {
                    self.vni_free_from.0 = id;
                }
            }
            Some(Key::Vlan(p, id)) => dec(&mut self.vlans, (p.to_string(), id)),
            Some(Key::Flat(p)) => dec(&mut self.flats, p.to_string()),
            None => {}
        }
    }

    fn key(n: &Network) -> Option<Key<'_>> {
        match (n.network_type, n.segmentation_id) {
            (NetworkType::Vxlan, Some(id)) => Some(Key::Vni(id)),
            (NetworkType::Vlan, Some(id)) => {
                n.physical_network.as_deref().map(|p| Key::Vlan(p, id))
            }
            (NetworkType::Flat, _) => n.physical_network.as_deref().map(Key::Flat),
            _ => None,
        }
    }

    /// Whether a flat network exists on `physnet` (ML2 allows one per physical network).
    pub(crate) fn has_flat(&self, physnet: &str) -> bool {
        self.flats.contains_key(physnet)
    }

    fn vni_used(&self, id: u32) -> bool {
        self.vnis.contains_key(&id)
    }

    fn vlan_used(&self, physnet: &str, id: u32) -> bool {
        self.vlans.contains_key(&(physnet.to_string(), id))
    }

    /// The lowest VNI of `ranges` that no network holds.
    fn free_vni(&self, ranges: &[(u32, u32)]) -> Option<u32> {
        ranges.iter().find_map(|&(a, b)| {
            // every id below the floor is held
            let a = a.max(self.vni_free_from.0);
            (a <= b)
                .then(|| first_gap(a, b, self.vnis.range(a..=b).map(|(id, _)| *id)))
                .flatten()
        })
    }

    /// The lowest VLAN id of `ranges` on `physnet` that no network holds.
    fn free_vlan(&self, physnet: &str, ranges: &[(u32, u32)]) -> Option<u32> {
        ranges.iter().find_map(|&(a, b)| {
            let held = self
                .vlans
                .range((physnet.to_string(), a)..=(physnet.to_string(), b))
                .map(|((_, id), _)| *id);
            first_gap(a, b, held)
        })
    }
}

/// The lowest VNI no network holds (1 when none is held).
#[derive(Debug, Clone, PartialEq, Eq)]
struct VniFloor(u32);

impl Default for VniFloor {
    fn default() -> Self {
        VniFloor(1)
    }
}

/// A segment as the index keys it.
enum Key<'a> {
    Vni(u32),
    Vlan(&'a str, u32),
    Flat(&'a str),
}

/// The lowest id in `a..=b` missing from `held` (ascending ids within `a..=b`): a walk of the
/// ids held, never of the ids free.
fn first_gap(a: u32, b: u32, held: impl Iterator<Item = u32>) -> Option<u32> {
    let mut next = a;
    for id in held {
        if id > next {
            return Some(next);
        }
        next = id + 1;
    }
    (next <= b).then_some(next)
}

/// Decides the segment of a new network, as ML2's type drivers do, given the segments the
/// networks that exist hold.
pub(crate) fn decide(
    cfg: &SegmentConfig,
    req: &Requested<'_>,
    in_use: &InUse,
) -> Result<Segment, RegistryError> {
    let vlan_used = |physnet: &str, id: u32| in_use.vlan_used(physnet, id);
    let vni_used = |id: u32| in_use.vni_used(id);
    let provider = req.network_type.is_some()
        || req.physical_network.is_some()
        || req.segmentation_id.is_some();

    // A tenant network: the first tenant type with a free segment.
    if !provider && !cfg.tenant_types.is_empty() {
        for t in &cfg.tenant_types {
            match t {
                NetworkType::Vxlan => {
                    if let Some(id) = in_use.free_vni(&cfg.vni_ranges) {
                        return Ok(Segment {
                            network_type: NetworkType::Vxlan,
                            physical_network: None,
                            segmentation_id: Some(id),
                        });
                    }
                }
                NetworkType::Vlan => {
                    for (physnet, ranges) in &cfg.vlan_ranges {
                        if let Some(id) = in_use.free_vlan(physnet, ranges) {
                            return Ok(Segment {
                                network_type: NetworkType::Vlan,
                                physical_network: Some(physnet.clone()),
                                segmentation_id: Some(id),
                            });
                        }
                    }
                }
                NetworkType::Local | NetworkType::Flat => {
                    return Ok(Segment {
                        network_type: NetworkType::Local,
                        physical_network: None,
                        segmentation_id: None,
                    })
                }
            }
        }
        return Err(RegistryError::NoNetworkAvailable);
    }

    let network_type = match req.network_type {
        None => NetworkType::Flat,
        Some(t) => t
            .parse()
            .map_err(|e: String| invalid("provider:network_type", e))?,
    };
    let seg_field = "provider:segmentation_id";
    let phys_field = "provider:physical_network";
    match network_type {
        NetworkType::Flat | NetworkType::Local => {
            if req.segmentation_id.is_some() {
                return Err(invalid(
                    seg_field,
                    format!("segmentation_id not allowed for {network_type} provider network"),
                ));
            }
            if network_type == NetworkType::Local && req.physical_network.is_some() {
                return Err(invalid(
                    phys_field,
                    "physical_network not allowed for local provider network",
                ));
            }
            if network_type == NetworkType::Flat
                && req.network_type.is_some()
                && req.physical_network.is_none()
            {
                return Err(invalid(
                    phys_field,
                    "a flat provider network needs a physical network",
                ));
            }
            Ok(Segment {
                network_type,
                physical_network: req.physical_network.map(str::to_string),
                segmentation_id: None,
            })
        }
        NetworkType::Vlan => {
            let physnet = match req.physical_network {
                Some(p) => p.to_string(),
                // none named: any physical network with room, as ML2 allocates one
                None => {
                    return decide(
                        &SegmentConfig {
                            tenant_types: vec![NetworkType::Vlan],
                            ..cfg.clone()
                        },
                        &Requested {
                            network_type: None,
                            physical_network: None,
                            segmentation_id: None,
                            is_admin: req.is_admin,
                        },
                        in_use,
                    )
                    .and_then(|s| match req.segmentation_id {
                        Some(_) => Err(invalid(phys_field, "a VLAN id needs its physical network")),
                        None => Ok(s),
                    });
                }
            };
            let Some(ranges) = cfg.vlan_ranges.get(&physnet) else {
                return Err(invalid(
                    phys_field,
                    format!("physical_network '{physnet}' unknown for VLAN provider network"),
                ));
            };
            let id = match req.segmentation_id {
                Some(id) => {
                    if !(1..=MAX_VLAN).contains(&id) {
                        return Err(invalid(
                            seg_field,
                            format!("segmentation_id out of range (1 through {MAX_VLAN})"),
                        ));
                    }
                    if !req.is_admin && !in_ranges(ranges, id) {
                        return Err(invalid(
                            seg_field,
                            format!("VLAN {id} is outside the ranges of {physnet}"),
                        ));
                    }
                    if vlan_used(&physnet, id) {
                        return Err(RegistryError::VlanIdInUse {
                            vlan_id: id,
                            physical_network: physnet,
                        });
                    }
                    id
                }
                None => in_use
                    .free_vlan(&physnet, ranges)
                    .ok_or(RegistryError::NoNetworkAvailable)?,
            };
            Ok(Segment {
                network_type: NetworkType::Vlan,
                physical_network: Some(physnet),
                segmentation_id: Some(id),
            })
        }
        NetworkType::Vxlan => {
            if req.physical_network.is_some() {
                return Err(invalid(
                    phys_field,
                    "provider:physical_network specified for VXLAN network",
                ));
            }
            let id = match req.segmentation_id {
                Some(id) => {
                    if !(1..=MAX_VNI).contains(&id) {
                        return Err(invalid(
                            seg_field,
                            format!("segmentation_id out of range (1 through {MAX_VNI})"),
                        ));
                    }
                    if !req.is_admin && !in_ranges(&cfg.vni_ranges, id) {
                        return Err(invalid(
                            seg_field,
                            format!("VNI {id} is outside the configured vni_ranges"),
                        ));
                    }
                    if vni_used(id) {
                        return Err(RegistryError::TunnelIdInUse { tunnel_id: id });
                    }
                    id
                }
                None => in_use
                    .free_vni(&cfg.vni_ranges)
                    .ok_or(RegistryError::NoNetworkAvailable)?,
            };
            Ok(Segment {
                network_type: NetworkType::Vxlan,
                physical_network: None,
                segmentation_id: Some(id),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::first_gap;

    #[test]
    fn the_first_gap_is_the_lowest_id_not_held() {
        assert_eq!(first_gap(10, 12, [].into_iter()), Some(10));
        assert_eq!(first_gap(10, 12, [10, 11].into_iter()), Some(12));
        assert_eq!(first_gap(10, 12, [10, 12].into_iter()), Some(11));
        assert_eq!(first_gap(10, 12, [11].into_iter()), Some(10));
        assert_eq!(first_gap(10, 12, [10, 11, 12].into_iter()), None);
        assert_eq!(
            first_gap(1, u32::MAX - 1, [u32::MAX - 1].into_iter()),
            Some(1)
        );
    }
}
