//! One function per capability: each builds a throw-away VM, runs a few instructions, and
//! returns whether the capability works with the evidence it saw.

use super::machine::*;
use super::{Probe, Verdict};
use iced_x86::code_asm::*;
use kvm_bindings::{
    KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP, KVM_GUESTDBG_USE_SW_BP,
    Msrs, kvm_guest_debug, kvm_msr_entry,
};
use kvm_ioctls::Kvm;
use std::time::Duration;
use x86_64::registers::model_specific::EferFlags;

/// Long enough for any probe on a loaded machine; a working probe takes milliseconds.
const LIMIT: Duration = Duration::from_secs(2);
/// Exits timed by the port-I/O round-trip probe.
const PIO_EXITS: u32 = 20_000;

fn failed(name: &'static str, error: impl std::fmt::Display) -> Probe {
    Probe {
        name,
        verdict: Verdict::Error,
        evidence: error.to_string(),
    }
}

fn describe(stop: &Stop) -> String {
    match stop {
        Stop::Done => "finished".into(),
        Stop::Halted => "halted".into(),
        Stop::Shutdown => "triple fault (KVM_EXIT_SHUTDOWN)".into(),
        Stop::InternalError { suberror: 1 } => {
            "KVM_EXIT_INTERNAL_ERROR suberror 1 (emulation failure)".into()
        }
        Stop::InternalError { suberror } => format!("KVM_EXIT_INTERNAL_ERROR suberror {suberror}"),
        Stop::Debug(arch) => format!(
            "KVM_EXIT_DEBUG exception {} at {:#x}",
            arch.exception, arch.pc
        ),
        Stop::TimedOut => format!("no exit within {} s", LIMIT.as_secs()),
        Stop::Other(what) => what.clone(),
    }
}

/// Ring-0 code that drops to ring 3 at USER_CODE.
fn enter_ring3(a: &mut CodeAssembler) -> Result<(), iced_x86::IcedError> {
    a.mov(rsp, KERNEL_STACK)?;
    a.push(i32::from(USER_DS))?;
    a.push(const { imm32(USER_STACK) })?;
    a.push(0x2)?;
    a.push(i32::from(USER_CS))?;
    a.push(const { imm32(USER_CODE) })?;
    a.iretq()
}

/// The first exception the guest took: vector, and CS and RIP from its exception frame.
fn first_exception(trace: &Trace) -> Option<(u64, u64, u64)> {
    let vector = trace.values_on(VECTOR_PORT).next()?;
    let selector = trace.values_on(FRAME_CS_PORT).next()?;
    let rip = trace.values_on(FRAME_RIP_PORT).next()?;
    Some((vector, selector, rip))
}

fn vm(kvm: &Kvm, name: &'static str, main: &[u8]) -> Result<ProbeVm, Probe> {
    let vm = ProbeVm::new(kvm, true, false).map_err(|e| failed(name, e))?;
    vm.write_code(CODE, main).map_err(|e| failed(name, e))?;
    Ok(vm)
}

fn code(
    bitness: u32,
    ip: u64,
    build: impl FnOnce(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>,
) -> Result<Vec<u8>, Probe> {
    assemble(bitness, ip, build).map_err(|e| failed("assembler", e))
}

pub fn cpuid(kvm: &Kvm) -> Probe {
    const NAME: &str = "CPUID set";
    match crate::cpuid::guest_cpuid(kvm, 0, &crate::cpuid::Hidden::default()) {
        Err(e) => failed(NAME, e),
        Ok(cpuid) => match ProbeVm::new(kvm, true, false) {
            Ok(_) => Probe {
                name: NAME,
                verdict: Verdict::Yes,
                evidence: format!(
                    "KVM_SET_CPUID2 took {} supported entries; MAXPHYADDR {} bits",
                    cpuid.as_slice().len(),
                    crate::cpuid::max_phys_addr_bits(&cpuid)
                ),
            },
            Err(e) => failed(NAME, e),
        },
    }
}

fn mode_switch_run(kvm: &Kvm, set_cpuid: bool) -> Result<(Trace, u64), Probe> {
    const NAME: &str = "32→64-bit switch";
    let main = code(32, CODE, |a| {
        a.mov(eax, cr4)?;
        a.or(eax, 0x20)?;
        a.mov(cr4, eax)?;
        a.mov(eax, const { imm32(PML4) })?;
        a.mov(cr3, eax)?;
        a.mov(ecx, 0xc000_0080u32)?;
        a.rdmsr()?;
        // LME | NXE, as guest-kernel's entry sets them: NXE is what needs CPUID's NX bit.
        a.or(eax, 0x900)?;
        a.wrmsr()?;
        a.mov(eax, cr0)?;
        // CR0.PG, bit 31: the sign bit of the 32-bit immediate.
        a.or(eax, i32::MIN)?;
        a.mov(cr0, eax)?;
        a.push(i32::from(KERNEL_CS))?;
        a.push(const { imm32(AUX_CODE) })?;
        a.retf()
    })?;
    let long = code(64, AUX_CODE, |a| {
        a.mov(eax, 64)?;
        a.mov(dx, u32::from(RESULT_PORT))?;
        a.out(dx, eax)?;
        a.mov(dx, u32::from(DONE_PORT))?;
        a.out(dx, al)
    })?;
    let mut vm = ProbeVm::new(kvm, set_cpuid, true).map_err(|e| failed(NAME, e))?;
    vm.write_code(CODE, &main).map_err(|e| failed(NAME, e))?;
    vm.write_code(AUX_CODE, &long)
        .map_err(|e| failed(NAME, e))?;
    let trace = vm.run(LIMIT);
    let efer = vm.vcpu.get_sregs().map(|s| s.efer).unwrap_or(0);
    Ok((trace, efer))
}

pub fn mode_switch(kvm: &Kvm) -> Probe {
    const NAME: &str = "32→64-bit switch";
    let (with, efer) = match mode_switch_run(kvm, true) {
        Ok(r) => r,
        Err(p) => return p,
    };
    let without = match mode_switch_run(kvm, false) {
        Ok((t, _)) if t.values_on(RESULT_PORT).any(|v| v == 64) => {
            "also reached 64-bit code".to_string()
        }
        Ok((t, efer)) => format!(
            "wrmsr EFER failed, EFER stayed {efer:#x}, never reached 64-bit code ({})",
            describe(&t.stop)
        ),
        Err(p) => p.evidence,
    };
    let reached = with.values_on(RESULT_PORT).any(|v| v == 64)
        && efer & EferFlags::LONG_MODE_ACTIVE.bits() != 0;
    Probe {
        name: NAME,
        verdict: if reached { Verdict::Yes } else { Verdict::No },
        evidence: if reached {
            format!(
                "the guest set EFER.LME|NXE and paging itself (EFER {efer:#x}, LMA set); without KVM_SET_CPUID2: {without}"
            )
        } else {
            format!(
                "with CPUID set: {}; without: {without}",
                describe(&with.stop)
            )
        },
    }
}

/// DR7 for DR0 as an execute breakpoint.
const DR7_EXECUTE: u64 = 0x1;
/// DR7 for DR0 watching writes of 8 bytes: L0, R/W0 = 01, LEN0 = 10.
const DR7_WRITE_8: u64 = 0x1 | 0b01 << 16 | 0b10 << 18;

fn debug_run(
    kvm: &Kvm,
    name: &'static str,
    control: u32,
    breakpoint: Option<(u64, u64)>,
    main: &[u8],
) -> Result<Trace, Probe> {
    let mut vm = vm(kvm, name, main)?;
    let mut debug = kvm_guest_debug {
        control,
        ..Default::default()
    };
    if let Some((address, control_bits)) = breakpoint {
        debug.arch.debugreg[0] = address;
        debug.arch.debugreg[7] = control_bits;
    }
    vm.vcpu
        .set_guest_debug(&debug)
        .map_err(|e| failed(name, format!("KVM_SET_GUEST_DEBUG: {e}")))?;
    Ok(vm.run(LIMIT))
}

fn nops_then_done() -> Result<Vec<u8>, Probe> {
    code(64, CODE, |a| {
        a.nop()?;
        a.nop()?;
        a.nop()?;
        a.mov(dx, u32::from(DONE_PORT))?;
        a.out(dx, al)
    })
}

pub fn single_step(kvm: &Kvm) -> Probe {
    const NAME: &str = "single-step";
    let trace = match nops_then_done().and_then(|main| {
        debug_run(
            kvm,
            NAME,
            KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP,
            None,
            &main,
        )
    }) {
        Ok(t) => t,
        Err(p) => return p,
    };
    match trace.stop {
        Stop::Debug(arch) if arch.exception == 1 && arch.dr6 & (1 << 14) != 0 => Probe {
            name: NAME,
            verdict: Verdict::Yes,
            evidence: format!(
                "KVM_EXIT_DEBUG exception 1 after one instruction (rip {CODE:#x} → {:#x}, DR6.BS)",
                arch.pc
            ),
        },
        stop => Probe {
            name: NAME,
            verdict: Verdict::No,
            evidence: describe(&stop),
        },
    }
}

pub fn hw_breakpoint(kvm: &Kvm) -> Probe {
    const NAME: &str = "hardware breakpoints";
    let target = CODE + 2;
    let trace = match nops_then_done().and_then(|main| {
        debug_run(
            kvm,
            NAME,
            KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP,
            Some((target, DR7_EXECUTE)),
            &main,
        )
    }) {
        Ok(t) => t,
        Err(p) => return p,
    };
    match trace.stop {
        Stop::Debug(arch) if arch.exception == 1 && arch.pc == target && arch.dr6 & 1 != 0 => {
            Probe {
                name: NAME,
                verdict: Verdict::Yes,
                evidence: format!("KVM_EXIT_DEBUG at {target:#x} = DR0, DR6.B0 set"),
            }
        }
        stop => Probe {
            name: NAME,
            verdict: Verdict::No,
            evidence: describe(&stop),
        },
    }
}

/// Whether a hardware execution breakpoint on a handler the page tables do not map fires when
/// an exception is delivered to it, before the fetch at the handler faults (the SDM puts code
/// breakpoints ahead of fetch faults): a loop of deliveries to such a handler, which ends in
/// a triple fault, can then be counted as it happens.
pub fn breakpoint_on_unmapped_handler(kvm: &Kvm) -> Probe {
    const NAME: &str = "breakpoint on an unmapped handler";
    // Past the probe VM's 4 MiB of page tables.
    const UNMAPPED: u64 = 0x4000_0000;
    let trace = code(64, CODE, |a| a.ud2()).and_then(|main| {
        let mut vm = vm(kvm, NAME, &main)?;
        let gate = (UNMAPPED & 0xffff)
            | u64::from(KERNEL_CS) << 16
            | 0x8e << 40
            | (UNMAPPED >> 16 & 0xffff) << 48;
        vm.write_code(IDT + 6 * 16, &gate.to_le_bytes())
            .and_then(|()| vm.write_code(IDT + 6 * 16 + 8, &(UNMAPPED >> 32).to_le_bytes()))
            .map_err(|e| failed(NAME, e))?;
        let mut debug = kvm_guest_debug {
            control: KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP,
            ..Default::default()
        };
        debug.arch.debugreg[0] = UNMAPPED;
        debug.arch.debugreg[7] = DR7_EXECUTE;
        vm.vcpu
            .set_guest_debug(&debug)
            .map_err(|e| failed(NAME, format!("KVM_SET_GUEST_DEBUG: {e}")))?;
        Ok(vm.run(LIMIT))
    });
    let trace = match trace {
        Ok(t) => t,
        Err(p) => return p,
    };
    let (verdict, evidence) = match (&trace.stop, first_exception(&trace)) {
        (Stop::Debug(arch), _) if arch.exception == 1 && arch.pc == UNMAPPED => (
            Verdict::Yes,
            format!(
                "the #UD's delivery to {UNMAPPED:#x} (not mapped) stopped at DR0 before the fetch faulted"
            ),
        ),
        (_, Some((vector, _, rip))) => (
            Verdict::No,
            format!(
                "the fetch at the handler raised vector {vector} (rip {rip:#x}) before DR0 fired"
            ),
        ),
        (stop, None) => (
            Verdict::No,
            format!("the #UD's delivery ended in {}", describe(stop)),
        ),
    };
    Probe {
        name: NAME,
        verdict,
        evidence,
    }
}

/// A write watchpoint in DR0 on a stack word the guest then stores to.
pub fn data_breakpoint(kvm: &Kvm) -> Probe {
    const NAME: &str = "data breakpoints (watchpoints)";
    let watched = KERNEL_STACK - 8;
    let trace = match code(64, CODE, |a| {
        a.mov(rax, watched)?;
        a.mov(qword_ptr(rax), rcx)?;
        a.nop()?;
        a.mov(dx, u32::from(DONE_PORT))?;
        a.out(dx, al)
    })
    .and_then(|main| {
        debug_run(
            kvm,
            NAME,
            KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP,
            Some((watched, DR7_WRITE_8)),
            &main,
        )
    }) {
        Ok(t) => t,
        Err(p) => return p,
    };
    match trace.stop {
        Stop::Debug(arch) if arch.exception == 1 && arch.dr6 & 1 != 0 => Probe {
            name: NAME,
            verdict: Verdict::Yes,
            evidence: format!("KVM_EXIT_DEBUG after the store to {watched:#x}, DR6.B0 set"),
        },
        stop => Probe {
            name: NAME,
            verdict: Verdict::No,
            evidence: format!(
                "a store to the watched {watched:#x} ended as: {} (gdb watchpoints fall back to host single-stepping)",
                describe(&stop)
            ),
        },
    }
}

pub fn int3(kvm: &Kvm) -> Probe {
    const NAME: &str = "int3 breakpoints";
    let trace = match code(64, CODE, |a| {
        a.int3()?;
        a.mov(dx, u32::from(DONE_PORT))?;
        a.out(dx, al)
    })
    .and_then(|main| {
        debug_run(
            kvm,
            NAME,
            KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP,
            None,
            &main,
        )
    }) {
        Ok(t) => t,
        Err(p) => return p,
    };
    match trace.stop {
        Stop::Debug(arch) if arch.exception == 3 => Probe {
            name: NAME,
            verdict: Verdict::Yes,
            evidence: format!(
                "KVM_EXIT_DEBUG exception 3 at {:#x} with KVM_GUESTDBG_USE_SW_BP",
                arch.pc
            ),
        },
        stop => Probe {
            name: NAME,
            verdict: Verdict::No,
            evidence: format!("int3 in ring 0 ended in {}", describe(&stop)),
        },
    }
}

fn ring3_run(
    kvm: &Kvm,
    name: &'static str,
    user: Vec<u8>,
    msrs: &[(u32, u64)],
) -> Result<Trace, Probe> {
    let main = code(64, CODE, enter_ring3)?;
    // Where syscall lands: a ud2 whose exception frame shows the CS syscall loaded.
    let syscall_entry = code(64, AUX_CODE, |a| a.ud2())?;
    let mut vm = vm(kvm, name, &main)?;
    vm.write_code(USER_CODE, &user)
        .map_err(|e| failed(name, e))?;
    vm.write_code(AUX_CODE, &syscall_entry)
        .map_err(|e| failed(name, e))?;
    if !msrs.is_empty() {
        let entries: Vec<kvm_msr_entry> = msrs
            .iter()
            .map(|&(index, data)| kvm_msr_entry {
                index,
                data,
                ..Default::default()
            })
            .collect();
        let msrs = Msrs::from_entries(&entries).map_err(|e| failed(name, format!("{e:?}")))?;
        vm.vcpu
            .set_msrs(&msrs)
            .map_err(|e| failed(name, format!("KVM_SET_MSRS: {e}")))?;
    }
    Ok(vm.run(LIMIT))
}

pub fn ring3_iretq(kvm: &Kvm) -> Probe {
    const NAME: &str = "ring-3 iretq";
    let trace =
        match code(64, USER_CODE, |a| a.ud2()).and_then(|user| ring3_run(kvm, NAME, user, &[])) {
            Ok(t) => t,
            Err(p) => return p,
        };
    match first_exception(&trace) {
        Some((6, selector, rip)) if selector & 3 == 3 && rip == USER_CODE => Probe {
            name: NAME,
            verdict: Verdict::Yes,
            evidence: format!(
                "ud2 in user code trapped back to ring 0 through TSS.RSP0; frame CS {selector:#x} (CPL 3), RIP {rip:#x}"
            ),
        },
        Some((vector, selector, rip)) => Probe {
            name: NAME,
            verdict: Verdict::No,
            evidence: format!(
                "expected #UD from user code, got vector {vector} with CS {selector:#x} at {rip:#x}"
            ),
        },
        None => Probe {
            name: NAME,
            verdict: Verdict::No,
            evidence: describe(&trace.stop),
        },
    }
}

pub fn int_n_from_ring3(kvm: &Kvm) -> Probe {
    const NAME: &str = "int n from ring 3";
    let trace = match code(64, USER_CODE, |a| a.int(0x80))
        .and_then(|user| ring3_run(kvm, NAME, user, &[]))
    {
        Ok(t) => t,
        Err(p) => return p,
    };
    match first_exception(&trace) {
        Some((0x80, _, _)) => Probe {
            name: NAME,
            verdict: Verdict::Yes,
            evidence: "int 0x80 arrived at vector 0x80".into(),
        },
        Some((6, _, rip)) => Probe {
            name: NAME,
            verdict: Verdict::No,
            evidence: format!(
                "int 0x80 arrived as vector 6 (#UD) at {rip:#x}, the int instruction"
            ),
        },
        Some((vector, _, rip)) => Probe {
            name: NAME,
            verdict: Verdict::No,
            evidence: format!("int 0x80 arrived as vector {vector} at {rip:#x}"),
        },
        None => Probe {
            name: NAME,
            verdict: Verdict::No,
            evidence: describe(&trace.stop),
        },
    }
}

/// Where the real-mode probe's code and its interrupt handler live (segment 0).
const REAL_MODE_CODE: u16 = 0x7c00;
const REAL_MODE_HANDLER: u16 = 0x9000;
/// The vector the real-mode probe calls.
const REAL_MODE_VECTOR: u8 = 0x42;

/// `int n` in real mode, the way a boot sector calls the BIOS: through the IVT to a handler
/// that reports and `iret`s back. The host's BIOS relies on it.
pub fn int_n_in_real_mode(kvm: &Kvm) -> Probe {
    const NAME: &str = "int n in real mode";
    let run = || -> Result<Trace, Probe> {
        let main = code(16, u64::from(REAL_MODE_CODE), |a| {
            a.mov(al, u32::from(REAL_MODE_VECTOR))?;
            a.int(u32::from(REAL_MODE_VECTOR))?;
            a.mov(dx, u32::from(DONE_PORT))?;
            a.out(dx, al)
        })?;
        let handler = code(16, u64::from(REAL_MODE_HANDLER), |a| {
            a.mov(dx, u32::from(RESULT_PORT))?;
            a.out(dx, al)?;
            a.iret()
        })?;
        let mut vm = ProbeVm::new(kvm, true, true).map_err(|e| failed(NAME, e))?;
        let vector = u32::from(REAL_MODE_HANDLER).to_le_bytes(); // offset, then segment 0
        vm.write_code(u64::from(REAL_MODE_VECTOR) * 4, &vector)
            .and_then(|()| vm.write_code(u64::from(REAL_MODE_CODE), &main))
            .and_then(|()| vm.write_code(u64::from(REAL_MODE_HANDLER), &handler))
            .and_then(|()| vm.enter_real_mode(REAL_MODE_CODE))
            .map_err(|e| failed(NAME, e))?;
        Ok(vm.run(LIMIT))
    };
    let trace = match run() {
        Ok(t) => t,
        Err(p) => return p,
    };
    let reached = trace.values_on(RESULT_PORT).next() == Some(u64::from(REAL_MODE_VECTOR));
    match (&trace.stop, reached) {
        (Stop::Done, true) => Probe {
            name: NAME,
            verdict: Verdict::Yes,
            evidence: format!(
                "int {REAL_MODE_VECTOR:#x} went through the IVT to its handler and iret came back: a boot sector's BIOS calls reach the host's stubs"
            ),
        },
        (stop, _) => Probe {
            name: NAME,
            verdict: Verdict::No,
            evidence: format!(
                "int {REAL_MODE_VECTOR:#x} ended in {}{}: the host serves BIOS calls at the failing int instead",
                describe(stop),
                if reached {
                    " after its handler ran"
                } else {
                    ""
                }
            ),
        },
    }
}

pub fn syscall_from_ring3(kvm: &Kvm) -> Probe {
    const NAME: &str = "syscall from ring 3";
    let star = (0x10u64 << 48) | (u64::from(KERNEL_CS) << 32);
    let msrs = [
        (0xc000_0081, star),
        (0xc000_0082, AUX_CODE),
        (0xc000_0084, 0),
    ];
    let trace = match code(64, USER_CODE, |a| a.syscall())
        .and_then(|user| ring3_run(kvm, NAME, user, &msrs))
    {
        Ok(t) => t,
        Err(p) => return p,
    };
    match first_exception(&trace) {
        Some((6, selector, rip)) if rip == AUX_CODE && selector == u64::from(KERNEL_CS) => Probe {
            name: NAME,
            verdict: Verdict::Yes,
            evidence: format!("landed at LSTAR {rip:#x} with CS {selector:#x} (CPL 0)"),
        },
        Some((6, selector, rip)) if rip == AUX_CODE => Probe {
            name: NAME,
            verdict: Verdict::No,
            evidence: format!(
                "landed at LSTAR {rip:#x} still in CPL {} (CS {selector:#x})",
                selector & 3
            ),
        },
        Some((vector, selector, rip)) => Probe {
            name: NAME,
            verdict: Verdict::No,
            evidence: format!("syscall raised vector {vector} (CS {selector:#x}, RIP {rip:#x})"),
        },
        None => Probe {
            name: NAME,
            verdict: Verdict::No,
            evidence: describe(&trace.stop),
        },
    }
}

/// Microseconds per port-I/O exit, and the probe line.
pub fn pio_round_trip(kvm: &Kvm) -> (Probe, Option<f64>) {
    const NAME: &str = "port-I/O exit round trip";
    let main = match code(64, CODE, |a| {
        let mut again = a.create_label();
        a.mov(ecx, PIO_EXITS)?;
        a.mov(dx, u32::from(RESULT_PORT))?;
        a.set_label(&mut again)?;
        a.out(dx, al)?;
        a.dec(ecx)?;
        a.jnz(again)?;
        a.mov(dx, u32::from(DONE_PORT))?;
        a.out(dx, al)
    }) {
        Ok(c) => c,
        Err(p) => return (p, None),
    };
    let mut vm = match vm(kvm, NAME, &main) {
        Ok(vm) => vm,
        Err(p) => return (p, None),
    };
    let trace = vm.run(Duration::from_secs(10));
    let count = trace.values_on(RESULT_PORT).count();
    if !matches!(trace.stop, Stop::Done) || count != PIO_EXITS as usize {
        return (
            Probe {
                name: NAME,
                verdict: Verdict::No,
                evidence: format!("{count} exits, then {}", describe(&trace.stop)),
            },
            None,
        );
    }
    let micros = trace.elapsed.as_secs_f64() * 1e6 / trace.exits as f64;
    let probe = Probe {
        name: NAME,
        verdict: Verdict::Measured,
        evidence: format!("{micros:.1} µs per exit ({} exits)", trace.exits),
    };
    (probe, Some(micros))
}

/// Give a 32-bit probe a #GP handler that reports its frame (vector, CS, EIP) at AUX_CODE:
/// an 8-byte interrupt gate at IDT + 13 * 8 through a 32-bit code segment in GDT slot
/// PAGING32_CS (the VM's 64-bit gates and its 64-bit user code mean nothing here).
fn report_gp_32(vm: &ProbeVm, name: &'static str) -> Result<(), Probe> {
    // The frame: error code, EIP, CS.
    let handler = code(32, AUX_CODE, |a| {
        a.mov(eax, 13)?;
        a.mov(dx, u32::from(VECTOR_PORT))?;
        a.out(dx, eax)?;
        a.mov(eax, dword_ptr(esp + 8))?;
        a.mov(dx, u32::from(FRAME_CS_PORT))?;
        a.out(dx, eax)?;
        a.mov(eax, dword_ptr(esp + 4))?;
        a.mov(dx, u32::from(FRAME_RIP_PORT))?;
        a.out(dx, eax)?;
        a.hlt()
    })?;
    let handler_at = u32::try_from(AUX_CODE).unwrap_or(0);
    let gate = u64::from(handler_at & 0xffff)
        | PAGING32_CS << 16
        | 0x8e00u64 << 32
        | u64::from(handler_at >> 16) << 48;
    let code32: u64 = 0x00cf_9a00_0000_ffff;
    vm.write_code(AUX_CODE, &handler)
        .and_then(|()| vm.write_code(IDT + 13 * 8, &gate.to_le_bytes()))
        .and_then(|()| vm.write_code(GDT + PAGING32_CS, &code32.to_le_bytes()))
        .map_err(|e| failed(name, e))
}

/// Where the 32-bit paging probe puts its tables: above the probe VM's own data.
const PAGING32_TABLES: u64 = 0x10_0000;
/// The GDT slot the 32-bit paging probe's #GP handler runs in.
const PAGING32_CS: u64 = 0x20;

/// One format of the 32-bit paging probe: the guest, in flat 32-bit protected mode, points
/// CR3 at tables identity-mapping the first 4 MiB, sets `cr4`, turns CR0.PG on and reads
/// through the new mapping. What happened, in words, and whether it got there.
fn paging32_run(kvm: &Kvm, cr4_bits: u32, tables: &[(u64, u64)]) -> Result<(bool, String), Probe> {
    const NAME: &str = "32-bit paging";
    let main = code(32, CODE, |a| {
        a.mov(eax, const { imm32(PAGING32_TABLES) })?;
        a.mov(cr3, eax)?;
        a.mov(eax, cr4)?;
        a.or(eax, cr4_bits)?;
        a.mov(cr4, eax)?;
        a.mov(eax, cr0)?;
        a.or(eax, i32::MIN)?;
        a.mov(cr0, eax)?;
        a.mov(eax, dword_ptr(const { imm32(CODE) }))?;
        a.mov(eax, 32)?;
        a.mov(dx, u32::from(RESULT_PORT))?;
        a.out(dx, eax)?;
        a.mov(dx, u32::from(DONE_PORT))?;
        a.out(dx, al)
    })?;
    let mut vm = ProbeVm::new(kvm, true, true).map_err(|e| failed(NAME, e))?;
    vm.write_code(CODE, &main).map_err(|e| failed(NAME, e))?;
    report_gp_32(&vm, NAME)?;
    for &(at, value) in tables {
        vm.write_code(at, &value.to_le_bytes())
            .map_err(|e| failed(NAME, e))?;
    }
    let trace = vm.run(LIMIT);
    let control = vm.vcpu.get_sregs().map(|s| s.cr0).unwrap_or(0);
    let reached = trace.values_on(RESULT_PORT).any(|v| v == 32);
    let what = if reached {
        format!("paging on (CR0 {control:#x})")
    } else if let Some((vector, _, rip)) = first_exception(&trace) {
        format!("vector {vector} at {rip:#x} (the mov cr0), CR0 stayed {control:#x}")
    } else {
        format!(
            "the mov cr0 ended in {} (CR0 {control:#x})",
            describe(&trace.stop)
        )
    };
    Ok((reached, what))
}

/// Whether KVM offers 5-level paging (CPUID.(EAX=7,ECX=0):ECX.LA57 in KVM_GET_SUPPORTED_CPUID):
/// a guest may set CR4.LA57 only where it does.
pub fn la57(kvm: &Kvm) -> Probe {
    const NAME: &str = "5-level paging";
    const LA57: u32 = 1 << 16;
    match kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES) {
        Err(e) => failed(NAME, e),
        Ok(cpuid) => {
            let leaf7 = (cpuid.as_slice().iter()).find(|e| e.function == 7 && e.index == 0);
            let offered = leaf7.is_some_and(|e| e.ecx & LA57 != 0);
            Probe {
                name: NAME,
                verdict: if offered { Verdict::Yes } else { Verdict::No },
                evidence: format!(
                    "KVM_GET_SUPPORTED_CPUID leaf 7 ECX bit 16 (LA57) {}",
                    if offered {
                        "set: guests may turn CR4.LA57 on"
                    } else {
                        "clear: a guest's CR4.LA57 raises #GP; 5-level walks are checked on synthetic memory only"
                    }
                ),
            }
        }
    }
}

/// GDT slots and TSSs of the task-gate probe: the running task's and the handler task's.
const TASK_MAIN_SELECTOR: u64 = 0x38;
const TASK_GATE_SELECTOR: u64 = 0x40;
const TASK_MAIN_TSS: u64 = 0x7000;
const TASK_GATE_TSS: u64 = 0x7100;
/// Where the handler task starts and its stack.
const TASK_ENTRY: u64 = AUX_CODE + 0x100;
const TASK_STACK: u64 = 0x8800;

/// A 32-bit TSS descriptor (limit 0x67) for the TSS at `base`, of `kind` (9 available, 0xB
/// busy).
fn tss32_descriptor(base: u64, kind: u64) -> u64 {
    0x67 | (base & 0xff_ffff) << 16 | (0x80 | kind) << 40 | (base >> 24 & 0xff) << 56
}

/// Whether a 32-bit kernel can take an exception through a task gate, as some handle #DF:
/// a `ud2` whose IDT entry is a task gate must start the gate's task, which finds the `ud2`'s
/// EIP saved in the TSS of the task it interrupted.
pub fn task_gate(kvm: &Kvm) -> Probe {
    match task_gate_run(kvm) {
        Ok(probe) | Err(probe) => probe,
    }
}

fn task_gate_run(kvm: &Kvm) -> Result<Probe, Probe> {
    const NAME: &str = "task gates";
    let main = code(32, CODE, |a| a.ud2())?;
    let task = code(32, TASK_ENTRY, |a| {
        a.mov(eax, dword_ptr(const { imm32(TASK_MAIN_TSS + 0x20) }))?;
        a.mov(dx, u32::from(RESULT_PORT))?;
        a.out(dx, eax)?;
        a.mov(dx, u32::from(DONE_PORT))?;
        a.out(dx, al)
    })?;
    let mut vm = ProbeVm::new(kvm, true, true).map_err(|e| failed(NAME, e))?;
    report_gp_32(&vm, NAME)?;
    let entry = u32::try_from(TASK_ENTRY).unwrap_or(0);
    let dwords = [
        (TASK_GATE_TSS + 0x20, entry),
        (TASK_GATE_TSS + 0x24, 2),
        (TASK_GATE_TSS + 0x38, u32::try_from(TASK_STACK).unwrap_or(0)),
        (
            TASK_GATE_TSS + 0x4c,
            u32::try_from(PAGING32_CS).unwrap_or(0),
        ),
        (TASK_GATE_TSS + 0x48, u32::from(KERNEL_DS)),
        (TASK_GATE_TSS + 0x50, u32::from(KERNEL_DS)),
        (TASK_GATE_TSS + 0x54, u32::from(KERNEL_DS)),
        // IDT[6] (#UD): a present task gate (type 5) to the handler task.
        (
            IDT + 6 * 8,
            u32::try_from(TASK_GATE_SELECTOR << 16).unwrap_or(0),
        ),
        (IDT + 6 * 8 + 4, 0x8500),
    ];
    let descriptors = [
        (TASK_MAIN_SELECTOR, tss32_descriptor(TASK_MAIN_TSS, 0xb)),
        (TASK_GATE_SELECTOR, tss32_descriptor(TASK_GATE_TSS, 0x9)),
    ];
    vm.write_code(CODE, &main)
        .and_then(|()| vm.write_code(TASK_ENTRY, &task))
        .and_then(|()| {
            dwords
                .iter()
                .try_for_each(|&(at, value)| vm.write_code(at, &value.to_le_bytes()))
        })
        .and_then(|()| {
            descriptors
                .iter()
                .try_for_each(|&(selector, d)| vm.write_code(GDT + selector, &d.to_le_bytes()))
        })
        .map_err(|e| failed(NAME, e))?;
    let mut sregs = vm.vcpu.get_sregs().map_err(|e| failed(NAME, e))?;
    sregs.gdt.limit = u16::try_from(TASK_GATE_SELECTOR + 7).unwrap_or(u16::MAX);
    sregs.tr = crate::descriptor::Descriptor(descriptors[0].1)
        .segment(u16::try_from(TASK_MAIN_SELECTOR).unwrap_or(0));
    vm.vcpu.set_sregs(&sregs).map_err(|e| failed(NAME, e))?;
    let trace = vm.run(LIMIT);
    let (verdict, evidence) = task_gate_verdict(&trace);
    Ok(Probe {
        name: NAME,
        verdict,
        evidence,
    })
}

/// What the task-gate probe's run shows: the task reports the EIP saved in the old TSS.
fn task_gate_verdict(trace: &Trace) -> (Verdict, String) {
    let saved = trace.values_on(RESULT_PORT).next();
    match (saved, first_exception(trace)) {
        (Some(eip), _) if eip == CODE => (
            Verdict::Yes,
            format!(
                "a #UD through a task gate started the task; the ud2's EIP {eip:#x} was saved in the old TSS"
            ),
        ),
        (Some(eip), _) => (
            Verdict::No,
            format!(
                "the task started, but the old TSS holds EIP {eip:#x}, not the ud2's {CODE:#x}"
            ),
        ),
        (None, Some((vector, _, rip))) => (
            Verdict::No,
            format!(
                "a #UD through a task gate ended in vector {vector} at EIP {rip:#x}, not in the task"
            ),
        ),
        (None, None) => (
            Verdict::No,
            format!(
                "a #UD through a task gate ended in {}",
                describe(&trace.stop)
            ),
        ),
    }
}

/// Whether a 32-bit kernel can turn paging on: 2-level with a 4 MiB page, and PAE. The nested
/// KVM on this project's machines refuses both (#GP at the `mov cr0`).
pub fn paging_32(kvm: &Kvm) -> Probe {
    const NAME: &str = "32-bit paging";
    let t = PAGING32_TABLES;
    let two_level = paging32_run(kvm, 0x10, &[(t, 0x83)]);
    // PDPT at t, one directory at t + 0x1000 with two 2 MiB pages.
    let pae_tables = [
        (t, (t + 0x1000) | 1),
        (t + 0x1000, 0x83),
        (t + 0x1008, 0x20_0083),
    ];
    let pae = paging32_run(kvm, 0x20, &pae_tables);
    match (two_level, pae) {
        (Err(p), _) | (_, Err(p)) => p,
        (Ok((a, two)), Ok((b, pae))) => Probe {
            name: NAME,
            verdict: if a && b { Verdict::Yes } else { Verdict::No },
            evidence: format!("2-level with CR4.PSE: {two}; PAE: {pae}"),
        },
    }
}
