//! The paging formats an x86 CPU translates linear addresses with, and what each makes of an
//! address and of an entry: which levels there are, how many entries a table has and how wide
//! they are, which address bits index each level, and how much one entry maps.
//!
//! Intel names the tables the same way in every format (a 32-bit kernel's "page directory" is
//! the PD of 4-level paging), so one `Level` serves all of them; what differs lives here.

use crate::addr::{Gpa, Gva};
use mm::paging::{ADDR_MASK, HUGE};
use std::fmt;

/// A paging level, top first. Not every format has every level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// The fifth level (CR4.LA57).
    Pml5,
    Pml4,
    Pdpt,
    Pd,
    Pt,
}

impl Level {
    /// The levels of 4-level paging, top first.
    pub const ALL: [Level; 4] = [Level::Pml4, Level::Pdpt, Level::Pd, Level::Pt];

    /// What one entry of this level maps in 4- and 5-level paging.
    pub const fn span(self) -> u64 {
        1 << match self {
            Level::Pml5 => 48,
            Level::Pml4 => 39,
            Level::Pdpt => 30,
            Level::Pd => 21,
            Level::Pt => 12,
        }
    }

    /// Linux's names for the 4-level tables, as seed 004 uses them.
    pub const fn linux_name(self) -> &'static str {
        Format::FourLevel.linux_name(self)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Level::Pml5 => "PML5",
            Level::Pml4 => "PML4",
            Level::Pdpt => "PDPT",
            Level::Pd => "PD",
            Level::Pt => "PT",
        })
    }
}

/// How the CPU translates: chosen by CR0.PG, CR4.PAE, CR4.PSE, CR4.LA57 and EFER.LME.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// CR0.PG clear: the linear address is the physical one.
    Off,
    /// 32-bit paging: a page directory and page tables of 1024 4-byte entries; with CR4.PSE a
    /// directory entry with PS maps a 4 MiB page.
    TwoLevel { pse: bool },
    /// PAE paging: four PDPTEs the CPU loads when CR3 is written, then a page directory and
    /// page tables of 512 8-byte entries; PS in a directory entry maps 2 MiB.
    Pae,
    /// 4-level paging, in long mode.
    FourLevel,
    /// 5-level paging, in long mode with CR4.LA57.
    FiveLevel,
}

const CR0_PG: u64 = 1 << 31;
const CR4_PSE: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;
const EFER_LME: u64 = 1 << 8;

impl Format {
    /// The format a CPU with these registers translates with.
    pub const fn of_registers(cr0: u64, cr4: u64, efer: u64) -> Self {
        if cr0 & CR0_PG == 0 {
            Format::Off
        } else if efer & EFER_LME != 0 {
            if cr4 & CR4_LA57 != 0 {
                Format::FiveLevel
            } else {
                Format::FourLevel
            }
        } else if cr4 & CR4_PAE != 0 {
            Format::Pae
        } else {
            Format::TwoLevel {
                pse: cr4 & CR4_PSE != 0,
            }
        }
    }

    /// The levels a walk reads, top first.
    pub const fn levels(self) -> &'static [Level] {
        match self {
            Format::Off => &[],
            Format::TwoLevel { .. } => &[Level::Pd, Level::Pt],
            Format::Pae => &[Level::Pdpt, Level::Pd, Level::Pt],
            Format::FourLevel => &Level::ALL,
            Format::FiveLevel => &[Level::Pml5, Level::Pml4, Level::Pdpt, Level::Pd, Level::Pt],
        }
    }

    /// The level below `level` in this format.
    pub fn next(self, level: Level) -> Option<Level> {
        let levels = self.levels();
        let at = levels.iter().position(|&l| l == level)?;
        levels.get(at + 1).copied()
    }

    /// Whether linear addresses are 32 bits wide (paging off, 32-bit and PAE paging).
    pub const fn is_32_bit(self) -> bool {
        matches!(self, Format::Off | Format::TwoLevel { .. } | Format::Pae)
    }

    /// The width of a table entry in bytes.
    pub const fn entry_size(self) -> u64 {
        match self {
            Format::TwoLevel { .. } => 4,
            _ => 8,
        }
    }

    /// How many entries a table of `level` holds.
    pub const fn entries(self, level: Level) -> usize {
        match (self, level) {
            (Format::TwoLevel { .. }, _) => 1024,
            (Format::Pae, Level::Pdpt) => 4,
            _ => 512,
        }
    }

    /// The lowest linear-address bit that indexes a table of `level`.
    const fn shift(self, level: Level) -> u32 {
        match (self, level) {
            (Format::TwoLevel { .. }, Level::Pd) => 22,
            (_, level) => level.span().trailing_zeros(),
        }
    }

    /// What one entry of `level` maps: a page, or with PS a large page.
    pub const fn span(self, level: Level) -> u64 {
        1 << self.shift(level)
    }

    /// The index of `gva` in a table of `level`.
    pub const fn index(self, level: Level, gva: Gva) -> usize {
        crate::narrow::to_usize(gva.raw() >> self.shift(level)) & (self.entries(level) - 1)
    }

    /// Whether the CPU can translate `gva` at all: 32 bits wide in the 32-bit formats;
    /// canonical (the top bits copy bit 47, or bit 56 with 5 levels) in long mode.
    pub const fn is_canonical(self, gva: Gva) -> bool {
        let raw = gva.raw();
        match self {
            Format::Off | Format::TwoLevel { .. } | Format::Pae => raw >> 32 == 0,
            Format::FourLevel => gva.is_canonical(),
            Format::FiveLevel => {
                let top = raw >> 56;
                top == 0 || top == 0xff
            }
        }
    }

    /// Where CR3 says the top table is.
    pub const fn top_table(self, cr3: u64) -> Gpa {
        Gpa::new(match self {
            Format::TwoLevel { .. } => cr3 & 0xffff_f000,
            // The PDPT is 32 bytes, 32-byte aligned, below 4 GiB.
            Format::Pae => cr3 & 0xffff_ffe0,
            _ => cr3 & ADDR_MASK,
        })
    }

    /// Whether `raw` at `level` maps a page rather than pointing at a table.
    pub const fn maps_page(self, level: Level, raw: u64) -> bool {
        let large = raw & HUGE != 0;
        match (self, level) {
            (_, Level::Pt) => true,
            (Format::TwoLevel { pse }, Level::Pd) => pse && large,
            (Format::Pae, Level::Pd) => large,
            (Format::FourLevel | Format::FiveLevel, Level::Pdpt | Level::Pd) => large,
            _ => false,
        }
    }

    /// The table or page `raw` at `level` points at (a large page's base, PSE-36 bits included).
    pub const fn frame(self, level: Level, raw: u64) -> Gpa {
        let large = self.maps_page(level, raw) && !matches!(level, Level::Pt);
        Gpa::new(match self {
            // A 4 MiB page: bits 31:22 in place, bits 39:32 from PDE bits 20:13 (PSE-36).
            Format::TwoLevel { .. } if large => (raw & 0xffc0_0000) | ((raw & 0x1f_e000) << 19),
            Format::TwoLevel { .. } => raw & 0xffff_f000,
            _ if large => raw & ADDR_MASK & !(self.span(level) - 1),
            _ => raw & ADDR_MASK,
        })
    }

    /// Linux's name for the table at `level` in this format: the top is always the PGD, and the
    /// folded levels are missing (PGD → PTE with 2 levels, PGD → PMD → PTE with PAE).
    pub const fn linux_name(self, level: Level) -> &'static str {
        match (self, level) {
            (Format::TwoLevel { .. }, Level::Pd) | (Format::Pae, Level::Pdpt) => "PGD",
            (Format::FiveLevel, Level::Pml5) => "PGD",
            (Format::FiveLevel, Level::Pml4) => "P4D",
            (_, Level::Pml5) => "PML5",
            (_, Level::Pml4) => "PGD",
            (_, Level::Pdpt) => "PUD",
            (_, Level::Pd) => "PMD",
            (_, Level::Pt) => "PTE",
        }
    }

    /// Where kernel space starts, by convention: long mode splits the canonical halves;
    /// 32-bit kernels (Linux's default 3G/1G split, most hobby kernels) live at 3 GiB.
    pub const fn kernel_space(self) -> u64 {
        match self {
            Format::FiveLevel => 0xff00_0000_0000_0000,
            Format::FourLevel => 0xffff_8000_0000_0000,
            Format::Off | Format::TwoLevel { .. } | Format::Pae => 0xc000_0000,
        }
    }

    /// A short stable name for JSON records and HTML.
    pub const fn key(self) -> &'static str {
        match self {
            Format::Off => "off",
            Format::TwoLevel { pse: false } => "32-bit",
            Format::TwoLevel { pse: true } => "32-bit-pse",
            Format::Pae => "pae",
            Format::FourLevel => "4-level",
            Format::FiveLevel => "5-level",
        }
    }

    /// The format in words, as a report's header names it.
    pub const fn describe(self) -> &'static str {
        match self {
            Format::Off => "paging off",
            Format::TwoLevel { pse: false } => "32-bit paging (2 levels, 4 KiB pages)",
            Format::TwoLevel { pse: true } => "32-bit paging (2 levels, 4 KiB and 4 MiB pages)",
            Format::Pae => "PAE paging (3 levels)",
            Format::FourLevel => "4-level paging",
            Format::FiveLevel => "5-level paging",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOURNEY: Gva = Gva::new(0x716b_326c_8100);

    #[test]
    fn registers_choose_the_format() {
        let pg = CR0_PG | 1;
        assert_eq!(Format::of_registers(1, CR4_PAE, EFER_LME), Format::Off);
        assert_eq!(
            Format::of_registers(pg, 0, 0),
            Format::TwoLevel { pse: false }
        );
        assert_eq!(
            Format::of_registers(pg, CR4_PSE, 0),
            Format::TwoLevel { pse: true }
        );
        // PAE wins over PSE: the PS bit then means 2 MiB.
        assert_eq!(Format::of_registers(pg, CR4_PAE | CR4_PSE, 0), Format::Pae);
        assert_eq!(
            Format::of_registers(pg, CR4_PAE, EFER_LME | 0x400),
            Format::FourLevel
        );
        assert_eq!(
            Format::of_registers(pg, CR4_PAE | CR4_LA57, EFER_LME),
            Format::FiveLevel
        );
    }

    #[test]
    fn each_format_indexes_its_own_bits() {
        let two = Format::TwoLevel { pse: true };
        let at = Gva::new(0xc03f_f123);
        assert_eq!(two.index(Level::Pd, at), 0x300);
        assert_eq!(two.index(Level::Pt, at), 0x3ff);
        assert_eq!(two.span(Level::Pd), 4 << 20);
        let at = Gva::new(0xc060_1123);
        assert_eq!(Format::Pae.index(Level::Pdpt, at), 3);
        assert_eq!(Format::Pae.index(Level::Pd, at), 3);
        assert_eq!(Format::Pae.index(Level::Pt, at), 1);
        let indices: Vec<usize> = Format::FourLevel
            .levels()
            .iter()
            .map(|&l| Format::FourLevel.index(l, JOURNEY))
            .collect();
        assert_eq!(indices, [226, 428, 403, 200]);
        let la57 = Gva::new(0xff7f_8000_0000_0000);
        assert_eq!(Format::FiveLevel.index(Level::Pml5, la57), 0x17f);
        assert_eq!(Format::FiveLevel.span(Level::Pml5), 1 << 48);
    }

    #[test]
    fn canonical_depends_on_the_linear_width() {
        assert!(Format::Pae.is_canonical(Gva::new(0xffff_ffff)));
        assert!(!Format::Pae.is_canonical(Gva::new(0x1_0000_0000)));
        let la57 = Gva::new(0xff7f_8000_0000_0000);
        assert!(Format::FiveLevel.is_canonical(la57));
        assert!(!Format::FourLevel.is_canonical(la57));
        assert!(!Format::FiveLevel.is_canonical(Gva::new(0x0100_0000_0000_0000)));
    }

    #[test]
    fn a_4_mib_page_takes_bits_39_to_32_from_pde_bits_20_to_13() {
        let two = Format::TwoLevel { pse: true };
        let pde = 0x0840_0083 | (0x12 << 13);
        assert!(two.maps_page(Level::Pd, pde));
        assert_eq!(
            two.frame(Level::Pd, pde),
            Gpa::new(0x12_0840_0000 & !0x3f_ffff)
        );
        // Without CR4.PSE the same entry points at a page table.
        let plain = Format::TwoLevel { pse: false };
        assert!(!plain.maps_page(Level::Pd, pde));
        assert_eq!(plain.frame(Level::Pd, pde), Gpa::new(pde & 0xffff_f000));
    }

    #[test]
    fn the_next_level_and_linux_names_follow_the_format() {
        assert_eq!(Format::Pae.next(Level::Pdpt), Some(Level::Pd));
        assert_eq!(Format::TwoLevel { pse: false }.next(Level::Pt), None);
        assert_eq!(Format::FiveLevel.next(Level::Pml5), Some(Level::Pml4));
        let names =
            |f: Format| -> Vec<&str> { f.levels().iter().map(|&l| f.linux_name(l)).collect() };
        assert_eq!(names(Format::TwoLevel { pse: true }), ["PGD", "PTE"]);
        assert_eq!(names(Format::Pae), ["PGD", "PMD", "PTE"]);
        assert_eq!(names(Format::FourLevel), ["PGD", "PUD", "PMD", "PTE"]);
        assert_eq!(
            names(Format::FiveLevel),
            ["PGD", "P4D", "PUD", "PMD", "PTE"]
        );
        assert_eq!(Format::Pae.entries(Level::Pdpt), 4);
        // The JSON records' "paging" values.
        let keys: Vec<&str> = [
            Format::Off,
            Format::TwoLevel { pse: false },
            Format::TwoLevel { pse: true },
            Format::Pae,
            Format::FourLevel,
            Format::FiveLevel,
        ]
        .map(Format::key)
        .to_vec();
        assert_eq!(
            keys,
            ["off", "32-bit", "32-bit-pse", "pae", "4-level", "5-level"]
        );
        assert_eq!(Format::TwoLevel { pse: true }.entry_size(), 4);
    }
}
