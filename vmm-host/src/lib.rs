//! vmm-host: a KVM host that boots a kernel and sees every exception it takes.
// Narrowing casts go through `narrow`, which says why each is safe; tests may cast freely.
#![cfg_attr(
    not(test),
    warn(
        clippy::cast_possible_truncation,
        clippy::cast_possible_wrap,
        clippy::cast_sign_loss
    )
)]
pub mod addr;
pub mod analysis;
pub mod bios;
pub mod boot_cpu;
pub mod catch;
pub mod colour;
pub mod console;
pub mod coredump;
pub mod cpu_state;
pub mod cpuid;
pub mod delivery;
pub mod descriptor;
pub mod devices;
pub mod diagnosis;
pub mod doctor;
pub mod emulation;
pub mod ending;
pub mod exceptions;
pub mod fallback;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod gdb;
pub mod history;
pub mod html;
pub mod hypervisor;
pub mod layout;
pub mod live;
pub mod loader;
pub mod narrow;
pub mod paging;
pub mod registers;
pub mod report;
#[cfg(test)]
mod robustness;
pub mod scenario;
pub mod screen;
pub mod suite;
pub mod symbols;
pub mod tap;
pub mod translate;
pub mod virt;
pub mod vm;
#[cfg(any(test, feature = "fuzzing"))]
mod walk_model;
#[cfg(any(test, feature = "fuzzing"))]
mod walk_model32;
pub mod watchdog;

/// The guest-kernel ELF that this build of vmm-host bundles (built by build.rs).
pub const GUEST_KERNEL_ELF: &str = env!("GUEST_KERNEL_ELF");
/// The same kernel wrapped in a bzImage by build.rs, for the Linux boot protocol.
pub const GUEST_KERNEL_BZIMAGE: &str = env!("GUEST_KERNEL_BZIMAGE");

/// The same kernel on a raw disk image behind build.rs's two-stage boot loader (stage1 at
/// 0x7C00, stage2 at 0x8000), whose command line is `abi::disk_image::DEFAULT_CMDLINE`.
pub const GUEST_KERNEL_DISK: &str = env!("GUEST_KERNEL_DISK");

/// A 32-bit Multiboot 1 test kernel (guest-kernel's `kernel32` binary): protected mode with
/// paging off, the PICs, the PIT at 100 Hz, the VGA screen, then a divide error.
pub const GUEST_KERNEL32: &str = env!("GUEST_KERNEL32");

/// The bundled guest-kernel in the form `boot` needs: the bzImage for Linux, the disk image
/// for a disk, else the ELF (which carries the PVH note and both Multiboot headers). Its
/// symbols are in the ELF.
pub fn bundled_kernel(boot: Option<loader::BootProtocol>) -> std::path::PathBuf {
    match boot {
        Some(loader::BootProtocol::Linux) => GUEST_KERNEL_BZIMAGE.into(),
        Some(loader::BootProtocol::Disk) => GUEST_KERNEL_DISK.into(),
        _ => GUEST_KERNEL_ELF.into(),
    }
}
