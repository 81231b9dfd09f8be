#![no_main]
//! `cargo +nightly fuzz run repository_name`: see `damselfly_tests::fuzz::repository_name`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| damselfly_tests::fuzz::repository_name(data));
