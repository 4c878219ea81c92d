//! One walk from CR3 down to a page, or to the reason there is none.

use super::{Cr3, Format, Level, PagingMode, Pte};
use crate::addr::{Gpa, Gva};
use std::fmt;
use vm_memory::{Bytes, GuestMemoryMmap};

/// Guest-physical memory the walker reads entries from.
pub trait PhysMemory {
    /// The little-endian u64 at `gpa`, or `None` where there is no guest RAM.
    fn read_u64(&self, gpa: Gpa) -> Option<u64>;

    /// The little-endian u32 at a 4-byte aligned `gpa` (an entry of 32-bit paging). Guest RAM
    /// comes in whole pages, so the aligned u64 around it is RAM exactly when it is.
    fn read_u32(&self, gpa: Gpa) -> Option<u32> {
        let word = self.read_u64(Gpa::new(gpa.raw() & !7))?;
        let shift = (gpa.raw() & 4) * 8;
        Some(crate::narrow::low_u32(word >> shift))
    }

    /// The 512 entries of the table at `table` into `out`; false where any of it is not guest
    /// RAM (then `out` holds no meaning). Whole-tree audits read every table this way, so a
    /// memory that can copy 4 KiB at once should say so here.
    fn read_table(&self, table: Gpa, out: &mut [u64; 512]) -> bool {
        for (offset, slot) in (0..).step_by(8).zip(out.iter_mut()) {
            match table.checked_add(offset).and_then(|gpa| self.read_u64(gpa)) {
                Some(value) => *slot = value,
                None => return false,
            }
        }
        true
    }
}

impl PhysMemory for GuestMemoryMmap {
    fn read_u64(&self, gpa: Gpa) -> Option<u64> {
        self.read_obj::<u64>(gpa.guest_address()).ok()
    }

    fn read_table(&self, table: Gpa, out: &mut [u64; 512]) -> bool {
        let mut bytes = [0u8; 4096];
        if self.read_slice(&mut bytes, table.guest_address()).is_err() {
            return false;
        }
        for (slot, chunk) in out.iter_mut().zip(bytes.as_chunks::<8>().0) {
            *slot = u64::from_le_bytes(*chunk);
        }
        true
    }
}

/// One entry the walk read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub level: Level,
    pub index: usize,
    /// Physical address of the table the entry is in.
    pub table: Gpa,
    /// The entry: 32-bit paging's 4-byte entries are zero-extended.
    pub entry: Pte,
    /// The entry's width in bytes: 4 in 32-bit paging, 8 elsewhere.
    pub entry_size: u8,
}

impl Step {
    /// Where the entry itself lives.
    pub fn entry_address(&self) -> Gpa {
        Gpa::new(self.table.raw() + self.index as u64 * u64::from(self.entry_size))
    }
}

/// A successful translation with the rights every level grants together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub gpa: Gpa,
    pub page_size: u64,
    pub writable: bool,
    pub user: bool,
    pub executable: bool,
}

/// Where and why the walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkEnd {
    Mapped(Mapping),
    /// Bits 63..47 differ: no walk happens; the CPU raises #GP (or #SS).
    NonCanonical,
    /// The entry at `level` has P=0.
    NotPresent {
        level: Level,
    },
    /// The entry at `level` is present with reserved bits set (a #PF with RSVD).
    ReservedBits {
        level: Level,
        bits: u64,
    },
    /// The table of `level` would be at `table`, which is not guest RAM.
    TableOutsideRam {
        level: Level,
        table: Gpa,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk {
    pub gva: Gva,
    pub cr3: Cr3,
    /// The format the tables were read in.
    pub format: Format,
    pub steps: Vec<Step>,
    pub end: WalkEnd,
    /// PAE only: the PDPTE in memory, when it differs from the one the CPU loaded at the last
    /// CR3 write (the walk used the loaded one, as the CPU does).
    pub pdpte_in_memory: Option<Pte>,
}

impl Walk {
    pub fn translation(&self) -> Option<Gpa> {
        match self.end {
            WalkEnd::Mapped(m) => Some(m.gpa),
            _ => None,
        }
    }

    /// The level whose entry ended an unsuccessful walk.
    pub fn stopped_at(&self) -> Option<Level> {
        match self.end {
            WalkEnd::NotPresent { level }
            | WalkEnd::ReservedBits { level, .. }
            | WalkEnd::TableOutsideRam { level, .. } => Some(level),
            WalkEnd::Mapped(_) | WalkEnd::NonCanonical => None,
        }
    }
}

/// Walk `gva` through the tables under `cr3` in `mode`'s format, reading entries from `mem`.
/// At most one read per level; a table that points back at itself only makes a strange but
/// finite walk.
pub fn walk(mem: &impl PhysMemory, mode: PagingMode, cr3: Cr3, gva: Gva) -> Walk {
    let mut walk = Walk {
        gva,
        cr3,
        format: mode.format,
        steps: Vec::with_capacity(mode.format.levels().len()),
        end: WalkEnd::NonCanonical,
        pdpte_in_memory: None,
    };
    walk.end = walk_into(mem, mode, &mut walk);
    walk
}

fn walk_into(mem: &impl PhysMemory, mode: PagingMode, walk: &mut Walk) -> WalkEnd {
    let (format, gva) = (mode.format, walk.gva);
    if format == Format::Off {
        // Paging off: the linear address is the physical one, 32 bits wide, all rights.
        return WalkEnd::Mapped(Mapping {
            gpa: Gpa::new(gva.raw() & 0xffff_ffff),
            page_size: 0x1000,
            writable: true,
            user: true,
            executable: true,
        });
    }
    if !format.is_canonical(gva) {
        return WalkEnd::NonCanonical;
    }
    let mut rights = Rights::ALL;
    let mut table = format.top_table(walk.cr3.raw());
    for &level in format.levels() {
        let slot = format.index(level, gva);
        let Some(entry) = read_entry(mem, mode, walk, level, table, slot) else {
            return WalkEnd::TableOutsideRam { level, table };
        };
        if !entry.present() {
            return WalkEnd::NotPresent { level };
        }
        let bits = entry.reserved_bits(level, mode);
        if bits != 0 {
            return WalkEnd::ReservedBits { level, bits };
        }
        rights.narrow(format, level, entry, mode.nxe);
        if format.maps_page(level, entry.raw()) {
            let size = format.span(level);
            let base = format.frame(level, entry.raw()).raw();
            return WalkEnd::Mapped(Mapping {
                gpa: Gpa::new(base | (gva.raw() & (size - 1))),
                page_size: size,
                writable: rights.writable,
                user: rights.user,
                executable: rights.executable,
            });
        }
        table = format.frame(level, entry.raw());
    }
    unreachable!("every format's last level maps a page")
}

/// Read the entry `slot` of the table at `table` and record the step; PAE's PDPTEs come from
/// the CPU's registers where they are known. `None` where the entry is not guest RAM.
fn read_entry(
    mem: &impl PhysMemory,
    mode: PagingMode,
    walk: &mut Walk,
    level: Level,
    table: Gpa,
    slot: usize,
) -> Option<Pte> {
    let size = mode.format.entry_size();
    let at = table.checked_add(slot as u64 * size)?;
    let in_memory = if size == 4 {
        mem.read_u32(at).map(u64::from)
    } else {
        mem.read_u64(at)
    };
    let loaded = match (mode.format, level, mode.loaded_pdptes) {
        (Format::Pae, Level::Pdpt, Some(pdptes)) => Some(pdptes[slot]),
        _ => None,
    };
    if let Some(loaded) = loaded
        && in_memory != Some(loaded)
    {
        walk.pdpte_in_memory = in_memory.map(Pte::new);
    }
    let entry = Pte::new(loaded.or(in_memory)?);
    walk.steps.push(Step {
        level,
        index: slot,
        table,
        entry,
        entry_size: if size == 4 { 4 } else { 8 },
    });
    Some(entry)
}

/// The rights every level of a walk grants together.
#[derive(Debug, Clone, Copy)]
struct Rights {
    writable: bool,
    user: bool,
    executable: bool,
}

impl Rights {
    const ALL: Self = Self {
        writable: true,
        user: true,
        executable: true,
    };

    /// Narrow by one entry. A PAE PDPTE grants everything: its R/W and U/S bits are reserved.
    fn narrow(&mut self, format: Format, level: Level, entry: Pte, nxe: bool) {
        if format == Format::Pae && level == Level::Pdpt {
            return;
        }
        self.writable &= entry.writable();
        self.user &= entry.user();
        self.executable &= !(nxe && entry.no_execute());
    }
}

fn size_name(size: u64) -> &'static str {
    match size {
        0x1000 => "4 KiB",
        0x20_0000 => "2 MiB",
        0x40_0000 => "4 MiB",
        _ => "1 GiB",
    }
}

/// Each level as seed 000 and 004 walk it by hand: index, table, entry, flags; then the end.
impl fmt::Display for Walk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "walk of {}", self.gva)?;
        if self.format == Format::Off {
            let gpa = self.translation().unwrap_or_default();
            return write!(
                f,
                ": paging is off (CR0.PG = 0), linear = physical\n  -> {gpa}"
            );
        }
        if self.format.is_canonical(self.gva) {
            let parts: Vec<String> = (self.format.levels().iter())
                .map(|&level| {
                    let name = self.format.linux_name(level);
                    format!("{name} {}", self.format.index(level, self.gva))
                })
                .collect();
            let offset = self.gva.page_offset();
            write!(f, " ({}, offset {offset:#x})", parts.join(", "))?;
        }
        match self.format {
            Format::FourLevel => writeln!(f, " under CR3 {}:", self.cr3)?,
            other => writeln!(f, " under CR3 {}, {other}:", self.cr3)?,
        }
        for step in &self.steps {
            self.fmt_step(f, step)?;
        }
        if let Some(memory) = self.pdpte_in_memory {
            writeln!(
                f,
                "  the CPU used the PDPTE it loaded when CR3 was written; memory now holds \
                 {:#018x} ({memory}), which it sees only after CR3 is written again",
                memory.raw()
            )?;
        }
        self.fmt_end(f)
    }
}

impl Walk {
    fn fmt_step(&self, f: &mut fmt::Formatter<'_>, step: &Step) -> fmt::Result {
        let (level, index, table) = (step.level, step.index, step.table.raw());
        let entry = step.entry;
        if step.entry_size == 4 {
            writeln!(
                f,
                "  {level:<4} [{index:>4}]  table {table:#010x}  entry {:#010x}  {entry}",
                entry.raw()
            )
        } else {
            writeln!(
                f,
                "  {level:<4} [{index:>3}]  table {table:#012x}  entry {:#018x}  {entry}",
                entry.raw()
            )
        }
    }

    fn fmt_end(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.end {
            WalkEnd::Mapped(m) => write!(
                f,
                "  -> {} ({} page, offset {:#x}; {} r{}{})",
                m.gpa,
                size_name(m.page_size),
                self.gva.raw() & (m.page_size - 1),
                if m.user { "user" } else { "supervisor" },
                if m.writable { 'w' } else { '-' },
                if m.executable { 'x' } else { '-' },
            ),
            WalkEnd::NonCanonical if self.format.is_32_bit() => write!(
                f,
                "  -> {} is wider than the 32 bits of a linear address in this mode",
                self.gva
            ),
            WalkEnd::NonCanonical => write!(
                f,
                "  -> {} is not canonical (bits 63..{} differ): no walk, the CPU raises #GP",
                self.gva,
                if self.format == Format::FiveLevel {
                    56
                } else {
                    47
                }
            ),
            WalkEnd::NotPresent { level } => write!(
                f,
                "  -> stops at the {level} level: {}[{}] is not present",
                self.format.linux_name(level),
                self.format.index(level, self.gva)
            ),
            WalkEnd::ReservedBits { level, bits } => write!(
                f,
                "  -> stops at the {level} level: reserved bits {bits:#x} set"
            ),
            WalkEnd::TableOutsideRam { level, table } => write!(
                f,
                "  -> stops at the {level} level: its table at {table} is not guest RAM"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Guest RAM as a sparse map of 8-byte words below `limit`.
    struct FakeRam {
        words: HashMap<u64, u64>,
        limit: u64,
    }

    impl FakeRam {
        fn new(limit: u64) -> Self {
            Self {
                words: HashMap::new(),
                limit,
            }
        }

        fn set(&mut self, table: u64, index: usize, entry: u64) {
            self.words.insert(table + index as u64 * 8, entry);
        }
    }

    impl PhysMemory for FakeRam {
        fn read_u64(&self, gpa: Gpa) -> Option<u64> {
            (gpa.raw() + 8 <= self.limit).then(|| *self.words.get(&gpa.raw()).unwrap_or(&0))
        }
    }

    const MODE: PagingMode = PagingMode::new(crate::paging::CpuPaging::with_phys_bits(48), 0xd00);
    const JOURNEY: u64 = 0x716b_326c_8100;

    /// With CR0.PG clear nothing is read: the linear address is physical, 32 bits of it.
    #[test]
    fn with_paging_off_linear_is_physical() {
        let ram = crate::paging::SyntheticMemory::new(0x10000);
        let off = PagingMode {
            format: Format::Off,
            ..MODE
        };
        let w = walk(&ram, off, Cr3::new(0x1000), Gva::new(0x2000ff));
        assert_eq!(w.translation(), Some(Gpa::new(0x2000ff)));
        assert!(w.steps.is_empty());
        assert_eq!(
            w.to_string(),
            "walk of 0x2000ff: paging is off (CR0.PG = 0), linear = physical\n  -> 0x2000ff"
        );
        let on = PagingMode::of_vcpu(
            crate::paging::CpuPaging::with_phys_bits(48),
            0x8000_0011,
            0,
            0,
        );
        assert!(on.enabled());
        assert!(
            !PagingMode::of_vcpu(crate::paging::CpuPaging::with_phys_bits(48), 0x11, 0, 0)
                .enabled()
        );
    }

    /// The journey's tables: PML4 0x1000 → PDPT 0x2000 → PD 0x3000 → PT 0x4000.
    fn journey_ram(pte: u64) -> FakeRam {
        let mut ram = FakeRam::new(64 << 20);
        ram.set(0x1000, 226, 0x2067);
        ram.set(0x2000, 428, 0x3067);
        ram.set(0x3000, 403, 0x4067);
        ram.set(0x4000, 200, pte);
        ram
    }

    #[test]
    fn a_table_is_read_whole_or_not_at_all() {
        let mut ram = FakeRam::new(0x2000);
        ram.set(0x1000, 0, 0x1111);
        ram.set(0x1000, 511, 0x2222);
        let mut table = [0u64; 512];
        assert!(ram.read_table(Gpa::new(0x1000), &mut table));
        assert_eq!((table[0], table[1], table[511]), (0x1111, 0, 0x2222));
        // Half of this table lies past the end of RAM.
        assert!(!ram.read_table(Gpa::new(0x1800), &mut table));
    }

    #[test]
    fn a_1_gib_page_needs_page1gb_in_cpuid() {
        let mut ram = FakeRam::new(64 << 20);
        ram.set(0x1000, 0, 0x2003);
        ram.set(0x2000, 1, 0x4000_0083); // PDPT[1]: PS, a 1 GiB page at 1 GiB
        let at = Gva::new(0x4000_1234);
        let w = walk(&ram, MODE, Cr3::new(0x1000), at);
        assert_eq!(w.translation(), Some(Gpa::new(0x4000_1234)));
        // Without Page1GB (as KVM offers it on this project's machines) PS is reserved.
        let no_gib = PagingMode {
            gib_pages: false,
            ..MODE
        };
        let w = walk(&ram, no_gib, Cr3::new(0x1000), at);
        assert_eq!(
            w.end,
            WalkEnd::ReservedBits {
                level: Level::Pdpt,
                bits: 0x80
            }
        );
    }

    #[test]
    fn the_journey_fault_stops_at_the_pte_with_seed_004s_indices() {
        let w = walk(&journey_ram(0), MODE, Cr3::new(0x1000), Gva::new(JOURNEY));
        let indices: Vec<usize> = w.steps.iter().map(|s| s.index).collect();
        assert_eq!(indices, [226, 428, 403, 200]);
        assert_eq!(w.end, WalkEnd::NotPresent { level: Level::Pt });
        assert_eq!(w.steps[3].entry_address(), Gpa::new(0x4000 + 200 * 8));
        let text = w.to_string();
        assert!(
            text.contains(
                "  PT   [200]  table 0x0000004000  entry 0x0000000000000000  not present"
            ),
            "{text}"
        );
        assert!(
            text.ends_with("-> stops at the PT level: PTE[200] is not present"),
            "{text}"
        );
    }

    #[test]
    fn after_the_fault_the_pte_maps_the_frame_with_user_rights() {
        let w = walk(
            &journey_ram(0x2_cad5_4067),
            MODE,
            Cr3::new(0x1000),
            Gva::new(JOURNEY),
        );
        assert_eq!(
            w.end,
            WalkEnd::Mapped(Mapping {
                gpa: Gpa::new(0x2_cad5_4100),
                page_size: 4096,
                writable: true,
                user: true,
                executable: true,
            })
        );
        assert_eq!(w.steps[3].entry.pfn(), 0x2_cad54);
        assert_eq!(w.steps[3].entry.to_string(), "P RW US A D");
        assert!(
            w.to_string()
                .ends_with("(4 KiB page, offset 0x100; user rwx)")
        );
    }

    #[test]
    fn large_pages_end_the_walk_early() {
        let mut ram = FakeRam::new(1 << 40);
        ram.set(0x1000, 0x110, 0x2003);
        // PDPT entry 0: 1 GiB page at 1 GiB; PDPT entry 1: a PD with a 2 MiB page at 6 MiB.
        ram.set(0x2000, 0, 0x4000_0083 | (1 << 63));
        ram.set(0x2000, 1, 0x3003);
        ram.set(0x3000, 5, 0x60_0083);
        let hhdm = 0xffff_8800_0000_0000u64;
        let one_gib = walk(&ram, MODE, Cr3::new(0x1000), Gva::new(hhdm + 0x1234_5678));
        assert_eq!(
            one_gib.translation(),
            Some(Gpa::new(0x4000_0000 + 0x1234_5678))
        );
        assert!(
            matches!(one_gib.end, WalkEnd::Mapped(m) if m.page_size == 1 << 30 && !m.executable && !m.user)
        );
        let two_mib = walk(
            &ram,
            MODE,
            Cr3::new(0x1000),
            Gva::new(hhdm + (1 << 30) + 5 * (2 << 20) + 0xabc),
        );
        assert_eq!(two_mib.translation(), Some(Gpa::new(0x60_0abc)));
        assert_eq!(two_mib.steps.len(), 3);
    }

    #[test]
    fn reserved_bits_are_found_where_the_cpu_would_find_them() {
        // Bit 51 above a 48-bit MAXPHYADDR, in the PD entry.
        let mut ram = journey_ram(0x5067);
        ram.set(0x2000, 428, 0x8_0000_0000_3067);
        let w = walk(&ram, MODE, Cr3::new(0x1000), Gva::new(JOURNEY));
        assert_eq!(
            w.end,
            WalkEnd::ReservedBits {
                level: Level::Pdpt,
                bits: 0x8_0000_0000_0000
            }
        );
        // PS in a PML4 entry, and NX without EFER.NXE.
        let mut ram = journey_ram(0x5067 | (1 << 63));
        ram.set(0x1000, 226, 0x20e7);
        let w = walk(&ram, MODE, Cr3::new(0x1000), Gva::new(JOURNEY));
        assert_eq!(w.stopped_at(), Some(Level::Pml4));
        let no_nx = PagingMode { nxe: false, ..MODE };
        let w = walk(
            &journey_ram(0x5067 | (1 << 63)),
            no_nx,
            Cr3::new(0x1000),
            Gva::new(JOURNEY),
        );
        assert_eq!(
            w.end,
            WalkEnd::ReservedBits {
                level: Level::Pt,
                bits: 1 << 63
            }
        );
        // A 2 MiB page with bits 20..13 set.
        let mut ram = journey_ram(0);
        ram.set(0x3000, 403, 0x60_2083);
        let w = walk(&ram, MODE, Cr3::new(0x1000), Gva::new(JOURNEY));
        assert_eq!(
            w.end,
            WalkEnd::ReservedBits {
                level: Level::Pd,
                bits: 0x2000
            }
        );
    }

    #[test]
    fn garbage_ends_in_a_result_not_a_panic() {
        // A table outside RAM.
        let mut ram = journey_ram(0);
        ram.set(0x2000, 428, 0x7f_0000_0067);
        let w = walk(&ram, MODE, Cr3::new(0x1000), Gva::new(JOURNEY));
        assert_eq!(
            w.end,
            WalkEnd::TableOutsideRam {
                level: Level::Pd,
                table: Gpa::new(0x7f_0000_0000)
            }
        );
        assert!(
            w.to_string()
                .ends_with("its table at 0x7f00000000 is not guest RAM")
        );
        // A PML4 whose every entry points back at itself: four reads, then a "page".
        let mut ram = FakeRam::new(1 << 20);
        for i in 0..512 {
            ram.set(0x1000, i, 0x1067);
        }
        let w = walk(&ram, MODE, Cr3::new(0x1000), Gva::new(JOURNEY));
        assert_eq!(w.steps.len(), 4);
        assert_eq!(w.translation(), Some(Gpa::new(0x1100)));
        // CR3 itself outside RAM, and a non-canonical address.
        let w = walk(&ram, MODE, Cr3::new(0xdead_b000_0000), Gva::new(JOURNEY));
        assert_eq!(w.stopped_at(), Some(Level::Pml4));
        let w = walk(
            &ram,
            MODE,
            Cr3::new(0x1000),
            Gva::new(0x8000_0000_0010_5000),
        );
        assert_eq!(w.end, WalkEnd::NonCanonical);
        assert!(w.steps.is_empty());
    }
}
