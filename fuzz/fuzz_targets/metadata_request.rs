//! Fuzz target: see `qdhcp_fuzzing::metadata_request`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| qdhcp_fuzzing::metadata_request(data));
