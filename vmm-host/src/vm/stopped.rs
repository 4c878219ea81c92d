//! The vCPU's registers while the guest stands, read from KVM once per stop.
//!
//! gdb asks for the same state several times per stop (`g`, then memory reads that need
//! CR3, then the resume that checks RIP for breakpoints). On a nested KVM each of those
//! ioctls is an exit to the outer hypervisor, so they are read once and kept until the
//! vCPU runs again or its registers are written.

use kvm_bindings::{Msrs, kvm_fpu, kvm_msr_entry, kvm_regs, kvm_sregs};
use kvm_ioctls::VcpuFd;
use std::cell::Cell;

pub const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

/// What one read of the vCPU state failed on.
#[derive(Debug, thiserror::Error)]
#[error("could not {what}: {error}")]
pub struct ReadError {
    pub what: &'static str,
    pub error: kvm_ioctls::Error,
}

fn failed(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> ReadError {
    move |error| ReadError { what, error }
}

/// Each part is read on first use; [`StoppedState::forget`] drops all of them.
#[derive(Debug, Default)]
pub struct StoppedState {
    regs: Cell<Option<kvm_regs>>,
    sregs: Cell<Option<kvm_sregs>>,
    fpu: Cell<Option<kvm_fpu>>,
    kernel_gs_base: Cell<Option<u64>>,
}

impl StoppedState {
    /// The vCPU ran or its registers were written: nothing kept is true any more.
    pub fn forget(&self) {
        self.regs.set(None);
        self.sregs.set(None);
        self.fpu.set(None);
        self.kernel_gs_base.set(None);
    }

    pub fn regs(&self, vcpu: &VcpuFd) -> Result<kvm_regs, ReadError> {
        cached(&self.regs, || {
            vcpu.get_regs().map_err(failed("read registers"))
        })
    }

    pub fn sregs(&self, vcpu: &VcpuFd) -> Result<kvm_sregs, ReadError> {
        cached(&self.sregs, || {
            vcpu.get_sregs().map_err(failed("read system registers"))
        })
    }

    pub fn fpu(&self, vcpu: &VcpuFd) -> Result<kvm_fpu, ReadError> {
        cached(&self.fpu, || {
            vcpu.get_fpu().map_err(failed("read FPU registers"))
        })
    }

    pub fn kernel_gs_base(&self, vcpu: &VcpuFd) -> Result<u64, ReadError> {
        cached(&self.kernel_gs_base, || {
            let mut msrs = Msrs::from_entries(&[kvm_msr_entry {
                index: MSR_KERNEL_GS_BASE,
                ..Default::default()
            }])
            .map_err(|_| ReadError {
                what: "build an MSR list",
                error: kvm_ioctls::Error::new(libc::ENOMEM),
            })?;
            let read = vcpu
                .get_msrs(&mut msrs)
                .map_err(failed("read KERNEL_GS_BASE"))?;
            Ok(if read == 1 {
                msrs.as_slice()[0].data
            } else {
                0
            })
        })
    }
}

fn cached<T: Copy>(
    slot: &Cell<Option<T>>,
    read: impl FnOnce() -> Result<T, ReadError>,
) -> Result<T, ReadError> {
    if let Some(value) = slot.get() {
        return Ok(value);
    }
    let value = read()?;
    slot.set(Some(value));
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_value_is_returned_without_reading_again_until_forgotten() {
        let slot = Cell::new(None);
        let reads = Cell::new(0);
        let read = || {
            reads.set(reads.get() + 1);
            Ok::<u64, ReadError>(7)
        };
        assert_eq!(cached(&slot, read).unwrap(), 7);
        assert_eq!(cached(&slot, read).unwrap(), 7);
        assert_eq!(reads.get(), 1);
        slot.set(None);
        assert_eq!(cached(&slot, read).unwrap(), 7);
        assert_eq!(reads.get(), 2);
    }

    #[test]
    fn a_failed_read_is_not_kept() {
        let slot: Cell<Option<u64>> = Cell::new(None);
        let failing = || {
            Err(ReadError {
                what: "read registers",
                error: kvm_ioctls::Error::new(libc::EIO),
            })
        };
        let err = cached(&slot, failing).unwrap_err();
        assert!(err.to_string().starts_with("could not read registers"));
        assert_eq!(slot.get(), None);
    }
}
