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

/// What decides how entries are read: the physical-address width and whether NX exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagingMode {
    /// CPUID 0x80000008 EAX[7:0]: physical-address bits above it are reserved in entries.
    pub max_phys_addr: u8,
    /// EFER.NXE: without it bit 63 of an entry is reserved.
    pub nxe: bool,
}

/// EFER.NXE: entries may carry NX.
const EFER_NXE: u64 = 1 << 11;

impl PagingMode {
    /// The mode a vCPU with this EFER and physical-address width walks its tables in.
    pub fn new(max_phys_addr: u8, efer: u64) -> Self {
        Self {
            max_phys_addr,
            nxe: efer & EFER_NXE != 0,
        }
    }

    /// Bits 51..MAXPHYADDR of an entry's address field, which must be zero.
    pub fn reserved_address_bits(self) -> u64 {
        let width = self.max_phys_addr.clamp(32, 52);
        let address_field = 0x000f_ffff_ffff_f000u64;
        address_field & !((1u64 << width) - 1)
    }
}
