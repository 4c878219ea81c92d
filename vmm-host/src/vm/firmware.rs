//! The run loop's side of the host's BIOS: a `hlt` in one of the BIOS's stubs is a call to
//! serve, not a guest halting. The caller's registers go to [`crate::bios`] and come back
//! changed; CF and ZF go into the FLAGS image the stub's `iret` pops.

use super::Vm;
use super::error::{RunError, kvm};
use crate::addr::Gpa;
use crate::bios::{Call, Served, rom};
use crate::ending::Ending;
use kvm_bindings::kvm_sregs;
use vm_memory::Bytes;
use x86_64::registers::control::Cr0Flags;

/// CF and ZF in FLAGS.
const CARRY: u16 = 1 << 0;
const ZERO: u16 = 1 << 6;

/// Physical address of `offset` into a real-mode segment whose base is `base`.
fn linear(base: u64, offset: u64) -> Gpa {
    Gpa::new(base + (offset & 0xffff))
}

/// What a `hlt` exit was, as far as the BIOS is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum BiosCall {
    /// Not in a stub (or no BIOS): the guest's own `hlt`, or the tap's.
    NotOurs,
    /// Served: the guest goes on to the stub's `iret`.
    Served,
    /// The call cannot return.
    Ends(Ending),
}

impl Vm {
    /// A `hlt` exit in real mode at a BIOS stub: serve the call and let the guest go on to
    /// the stub's `iret`, or end the run as the call asks.
    pub(super) fn on_bios_call(&mut self) -> Result<BiosCall, RunError> {
        if self.bios.is_none() {
            return Ok(BiosCall::NotOurs);
        }
        // Through the per-exit cache: the tap's own check of this `hlt` reads them next.
        let sregs = self.stopped.sregs(&self.vcpu)?;
        if sregs.cr0 & Cr0Flags::PROTECTED_MODE_ENABLE.bits() != 0 {
            return Ok(BiosCall::NotOurs);
        }
        let regs = self.stopped.regs(&self.vcpu)?;
        // RIP is past the one-byte `hlt`.
        let hlt = linear(sregs.cs.base, regs.rip.wrapping_sub(1));
        let Some(vector) = rom::stub_vector(hlt.raw()) else {
            return Ok(BiosCall::NotOurs);
        };
        let flags_at = linear(sregs.ss.base, regs.rsp.wrapping_add(4));
        let flags: u16 = self.mem.read_obj(flags_at.guest_address()).unwrap_or(0);
        let mut call = Call::new(regs, sregs.ds.selector, sregs.es.selector);
        call.carry = flags & CARRY != 0;
        let Some(bios) = &mut self.bios else {
            return Ok(BiosCall::NotOurs);
        };
        let served = bios.serve(vector, &mut call, &self.mem, &mut self.devices);
        match served {
            Served::WaitsForKey => {
                return Ok(BiosCall::Ends(Ending::WaitsForKey {
                    caller: self.caller(&sregs, regs.rsp),
                }));
            }
            Served::Exception => {
                return Ok(BiosCall::Ends(
                    self.real_mode_exception(vector, &sregs, regs.rsp),
                ));
            }
            Served::Done | Served::Unsupported => {}
        }
        self.vcpu
            .set_regs(&call.regs)
            .map_err(kvm("KVM_SET_REGS"))?;
        self.stopped.forget();
        let mut flags = if call.carry {
            flags | CARRY
        } else {
            flags & !CARRY
        };
        match call.zero {
            Some(true) => flags |= ZERO,
            Some(false) => flags &= !ZERO,
            None => {}
        }
        // The stack is RAM the guest chose; if it is not, the `iret` faults on it anyway.
        let _ = self.mem.write_obj(flags, flags_at.guest_address());
        Ok(BiosCall::Served)
    }

    /// A real-mode exception the guest's IVT sends to the BIOS: where it was raised (the
    /// frame's CS:IP) and the instruction there, decoded as 16-bit code.
    fn real_mode_exception(&self, vector: u8, sregs: &kvm_sregs, sp: u64) -> Ending {
        let word = |offset: u64| -> u16 {
            let at = linear(sregs.ss.base, sp.wrapping_add(offset));
            self.mem.read_obj(at.guest_address()).unwrap_or(0)
        };
        let (ip, cs) = (word(0), word(2));
        let mut bytes = [0u8; 15];
        let at = Gpa::new(u64::from(cs) * 16 + u64::from(ip));
        let read = self.mem.read(&mut bytes, at.guest_address()).unwrap_or(0);
        let instruction =
            crate::cpu_state::disassemble(&bytes[..read], u64::from(ip), 16).map(|(text, _)| text);
        Ending::RealModeException {
            vector,
            at: format!("{cs:04x}:{ip:04x}"),
            instruction,
        }
    }

    /// Where the `int` came from, `CS:IP` of its return address on the stack.
    fn caller(&self, sregs: &kvm_sregs, sp: u64) -> String {
        let word = |offset: u64| -> u16 {
            let at = linear(sregs.ss.base, sp.wrapping_add(offset));
            self.mem.read_obj(at.guest_address()).unwrap_or(0)
        };
        format!("{:04x}:{:04x}", word(2), word(0))
    }
}
