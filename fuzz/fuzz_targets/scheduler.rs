#![no_main]
//! `cargo +nightly fuzz run scheduler`: see `damselfly_tests::fuzz::scheduler`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| damselfly_tests::fuzz::scheduler(data));
