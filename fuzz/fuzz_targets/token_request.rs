#![no_main]
//! `cargo +nightly fuzz run token_request`: see `damselfly_tests::fuzz::token_request`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| damselfly_tests::fuzz::token_request(data));
