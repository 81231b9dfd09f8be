//! Replays every committed fuzz input through the check its target runs
//! (`damselfly_tests::fuzz`), on stable: the inputs that once found a bug,
//! and a seed corpus per target, stay regression tests in CI. The long
//! campaign is `scripts/fuzz.sh`.

use std::path::PathBuf;

use damselfly_tests::fuzz::TARGETS;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz_corpus").join(target)
}

#[test]
fn every_committed_input_passes_its_targets_check() {
    let (mut replayed, mut failed) = (Vec::new(), Vec::new());
    for (target, check) in TARGETS {
        let dir = corpus_dir(target);
        let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}; every fuzz target has a committed corpus", dir.display()))
            .map(|entry| entry.expect("a directory entry").path())
            .filter(|p| p.is_file())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "{} holds no input", dir.display());
        for input in &inputs {
            let data = std::fs::read(input).expect("read the input");
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                failed.push(format!("{target}: {}", input.display()));
            }
        }
        replayed.push(format!("{target}: {}", inputs.len()));
    }
    eprintln!("replayed {}", replayed.join(", "));
    assert!(failed.is_empty(), "these inputs make their checks fail (panics above):\n{}", failed.join("\n"));
}

#[test]
fn every_fuzz_target_has_a_binary_and_a_corpus() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for (target, _) in TARGETS {
        let binary = root.join("fuzz/fuzz_targets").join(format!("{target}.rs"));
        let source = std::fs::read_to_string(&binary).unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
        assert!(
            source.contains(&format!("damselfly_tests::fuzz::{target}")),
            "{} runs another check",
            binary.display()
        );
        assert!(corpus_dir(target).is_dir(), "no corpus for {target}");
    }
}
