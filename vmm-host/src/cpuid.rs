//! The CPUID the guest sees: what this host's KVM supports, with the vCPU's own APIC ID and the
//! hypervisor bit, less the features the user hid (`--cpuid -cx16,-xsave`). Without
//! KVM_SET_CPUID2 a guest's `wrmsr EFER` raises #GP on the nested KVM these machines run
//! (notes/kvm-on-these-machines.md), so every vCPU gets one.
//!
//! Hiding is how a user gets a kernel past an instruction this KVM cannot emulate: a kernel
//! that checks CPUID takes its other path (Linux without CX16 does not use `cmpxchg16b`).

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::Kvm;

#[derive(Debug, thiserror::Error)]
pub enum CpuidError {
    #[error("KVM_GET_SUPPORTED_CPUID failed: {0}")]
    Supported(kvm_ioctls::Error),
}

/// Leaf 1, ECX bit 31: "running under a hypervisor".
const HYPERVISOR_BIT: u32 = 1 << 31;

/// A CPUID register of a leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reg {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

/// A feature bit, by the name Linux's /proc/cpuinfo gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feature {
    pub name: &'static str,
    leaf: u32,
    subleaf: u32,
    reg: Reg,
    bit: u8,
}

const fn feature(name: &'static str, leaf: u32, subleaf: u32, reg: Reg, bit: u8) -> Feature {
    Feature {
        name,
        leaf,
        subleaf,
        reg,
        bit,
    }
}

/// The features `--cpuid` can hide.
#[rustfmt::skip]
pub const FEATURES: &[Feature] = &[
    feature("sse3", 1, 0, Reg::Ecx, 0), feature("pclmulqdq", 1, 0, Reg::Ecx, 1),
    feature("monitor", 1, 0, Reg::Ecx, 3), feature("vmx", 1, 0, Reg::Ecx, 5),
    feature("ssse3", 1, 0, Reg::Ecx, 9), feature("fma", 1, 0, Reg::Ecx, 12),
    feature("cx16", 1, 0, Reg::Ecx, 13), feature("pcid", 1, 0, Reg::Ecx, 17),
    feature("sse4_1", 1, 0, Reg::Ecx, 19), feature("sse4_2", 1, 0, Reg::Ecx, 20),
    feature("x2apic", 1, 0, Reg::Ecx, 21), feature("movbe", 1, 0, Reg::Ecx, 22),
    feature("popcnt", 1, 0, Reg::Ecx, 23), feature("tsc_deadline_timer", 1, 0, Reg::Ecx, 24),
    feature("aes", 1, 0, Reg::Ecx, 25), feature("xsave", 1, 0, Reg::Ecx, 26),
    feature("avx", 1, 0, Reg::Ecx, 28), feature("f16c", 1, 0, Reg::Ecx, 29),
    feature("rdrand", 1, 0, Reg::Ecx, 30), feature("hypervisor", 1, 0, Reg::Ecx, 31),
    feature("vme", 1, 0, Reg::Edx, 1), feature("de", 1, 0, Reg::Edx, 2),
    feature("pse", 1, 0, Reg::Edx, 3), feature("tsc", 1, 0, Reg::Edx, 4),
    feature("pae", 1, 0, Reg::Edx, 6), feature("mce", 1, 0, Reg::Edx, 7),
    feature("cx8", 1, 0, Reg::Edx, 8), feature("apic", 1, 0, Reg::Edx, 9),
    feature("sep", 1, 0, Reg::Edx, 11), feature("mtrr", 1, 0, Reg::Edx, 12),
    feature("pge", 1, 0, Reg::Edx, 13), feature("mca", 1, 0, Reg::Edx, 14),
    feature("pat", 1, 0, Reg::Edx, 16), feature("pse36", 1, 0, Reg::Edx, 17),
    feature("clflush", 1, 0, Reg::Edx, 19), feature("fxsr", 1, 0, Reg::Edx, 24),
    feature("fsgsbase", 7, 0, Reg::Ebx, 0), feature("bmi1", 7, 0, Reg::Ebx, 3),
    feature("avx2", 7, 0, Reg::Ebx, 5), feature("smep", 7, 0, Reg::Ebx, 7),
    feature("bmi2", 7, 0, Reg::Ebx, 8), feature("erms", 7, 0, Reg::Ebx, 9),
    feature("invpcid", 7, 0, Reg::Ebx, 10), feature("avx512f", 7, 0, Reg::Ebx, 16),
    feature("rdseed", 7, 0, Reg::Ebx, 18), feature("adx", 7, 0, Reg::Ebx, 19),
    feature("smap", 7, 0, Reg::Ebx, 20), feature("clflushopt", 7, 0, Reg::Ebx, 23),
    feature("clwb", 7, 0, Reg::Ebx, 24), feature("umip", 7, 0, Reg::Ecx, 2),
    feature("pku", 7, 0, Reg::Ecx, 3), feature("la57", 7, 0, Reg::Ecx, 16),
    feature("rdpid", 7, 0, Reg::Ecx, 22), feature("xsaveopt", 0xd, 1, Reg::Eax, 0),
    feature("xsavec", 0xd, 1, Reg::Eax, 1), feature("xsaves", 0xd, 1, Reg::Eax, 3),
    feature("lahf_lm", 0x8000_0001, 0, Reg::Ecx, 0), feature("svm", 0x8000_0001, 0, Reg::Ecx, 2),
    feature("abm", 0x8000_0001, 0, Reg::Ecx, 5), feature("syscall", 0x8000_0001, 0, Reg::Edx, 11),
    feature("nx", 0x8000_0001, 0, Reg::Edx, 20), feature("pdpe1gb", 0x8000_0001, 0, Reg::Edx, 26),
    feature("rdtscp", 0x8000_0001, 0, Reg::Edx, 27), feature("lm", 0x8000_0001, 0, Reg::Edx, 29),
];

/// KVM's paravirtual leaves (0x4000_0000…): hidden by the name `kvm`.
const KVM_LEAVES: std::ops::RangeInclusive<u32> = 0x4000_0000..=0x4000_00ff;

/// What `--cpuid` hides: feature bits, and perhaps KVM's paravirtual leaves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hidden {
    pub features: Vec<Feature>,
    pub kvm_leaves: bool,
}

impl std::str::FromStr for Hidden {
    type Err = String;

    /// `-cx16,-xsave,-kvm`: only hiding is possible, so each name carries its `-`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut hidden = Self::default();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let Some(name) = word.strip_prefix('-') else {
                return Err(format!(
                    "`{word}`: write -{word} to hide it; features can only be hidden, not added"
                ));
            };
            if name == "kvm" {
                hidden.kvm_leaves = true;
            } else if let Some(f) = FEATURES.iter().find(|f| f.name == name) {
                hidden.features.push(*f);
            } else {
                return Err(format!(
                    "unknown CPUID feature `{name}`; known: kvm (the paravirtual leaves), {}",
                    FEATURES
                        .iter()
                        .map(|f| f.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        Ok(hidden)
    }
}

impl Hidden {
    /// Clear the hidden bits in `cpuid`, and drop KVM's leaves if asked.
    pub fn apply(&self, cpuid: &mut CpuId) {
        for entry in cpuid.as_mut_slice() {
            for f in &self.features {
                if entry.function == f.leaf && entry.index == f.subleaf {
                    let reg = match f.reg {
                        Reg::Eax => &mut entry.eax,
                        Reg::Ebx => &mut entry.ebx,
                        Reg::Ecx => &mut entry.ecx,
                        Reg::Edx => &mut entry.edx,
                    };
                    *reg &= !(1 << f.bit);
                }
            }
            if self.kvm_leaves && KVM_LEAVES.contains(&entry.function) {
                // A leaf past the hypervisor range's maximum reads as zeroes: no signature.
                *entry = kvm_bindings::kvm_cpuid_entry2 {
                    function: entry.function,
                    index: entry.index,
                    ..Default::default()
                };
            }
        }
    }
}

pub fn guest_cpuid(kvm: &Kvm, vcpu_id: u8, hidden: &Hidden) -> Result<CpuId, CpuidError> {
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
    hidden.apply(&mut cpuid);
    Ok(cpuid)
}

/// What the guest's CPUID says about paging: MAXPHYADDR, Page1GB and PSE-36.
pub fn paging_features(cpuid: &CpuId) -> crate::paging::CpuPaging {
    let edx_bit = |function: u32, bit: u32| {
        cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == function)
            .is_some_and(|e| e.edx & (1 << bit) != 0)
    };
    crate::paging::CpuPaging {
        max_phys_addr: max_phys_addr_bits(cpuid),
        gib_pages: edx_bit(0x8000_0001, 26),
        pse36: edx_bit(1, 17),
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

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    fn entry(function: u32, index: u32, ecx: u32, edx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ecx,
            edx,
            ..Default::default()
        }
    }

    #[test]
    fn hidden_features_lose_their_bit_and_nothing_else() {
        let mut cpuid = CpuId::from_entries(&[
            entry(1, 0, u32::MAX, u32::MAX),
            entry(0x8000_0001, 0, u32::MAX, u32::MAX),
            entry(0x4000_0000, 0, 0x4b4d_564b, 0x4d),
            entry(0x4000_0001, 0, 0, 0x0100_00ff),
        ])
        .unwrap();
        let hidden: Hidden = "-cx16, -xsave,-pdpe1gb,-kvm".parse().unwrap();
        hidden.apply(&mut cpuid);
        let e = cpuid.as_slice();
        assert_eq!(e[0].ecx, !((1 << 13) | (1 << 26)));
        assert_eq!(e[0].edx, u32::MAX);
        assert_eq!((e[1].ecx, e[1].edx), (u32::MAX, !(1 << 26)));
        assert_eq!(
            (e[2].ecx, e[2].edx, e[3].edx),
            (0, 0, 0),
            "no KVM signature"
        );
        assert!(
            !paging_features(&cpuid).gib_pages,
            "the walker follows the CPUID"
        );
    }

    #[test]
    fn mistakes_are_named() {
        assert_eq!(
            "cx16".parse::<Hidden>().unwrap_err(),
            "`cx16`: write -cx16 to hide it; features can only be hidden, not added"
        );
        let unknown = "-cx61".parse::<Hidden>().unwrap_err();
        assert!(
            unknown.starts_with(
                "unknown CPUID feature `cx61`; known: kvm (the paravirtual leaves), sse3,"
            ),
            "{unknown}"
        );
        assert_eq!("".parse::<Hidden>().unwrap(), Hidden::default());
        assert!(
            FEATURES
                .iter()
                .all(|f| FEATURES.iter().filter(|g| g.name == f.name).count() == 1)
        );
    }
}
