//! `vmm-host inspect CORE`: the post-mortem report, made from the core alone. The registers and
//! the instruction at RIP, the exceptions that were being handled analysed again on the
//! core's memory (walks, explanation, the outer exception), the page-table audit under CR3,
//! and for a triple fault the deliveries replayed. Nothing here needs `/dev/kvm`.

use super::Core;
use crate::analysis::{Captured, Context, analyse};
use crate::cpu_state::CpuState;
use crate::delivery::{Machine, replay_shutdown};
use crate::exceptions::Detailed;
use crate::paging::{AuditOptions, Cr3, PagingMode, audit_with};
use crate::symbols::Symbolizer;
use crate::virt::{AddressSpace, GuestView};
use std::fmt::Write as _;

/// The exceptions of the note's `active` list, outermost first, each analysed with the one
/// it interrupted as its outer exception, as the live run analysed them.
pub fn analyse_active(core: &Core, symbols: Option<&Symbolizer>) -> Vec<Captured> {
    let mut done: Vec<Captured> = Vec::new();
    for note in &core.note.active {
        let record = note.record();
        let c = &record.control;
        let space = AddressSpace {
            view: GuestView::new(&core.mem, None),
            mode: PagingMode::of_vcpu(core.note.paging, c.cr0, c.cr4, c.efer),
            cr3: Cr3::new(c.cr3),
        };
        let outer = record
            .outer
            .last()
            .and_then(|seq| done.iter().find(|d| d.record.seq == *seq));
        let context = Context::new(space, &core.ram, symbols, outer, false);
        let (analysis, _) = analyse(&record, &context);
        done.push(Captured {
            record,
            analysis: Some(analysis),
        });
    }
    done
}

/// The address space the core's CPU state translates with.
fn space(core: &Core) -> AddressSpace<'_> {
    let s = &core.sregs;
    AddressSpace {
        view: GuestView::new(&core.mem, None),
        mode: PagingMode::of_vcpu(core.note.paging, s.cr0, s.cr4, s.efer),
        cr3: Cr3::new(s.cr3),
    }
}

/// The whole report.
pub fn report(core: &Core, symbols: Option<&Symbolizer>) -> String {
    let mut out = String::new();
    let note = &core.note;
    let ram: u64 = core.ram.iter().map(|(_, size)| size).sum();
    let _ = writeln!(out, "== core {}", core.path.display());
    let _ = writeln!(out, "  written     {}", note.taken);
    let _ = writeln!(out, "  kernel      {}", note.kernel);
    let ended = note.ending.as_deref().unwrap_or("had not ended");
    let _ = writeln!(out, "  run         {ended}");
    let _ = writeln!(
        out,
        "  RAM         {} in {} region{}; {} virtual range{} mapped (PT_LOAD)",
        crate::layout::human(ram),
        core.ram.len(),
        if core.ram.len() == 1 { "" } else { "s" },
        core.loads.len(),
        if core.loads.len() == 1 { "" } else { "s" },
    );
    let summary = if note.summary.is_empty() {
        "none"
    } else {
        &note.summary
    };
    let _ = writeln!(out, "  exceptions  {} captured: {summary}", note.exceptions);
    let space = space(core);
    let state = CpuState::of_space(core.regs, core.sregs, &space);
    let _ = writeln!(out, "\n== CPU state in the core");
    let _ = write!(out, "{state}");
    let active = analyse_active(core, symbols);
    if !active.is_empty() {
        let _ = writeln!(
            out,
            "\n== exceptions being handled, analysed from the core's memory (outermost first)"
        );
        for captured in &active {
            let _ = write!(out, "{}", Detailed(captured));
        }
    }
    let (mode, cr3) = (space.mode, space.cr3);
    if note.ending_kind.as_deref() == Some("triple-fault") {
        shutdown(&mut out, core, space);
    }
    let audit = audit_with(
        &GuestView::new(&core.mem, None),
        mode,
        cr3,
        &core.ram,
        &AuditOptions::default(),
    );
    let _ = writeln!(out, "\n== page-table audit");
    for line in audit.summary().lines() {
        let _ = writeln!(out, "  {line}");
    }
    out
}

/// The deliveries that ended in the shutdown, replayed on the core's state.
fn shutdown(out: &mut String, core: &Core, space: AddressSpace<'_>) {
    let machine = Machine {
        space,
        regs: &core.regs,
        sregs: &core.sregs,
    };
    match replay_shutdown(&machine) {
        Ok(chain) => {
            let _ = writeln!(out, "\n== how the CPU shut down (replayed from the core)");
            let _ = write!(out, "{chain}");
        }
        Err(why) => {
            let _ = writeln!(out, "\n== how the CPU shut down: not replayed: {why}");
        }
    }
}
