#![no_main]
//! `cargo +nightly fuzz run admission_review`: see `damselfly_tests::fuzz::admission_review`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| damselfly_tests::fuzz::admission_review(data));
