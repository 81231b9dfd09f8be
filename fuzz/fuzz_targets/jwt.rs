#![no_main]
//! `cargo +nightly fuzz run jwt`: see `damselfly_tests::fuzz::jwt`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| damselfly_tests::fuzz::jwt(data));
