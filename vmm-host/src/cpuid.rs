//! The CPUID the guest sees: what this host's KVM supports, with the vCPU's own APIC ID and the
//! hypervisor bit. Without KVM_SET_CPUID2 a guest's `wrmsr EFER` raises #GP on the nested KVM
//! these machines run (notes/kvm-on-these-machines.md), so every vCPU gets one.

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::Kvm;

#[derive(Debug, thiserror::Error)]
pub enum CpuidError {
    #[error("KVM_GET_SUPPORTED_CPUID failed: {0}")]
    Supported(kvm_ioctls::Error),
}

/// Leaf 1, ECX bit 31: "running under a hypervisor".
const HYPERVISOR_BIT: u32 = 1 << 31;

pub fn guest_cpuid(kvm: &Kvm, vcpu_id: u8) -> Result<CpuId, CpuidError> {
    let mut cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(CpuidError::Supported)?;
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            1 => {
                entry.ebx = (entry.ebx & 0x00ff_ffff) | (u32::from(vcpu_id) << 24);
                entry.ecx |= HYPERVISOR_BIT;
            }
            0xb | 0x1f => entry.edx = u32::from(vcpu_id),
            _ => {}
        }
    }
    Ok(cpuid)
}

/// What the guest's CPUID says about paging: MAXPHYADDR and Page1GB.
pub fn paging_features(cpuid: &CpuId) -> crate::paging::CpuPaging {
    let page_1gb = cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == 0x8000_0001)
        .is_some_and(|e| e.edx & (1 << 26) != 0);
    crate::paging::CpuPaging {
        max_phys_addr: max_phys_addr_bits(cpuid),
        gib_pages: page_1gb,
    }
}

/// MAXPHYADDR: physical-address width from leaf 0x8000_0008, 36 when the leaf is absent.
pub fn max_phys_addr_bits(cpuid: &CpuId) -> u8 {
    cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == 0x8000_0008)
        .map_or(36, |e| (e.eax & 0xff) as u8)
}
