//! Which instructions this host's KVM cannot run in ring 0. On a nested KVM that emulates
//! ring-0 code (this project's machines) an instruction its emulator lacks ends the run with
//! KVM_EXIT_INTERNAL_ERROR; a kernel that checks CPUID avoids most of them when `--cpuid`
//! hides the feature. Each instruction runs alone in a throw-away VM, in 64-bit ring 0 with
//! SSE, XSAVE (XCR0 = x87|SSE) and FSGSBASE enabled, so that a fault means the CPU refused it
//! and an internal error means the emulator did.

use super::machine::*;
use super::{Probe, Verdict};
use iced_x86::IcedError;
use iced_x86::code_asm::*;
use kvm_bindings::kvm_xcrs;
use kvm_ioctls::Kvm;
use std::time::Duration;

const NAME: &str = "ring-0 instructions";
const LIMIT: Duration = Duration::from_secs(2);
/// 64-byte-aligned scratch memory for the memory operands (XSAVE needs 64, FXSAVE 16).
const SCRATCH: u64 = 0x40000;
/// CR4.OSFXSR | OSXMMEXCPT | FSGSBASE | OSXSAVE.
const CR4_EXTENSIONS: u64 = 1 << 9 | 1 << 10 | 1 << 16 | 1 << 18;
/// XCR0: x87 and SSE state; also EDX:EAX, the state XSAVE saves.
const XCR0: u32 = 0x3;

type Build = fn(&mut CodeAssembler) -> Result<(), IcedError>;

/// Instructions kernels use early, named as a disassembler shows them. The guarded ones are
/// those `--cpuid` can steer a kernel around (`emulation::hint` names the flag).
const INSTRUCTIONS: [(&str, Build); 16] = [
    ("lock cmpxchg16b", |a| a.lock().cmpxchg16b(ptr(rdi))),
    ("xsave64", |a| a.xsave64(ptr(rdi))),
    ("xrstor64", |a| {
        a.xsave64(ptr(rdi))?;
        a.xrstor64(ptr(rdi))
    }),
    ("xgetbv", |a| a.xgetbv()),
    ("fxsave64", |a| a.fxsave64(ptr(rdi))),
    ("fxrstor64", |a| {
        a.fxsave64(ptr(rdi))?;
        a.fxrstor64(ptr(rdi))
    }),
    ("rdrand", |a| a.rdrand(rax)),
    ("rdseed", |a| a.rdseed(rax)),
    ("rdtscp", |a| a.rdtscp()),
    ("popcnt", |a| a.popcnt(rax, rbx)),
    ("movbe", |a| a.movbe(rax, ptr(rdi))),
    ("rdfsbase", |a| a.rdfsbase(rax)),
    ("aesenc", |a| a.aesenc(xmm0, xmm1)),
    ("pclmulqdq", |a| a.pclmulqdq(xmm0, xmm1, 0)),
    ("fninit", |a| a.fninit()),
    ("fwait", |a| a.wait()),
];

/// How one instruction fared.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Ran,
    /// KVM_EXIT_INTERNAL_ERROR: the emulator could not run it.
    NotEmulated,
    /// The CPU raised this exception vector (the feature is absent or disabled).
    Faulted(u64),
    Other(String),
}

pub fn ring0_instructions(kvm: &Kvm) -> Probe {
    let mut outcomes = Vec::with_capacity(INSTRUCTIONS.len());
    for (name, build) in INSTRUCTIONS {
        match run_one(kvm, build) {
            Ok(outcome) => outcomes.push((name, outcome)),
            Err(error) => {
                return Probe {
                    name: NAME,
                    verdict: Verdict::Error,
                    evidence: format!("{name}: {error}"),
                };
            }
        }
    }
    summarise(&outcomes)
}

fn run_one(kvm: &Kvm, build: Build) -> Result<Outcome, ProbeVmError> {
    let code = assemble(64, CODE, |a| {
        a.mov(rdi, SCRATCH)?;
        a.mov(eax, XCR0)?;
        a.xor(edx, edx)?;
        a.xor(ecx, ecx)?;
        build(a)?;
        a.mov(dx, u32::from(DONE_PORT))?;
        a.out(dx, al)
    })?;
    let mut vm = ProbeVm::new(kvm, true, false)?;
    vm.write_code(CODE, &code)?;
    let mut sregs = vm.vcpu.get_sregs().map_err(kvm_step("KVM_GET_SREGS"))?;
    sregs.cr4 |= CR4_EXTENSIONS;
    vm.vcpu
        .set_sregs(&sregs)
        .map_err(kvm_step("KVM_SET_SREGS"))?;
    let mut xcrs = kvm_xcrs {
        nr_xcrs: 1,
        ..Default::default()
    };
    xcrs.xcrs[0].value = u64::from(XCR0);
    vm.vcpu.set_xcrs(&xcrs).map_err(kvm_step("KVM_SET_XCRS"))?;
    let trace = vm.run(LIMIT);
    let vector = trace.values_on(VECTOR_PORT).next();
    Ok(match (trace.stop, vector) {
        (_, Some(vector)) => Outcome::Faulted(vector),
        (Stop::Done, None) => Outcome::Ran,
        (Stop::InternalError { suberror: 1 }, None) => Outcome::NotEmulated,
        (stop, None) => Outcome::Other(format!("{stop:?}")),
    })
}

/// One line: what the emulator cannot run first, then what faulted, then how many ran.
fn summarise(outcomes: &[(&str, Outcome)]) -> Probe {
    let names = |want: fn(&Outcome) -> bool| -> Vec<String> {
        outcomes
            .iter()
            .filter(|(_, o)| want(o))
            .map(|(n, _)| (*n).to_string())
            .collect()
    };
    let not_emulated = names(|o| *o == Outcome::NotEmulated);
    let ran = names(|o| *o == Outcome::Ran).len();
    let mut parts = Vec::new();
    if !not_emulated.is_empty() {
        parts.push(format!(
            "KVM cannot emulate {} (KVM_EXIT_INTERNAL_ERROR; `--cpuid` hides what guards them)",
            not_emulated.join(", ")
        ));
    }
    let faulted: Vec<String> = outcomes
        .iter()
        .filter_map(|(n, o)| match o {
            Outcome::Faulted(v) => Some(format!("{n} ({})", vector_name(*v))),
            Outcome::Other(what) => Some(format!("{n} ({what})")),
            _ => None,
        })
        .collect();
    if !faulted.is_empty() {
        parts.push(format!("the CPU refused {}", faulted.join(", ")));
    }
    parts.push(format!("{ran} of {} ran", outcomes.len()));
    Probe {
        name: NAME,
        verdict: if not_emulated.is_empty() {
            Verdict::Yes
        } else {
            Verdict::No
        },
        evidence: parts.join("; "),
    }
}

fn vector_name(vector: u64) -> String {
    u8::try_from(vector).map_or_else(
        |_| format!("vector {vector}"),
        |v| abi::exception::mnemonic(v).to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_leads_with_what_cannot_be_emulated() {
        let probe = summarise(&[
            ("lock cmpxchg16b", Outcome::NotEmulated),
            ("rdrand", Outcome::Ran),
            ("rdseed", Outcome::Faulted(6)),
            ("xrstor64", Outcome::NotEmulated),
            ("movbe", Outcome::Other("TimedOut".into())),
        ]);
        assert_eq!(probe.verdict, Verdict::No);
        assert_eq!(
            probe.evidence,
            "KVM cannot emulate lock cmpxchg16b, xrstor64 (KVM_EXIT_INTERNAL_ERROR; `--cpuid` hides what guards them); the CPU refused rdseed (#UD), movbe (TimedOut); 1 of 5 ran"
        );
        let all = summarise(&[("popcnt", Outcome::Ran)]);
        assert_eq!(all.verdict, Verdict::Yes);
        assert_eq!(all.evidence, "1 of 1 ran");
    }

    /// Every instruction assembles, and each is the one its name says.
    #[test]
    fn each_case_assembles_to_its_instruction() {
        for (name, build) in INSTRUCTIONS {
            let bytes = assemble(64, CODE, build).unwrap();
            let mut decoder = iced_x86::Decoder::with_ip(64, &bytes, CODE, 0);
            let last = std::iter::from_fn(|| decoder.can_decode().then(|| decoder.decode()))
                .last()
                .unwrap();
            let mnemonic = format!("{:?}", last.mnemonic()).to_ascii_lowercase();
            assert!(name.ends_with(&mnemonic), "{name}: {mnemonic}");
            assert_eq!(name.starts_with("lock "), last.has_lock_prefix(), "{name}");
        }
    }
}
