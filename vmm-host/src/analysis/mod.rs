//! What the host works out about one exception: the instruction and its operand addresses,
//! walks of CR2, RIP, RSP and every operand, the kernel function and line, the paragraph that
//! explains it, and (once the handler has run) what it changed in the tables.

mod control_write;
mod diff;
mod explain;
mod instruction;

pub use diff::{Change, Diff, Snapshot};
pub use instruction::{Instruction, MemoryOperand, decode_at, decode_bytes};

use crate::addr::{Gpa, Gva};
use crate::paging::{self, Audit, Walk};
use crate::symbols::{Location, Symbolizer};
use crate::tap::ExceptionRecord;
use crate::virt::AddressSpace;
use std::cell::OnceCell;
use std::fmt;

/// A record and what the host worked out about it.
#[derive(Debug, Clone)]
pub struct Captured {
    pub record: ExceptionRecord,
    pub analysis: Option<Analysis>,
}

/// Callers followed through saved frame pointers, at most.
const BACKTRACE_DEPTH: usize = 8;

/// What a walk was made for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkOf {
    /// The faulting address of a #PF.
    Cr2,
    /// A memory operand of the faulting instruction, as written.
    Operand(String),
    Rip,
    Rsp,
}

impl fmt::Display for WalkOf {
    /// The name reports and the JSON lines use: "cr2", "operand [rax+8]", "rip", "rsp".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cr2 => f.write_str("cr2"),
            Self::Operand(text) => write!(f, "operand {text}"),
            Self::Rip => f.write_str("rip"),
            Self::Rsp => f.write_str("rsp"),
        }
    }
}

/// A walk and what it was for.
#[derive(Debug, Clone)]
pub struct NamedWalk {
    pub what: WalkOf,
    pub walk: Walk,
}

#[derive(Debug, Clone)]
pub struct Analysis {
    pub instruction: Result<Instruction, String>,
    /// The function and line of the faulting RIP.
    pub location: Option<Location>,
    /// Return addresses found on the stack and through saved RBPs, innermost first.
    pub backtrace: Vec<(Gva, Option<Location>)>,
    pub walks: Vec<NamedWalk>,
    pub explanation: String,
    /// Filled in when the next exception comes, or at the end of the run.
    pub diff: Option<Diff>,
    /// The whole-tree audit, when one was made for this exception.
    pub audit: Option<Audit>,
}

impl Analysis {
    /// What distinguishes kinds of exception in the console's "first of its kind" list.
    pub fn kind(&self) -> String {
        let stop = self
            .walks
            .first()
            .map(|w| crate::virt::walk_failure(&w.walk))
            .unwrap_or_default();
        let function = self
            .location
            .as_ref()
            .map(|l| l.function.clone())
            .unwrap_or_default();
        format!("{stop} {function}")
    }
}

/// Everything the analysis may look at, with the whole-tree audit made only if a rule needs
/// it (or for every exception under `--audit full`).
#[derive(Debug)]
pub struct Context<'a> {
    pub space: AddressSpace<'a>,
    pub ram: &'a [(Gpa, u64)],
    pub symbols: Option<&'a Symbolizer>,
    /// The exception being handled when this one came.
    pub outer: Option<&'a Captured>,
    pub full_audit: bool,
    audit: OnceCell<Audit>,
}

impl<'a> Context<'a> {
    pub fn new(
        space: AddressSpace<'a>,
        ram: &'a [(Gpa, u64)],
        symbols: Option<&'a Symbolizer>,
        outer: Option<&'a Captured>,
        full_audit: bool,
    ) -> Self {
        Self {
            space,
            ram,
            symbols,
            outer,
            full_audit,
            audit: OnceCell::new(),
        }
    }

    pub fn audit(&self) -> &Audit {
        self.audit.get_or_init(|| {
            paging::audit(&self.space.view, self.space.mode, self.space.cr3, self.ram)
        })
    }

    pub fn in_ram(&self, gpa: Gpa) -> bool {
        self.ram
            .iter()
            .any(|&(start, size)| gpa >= start && gpa.raw() - start.raw() < size)
    }

    fn locate(&self, address: u64) -> Option<Location> {
        self.symbols.and_then(|s| s.locate(address))
    }

    fn locate_return(&self, address: u64) -> Option<Location> {
        self.symbols.and_then(|s| s.locate_return(address))
    }
}

/// Return addresses: a leaf function's at [RSP] (it may not have set up a frame), then the
/// saved-RBP chain. Only addresses that symbolise count.
fn backtrace(record: &ExceptionRecord, ctx: &Context<'_>) -> Vec<(Gva, Option<Location>)> {
    let mut out: Vec<(Gva, Option<Location>)> = Vec::new();
    if ctx.symbols.is_none() {
        return out;
    }
    let here = ctx.locate(record.regs.rip).map(|l| l.function);
    if let Ok(ret) = ctx.space.read_u64(Gva::new(record.regs.rsp))
        && let Some(location) = ctx.locate_return(ret)
        && Some(&location.function) != here.as_ref()
    {
        out.push((Gva::new(ret), Some(location)));
    }
    let mut rbp = record.regs.rbp;
    while out.len() < BACKTRACE_DEPTH {
        let (Ok(saved), Ok(ret)) = (
            ctx.space.read_u64(Gva::new(rbp)),
            ctx.space.read_u64(Gva::new(rbp.wrapping_add(8))),
        ) else {
            break;
        };
        let Some(location) = ctx.locate_return(ret) else {
            break;
        };
        if !out.iter().any(|(a, _)| a.raw() == ret) {
            out.push((Gva::new(ret), Some(location)));
        }
        if saved <= rbp {
            break;
        }
        rbp = saved;
    }
    out
}

/// Analyse `record` in the memory state of its handler's entry. Returns the snapshot whose
/// diff the caller resolves later.
pub fn analyse(record: &ExceptionRecord, ctx: &Context<'_>) -> (Analysis, Option<Snapshot>) {
    let registers = record.registers();
    let instruction = instruction::decode_at(&ctx.space, &registers, record.control.bitness());
    let mut walks = Vec::new();
    if record.is_page_fault() {
        walks.push(NamedWalk {
            what: WalkOf::Cr2,
            walk: ctx.space.walk(Gva::new(record.control.cr2)),
        });
    }
    if let Ok(i) = &instruction {
        for operand in &i.operands {
            if let Some(address) = operand.address
                && !walks.iter().any(|w| w.walk.gva == address)
            {
                walks.push(NamedWalk {
                    what: WalkOf::Operand(operand.text.clone()),
                    walk: ctx.space.walk(address),
                });
            }
        }
    }
    let bitness = record.control.bitness();
    let segments = record.segments;
    for (what, base, offset) in [
        (WalkOf::Rip, segments.cs, record.regs.rip),
        (WalkOf::Rsp, segments.ss, record.regs.rsp),
    ] {
        let linear = crate::registers::linear_address(bitness, base, offset);
        walks.push(NamedWalk {
            what,
            walk: ctx.space.walk(Gva::new(linear)),
        });
    }
    // With paging off there are no tables whose changes a diff could show.
    let snapshot = walks
        .first()
        .filter(|_| ctx.space.mode.enabled())
        .map(|w| Snapshot {
            seq: record.seq,
            walk: w.walk.clone(),
            mode: ctx.space.mode,
        });
    let mut analysis = Analysis {
        instruction,
        location: ctx.locate(record.regs.rip),
        backtrace: backtrace(record, ctx),
        walks,
        explanation: String::new(),
        diff: None,
        audit: None,
    };
    analysis.explanation = explain::explain(record, &analysis, ctx);
    if ctx.full_audit {
        ctx.audit();
    }
    analysis.audit = ctx.audit.get().cloned().filter(|_| ctx.full_audit);
    (analysis, snapshot)
}

impl fmt::Display for Analysis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.instruction {
            Ok(i) => writeln!(f, "  instruction  {i}")?,
            Err(e) => writeln!(f, "  instruction  unavailable: {e}")?,
        }
        if let Ok(i) = &self.instruction {
            for operand in &i.operands {
                let address = operand
                    .address
                    .map_or_else(|| "?".to_string(), |a| a.to_string());
                let size = match operand.size {
                    0 => String::new(),
                    n => format!(", {n} bytes"),
                };
                let segment = operand
                    .segment
                    .as_ref()
                    .map(|(name, base)| format!("{name} base {base:#x} + offset, "))
                    .unwrap_or_default();
                writeln!(
                    f,
                    "    operand {} = {address} ({segment}{}{size})",
                    operand.text,
                    if operand.write { "write" } else { "read" },
                )?;
            }
        }
        if let Some(location) = &self.location {
            writeln!(f, "  in           {location}")?;
        }
        for (address, location) in &self.backtrace {
            match location {
                Some(l) => writeln!(f, "  called from  {l}   [{address}]")?,
                None => writeln!(f, "  called from  {address}")?,
            }
        }
        writeln!(f, "  explanation  {}", self.explanation)?;
        for named in &self.walks {
            write!(f, "  {}: ", named.what)?;
            writeln!(f, "{}", named.walk)?;
        }
        if let Some(diff) = &self.diff {
            write!(f, "{diff}")?;
        }
        if let Some(audit) = &self.audit {
            for (i, line) in audit.summary().lines().enumerate() {
                let label = if i == 0 { "audit" } else { "" };
                writeln!(f, "  {label:<12} {line}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
