//! Fuzz target: see `qdhcp_fuzzing::dns_query`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| qdhcp_fuzzing::dns_query(data));
