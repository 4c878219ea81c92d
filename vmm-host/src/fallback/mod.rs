//! Instructions the host carries out when KVM's emulator cannot. On a nested KVM that
//! emulates ring-0 code (../shared/notes, `vmm-host doctor`), some instructions end the run
//! with an emulation failure although the guest did nothing wrong; for the few whose effect
//! is plain register and stack work, the host does it and lets the guest go on:
//! - real-mode `int n` and `iret` (a boot sector's BIOS calls), [`real_mode`];
//! - a 32-bit `iret` in ring 0 back to ring 0 with paging off (every interrupt handler of a
//!   32-bit kernel ends in one), [`protected`].
//!
//! Anything else (an outer-privilege return, a task return, paging on, a descriptor that is
//! not a present code segment) is left alone, and the run ends with KVM's error as before.

pub mod protected;
pub mod real_mode;

use kvm_bindings::{kvm_regs, kvm_sregs};
use vm_memory::GuestMemoryMmap;
use x86_64::registers::control::Cr0Flags;

/// What the host carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carried {
    RealModeInt(u8),
    RealModeIret,
    ProtectedIret,
}

impl Carried {
    /// How the run's report names it.
    pub fn name(self) -> &'static str {
        match self {
            Self::RealModeInt(_) => "real-mode int",
            Self::RealModeIret => "real-mode iret",
            Self::ProtectedIret => "32-bit iret",
        }
    }
}

/// Carry out the instruction at CS:EIP if it is one of those above, changing `regs` and
/// `sregs` as the CPU would have; `None` leaves everything as it was.
pub fn carry_out(
    regs: &mut kvm_regs,
    sregs: &mut kvm_sregs,
    mem: &GuestMemoryMmap,
) -> Option<Carried> {
    if sregs.cr0 & Cr0Flags::PROTECTED_MODE_ENABLE.bits() == 0 {
        real_mode::emulate(regs, sregs, mem)
    } else {
        protected::iret(regs, sregs, mem)
    }
}
