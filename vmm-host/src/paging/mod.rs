//! x86 paging as the host sees it, in every format (32-bit, PAE, 4- and 5-level): typed
//! entries, CR3, and a walker that reads the guest's tables from guest-physical memory and says
//! where and why a walk stops.
//!
//! Nothing here trusts the guest: an entry is a value read from guest RAM, and every value a
//! guest can write (loops, frames outside RAM, reserved bits, garbage) is a result, never a
//! panic.

mod access;
mod audit;
mod entry;
mod format;
mod synthetic;
mod walk;

#[cfg(test)]
mod every_mode;

pub use access::{Access, Denial};
pub use audit::{
    Alias, Audit, AuditOptions, DirectMap, Finding, FindingKind, MappedRange, TableFrame,
    TableFrames, audit, audit_with,
};
pub use entry::{Cr3, Pte};
pub use format::{Format, Level};
pub use synthetic::{SyntheticMemory, identity_tree, identity_tree_4k};
pub use walk::{Mapping, PhysMemory, Step, Walk, WalkEnd, walk};
use x86_64::registers::model_specific::EferFlags;

/// What the guest's CPUID says about paging, fixed for the life of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CpuPaging {
    /// CPUID 0x80000008 EAX[7:0]: physical-address bits above it are reserved in entries.
    pub max_phys_addr: u8,
    /// CPUID 0x80000001 EDX[26] (Page1GB): without it, PS in a PDPT entry is reserved and
    /// the walk faults there instead of mapping 1 GiB.
    pub gib_pages: bool,
    /// CPUID 1 EDX[17] (PSE-36): a 4 MiB page of 32-bit paging may lie above 4 GiB.
    pub pse36: bool,
}

impl CpuPaging {
    /// A CPU with this physical-address width, 1 GiB pages and PSE-36 (synthetic tests,
    /// benches).
    pub const fn with_phys_bits(max_phys_addr: u8) -> Self {
        Self {
            max_phys_addr,
            gib_pages: true,
            pse36: true,
        }
    }
}

/// What decides how entries are read and what rights they grant: the CPU's paging features
/// and the control-register bits a walk depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagingMode {
    /// CPUID 0x80000008 EAX[7:0]: physical-address bits above it are reserved in entries.
    pub max_phys_addr: u8,
    /// EFER.NXE: without it bit 63 of an entry is reserved.
    pub nxe: bool,
    /// Page1GB: without it PS in a PDPT entry is reserved.
    pub gib_pages: bool,
    /// PSE-36: bits 20:13 of a 4 MiB page's entry are address bits 39:32.
    pub pse36: bool,
    /// The table format, from CR0.PG, CR4 and EFER.
    pub format: Format,
    /// The PDPTEs a PAE CPU loaded at its last CR3 write, where KVM says what they are. The
    /// CPU walks through these, not through the PDPT in memory.
    pub loaded_pdptes: Option<[u64; 4]>,
    /// CR0.WP, CR4.SMEP and CR4.SMAP: what a supervisor access may do with user and
    /// read-only pages.
    pub protection: Protection,
}

/// The control bits that decide whether the kernel itself may use a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Protection {
    /// CR0.WP: the kernel's writes to read-only pages fault too.
    pub write_protect: bool,
    /// CR4.SMEP: the kernel may not execute user pages.
    pub smep: bool,
    /// CR4.SMAP: the kernel may not read or write user pages (unless EFLAGS.AC is set).
    pub smap: bool,
}

impl Protection {
    /// The bits of these CR0 and CR4.
    pub const fn of_registers(cr0: u64, cr4: u64) -> Self {
        Self {
            write_protect: cr0 & (1 << 16) != 0,
            smep: cr4 & (1 << 20) != 0,
            smap: cr4 & (1 << 21) != 0,
        }
    }
}

impl PagingMode {
    /// 4-level paging on a vCPU with this EFER and these features (long mode; tests).
    pub const fn new(cpu: CpuPaging, efer: u64) -> Self {
        Self {
            max_phys_addr: cpu.max_phys_addr,
            nxe: efer & EferFlags::NO_EXECUTE_ENABLE.bits() != 0,
            gib_pages: cpu.gib_pages,
            pse36: cpu.pse36,
            format: Format::FourLevel,
            loaded_pdptes: None,
            protection: Protection::of_registers(0, 0),
        }
    }

    /// The mode of a vCPU with these CR0, CR4 and EFER.
    pub fn of_vcpu(cpu: CpuPaging, cr0: u64, cr4: u64, efer: u64) -> Self {
        Self {
            format: Format::of_registers(cr0, cr4, efer),
            protection: Protection::of_registers(cr0, cr4),
            ..Self::new(cpu, efer)
        }
    }

    /// The same mode in another format (tests, and walks of tables a guest is about to load).
    pub const fn with_format(self, format: Format) -> Self {
        Self { format, ..self }
    }

    /// Whether CR0.PG is set.
    pub const fn enabled(self) -> bool {
        !matches!(self.format, Format::Off)
    }

    /// Bits 51..MAXPHYADDR of an entry's address field, which must be zero.
    pub fn reserved_address_bits(self) -> u64 {
        let width = self.max_phys_addr.clamp(32, 52);
        let address_field = 0x000f_ffff_ffff_f000u64;
        address_field & !((1u64 << width) - 1)
    }
}
