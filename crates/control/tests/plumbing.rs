//! Plumbing a network (namespaces, links, sockets) runs after the registry lock is let go:
//! reads and other writes do not wait for it, and the DHCP side still hears every change in
//! the order the registry made it.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qdhcp_control::{Control, DhcpSink};
use qdhcp_registry::requests::{NetworkReq, SubnetReq};
use qdhcp_registry::{Caller, Effect, Registry};
use qdhcp_store::Store;

/// A DHCP side whose plumbing of a network waits until the test lets it go on.
struct HeldPlumbing {
    started: Mutex<Sender<String>>,
    go_on: Mutex<Receiver<()>>,
    seen: Mutex<Vec<String>>,
}

impl DhcpSink for HeldPlumbing {
    fn apply(&self, reg: &Registry, effects: &[Effect]) {
        for e in effects {
            if let Effect::NetworkChanged(id) = e {
                let subnets = reg.subnets_of(id).count();
                self.seen
                    .lock()
                    .unwrap()
                    .push(format!("{id}: {subnets} subnets"));
                if subnets > 0 {
                    let _ = self.started.lock().unwrap().send(id.to_string());
                    let _ = self
                        .go_on
                        .lock()
                        .unwrap()
                        .recv_timeout(Duration::from_secs(10));
                }
            }
        }
    }
}

#[test]
fn reads_and_writes_do_not_wait_for_a_network_being_plumbed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("registry.sqlite")).unwrap();
    let (started_tx, started) = channel();
    let (go_on, go_on_rx) = channel();
    let sink = Arc::new(HeldPlumbing {
        started: Mutex::new(started_tx),
        go_on: Mutex::new(go_on_rx),
        seen: Mutex::new(Vec::new()),
    });
    let control = Arc::new(Control::open(store, sink.clone()).unwrap());
    let caller = Caller {
        project_id: "p".into(),
        is_admin: true,
    };
    let net = |name: &str| NetworkReq {
        name: Some(name.into()),
        ..NetworkReq::default()
    };
    let (a, _) = {
        let c = caller.clone();
        control
            .mutate(move |reg, env| {
                let (n, out) = reg.create_network(net("a"), &c, env)?;
                Ok((n, out))
            })
            .map(|n| (n, ()))
            .unwrap()
    };
    // a subnet on network a: its plumbing starts and is held there
    let writer = {
        let (control, caller, id) = (control.clone(), caller.clone(), a.id.clone());
        std::thread::spawn(move || {
            control.mutate(move |reg, env| {
                let req = SubnetReq {
                    network_id: Some(id.to_string()),
                    cidr: Some("10.0.0.0/24".into()),
                    ip_version: Some(4),
                    ..SubnetReq::default()
                };
                reg.create_subnet(req, &caller, env)
            })
        })
    };
    let plumbed = started
        .recv_timeout(Duration::from_secs(10))
        .expect("plumbing started");
    assert_eq!(plumbed, a.id);
    // meanwhile reads go through, and another write is stored and seen by them (its answer
    // waits for its own turn at the DHCP side, after the plumbing before it)
    let (done_tx, done) = channel();
    {
        let control = control.clone();
        std::thread::spawn(move || {
            let _ = done_tx.send(control.read().networks().count());
        });
    }
    let count = done.recv_timeout(Duration::from_secs(3));
    let second = {
        let (control, caller) = (control.clone(), caller.clone());
        std::thread::spawn(move || {
            control.mutate(move |reg, env| reg.create_network(net("b"), &caller, env))
        })
    };
    let mut stored = false;
    for _ in 0..300 {
        if control.read().networks().any(|n| n.name == "b") {
            stored = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    go_on.send(()).unwrap();
    writer.join().unwrap().unwrap();
    second.join().unwrap().unwrap();
    assert_eq!(count, Ok(1), "a read while a network is being plumbed");
    assert!(stored, "a write stored while a network is being plumbed");
    // the plumbing worked from the registry as the subnet left it
    assert!(sink
        .seen
        .lock()
        .unwrap()
        .contains(&format!("{}: 1 subnets", a.id)));
}
