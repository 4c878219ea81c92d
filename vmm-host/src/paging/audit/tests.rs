use super::*;
use crate::paging::{SyntheticMemory, identity_tree_4k};

const MODE: PagingMode = PagingMode::new(crate::paging::CpuPaging::with_phys_bits(48), 0xd00);
const NX: u64 = 1 << 63;
const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// RAM of `size` with `entries` as (table, index, value).
fn tree(size: u64, entries: &[(u64, usize, u64)]) -> SyntheticMemory {
    let mut mem = SyntheticMemory::new(size);
    for &(table, index, value) in entries {
        mem.write_u64(Gpa::new(table + index as u64 * 8), value);
    }
    mem
}

fn run(mem: &SyntheticMemory) -> Audit {
    audit(mem, MODE, Cr3::new(0x1000), &mem.ram())
}

fn range(start: u64, size: u64, rights: &str, phys: Option<u64>) -> MappedRange {
    MappedRange {
        start: Gva::new(start),
        size,
        user: rights.contains('u'),
        writable: rights.contains('w'),
        executable: rights.contains('x'),
        phys: phys.map(Gpa::new),
    }
}

/// Identity 4 KiB pages (RW, then read-only code), an identity 2 MiB page, a user page and a
/// read-only 1 GiB page over the first GiB again. Tables at 0x1000-0x6fff, inside the
/// identity map.
fn mixed() -> SyntheticMemory {
    let mut entries = vec![
        (0x1000, 0, 0x2007),
        (0x2000, 0, 0x3007),
        (0x2000, 1, 0x81 | NX),
        (0x3000, 0, 0x4007),
        (0x3000, 1, 0x20_0083 | NX),
        (0x3000, 2, 0x6007),
        (0x6000, 0, 0x5000_0067 | NX),
    ];
    entries.extend((0..16).map(|i| (0x4000, i, (i as u64) << 12 | 0x3 | NX)));
    entries.extend((16..20).map(|i| (0x4000, i, (i as u64) << 12 | 0x1)));
    tree(2 * GIB, &entries)
}

#[test]
fn a_mixed_tree_coalesces_into_ranges_with_the_rights_of_every_level() {
    let a = run(&mixed());
    assert_eq!(
        a.ranges,
        [
            range(0, 0x1_0000, "rw", Some(0)),
            range(0x1_0000, 0x4000, "rx", Some(0x1_0000)),
            range(0x20_0000, 0x20_0000, "rw", Some(0x20_0000)),
            range(0x40_0000, 0x1000, "urw", Some(0x5000_0000)),
            range(GIB, GIB, "r", Some(0)),
        ]
    );
    assert_eq!(
        a.identity,
        [(Gva::new(0), 0x1_4000), (Gva::new(0x20_0000), 0x20_0000)]
    );
    assert_eq!(a.direct_map, None);
    assert_eq!(a.recursive_slot, None);
    assert_eq!(a.entries_visited, 5 * 512);
    assert_eq!(a.mapped_bytes, GIB + 0x21_5000);
    // The 1 GiB page maps the identity-mapped frames again: by design, not aliasing; and the
    // tables all sit inside the identity map.
    assert_eq!(a.findings, []);
}

#[test]
fn table_frames_answer_which_table_a_physical_address_is_in() {
    let a = run(&mixed());
    assert_eq!(a.table_frames.len(), 5);
    assert_eq!(
        a.is_table_frame(Gpa::new(0x3abc)),
        Some((Level::Pd, Gva::new(0)))
    );
    assert_eq!(
        a.is_table_frame(Gpa::new(0x6000)),
        Some((Level::Pt, Gva::new(0x40_0000)))
    );
    assert_eq!(a.is_table_frame(Gpa::new(0x5000)), None);
    assert_eq!(
        a.is_table_frame(Gpa::new(0x1000)).map(|t| t.0),
        Some(Level::Pml4)
    );
}

#[test]
fn a_higher_half_direct_map_is_found_and_does_not_alias_the_kernel_image() {
    // 0xffff880000000000 → 0..64 MiB in 2 MiB pages; the kernel image at
    // 0xffffffff80000000 → 2..6 MiB, which the direct map covers too.
    let mut entries = vec![
        (0x1000, 0x110, 0x2003),
        (0x2000, 0, 0x3003),
        (0x1000, 511, 0x4003),
        (0x4000, 510, 0x5003),
        (0x5000, 0, 0x20_0081),
        (0x5000, 1, 0x40_0081),
    ];
    entries.extend((0..32).map(|i| (0x3000, i, (i as u64) << 21 | 0x83 | NX)));
    let a = run(&tree(64 * MIB, &entries));
    assert_eq!(
        a.direct_map,
        Some(DirectMap {
            base: Gva::new(0xffff_8800_0000_0000),
            phys_start: Gpa::new(0),
            size: 64 * MIB,
        })
    );
    assert_eq!(a.identity, []);
    assert_eq!(
        a.ranges[1],
        range(0xffff_ffff_8000_0000, 4 * MIB, "rx", Some(0x20_0000))
    );
    // The direct map reaches every table.
    assert_eq!(a.findings, []);
}

#[test]
fn the_recursive_slot_is_recorded_and_not_walked_again() {
    let mut entries = vec![
        (0x1000, 510, 0x1003 | NX),
        (0x1000, 0, 0x2003),
        (0x2000, 0, 0x3003),
        (0x3000, 0, 0x4003),
    ];
    entries.extend((0..4).map(|i| {
        (
            0x4000,
            0x100 + i,
            (0x10_0000 + (i as u64) * 0x1000) | 0x3 | NX,
        )
    }));
    let a = run(&tree(4 * MIB, &entries));
    assert_eq!(a.recursive_slot, Some(510));
    assert_eq!(a.entries_visited, 4 * 512);
    assert_eq!(a.ranges, [range(0x10_0000, 0x4000, "rw", Some(0x10_0000))]);
    // Nothing maps the tables but the recursive slot, which maps them all.
    assert_eq!(a.findings, []);
    assert!(
        a.to_string().contains(
            "recursive slot: PML4[510], 0xffffff0000000000-0xffffff8000000000 (512 GiB), not walked"
        ),
        "{a}"
    );
}

/// A PML4 at 0x1000, PDPT 0x2000, PD 0x3000 and PT 0x4000 translating 0..2 MiB, with the
/// PT's entries given; 0x1000-0xffff is identity-mapped read-only so tables there are
/// reached.
fn one_pt(size: u64, pt: &[(usize, u64)]) -> SyntheticMemory {
    let mut entries = vec![
        (0x1000, 0, 0x2007),
        (0x2000, 0, 0x3007),
        (0x3000, 0, 0x4007),
    ];
    entries.extend((1..16).map(|i| (0x4000, i, (i as u64) << 12 | 0x1 | NX)));
    entries.extend(pt.iter().map(|&(i, value)| (0x4000, i, value)));
    tree(size, &entries)
}

#[test]
fn writable_executable_kernel_memory_is_one_finding_per_range() {
    let pt: Vec<(usize, u64)> = (0x10..0x14).map(|i| (i, (i as u64) << 12 | 0x3)).collect();
    let a = run(&one_pt(4 * MIB, &pt));
    assert_eq!(
        a.findings,
        [Finding::WritableExecutable {
            start: Gva::new(0x1_0000),
            size: 0x4000
        }]
    );
    assert_eq!(
        a.findings[0].to_string(),
        "W+X: kernel range 0x10000-0x14000 (16 KiB) is writable and executable; set NX on data \
         or clear RW on code"
    );
}

#[test]
fn user_pages_in_kernel_space_are_found() {
    // 64 MiB of RAM, so that a 2 MiB upper-half page is too small to be a direct map.
    let mut mem = one_pt(64 * MIB, &[]);
    mem.write_u64(Gpa::new(0x1000 + 256 * 8), 0x5007);
    mem.write_u64(Gpa::new(0x5000), 0x6007);
    mem.write_u64(Gpa::new(0x6000 + 3 * 8), 0x20_0087 | NX);
    let a = run(&mem);
    assert_eq!(
        a.findings,
        [Finding::UserInKernelSpace {
            start: Gva::new(0xffff_8000_0060_0000),
            size: 2 * MIB
        }]
    );
}

#[test]
fn reserved_bits_stop_the_walk_below_them() {
    let mut mem = one_pt(4 * MIB, &[(0x10, 0x1_0003 | NX | 1 << 51)]);
    // A PD entry with bit 51: the PT it names is not visited.
    mem.write_u64(Gpa::new(0x3008), 0x8_0000_0000_5003);
    mem.write_u64(Gpa::new(0x5000), 0x3);
    let a = run(&mem);
    assert_eq!(a.entries_visited, 4 * 512);
    assert_eq!(
        a.findings,
        [
            Finding::ReservedBits {
                level: Level::Pt,
                entry: Gpa::new(0x4080),
                va: Gva::new(0x1_0000),
                bits: 1 << 51
            },
            Finding::ReservedBits {
                level: Level::Pd,
                entry: Gpa::new(0x3008),
                va: Gva::new(0x20_0000),
                bits: 1 << 51
            },
        ]
    );
}

#[test]
fn tables_and_pages_outside_ram_are_findings_not_walks() {
    let mut mem = one_pt(4 * MIB, &[(0x10, 0xfee0_0003 | NX)]);
    mem.write_u64(Gpa::new(0x3008), 0x7f_0000_0003);
    let a = run(&mem);
    assert_eq!(
        a.findings,
        [
            Finding::PageOutsideRam {
                va: Gva::new(0x1_0000),
                frame: Gpa::new(0xfee0_0000),
                size: 0x1000
            },
            Finding::TableOutsideRam {
                level: Level::Pt,
                table: Gpa::new(0x7f_0000_0000),
                entry: Some(Gpa::new(0x3008)),
                va: Gva::new(0x20_0000)
            },
        ]
    );
    let outside = audit(&mem, MODE, Cr3::new(0x80_0000), &mem.ram());
    assert_eq!(outside.entries_visited, 0);
    assert!(matches!(
        outside.findings[..],
        [Finding::TableOutsideRam { entry: None, .. }]
    ));
}

#[test]
fn tables_no_mapping_reaches_are_counted() {
    // Tables above the 4 MiB the identity map covers: PML4, PDPT, PD and two PTs.
    let (mem, cr3) = identity_tree_4k(4 * MIB);
    let a = audit(&mem, MODE, cr3, &mem.ram());
    let unreached: Vec<&Finding> = a
        .findings
        .iter()
        .filter(|f| matches!(f, Finding::UnreachedTables { .. }))
        .collect();
    assert_eq!(
        unreached,
        [&Finding::UnreachedTables {
            count: 5,
            examples: vec![
                (Level::Pml4, Gpa::new(0x40_0000)),
                (Level::Pdpt, Gpa::new(0x40_1000)),
                (Level::Pd, Gpa::new(0x40_2000)),
                (Level::Pt, Gpa::new(0x40_3000)),
                (Level::Pt, Gpa::new(0x40_4000)),
            ]
        }]
    );
    // The same tables inside the identity map: nothing to report.
    assert!(
        !run(&one_pt(4 * MIB, &[]))
            .findings
            .iter()
            .any(|f| matches!(f, Finding::UnreachedTables { .. }))
    );
}

#[test]
fn a_frame_mapped_twice_is_aliasing_but_the_identity_map_is_not() {
    let a = run(&one_pt(
        4 * MIB,
        &[
            (0x10, 0x9003 | NX),
            (0x20, 0x9003 | NX),
            (9, 0x9001 | NX),
            (0x30, 0xa003 | NX),
        ],
    ));
    assert_eq!(
        a.findings,
        [Finding::Aliased {
            frames: 1,
            examples: vec![Alias {
                frame: Gpa::new(0x9000),
                first: Some(Gva::new(0x1_0000)),
                second: Gva::new(0x2_0000),
            }]
        }]
    );
    assert!(
        a.findings[0]
            .to_string()
            .contains("(0x9000 at 0x10000 and 0x20000)")
    );
}

#[test]
fn table_loops_are_reported_and_not_followed() {
    // A PDPT entry back to the PML4, and a PD entry to the PD itself.
    let a = run(&one_pt(4 * MIB, &[]));
    let clean = a.entries_visited;
    let mut mem = one_pt(4 * MIB, &[]);
    mem.write_u64(Gpa::new(0x2008), 0x1003);
    mem.write_u64(Gpa::new(0x3010), 0x3003);
    let a = run(&mem);
    assert_eq!(a.entries_visited, clean);
    assert_eq!(a.recursive_slot, None);
    assert_eq!(
        a.findings,
        [
            Finding::TableLoop {
                level: Level::Pd,
                entry: Gpa::new(0x3010),
                va: Gva::new(0x40_0000),
                table: Gpa::new(0x3000)
            },
            Finding::TableLoop {
                level: Level::Pdpt,
                entry: Gpa::new(0x2008),
                va: Gva::new(GIB),
                table: Gpa::new(0x1000)
            },
        ]
    );
}

#[test]
fn a_tree_of_one_table_pointing_at_itself_ends_in_bounded_findings() {
    // Every entry of the PML4 and of the table it points at name that table, user, writable.
    let mut mem = SyntheticMemory::new(4 * MIB);
    mem.page_mut(Gpa::new(0x1000)).fill(0x2007);
    mem.page_mut(Gpa::new(0x2000)).fill(0x2007);
    let a = run(&mem);
    assert_eq!(a.entries_visited, 513 * 512);
    let loops = 512 * 512;
    assert_eq!(
        a.findings.last(),
        Some(&Finding::Omitted {
            kind: FindingKind::TableLoop,
            count: loops - 8
        })
    );
    // The loops kept, the unreached tables (nothing is mapped), the count of the rest.
    assert_eq!(a.findings.len(), 10);
    // The PML4 pointing at itself everywhere: one recursive slot, 511 loops.
    mem.page_mut(Gpa::new(0x1000)).fill(0x1007);
    let a = run(&mem);
    assert_eq!((a.recursive_slot, a.entries_visited), (Some(0), 512));
    assert!(a.findings.contains(&Finding::Omitted {
        kind: FindingKind::TableLoop,
        count: 511 - 8
    }));
}

#[test]
fn a_tree_that_shares_tables_without_loops_stops_at_the_budget() {
    // PML4 → T2 → T3 → T4 at every entry: 512⁴ leaves without the budget.
    let mut mem = SyntheticMemory::new(4 * MIB);
    for (table, next) in [(0x1000, 0x2003), (0x2000, 0x3003), (0x3000, 0x4003)] {
        mem.page_mut(Gpa::new(table)).fill(next);
    }
    mem.page_mut(Gpa::new(0x4000)).fill(0x5003 | NX);
    let options = AuditOptions {
        max_entries: 1 << 20,
        ..AuditOptions::default()
    };
    let a = audit_with(&mem, MODE, Cr3::new(0x1000), &mem.ram(), &options);
    assert_eq!(a.entries_visited, 1 << 20);
    assert_eq!(
        a.findings.first(),
        Some(&Finding::Truncated { entries: 1 << 20 })
    );
    // Every leaf maps 0x5000, all in one range of scattered frames.
    assert_eq!(a.ranges.len(), 1);
    assert_eq!(a.ranges[0].phys, None);
    assert_eq!(a.table_frames.len(), 4);
    assert!(matches!(
        a.findings.last(),
        Some(Finding::Aliased { frames: 1, .. })
    ));
    assert_eq!(AuditOptions::default().max_entries, 64 << 20);
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn random_garbage_ends_in_findings_within_the_budget() {
    let options = AuditOptions {
        max_entries: 1 << 20,
        max_ranges: 1000,
        ..AuditOptions::default()
    };
    // Raw random words, then words whose frames stay inside the 4 MiB of RAM so the walk
    // goes deep.
    for mask in [u64::MAX, 0x8000_0000_003f_f1ff] {
        let mut state = 0x2545_f491_4f6c_dd1d;
        let mut mem = SyntheticMemory::new(4 * MIB);
        for page in 0..1024 {
            for word in mem.page_mut(Gpa::new(page << 12)).iter_mut() {
                *word = xorshift(&mut state) & mask;
            }
        }
        let a = audit_with(&mem, MODE, Cr3::new(0x1000), &mem.ram(), &options);
        assert!(a.entries_visited <= options.max_entries);
        assert!(!a.findings.is_empty());
        for kind in FindingKind::ALL {
            let kept = a.findings.iter().filter(|f| f.kind() == Some(kind)).count();
            assert!(kept <= options.max_findings_per_kind, "{kind:?}: {kept}");
        }
        assert!(a.ranges.len() <= 1000 && a.identity.len() <= 1000);
        assert!(a.to_string().lines().count() < 2100);
    }
}

#[test]
fn the_text_of_a_small_tree() {
    let a = run(&mixed());
    let expected = "\
page tables under CR3 0x1000: 2560 entries visited, 5 ranges
0000000000000000-0000000000010000  0000000000010000  -rw-  phys 0000000000000000
0000000000010000-0000000000014000  0000000000004000  -r-x  phys 0000000000010000
0000000000200000-0000000000400000  0000000000200000  -rw-  phys 0000000000200000
0000000000400000-0000000000401000  0000000000001000  urw-  phys 0000000050000000
0000000040000000-0000000080000000  0000000040000000  -r--  phys 0000000000000000
identity map: 0x0-0x14000 (80 KiB)
identity map: 0x200000-0x400000 (2 MiB)
direct map: none
recursive slot: none
page-table frames: 5
findings: 0";
    assert_eq!(a.to_string(), expected);
    assert_eq!(
        a.summary(),
        "page tables under CR3 0x1000: 1.0 GiB mapped in 5 ranges, 5 table frames, 2560 \
         entries\n\
         identity 0x0-0x14000 (80 KiB), 0x200000-0x400000 (2 MiB)\n\
         no findings"
    );
}

#[test]
fn guest_memory_reads_whole_tables_as_the_word_reader_does() {
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
    let synthetic = mixed();
    let ram = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)])
        .expect("an anonymous 1 MiB mapping");
    let mut table = [0u64; 512];
    for frame in (0x1000..0x7000).step_by(0x1000) {
        assert!(synthetic.read_table(Gpa::new(frame), &mut table));
        for (i, value) in table.iter().enumerate() {
            ram.write_obj(*value, GuestAddress(frame + i as u64 * 8))
                .expect("inside the mapping");
        }
    }
    let ranges = [(Gpa::new(0), 0x10_0000)];
    let from_guest = audit(&ram, MODE, Cr3::new(0x1000), &ranges);
    let from_synthetic = audit(&synthetic, MODE, Cr3::new(0x1000), &ranges);
    assert_eq!(from_guest.ranges, from_synthetic.ranges);
    assert_eq!(from_guest.entries_visited, 5 * 512);
    let mut word_by_word = [0u64; 512];
    assert!(ram.read_table(Gpa::new(0x4000), &mut table));
    for (i, slot) in word_by_word.iter_mut().enumerate() {
        *slot = ram.read_u64(Gpa::new(0x4000 + i as u64 * 8)).unwrap_or(!0);
    }
    assert_eq!(table, word_by_word);
    assert!(!ram.read_table(Gpa::new(0x10_0000), &mut table));
}

/// A page table of 512 consecutive frames with equal flags is taken whole; anything that
/// breaks the pattern (a different right, a missing page, a frame out of line, a reserved
/// bit on the last entries) is read entry by entry, with the same result either way.
#[test]
fn a_table_of_consecutive_frames_is_one_stretch_and_any_break_is_seen() {
    let table = |edit: &dyn Fn(usize, u64) -> u64| {
        let mut entries = vec![
            (0x1000, 0, 0x2003),
            (0x2000, 0, 0x3003),
            (0x3000, 1, 0x4003),
        ];
        // PT at 0x4000 maps 2 MiB..4 MiB to 0x8000_0000.., kernel RW NX; A and D vary.
        entries.extend((0..512).map(|i| {
            let entry = (0x8000_0000 + (i as u64) * 4096) | 0x3 | NX | ((i as u64 % 3) << 5);
            (0x4000, i, edit(i, entry))
        }));
        run(&tree(4 * GIB, &entries))
    };
    let whole = table(&|_, e| e);
    assert_eq!(
        whole.ranges,
        [range(0x20_0000, 0x20_0000, "w", Some(0x8000_0000))]
    );
    assert_eq!(whole.entries_visited, 4 * 512);
    // Entry 7 read-only: three ranges, the middle one a page.
    let read_only = table(&|i, e| if i == 7 { e & !0x2 } else { e });
    assert_eq!(read_only.ranges.len(), 3, "{read_only}");
    assert_eq!(
        read_only.ranges[1],
        range(0x20_7000, 0x1000, "", Some(0x8000_7000))
    );
    // Entry 300 missing: a hole.
    let hole = table(&|i, e| if i == 300 { 0 } else { e });
    assert_eq!(hole.mapped_bytes, 511 * 4096);
    // Entry 9 pointing elsewhere: one range of rights, its frames no longer contiguous.
    let moved = table(&|i, e| if i == 9 { e + 0x10_0000 } else { e });
    assert_eq!(moved.ranges.len(), 1);
    assert_eq!(moved.ranges[0].phys, None);
    // Frames that climb past MAXPHYADDR (48 bits) on the last entries are reserved bits.
    let high = |i: usize, e: u64| {
        (e & !0x000f_ffff_ffff_f000)
            | ((0xffff_fff0_0000 + (i as u64) * 4096) & 0x000f_ffff_ffff_f000)
    };
    let past = table(&high);
    let reserved = (past.findings.iter())
        .filter(|f| matches!(f, Finding::ReservedBits { .. }))
        .count();
    assert!(reserved > 0, "{past}");
    assert_eq!(past.mapped_bytes, 256 * 4096, "{past}");
}
