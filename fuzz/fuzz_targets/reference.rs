#![no_main]
//! `cargo +nightly fuzz run reference`: see `damselfly_tests::fuzz::reference`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| damselfly_tests::fuzz::reference(data));
