//! The host's modules, and the guest kernel's, form layers: no module reaches, through `crate::` paths, a module
//! that reaches back to it, and no submodule of a directory module reaches a sibling that
//! reaches back. A cycle fails with every edge on it and the line that makes the edge.
//! docs/architecture.md draws the layers.
//!
//! Test-only code (`tests.rs` files, `#[cfg(test)] mod tests` blocks and the test-only
//! modules below) may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
mod common;
use common::rust_files;
use std::path::Path;

const TEST_ONLY: &[&str] = &["walk_model.rs", "robustness.rs", "gdb/fake.rs"];

/// `from → to`, with the first place that makes it.
type Graph = BTreeMap<String, BTreeMap<String, String>>;

/// The module path of a source file: `vm/run.rs` is `vm::run`, `vm/mod.rs` is `vm`.
fn module_of(relative: &str) -> Vec<String> {
    let trimmed = relative.trim_end_matches(".rs");
    let mut parts: Vec<String> = trimmed.split('/').map(String::from).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The source without its `#[cfg(test)] mod tests { … }` block (always last in a file).
fn production_code(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests {") {
        Some(at) => &text[..at],
        None => text,
    }
}

/// Each `crate::a::b` and `super::x` path in the code, with its line number.
fn paths(code: &str) -> Vec<(usize, Vec<String>, bool)> {
    let mut found = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let line = line.split("//").next().unwrap_or("");
        for (prefix, is_super) in [("crate::", false), ("super::", true)] {
            let mut rest = line;
            while let Some(at) = rest.find(prefix) {
                let before = rest[..at].chars().last();
                rest = &rest[at + prefix.len()..];
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    continue;
                }
                for segments in path_segments(rest) {
                    found.push((n + 1, segments, is_super));
                }
            }
        }
    }
    found
}

/// The segments of the path(s) at the start of `rest`: `a::b::C` is one, `{a, b::c}` two.
fn path_segments(rest: &str) -> Vec<Vec<String>> {
    let word = |s: &str| -> String {
        s.trim()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    if let Some(group) = rest.strip_prefix('{') {
        let inside = group.split('}').next().unwrap_or("");
        return inside
            .split(',')
            .map(|item| {
                item.split("::")
                    .map(word)
                    .take_while(|s| !s.is_empty())
                    .collect()
            })
            .filter(|segments: &Vec<String>| !segments.is_empty())
            .collect();
    }
    let segments: Vec<String> = rest
        .split("::")
        .map(word)
        .take_while(|s| !s.is_empty())
        .collect();
    vec![segments]
}

/// Edges between top-level modules, and between siblings inside each directory module.
fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut edges = Graph::new();
    for file in files {
        let relative = file.strip_prefix(src).expect("under src").to_string_lossy();
        let relative = relative.replace('\\', "/");
        if relative.ends_with("tests.rs")
            || TEST_ONLY.contains(&relative.as_str())
            || ["lib.rs", "main.rs"].contains(&relative.as_str())
        {
            continue;
        }
        let module = module_of(&relative);
        let text = std::fs::read_to_string(&file).expect("a source file");
        for (line, segments, is_super) in paths(production_code(&text)) {
            let target: Vec<String> = if is_super {
                // `super::x` from a::b::c (file a/b/c.rs) is a::b::x; from a::b (a/b/mod.rs
                // or a/b.rs) it is a::x.
                let mut base = module.clone();
                base.pop();
                base.extend(segments.iter().take(1).cloned());
                base
            } else {
                segments.iter().take(2).cloned().collect()
            };
            let place = format!("{relative}:{line}");
            // Top level: crate::x from any file of module y.
            if let (Some(from), Some(to)) = (module.first(), target.first())
                && from != to
            {
                edges
                    .entry(from.clone())
                    .or_default()
                    .entry(to.clone())
                    .or_insert_with(|| place.clone());
            }
            // Siblings: a::x reaching a::y.
            if module.len() >= 2
                && target.len() >= 2
                && module[0] == target[0]
                && module[1] != target[1]
            {
                let from = format!("{}::{}", module[0], module[1]);
                let to = format!("{}::{}", target[0], target[1]);
                edges.entry(from).or_default().entry(to).or_insert(place);
            }
        }
    }
    edges
}

/// Every cycle's edges, as "a → b (file:line)".
fn cycles(edges: &Graph) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = edges.keys().collect();
    let mut found = Vec::new();
    for start in nodes {
        // A path back to `start` through nodes greater than it, so each cycle is found once.
        let mut stack = vec![(start.clone(), vec![])];
        let mut seen = BTreeSet::new();
        while let Some((node, trail)) = stack.pop() {
            for (next, place) in edges.get(&node).into_iter().flatten() {
                let mut trail: Vec<String> = trail.clone();
                trail.push(format!("{node} → {next} ({place})"));
                if next == start {
                    found.push(trail);
                } else if next > start && seen.insert(next.clone()) {
                    stack.push((next.clone(), trail));
                }
            }
        }
    }
    found
}

/// Fails with every cycle among the modules under `src`.
fn assert_acyclic(edges: &Graph) {
    let found = cycles(edges);
    assert!(
        found.is_empty(),
        "module cycles (break each by moving what both sides need below them):\n{}",
        found
            .iter()
            .map(|c| c.join("\n  "))
            .collect::<Vec<_>>()
            .join("\n\n")
    );
}

#[test]
fn the_host_modules_have_no_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = graph(&src);
    assert!(
        edges.contains_key("vm") && edges.contains_key("vm::run"),
        "the graph sees top-level and nested modules: {:?}",
        edges.keys().collect::<Vec<_>>()
    );
    assert_acyclic(&edges);
}

#[test]
fn the_guest_kernel_modules_have_no_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-kernel/src");
    let edges = graph(&src);
    assert!(
        edges.contains_key("traps") && edges.contains_key("pmm"),
        "the graph sees the guest's modules: {:?}",
        edges.keys().collect::<Vec<_>>()
    );
    assert_acyclic(&edges);
}

#[test]
fn a_cycle_is_found_with_the_lines_that_make_it() {
    let mut edges = Graph::new();
    let mut edge = |a: &str, b: &str, place: &str| {
        edges
            .entry(a.into())
            .or_default()
            .insert(b.into(), place.into());
    };
    edge("tap", "virt", "tap/mod.rs:21");
    edge("virt", "paging", "virt.rs:6");
    edge("virt", "tap", "virt.rs:7");
    edge("paging", "addr", "paging/mod.rs:3");
    assert_eq!(
        cycles(&edges),
        [vec![
            "tap → virt (tap/mod.rs:21)".to_string(),
            "virt → tap (virt.rs:7)".to_string()
        ]]
    );
    assert_eq!(
        paths("use crate::tap::{A, B}; let x = super::run::go(); // crate::no"),
        [
            (1, vec!["tap".to_string()], false),
            (1, vec!["run".to_string(), "go".to_string()], true)
        ]
    );
    assert_eq!(
        paths("use super::{debuggable::Inspect, tables};"),
        [
            (
                1,
                vec!["debuggable".to_string(), "Inspect".to_string()],
                true
            ),
            (1, vec!["tables".to_string()], true)
        ]
    );
}
