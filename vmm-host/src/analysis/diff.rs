//! What the handler changed: the entries on a fault's walk, before and after.

use crate::addr::{Gpa, Gva};
use crate::paging::{Level, PagingMode, Pte, Step, Walk};
use crate::virt::AddressSpace;
use std::fmt;

/// The entries one walk read at the fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub seq: u64,
    pub walk: Walk,
    pub mode: PagingMode,
}

/// One entry that is not what it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub level: Level,
    pub index: usize,
    pub entry_address: Gpa,
    /// `None` where the walk at the fault did not reach this level.
    pub old: Option<Pte>,
    pub new: Pte,
}

impl Change {
    /// Only the accessed or dirty bit appeared: the CPU's own bookkeeping when the access was
    /// retried, not the handler's work.
    pub fn hardware_only(&self) -> bool {
        let bits = mm::paging::ACCESSED | mm::paging::DIRTY;
        self.old.is_some_and(|old| {
            let changed = old.raw() ^ self.new.raw();
            changed & !bits == 0 && changed & self.new.raw() == changed
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff {
    pub gva: Gva,
    pub changes: Vec<Change>,
    /// The walk now, for the report's last line.
    pub now: Walk,
    /// Resolved when the run ended rather than at the next exception.
    pub at_end: bool,
}

impl Snapshot {
    /// Walk the same address under the same CR3 again and list the entries that changed,
    /// including entries on levels the first walk never reached.
    pub fn resolve(&self, space: &AddressSpace<'_>, at_end: bool) -> Diff {
        let now = space.walk(self.walk.gva);
        let before = |step: &Step| {
            self.walk
                .steps
                .iter()
                .find(|s| s.level == step.level && s.entry_address() == step.entry_address())
                .map(|s| s.entry)
        };
        let changes = now
            .steps
            .iter()
            .filter_map(|step| {
                let old = before(step);
                (old != Some(step.entry)).then_some(Change {
                    level: step.level,
                    index: step.index,
                    entry_address: step.entry_address(),
                    old,
                    new: step.entry,
                })
            })
            .collect();
        Diff {
            gva: self.walk.gva,
            changes,
            now,
            at_end,
        }
    }
}

fn entry(pte: Pte) -> String {
    format!("{:#018x} ({pte}), PFN {:#x}", pte.raw(), pte.pfn())
}

impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.changes.is_empty() && self.at_end {
            return writeln!(
                f,
                "  changed: nothing on the walk of {} by the end of the run",
                self.gva
            );
        }
        if self.changes.is_empty() {
            return writeln!(
                f,
                "  changed: nothing on the walk of {} (a handler that returns now faults again)",
                self.gva
            );
        }
        writeln!(
            f,
            "  changed while the fault was handled (walk of {}):",
            self.gva
        )?;
        let hardware: Vec<String> = self
            .changes
            .iter()
            .filter(|c| c.hardware_only())
            .map(|c| format!("{}[{}]", self.now.format.linux_name(c.level), c.index))
            .collect();
        for c in self.changes.iter().filter(|c| !c.hardware_only()) {
            let old = c.old.map_or_else(|| "(not reached)".to_string(), entry);
            writeln!(
                f,
                "    {:<9} at {:#x}: {old} -> {}",
                format!("{}[{}]", self.now.format.linux_name(c.level), c.index),
                c.entry_address.raw(),
                entry(c.new)
            )?;
        }
        if !hardware.is_empty() {
            writeln!(
                f,
                "    accessed/dirty bits set by the CPU on {}",
                hardware.join(", ")
            )?;
        }
        if let Some(gpa) = self.now.translation() {
            writeln!(f, "    {} now maps to physical {gpa}", self.gva)?;
        }
        Ok(())
    }
}
