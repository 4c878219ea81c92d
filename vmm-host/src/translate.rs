//! Guest-virtual reads through KVM_TRANSLATE, for the run-ending report.
//!
//! KVM walks the guest's page tables for the vCPU's current mode and CR3; the host's own
//! walker (with reasons for every failure) comes with the exception tap.

use crate::addr::{Gpa, Gva};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestMemoryMmap};

#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    #[error("{0} is not mapped by the guest's page tables")]
    NotMapped(Gva),
    #[error("KVM_TRANSLATE of {0} failed: {1}")]
    Kvm(Gva, kvm_ioctls::Error),
    #[error("{0} maps to {1}, which is not guest RAM")]
    NotRam(Gva, Gpa),
}

pub fn translate(vcpu: &VcpuFd, gva: Gva) -> Result<Gpa, TranslateError> {
    let t = vcpu
        .translate_gva(gva.raw())
        .map_err(|e| TranslateError::Kvm(gva, e))?;
    if t.valid == 0 {
        return Err(TranslateError::NotMapped(gva));
    }
    Ok(Gpa::new(t.physical_address))
}

/// Fill `buf` from guest-virtual `gva`, page by page; returns where the first byte lives.
pub fn read_virtual(
    vcpu: &VcpuFd,
    mem: &GuestMemoryMmap,
    gva: Gva,
    buf: &mut [u8],
) -> Result<Gpa, TranslateError> {
    let mut first = None;
    let mut done = 0;
    while done < buf.len() {
        let here = Gva::new(gva.raw().wrapping_add(done as u64));
        let gpa = translate(vcpu, here)?;
        first.get_or_insert(gpa);
        let in_page = here.to_page_end();
        let len = in_page.min(buf.len() - done);
        mem.read_slice(&mut buf[done..done + len], gpa.guest_address())
            .map_err(|_| TranslateError::NotRam(here, gpa))?;
        done += len;
    }
    Ok(first.unwrap_or(Gpa::new(0)))
}
