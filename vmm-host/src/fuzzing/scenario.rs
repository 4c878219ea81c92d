//! The scenario parser on text the fuzzer chooses.

use super::assert_one_line;
use crate::scenario::Scenario;
use std::path::Path;

/// A scenario file is refused in one line that names the file.
pub fn scenario(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = Scenario::parse(Path::new("fuzz.toml"), &text) {
        let message = e.to_string();
        assert_one_line("a refused scenario", &message);
        assert!(message.starts_with("fuzz.toml"), "{message}");
    }
}
