//! Fuzz target: see `qdhcp_fuzzing::dnsmasq_files`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| qdhcp_fuzzing::dnsmasq_files(data));
