//! x86-64 4-level paging arithmetic: table indices of a virtual address, and page-table
//! entries as plain `u64` values (BoxKernel's `pte_t`).
//!
//! Entries stay raw integers on purpose: the `boxkernel-nx` variant reproduces a kernel that
//! forgets to mask the flag bits, and that bug needs the unmasked value to exist.

use core::fmt;

pub const PAGE_SIZE: u64 = 4096;
pub const ENTRIES: usize = 512;

pub const PRESENT: u64 = 1 << 0;
pub const WRITABLE: u64 = 1 << 1;
pub const USER: u64 = 1 << 2;
pub const WRITE_THROUGH: u64 = 1 << 3;
pub const NO_CACHE: u64 = 1 << 4;
pub const ACCESSED: u64 = 1 << 5;
pub const DIRTY: u64 = 1 << 6;
pub const HUGE: u64 = 1 << 7;
pub const GLOBAL: u64 = 1 << 8;
pub const NO_EXECUTE: u64 = 1 << 63;

/// Bits 12–51: the physical frame an entry points at.
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Kernel data: present and writable (BoxKernel's `VMM_FLAGS_KERNEL_RW`).
pub const KERNEL_RW: u64 = PRESENT | WRITABLE;
/// What a table entry on a user path carries, so the leaf decides the final rights.
pub const USER_TABLE: u64 = PRESENT | WRITABLE | USER;
/// The leaf Linux installs for a written anonymous page (seed 004): P RW US A D = 0x67.
pub const USER_ANON_DIRTY: u64 = PRESENT | WRITABLE | USER | ACCESSED | DIRTY;

/// The four paging levels, top first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Pml4,
    Pdpt,
    Pd,
    Pt,
}

impl Level {
    pub const ALL: [Level; 4] = [Level::Pml4, Level::Pdpt, Level::Pd, Level::Pt];

    /// The shift of the address bits that index a table of this level.
    pub const fn shift(self) -> u32 {
        match self {
            Level::Pml4 => 39,
            Level::Pdpt => 30,
            Level::Pd => 21,
            Level::Pt => 12,
        }
    }

    /// The size of what one entry of this level maps (a page, or a large page with PS).
    pub const fn span(self) -> u64 {
        1 << self.shift()
    }

    /// The level below, if any.
    pub const fn next(self) -> Option<Level> {
        match self {
            Level::Pml4 => Some(Level::Pdpt),
            Level::Pdpt => Some(Level::Pd),
            Level::Pd => Some(Level::Pt),
            Level::Pt => None,
        }
    }

    /// Whether an entry of this level may map a page itself (PS=1: 1 GiB or 2 MiB).
    pub const fn allows_large(self) -> bool {
        matches!(self, Level::Pdpt | Level::Pd)
    }

    /// Linux's names for the same levels, as seed 004 uses them.
    pub const fn linux_name(self) -> &'static str {
        match self {
            Level::Pml4 => "PGD",
            Level::Pdpt => "PUD",
            Level::Pd => "PMD",
            Level::Pt => "PTE",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Level::Pml4 => "PML4",
            Level::Pdpt => "PDPT",
            Level::Pd => "PD",
            Level::Pt => "PT",
        })
    }
}

/// The index of `va` in a table of `level`.
pub const fn index(va: u64, level: Level) -> usize {
    ((va >> level.shift()) & 0x1ff) as usize
}

/// Indices at every level, PML4 first.
pub const fn indices(va: u64) -> [usize; 4] {
    [
        index(va, Level::Pml4),
        index(va, Level::Pdpt),
        index(va, Level::Pd),
        index(va, Level::Pt),
    ]
}

pub const fn page_offset(va: u64) -> u64 {
    va & (PAGE_SIZE - 1)
}

pub const fn page_base(va: u64) -> u64 {
    va & !(PAGE_SIZE - 1)
}

/// Bits 63..48 copy bit 47.
pub const fn is_canonical(va: u64) -> bool {
    let top = va >> 47;
    top == 0 || top == 0x1_ffff
}

/// Sign-extend bit 47, the way an address built from table indices must be.
pub const fn canonical(va: u64) -> u64 {
    (((va << 16) as i64) >> 16) as u64
}

/// BoxKernel's `vmm_make_pte`.
pub const fn make_entry(phys: u64, flags: u64) -> u64 {
    (phys & ADDR_MASK) | flags
}

/// BoxKernel's `vmm_pte_to_phys`: the frame, flag bits masked off.
pub const fn entry_phys(entry: u64) -> u64 {
    entry & ADDR_MASK
}

pub const fn is_present(entry: u64) -> bool {
    entry & PRESENT != 0
}

/// The entry's flags as the short names used in logs ("P RW US A D NX").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flags(pub u64);

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(u64, &str); 10] = [
            (PRESENT, "P"),
            (WRITABLE, "RW"),
            (USER, "US"),
            (WRITE_THROUGH, "PWT"),
            (NO_CACHE, "PCD"),
            (ACCESSED, "A"),
            (DIRTY, "D"),
            (HUGE, "PS"),
            (GLOBAL, "G"),
            (NO_EXECUTE, "NX"),
        ];
        let mut first = true;
        for (bit, name) in NAMES {
            if self.0 & bit != 0 {
                if !first {
                    f.write_str(" ")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("-")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::string::ToString;

    #[test]
    fn seed_004_indices_of_the_faulting_address() {
        let cr2 = 0x716b_326c_8100;
        assert_eq!(indices(cr2), [226, 428, 403, 200]);
        assert_eq!(page_offset(cr2), 0x100);
        assert_eq!(page_base(cr2), 0x716b_326c_8000);
    }

    #[test]
    fn boxkernel_heap_is_pml4_slot_256() {
        assert_eq!(indices(0xffff_8000_0000_0000), [256, 0, 0, 0]);
        assert_eq!(indices(0xffff_8000_0008_2aa0), [256, 0, 0, 0x82]);
    }

    #[test]
    fn the_seed_004_pte_value() {
        let pte = make_entry(0x2_cad5_4000, USER_ANON_DIRTY);
        assert_eq!(pte, 0x2_cad5_4067);
        assert_eq!(entry_phys(pte), 0x2_cad5_4000);
        assert_eq!(Flags(pte).to_string(), "P RW US A D");
    }

    #[test]
    fn an_unmasked_nx_entry_is_not_a_canonical_pointer() {
        let entry = make_entry(0x10_5000, KERNEL_RW | NO_EXECUTE);
        assert_eq!(entry_phys(entry), 0x10_5000);
        assert!(!is_canonical(entry & !0xfff));
        assert_eq!(Flags(entry).to_string(), "P RW NX");
        assert_eq!(Flags(0).to_string(), "-");
    }

    #[test]
    fn canonical_sign_extends_bit_47() {
        assert_eq!(canonical(0x0000_8000_0000_0000), 0xffff_8000_0000_0000);
        assert_eq!(canonical(0x0000_7fff_ffff_f000), 0x0000_7fff_ffff_f000);
        assert!(is_canonical(0xffff_8000_0000_0000));
        assert!(!is_canonical(0x8000_0000_0010_5000));
    }
}
