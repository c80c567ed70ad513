//! `qdhcp serve` configuration: flags over file over defaults.

use super::*;

#[test]
fn flags_override_the_toml_file_and_reach_the_dataplane() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("qdhcp.toml");
    std::fs::write(&toml, "listen = \"127.0.0.1:19696\"\nclient_rate = 7\nquiet_dhcp = true\nrealtime = true\n[bridge_mappings]\nphysnet1 = \"br-x\"\n").unwrap();
    let a = ServeArgs {
        config: Some(toml.clone()),
        ..Default::default()
    };
    let c = resolve(&a).unwrap();
    assert_eq!(c.listen.port(), 19696);
    assert_eq!(
        c.bridge_mappings.get("physnet1").map(String::as_str),
        Some("br-x")
    );
    let o = serve_options(&c);
    assert_eq!(o.client_rate, 7);
    assert!(o.quiet);
    assert!(o.realtime, "realtime from the file reaches the dataplane");
    let a = ServeArgs {
        config: Some(toml),
        client_rate: Some(0),
        bridge_mappings: Some("p:b".into()),
        ..Default::default()
    };
    let c = resolve(&a).unwrap();
    assert_eq!(serve_options(&c).client_rate, 0, "the flag wins");
    assert_eq!(c.bridge_mappings.get("p").map(String::as_str), Some("b"));
    let bad = ServeArgs {
        bridge_mappings: Some("nocolon".into()),
        ..Default::default()
    };
    assert!(resolve(&bad).is_err());
    let defaults = resolve(&ServeArgs::default()).unwrap();
    assert_eq!(defaults.listen.to_string(), "127.0.0.1:9696");
    assert_eq!(defaults.namespace_prefix, "qdhcp-");
    assert_eq!(serve_options(&defaults).client_rate, 30);
    assert!(!serve_options(&defaults).realtime, "off unless asked for");
    let flag = ServeArgs {
        realtime: true,
        ..Default::default()
    };
    assert!(serve_options(&resolve(&flag).unwrap()).realtime);
}

#[test]
fn the_commit_interval_comes_from_the_flag_or_the_file_and_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("qdhcp.toml");
    std::fs::write(&toml, "commit_interval_us = 2000\n").unwrap();
    let from_file = ServeArgs {
        config: Some(toml.clone()),
        ..Default::default()
    };
    let interval = |a: &ServeArgs| serve_options(&resolve(a).unwrap()).commit_interval;
    assert_eq!(interval(&from_file), std::time::Duration::from_millis(2));
    let flag = ServeArgs {
        config: Some(toml),
        commit_interval_us: Some(500),
        ..Default::default()
    };
    assert_eq!(
        interval(&flag),
        std::time::Duration::from_micros(500),
        "the flag wins"
    );
    assert_eq!(
        interval(&ServeArgs::default()),
        std::time::Duration::from_millis(2),
        "2 ms when none is given"
    );
    let off = ServeArgs {
        commit_interval_us: Some(0),
        ..Default::default()
    };
    assert_eq!(interval(&off), std::time::Duration::ZERO, "0 turns it off");
    let too_long = ServeArgs {
        commit_interval_us: Some(1_000_001),
        ..Default::default()
    };
    let e = resolve(&too_long).unwrap_err().to_string();
    assert!(e.contains("commit_interval_us"), "{e}");
}

#[test]
fn the_readmes_two_node_toml_is_a_valid_configuration() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = readme
        .split("## Several nodes on PostgreSQL")
        .nth(1)
        .expect("README has the two-node section");
    let toml_text = section
        .split("```toml\n")
        .nth(1)
        .and_then(|t| t.split("```").next())
        .expect("a TOML example");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qdhcp.toml");
    std::fs::write(&path, toml_text).unwrap();
    let c = resolve(&ServeArgs {
        config: Some(path),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(c.node, "net1");
    assert_eq!(c.nodes_per_network, 2);
    assert_eq!(c.node_down_secs, 30);
    assert!(c.database.as_deref().unwrap().starts_with("postgresql://"));
    assert_eq!(c.dhcp.node, "net1", "DHCP serves this node's ports");
    let one = resolve(&ServeArgs {
        dhcp_nodes_per_network: Some(0),
        ..Default::default()
    });
    assert!(one.is_err(), "at least one node per network");
}
