//! Catching up in place: the objects another node changed, applied to this registry, leave it
//! as a full read-back would (objects, indexes, the next free address) and name the same
//! effects.

use crate::requests::*;
use crate::tests::{admin, TestEnv};
use crate::*;

/// Every object of `new` that `old` lacks or holds otherwise, and every object `old` holds
/// that `new` lacks: what `SELECT … WHERE rev > n` and the tombstones give a node.
fn delta(old: &Registry, new: &Registry) -> Vec<Stored> {
    let mut out = Vec::new();
    for n in new.networks().filter(|n| old.network(&n.id) != Some(*n)) {
        out.push(Stored::Network(n.clone()));
    }
    for s in new.subnets().filter(|s| old.subnet(&s.id) != Some(*s)) {
        out.push(Stored::Subnet(s.clone()));
    }
    for p in new.ports().filter(|p| old.port(&p.id) != Some(*p)) {
        out.push(Stored::Port(p.clone()));
    }
    for n in old.networks().filter(|n| new.network(&n.id).is_none()) {
        out.push(Stored::Gone(ObjectId::Network(n.id.to_string().into())));
    }
    for s in old.subnets().filter(|s| new.subnet(&s.id).is_none()) {
        out.push(Stored::Gone(ObjectId::Subnet(s.id.to_string().into())));
    }
    for p in old.ports().filter(|p| new.port(&p.id).is_none()) {
        out.push(Stored::Gone(ObjectId::Port(p.id.to_string().into())));
    }
    // the database returns them in no particular order
    out.reverse();
    out
}

fn same(a: &Registry, b: &Registry) {
    assert!(a.networks().eq(b.networks()));
    assert!(a.subnets().eq(b.subnets()));
    assert!(a.ports().eq(b.ports()));
    for n in b.networks() {
        assert!(
            a.ports_of(&n.id).eq(b.ports_of(&n.id)),
            "members of {}",
            n.id
        );
        assert!(a.subnets_of(&n.id).eq(b.subnets_of(&n.id)));
    }
    for s in b.subnets() {
        assert_eq!(
            a.used_in(&s.id),
            b.used_in(&s.id),
            "{} {:?}",
            s.cidr,
            b.ports()
                .filter(|p| p.fixed_ips.iter().any(|f| f.subnet_id == s.id))
                .map(|p| (&p.device_owner, p.fixed_ips[0].ip_address))
                .collect::<Vec<_>>()
        );
    }
}

fn key(e: &Effect) -> String {
    match e {
        Effect::NetworkChanged(id) => format!("changed {id}"),
        Effect::NetworkDeleted(id) => format!("deleted {id}"),
        Effect::PortChanged(b, a) => format!(
            "port {:?} {:?}",
            b.as_ref().map(|p| (&p.id, p.revision_number)),
            a.as_ref().map(|p| (&p.id, p.revision_number))
        ),
    }
}

fn keys(mut v: Vec<Effect>) -> Vec<String> {
    let mut k: Vec<String> = v.drain(..).map(|e| key(&e)).collect();
    k.sort();
    k
}

#[test]
fn changes_applied_in_place_equal_a_full_read_back() {
    let mut env = TestEnv(0);
    let mut here = Registry::default();
    let (keep, _) = here
        .create_network(NetworkReq::default(), &admin(), &mut env)
        .unwrap();
    let (ks, _) = here
        .create_subnet(
            SubnetReq {
                network_id: Some(keep.id.to_string()),
                cidr: Some("10.1.0.0/24".into()),
                ..Default::default()
            },
            &admin(),
            &mut env,
        )
        .unwrap();
    let port = |net: &str| PortReq {
        network_id: Some(net.into()),
        ..Default::default()
    };
    let (p1, _) = here
        .create_port(port(&keep.id), &admin(), &mut env)
        .unwrap();
    let (p2, _) = here
        .create_port(port(&keep.id), &admin(), &mut env)
        .unwrap();
    let (doomed, _) = here
        .create_network(NetworkReq::default(), &admin(), &mut env)
        .unwrap();
    here.create_subnet(
        SubnetReq {
            network_id: Some(doomed.id.to_string()),
            cidr: Some("10.2.0.0/24".into()),
            ..Default::default()
        },
        &admin(),
        &mut env,
    )
    .unwrap();
    // another node: a new network with a subnet and a port, a port renamed, one deleted (its
    // address then given to a new port), a subnet's pools changed, a network deleted
    let mut there = here.clone();
    let (fresh, _) = there
        .create_network(NetworkReq::default(), &admin(), &mut env)
        .unwrap();
    there
        .create_subnet(
            SubnetReq {
                network_id: Some(fresh.id.to_string()),
                cidr: Some("10.3.0.0/24".into()),
                ..Default::default()
            },
            &admin(),
            &mut env,
        )
        .unwrap();
    there
        .create_port(port(&fresh.id), &admin(), &mut env)
        .unwrap();
    there
        .update_port(
            &p1.id,
            PortReq {
                name: Some("renamed".into()),
                ..Default::default()
            },
            &mut env,
        )
        .unwrap();
    there.delete_port(&p2.id).unwrap();
    there
        .create_port(port(&keep.id), &admin(), &mut env)
        .unwrap();
    there
        .update_subnet(
            &ks.id,
            SubnetReq {
                allocation_pools: Some(vec![PoolReq {
                    start: "10.1.0.20".into(),
                    end: "10.1.0.30".into(),
                }]),
                ..Default::default()
            },
            &mut env,
        )
        .unwrap(); // new pools: the next address comes from them
    for p in there
        .ports_of(&doomed.id)
        .map(|p| p.id.clone())
        .collect::<Vec<_>>()
    {
        there.delete_port(&p).ok();
    }
    let subs: Vec<SubnetId> = there.subnets_of(&doomed.id).map(|s| s.id.clone()).collect();
    for s in subs {
        there.delete_subnet(&s, &mut env).unwrap();
    }
    there.delete_network(&doomed.id).unwrap();

    let want = keys(crate::effects_between(&here, &there));
    let got = keys(here.apply_stored(delta(&here, &there)));
    assert_eq!(got, want);
    same(&here, &there);
    // the next free address is the same on both
    let a = here.create_port(port(&keep.id), &admin(), &mut env.clone_at(100));
    let b = there.create_port(port(&keep.id), &admin(), &mut env.clone_at(100));
    assert_eq!(
        a.unwrap().0.fixed_ips[0].ip_address,
        b.unwrap().0.fixed_ips[0].ip_address
    );
    // written as it already is (this node's own write read back): no effect
    assert!(here
        .apply_stored(
            delta(&TestRegistry::empty(), &here)
                .into_iter()
                .filter(|s| !matches!(s, Stored::Gone(..)))
                .collect()
        )
        .is_empty());
}

struct TestRegistry;
impl TestRegistry {
    fn empty() -> Registry {
        Registry::default()
    }
}

impl TestEnv {
    fn clone_at(&self, n: u32) -> TestEnv {
        TestEnv(n)
    }
}
