//! The kernel and the boot loader each link by their own script: the kernel at 1 MiB
//! (linker.ld), the loader's stage1 and stage2 at 0x7C00 and 0x8000 (bootsector.ld), the
//! 32-bit test kernel at 2 MiB (kernel32.ld).
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-arg-bin=guest-kernel=-T{dir}/linker.ld");
    println!("cargo:rustc-link-arg-bin=bootsector=-T{dir}/bootsector.ld");
    println!("cargo:rustc-link-arg-bin=kernel32=-T{dir}/kernel32.ld");
    println!("cargo:rerun-if-changed=linker.ld");
    println!("cargo:rerun-if-changed=bootsector.ld");
    println!("cargo:rerun-if-changed=kernel32.ld");
}
