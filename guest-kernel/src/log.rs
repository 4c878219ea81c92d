//! `log=verbose|quiet`: whether every handled fault gets its own serial lines.
//!
//! Each serial byte is a port write, which is a VM exit; a heap workload that takes 20,000
//! faults spends seconds printing them. `quiet` keeps boot lines, summaries and fatal reports.

use core::sync::atomic::{AtomicBool, Ordering};

static QUIET: AtomicBool = AtomicBool::new(false);

/// Returns false for a level this kernel does not know.
pub fn set_level(level: &str) -> bool {
    match level {
        "verbose" => QUIET.store(false, Ordering::Relaxed),
        "quiet" => QUIET.store(true, Ordering::Relaxed),
        _ => return false,
    }
    true
}

pub fn per_fault() -> bool {
    !QUIET.load(Ordering::Relaxed)
}

/// Print a line only when per-fault logging is on.
#[macro_export]
macro_rules! fault_log {
    ($($arg:tt)*) => {
        if $crate::log::per_fault() {
            $crate::kprintln!($($arg)*);
        }
    };
}
