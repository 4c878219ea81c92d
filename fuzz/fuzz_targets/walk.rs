#![no_main]
//! The page-table walker in every paging mode, against the reference walkers.
//! The properties are checked in `vmm_host::fuzzing::walk`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm_host::fuzzing::walk(data));
