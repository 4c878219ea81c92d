//! One BIOS call as the service sees it: the caller's registers, its data segments, and the
//! carry and zero flags the service hands back through the FLAGS image that `int` pushed.

use crate::addr::Gpa;
use kvm_bindings::kvm_regs;

/// The registers of a real-mode `int` caller, changed in place by the service.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub regs: kvm_regs,
    /// DS and ES as the caller left them (services read and write buffers through them).
    pub ds: u16,
    pub es: u16,
    /// CF in the FLAGS the stub's `iret` restores: set means the call failed.
    pub carry: bool,
    /// ZF to hand back, for the few calls that answer through it (int 16h AH=01h).
    pub zero: Option<bool>,
}

/// `value` with its low 16 bits replaced by `word` (the upper bits untouched, as a 16-bit
/// write leaves them).
fn with_low16(value: u64, word: u16) -> u64 {
    (value & !0xffff) | u64::from(word)
}

impl Call {
    pub fn new(regs: kvm_regs, ds: u16, es: u16) -> Self {
        Self {
            regs,
            ds,
            es,
            carry: false,
            zero: None,
        }
    }

    pub fn ax(&self) -> u16 {
        crate::narrow::low_u16(self.regs.rax)
    }
    pub fn bx(&self) -> u16 {
        crate::narrow::low_u16(self.regs.rbx)
    }
    pub fn cx(&self) -> u16 {
        crate::narrow::low_u16(self.regs.rcx)
    }
    pub fn dx(&self) -> u16 {
        crate::narrow::low_u16(self.regs.rdx)
    }
    pub fn si(&self) -> u16 {
        crate::narrow::low_u16(self.regs.rsi)
    }
    pub fn di(&self) -> u16 {
        crate::narrow::low_u16(self.regs.rdi)
    }
    pub fn ah(&self) -> u8 {
        self.ax().to_be_bytes()[0]
    }
    pub fn al(&self) -> u8 {
        self.ax().to_le_bytes()[0]
    }
    pub fn bh(&self) -> u8 {
        self.bx().to_be_bytes()[0]
    }
    pub fn bl(&self) -> u8 {
        self.bx().to_le_bytes()[0]
    }
    pub fn ch(&self) -> u8 {
        self.cx().to_be_bytes()[0]
    }
    pub fn cl(&self) -> u8 {
        self.cx().to_le_bytes()[0]
    }
    pub fn dh(&self) -> u8 {
        self.dx().to_be_bytes()[0]
    }
    pub fn dl(&self) -> u8 {
        self.dx().to_le_bytes()[0]
    }

    pub fn set_ax(&mut self, v: u16) {
        self.regs.rax = with_low16(self.regs.rax, v);
    }
    pub fn set_bx(&mut self, v: u16) {
        self.regs.rbx = with_low16(self.regs.rbx, v);
    }
    pub fn set_cx(&mut self, v: u16) {
        self.regs.rcx = with_low16(self.regs.rcx, v);
    }
    pub fn set_dx(&mut self, v: u16) {
        self.regs.rdx = with_low16(self.regs.rdx, v);
    }
    pub fn set_ah(&mut self, v: u8) {
        self.set_ax(u16::from_be_bytes([v, self.al()]));
    }
    pub fn set_al(&mut self, v: u8) {
        self.set_ax(u16::from_be_bytes([self.ah(), v]));
    }
    /// The full 32-bit registers, for the calls that use them (E820).
    pub fn eax(&self) -> u32 {
        crate::narrow::low_u32(self.regs.rax)
    }
    pub fn set_eax(&mut self, v: u32) {
        self.regs.rax = (self.regs.rax & !0xffff_ffff) | u64::from(v);
    }
    pub fn set_ebx(&mut self, v: u32) {
        self.regs.rbx = (self.regs.rbx & !0xffff_ffff) | u64::from(v);
    }
    pub fn set_ecx(&mut self, v: u32) {
        self.regs.rcx = (self.regs.rcx & !0xffff_ffff) | u64::from(v);
    }

    /// The call worked: CF clear.
    pub fn succeed(&mut self) {
        self.carry = false;
    }

    /// The call failed with `status` in AH and CF set, as every BIOS service reports errors.
    pub fn fail(&mut self, status: u8) {
        self.set_ah(status);
        self.carry = true;
    }

    /// The physical address `segment:offset` names (real mode, A20 on).
    pub fn at(segment: u16, offset: u16) -> Gpa {
        Gpa::new(u64::from(segment) * 16 + u64::from(offset))
    }

    /// ES:DI, where the results of E820 and the drive parameters go.
    pub fn es_di(&self) -> Gpa {
        Self::at(self.es, self.di())
    }

    /// DS:SI, where int 13h's disk address packet and int 15h AH=87h's table are.
    pub fn ds_si(&self) -> Gpa {
        Self::at(self.ds, self.si())
    }

    /// ES:SI (int 15h AH=87h's descriptor table).
    pub fn es_si(&self) -> Gpa {
        Self::at(self.es, self.si())
    }

    /// ES:BX, int 13h AH=02h's buffer.
    pub fn es_bx(&self) -> Gpa {
        Self::at(self.es, self.bx())
    }
}
