#![no_main]
//! Port sequences to the PC's devices: PIC, PIT, CMOS, i8042, VGA, COM1.
//! The properties are checked in `vmm_host::fuzzing::devices`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm_host::fuzzing::devices(data));
