#![no_main]
//! gdb packets against the stub serving the fake VM (no KVM), with read-back probes.
//! The properties are checked in `vmm_host::fuzzing::gdb`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm_host::fuzzing::gdb(data));
