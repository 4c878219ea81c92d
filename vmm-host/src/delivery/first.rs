//! The exception that started a shutdown. No delivery in the chain committed anything, so
//! KVM reports the state of the instruction that raised the first exception. Fetching it,
//! decoding it and checking its memory operands (the pushes of `call` and `push` included)
//! through the page tables finds what it raised.

use super::long_mode::{Touch, access};
use super::{Machine, Raised};
use crate::addr::Gva;
use crate::paging::Access;
use crate::registers::{RegisterFile, SegmentBases, linear_address};
use crate::tap::ControlRegisters;
use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind};

/// What the instruction at RIP raised, or why the host cannot tell.
pub fn first_exception(m: &Machine) -> Result<Raised, String> {
    let bitness = ControlRegisters::of(m.sregs).bitness();
    let segments = SegmentBases::of(m.sregs);
    let rip = m.regs.rip;
    let user = m.cpl() == 3;
    let fetch = Touch {
        access: Access {
            fetch: true,
            user,
            ..Access::default()
        },
        ..Touch::default()
    };
    let at = Gva::new(linear_address(bitness, segments.cs, rip));
    if let Err(raised) = access(m, at, 1, fetch, &|byte| {
        format!("fetching the instruction at {byte}")
    }) {
        return Ok(raised);
    }
    let registers = RegisterFile {
        regs: m.regs,
        segments,
    };
    let Ok(instruction) = crate::analysis::decode_at(&m.space, &registers, bitness) else {
        return Ok(Raised::new(
            6,
            None,
            format!("the bytes at RIP {rip:#x} are not a valid instruction"),
        ));
    };
    let text = &instruction.text;
    for operand in &instruction.operands {
        let Some(address) = operand.address else {
            continue;
        };
        let stack = operand
            .base
            .as_ref()
            .is_some_and(|(name, _)| name.contains("sp") || name.contains("bp"));
        let touch = Touch {
            access: Access {
                write: operand.write,
                user,
                ..Access::default()
            },
            stack,
            ext: false,
        };
        let verb = if operand.write { "writes" } else { "reads" };
        if let Err(raised) = access(m, address, operand.size as u64, touch, &|byte| {
            format!("`{text}` {verb} {} at {byte}", operand.text)
        }) {
            return Ok(raised);
        }
    }
    let mut decoder = Decoder::with_ip(bitness, &instruction.bytes, rip, DecoderOptions::NONE);
    let decoded = decoder.decode();
    match decoded.mnemonic() {
        Mnemonic::Ud2 | Mnemonic::Ud0 | Mnemonic::Ud1 => {
            Ok(Raised::new(6, None, format!("`{text}` raises #UD")))
        }
        Mnemonic::Int3 => Ok(Raised::new(3, None, format!("`{text}` raises #BP"))),
        Mnemonic::Div | Mnemonic::Idiv
            if decoded.op0_kind() == OpKind::Register
                && registers.value(decoded.op0_register()) == Some(0) =>
        {
            Ok(Raised::new(0, None, format!("`{text}` divides by zero")))
        }
        _ => Err(format!(
            "`{text}` at RIP {rip:#x} raises nothing the host can find from the final state (its operands are mapped)"
        )),
    }
}
