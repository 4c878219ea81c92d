//! The paragraph that names a fault's cause in the seed's terms.

use super::{Analysis, Context, NamedWalk, WalkOf};
use crate::addr::Gpa;
use crate::paging::{Access, Format, Level, WalkEnd};
use crate::tap::ExceptionRecord;
use abi::exception::{self, PfError, SelectorError, pf};
use mm::paging::{ADDR_MASK, Flags, NO_EXECUTE, PRESENT};
use x86_64::registers::model_specific::EferFlags;

/// EFLAGS.AC: with CR4.SMAP, the kernel may touch user pages while it is set.
const RFLAGS_AC: u64 = 1 << 18;

/// Accesses below this address are null pointers plus a field offset.
const NULL_PAGE_END: u64 = 0x1000;

fn level_entry(format: Format, level: Level, index: usize) -> String {
    format!("{}[{index}]", format.linux_name(level))
}

/// "X is a page-table frame (…)" or "X lies in RAM above the identity map …", for a
/// physical address some code used as a virtual one.
fn physical_address_facts(ctx: &Context<'_>, x: u64) -> String {
    let audit = ctx.audit();
    let frame = Gpa::new(x & !0xfff);
    if let Some(table) = audit.table_frames.get(frame) {
        return format!(
            "{x:#x} is a page-table frame (the {} table used to map {})",
            table.level, table.first_va
        );
    }
    let identity_end = audit
        .identity
        .iter()
        .find(|(start, _)| start.raw() == 0)
        .map(|(_, size)| *size);
    match identity_end {
        Some(end) if x >= end => {
            format!("{x:#x} lies in RAM above the identity map, which ends at {end:#x}")
        }
        Some(_) => format!("{x:#x} is guest RAM (inside the identity map)"),
        None => format!("{x:#x} is guest RAM, and nothing identity-maps it"),
    }
}

/// A value with P or NX set whose frame is RAM: an entry, not a pointer.
fn entry_value_facts(ctx: &Context<'_>, name: &str, value: u64) -> Option<String> {
    let frame = value & ADDR_MASK;
    // Frame 0 would make any value with bit 63 set (a non-canonical pointer) an "entry".
    let looks_like_entry =
        value & (PRESENT | NO_EXECUTE) != 0 && frame != 0 && ctx.in_ram(Gpa::new(frame));
    if !looks_like_entry {
        return None;
    }
    let mut text = format!(
        "{name} = {value:#x} is a page-table entry value used as a pointer: frame {frame:#x} with flag bits {}",
        Flags(value)
    );
    if let Some(table) = ctx.audit().table_frames.get(Gpa::new(frame)) {
        text.push_str(&format!(
            "; the frame is itself a {} table (for {})",
            table.level, table.first_va
        ));
    }
    text.push_str(
        ". Mask the flags (entry & 0x000ffffffffff000) and turn the frame into a virtual address before dereferencing it",
    );
    Some(text)
}

/// A walk that met its top table again below the top: an entry points back at a table above
/// it (a recursive slot, or a loop written by mistake).
fn loop_note(walk: &crate::paging::Walk) -> Option<String> {
    let top = walk.steps.first()?;
    let again = walk.steps.iter().skip(1).find(|s| s.table == top.table)?;
    Some(format!(
        ". The walk went through a self-referencing entry: its {} table is the {top_level} itself ({}), so {top_level}[{}] points back at the {top_level} (a recursive slot, or a loop written by mistake)",
        again.level,
        top.table,
        top.index,
        top_level = top.level,
    ))
}

fn page_fault(record: &ExceptionRecord, analysis: &Analysis, ctx: &Context<'_>) -> String {
    let text = page_fault_cause(record, analysis, ctx);
    let walk = analysis.walks.iter().find(|w| w.what == WalkOf::Cr2);
    match walk.and_then(|w| loop_note(&w.walk)) {
        Some(note) => text + &note,
        None => text,
    }
}

fn page_fault_cause(record: &ExceptionRecord, analysis: &Analysis, ctx: &Context<'_>) -> String {
    let error = record.error().unwrap_or(0);
    let cr2 = record.control.cr2;
    let who = if error & pf::USER != 0 {
        "user"
    } else {
        "kernel"
    };
    let access = PfError(error).access();
    let Some(NamedWalk { walk, .. }) = analysis.walks.iter().find(|w| w.what == WalkOf::Cr2) else {
        return format!("a {who} {access} at {cr2:#x} faulted");
    };
    match walk.end {
        WalkEnd::NotPresent { level } => {
            let step = walk.steps.last();
            let index = step.map_or(0, |s| s.index);
            let table = step.map_or(0, |s| s.table.raw());
            let upper_half = cr2 >= walk.format.kernel_space();
            if cr2 < NULL_PAGE_END {
                format!(
                    "null pointer dereference: a {who} {access} at {cr2:#x}, offset {cr2:#x} from address 0, in the page nothing maps so that this faults (the walk stops at {} in the {} at {table:#x}); look for a pointer left null, or a field of a struct reached through one",
                    level_entry(walk.format, level, index),
                    level,
                )
            } else if who == "kernel" && !upper_half && ctx.in_ram(Gpa::new(cr2)) {
                format!(
                    "physical address {cr2:#x} dereferenced as virtual: {}. The kernel {access} went through an address nothing maps at that virtual address (the walk stops at {} in the {} at {table:#x}); convert physical addresses through the identity or direct map before using them",
                    physical_address_facts(ctx, cr2),
                    level_entry(walk.format, level, index),
                    level,
                )
            } else {
                format!(
                    "a {who} {access} at {cr2:#x} found a not-present {} ({} in the {} at {table:#x}): the walk stops at the {} level, so the page must be demand-paged by the handler, or the address is a bug",
                    walk.format.linux_name(level),
                    level_entry(walk.format, level, index),
                    level,
                    walk.format.linux_name(level),
                )
            }
        }
        WalkEnd::Mapped(m) => {
            let attempt = Access {
                write: error & pf::WRITE != 0,
                user: error & pf::USER != 0,
                fetch: error & pf::FETCH != 0,
                alignment_check: record.frame.is_some_and(|f| f.rflags & RFLAGS_AC != 0),
            };
            let causes: Vec<String> = (m.denials(attempt, ctx.space.mode.protection).iter())
                .map(ToString::to_string)
                .collect();
            if causes.is_empty() {
                format!(
                    "a {who} {access} at {cr2:#x} faulted, but the tables allow it now: the handler changed them already, or the TLB held a stale entry"
                )
            } else {
                format!(
                    "protection fault at {cr2:#x}: {} (the page maps to {})",
                    causes.join(" and "),
                    m.gpa
                )
            }
        }
        WalkEnd::ReservedBits { level, bits } => {
            let nx = if bits & NO_EXECUTE != 0
                && record.control.efer & EferFlags::NO_EXECUTE_ENABLE.bits() == 0
            {
                " (bit 63, NX, is reserved because EFER.NXE is clear)"
            } else {
                ""
            };
            format!(
                "the {level} entry for {cr2:#x} has reserved bits {bits:#x} set{nx}: the CPU refuses the entry (RSVD); something wrote a value that is not a valid entry"
            )
        }
        WalkEnd::TableOutsideRam { level, table } => format!(
            "the {level} table for {cr2:#x} would be at {table}, outside guest RAM: the entry above it holds garbage"
        ),
        WalkEnd::NonCanonical => format!("{cr2:#x} is not canonical"),
    }
}

/// A #GP at `mov cr0, reg`: the rule the value breaks, or the hypervisor's refusal.
fn control_register_write(
    record: &ExceptionRecord,
    analysis: &Analysis,
    ctx: &Context<'_>,
) -> Option<String> {
    let instruction = analysis.instruction.as_ref().ok()?;
    let source = super::control_write::cr0_source(&instruction.bytes, record.control.bitness())?;
    let value = record.registers().value(source)?;
    let mem = &ctx.space.view;
    Some(super::control_write::cr0_write_fault(
        value,
        &record.control,
        ctx.space.mode,
        mem,
    ))
}

fn general_protection(record: &ExceptionRecord, analysis: &Analysis, ctx: &Context<'_>) -> String {
    if let Ok(instruction) = &analysis.instruction {
        for operand in &instruction.operands {
            let Some(address) = operand.address else {
                continue;
            };
            if address.is_canonical() {
                continue;
            }
            let mut text = format!(
                "operand {} of `{}` addresses {address}, which is not canonical (bits 63..47 differ): the CPU raises #GP before any page walk",
                operand.text, instruction.text
            );
            let base = operand.base.as_ref();
            let facts = base
                .and_then(|(name, value)| entry_value_facts(ctx, name, *value))
                .or_else(|| entry_value_facts(ctx, "the address", address.raw()));
            if let Some(facts) = facts {
                text.push_str(". ");
                text.push_str(&facts);
            }
            return text;
        }
    }
    if let Some(text) = control_register_write(record, analysis, ctx) {
        return text;
    }
    match record.error() {
        Some(error) if error != 0 => format!(
            "general protection fault with selector error {}: a segment or gate the CPU loaded is wrong",
            SelectorError(error)
        ),
        _ => "general protection fault with no non-canonical operand: look for a privileged instruction, a bad segment load or a reserved bit written to a control register or MSR".into(),
    }
}

fn invalid_opcode(record: &ExceptionRecord, analysis: &Analysis) -> String {
    match &analysis.instruction {
        Ok(i) if i.bytes.starts_with(&[0xcd]) && record.cpl() == Some(3) => format!(
            "`{}` from ring 3 arrived as #UD: this host's nested KVM cannot deliver `int n` from user mode, so a kernel that wants system calls here decodes the bytes in its #UD handler",
            i.text
        ),
        Ok(i) if i.text == "ud2" => {
            "`ud2`: the code raised #UD on purpose (a panic or an unreachable path)".into()
        }
        Ok(i) => format!("`{}` is not valid here", i.text),
        Err(e) => format!("invalid opcode at {}: {e}", record.rip()),
    }
}

fn double_fault(record: &ExceptionRecord) -> String {
    let mut text = "double fault: the CPU raised an exception while delivering another one (a fault on the kernel stack or in the IDT); the saved RIP is not reliable".to_string();
    let (cr2, rsp) = (record.control.cr2, record.regs.rsp);
    // A push below the guard page's top faults at RSP - 8 or lower, within a page.
    if cr2 < rsp && rsp - cr2 <= 0x1000 {
        text.push_str(&format!(
            ". CR2 {cr2:#x} lies just below the interrupted RSP {rsp:#x}: a kernel stack overflow into an unmapped guard page, and the page fault's own frame could not be pushed on that stack either"
        ));
    }
    text
}

fn divide_error(record: &ExceptionRecord, analysis: &Analysis) -> String {
    match &analysis.instruction {
        Ok(i) if i.text.starts_with("div") || i.text.starts_with("idiv") => format!(
            "`{}` raised #DE: the divisor is zero, or the quotient does not fit the destination ({})",
            i.text,
            divide_width(&i.text)
        ),
        _ => format!("#DE divide error at {}", record.rip()),
    }
}

/// What a `div`/`idiv` divides, from its operand's size: the dividend's high half is what
/// overflows the quotient.
pub(super) fn divide_width(text: &str) -> &'static str {
    let operand = text.split_once(' ').map_or("", |(_, o)| o.trim());
    let bits = match operand.split_whitespace().next() {
        Some("qword") => 64,
        Some("dword") => 32,
        Some("word") => 16,
        Some("byte") => 8,
        _ => register_bits(operand),
    };
    match bits {
        64 => "a 128-by-64-bit divide with RDX too large",
        32 => "a 64-by-32-bit divide with EDX too large",
        16 => "a 32-by-16-bit divide with DX too large",
        _ => "a 16-by-8-bit divide with AH too large",
    }
}

/// The width of a general register by its Intel name.
fn register_bits(name: &str) -> u32 {
    let numbered = name
        .strip_prefix('r')
        .filter(|n| n.starts_with(|c: char| c.is_ascii_digit()));
    if let Some(n) = numbered {
        return match n.chars().last() {
            Some('d') => 32,
            Some('w') => 16,
            Some('b') => 8,
            _ => 64,
        };
    }
    match name.chars().next() {
        Some('r') => 64,
        Some('e') => 32,
        _ if name.ends_with('l') || name.ends_with('h') => 8,
        _ => 16,
    }
}

/// The paragraph for `record`.
pub fn explain(record: &ExceptionRecord, analysis: &Analysis, ctx: &Context<'_>) -> String {
    let mut text = match record.vector {
        exception::PAGE_FAULT => page_fault(record, analysis, ctx),
        exception::GENERAL_PROTECTION => general_protection(record, analysis, ctx),
        exception::INVALID_OPCODE => invalid_opcode(record, analysis),
        exception::DOUBLE_FAULT => double_fault(record),
        exception::DIVIDE_ERROR => divide_error(record, analysis),
        v => format!("{} at {}", exception::name(v), record.rip()),
    };
    if let Some(location) = &analysis.location {
        text.push_str(&format!(". It happened in {location}"));
        if let Some((_, Some(caller))) = analysis.backtrace.first() {
            text.push_str(&format!(", called from {caller}"));
        }
    }
    if let Some(outer) = ctx.outer {
        let o = &outer.record;
        text.push_str(&format!(
            ", while the kernel was still handling exception [{}] {} raised at {}",
            o.seq,
            exception::mnemonic(o.vector),
            o.rip()
        ));
        if o.is_page_fault() {
            text.push_str(&format!(
                " for {:#x} (page {:#x} being demand-paged)",
                o.control.cr2,
                o.control.cr2 & !0xfff
            ));
        }
        if let Some(location) = outer.analysis.as_ref().and_then(|a| a.location.as_ref()) {
            text.push_str(&format!(" in {}", location.function));
        }
    }
    text.push('.');
    text
}
