#![no_main]
//! `cargo +nightly fuzz run range`: see `damselfly_tests::fuzz::range`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| damselfly_tests::fuzz::range(data));
