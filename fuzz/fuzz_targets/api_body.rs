//! Fuzz target: see `qdhcp_fuzzing::api_body`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| qdhcp_fuzzing::api_body(data));
