//! The guest's boot layout, modelled on BoxKernel's `stage2.asm` (seed 000, section 1.1).
//!
//! The host places its PVH structures below [`KERNEL_LOAD`] and checks that a kernel image
//! does not overlap them; the guest's 32-bit entry builds the boot page tables and the E820
//! copy at the addresses below.

/// Where the E820-style memory map is copied by the guest (BoxKernel: "E820 memory map").
pub const E820_MAP: u64 = 0x500;
/// Room for E820 entries at [`E820_MAP`] before the next structure (20 bytes each).
pub const E820_MAX_ENTRIES: usize = 64;

/// Where the host writes `hvm_start_info` (PVH); EBX points here at entry.
pub const START_INFO: u64 = 0x6000;
/// Where the host writes the PVH memory map table that `hvm_start_info` points to.
pub const MEMMAP_TABLE: u64 = 0x7000;
/// Where the host writes the NUL-terminated kernel command line.
pub const CMDLINE: u64 = 0x9000;
/// Longest command line the host accepts, terminating NUL included.
pub const CMDLINE_MAX: usize = 0x1000;

/// The kernel image is linked and loaded here.
///
/// BoxKernel loads at 0x10000, but QEMU's firmware (SeaBIOS 1.16) zeroes that area before it
/// enters a PVH kernel, and agreement with QEMU matters more than the exact address: the image
/// moved to 1 MiB, the rest of the layout is BoxKernel's.
pub const KERNEL_LOAD: u64 = 0x10_0000;

/// Boot page tables: PML4, PDPT, PD and a spare PT, 16 KiB in all.
pub const BOOT_PAGE_TABLES: u64 = 0x50_0000;
/// Size of the boot page-table area.
pub const BOOT_PAGE_TABLES_SIZE: u64 = 0x4000;
/// The boot stack grows down from here.
pub const BOOT_STACK_TOP: u64 = 0x51_0000;
/// Extent of the boot identity map (2 MiB pages).
pub const BOOT_IDENTITY_MAP: u64 = 32 << 20;

/// Lowest RAM a kernel image may end at: the boot page tables start here.
pub const KERNEL_IMAGE_LIMIT: u64 = BOOT_PAGE_TABLES;

/// Smallest guest RAM the boot layout fits in: image, page tables, stack, and the
/// 32 MiB that the boot page tables identity-map.
pub const MIN_RAM: u64 = BOOT_IDENTITY_MAP;

/// E820 region types (the ACPI numbering; PVH's memmap uses the same values).
pub mod e820 {
    pub const RAM: u32 = 1;
    pub const RESERVED: u32 = 2;
    pub const ACPI: u32 = 3;
    pub const NVS: u32 = 4;
    pub const UNUSABLE: u32 = 5;

    /// A short lower-case name for logs.
    pub const fn type_name(kind: u32) -> &'static str {
        match kind {
            RAM => "usable",
            RESERVED => "reserved",
            ACPI => "ACPI data",
            NVS => "ACPI NVS",
            UNUSABLE => "unusable",
            _ => "unknown",
        }
    }
}

/// guest-kernel's demand-paged kernel heap (seed 000): the host labels it in its reports.
pub const KERNEL_HEAP_BASE: u64 = 0xffff_8000_0000_0000;
pub const KERNEL_HEAP_SIZE: u64 = 1 << 30;
