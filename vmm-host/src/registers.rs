//! The general-purpose registers by the names instructions use, for iced-x86's
//! effective-address computation (the tap's displaced-instruction emulator and the fault
//! analysis both decode with them).

use iced_x86::Register;
use kvm_bindings::kvm_regs;

/// Register values for iced's effective-address computation.
#[derive(Debug)]
pub struct RegisterFile<'a> {
    pub regs: &'a kvm_regs,
    pub fs_base: u64,
    pub gs_base: u64,
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
            Register::FS => return Some(self.fs_base),
            Register::GS => return Some(self.gs_base),
            Register::ES | Register::CS | Register::SS | Register::DS => return Some(0),
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
