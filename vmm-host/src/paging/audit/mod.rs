//! The whole tree under a CR3 at once, the tool's `info mem`: what is mapped with which rights,
//! where the identity map, the direct map and a recursive slot are, which frames hold tables,
//! and what looks wrong.
//!
//! Garbage in, findings out: the walk reads each table with one [`PhysMemory::read_table`],
//! never follows a table already on its own path, and stops after
//! [`AuditOptions::max_entries`] entries, so a tree whose entries all point at one table ends
//! in a [`Finding::Truncated`] rather than 512⁴ visits.

mod finding;
mod frames;
mod runs;
mod walker;

#[cfg(test)]
mod tests;

pub use finding::{Alias, Finding, FindingKind};

use super::{Cr3, Format, Level, PagingMode, PhysMemory};
use crate::addr::{Gpa, Gva};
use std::fmt::{self, Write as _};

/// Bounds that keep a garbage tree from costing unbounded time or memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditOptions {
    /// Entries read before the audit stops with [`Finding::Truncated`]. Counted 512 per table.
    pub max_entries: u64,
    /// Findings kept of each kind; the rest are counted in a [`Finding::Omitted`]. Also the
    /// number of examples in the aggregate findings.
    pub max_findings_per_kind: usize,
    /// Ranges (and identity extents) listed; the rest are counted in
    /// [`Audit::ranges_omitted`].
    pub max_ranges: usize,
    /// The smallest linear upper-half mapping taken for a direct map; halved RAM when that is
    /// smaller, so a small guest's direct map still counts.
    pub direct_map_min: u64,
}

impl AuditOptions {
    /// 64 Mi entries: 64 times a 4 GiB tree of 4 KiB pages, well under a second.
    pub const DEFAULT_MAX_ENTRIES: u64 = 64 << 20;
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            max_entries: Self::DEFAULT_MAX_ENTRIES,
            max_findings_per_kind: 8,
            max_ranges: 1 << 18,
            direct_map_min: 16 << 20,
        }
    }
}

/// Virtual memory mapped with the same rights throughout, without holes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MappedRange {
    pub start: Gva,
    pub size: u64,
    /// RW on every level.
    pub writable: bool,
    /// US on every level.
    pub user: bool,
    /// NX on no level (always, without EFER.NXE).
    pub executable: bool,
    /// Where it starts in physical memory, when all of it is physically contiguous. Ranges
    /// are not split where the physical side jumps, as in QEMU's `info mem`: a range over
    /// scattered frames has `None`.
    pub phys: Option<Gpa>,
}

impl MappedRange {
    /// One past the last byte; 0 for a range that ends at the top of the address space.
    pub fn end(&self) -> Gva {
        Gva::new(self.start.raw().wrapping_add(self.size))
    }

    /// `u`/`-`, `r`, `w`/`-`, `x`/`-`.
    pub fn rights(&self) -> String {
        let flag = |on, c| if on { c } else { '-' };
        [
            flag(self.user, 'u'),
            'r',
            flag(self.writable, 'w'),
            flag(self.executable, 'x'),
        ]
        .iter()
        .collect()
    }
}

/// An upper-half mapping of RAM at a constant offset (Linux's `page_offset_base`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectMap {
    pub base: Gva,
    pub phys_start: Gpa,
    pub size: u64,
}

/// A frame holding a page table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFrame {
    pub frame: Gpa,
    pub level: Level,
    /// The lowest address whose walk reads this table.
    pub first_va: Gva,
}

/// Every table frame the audit read, sorted by frame, each once (at the level and address it
/// was first met at).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableFrames(Vec<TableFrame>);

impl TableFrames {
    /// The table in the frame holding `gpa`, if any.
    pub fn get(&self, gpa: Gpa) -> Option<&TableFrame> {
        let frame = gpa.raw() & !0xfff;
        self.0
            .binary_search_by_key(&frame, |t| t.frame.raw())
            .ok()
            .map(|i| &self.0[i])
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &TableFrame> {
        self.0.iter()
    }
}

/// The result of [`audit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    /// The format the tree was read in.
    pub format: Format,
    pub cr3: Cr3,
    pub entries_visited: u64,
    /// Coalesced, in address order (lower half first), at most
    /// [`AuditOptions::max_ranges`].
    pub ranges: Vec<MappedRange>,
    pub ranges_omitted: u64,
    /// Everything mapped, listed ranges or not.
    pub mapped_bytes: u64,
    /// Where virtual equals physical: (start, size), coalesced.
    pub identity: Vec<(Gva, u64)>,
    pub direct_map: Option<DirectMap>,
    /// A PML4 entry pointing at the PML4 itself; what it maps was not walked again.
    pub recursive_slot: Option<usize>,
    pub table_frames: TableFrames,
    pub findings: Vec<Finding>,
}

/// Audit the tree under `cr3` with the default bounds. `ram` lists guest RAM as (start,
/// size) regions: tables and pages elsewhere are findings.
pub fn audit(mem: &impl PhysMemory, mode: PagingMode, cr3: Cr3, ram: &[(Gpa, u64)]) -> Audit {
    audit_with(mem, mode, cr3, ram, &AuditOptions::default())
}

/// [`audit`] with chosen bounds.
pub fn audit_with(
    mem: &impl PhysMemory,
    mode: PagingMode,
    cr3: Cr3,
    ram: &[(Gpa, u64)],
    options: &AuditOptions,
) -> Audit {
    walker::Walker::new(mem, mode, cr3, ram, options).run()
}

impl Audit {
    /// Whether `gpa` lies in a page-table frame: its level, and the first address whose walk
    /// uses it.
    pub fn is_table_frame(&self, gpa: Gpa) -> Option<(Level, Gva)> {
        self.table_frames.get(gpa).map(|t| (t.level, t.first_va))
    }

    /// One to three lines for a report: what is mapped, the special maps, the findings.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "page tables under CR3 {}: {} mapped in {} ranges, {} table frames, {} entries",
            self.cr3,
            approximate_size(self.mapped_bytes),
            self.ranges.len() as u64 + self.ranges_omitted,
            self.table_frames.len(),
            self.entries_visited
        );
        let mut special = Vec::new();
        if !self.identity.is_empty() {
            let mut text = "identity ".to_string();
            for (i, &(start, size)) in self.identity.iter().take(2).enumerate() {
                let sep = if i == 0 { "" } else { ", " };
                let _ = write!(text, "{sep}{}", extent(start, size));
            }
            if self.identity.len() > 2 {
                let _ = write!(text, " and {} more", self.identity.len() - 2);
            }
            special.push(text);
        }
        if let Some(d) = self.direct_map {
            special.push(format!(
                "direct map {} -> {}",
                extent(d.base, d.size),
                d.phys_start
            ));
        }
        if let Some(slot) = self.recursive_slot {
            special.push(format!("recursive slot {slot}"));
        }
        if !special.is_empty() {
            let _ = write!(s, "\n{}", special.join("; "));
        }
        match self.findings.first() {
            None => s.push_str("\nno findings"),
            Some(first) => {
                let _ = write!(s, "\n{} findings, first: {first}", self.findings.len());
            }
        }
        s
    }
}

const UNITS: [(u64, &str); 4] = [
    (1 << 40, "TiB"),
    (1 << 30, "GiB"),
    (1 << 20, "MiB"),
    (1 << 10, "KiB"),
];

/// A size in the largest unit that divides it, so that it is exact.
fn size_text(bytes: u64) -> String {
    for (unit, name) in UNITS {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{} {name}", bytes / unit);
        }
    }
    format!("{bytes} bytes")
}

/// A size in the largest unit below it, to a tenth.
fn approximate_size(bytes: u64) -> String {
    match UNITS.iter().find(|(unit, _)| bytes >= *unit) {
        Some((unit, name)) if bytes.is_multiple_of(*unit) => format!("{} {name}", bytes / unit),
        Some((unit, name)) => format!("{:.1} {name}", bytes as f64 / *unit as f64),
        None => format!("{bytes} bytes"),
    }
}

fn extent(start: Gva, size: u64) -> String {
    format!(
        "{:#x}-{:#x} ({})",
        start.raw(),
        start.raw().wrapping_add(size),
        size_text(size)
    )
}

impl Audit {
    /// What is mapped: the ranges with their rights, the identity and direct maps and the
    /// recursive slot (the first part of the full listing, without frames and findings).
    pub fn maps(&self) -> String {
        let mut text = String::new();
        let _ = self.write_maps(&mut text);
        text
    }

    fn write_maps(&self, f: &mut impl fmt::Write) -> fmt::Result {
        let format = match self.format {
            Format::FourLevel => String::new(),
            other => format!(" ({other})"),
        };
        writeln!(
            f,
            "page tables under CR3 {}{format}: {} entries visited, {} ranges",
            self.cr3,
            self.entries_visited,
            self.ranges.len() as u64 + self.ranges_omitted
        )?;
        // 32-bit linear addresses print in 8 digits; sizes and frames (PAE and PSE-36 reach
        // above 4 GiB) keep 16.
        let width = if self.format.is_32_bit() { 8 } else { 16 };
        for r in &self.ranges {
            write!(
                f,
                "{:0width$x}-{:0width$x}  {:016x}  {}",
                r.start.raw(),
                r.end().raw(),
                r.size,
                r.rights()
            )?;
            match r.phys {
                Some(phys) => writeln!(f, "  phys {:016x}", phys.raw())?,
                None => writeln!(f, "  phys scattered")?,
            }
        }
        if self.ranges_omitted > 0 {
            writeln!(f, "... {} more ranges not listed", self.ranges_omitted)?;
        }
        if self.identity.is_empty() {
            writeln!(f, "identity map: none")?;
        }
        for &(start, size) in &self.identity {
            writeln!(f, "identity map: {}", extent(start, size))?;
        }
        match self.direct_map {
            Some(d) => writeln!(
                f,
                "direct map: {} -> {}",
                extent(d.base, d.size),
                d.phys_start
            )?,
            None => writeln!(f, "direct map: none")?,
        }
        match (self.recursive_slot, self.format.levels().first()) {
            (Some(slot), Some(&top)) => {
                let span = self.format.span(top);
                let base = slot as u64 * span;
                let base = match self.format {
                    Format::FourLevel => mm::paging::canonical(base),
                    _ => base,
                };
                writeln!(
                    f,
                    "recursive slot: {top}[{slot}], {}, not walked",
                    extent(Gva::new(base), span)
                )?
            }
            _ => writeln!(f, "recursive slot: none")?,
        }
        Ok(())
    }
}

impl fmt::Display for Audit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_maps(f)?;
        writeln!(f, "page-table frames: {}", self.table_frames.len())?;
        write!(f, "findings: {}", self.findings.len())?;
        for finding in &self.findings {
            write!(f, "\n  {finding}")?;
        }
        Ok(())
    }
}
