//! A second page-table walker, written plainly from the Intel SDM (vol. 3, §4.5, 4- and
//! 5-level paging) with no code shared with `paging`: raw bytes in, bit arithmetic, one level
//! at a time. It is slow and simple on purpose; the property tests hold the real walker and
//! the audit to it on random tables. `walk_model32` does the same for 32-bit and PAE paging.

#[cfg(test)]
use crate::paging::{AuditOptions, CpuPaging, Cr3, Format, PagingMode, audit_with, walk};
use crate::paging::{Finding, Level, WalkEnd};
#[cfg(test)]
use crate::robustness::cases;
#[cfg(test)]
use crate::virt::GuestView;
#[cfg(test)]
use proptest::prelude::*;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

#[cfg(test)]
const RAM: u64 = 1 << 20;
/// MAXPHYADDR of the model's CPU.
const PHYS_BITS: u32 = 46;

/// What the model's CPU does with one linear address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ModelWalk {
    /// (table address, index, raw entry) for every entry read, from the PML4 down.
    pub(crate) reads: Vec<(u64, u64, u64)>,
    pub(crate) outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    NonCanonical,
    /// Level 4 is the PML4, 1 the PT.
    NotPresent(u32),
    Reserved(u32),
    TableOutsideRam(u32),
    Mapped {
        phys: u64,
        size: u64,
        write: bool,
        user: bool,
        exec: bool,
    },
}

pub(crate) fn read_entry(ram: &GuestMemoryMmap, at: u64) -> Option<u64> {
    let mut bytes = [0u8; 8];
    ram.read_slice(&mut bytes, GuestAddress(at)).ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// `gib`: the CPU has 1 GiB pages (CPUID Page1GB); without them PS in a PDPT entry is
/// reserved. `levels`: 4, or 5 with CR4.LA57.
pub(crate) fn model_walk(
    ram: &GuestMemoryMmap,
    cr3: u64,
    (nxe, gib): (bool, bool),
    levels: u32,
    linear: u64,
) -> ModelWalk {
    let mut reads = Vec::new();
    // The address bits above the top level's index copy its highest bit.
    let top_bit = 12 + 9 * levels - 1;
    let sign = linear >> top_bit;
    if sign != 0 && sign != (1 << (64 - top_bit)) - 1 {
        return ModelWalk {
            reads,
            outcome: Outcome::NonCanonical,
        };
    }
    // Bits MAXPHYADDR..51 of an address field are reserved; so is bit 63 without EFER.NXE.
    let mut must_be_zero: u64 = 0;
    for bit in PHYS_BITS..52 {
        must_be_zero |= 1 << bit;
    }
    if !nxe {
        must_be_zero |= 1 << 63;
    }
    let (mut write, mut user, mut exec) = (true, true, true);
    let mut table = cr3 & 0x000f_ffff_ffff_f000;
    for level in (1..=levels).rev() {
        let shift = 12 + 9 * (level - 1);
        let index = (linear >> shift) & 511;
        let Some(entry) = read_entry(ram, table + index * 8) else {
            return ModelWalk {
                reads,
                outcome: Outcome::TableOutsideRam(level),
            };
        };
        reads.push((table, index, entry));
        if entry & 1 == 0 {
            return ModelWalk {
                reads,
                outcome: Outcome::NotPresent(level),
            };
        }
        let page_size_bit = entry & (1 << 7) != 0;
        let mut reserved = must_be_zero;
        if level >= 4 || (level == 3 && !gib) {
            reserved |= 1 << 7;
        }
        let leaf = level == 1 || (page_size_bit && (level == 2 || level == 3));
        if leaf && level > 1 {
            // A large page's frame must be aligned: bits 12 (PAT) .. shift-1 are reserved.
            for bit in 13..shift {
                reserved |= 1 << bit;
            }
        }
        if entry & reserved != 0 {
            return ModelWalk {
                reads,
                outcome: Outcome::Reserved(level),
            };
        }
        write = write && entry & 2 != 0;
        user = user && entry & 4 != 0;
        exec = exec && !(nxe && entry >> 63 == 1);
        let frame = entry & 0x000f_ffff_ffff_f000;
        if leaf {
            let size = 1u64 << shift;
            let phys = (frame >> shift << shift) + (linear & (size - 1));
            return ModelWalk {
                reads,
                outcome: Outcome::Mapped {
                    phys,
                    size,
                    write,
                    user,
                    exec,
                },
            };
        }
        table = frame;
    }
    unreachable!("level 1 is always a leaf")
}

pub(crate) fn level_number(level: Level) -> u32 {
    match level {
        Level::Pml5 => 5,
        Level::Pml4 => 4,
        Level::Pdpt => 3,
        Level::Pd => 2,
        Level::Pt => 1,
    }
}

/// The real walker's result in the model's terms.
pub(crate) fn as_model(w: &crate::paging::Walk) -> ModelWalk {
    let reads = w
        .steps
        .iter()
        .map(|s| (s.table.raw(), s.index as u64, s.entry.raw()))
        .collect();
    let outcome = match w.end {
        WalkEnd::NonCanonical => Outcome::NonCanonical,
        WalkEnd::NotPresent { level } => Outcome::NotPresent(level_number(level)),
        WalkEnd::ReservedBits { level, .. } => Outcome::Reserved(level_number(level)),
        WalkEnd::TableOutsideRam { level, .. } => Outcome::TableOutsideRam(level_number(level)),
        WalkEnd::Mapped(m) => Outcome::Mapped {
            phys: m.gpa.raw(),
            size: m.page_size,
            write: m.writable,
            user: m.user,
            exec: m.executable,
        },
    };
    ModelWalk { reads, outcome }
}

/// Entries worth walking through: tables inside the first frames of RAM, leaves anywhere in
/// the physical-address space (so every frame bit matters), reserved bits, and garbage.
#[cfg(test)]
fn entry() -> impl Strategy<Value = u64> {
    let flags = any::<u64>().prop_map(|f| f & 0x8000_0000_0000_0e7e);
    prop_oneof![
        3 => ((0..8u64), flags.clone()).prop_map(|(frame, f)| frame << 12 | f | 1),
        3 => (any::<u64>(), flags.clone()).prop_map(|(frame, f)| frame & 0x3fff_ffff_f000 | f | 1),
        1 => (any::<u64>(), flags.clone()).prop_map(|(frame, f)| frame & 0x3fff_ffff_f000 | f | 0x81),
        // Aligned 2 MiB and 1 GiB frames, with PAT (bit 12) now and then.
        2 => (any::<u64>(), flags.clone(), any::<bool>())
            .prop_map(|(frame, f, pat)| frame & 0x3fff_ffe0_0000 | f | 0x81 | u64::from(pat) << 12),
        2 => (any::<u64>(), flags, any::<bool>())
            .prop_map(|(frame, f, pat)| frame & 0x3fff_c000_0000 | f | 0x81 | u64::from(pat) << 12),
        1 => any::<u64>(),
        1 => Just(0u64),
    ]
}

/// One path from the PML4 to a page: per level a table frame (1..8), the index seed and the
/// entry's rights bits (RW, US, NX); the leaf's level (0 = PDPT 1 GiB, 1 = PD 2 MiB, 2 = PT
/// 4 KiB) and frame. Well-formed on purpose, so that most walks end at a page.
#[cfg(test)]
fn well_formed_path() -> impl Strategy<Value = Vec<(u64, u64)>> {
    let rights = any::<u64>().prop_map(|r| r & 0x8000_0000_0000_0006);
    (
        prop::collection::vec((1..8u64, rights.clone()), 3),
        0..3usize,
        any::<u64>(),
        rights,
    )
        .prop_map(|(tables, leaf_level, frame, leaf_rights)| {
            let mut entries: Vec<u64> = Vec::new();
            for (depth, (table, r)) in tables.into_iter().enumerate() {
                if depth == leaf_level + 1 {
                    break;
                }
                entries.push(table << 12 | r | 1);
            }
            let leaf = match leaf_level {
                0 => frame & 0x3fff_c000_0000 | 0x80,
                1 => frame & 0x3fff_ffe0_0000 | 0x80,
                _ => frame & 0x3fff_ffff_f000,
            };
            entries.push(leaf | leaf_rights | 1);
            entries.into_iter().map(|e| (0, e)).collect()
        })
}

/// A tree whose walks go deep: for each of `paths`, an entry at every level along the path
/// of its address (well-formed, or random words), then random extra words.
#[cfg(test)]
fn tree() -> impl Strategy<Value = (Vec<(u64, u64, u64)>, Vec<u64>)> {
    let random_path =
        prop::collection::vec(entry(), 4).prop_map(|v| v.into_iter().map(|e| (0, e)).collect());
    let path = prop_oneof![3 => well_formed_path(), 1 => random_path];
    (
        prop::collection::vec(
            (path, prop::collection::vec(0..512u64, 4), any::<u64>()),
            1..6,
        ),
        prop::collection::vec((0..8u64, 0..512u64, entry()), 0..32),
    )
        .prop_map(|(paths, extra)| {
            let mut writes = Vec::new();
            let mut addresses = Vec::new();
            for (levels, indices, offset) in paths {
                let mut table = 0u64;
                let mut linear = offset & 0x3fff_ffff;
                for (depth, ((_, value), index)) in levels.into_iter().zip(indices).enumerate() {
                    writes.push((table, index, value));
                    let shift = 39 - 9 * depth;
                    linear = linear & !(511 << shift) | index << shift;
                    let next = (value & 0x000f_ffff_ffff_f000) >> 12;
                    if next >= 8 || value & 0x80 != 0 {
                        break;
                    }
                    table = next;
                }
                if linear & (1 << 47) != 0 {
                    linear |= 0xffff_0000_0000_0000;
                }
                addresses.push(linear);
            }
            // Random words elsewhere in the tables, written first so the paths stay whole.
            let mut all: Vec<(u64, u64, u64)> = extra;
            all.extend(writes);
            (all, addresses)
        })
}

#[cfg(test)]
fn ram_with(writes: &[(u64, u64, u64)]) -> GuestMemoryMmap {
    let ram = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
    for &(frame, index, value) in writes {
        let _ = ram.write_obj(value, GuestAddress((frame << 12) + index * 8));
    }
    ram
}

#[cfg(test)]
proptest! {
    #![proptest_config(cases(1024))]

    /// Every entry read, every rights bit, every bit of the translation: the walker and the
    /// model agree on random trees.
    #[test]
    fn the_walker_agrees_with_the_model((writes, mut addresses) in tree(),
                                        random in prop::collection::vec(any::<u64>(), 4),
                                        nxe in any::<bool>(), gib in any::<bool>()) {
        let ram = ram_with(&writes);
        let view = GuestView::new(&ram, None);
        let mode = PagingMode::new(CpuPaging { max_phys_addr: PHYS_BITS as u8, gib_pages: gib, pse36: true }, if nxe { 0xd00 } else { 0x500 });
        addresses.extend(random);
        for linear in addresses {
            let real = as_model(&walk(&view, mode, Cr3::new(0), crate::addr::Gva::new(linear)));
            let model = model_walk(&ram, 0, (nxe, gib), 4, linear);
            prop_assert_eq!(&real, &model, "walk of {:#x}", linear);
            // The same tables read with five levels: one more table above the same frames.
            let la57 = mode.with_format(Format::FiveLevel);
            let real = as_model(&walk(&view, la57, Cr3::new(0), crate::addr::Gva::new(linear)));
            let model = model_walk(&ram, 0, (nxe, gib), 5, linear);
            prop_assert_eq!(&real, &model, "5-level walk of {:#x}", linear);
        }
    }

    /// The audit's ranges say the same as the model for every address the model maps, and
    /// cover nothing the model does not map.
    #[test]
    fn the_audit_maps_what_the_model_maps((writes, addresses) in tree(), nxe in any::<bool>(), gib in any::<bool>()) {
        let ram = ram_with(&writes);
        let view = GuestView::new(&ram, None);
        let mode = PagingMode::new(CpuPaging { max_phys_addr: PHYS_BITS as u8, gib_pages: gib, pse36: true }, if nxe { 0xd00 } else { 0x500 });
        let options = AuditOptions { max_entries: 1 << 20, max_ranges: 1 << 16, ..AuditOptions::default() };
        let audit = audit_with(&view, mode, Cr3::new(0), &[(crate::addr::Gpa::new(0), RAM)], &options);
        audit_agrees(&audit, &addresses, |linear| model_walk(&ram, 0, (nxe, gib), 4, linear)).map_err(TestCaseError::fail)?;
    }
}

/// The audit's ranges say the same as `model` for each of `addresses` the model maps, and
/// cover none the model does not map.
pub(crate) fn audit_agrees(
    audit: &crate::paging::Audit,
    addresses: &[u64],
    model: impl Fn(u64) -> ModelWalk,
) -> Result<(), String> {
    // An entry that points back at a table above it on the path is a finding (a loop, or the
    // recursive slot) and is not followed again: what the CPU reaches through it is not in
    // the ranges, by design.
    let looped = audit
        .findings
        .iter()
        .any(|f| matches!(f, Finding::TableLoop { .. }));
    if looped || audit.recursive_slot.is_some() || audit.ranges_omitted > 0 {
        return Ok(());
    }
    for &linear in addresses {
        let range = audit
            .ranges
            .iter()
            .find(|r| linear.wrapping_sub(r.start.raw()) < r.size);
        match (model(linear).outcome, range) {
            (
                Outcome::Mapped {
                    phys,
                    write,
                    user,
                    exec,
                    ..
                },
                Some(r),
            ) => {
                let rights = (r.writable, r.user, r.executable);
                if rights != (write, user, exec) {
                    return Err(format!(
                        "rights of {linear:#x}: the audit says {rights:?}, the model {:?}",
                        (write, user, exec)
                    ));
                }
                if let Some(start) = r.phys {
                    let frame = start.raw() + (linear - r.start.raw());
                    if frame != phys {
                        return Err(format!(
                            "frame of {linear:#x}: the audit says {frame:#x}, the model {phys:#x}"
                        ));
                    }
                }
            }
            (Outcome::Mapped { .. }, None) => {
                return Err(format!("{linear:#x} is mapped but in no range"));
            }
            (other, Some(r)) => {
                return Err(format!("{linear:#x} ({other:?}) lies in the range {r:?}"));
            }
            (_, None) => {}
        }
    }
    Ok(())
}

#[test]
fn the_model_walks_a_hand_built_2_mib_page() {
    // PML4[0] -> PDPT at 0x1000, PDPT[0] -> PD at 0x2000, PD[1] = 2 MiB page at 0x4000_0000.
    let ram = ram_with(&[(0, 0, 0x1003), (1, 0, 0x2003), (2, 1, 0x4000_0083)]);
    let w = model_walk(&ram, 0, (true, true), 4, 0x20_1234);
    assert_eq!(
        w.outcome,
        Outcome::Mapped {
            phys: 0x4000_1234,
            size: 0x20_0000,
            write: true,
            user: false,
            exec: true
        }
    );
    assert_eq!(w.reads.len(), 3);
}
