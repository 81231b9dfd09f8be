#![no_main]
//! `cargo +nightly fuzz run agent_config`: see `damselfly_tests::fuzz::agent_config`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| damselfly_tests::fuzz::agent_config(data));
