//! Plain `cargo test` replays every committed corpus file and every crash the fuzzers found
//! (`fuzz/seeds/TARGET/`, `fuzz/regressions/TARGET/`) through the targets' bodies, and
//! checks that `fuzz/` has a target, and a corpus, for each of them.

use super::TARGETS;
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `fuzz/KIND/TARGET/`, none when it does not exist.
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(fuzz_dir().join(kind).join(target)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(kind: &str) -> usize {
    let mut replayed = 0;
    for &(name, target) in TARGETS {
        for file in inputs(kind, name) {
            let data = std::fs::read(&file).expect("a readable input");
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name} fails on {}", file.display());
            replayed += 1;
        }
    }
    replayed
}

#[test]
fn every_crash_found_stays_fixed() {
    replay("regressions");
}

#[test]
fn every_seed_holds_its_properties() {
    assert!(replay("seeds") >= TARGETS.len());
}

#[test]
fn each_target_has_its_fuzz_target_file_and_a_seed_corpus() {
    for &(name, _) in TARGETS {
        let source = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        let text = std::fs::read_to_string(&source)
            .unwrap_or_else(|e| panic!("{}: {e}", source.display()));
        assert!(
            text.contains(&format!("vmm_host::fuzzing::{name}(")),
            "{} does not call vmm_host::fuzzing::{name}",
            source.display()
        );
        assert!(
            !inputs("seeds", name).is_empty(),
            "no seed corpus for {name}"
        );
    }
}

#[test]
fn empty_and_short_inputs_mean_something() {
    for &(name, target) in TARGETS {
        for data in [
            &[][..],
            &[0],
            &[0xff; 7],
            b"\x00\x01\x02\x03\x04\x05\x06\x07\x08",
        ] {
            let outcome = std::panic::catch_unwind(|| target(data));
            assert!(outcome.is_ok(), "{name} fails on {data:02x?}");
        }
    }
}

#[test]
fn docs_fuzzing_md_lists_exactly_the_targets() {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/fuzzing.md");
    let text = std::fs::read_to_string(&doc).expect("docs/fuzzing.md");
    let listed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .collect();
    let targets: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    let mut sorted = listed.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, targets, "the table of docs/fuzzing.md");
}
