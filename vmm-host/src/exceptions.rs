//! Every exception the tap captured during a run: the full sequence in brief, counts per
//! vector, and the records worth a detailed report (the first of each kind, and those still
//! being handled when the run ended).

use crate::analysis::{Analysis, Captured};
use crate::history::{Brief, History};
use crate::tap::{TapStats, TrapKind};
use abi::exception;
use std::collections::HashSet;
use std::fmt;

/// Detailed reports of distinct kinds of exception kept per run.
pub const DETAILED_LIMIT: usize = 16;

/// What makes two exceptions "the same kind" for the console: vector, the privilege level
/// they came from, nesting, and for page faults the access and where the walk stopped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Kind {
    vector: u8,
    cpl: Option<u8>,
    nested: bool,
    detail: String,
}

#[derive(Debug, Default)]
pub struct ExceptionLog {
    /// Every exception in brief: the first and the latest, bounded (counts stay exact).
    pub sequence: History,
    pub counts: [u64; 32],
    pub total: u64,
    /// The first exception of each kind.
    pub detailed: Vec<Captured>,
    /// Exceptions still being handled, outermost first.
    pub active: Vec<Captured>,
    /// The whole page-table tree under the CR3 the run ended with.
    pub final_audit: Option<crate::paging::Audit>,
    /// After a triple fault: what the IDT offered the CPU for the vectors that escalate.
    pub idt_at_end: Option<String>,
    /// At a triple fault: the deliveries replayed from the final state, or why not.
    pub chain_at_end: Option<Result<crate::delivery::Chain, String>>,
    kinds: HashSet<Kind>,
}

impl ExceptionLog {
    /// The counts in one line, `#PF×15746 #GP`; empty when there were none.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = (0u8..)
            .zip(&self.counts)
            .filter(|(_, n)| **n > 0)
            .map(|(v, n)| {
                let m = abi::exception::mnemonic(v);
                if *n == 1 {
                    m.to_string()
                } else {
                    format!("{m}×{n}")
                }
            })
            .collect();
        parts.join(" ")
    }

    pub fn push(&mut self, captured: Captured) {
        let record = &captured.record;
        self.total += 1;
        if let Some(count) = self.counts.get_mut(usize::from(record.vector)) {
            *count += 1;
        }
        self.sequence.push(Brief {
            seq: record.seq,
            vector: record.vector,
            error: record.error(),
            cr2: record.control.cr2,
            rip: record.rip(),
            cpl: record.cpl(),
            depth: record.depth,
        });
        let kind = Kind {
            vector: record.vector,
            cpl: record.cpl(),
            nested: record.depth > 1,
            detail: captured
                .analysis
                .as_ref()
                .map(Analysis::kind)
                .unwrap_or_default(),
        };
        if self.detailed.len() < DETAILED_LIMIT && self.kinds.insert(kind) {
            self.detailed.push(captured.clone());
        }
        let outer = &record.outer;
        self.active.retain(|a| outer.contains(&a.record.seq));
        self.active.push(captured);
    }

    /// Every exception kept in detail, once each: the first of each kind, then those still
    /// being handled that are not already among them.
    pub fn kept(&self) -> impl Iterator<Item = &Captured> {
        let first_of_kind = &self.detailed;
        first_of_kind.iter().chain(
            self.active
                .iter()
                .filter(move |a| !first_of_kind.iter().any(|d| d.record.seq == a.record.seq)),
        )
    }

    /// The diff of an earlier exception, learnt when the next one (or the end) came.
    pub fn attach_diff(&mut self, seq: u64, diff: crate::analysis::Diff) {
        for captured in self.detailed.iter_mut().chain(self.active.iter_mut()) {
            if captured.record.seq == seq
                && let Some(analysis) = &mut captured.analysis
            {
                analysis.diff = Some(diff.clone());
            }
        }
    }
}

/// The exception block of the run report.
#[derive(Debug)]
pub struct ExceptionReport<'a> {
    pub log: &'a ExceptionLog,
    pub kind: TrapKind,
    pub stats: &'a TapStats,
    pub handlers: usize,
    /// External interrupts the host injected, by vector: counted beside the exceptions,
    /// never walked or explained.
    pub interrupts: &'a std::collections::BTreeMap<u8, u64>,
}

impl fmt::Display for ExceptionReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let log = self.log;
        let s = self.stats;
        writeln!(
            f,
            "== exceptions: {} captured by {} traps at {} handlers ({} emulated, {} single-stepped)",
            log.total,
            self.kind.name(),
            self.handlers,
            s.emulated,
            s.stepped
        )?;
        if s.checks > 0 {
            writeln!(
                f,
                "  IDT re-checked at {} other exits, {:.1} µs each; handlers armed {} time(s)",
                s.checks,
                s.check_time.as_secs_f64() * 1e6 / s.checks as f64,
                s.arms
            )?;
        }
        for line in &s.unarmed {
            writeln!(f, "  not armed: {line}")?;
        }
        for (vector, count) in (0u8..).zip(&log.counts) {
            if *count > 0 {
                writeln!(
                    f,
                    "  {:<32} {count:>9}",
                    format!("vector {vector:>2} {}", exception::name(vector))
                )?;
            }
        }
        for (vector, count) in self.interrupts {
            writeln!(
                f,
                "  {:<32} {count:>9}",
                format!("IRQ at vector {vector:#04x} (injected)")
            )?;
        }
        if let Some(gap) = log.sequence.gap() {
            writeln!(f, "  note: {gap}")?;
        }
        let active: Vec<u64> = log.active.iter().map(|c| c.record.seq).collect();
        for captured in &log.detailed {
            if active.contains(&captured.record.seq) {
                continue;
            }
            writeln!(f, "\n-- first of its kind")?;
            write!(f, "{}", Detailed(captured))?;
        }
        if !log.active.is_empty() {
            writeln!(
                f,
                "\n-- still being handled when the run ended (outermost first)"
            )?;
            for captured in &log.active {
                write!(f, "{}", Detailed(captured))?;
            }
        }
        match &log.chain_at_end {
            Some(Ok(chain)) => {
                writeln!(
                    f,
                    "\n-- how the CPU shut down (each delivery replayed on the final state)"
                )?;
                write!(f, "{chain}")?;
            }
            Some(Err(why)) => {
                writeln!(f, "\n-- how the CPU shut down: not replayed: {why}")?;
            }
            None => {}
        }
        if let Some(idt) = &log.idt_at_end {
            writeln!(f, "\n-- the IDT when the CPU shut down")?;
            write!(f, "{idt}")?;
        }
        if let Some(audit) = &log.final_audit {
            writeln!(f, "\n-- page tables when the run ended")?;
            for line in audit.summary().lines() {
                writeln!(f, "  {line}")?;
            }
        }
        Ok(())
    }
}

/// One exception in full: the record line, then the analysis indented.
#[derive(Debug)]
pub struct Detailed<'a>(pub &'a Captured);

impl fmt::Display for Detailed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let record = &self.0.record;
        writeln!(f, "{record}")?;
        if let Some(why) = &record.frame_error {
            writeln!(f, "  {why}")?;
        }
        if let Some(analysis) = &self.0.analysis {
            write!(f, "{analysis}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Gva;
    use crate::tap::{ControlRegisters, ExceptionRecord, Frame};

    /// A top-level exception with no analysis; `outer` lists the ones being handled.
    fn captured(seq: u64, vector: u8, outer: Vec<u64>) -> Captured {
        Captured {
            record: ExceptionRecord {
                seq,
                vector,
                shared_handler: false,
                handler: Gva::new(0x1000),
                frame: Some(Frame {
                    at: Gva::new(0x8000),
                    error: None,
                    rip: Gva::new(0x2000 + seq),
                    cs: 0x08,
                    rflags: 0x2,
                    rsp: Gva::new(0x8100),
                    ss: 0x10,
                    real_mode: false,
                }),
                frame_error: None,
                control: ControlRegisters::default(),
                regs: kvm_bindings::kvm_regs::default(),
                segments: crate::registers::SegmentBases::default(),
                depth: outer.len() + 1,
                outer,
            },
            analysis: None,
        }
    }

    #[test]
    fn the_first_of_at_most_sixteen_kinds_are_kept_in_detail() {
        let mut log = ExceptionLog::default();
        // 32 vectors, each twice: 32 kinds, of which the first 16 are kept, once each.
        for seq in 1..=64u64 {
            let vector = u8::try_from((seq - 1) % 32).unwrap();
            log.push(captured(seq, vector, Vec::new()));
        }
        assert_eq!(log.total, 64);
        assert_eq!(log.detailed.len(), DETAILED_LIMIT);
        let kept: Vec<u64> = log.detailed.iter().map(|c| c.record.seq).collect();
        assert_eq!(kept, (1..=16).collect::<Vec<u64>>());
        assert_eq!(log.counts[0], 2);
    }

    #[test]
    fn kept_lists_an_exception_both_first_of_its_kind_and_still_handled_once() {
        let mut log = ExceptionLog::default();
        log.push(captured(1, 14, Vec::new()));
        log.push(captured(2, 14, Vec::new()));
        log.push(captured(3, 13, vec![2]));
        // Detailed: 1 (#PF) and 3 (#GP); still handled: 2 and 3.
        let kept: Vec<u64> = log.kept().map(|c| c.record.seq).collect();
        assert_eq!(kept, [1, 3, 2]);
    }
}
