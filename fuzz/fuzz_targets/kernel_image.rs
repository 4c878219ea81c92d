#![no_main]
//! Kernel-image detection and every loader (PVH, Multiboot 1 and 2, bzImage, vmlinux, disk).
//! The properties are checked in `vmm_host::fuzzing::kernel_image`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| vmm_host::fuzzing::kernel_image(data));
