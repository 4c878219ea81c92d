//! The core reader behind `vmm-host inspect`, and the offline report, on bytes the fuzzer
//! chooses (seeded with a small core of our own).

use super::assert_one_line;
use crate::coredump::{inspect, read_bytes};
use std::path::Path;

/// A file that is not a core of ours is refused in one line that names it; one that is
/// gives a report that names it too.
pub fn core(data: &[u8]) {
    let path = Path::new("fuzz.core");
    match read_bytes(path, data) {
        Err(e) => {
            let message = e.to_string();
            assert_one_line("a refused core", &message);
            assert!(message.contains("fuzz.core"), "{message}");
        }
        Ok(core) => {
            let report = inspect::report(&core, None);
            assert!(report.starts_with("== core fuzz.core\n"), "{report}");
        }
    }
}
