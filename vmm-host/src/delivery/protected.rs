//! One exception delivery in 32-bit protected mode (Intel SDM vol. 3 §6.12): an 8-byte gate,
//! the handler's code segment, the stack (TSS.ESPn and SSn on a privilege change, the current
//! one otherwise, never aligned), and four-byte pushes at SS base + ESP, wrapping at 4 GiB.
//! A task gate leads through the GDT to its TSS ([`crate::tap::task`]).

use super::long_mode::{EXT, Touch, access, gate_in};
use super::{Delivered, Machine, Raised};
use crate::addr::Gva;
use crate::descriptor::Descriptor;
use crate::tap::task::{self, Gdtr};
use crate::tap::{Gate, GateFormat, GateKind};
use abi::exception::mnemonic;

/// The gate of `e`'s vector in a 32-bit IDT, or the exception reading it raises.
fn gate(m: &Machine, e: &Raised) -> Result<Gate, Raised> {
    gate_in(
        m,
        e,
        GateFormat::Protected,
        &[GateKind::Interrupt, GateKind::Trap, GateKind::Task],
        "an interrupt, trap or task gate",
    )
}

fn gdtr(m: &Machine) -> Gdtr {
    Gdtr {
        base: Gva::new(m.sregs.gdt.base),
        limit: m.sregs.gdt.limit,
    }
}

/// The descriptor `selector` names in the GDT, or #GP naming it.
fn descriptor(m: &Machine, selector: u16, what: &str) -> Result<Descriptor, Raised> {
    let error = Some(u64::from(selector & !3) | EXT);
    if selector & !3 == 0 || selector & 4 != 0 {
        return Err(Raised::new(
            13,
            error,
            format!("{what} {selector:#06x} is null or in the LDT"),
        ));
    }
    if u32::from(selector | 7) > u32::from(m.sregs.gdt.limit) {
        return Err(Raised::new(
            13,
            error,
            format!(
                "{what} {selector:#06x} lies past the GDT limit {:#x}",
                m.sregs.gdt.limit
            ),
        ));
    }
    let at = Gva::new((m.sregs.gdt.base + u64::from(selector & !7)) & 0xffff_ffff);
    access(m, at, 8, Touch::implicit(false, false), &|byte| {
        format!("reading {what} {selector:#06x} at {byte}")
    })?;
    m.space
        .read_u64(at)
        .map(Descriptor)
        .map_err(|err| Raised::new(13, error, format!("{what}: {err}")))
}

/// The stack the frame goes on: its linear top, the pushes a privilege change adds (SS and
/// ESP), and in words.
fn stack(m: &Machine, dpl: u8) -> Result<(u64, bool, String), Raised> {
    if dpl >= m.cpl() {
        let top = (m.sregs.ss.base + (m.regs.rsp & 0xffff_ffff)) & 0xffff_ffff;
        return Ok((
            top,
            false,
            format!("the current stack (ESP {:#x})", m.regs.rsp),
        ));
    }
    let offset = 4 + 8 * u64::from(dpl);
    if offset + 5 > u64::from(m.sregs.tr.limit) {
        return Err(Raised::new(
            10,
            Some(u64::from(m.sregs.tr.selector & !3) | EXT),
            format!(
                "TSS.ESP{dpl} lies past the TSS limit {:#x}",
                m.sregs.tr.limit
            ),
        ));
    }
    let at = Gva::new((m.sregs.tr.base + offset) & 0xffff_ffff);
    access(m, at, 6, Touch::implicit(false, false), &|byte| {
        format!("reading TSS.ESP{dpl} at {byte}")
    })?;
    let mut raw = [0u8; 6];
    m.space
        .read(at, &mut raw)
        .map_err(|err| Raised::new(10, Some(EXT), format!("TSS.ESP{dpl}: {err}")))?;
    let esp = u64::from(u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]));
    let ss = u16::from_le_bytes([raw[4], raw[5]]);
    let segment = descriptor(m, ss, "the stack segment TSS.SS")?;
    Ok((
        (segment.base() + esp) & 0xffff_ffff,
        true,
        format!("TSS.SS{dpl}:ESP{dpl} = {ss:#06x}:{esp:#x}"),
    ))
}

/// Deliver `e` through a 32-bit IDT; the exception the first failing check raises, if any.
pub(super) fn deliver(m: &Machine, e: &Raised) -> Result<Delivered, Raised> {
    let gate = gate(m, e)?;
    if gate.kind == GateKind::Task {
        // The switch itself is not replayed check by check: the TSS it leads to is.
        let target = task::follow(&m.space, gdtr(m), gate.selector).map_err(|err| {
            Raised::new(
                10,
                Some(u64::from(gate.selector & !3) | EXT),
                err.to_string(),
            )
        })?;
        return Ok(Delivered {
            handler: target.entry(),
            frame: Gva::new(u64::from(target.tss.esp())),
        });
    }
    let name = mnemonic(e.vector);
    let code = descriptor(m, gate.selector, &format!("{name}'s code segment"))?;
    let selector = gate.selector & !3;
    if !code.is_code() || code.long() || code.dpl() > m.cpl() {
        return Err(Raised::new(
            13,
            Some(u64::from(selector) | EXT),
            format!(
                "{name}'s code segment {selector:#06x} ({:#018x}) is not a 32-bit code segment the CPU may enter from CPL {}",
                code.0,
                m.cpl()
            ),
        ));
    }
    if !code.present() {
        return Err(Raised::new(
            11,
            Some(u64::from(selector) | EXT),
            format!("{name}'s code segment {selector:#06x} is not present"),
        ));
    }
    let (top, switched, whose) = stack(m, code.dpl())?;
    // [SS, ESP,] EFLAGS, CS, EIP and the error code, a dword each.
    let words = 3 + 2 * u64::from(switched) + u64::from(e.error.is_some());
    for n in 1..=words {
        let at = Gva::new(top.wrapping_sub(4 * n) & 0xffff_ffff);
        access(m, at, 4, Touch::implicit(true, true), &|byte| {
            format!("pushing the {name} frame at {byte}, on {whose}")
        })?;
    }
    Ok(Delivered {
        handler: Gva::new((code.base() + gate.handler.raw()) & 0xffff_ffff),
        frame: Gva::new(top.wrapping_sub(4 * words) & 0xffff_ffff),
    })
}
