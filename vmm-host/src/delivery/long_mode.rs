//! One exception delivery in 64-bit mode, check by check (Intel SDM vol. 3 §6.14): the IDT
//! gate, the handler's code segment, the stack, the five or six pushes. Every table and stack
//! access is a supervisor access through the guest's page tables.

use super::{Delivered, Machine, Raised};
use crate::addr::Gva;
use crate::descriptor::Descriptor;
use crate::paging::{Access, WalkEnd};
use crate::tap::{Gate, GateFormat, GateKind, Idtr};
use abi::exception::mnemonic;

/// Error code bits of an exception that names a descriptor: EXT (raised while delivering an
/// event the program did not cause) and IDT (the index is an IDT vector).
pub(super) const EXT: u64 = 1;
pub(super) const IDT: u64 = 2;

/// One memory access, as the page-fault error code and the canonical check see it.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Touch {
    pub access: Access,
    /// A stack access: not canonical raises #SS rather than #GP.
    pub stack: bool,
    /// Made by the CPU while delivering an event (the error code's EXT bit).
    pub ext: bool,
}

impl Touch {
    /// A supervisor access the CPU makes while delivering.
    pub(super) const fn implicit(write: bool, stack: bool) -> Self {
        Self {
            access: Access {
                write,
                user: false,
                fetch: false,
                alignment_check: false,
            },
            stack,
            ext: true,
        }
    }

    /// The page-fault error code: P, W, U/S, RSVD, I/D.
    fn pf_error(self, present: bool, reserved: bool) -> u64 {
        u64::from(present)
            | u64::from(self.access.write) << 1
            | u64::from(self.access.user) << 2
            | u64::from(reserved) << 3
            | u64::from(self.access.fetch) << 4
    }
}

/// A supervisor access of `len` bytes at `at`: the first byte that faults raises #PF (or
/// #GP/#SS when not canonical). `what` names the access at a byte ("pushing … at 0x…").
pub(super) fn access(
    m: &Machine,
    at: Gva,
    len: u64,
    touch: Touch,
    what: &dyn Fn(Gva) -> String,
) -> Result<(), Raised> {
    // The first byte, and the first byte on the next page when the access crosses into it:
    // where a fault there is reported (CR2).
    let last = at.raw().wrapping_add(len.max(1) - 1);
    let next_page = Gva::new(last & !0xfff);
    let pages = [Some(at), (next_page.raw() > at.raw()).then_some(next_page)];
    for byte in pages.into_iter().flatten() {
        let walk = m.space.walk(byte);
        let fault = |present, reserved, detail: String| {
            Raised::page_fault(
                touch.pf_error(present, reserved),
                byte,
                format!("{}: {detail}", what(byte)),
            )
        };
        match walk.end {
            WalkEnd::Mapped(mapping) => {
                let denials = mapping.denials(touch.access, m.space.mode.protection);
                if let Some(denial) = denials.first() {
                    return Err(fault(true, false, denial.to_string()));
                }
            }
            WalkEnd::NonCanonical => {
                return Err(Raised::new(
                    if touch.stack { 12 } else { 13 },
                    Some(u64::from(touch.ext)),
                    format!("{}: the address is not canonical", what(byte)),
                ));
            }
            WalkEnd::NotPresent { level } => {
                let name = walk.format.linux_name(level);
                return Err(fault(
                    false,
                    false,
                    format!("the {name} entry is not present"),
                ));
            }
            WalkEnd::ReservedBits { level, bits } => {
                let name = walk.format.linux_name(level);
                let detail = format!("the {name} entry has reserved bits {bits:#x} set");
                return Err(fault(true, true, detail));
            }
            WalkEnd::TableOutsideRam { level, table } => {
                let name = walk.format.linux_name(level);
                let detail =
                    format!("the {name} table at {table} is not RAM (the CPU reads all-ones)");
                return Err(fault(true, true, detail));
            }
        }
    }
    Ok(())
}

/// Read `N` bytes at `at` after checking the access.
fn read<const N: usize>(m: &Machine, at: Gva, what: &str) -> Result<[u8; N], Raised> {
    access(m, at, N as u64, Touch::implicit(false, false), &|byte| {
        format!("{what} at {byte}")
    })?;
    let mut raw = [0u8; N];
    m.space
        .read(at, &mut raw)
        .map_err(|e| Raised::new(13, Some(EXT), format!("{what} at {at}: {e}")))?;
    Ok(raw)
}

/// The gate of `e`'s vector in a 64-bit IDT, or the exception reading it raises.
pub(super) fn gate(m: &Machine, e: &Raised) -> Result<Gate, Raised> {
    gate_in(
        m,
        e,
        GateFormat::Long,
        &[GateKind::Interrupt, GateKind::Trap],
        "a 64-bit interrupt or trap gate",
    )
}

/// The gate of `e`'s vector in an IDT of `format`, checked against the limit, `kinds` (the
/// gate types the CPU delivers through, `kinds_text` in words) and the present bit.
pub(super) fn gate_in(
    m: &Machine,
    e: &Raised,
    format: GateFormat,
    kinds: &[GateKind],
    kinds_text: &str,
) -> Result<Gate, Raised> {
    let idtr = Idtr {
        base: Gva::new(m.sregs.idt.base),
        limit: m.sregs.idt.limit,
        format,
    };
    let vector_error = Some(u64::from(e.vector) << 3 | IDT | EXT);
    let name = mnemonic(e.vector);
    let Some(at) = idtr.gate_address(e.vector) else {
        return Err(Raised::new(
            13,
            vector_error,
            format!(
                "{name}'s gate (vector {}) lies past the IDT limit {:#x}",
                e.vector, idtr.limit
            ),
        ));
    };
    let size = format.size();
    access(m, at, size as u64, Touch::implicit(false, false), &|byte| {
        format!("reading {name}'s gate at {byte}")
    })?;
    let mut raw = [0u8; 16];
    m.space
        .read(at, &mut raw[..size])
        .map_err(|err| Raised::new(13, vector_error, format!("{name}'s gate: {err}")))?;
    let gate = Gate::parse(e.vector, &raw, format);
    if !kinds.contains(&gate.kind) {
        return Err(Raised::new(
            13,
            vector_error,
            format!("{name}'s gate at {at} is not {kinds_text} ({gate})"),
        ));
    }
    if !gate.present {
        return Err(Raised::new(
            11,
            vector_error,
            format!("{name}'s gate at {at} is not present"),
        ));
    }
    Ok(gate)
}

/// The handler's code segment, checked as the CPU loads CS: the descriptor's DPL.
fn code_segment(m: &Machine, gate: &Gate) -> Result<u8, Raised> {
    let selector = gate.selector & !3;
    let error = Some(u64::from(selector) | EXT);
    let name = mnemonic(gate.vector);
    if selector == 0 || gate.selector & 4 != 0 {
        return Err(Raised::new(
            13,
            error,
            format!(
                "{name}'s gate names code segment {:#06x}, which is null or in the LDT",
                gate.selector
            ),
        ));
    }
    if u32::from(selector) + 7 > u32::from(m.sregs.gdt.limit) {
        return Err(Raised::new(
            13,
            error,
            format!(
                "{name}'s code segment {selector:#06x} lies past the GDT limit {:#x}",
                m.sregs.gdt.limit
            ),
        ));
    }
    let at = Gva::new(m.sregs.gdt.base.wrapping_add(u64::from(selector)));
    let d = Descriptor(u64::from_le_bytes(read(
        m,
        at,
        "reading the handler's code segment",
    )?));
    if !d.is_code() || !d.long() || d.dpl() > m.cpl() {
        return Err(Raised::new(
            13,
            error,
            format!(
                "{name}'s code segment {selector:#06x} ({:#018x}) is not a 64-bit code segment the CPU may enter from CPL {}",
                d.0,
                m.cpl()
            ),
        ));
    }
    if !d.present() {
        return Err(Raised::new(
            11,
            error,
            format!("{name}'s code segment {selector:#06x} is not present"),
        ));
    }
    Ok(d.dpl())
}

/// Where the frame goes: the IST stack the gate names, TSS.RSPn on a privilege change, or the
/// current stack; aligned down to 16 bytes.
fn stack(m: &Machine, gate: &Gate, dpl: u8) -> Result<(Gva, String), Raised> {
    let tss_slot = match (gate.ist, dpl < m.cpl()) {
        (0, false) => {
            return Ok((
                Gva::new(m.regs.rsp & !0xf),
                format!("the current stack (RSP {:#x}, no IST)", m.regs.rsp),
            ));
        }
        (0, true) => (4 + 8 * u64::from(dpl), format!("TSS.RSP{dpl}")),
        (ist, _) => (0x24 + 8 * u64::from(ist - 1), format!("TSS.IST{ist}")),
    };
    let (offset, name) = tss_slot;
    if offset + 7 > u64::from(m.sregs.tr.limit) {
        return Err(Raised::new(
            10,
            Some(u64::from(m.sregs.tr.selector & !3) | EXT),
            format!("{name} lies past the TSS limit {:#x}", m.sregs.tr.limit),
        ));
    }
    let at = Gva::new(m.sregs.tr.base.wrapping_add(offset));
    let rsp = u64::from_le_bytes(read(m, at, &format!("reading {name}"))?);
    Ok((Gva::new(rsp & !0xf), format!("{name} = {rsp:#x}")))
}

/// Deliver `e` through the IDT; the exception the first failing check raises, if any.
pub(super) fn deliver(m: &Machine, e: &Raised) -> Result<Delivered, Raised> {
    let gate = gate(m, e)?;
    let dpl = code_segment(m, &gate)?;
    // A handler that is not canonical is no delivery failure here: AMD CPUs (this project's
    // hosts) and QEMU push the frame and fault on the fetch at the handler, where KVM's
    // final RIP shows it; the SDM's pseudocode would raise #GP(EXT) before any push.
    let (top, whose) = stack(m, &gate, dpl)?;
    // SS, RSP, RFLAGS, CS, RIP and the error code, each a qword below the last.
    let words: u64 = if e.error.is_some() { 6 } else { 5 };
    let push = Touch::implicit(true, true);
    let name = mnemonic(e.vector);
    for n in 1..=words {
        let at = Gva::new(top.raw().wrapping_sub(8 * n));
        access(m, at, 8, push, &|byte| {
            format!("pushing the {name} frame at {byte}, on {whose}")
        })?;
    }
    Ok(Delivered {
        handler: gate.handler,
        frame: Gva::new(top.raw().wrapping_sub(8 * words)),
    })
}
