//! Replays every stored fuzz corpus file (seeds captured from real clients, and every input
//! that once crashed a target) through its target. Runs in CI with the rest of the suite.

use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        f(&std::fs::read(&p).unwrap());
        n += 1;
    }
    assert!(n > 0, "empty corpus {}", dir.display());
}

#[test]
fn packet_corpus_replays_cleanly() {
    replay("packet", qdhcp_fuzzing::packet);
}

#[test]
fn dnsmasq_files_corpus_replays_cleanly() {
    replay("dnsmasq_files", qdhcp_fuzzing::dnsmasq_files);
}

#[test]
fn api_body_corpus_replays_cleanly() {
    replay("api_body", qdhcp_fuzzing::api_body);
}

#[test]
fn dns_query_corpus_replays_cleanly() {
    replay("dns_query", qdhcp_fuzzing::dns_query);
}

#[test]
fn packet6_corpus_replays_cleanly() {
    replay("packet6", qdhcp_fuzzing::packet6);
}

#[test]
fn metadata_request_corpus_replays_cleanly() {
    replay("metadata_request", qdhcp_fuzzing::metadata_request);
}
