//! Readers are served from snapshots: a read takes no lock, so it answers while a writer
//! holds the registry, and it sees every write acknowledged before it, never one that is not.

use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::Duration;

use qdhcp_control::{Control, NoDhcp};
use qdhcp_registry::requests::NetworkReq;
use qdhcp_registry::Caller;
use qdhcp_store::Store;

fn create(control: &Control, name: &str) {
    let caller = Caller {
        project_id: "p".into(),
        is_admin: true,
    };
    let req = NetworkReq {
        name: Some(name.into()),
        ..NetworkReq::default()
    };
    control
        .mutate(move |reg, env| reg.create_network(req.clone(), &caller, env))
        .unwrap();
}

fn names(reg: &qdhcp_registry::Registry) -> Vec<String> {
    let mut v: Vec<String> = reg.networks().map(|n| n.name.clone()).collect();
    v.sort();
    v
}

/// A control plane on a fresh SQLite store holding one network, "a".
fn control_with_network_a() -> (tempfile::TempDir, Arc<Control>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("registry.sqlite")).unwrap();
    let control = Arc::new(Control::open(store, Arc::new(NoDhcp)).unwrap());
    create(&control, "a");
    (dir, control)
}

#[test]
fn reads_answer_while_a_writer_holds_the_registry() {
    let (_dir, control) = control_with_network_a();
    let before = control.read();
    assert_eq!(
        names(&before),
        ["a"],
        "an acknowledged write is read at once"
    );

    // a writer holds the registry (as during a write's apply) until told to let go
    let (held_tx, held) = channel();
    let (release, release_rx) = channel::<()>();
    let holder = {
        let control = control.clone();
        std::thread::spawn(move || {
            let _reg = control.lock();
            held_tx.send(()).unwrap();
            let _ = release_rx.recv_timeout(Duration::from_secs(10));
        })
    };
    held.recv().unwrap();
    let (read_tx, read) = channel();
    {
        let control = control.clone();
        std::thread::spawn(move || read_tx.send(names(&control.read())).unwrap());
    }
    let answered = read.recv_timeout(Duration::from_secs(2));
    release.send(()).unwrap();
    holder.join().unwrap();
    assert_eq!(
        answered.expect("a read waited for the writer's lock"),
        ["a"]
    );

    // a snapshot is not changed by later writes; a new read sees them
    create(&control, "b");
    assert_eq!(names(&before), ["a"]);
    assert_eq!(names(&control.read()), ["a", "b"]);
}

#[test]
fn a_write_that_panics_half_way_is_not_shown_to_readers() {
    let (_dir, control) = control_with_network_a();
    let c = control.clone();
    let panicked = std::thread::spawn(move || {
        let caller = Caller {
            project_id: "p".into(),
            is_admin: true,
        };
        let _ = c.mutate(move |reg, env| -> Result<((), _), _> {
            let req = NetworkReq {
                name: Some("half".into()),
                ..NetworkReq::default()
            };
            reg.create_network(req, &caller, env)?;
            panic!("a bug half way through a write");
        });
    })
    .join();
    assert!(panicked.is_err());
    assert_eq!(names(&control.read()), ["a"]);
    // the next write starts from what the store holds: the half write is gone for good
    create(&control, "b");
    assert_eq!(names(&control.read()), ["a", "b"]);
}
