//! Page-table entries and CR3 as typed values.

use super::{Format, Level, PagingMode};
use crate::addr::Gpa;
use mm::paging::{
    ACCESSED, ADDR_MASK as ADDRESS, DIRTY, HUGE as LARGE, NO_EXECUTE, PRESENT, USER, WRITABLE,
};
use std::fmt;

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

    /// Bits that must be zero in this entry at `level` of `mode`'s format; non-zero ones make
    /// a present entry fault with RSVD set.
    pub fn reserved_bits(self, level: Level, mode: PagingMode) -> u64 {
        let reserved = match mode.format {
            Format::Off => 0,
            Format::TwoLevel { pse } => self.reserved_in_two_level(level, pse, mode),
            Format::Pae if level == Level::Pdpt => {
                // A PDPTE has no rights and no NX: bits 2:1, 8:5 and 63 are reserved.
                mode.reserved_address_bits() | NO_EXECUTE | 0x1e6
            }
            Format::Pae | Format::FourLevel | Format::FiveLevel => {
                self.reserved_in_long_entry(level, mode)
            }
        };
        self.0 & reserved
    }

    /// 32-bit paging reserves bits only in a directory entry that maps 4 MiB: bit 21 and
    /// the PSE-36 address bits above MAXPHYADDR (all of 21:13 without PSE-36).
    fn reserved_in_two_level(self, level: Level, pse: bool, mode: PagingMode) -> u64 {
        if level != Level::Pd || !pse || !self.large() {
            return 0;
        }
        if !mode.pse36 {
            return 0x3f_e000;
        }
        // Bits 21:(M-19) with M = min(MAXPHYADDR, 40).
        let m = u32::from(mode.max_phys_addr.clamp(32, 40));
        0x3f_ffff & !((1u64 << (m - 19)) - 1)
    }

    /// The 8-byte entries of PAE, 4- and 5-level paging.
    fn reserved_in_long_entry(self, level: Level, mode: PagingMode) -> u64 {
        let mut reserved = mode.reserved_address_bits();
        if !mode.nxe {
            reserved |= NO_EXECUTE;
        }
        match level {
            Level::Pml5 | Level::Pml4 => reserved |= LARGE,
            // Without Page1GB, PS itself is reserved in a PDPT entry.
            Level::Pdpt if self.large() && !mode.gib_pages => reserved |= LARGE,
            Level::Pdpt if self.large() => reserved |= 0x3fff_e000, // bits 29..13 of a 1 GiB page
            Level::Pd if self.large() => reserved |= 0x001f_e000,   // bits 20..13 of a 2 MiB page
            _ => {}
        }
        reserved
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
