#![no_main]
//! The displaced-instruction emulator, held to what the CPU would do.
//! The properties are checked in `vmm_host::fuzzing::emulate`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm_host::fuzzing::emulate(data));
