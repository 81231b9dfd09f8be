#![no_main]
//! `cargo +nightly fuzz run manifest`: see `damselfly_tests::fuzz::manifest`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| damselfly_tests::fuzz::manifest(data));
