#![no_main]
//! The shutdown replay on fuzzed IDT, GDT, TSS, stack and code, in long and protected mode.
//! The properties are checked in `vmm_host::fuzzing::delivery`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm_host::fuzzing::delivery(data));
