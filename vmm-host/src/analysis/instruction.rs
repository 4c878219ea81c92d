//! The instruction at the faulting RIP and the address each of its memory operands used,
//! computed from the registers the interrupted code left.

use crate::addr::Gva;
use crate::registers::RegisterFile;
use crate::virt::AddressSpace;
use iced_x86::{
    Decoder, DecoderOptions, Formatter, InstructionInfoFactory, IntelFormatter, OpAccess, Register,
};
use std::fmt;

/// A memory operand and its effective (linear) address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryOperand {
    /// As written: "[rax+rcx*8+10h]".
    pub text: String,
    /// Linear address (segment base included); `None` if a register could not be read.
    pub address: Option<Gva>,
    pub write: bool,
    pub size: usize,
    /// The base register and its value: the pointer a bug usually lives in.
    pub base: Option<(String, u64)>,
    /// The segment whose non-zero base the CPU added (ES, CS, SS or DS outside long mode: a
    /// kernel whose segments are not flat), by name, and that base.
    pub segment: Option<(String, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub rip: Gva,
    pub bytes: Vec<u8>,
    pub text: String,
    pub operands: Vec<MemoryOperand>,
}

/// Decode the 64-bit instruction in `bytes` located at `rip`.
pub fn decode_bytes(bytes: &[u8], rip: u64, registers: &RegisterFile<'_>) -> Option<Instruction> {
    decode_in(64, bytes, rip, registers)
}

/// Decode the `bitness`-bit (16, 32 or 64) instruction in `bytes` located at `rip`.
pub fn decode_in(
    bitness: u32,
    bytes: &[u8],
    rip: u64,
    registers: &RegisterFile<'_>,
) -> Option<Instruction> {
    let mut decoder = Decoder::with_ip(bitness, bytes, rip, DecoderOptions::NONE);
    let instruction = decoder.decode();
    if instruction.is_invalid() {
        return None;
    }
    let mut text = String::new();
    let mut formatter = IntelFormatter::new();
    formatter.format(&instruction, &mut text);
    let mut factory = InstructionInfoFactory::new();
    let info = factory.info(&instruction);
    let operands = info
        .used_memory()
        .iter()
        .map(|used| memory_operand(bitness, used, registers))
        .collect();
    Some(Instruction {
        rip: Gva::new(rip),
        bytes: bytes[..instruction.len()].to_vec(),
        text,
        operands,
    })
}

/// One memory operand of an instruction in `bitness`-bit code, with the address the
/// registers give it.
fn memory_operand(
    bitness: u32,
    used: &iced_x86::UsedMemory,
    registers: &RegisterFile<'_>,
) -> MemoryOperand {
    // Outside long mode a linear address wraps at 4 GiB, segment base included.
    let address = used
        .virtual_address(0, |register, _, _| registers.value(register))
        .map(|linear| Gva::new(crate::registers::linear_address(bitness, 0, linear)));
    let segment = matches!(
        used.segment(),
        Register::ES | Register::CS | Register::SS | Register::DS
    )
    .then(|| registers.segments.of_register(used.segment()))
    .flatten()
    .filter(|&base| base != 0)
    .map(|base| (format!("{:?}", used.segment()), base));
    let base = (used.base() != Register::None).then(|| {
        (
            format!("{:?}", used.base()).to_lowercase(),
            registers.value(used.base()).unwrap_or(0),
        )
    });
    let write = matches!(
        used.access(),
        OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
    );
    let mut operand_text = String::from("[");
    if let Some((name, _)) = &base {
        operand_text.push_str(name);
    }
    if used.index() != Register::None {
        if operand_text.len() > 1 {
            operand_text.push('+');
        }
        operand_text.push_str(&format!("{:?}", used.index()).to_lowercase());
        if used.scale() > 1 {
            operand_text.push_str(&format!("*{}", used.scale()));
        }
    }
    let displacement = crate::narrow::signed(used.displacement());
    if displacement != 0 || operand_text.len() == 1 {
        if operand_text.len() > 1 {
            if displacement < 0 {
                operand_text.push_str(&format!("-{:#x}", displacement.unsigned_abs()));
            } else {
                operand_text.push_str(&format!("+{displacement:#x}"));
            }
        } else {
            operand_text.push_str(&format!("{:#x}", used.displacement()));
        }
    }
    operand_text.push(']');
    MemoryOperand {
        text: operand_text,
        address,
        write,
        size: used.memory_size().size(),
        base,
        segment,
    }
}

/// Read and decode the instruction at the interrupted RIP (at CS base + RIP), in the code's
/// `bitness`.
pub fn decode_at(
    space: &AddressSpace<'_>,
    registers: &RegisterFile<'_>,
    bitness: u32,
) -> Result<Instruction, String> {
    let rip = registers.regs.rip;
    let linear = crate::registers::linear_address(bitness, registers.segments.cs, rip);
    let mut bytes = [0u8; 15];
    let (_, len) = space
        .read_prefix(Gva::new(linear), &mut bytes)
        .map_err(|e| format!("cannot read the instruction: {e}"))?;
    decode_in(bitness, &bytes[..len], rip, registers)
        .ok_or_else(|| format!("the bytes at {rip:#x} are not a valid instruction"))
}

impl fmt::Display for Instruction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex: Vec<String> = self.bytes.iter().map(|b| format!("{b:02x}")).collect();
        write!(f, "{}   ({})", self.text, hex.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_regs;

    fn registers(regs: &kvm_regs) -> RegisterFile<'_> {
        RegisterFile {
            regs,
            segments: crate::registers::SegmentBases {
                fs: 0x7000_0000,
                ..Default::default()
            },
        }
    }

    #[test]
    fn operand_addresses_come_from_the_registers() {
        let regs = kvm_regs {
            rax: 0x8000_0000_0400_3003,
            rcx: 5,
            ..Default::default()
        };
        // mov [rax+rcx*8], rdx
        let i = decode_bytes(&[0x48, 0x89, 0x14, 0xc8], 0x1000, &registers(&regs)).unwrap();
        assert_eq!(i.text, "mov [rax+rcx*8],rdx");
        assert_eq!(i.operands.len(), 1);
        let op = &i.operands[0];
        assert_eq!(op.text, "[rax+rcx*8]");
        assert_eq!(op.address, Some(Gva::new(0x8000_0000_0400_3003 + 40)));
        assert!(op.write);
        assert_eq!(op.base, Some(("rax".into(), 0x8000_0000_0400_3003)));
    }

    #[test]
    fn rip_relative_fs_relative_and_implicit_stack_operands() {
        let regs = kvm_regs {
            rsp: 0x9000,
            ..Default::default()
        };
        // mov rax, [rip+0x10] at 0x1000 (7 bytes): reads 0x1017.
        let i = decode_bytes(
            &[0x48, 0x8b, 0x05, 0x10, 0, 0, 0],
            0x1000,
            &registers(&regs),
        )
        .unwrap();
        assert_eq!(i.operands[0].address, Some(Gva::new(0x1017)));
        assert!(!i.operands[0].write);
        // mov rax, fs:[0x28]
        let i = decode_bytes(
            &[0x64, 0x48, 0x8b, 0x04, 0x25, 0x28, 0, 0, 0],
            0x1000,
            &registers(&regs),
        )
        .unwrap();
        assert_eq!(i.operands[0].address, Some(Gva::new(0x7000_0028)));
        // push rbx writes below RSP.
        let i = decode_bytes(&[0x53], 0x1000, &registers(&regs)).unwrap();
        assert_eq!(i.operands[0].address, Some(Gva::new(0x8ff8)));
        assert!(i.operands[0].write);
    }

    /// 32-bit code: the offset wraps at 4 GiB, and a segment whose base is not zero moves the
    /// linear address, which the operand says.
    #[test]
    fn addresses_of_32_bit_code_wrap_and_add_the_segment_base() {
        let regs = kvm_regs {
            rax: 0xffff_fff8,
            ..Default::default()
        };
        // mov [eax+0x10], ecx
        let bytes = [0x89, 0x48, 0x10];
        let flat = decode_in(32, &bytes, 0x1000, &registers(&regs)).unwrap();
        assert_eq!(flat.text, "mov [eax+10h],ecx");
        assert_eq!(
            flat.operands[0].address,
            Some(Gva::new(0x8)),
            "wraps at 4 GiB"
        );
        assert_eq!(flat.operands[0].segment, None, "a flat DS adds nothing");
        let higher_half = RegisterFile {
            regs: &kvm_regs {
                rax: 0x1000,
                ..Default::default()
            },
            segments: crate::registers::SegmentBases {
                ds: 0x4000_0000,
                ..Default::default()
            },
        };
        let moved = decode_in(32, &bytes, 0x1000, &higher_half).unwrap();
        let operand = &moved.operands[0];
        assert_eq!(operand.address, Some(Gva::new(0x4000_1010)));
        assert_eq!(operand.segment, Some(("DS".to_string(), 0x4000_0000)));
        let wrapped = RegisterFile {
            segments: crate::registers::SegmentBases {
                ds: 0xc000_0000,
                ..Default::default()
            },
            ..higher_half
        };
        let regs = kvm_regs {
            rax: 0x4000_0000,
            ..Default::default()
        };
        let wrapped = RegisterFile {
            regs: &regs,
            ..wrapped
        };
        let operand = &decode_in(32, &bytes, 0x1000, &wrapped).unwrap().operands[0];
        assert_eq!(
            operand.address,
            Some(Gva::new(0x10)),
            "base + offset wraps at 4 GiB too"
        );
    }
}
