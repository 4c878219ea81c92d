#![no_main]
//! The analysis and explanation of an exception at fuzzed code, registers and tables.
//! The properties are checked in `vmm_host::fuzzing::explain`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm_host::fuzzing::explain(data));
