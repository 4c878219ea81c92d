//! BoxKernel's `vmm_dump_page_tables` (bug site #4 in the boxkernel variants): every mapping
//! of a context, coalesced into ranges, and how many tables each level holds.

use super::{Context, RECURSIVE_SLOT, Table, Variant, in_context, next_table, pml4_table, variant};
use crate::kprintln;
use mm::paging::{ENTRIES, Flags, HUGE, Level, canonical, entry_phys, is_present};

/// Leaf flags that matter for a range (not accessed/dirty, which change as pages are used).
const RANGE_FLAGS: u64 = 0x8000_0000_0000_011e;

#[derive(Default)]
struct Range {
    va: u64,
    end: u64,
    pa: u64,
    flags: u64,
}

#[derive(Default)]
struct Dump {
    current: Option<Range>,
    ranges: usize,
    tables: [usize; 4],
}

impl Dump {
    fn leaf(&mut self, va: u64, size: u64, entry: u64) {
        let pa = entry_phys(entry) & !(size - 1);
        let flags = entry & RANGE_FLAGS | 1;
        if let Some(r) = &mut self.current
            && r.end == va
            && r.pa + (r.end - r.va) == pa
            && r.flags == flags
        {
            r.end = va + size;
            return;
        }
        self.flush();
        self.current = Some(Range {
            va,
            end: va + size,
            pa,
            flags,
        });
    }

    fn flush(&mut self) {
        if let Some(r) = self.current.take() {
            kprintln!(
                "  {:#018x}-{:#018x} {:>9} KiB -> {:#012x} {}",
                r.va,
                r.end - 1,
                (r.end - r.va) >> 10,
                r.pa,
                Flags(r.flags)
            );
            self.ranges += 1;
        }
    }
}

#[inline(never)]
pub fn vmm_dump_page_tables(ctx: Context) {
    kprintln!(
        "[VMM] page tables of the context with PML4 at {:#x} ({}):",
        ctx.pml4,
        variant().name()
    );
    let mut dump = Dump::default();
    in_context(ctx, || {
        let pml4 = pml4_table(ctx);
        dump.tables[0] = 1;
        for i in 0..ENTRIES {
            if variant() == Variant::Recursive && i == RECURSIVE_SLOT {
                continue;
            }
            // SAFETY: the PML4 reached the variant's way.
            let entry = unsafe { (*pml4)[i] };
            if is_present(entry) {
                walk(
                    ctx,
                    &mut dump,
                    entry,
                    canonical((i as u64) << 39),
                    Level::Pdpt,
                );
            }
        }
    });
    dump.flush();
    let [_, pdpts, pds, pts] = dump.tables;
    kprintln!(
        "[VMM] {} ranges; tables: 1 PML4, {} PDPT, {} PD, {} PT",
        dump.ranges,
        pdpts,
        pds,
        pts
    );
    if variant() == Variant::Recursive {
        kprintln!("[VMM] PML4[{RECURSIVE_SLOT}] is the recursive slot (not listed)");
    }
}

fn walk(ctx: Context, dump: &mut Dump, entry: u64, va: u64, level: Level) {
    let slot = match level {
        Level::Pml4 => 0,
        Level::Pdpt => 1,
        Level::Pd => 2,
        Level::Pt => 3,
    };
    dump.tables[slot] += 1;
    let table: *mut Table = next_table(ctx, entry, va, level);
    for i in 0..ENTRIES {
        // SAFETY: the table `entry` points at, reached the variant's way (bug #4 when that is
        // a physical address outside the identity map).
        let e = unsafe { (*table)[i] };
        if !is_present(e) {
            continue;
        }
        let child = va | ((i as u64) << level.shift());
        let size = 1u64 << level.shift();
        match level {
            Level::Pt => dump.leaf(child, size, e),
            _ if e & HUGE != 0 => dump.leaf(child, size, e),
            Level::Pdpt => walk(ctx, dump, e, child, Level::Pd),
            Level::Pd => walk(ctx, dump, e, child, Level::Pt),
            Level::Pml4 => {}
        }
    }
}
