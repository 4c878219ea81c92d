#![no_main]
//! The JSON-lines reader behind `vmm-host report`, and the page drawn from it.
//! The properties are checked in `vmm_host::fuzzing::report`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm_host::fuzzing::report(data));
