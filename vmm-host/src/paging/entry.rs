//! Page-table entries and CR3 as typed values.

use super::PagingMode;
use crate::addr::{Gpa, Gva};
use mm::paging::{
    ACCESSED, ADDR_MASK as ADDRESS, DIRTY, HUGE as LARGE, NO_EXECUTE, PRESENT, USER, WRITABLE,
};
use std::fmt;

/// The paging levels, shared with the guest kernel's own paging code.
pub use mm::paging::Level;

/// The index of `gva` in a table of `level`.
pub fn index(level: Level, gva: Gva) -> usize {
    mm::paging::index(gva.raw(), level)
}

/// A page-table entry, exactly as read from guest memory.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Pte(u64);

impl Pte {
    pub const fn new(raw: u64) -> Self {
        Self(raw)
    }

    pub const fn raw(self) -> u64 {
        self.0
    }

    pub const fn present(self) -> bool {
        self.0 & PRESENT != 0
    }

    pub const fn writable(self) -> bool {
        self.0 & WRITABLE != 0
    }

    pub const fn user(self) -> bool {
        self.0 & USER != 0
    }

    pub const fn accessed(self) -> bool {
        self.0 & ACCESSED != 0
    }

    pub const fn dirty(self) -> bool {
        self.0 & DIRTY != 0
    }

    /// PS: maps a 1 GiB or 2 MiB page at the PDPT or PD level.
    pub const fn large(self) -> bool {
        self.0 & LARGE != 0
    }

    pub const fn no_execute(self) -> bool {
        self.0 & NO_EXECUTE != 0
    }

    /// The physical frame in the address field (bits 51..12), as the CPU would mask it.
    pub const fn frame(self) -> Gpa {
        Gpa::new(self.0 & ADDRESS)
    }

    /// The frame number, as Linux's pagemap and seed 004 print it.
    pub const fn pfn(self) -> u64 {
        (self.0 & ADDRESS) >> 12
    }

    /// Bits that must be zero in this entry at `level`; non-zero ones make a present entry
    /// fault with RSVD set.
    pub fn reserved_bits(self, level: Level, mode: PagingMode) -> u64 {
        let mut reserved = mode.reserved_address_bits();
        if !mode.nxe {
            reserved |= NO_EXECUTE;
        }
        match level {
            Level::Pml4 => reserved |= LARGE,
            // Without Page1GB, PS itself is reserved in a PDPT entry.
            Level::Pdpt if self.large() && !mode.gib_pages => reserved |= LARGE,
            Level::Pdpt if self.large() => reserved |= 0x3fff_e000, // bits 29..13 of a 1 GiB page
            Level::Pd if self.large() => reserved |= 0x001f_e000,   // bits 20..13 of a 2 MiB page
            _ => {}
        }
        self.0 & reserved
    }

    /// Whether this entry maps a page rather than pointing at a table.
    pub const fn maps_page(self, level: Level) -> bool {
        matches!(level, Level::Pt) || (level.allows_large() && self.large())
    }
}

impl fmt::Debug for Pte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pte({:#018x} {self})", self.0)
    }
}

/// The flags in words, as the seed's walks print them: "P RW US A D NX".
impl fmt::Display for Pte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.present() {
            return f.write_str("not present");
        }
        write!(f, "{}", mm::paging::Flags(self.0))
    }
}

/// CR3: where the PML4 is (PCID and the cache bits aside).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cr3(u64);

impl Cr3 {
    pub const fn new(raw: u64) -> Self {
        Self(raw)
    }

    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The PML4's physical address.
    pub const fn pml4(self) -> Gpa {
        Gpa::new(self.0 & ADDRESS)
    }
}

impl fmt::Debug for Cr3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cr3({:#x})", self.0)
    }
}

impl fmt::Display for Cr3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}
