#![no_main]
//! `cargo +nightly fuzz run p2p_wire`: see `damselfly_tests::fuzz::p2p_wire`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| damselfly_tests::fuzz::p2p_wire(data));
