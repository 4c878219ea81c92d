#![no_main]
//! The host's BIOS services: any vector, registers and buffers, on a disk of fuzzed sectors.
//! The properties are checked in `vmm_host::fuzzing::bios`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm_host::fuzzing::bios(data));
