//! The walker and the audit in each paging format, on tables laid out by hand: 32-bit paging
//! with 4 KiB and 4 MiB pages, PSE-36 and CR4.PSE off; PAE with NX and the PDPTEs the CPU
//! loaded; 5-level paging.

use super::*;
use crate::addr::{Gpa, Gva};

const RAM: u64 = 8 << 20;
const P: u64 = 1;
const RW: u64 = 2;
const US: u64 = 4;
const PS: u64 = 0x80;
const NX: u64 = 1 << 63;

fn mode(format: Format) -> PagingMode {
    PagingMode::new(CpuPaging::with_phys_bits(40), 0xd00).with_format(format)
}

const PSE: Format = Format::TwoLevel { pse: true };

/// 32-bit tables: the page directory at 0x1000; PD[768] → a page table at 0x2000 mapping
/// 0xc0001000 → 0x5000 read-only; PD[1] a 4 MiB page at 4 MiB; PD[1023] → the PD itself.
fn two_level() -> SyntheticMemory {
    let mut ram = SyntheticMemory::new(RAM);
    let mut pde = |index: u64, value: u32| ram.write_u32(Gpa::new(0x1000 + index * 4), value);
    pde(768, 0x2000 | (P | RW) as u32);
    pde(1, 0x40_0000 | (P | RW | PS) as u32);
    pde(1023, 0x1000 | (P | RW) as u32);
    ram.write_u32(Gpa::new(0x2000 + 4), 0x5000 | P as u32);
    ram
}

#[test]
fn a_32_bit_walk_reads_a_directory_and_a_table_of_4_byte_entries() {
    let w = walk(
        &two_level(),
        mode(PSE),
        Cr3::new(0x1000),
        Gva::new(0xc000_1234),
    );
    assert_eq!(w.translation(), Some(Gpa::new(0x5234)));
    assert!(matches!(w.end, WalkEnd::Mapped(m) if !m.writable && !m.user && m.executable));
    assert_eq!(w.steps[1].entry_address(), Gpa::new(0x2004));
    assert_eq!(
        w.to_string(),
        "walk of 0xc0001234 (PGD 768, PTE 1, offset 0x234) under CR3 0x1000, 32-bit paging \
         (2 levels, 4 KiB and 4 MiB pages):\n  \
         PD   [ 768]  table 0x00001000  entry 0x00002003  P RW\n  \
         PT   [   1]  table 0x00002000  entry 0x00005001  P\n  \
         -> 0x5234 (4 KiB page, offset 0x234; supervisor r-x)"
    );
    let w = walk(
        &two_level(),
        mode(PSE),
        Cr3::new(0x1000),
        Gva::new(0xc000_2000),
    );
    assert_eq!(w.end, WalkEnd::NotPresent { level: Level::Pt });
    assert!(w.to_string().ends_with("PTE[2] is not present"), "{w}");
}

/// 32-bit paging ignores CR3's upper half (a 64-bit CR3 register may hold garbage there).
#[test]
fn a_32_bit_walk_takes_the_directory_from_cr3_bits_31_to_12() {
    let cr3 = Cr3::new(0xdead_0000_0000_1fff);
    let w = walk(&two_level(), mode(PSE), cr3, Gva::new(0xc000_1234));
    assert_eq!(w.steps[0].table, Gpa::new(0x1000));
    assert_eq!(w.translation(), Some(Gpa::new(0x5234)));
}

#[test]
fn a_4_mib_page_needs_cr4_pse_and_its_neighbour_is_not_present() {
    let ram = two_level();
    let w = walk(&ram, mode(PSE), Cr3::new(0x1000), Gva::new(0x41_2345));
    assert!(
        matches!(w.end, WalkEnd::Mapped(m) if m.gpa == Gpa::new(0x41_2345) && m.page_size == 4 << 20)
    );
    assert!(w.to_string().contains("(4 MiB page, offset 0x12345"), "{w}");
    let w = walk(&ram, mode(PSE), Cr3::new(0x1000), Gva::new(0x80_0000));
    assert_eq!(w.end, WalkEnd::NotPresent { level: Level::Pd });
    // Without CR4.PSE the same entry points at a page table in the first page of the 4 MiB.
    let plain = mode(Format::TwoLevel { pse: false });
    let w = walk(&ram, plain, Cr3::new(0x1000), Gva::new(0x41_2345));
    assert_eq!(w.end, WalkEnd::NotPresent { level: Level::Pt });
    assert_eq!(w.steps[1].table, Gpa::new(0x40_0000));
}

#[test]
fn pse_36_puts_a_4_mib_page_above_4_gib_within_maxphyaddr() {
    let mut ram = SyntheticMemory::new(RAM);
    // Bits 20:13 = 0x12: physical bits 39:32.
    ram.write_u32(
        Gpa::new(0x1000 + 8),
        (0x80_0000 | (0x12 << 13) | P | PS) as u32,
    );
    let at = Gva::new(0x80_0010);
    let w = walk(&ram, mode(PSE), Cr3::new(0x1000), at);
    assert_eq!(w.translation(), Some(Gpa::new(0x12_0080_0010)));
    // MAXPHYADDR 36 reserves bits 21:17, and 0x12 << 13 sets bit 17.
    let narrow = PagingMode {
        max_phys_addr: 36,
        ..mode(PSE)
    };
    let w = walk(&ram, narrow, Cr3::new(0x1000), at);
    assert_eq!(
        w.end,
        WalkEnd::ReservedBits {
            level: Level::Pd,
            bits: 0x2_0000
        }
    );
    // Without PSE-36 every one of bits 21:13 is reserved.
    let old = PagingMode {
        pse36: false,
        ..mode(PSE)
    };
    let w = walk(&ram, old, Cr3::new(0x1000), at);
    assert_eq!(w.stopped_at(), Some(Level::Pd));
    assert!(matches!(
        w.end,
        WalkEnd::ReservedBits { bits: 0x2_4000, .. }
    ));
}

#[test]
fn a_32_bit_address_wider_than_32_bits_is_refused() {
    let w = walk(&two_level(), mode(PSE), Cr3::new(0x1000), Gva::new(1 << 32));
    assert_eq!(w.end, WalkEnd::NonCanonical);
    assert!(
        w.to_string()
            .ends_with("is wider than the 32 bits of a linear address in this mode")
    );
}

/// PAE tables: the PDPT at 0x1020; PDPT[3] → PD 0x3000; PD[0] → PT 0x4000; PT[1] a no-execute
/// user page at 0x9000; PD[1] a 2 MiB page at 2 MiB.
fn pae() -> SyntheticMemory {
    let mut ram = SyntheticMemory::new(RAM);
    ram.write_u64(Gpa::new(0x1020 + 3 * 8), 0x3000 | P);
    ram.write_u64(Gpa::new(0x3000), 0x4000 | P | RW | US);
    ram.write_u64(Gpa::new(0x3008), 0x20_0000 | P | RW | PS);
    ram.write_u64(Gpa::new(0x4008), 0x9000 | P | RW | US | NX);
    ram
}

#[test]
fn a_pae_walk_reads_four_pdptes_then_two_levels_with_nx() {
    let w = walk(
        &pae(),
        mode(Format::Pae),
        Cr3::new(0x1020),
        Gva::new(0xc000_1abc),
    );
    assert_eq!(w.translation(), Some(Gpa::new(0x9abc)));
    assert!(matches!(w.end, WalkEnd::Mapped(m) if m.user && m.writable && !m.executable));
    let indices: Vec<(Level, usize)> = w.steps.iter().map(|s| (s.level, s.index)).collect();
    assert_eq!(indices, [(Level::Pdpt, 3), (Level::Pd, 0), (Level::Pt, 1)]);
    let text = w.to_string();
    assert!(
        text.contains("(PGD 3, PMD 0, PTE 1, offset 0xabc) under CR3 0x1020, PAE"),
        "{text}"
    );
    assert!(text.contains("  PDPT [  3]  table 0x0000001020  entry 0x0000000000003001  P\n"));
    let two_mib = walk(
        &pae(),
        mode(Format::Pae),
        Cr3::new(0x1020),
        Gva::new(0xc020_0042),
    );
    assert!(
        matches!(two_mib.end, WalkEnd::Mapped(m) if m.page_size == 2 << 20 && m.gpa == Gpa::new(0x20_0042))
    );
    // Without EFER.NXE bit 63 is reserved.
    let no_nx = PagingMode {
        nxe: false,
        ..mode(Format::Pae)
    };
    let w = walk(&pae(), no_nx, Cr3::new(0x1020), Gva::new(0xc000_1abc));
    assert_eq!(
        w.end,
        WalkEnd::ReservedBits {
            level: Level::Pt,
            bits: NX
        }
    );
}

#[test]
fn a_pdpte_has_no_rights_of_its_own_so_rw_us_and_nx_there_are_reserved() {
    let mut ram = pae();
    ram.write_u64(Gpa::new(0x1020 + 3 * 8), 0x3000 | P | RW | US | NX);
    let w = walk(
        &ram,
        mode(Format::Pae),
        Cr3::new(0x1020),
        Gva::new(0xc000_1abc),
    );
    assert_eq!(
        w.end,
        WalkEnd::ReservedBits {
            level: Level::Pdpt,
            bits: RW | US | NX
        }
    );
}

#[test]
fn the_cpu_walks_the_pdptes_it_loaded_and_the_walk_says_when_memory_differs() {
    let mut ram = pae();
    ram.write_u64(Gpa::new(0x1020 + 3 * 8), 0);
    let loaded = PagingMode {
        loaded_pdptes: Some([0, 0, 0, 0x3001]),
        ..mode(Format::Pae)
    };
    let w = walk(&ram, loaded, Cr3::new(0x1020), Gva::new(0xc000_1abc));
    assert_eq!(w.translation(), Some(Gpa::new(0x9abc)));
    assert_eq!(w.pdpte_in_memory, Some(Pte::new(0)));
    assert!(
        w.to_string()
            .contains("the CPU used the PDPTE it loaded when CR3 was written; memory now holds 0x0000000000000000 (not present)"),
        "{w}"
    );
    // The same walk with memory equal to the registers says nothing.
    let w = walk(&pae(), loaded, Cr3::new(0x1020), Gva::new(0xc000_1abc));
    assert_eq!(w.pdpte_in_memory, None);
}

#[test]
fn a_5_level_walk_reads_five_tables_and_bit_56_decides_canonical() {
    let mut ram = SyntheticMemory::new(RAM);
    ram.write_u64(Gpa::new(0x1000 + 8), 0x2000 | P | RW);
    ram.write_u64(Gpa::new(0x2000), 0x3000 | P | RW);
    ram.write_u64(Gpa::new(0x3000), 0x4000 | P | RW);
    ram.write_u64(Gpa::new(0x4000), 0x5000 | P | RW);
    ram.write_u64(Gpa::new(0x5008), 0x9000 | P | RW);
    let at = Gva::new(0x0001_0000_0000_1010);
    let w = walk(&ram, mode(Format::FiveLevel), Cr3::new(0x1000), at);
    assert_eq!(w.translation(), Some(Gpa::new(0x9010)));
    assert_eq!(w.steps.len(), 5);
    assert!(
        w.to_string()
            .contains("(PGD 1, P4D 0, PUD 0, PMD 0, PTE 1, offset 0x10)")
    );
    // The same address is not canonical with four levels.
    let w = walk(&ram, mode(Format::FourLevel), Cr3::new(0x1000), at);
    assert_eq!(w.end, WalkEnd::NonCanonical);
    // PS is reserved in a PML5 entry as in a PML4 entry.
    ram.write_u64(Gpa::new(0x1000 + 8), 0x2000 | P | RW | PS);
    let w = walk(&ram, mode(Format::FiveLevel), Cr3::new(0x1000), at);
    assert_eq!(
        w.end,
        WalkEnd::ReservedBits {
            level: Level::Pml5,
            bits: PS
        }
    );
}

#[test]
fn the_32_bit_audit_finds_the_recursive_directory_slot_and_the_higher_half() {
    let mut ram = two_level();
    // The identity map of the first 64 KiB, through PD[0] → a page table at 0x6000.
    ram.write_u32(Gpa::new(0x1000), (0x6000 | P | RW) as u32);
    for page in 0..16u64 {
        ram.write_u32(Gpa::new(0x6000 + page * 4), (page << 12 | P | RW) as u32);
    }
    let audit = audit(&ram, mode(PSE), Cr3::new(0x1000), &ram.ram());
    assert_eq!(audit.recursive_slot, Some(1023));
    // PD[1] maps 4 MiB at 4 MiB: identity too.
    assert_eq!(
        audit.identity,
        [(Gva::new(0), 0x1_0000), (Gva::new(0x40_0000), 4 << 20)]
    );
    // The PD's 1024 entries, then the two page tables' 1024 each.
    assert_eq!(audit.entries_visited, 3 * 1024);
    let text = audit.to_string();
    assert!(
        text.starts_with(
            "page tables under CR3 0x1000 (32-bit paging (2 levels, 4 KiB and 4 MiB pages))"
        ),
        "{text}"
    );
    assert!(
        text.contains("recursive slot: PD[1023], 0xffc00000-0x100000000 (4 MiB), not walked"),
        "{text}"
    );
    assert!(
        text.contains("00400000-00800000  0000000000400000  -rwx  phys 0000000000400000\n"),
        "{text}"
    );
    assert!(
        text.contains("c0001000-c0002000  0000000000001000  -r-x  phys 0000000000005000\n"),
        "{text}"
    );
    // No NX exists in 32-bit paging: writable and executable is no finding there.
    assert!(text.ends_with("findings: 0"), "{text}");
    assert_eq!(
        audit.is_table_frame(Gpa::new(0x2004)),
        Some((Level::Pt, Gva::new(0xc000_0000)))
    );
}

#[test]
fn the_pae_audit_reads_four_pdptes_and_finds_user_pages_above_3_gib() {
    let ram = pae();
    let audit = audit(&ram, mode(Format::Pae), Cr3::new(0x1020), &ram.ram());
    assert_eq!(audit.entries_visited, 4 + 512 + 512);
    let user: Vec<&Finding> = (audit.findings.iter())
        .filter(|f| matches!(f, Finding::UserInKernelSpace { .. }))
        .collect();
    assert_eq!(user.len(), 1, "{audit}");
    assert!(user[0].to_string().contains("0xc0001000"), "{}", user[0]);
    // The PDPT's frame is the page it lies in.
    assert_eq!(
        audit.is_table_frame(Gpa::new(0x1020)).map(|t| t.0),
        Some(Level::Pdpt)
    );
}

#[test]
fn with_paging_off_the_audit_maps_nothing_and_reads_nothing() {
    let ram = two_level();
    let audit = audit(&ram, mode(Format::Off), Cr3::new(0x1000), &ram.ram());
    assert_eq!(audit.entries_visited, 0);
    assert!(audit.ranges.is_empty());
}
