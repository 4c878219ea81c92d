//! The bodies of the cargo-fuzz targets in `fuzz/`: one function per surface a guest or a user
//! controls, each taking the fuzzer's bytes and panicking when a property fails, not only
//! when the code under it panics. They live in the library (behind the `fuzzing` feature) so
//! that they reach its internals, and so that plain `cargo test` replays every committed
//! corpus file and crash through the same functions (`fuzz/seeds/TARGET/`,
//! `fuzz/regressions/TARGET/`).
//!
//! The properties: walks agree with the plain reference walkers of `walk_model`, audits with
//! the same model and their budget, an emulated instruction does exactly what the CPU would,
//! every error and finding a user reads is one line, a report page escapes what the report
//! file says, the gdb stub answers every packet with a well-formed reply and reads back what
//! it was given.

mod bios;
mod core_file;
mod delivery;
mod devices;
mod emulate;
mod explain;
mod gdb;
mod input;
mod kernel_image;
mod paging;
mod report;
mod scenario;

pub use bios::bios;
pub use core_file::core;
pub use delivery::delivery;
pub use devices::devices;
pub use emulate::emulate;
pub use explain::explain;
pub use gdb::gdb;
pub use input::Input;
pub use kernel_image::kernel_image;
pub use paging::{audit, walk};
pub use report::report;
pub use scenario::scenario;

/// A target's body: the fuzzer's bytes in, a panic when a property fails.
pub type Target = fn(&[u8]);

/// Every target by its name in `fuzz/fuzz_targets/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("audit", audit),
    ("bios", bios),
    ("core", core),
    ("delivery", delivery),
    ("devices", devices),
    ("emulate", emulate),
    ("explain", explain),
    ("gdb", gdb),
    ("kernel_image", kernel_image),
    ("report", report),
    ("scenario", scenario),
    ("walk", walk),
];

/// A message a user reads: one line, not empty.
#[track_caller]
pub fn assert_one_line(what: &str, message: &str) {
    assert!(!message.is_empty(), "{what}: an empty message");
    assert!(
        !message.contains('\n'),
        "{what} is not one line: {message:?}"
    );
}

#[cfg(test)]
mod tests;
