//! Second walkers for 32-bit paging (Intel SDM vol. 3, §4.3) and PAE paging (§4.4), written
//! from the manual with no code shared with `paging`, and the property tests that hold the
//! real walker and the audit to them on random tables.

#[cfg(test)]
use crate::addr::{Gpa, Gva};
#[cfg(test)]
use crate::paging::{AuditOptions, CpuPaging, Cr3, Format, PagingMode, audit_with, walk};
#[cfg(test)]
use crate::robustness::cases;
#[cfg(test)]
use crate::virt::GuestView;
use crate::walk_model::{ModelWalk, Outcome, read_entry};
#[cfg(test)]
use crate::walk_model::{as_model, audit_agrees};
#[cfg(test)]
use proptest::prelude::*;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

#[cfg(test)]
const RAM: u64 = 1 << 20;

/// The CPU the models describe.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cpu {
    pub(crate) max_phys: u32,
    pub(crate) pse36: bool,
    pub(crate) nxe: bool,
}

fn read_u32(ram: &GuestMemoryMmap, at: u64) -> Option<u64> {
    ram.read_obj::<u32>(GuestAddress(at)).ok().map(u64::from)
}

/// Bits `low..=high` set.
fn bits(low: u32, high: u32) -> u64 {
    (low..=high).fold(0, |mask, bit| mask | 1 << bit)
}

fn stop(reads: Vec<(u64, u64, u64)>, outcome: Outcome) -> ModelWalk {
    ModelWalk { reads, outcome }
}

/// 32-bit paging: a directory of 1024 4-byte entries at CR3[31:12], each pointing at a table of
/// 1024 more or, with CR4.PSE and PS, mapping 4 MiB (PDE bits 20:13 giving address bits
/// 39:32 with PSE-36). Nothing is reserved anywhere else; there is no NX.
pub(crate) fn model_walk_32(
    ram: &GuestMemoryMmap,
    cr3: u64,
    pse: bool,
    cpu: Cpu,
    linear: u64,
) -> ModelWalk {
    let mut reads = Vec::new();
    if linear > 0xffff_ffff {
        return stop(reads, Outcome::NonCanonical);
    }
    let directory = cr3 & 0xffff_f000;
    let pd_index = linear >> 22;
    let Some(pde) = read_u32(ram, directory + pd_index * 4) else {
        return stop(reads, Outcome::TableOutsideRam(2));
    };
    reads.push((directory, pd_index, pde));
    if pde & 1 == 0 {
        return stop(reads, Outcome::NotPresent(2));
    }
    if pse && pde & 0x80 != 0 {
        let m = cpu.max_phys.min(40);
        let reserved = if cpu.pse36 {
            bits(m - 19, 21)
        } else {
            bits(13, 21)
        };
        if pde & reserved != 0 {
            return stop(reads, Outcome::Reserved(2));
        }
        let phys = ((pde >> 13) & 0xff) << 32 | (pde & 0xffc0_0000) | (linear & 0x3f_ffff);
        let (write, user) = (pde & 2 != 0, pde & 4 != 0);
        let size = 4 << 20;
        return stop(
            reads,
            Outcome::Mapped {
                phys,
                size,
                write,
                user,
                exec: true,
            },
        );
    }
    let table = pde & 0xffff_f000;
    let pt_index = (linear >> 12) & 0x3ff;
    let Some(pte) = read_u32(ram, table + pt_index * 4) else {
        return stop(reads, Outcome::TableOutsideRam(1));
    };
    reads.push((table, pt_index, pte));
    if pte & 1 == 0 {
        return stop(reads, Outcome::NotPresent(1));
    }
    let phys = (pte & 0xffff_f000) | (linear & 0xfff);
    let write = pde & 2 != 0 && pte & 2 != 0;
    let user = pde & 4 != 0 && pte & 4 != 0;
    stop(
        reads,
        Outcome::Mapped {
            phys,
            size: 4096,
            write,
            user,
            exec: true,
        },
    )
}

/// PAE paging: four 8-byte PDPTEs at CR3[31:5] (no rights; bits 2:1, 8:5 and 63 reserved),
/// then a directory and a table of 512 8-byte entries; PS in a directory entry maps 2 MiB.
pub(crate) fn model_walk_pae(ram: &GuestMemoryMmap, cr3: u64, cpu: Cpu, linear: u64) -> ModelWalk {
    let mut reads = Vec::new();
    if linear > 0xffff_ffff {
        return stop(reads, Outcome::NonCanonical);
    }
    let address = bits(12, cpu.max_phys - 1);
    let above = bits(cpu.max_phys, 51);
    let pdpt = cr3 & 0xffff_ffe0;
    let index = linear >> 30;
    let Some(pdpte) = read_entry(ram, pdpt + index * 8) else {
        return stop(reads, Outcome::TableOutsideRam(3));
    };
    reads.push((pdpt, index, pdpte));
    if pdpte & 1 == 0 {
        return stop(reads, Outcome::NotPresent(3));
    }
    if pdpte & (above | bits(1, 2) | bits(5, 8) | 1 << 63) != 0 {
        return stop(reads, Outcome::Reserved(3));
    }
    let no_nx = if cpu.nxe { 0 } else { 1 << 63 };
    let (mut write, mut user, mut exec) = (true, true, true);
    let mut table = pdpte & address;
    for level in [2u32, 1] {
        let shift = 12 + 9 * (level - 1);
        let index = (linear >> shift) & 511;
        let Some(entry) = read_entry(ram, table + index * 8) else {
            return stop(reads, Outcome::TableOutsideRam(level));
        };
        reads.push((table, index, entry));
        if entry & 1 == 0 {
            return stop(reads, Outcome::NotPresent(level));
        }
        let large = level == 2 && entry & 0x80 != 0;
        let misaligned = if large { bits(13, 20) } else { 0 };
        if entry & (above | no_nx | misaligned) != 0 {
            return stop(reads, Outcome::Reserved(level));
        }
        write &= entry & 2 != 0;
        user &= entry & 4 != 0;
        exec &= !(cpu.nxe && entry >> 63 == 1);
        if large || level == 1 {
            let size = 1u64 << shift;
            let phys = (entry & address & !(size - 1)) | (linear & (size - 1));
            return stop(
                reads,
                Outcome::Mapped {
                    phys,
                    size,
                    write,
                    user,
                    exec,
                },
            );
        }
        table = entry & address;
    }
    unreachable!("level 1 always maps a page")
}

/// A 32-bit entry worth walking through: a table among the first frames, a page anywhere, a
/// 4 MiB page with PSE-36 bits, garbage.
#[cfg(test)]
fn entry32() -> impl Strategy<Value = u64> + Clone {
    let flags = any::<u64>().prop_map(|f| f & 0xe7e);
    prop_oneof![
        4 => ((1..8u64), flags.clone()).prop_map(|(frame, f)| frame << 12 | f | 1),
        2 => (any::<u32>(), flags.clone()).prop_map(|(frame, f)| u64::from(frame) & 0xffff_f000 | f | 1),
        2 => (any::<u32>(), flags).prop_map(|(frame, f)| u64::from(frame) & 0xffff_e000 | f | 0x81),
        1 => any::<u32>().prop_map(u64::from),
        1 => Just(0u64),
    ]
}

/// A PAE entry: as `entry()` of the 4-level model, but tables among the first frames.
#[cfg(test)]
fn entry_pae() -> impl Strategy<Value = u64> + Clone {
    let flags = any::<u64>().prop_map(|f| f & 0x8000_0000_0000_0e7e);
    prop_oneof![
        4 => ((1..8u64), flags.clone()).prop_map(|(frame, f)| frame << 12 | f | 1),
        // A PDPTE with no reserved bits.
        2 => (1..8u64).prop_map(|frame| frame << 12 | 1),
        2 => (any::<u64>(), flags.clone()).prop_map(|(frame, f)| frame & 0x3fff_ffe0_0000 | f | 0x81),
        1 => (any::<u64>(), flags).prop_map(|(frame, f)| frame & 0x3fff_ffff_f000 | f | 1),
        1 => any::<u64>(),
        1 => Just(0u64),
    ]
}

/// (frame, byte offset, value) writes into the first 8 frames, and addresses whose walks
/// follow them: each address's indices are chosen where the writes went.
#[cfg(test)]
fn tree(
    entry: impl Strategy<Value = u64> + Clone,
    entry_size: u64,
) -> impl Strategy<Value = (Vec<(u64, u64, u64)>, Vec<u64>)> {
    let slots = 4096 / entry_size;
    (
        prop::collection::vec((0..8u64, 0..slots, entry), 1..48),
        prop::collection::vec(any::<u32>(), 8),
    )
        .prop_map(move |(writes, random)| {
            let writes: Vec<(u64, u64, u64)> = (writes.into_iter())
                .map(|(f, i, v)| (f, i * entry_size, v))
                .collect();
            // Indices that were written, used at every level of an address.
            let mut addresses: Vec<u64> = random.iter().map(|&r| u64::from(r)).collect();
            for (n, w) in writes.iter().enumerate() {
                let index = w.1 / entry_size;
                let other = writes[(n + 1) % writes.len()].1 / entry_size;
                let r = u64::from(random[n % random.len()]);
                addresses.push(if entry_size == 4 {
                    index << 22 | (other << 12) | (r & 0xfff)
                } else {
                    (index & 3) << 30
                        | (index << 21 & 0x3fe0_0000)
                        | (other << 12 & 0x1f_f000)
                        | (r & 0xfff)
                });
            }
            (writes, addresses)
        })
}

#[cfg(test)]
fn ram_with(writes: &[(u64, u64, u64)], entry_size: u64) -> GuestMemoryMmap {
    let ram = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
    for &(frame, offset, value) in writes {
        let at = GuestAddress((frame << 12) + offset);
        let _ = if entry_size == 4 {
            ram.write_obj(value as u32, at)
        } else {
            ram.write_obj(value, at)
        };
    }
    ram
}

#[cfg(test)]
fn cpu() -> impl Strategy<Value = Cpu> {
    (
        prop_oneof![Just(36u32), Just(40), Just(46)],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(max_phys, pse36, nxe)| Cpu {
            max_phys,
            pse36,
            nxe,
        })
}

#[cfg(test)]
fn mode(cpu: Cpu, format: Format) -> PagingMode {
    let features = CpuPaging {
        max_phys_addr: cpu.max_phys as u8,
        gib_pages: true,
        pse36: cpu.pse36,
    };
    PagingMode::new(features, if cpu.nxe { 0x800 } else { 0 }).with_format(format)
}

#[cfg(test)]
const OPTIONS: AuditOptions = AuditOptions {
    max_entries: 1 << 20,
    max_findings_per_kind: 8,
    max_ranges: 1 << 16,
    direct_map_min: 16 << 20,
};

#[cfg(test)]
proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn the_32_bit_walker_and_audit_agree_with_the_model((writes, addresses) in tree(entry32(), 4),
                                                        cpu in cpu(), pse in any::<bool>()) {
        let ram = ram_with(&writes, 4);
        let view = GuestView::new(&ram, None);
        let mode = mode(cpu, Format::TwoLevel { pse });
        for &linear in &addresses {
            let real = as_model(&walk(&view, mode, Cr3::new(0), Gva::new(linear)));
            prop_assert_eq!(&real, &model_walk_32(&ram, 0, pse, cpu, linear), "walk of {:#x}", linear);
        }
        let audit = audit_with(&view, mode, Cr3::new(0), &[(Gpa::new(0), RAM)], &OPTIONS);
        audit_agrees(&audit, &addresses, |linear| model_walk_32(&ram, 0, pse, cpu, linear)).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn the_pae_walker_and_audit_agree_with_the_model((writes, addresses) in tree(entry_pae(), 8),
                                                     cpu in cpu()) {
        let ram = ram_with(&writes, 8);
        let view = GuestView::new(&ram, None);
        let mode = mode(cpu, Format::Pae);
        for &linear in &addresses {
            let real = as_model(&walk(&view, mode, Cr3::new(0), Gva::new(linear)));
            prop_assert_eq!(&real, &model_walk_pae(&ram, 0, cpu, linear), "walk of {:#x}", linear);
        }
        let audit = audit_with(&view, mode, Cr3::new(0), &[(Gpa::new(0), RAM)], &OPTIONS);
        audit_agrees(&audit, &addresses, |linear| model_walk_pae(&ram, 0, cpu, linear)).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn the_models_walk_hand_built_pages() {
    let cpu = Cpu {
        max_phys: 40,
        pse36: true,
        nxe: true,
    };
    // 32-bit: PD[1] a 4 MiB page at 0x12_0040_0000 (PSE-36 bits 0x12).
    let ram = ram_with(&[(0, 4, 0x40_0000 | 0x12 << 13 | 0x83)], 4);
    let w = model_walk_32(&ram, 0, true, cpu, 0x40_1234);
    assert!(
        matches!(
            w.outcome,
            Outcome::Mapped {
                phys: 0x12_0040_1234,
                ..
            }
        ),
        "{w:?}"
    );
    // PAE: PDPTE[0] → PD at 0x1000, PD[0] → 2 MiB page at 0x60_0000.
    let ram = ram_with(&[(0, 0, 0x1001), (1, 0, 0x60_0083)], 8);
    let w = model_walk_pae(&ram, 0, cpu, 0x1234);
    assert!(
        matches!(
            w.outcome,
            Outcome::Mapped {
                phys: 0x60_1234,
                size: 0x20_0000,
                ..
            }
        ),
        "{w:?}"
    );
}
