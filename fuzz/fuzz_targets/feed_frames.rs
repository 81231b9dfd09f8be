#![no_main]
//! `cargo +nightly fuzz run feed_frames`: see `damselfly_tests::fuzz::feed_frames`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| damselfly_tests::fuzz::feed_frames(data));
