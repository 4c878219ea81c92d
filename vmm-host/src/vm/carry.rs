//! After KVM failed to emulate an instruction: the few the host can carry out itself
//! ([`crate::fallback`]) are done here, counted, and the guest goes on.

use super::Vm;
use super::error::{RunError, kvm};

impl Vm {
    /// Carry out the instruction KVM could not emulate, if the host can (true: go on).
    pub(super) fn carry_out(&mut self) -> Result<bool, RunError> {
        let mut sregs = self.vcpu.get_sregs().map_err(kvm("KVM_GET_SREGS"))?;
        let mut regs = self.vcpu.get_regs().map_err(kvm("KVM_GET_REGS"))?;
        let Some(carried) = crate::fallback::carry_out(&mut regs, &mut sregs, &self.mem) else {
            return Ok(false);
        };
        *self.carried.entry(carried.name()).or_default() += 1;
        self.vcpu.set_sregs(&sregs).map_err(kvm("KVM_SET_SREGS"))?;
        self.vcpu.set_regs(&regs).map_err(kvm("KVM_SET_REGS"))?;
        Ok(true)
    }
}
