//! Guest-physical memory made up in the host, for tests and benchmarks of the walker and the
//! audit: page tables laid out by hand without booting anything.
//!
//! It is sparse because the trees worth measuring describe gigabytes of RAM while only their
//! tables hold data: a 4 GiB identity map needs 8 MiB of tables, and storing the 4 GiB it
//! maps would only cost time and memory. Every page inside the declared size is RAM; pages
//! never written read as zeros.

use super::{Cr3, Format, Level, PhysMemory};
use crate::addr::Gpa;
use mm::paging::{ADDR_MASK, ENTRIES, KERNEL_RW, PAGE_SIZE};
use std::collections::HashMap;

/// Sparse guest RAM from 0 to `size`: only pages that were written are stored.
#[derive(Debug, Clone)]
pub struct SyntheticMemory {
    size: u64,
    pages: HashMap<u64, Box<[u64; ENTRIES]>>,
}

impl SyntheticMemory {
    /// RAM from guest-physical 0 to `size` (rounded down to a page).
    pub fn new(size: u64) -> Self {
        Self {
            size: size & !(PAGE_SIZE - 1),
            pages: HashMap::new(),
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The RAM list an audit wants: one region from 0.
    pub fn ram(&self) -> [(Gpa, u64); 1] {
        [(Gpa::new(0), self.size)]
    }

    /// Store `value` at `gpa`.
    ///
    /// # Panics
    /// If `gpa` is not 8-byte aligned or the word is not inside the memory: tests lay out
    /// their trees on purpose, and a stray write is a bug in the test.
    pub fn write_u64(&mut self, gpa: Gpa, value: u64) {
        let raw = gpa.raw();
        assert!(raw.is_multiple_of(8), "unaligned write at {gpa}");
        let slot = ((raw % PAGE_SIZE) / 8) as usize;
        self.page_mut(Gpa::new(raw - raw % PAGE_SIZE))[slot] = value;
    }

    /// Store the 4-byte `value` at `gpa` (an entry of 32-bit paging).
    ///
    /// # Panics
    /// If `gpa` is not 4-byte aligned or not inside the memory.
    pub fn write_u32(&mut self, gpa: Gpa, value: u32) {
        let raw = gpa.raw();
        assert!(raw.is_multiple_of(4), "unaligned write at {gpa}");
        let word = Gpa::new(raw & !7);
        let shift = (raw & 4) * 8;
        let old = self.read_u64(word).unwrap_or(0);
        let new = (old & !(0xffff_ffff << shift)) | (u64::from(value) << shift);
        self.write_u64(word, new);
    }

    /// The 512 words of the page at `page` (4 KiB aligned), created as zeros when new.
    ///
    /// # Panics
    /// If `page` is not page-aligned or not inside the memory.
    pub fn page_mut(&mut self, page: Gpa) -> &mut [u64; ENTRIES] {
        let raw = page.raw();
        assert!(
            raw.is_multiple_of(PAGE_SIZE) && raw < self.size,
            "{page} is not a page of this {:#x}-byte memory",
            self.size
        );
        self.pages
            .entry(raw / PAGE_SIZE)
            .or_insert_with(|| Box::new([0; ENTRIES]))
    }

    fn page(&self, frame: u64) -> Option<&[u64; ENTRIES]> {
        self.pages.get(&frame).map(|page| &**page)
    }
}

impl PhysMemory for SyntheticMemory {
    fn read_u64(&self, gpa: Gpa) -> Option<u64> {
        let raw = gpa.raw();
        if raw.checked_add(8)? > self.size {
            return None;
        }
        // An unaligned word may straddle two pages.
        let mut bytes = [0u8; 8];
        for (i, byte) in bytes.iter_mut().enumerate() {
            let at = raw + i as u64;
            let word = self
                .page(at / PAGE_SIZE)
                .map_or(0, |page| page[((at % PAGE_SIZE) / 8) as usize]);
            *byte = word.to_le_bytes()[(at % 8) as usize];
        }
        Some(u64::from_le_bytes(bytes))
    }

    fn read_table(&self, table: Gpa, out: &mut [u64; ENTRIES]) -> bool {
        let raw = table.raw();
        if !raw.is_multiple_of(PAGE_SIZE) || raw >= self.size {
            return false;
        }
        match self.page(raw / PAGE_SIZE) {
            Some(page) => out.copy_from_slice(page),
            None => out.fill(0),
        }
        true
    }
}

/// How many tables of `entries`-sized fan-out are needed for `count` children.
fn tables_for(count: u64) -> u64 {
    count.div_ceil(ENTRIES as u64)
}

/// A tree that maps virtual 0..`size` to physical 0..`size` with 4 KiB pages, kernel
/// read-write (P RW, executable), with its tables in the memory just above `size`. Those
/// tables are themselves not mapped, as in a kernel that builds its identity map for RAM
/// only.
///
/// # Panics
/// If `size` is not a multiple of 4 KiB, or exceeds one PML4 entry per 512 GiB of the lower
/// half (256 TiB would not fit in any test anyway).
pub fn identity_tree_4k(size: u64) -> (SyntheticMemory, Cr3) {
    assert!(
        size.is_multiple_of(PAGE_SIZE),
        "{size:#x} is not a whole number of pages"
    );
    assert!(size <= 1 << 47, "{size:#x} does not fit the lower half");
    let pts = tables_for(size / PAGE_SIZE);
    let pds = tables_for(pts);
    let pdpts = tables_for(pds);
    let pml4 = size;
    let first_pdpt = pml4 + PAGE_SIZE;
    let first_pd = first_pdpt + pdpts * PAGE_SIZE;
    let first_pt = first_pd + pds * PAGE_SIZE;
    let end = first_pt + pts * PAGE_SIZE;
    let mut mem = SyntheticMemory::new(end);

    // Each level points its n-th entry (counted across the whole level) at the n-th table of
    // the level below, so one routine lays out all four.
    let mut fill = |first_table: u64, children: u64, child_address: &dyn Fn(u64) -> u64| {
        for child in 0..children {
            let table = first_table + (child / ENTRIES as u64) * PAGE_SIZE;
            let slot = crate::narrow::to_usize(child % ENTRIES as u64);
            mem.page_mut(Gpa::new(table))[slot] = (child_address(child) & ADDR_MASK) | KERNEL_RW;
        }
    };
    fill(pml4, pdpts, &|n| first_pdpt + n * PAGE_SIZE);
    fill(first_pdpt, pds, &|n| first_pd + n * PAGE_SIZE);
    fill(first_pd, pts, &|n| first_pt + n * PAGE_SIZE);
    fill(first_pt, size / PAGE_SIZE, &|n| n * PAGE_SIZE);
    (mem, Cr3::new(pml4))
}

/// [`identity_tree_4k`] in any paging format: virtual 0..`size` mapped to physical 0..`size`
/// with 4 KiB pages, kernel read-write, the tables just above `size`, top table first.
///
/// # Panics
/// If `size` is not a multiple of 4 KiB, `format` is [`Format::Off`], or the tables of a
/// 32-bit format would not lie below 4 GiB (keep `size` at 3 GiB or less there).
pub fn identity_tree(format: Format, size: u64) -> (SyntheticMemory, Cr3) {
    let levels = format.levels();
    assert!(!levels.is_empty(), "paging off has no tables");
    assert!(
        size.is_multiple_of(PAGE_SIZE),
        "{size:#x} is not a whole number of pages"
    );
    // Tables per level, bottom up: each holds `entries` children.
    let mut counts = vec![0u64; levels.len()];
    let mut children = size / PAGE_SIZE;
    for (i, &level) in levels.iter().enumerate().rev() {
        counts[i] = children.div_ceil(format.entries(level) as u64).max(1);
        children = counts[i];
    }
    let mut firsts = Vec::with_capacity(levels.len());
    let mut next = size;
    for &count in &counts {
        firsts.push(next);
        next += count * PAGE_SIZE;
    }
    assert!(
        !format.is_32_bit() || next <= 1 << 32,
        "the tables end at {next:#x}, above what a 32-bit CR3 and entries reach"
    );
    let mut mem = SyntheticMemory::new(next);
    for (i, &level) in levels.iter().enumerate() {
        let children = match counts.get(i + 1) {
            Some(&tables) => tables,
            None => size / PAGE_SIZE,
        };
        let child_address = |n: u64| match firsts.get(i + 1) {
            Some(&first) => first + n * PAGE_SIZE,
            None => n * PAGE_SIZE,
        };
        // A PAE PDPTE has no R/W bit: it is reserved there.
        let flags = if (format, level) == (Format::Pae, Level::Pdpt) {
            1
        } else {
            KERNEL_RW
        };
        let per_table = format.entries(level) as u64;
        for n in 0..children {
            let table = firsts[i] + (n / per_table) * PAGE_SIZE;
            let at = Gpa::new(table + (n % per_table) * format.entry_size());
            let entry = child_address(n) | flags;
            if format.entry_size() == 4 {
                mem.write_u32(at, crate::narrow::low_u32(entry));
            } else {
                mem.write_u64(at, entry);
            }
        }
    }
    (mem, Cr3::new(size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Gva;
    use crate::paging::{Level, PagingMode, WalkEnd, walk};

    #[test]
    fn unwritten_ram_reads_zero_and_beyond_it_nothing() {
        let mut mem = SyntheticMemory::new(0x10_0000);
        mem.write_u64(Gpa::new(0x2008), 0x1122_3344_5566_7788);
        assert_eq!(mem.read_u64(Gpa::new(0x2008)), Some(0x1122_3344_5566_7788));
        assert_eq!(mem.read_u64(Gpa::new(0x200c)), Some(0x1122_3344));
        assert_eq!(mem.read_u64(Gpa::new(0x5000)), Some(0));
        assert_eq!(mem.read_u64(Gpa::new(0xf_fffc)), None);
        let mut table = [1; ENTRIES];
        assert!(mem.read_table(Gpa::new(0x2000), &mut table));
        assert_eq!(table[1], 0x1122_3344_5566_7788);
        assert_eq!(table[0], 0);
        assert!(!mem.read_table(Gpa::new(0x10_0000), &mut table));
    }

    #[test]
    fn identity_trees_map_every_page_in_every_format() {
        let formats = [
            Format::TwoLevel { pse: false },
            Format::Pae,
            Format::FourLevel,
            Format::FiveLevel,
        ];
        for format in formats {
            let size = 0x80_3000;
            let (mem, cr3) = identity_tree(format, size);
            let mode = PagingMode::new(crate::paging::CpuPaging::with_phys_bits(48), 0)
                .with_format(format);
            for at in [0, 0x40_0abc, size - 1] {
                let w = walk(&mem, mode, cr3, Gva::new(at));
                assert_eq!(w.translation(), Some(Gpa::new(at)), "{format}: {w}");
            }
            let w = walk(&mem, mode, cr3, Gva::new(size));
            assert_eq!(w.end, WalkEnd::NotPresent { level: Level::Pt }, "{format}");
            let audit = crate::paging::audit(&mem, mode, cr3, &mem.ram());
            assert_eq!(audit.identity, [(Gva::new(0), size)], "{format}");
        }
    }

    #[test]
    fn the_identity_tree_walks_to_where_it_says() {
        let (mem, cr3) = identity_tree_4k(0x40_3000);
        let mode = PagingMode::new(crate::paging::CpuPaging::with_phys_bits(48), 0);
        let w = walk(&mem, mode, cr3, Gva::new(0x40_2abc));
        assert_eq!(w.translation(), Some(Gpa::new(0x40_2abc)));
        let w = walk(&mem, mode, cr3, Gva::new(0x40_3000));
        assert_eq!(w.end, WalkEnd::NotPresent { level: Level::Pt });
        // PML4, one PDPT, one PD, three PTs.
        assert_eq!(mem.size(), 0x40_3000 + 6 * PAGE_SIZE);
    }
}
