#![no_main]
//! The scenario-file parser.
//! The properties are checked in `vmm_host::fuzzing::scenario`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm_host::fuzzing::scenario(data));
