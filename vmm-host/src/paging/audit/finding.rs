//! What the audit reports as wrong, one line each: what, where, and what to check.

use super::extent;
use crate::addr::{Gpa, Gva};
use crate::paging::Level;
use std::fmt;

/// One thing wrong with the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The audit stopped after `entries` entries: the findings and ranges cover only the part
    /// of the tree visited before.
    Truncated { entries: u64 },
    /// A table of `level` would be at `table`, outside guest RAM, so it was not read. `entry`
    /// is the entry that points there (`None` when CR3 does); `va` is the start of the
    /// addresses that table would translate.
    TableOutsideRam {
        level: Level,
        table: Gpa,
        entry: Option<Gpa>,
        va: Gva,
    },
    /// `size` bytes at `va` map physical `frame`, which is not guest RAM (MMIO, or a bad
    /// frame number).
    PageOutsideRam { va: Gva, frame: Gpa, size: u64 },
    /// The `level` entry at `entry` (translating `va`) has `bits` reserved bits set; any
    /// access through it faults with RSVD, so nothing under it was visited.
    ReservedBits {
        level: Level,
        entry: Gpa,
        va: Gva,
        bits: u64,
    },
    /// A supervisor range both writable and executable.
    WritableExecutable { start: Gva, size: u64 },
    /// A range in the upper half (kernel space) that user mode may access.
    UserInKernelSpace { start: Gva, size: u64 },
    /// The `level` entry at `entry` (translating `va`) points at `table`, a table already on
    /// its own walk: it was not followed. The recursive PML4 slot is not reported here.
    TableLoop {
        level: Level,
        entry: Gpa,
        va: Gva,
        table: Gpa,
    },
    /// `count` page-table frames that no mapped page covers: the kernel can only reach them
    /// through a physical address used as a virtual one. The first few, by frame.
    UnreachedTables {
        count: u64,
        examples: Vec<(Level, Gpa)>,
    },
    /// `frames` 4 KiB frames mapped by two or more virtual pages, leaving out the identity
    /// map and the direct map, which alias by design. The first few found.
    Aliased { frames: u64, examples: Vec<Alias> },
    /// `count` more findings of `kind` than the audit keeps.
    Omitted { kind: FindingKind, count: u64 },
}

/// One frame two virtual pages share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alias {
    pub frame: Gpa,
    /// The earlier mapping, when the audit still remembered it (it keeps a bounded log).
    pub first: Option<Gva>,
    pub second: Gva,
}

/// The findings that come one per occurrence, and so are bounded per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FindingKind {
    TableOutsideRam,
    PageOutsideRam,
    ReservedBits,
    WritableExecutable,
    UserInKernelSpace,
    TableLoop,
}

impl FindingKind {
    pub(super) const COUNT: usize = 6;
    pub(super) const ALL: [FindingKind; Self::COUNT] = [
        FindingKind::TableOutsideRam,
        FindingKind::PageOutsideRam,
        FindingKind::ReservedBits,
        FindingKind::WritableExecutable,
        FindingKind::UserInKernelSpace,
        FindingKind::TableLoop,
    ];

    fn name(self) -> &'static str {
        match self {
            FindingKind::TableOutsideRam => "table-outside-RAM",
            FindingKind::PageOutsideRam => "page-outside-RAM",
            FindingKind::ReservedBits => "reserved-bits",
            FindingKind::WritableExecutable => "W+X",
            FindingKind::UserInKernelSpace => "user-in-kernel-space",
            FindingKind::TableLoop => "table-loop",
        }
    }
}

impl Finding {
    /// Where a per-occurrence finding is, for listing them in address order.
    pub(super) fn address(&self) -> Option<u64> {
        match self {
            Finding::TableOutsideRam { va, .. }
            | Finding::PageOutsideRam { va, .. }
            | Finding::ReservedBits { va, .. }
            | Finding::TableLoop { va, .. } => Some(va.raw()),
            Finding::WritableExecutable { start, .. }
            | Finding::UserInKernelSpace { start, .. } => Some(start.raw()),
            Finding::Truncated { .. }
            | Finding::UnreachedTables { .. }
            | Finding::Aliased { .. }
            | Finding::Omitted { .. } => None,
        }
    }

    /// The kind this finding counts against, for the bounded ones.
    pub fn kind(&self) -> Option<FindingKind> {
        Some(match self {
            Finding::TableOutsideRam { .. } => FindingKind::TableOutsideRam,
            Finding::PageOutsideRam { .. } => FindingKind::PageOutsideRam,
            Finding::ReservedBits { .. } => FindingKind::ReservedBits,
            Finding::WritableExecutable { .. } => FindingKind::WritableExecutable,
            Finding::UserInKernelSpace { .. } => FindingKind::UserInKernelSpace,
            Finding::TableLoop { .. } => FindingKind::TableLoop,
            Finding::Truncated { .. }
            | Finding::UnreachedTables { .. }
            | Finding::Aliased { .. }
            | Finding::Omitted { .. } => return None,
        })
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Truncated { entries } => write!(
                f,
                "truncated: stopped after {entries} entries, the budget; everything below covers \
                 only the part visited (a huge or garbage tree: check CR3 and the top tables)"
            ),
            Finding::TableOutsideRam {
                level,
                table,
                entry: Some(entry),
                va,
            } => write!(
                f,
                "table outside RAM: the entry at {entry} puts the {level} table for {va} at \
                 {table}, which is not guest RAM; check the frame written into that entry"
            ),
            Finding::TableOutsideRam {
                table, entry: None, ..
            } => write!(
                f,
                "table outside RAM: CR3 puts the PML4 at {table}, which is not guest RAM; check \
                 the value loaded into CR3"
            ),
            Finding::PageOutsideRam { va, frame, size } => write!(
                f,
                "page outside RAM: {} maps physical {frame}, which is not guest RAM; fine for \
                 MMIO, otherwise check the leaf entry's frame",
                extent(*va, *size)
            ),
            Finding::ReservedBits {
                level,
                entry,
                va,
                bits,
            } => write!(
                f,
                "reserved bits: the {level} entry at {entry} (for {va}) sets reserved bits \
                 {bits:#x}, so every access through it faults with RSVD; check for an unmasked \
                 address or stray flags"
            ),
            Finding::WritableExecutable { start, size } => write!(
                f,
                "W+X: kernel range {} is writable and executable; set NX on data or clear RW on \
                 code",
                extent(*start, *size)
            ),
            Finding::UserInKernelSpace { start, size } => write!(
                f,
                "user page in kernel space: {} is user-accessible; check US on every level of \
                 its walk",
                extent(*start, *size)
            ),
            Finding::TableLoop {
                level,
                entry,
                va,
                table,
            } => write!(
                f,
                "table loop: the {level} entry at {entry} (for {va}) points at {table}, a table \
                 already on its own walk; not followed; check the frame written into that entry"
            ),
            Finding::UnreachedTables { count, examples } => unreached(f, *count, examples),
            Finding::Aliased { frames, examples } => aliased(f, *frames, examples),
            Finding::Omitted { kind, count } => {
                write!(f, "... and {count} more {} findings", kind.name())
            }
        }
    }
}

fn unreached(f: &mut fmt::Formatter<'_>, count: u64, examples: &[(Level, Gpa)]) -> fmt::Result {
    write!(
        f,
        "unreached tables: {count} page-table frames are covered by no mapping ("
    )?;
    for (i, (level, frame)) in examples.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        write!(f, "{sep}{level} {frame}")?;
    }
    if count > examples.len() as u64 {
        f.write_str(", ...")?;
    }
    f.write_str(
        "); only a physical address used as a virtual one can touch them: check how the \
         kernel edits its tables",
    )
}

fn aliased(f: &mut fmt::Formatter<'_>, frames: u64, examples: &[Alias]) -> fmt::Result {
    write!(
        f,
        "aliasing: {frames} frames are mapped at two or more virtual pages outside the identity \
         and direct maps ("
    )?;
    for (i, alias) in examples.iter().enumerate() {
        let sep = if i == 0 { "" } else { "; " };
        match alias.first {
            Some(first) => write!(f, "{sep}{} at {first} and {}", alias.frame, alias.second)?,
            None => write!(f, "{sep}{} again at {}", alias.frame, alias.second)?,
        }
    }
    if frames > examples.len() as u64 {
        f.write_str("; ...")?;
    }
    f.write_str("); check for a double map or a missing unmap")
}
