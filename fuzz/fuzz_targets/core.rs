#![no_main]
//! The core reader behind `vmm-host inspect`, and the offline report.
//! The properties are checked in `vmm_host::fuzzing::core`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm_host::fuzzing::core(data));
