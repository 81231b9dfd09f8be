//! What the fuzz targets check, one function per target: each takes any
//! bytes, hands them to the parser that meets them in the running programs,
//! and panics only when that parser misbehaves (it panics, overflows, or
//! accepts something that breaks the invariant its type promises).
//!
//! `fuzz/` (cargo-fuzz, nightly) runs these under libFuzzer; the test
//! `fuzz_corpus` replays the committed inputs under `tests/fuzz_corpus/` on
//! stable, so every input that ever found a bug stays a regression test.

mod cluster;
mod names;
mod p2p;
mod registry;

pub use cluster::{admission_review, agent_config, install_query};
pub use names::{digest, range, reference, repository_name};
pub use p2p::{feed_frames, p2p_wire, scheduler};
pub use registry::{jwt, manifest, token_request};

/// A fuzz check: runs the code under test on one input, panicking if it breaks its promise.
pub type Check = fn(&[u8]);

/// Every target, by the name of its corpus directory and of its `fuzz/` binary.
pub const TARGETS: [(&str, Check); 13] = [
    ("digest", digest),
    ("reference", reference),
    ("repository_name", repository_name),
    ("range", range),
    ("manifest", manifest),
    ("token_request", token_request),
    ("jwt", jwt),
    ("p2p_wire", p2p_wire),
    ("feed_frames", feed_frames),
    ("admission_review", admission_review),
    ("install_query", install_query),
    ("agent_config", agent_config),
    ("scheduler", scheduler),
];

/// The check of the target `name`, if there is one.
pub fn target(name: &str) -> Option<fn(&[u8])> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// The input as text, when it is UTF-8: most parsers here take `&str`.
fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// Splits `data` at the first `0xff` byte (never in UTF-8 text): a byte
/// string with several fields in one fuzz input.
fn split_field(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}
