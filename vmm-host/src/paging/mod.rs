//! x86-64 4-level paging as the host sees it: typed entries, CR3, and a walker that reads the
//! guest's tables from guest-physical memory and says where and why a walk stops.
//!
//! Nothing here trusts the guest: an entry is a value read from guest RAM, and every value a
//! guest can write (loops, frames outside RAM, reserved bits, garbage) is a result, never a
//! panic.

mod audit;
mod entry;
mod synthetic;
mod walk;

pub use audit::{
    Alias, Audit, AuditOptions, DirectMap, Finding, FindingKind, MappedRange, TableFrame,
    TableFrames, audit, audit_with,
};
pub use entry::{Cr3, Level, Pte, index};
pub use synthetic::{SyntheticMemory, identity_tree_4k};
pub use walk::{Mapping, PhysMemory, Step, Walk, WalkEnd, walk};
use x86_64::registers::model_specific::EferFlags;

/// What the guest's CPUID says about paging, fixed for the life of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuPaging {
    /// CPUID 0x80000008 EAX[7:0]: physical-address bits above it are reserved in entries.
    pub max_phys_addr: u8,
    /// CPUID 0x80000001 EDX[26] (Page1GB): without it, PS in a PDPT entry is reserved and
    /// the walk faults there instead of mapping 1 GiB.
    pub gib_pages: bool,
}

impl CpuPaging {
    /// A CPU with this physical-address width and 1 GiB pages (synthetic tests, benches).
    pub const fn with_phys_bits(max_phys_addr: u8) -> Self {
        Self {
            max_phys_addr,
            gib_pages: true,
        }
    }
}

/// What decides how entries are read: the CPU's paging features and whether NX is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagingMode {
    /// CPUID 0x80000008 EAX[7:0]: physical-address bits above it are reserved in entries.
    pub max_phys_addr: u8,
    /// EFER.NXE: without it bit 63 of an entry is reserved.
    pub nxe: bool,
    /// Page1GB: without it PS in a PDPT entry is reserved.
    pub gib_pages: bool,
    /// CR0.PG: off, a linear address is the physical one (32-bit protected mode before a
    /// kernel turns paging on) and a walk reads no table.
    pub enabled: bool,
}

impl PagingMode {
    /// The mode a vCPU with this EFER and physical-address width walks its tables in, paging
    /// on (long mode always has it).
    pub fn new(cpu: CpuPaging, efer: u64) -> Self {
        Self {
            max_phys_addr: cpu.max_phys_addr,
            nxe: efer & EferFlags::NO_EXECUTE_ENABLE.bits() != 0,
            gib_pages: cpu.gib_pages,
            enabled: true,
        }
    }

    /// The mode of a vCPU with these CR0 and EFER.
    pub fn of_vcpu(cpu: CpuPaging, cr0: u64, efer: u64) -> Self {
        Self {
            enabled: cr0 & x86_64::registers::control::Cr0Flags::PAGING.bits() != 0,
            ..Self::new(cpu, efer)
        }
    }

    /// Bits 51..MAXPHYADDR of an entry's address field, which must be zero.
    pub fn reserved_address_bits(self) -> u64 {
        let width = self.max_phys_addr.clamp(32, 52);
        let address_field = 0x000f_ffff_ffff_f000u64;
        address_field & !((1u64 << width) - 1)
    }
}
