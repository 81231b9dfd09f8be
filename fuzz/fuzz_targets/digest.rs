#![no_main]
//! `cargo +nightly fuzz run digest`: see `damselfly_tests::fuzz::digest`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| damselfly_tests::fuzz::digest(data));
