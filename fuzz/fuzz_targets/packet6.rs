//! Fuzz target: see `qdhcp_fuzzing::packet6`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| qdhcp_fuzzing::packet6(data));
