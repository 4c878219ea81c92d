//! No host function outside tests is longer than a screen: a longer one fails with its
//! name, place and length (split it into functions whose names say what each part does).

mod common;
use common::rust_files;
use std::path::Path;

/// Lines from `fn` to its closing brace, inclusive.
const LIMIT: usize = 85;

/// Each function in `text` (before its `#[cfg(test)] mod tests`): name, first line, length.
/// A function ends at the first `}` line indented as its `fn` line, as rustfmt writes it.
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let end = lines
        .windows(2)
        .position(|w| w[0].starts_with("#[cfg(test)]") && w[1].starts_with("mod tests"))
        .unwrap_or(lines.len());
    let mut found = Vec::new();
    for (i, line) in lines[..end].iter().enumerate() {
        let body = line.trim_start();
        let indent = &line[..line.len() - body.len()];
        let Some(after) = [
            "fn ",
            "pub fn ",
            "pub(crate) fn ",
            "pub(super) fn ",
            "const fn ",
        ]
        .iter()
        .chain(&["pub const fn ", "unsafe fn "])
        .find_map(|p| body.strip_prefix(p)) else {
            continue;
        };
        if body.ends_with(';') {
            continue; // a trait method without a body
        }
        let name: String = after
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let closing = format!("{indent}}}");
        if let Some(len) = lines[i..end].iter().position(|l| *l == closing) {
            found.push((name, i + 1, len + 1));
        }
    }
    found
}

#[test]
fn no_host_function_is_longer_than_a_screen() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut long = Vec::new();
    for file in files {
        let relative = file
            .strip_prefix(&src)
            .expect("under src")
            .display()
            .to_string();
        if relative.ends_with("tests.rs")
            || ["walk_model.rs", "robustness.rs"].contains(&relative.as_str())
        {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("a source file");
        for (name, line, len) in functions(&text) {
            if len > LIMIT {
                long.push(format!("{relative}:{line}: {name} is {len} lines"));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {LIMIT} lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn functions_are_measured_to_their_closing_brace() {
    let text = "fn a() {\n    x();\n}\n\nimpl T {\n    pub fn b(&self) {\n        if y {\n        }\n    }\n}\n#[cfg(test)]\nmod tests {\n    fn c() {}\n}\n";
    assert_eq!(
        functions(text),
        [("a".to_string(), 1, 3), ("b".to_string(), 6, 4)]
    );
}
