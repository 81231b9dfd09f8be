#![no_main]
//! `cargo +nightly fuzz run install_query`: see `damselfly_tests::fuzz::install_query`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| damselfly_tests::fuzz::install_query(data));
