//! Why a run stopped where KVM could not emulate an instruction, and what gets a kernel past
//! it. On the nested KVM these machines run, ring-0 code is emulated and some instructions
//! are not (../shared/notes/kvm-on-these-machines.md): Debian's kernel stops at
//! `lock cmpxchg16b`, then at `xrstor`. A kernel that checks CPUID takes another path when the
//! feature is hidden, so the hint names the `--cpuid` flag that hides it.

use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter, Mnemonic};

/// The CPUID feature (as `--cpuid` names it) whose bit a kernel checks before using an
/// instruction with this mnemonic.
fn feature_of(mnemonic: Mnemonic) -> Option<&'static str> {
    use Mnemonic as M;
    Some(match mnemonic {
        M::Cmpxchg16b => "cx16",
        M::Xsave | M::Xsave64 | M::Xrstor | M::Xrstor64 | M::Xgetbv | M::Xsetbv => "xsave",
        M::Xsaveopt | M::Xsaveopt64 => "xsaveopt",
        M::Xsavec | M::Xsavec64 => "xsavec",
        M::Xsaves | M::Xsaves64 | M::Xrstors | M::Xrstors64 => "xsaves",
        M::Rdrand => "rdrand",
        M::Rdseed => "rdseed",
        M::Rdpid => "rdpid",
        M::Rdtscp => "rdtscp",
        M::Movbe => "movbe",
        M::Popcnt => "popcnt",
        M::Aesenc | M::Aesenclast | M::Aesdec | M::Aesdeclast | M::Aesimc | M::Aeskeygenassist => {
            "aes"
        }
        M::Pclmulqdq => "pclmulqdq",
        M::Invpcid => "invpcid",
        M::Rdfsbase | M::Rdgsbase | M::Wrfsbase | M::Wrgsbase => "fsgsbase",
        M::Clflushopt => "clflushopt",
        M::Clwb => "clwb",
        M::Fxsave | M::Fxsave64 | M::Fxrstor | M::Fxrstor64 => "fxsr",
        _ => return None,
    })
}

/// One line for the run report: the instruction KVM could not emulate and, where a CPUID
/// feature guards it, the flag that hides that feature. `bytes` start at `rip`.
pub fn hint(bytes: &[u8], rip: u64, bitness: u32) -> Option<String> {
    let instruction = Decoder::with_ip(bitness, bytes, rip, DecoderOptions::NONE).decode();
    if instruction.is_invalid() {
        return None;
    }
    let mut text = String::new();
    IntelFormatter::new().format(&instruction, &mut text);
    let mnemonic = instruction.mnemonic();
    Some(match feature_of(mnemonic) {
        Some(flag) => format!(
            "this KVM could not emulate `{text}`; a kernel that checks CPUID avoids it with --cpuid -{flag}"
        ),
        None if matches!(mnemonic, Mnemonic::Int | Mnemonic::Int1 | Mnemonic::Int3) => format!(
            "this KVM cannot emulate `{text}` outside real mode (see `vmm-host doctor`); a kernel cannot be steered past it by CPUID"
        ),
        None if mnemonic == Mnemonic::Iretd && bitness == 32 => format!(
            "this KVM cannot emulate a 32-bit `{text}` (see `vmm-host doctor`): 32-bit kernels stop at their first return from an interrupt here"
        ),
        None => format!(
            "this KVM could not emulate `{text}`; no CPUID feature guards it, so a kernel cannot be steered past it"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_known_instruction_names_its_flag() {
        // lock cmpxchg16b [rdi]; xrstor64 [rsp]; rdrand eax
        let cases: [(&[u8], &str); 3] = [
            (&[0xf0, 0x48, 0x0f, 0xc7, 0x0f], "--cpuid -cx16"),
            (&[0x48, 0x0f, 0xae, 0x2c, 0x24], "--cpuid -xsave"),
            (&[0x0f, 0xc7, 0xf0], "--cpuid -rdrand"),
        ];
        for (bytes, flag) in cases {
            let line = hint(bytes, 0x1000, 64).unwrap();
            assert!(line.ends_with(flag), "{line}");
            assert!(line.starts_with("this KVM could not emulate `"), "{line}");
        }
        let line = hint(&[0xf0, 0x48, 0x0f, 0xc7, 0x0f], 0x1000, 64).unwrap();
        assert!(line.contains("`lock cmpxchg16b [rdi]`"), "{line}");
    }

    #[test]
    fn instructions_no_flag_guards_say_so() {
        let int = hint(&[0xcd, 0x80], 0, 64).unwrap();
        assert!(int.contains("outside real mode"), "{int}");
        let iret = hint(&[0xcf], 0, 32).unwrap();
        assert!(
            iret.contains("32-bit `iretd`") || iret.contains("32-bit `iret`"),
            "{iret}"
        );
        let other = hint(&[0x90], 0, 64).unwrap();
        assert!(other.contains("no CPUID feature guards it"), "{other}");
        assert_eq!(hint(&[0x0f], 0, 64), None, "not an instruction");
    }
}
