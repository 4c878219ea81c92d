//! The general-purpose registers by the names instructions use, for iced-x86's
//! effective-address computation (the tap's displaced-instruction emulator and the fault
//! analysis both decode with them).

use iced_x86::Register;
use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use x86_64::registers::model_specific::EferFlags;

/// The segment bases a linear address is formed with. In long mode the CPU ignores the bases of
/// ES, CS, SS and DS (they are zero here) and only FS and GS count; in protected mode every
/// descriptor's base counts (a kernel whose segments are not flat: linear ≠ offset), and in
/// real mode each base is selector × 16.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SegmentBases {
    pub es: u64,
    pub cs: u64,
    pub ss: u64,
    pub ds: u64,
    pub fs: u64,
    pub gs: u64,
}

impl SegmentBases {
    pub fn of(sregs: &kvm_sregs) -> Self {
        let long = sregs.efer & EferFlags::LONG_MODE_ACTIVE.bits() != 0;
        let legacy = |segment: &kvm_segment| if long { 0 } else { segment.base };
        Self {
            es: legacy(&sregs.es),
            cs: legacy(&sregs.cs),
            ss: legacy(&sregs.ss),
            ds: legacy(&sregs.ds),
            fs: sregs.fs.base,
            gs: sregs.gs.base,
        }
    }

    /// The base of a segment register, by iced's name; `None` for any other register.
    pub fn of_register(&self, register: Register) -> Option<u64> {
        match register {
            Register::ES => Some(self.es),
            Register::CS => Some(self.cs),
            Register::SS => Some(self.ss),
            Register::DS => Some(self.ds),
            Register::FS => Some(self.fs),
            Register::GS => Some(self.gs),
            _ => None,
        }
    }
}

/// The linear address of `offset` in a segment at `base`: outside 64-bit code it wraps at
/// 4 GiB.
pub fn linear_address(bitness: u32, base: u64, offset: u64) -> u64 {
    let linear = base.wrapping_add(offset);
    if bitness < 64 {
        linear & 0xffff_ffff
    } else {
        linear
    }
}

/// Register values for iced's effective-address computation.
#[derive(Debug)]
pub struct RegisterFile<'a> {
    pub regs: &'a kvm_regs,
    pub segments: SegmentBases,
}

impl RegisterFile<'_> {
    pub fn value(&self, register: Register) -> Option<u64> {
        let r = self.regs;
        let full = register.full_register();
        let value = match full {
            Register::RAX => r.rax,
            Register::RBX => r.rbx,
            Register::RCX => r.rcx,
            Register::RDX => r.rdx,
            Register::RSI => r.rsi,
            Register::RDI => r.rdi,
            Register::RBP => r.rbp,
            Register::RSP => r.rsp,
            Register::R8 => r.r8,
            Register::R9 => r.r9,
            Register::R10 => r.r10,
            Register::R11 => r.r11,
            Register::R12 => r.r12,
            Register::R13 => r.r13,
            Register::R14 => r.r14,
            Register::R15 => r.r15,
            Register::RIP => r.rip,
            Register::ES
            | Register::CS
            | Register::SS
            | Register::DS
            | Register::FS
            | Register::GS => return self.segments.of_register(full),
            _ => return None,
        };
        let bits = register.size() * 8;
        Some(if bits >= 64 {
            value
        } else {
            value & ((1u64 << bits) - 1)
        })
    }
}
