//! Readers are served from snapshots: a read takes no lock, so it answers while the writer
//! applies a write, and it sees every write acknowledged before it, never one that is not.

use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::Duration;

use qdhcp_control::{Control, ControlError, NoDhcp};
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
fn reads_answer_while_a_write_is_being_applied() {
    let (_dir, control) = control_with_network_a();
    let before = control.read();
    assert_eq!(
        names(&before),
        ["a"],
        "an acknowledged write is read at once"
    );

    // a write held half way through its apply on the writer until told to go on
    let (held_tx, held) = channel();
    let (release, release_rx) = channel::<()>();
    let holder = {
        let control = control.clone();
        std::thread::spawn(move || {
            let caller = Caller {
                project_id: "p".into(),
                is_admin: true,
            };
            control.mutate(move |reg, env| {
                let made = reg.create_network(
                    NetworkReq {
                        name: Some("held".into()),
                        ..NetworkReq::default()
                    },
                    &caller,
                    env,
                );
                let _ = held_tx.send(());
                let _ = release_rx.recv_timeout(Duration::from_secs(10));
                made
            })
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
    holder.join().unwrap().unwrap();
    assert_eq!(
        answered.expect("a read waited for the writer"),
        ["a"],
        "a write not yet stored is not read"
    );

    // a snapshot is not changed by later writes; a new read sees them
    create(&control, "b");
    assert_eq!(names(&before), ["a"]);
    assert_eq!(names(&control.read()), ["a", "b", "held"]);
}

#[test]
fn a_write_that_panics_half_way_is_refused_and_not_shown_to_readers() {
    let (_dir, control) = control_with_network_a();
    let caller = Caller {
        project_id: "p".into(),
        is_admin: true,
    };
    let r = control.mutate(move |reg, env| -> Result<((), _), _> {
        let req = NetworkReq {
            name: Some("half".into()),
            ..NetworkReq::default()
        };
        reg.create_network(req, &caller, env)?;
        panic!("a bug half way through a write");
    });
    assert!(matches!(r, Err(ControlError::Failed)), "{r:?}");
    assert_eq!(names(&control.read()), ["a"]);
    // the writer goes on, from the registry as published: the half write is gone for good
    create(&control, "b");
    assert_eq!(names(&control.read()), ["a", "b"]);
    let reopened = Control::open(
        Store::open(&_dir.path().join("registry.sqlite")).unwrap(),
        Arc::new(NoDhcp),
    )
    .unwrap();
    assert_eq!(names(&reopened.read()), ["a", "b"], "and the store agrees");
}
