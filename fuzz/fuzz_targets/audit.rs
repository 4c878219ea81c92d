#![no_main]
//! The page-table audit in every paging mode, against the reference walkers and its budget.
//! The properties are checked in `vmm_host::fuzzing::audit`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm_host::fuzzing::audit(data));
