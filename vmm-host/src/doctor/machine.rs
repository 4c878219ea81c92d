//! Throw-away VMs for probing KVM: 4 MiB of RAM, host-built page tables, GDT, IDT and TSS,
//! machine code assembled with iced-x86, and a run loop that records what the guest did.

use crate::boot_cpu::flat_segment;
use crate::cpuid;
use crate::hypervisor;
use crate::watchdog::Watchdog;
use iced_x86::IcedError;
use iced_x86::code_asm::CodeAssembler;
use kvm_bindings::{kvm_debug_exit_arch, kvm_regs, kvm_segment, kvm_sregs};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub const RAM: usize = 4 << 20;
pub const PML4: u64 = 0x1000;
const PDPT: u64 = 0x2000;
const PD: u64 = 0x3000;
pub const GDT: u64 = 0x4000;
pub const IDT: u64 = 0x5000;
pub const TSS: u64 = 0x6000;
pub const KERNEL_STACK: u64 = 0x9000;
pub const USER_STACK: u64 = 0xa000;

/// A probe address as the sign-extended 32-bit immediate `push` and `mov` take. Every probe
/// address lies below 2 GiB; called in `const` blocks, a larger one fails the build.
#[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
pub const fn imm32(address: u64) -> i32 {
    assert!(address < 1 << 31, "probe addresses lie below 2 GiB");
    address as i32
}
/// Where the probe's main code starts.
pub const CODE: u64 = 0x10000;
/// Exception handler for vector v lives at HANDLERS + v * HANDLER_SIZE.
pub const HANDLERS: u64 = 0x20000;
pub const HANDLER_SIZE: u64 = 0x40;
/// Ring-3 code.
pub const USER_CODE: u64 = 0x30000;
/// Second code blob (syscall entry, 64-bit half of the mode switch).
pub const AUX_CODE: u64 = 0x38000;

/// Port a probe writes results to.
pub const RESULT_PORT: u16 = 0x500;
/// Port a probe writes to when it is done.
pub const DONE_PORT: u16 = 0x501;
/// Ports exception handlers report on: the vector, then CS and RIP from the exception frame.
pub const VECTOR_PORT: u16 = 0x502;
pub const FRAME_CS_PORT: u16 = 0x503;
pub const FRAME_RIP_PORT: u16 = 0x504;

/// Vectors for which the CPU pushes an error code below the frame.
const WITH_ERROR_CODE: [u64; 8] = [8, 10, 11, 12, 13, 14, 17, 21];

pub const KERNEL_CS: u16 = 0x08;
pub const KERNEL_DS: u16 = 0x10;
pub const USER_DS: u16 = 0x18 | 3;
pub const USER_CS: u16 = 0x20 | 3;
const TSS_SELECTOR: u16 = 0x28;

#[derive(Debug, thiserror::Error)]
pub enum ProbeVmError {
    #[error("{step} failed: {error}")]
    Kvm {
        step: &'static str,
        error: kvm_ioctls::Error,
    },
    #[error("guest memory: {0}")]
    Memory(String),
    #[error("assembling probe code: {0}")]
    Assemble(#[from] IcedError),
    #[error("reading CPUID: {0}")]
    Cpuid(#[from] cpuid::CpuidError),
}

pub(super) fn kvm_step(step: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> ProbeVmError {
    move |error| ProbeVmError::Kvm { step, error }
}

/// How a probe run stopped.
#[derive(Debug, Clone)]
pub enum Stop {
    Done,
    Halted,
    Shutdown,
    InternalError { suberror: u32 },
    Debug(kvm_debug_exit_arch),
    TimedOut,
    Other(String),
}

/// What a probe run recorded.
#[derive(Debug, Clone)]
pub struct Trace {
    /// (port, value) of every `out` other than to DONE_PORT, in order.
    pub outs: Vec<(u16, u64)>,
    pub stop: Stop,
    pub exits: u64,
    pub elapsed: Duration,
}

impl Trace {
    pub fn values_on(&self, port: u16) -> impl Iterator<Item = u64> + '_ {
        self.outs
            .iter()
            .filter(move |(p, _)| *p == port)
            .map(|&(_, v)| v)
    }
}

#[derive(Debug)]
pub struct ProbeVm {
    pub vcpu: VcpuFd,
    _vm: VmFd,
    pub mem: GuestMemoryMmap,
}

/// Assemble `build`'s code for address `ip` in `bitness`-bit mode.
pub fn assemble(
    bitness: u32,
    ip: u64,
    build: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(bitness)?;
    build(&mut a)?;
    a.assemble(ip)
}

/// A handler that reports its vector and the frame's CS and RIP (ring 0 may use `out`; ring 3
/// may not on every host), then halts.
fn reporting_handler(at: u64, vector: u64) -> Result<Vec<u8>, IcedError> {
    let frame = if WITH_ERROR_CODE.contains(&vector) {
        8
    } else {
        0
    };
    assemble(64, at, |a| {
        use iced_x86::code_asm::*;
        a.mov(eax, u32::try_from(vector).unwrap_or(u32::MAX))?;
        a.mov(dx, u32::from(VECTOR_PORT))?;
        a.out(dx, eax)?;
        a.mov(rax, qword_ptr(rsp + frame + 8))?;
        a.mov(dx, u32::from(FRAME_CS_PORT))?;
        a.out(dx, eax)?;
        a.mov(rax, qword_ptr(rsp + frame))?;
        a.mov(dx, u32::from(FRAME_RIP_PORT))?;
        a.out(dx, eax)?;
        a.hlt()
    })
}

impl ProbeVm {
    /// A VM with page tables (one 2 MiB user-accessible page), GDT, IDT and TSS in place; the
    /// vCPU starts in 64-bit mode at CODE, or in 32-bit protected mode if `start_32bit`.
    pub fn new(kvm: &Kvm, set_cpuid: bool, start_32bit: bool) -> Result<Self, ProbeVmError> {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM)])
            .map_err(|e| ProbeVmError::Memory(e.to_string()))?;
        let vm = kvm.create_vm().map_err(kvm_step("KVM_CREATE_VM"))?;
        vm.set_tss_address(0xfffb_d000)
            .map_err(kvm_step("KVM_SET_TSS_ADDR"))?;
        hypervisor::register_memory(&vm, &mem).map_err(kvm_step("KVM_SET_USER_MEMORY_REGION"))?;
        let vcpu = vm.create_vcpu(0).map_err(kvm_step("KVM_CREATE_VCPU"))?;
        if set_cpuid {
            vcpu.set_cpuid2(&cpuid::guest_cpuid(kvm, 0, &cpuid::Hidden::default())?)
                .map_err(kvm_step("KVM_SET_CPUID2"))?;
        }
        let probe = Self { vcpu, _vm: vm, mem };
        probe.write_tables()?;
        probe.set_entry_state(start_32bit)?;
        Ok(probe)
    }

    /// Put the vCPU in real mode at 0000:`ip`, as a BIOS enters a boot sector, stack at
    /// 0000:7000.
    pub fn enter_real_mode(&self, ip: u16) -> Result<(), ProbeVmError> {
        use crate::loader::{BootEntry, EntryMode};
        let entry = BootEntry {
            rip: crate::addr::Gpa::new(u64::from(ip)),
            eax: 0,
            ebx: crate::addr::Gpa::new(0),
            esi: 0,
            gdt: None,
            mode: EntryMode::Real { drive: 0x80 },
        };
        let sregs = self.vcpu.get_sregs().map_err(kvm_step("KVM_GET_SREGS"))?;
        self.vcpu
            .set_sregs(&crate::boot_cpu::entry_sregs(sregs, &entry))
            .map_err(kvm_step("KVM_SET_SREGS"))?;
        let mut regs = crate::boot_cpu::entry_regs(entry);
        regs.rsp = 0x7000;
        regs.rflags = 0x2;
        self.vcpu.set_regs(&regs).map_err(kvm_step("KVM_SET_REGS"))
    }

    fn write_u64(&self, at: u64, value: u64) -> Result<(), ProbeVmError> {
        self.mem
            .write_obj(value, GuestAddress(at))
            .map_err(|e| ProbeVmError::Memory(e.to_string()))
    }

    pub fn write_code(&self, at: u64, code: &[u8]) -> Result<(), ProbeVmError> {
        self.mem
            .write_slice(code, GuestAddress(at))
            .map_err(|e| ProbeVmError::Memory(e.to_string()))
    }

    fn write_tables(&self) -> Result<(), ProbeVmError> {
        // Present, writable, user; the PD entry maps the first 2 MiB (PS).
        self.write_u64(PML4, PDPT | 0x7)?;
        self.write_u64(PDPT, PD | 0x7)?;
        self.write_u64(PD, 0x87)?;
        self.write_u64(PD + 8, 0x20_0000 | 0x87)?;
        let gdt = [
            0,
            0x00af_9a00_0000_ffff, // 0x08 kernel code, 64-bit
            0x00cf_9200_0000_ffff, // 0x10 kernel data
            0x00cf_f200_0000_ffff, // 0x18 user data, DPL 3
            0x00af_fa00_0000_ffff, // 0x20 user code, 64-bit, DPL 3
        ];
        for (i, d) in gdt.iter().enumerate() {
            self.write_u64(GDT + 8 * i as u64, *d)?;
        }
        // 0x28: 64-bit available TSS at TSS, limit 0x67 (16-byte descriptor).
        let low = 0x67 | ((TSS & 0xff_ffff) << 16) | (0x89 << 40) | ((TSS >> 24 & 0xff) << 56);
        self.write_u64(GDT + 0x28, low)?;
        self.write_u64(GDT + 0x30, TSS >> 32)?;
        // TSS.RSP0: the stack ring-3 exceptions switch to.
        self.write_u64(TSS + 4, KERNEL_STACK)?;
        // Exceptions 0-31 each report their own vector; 0x80 (callable from ring 3) has a
        // handler of its own; every other vector shares vector 31's.
        let int80 = HANDLERS + 32 * HANDLER_SIZE;
        for vector in 0..256u64 {
            let (handler, dpl) = if vector == 0x80 {
                (int80, 3)
            } else {
                (HANDLERS + vector.min(31) * HANDLER_SIZE, 0)
            };
            let gate_low = (handler & 0xffff)
                | (u64::from(KERNEL_CS) << 16)
                | ((0x8e | dpl << 5) << 40)
                | ((handler >> 16 & 0xffff) << 48);
            self.write_u64(IDT + vector * 16, gate_low)?;
            self.write_u64(IDT + vector * 16 + 8, handler >> 32)?;
            if vector < 32 || vector == 0x80 {
                self.write_code(handler, &reporting_handler(handler, vector)?)?;
            }
        }
        Ok(())
    }

    fn set_entry_state(&self, start_32bit: bool) -> Result<(), ProbeVmError> {
        let mut sregs: kvm_sregs = self.vcpu.get_sregs().map_err(kvm_step("KVM_GET_SREGS"))?;
        sregs.gdt.base = GDT;
        sregs.gdt.limit = 0x37;
        sregs.idt.base = IDT;
        sregs.idt.limit = 0xfff;
        sregs.tr = kvm_segment {
            base: TSS,
            limit: 0x67,
            selector: TSS_SELECTOR,
            type_: 0xb,
            present: 1,
            ..Default::default()
        };
        let data = flat_segment(KERNEL_DS, 0x3, 0, false);
        (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
        if start_32bit {
            sregs.cs = flat_segment(KERNEL_CS, 0xb, 0, false);
            sregs.cr0 = 0x11;
            sregs.cr3 = 0;
            sregs.cr4 = 0;
            sregs.efer = 0;
        } else {
            sregs.cs = flat_segment(KERNEL_CS, 0xb, 0, true);
            sregs.cr0 = 0x8001_0033; // PE MP ET NE WP PG
            sregs.cr3 = PML4;
            sregs.cr4 = 0x20; // PAE
            sregs.efer = 0xd01; // SCE LME LMA NXE
        }
        self.vcpu
            .set_sregs(&sregs)
            .map_err(kvm_step("KVM_SET_SREGS"))?;
        let regs = kvm_regs {
            rip: CODE,
            rsp: KERNEL_STACK,
            rflags: 0x2,
            ..Default::default()
        };
        self.vcpu.set_regs(&regs).map_err(kvm_step("KVM_SET_REGS"))
    }

    /// Run until the probe is done, halts, dies, stops for debug, or `limit` passes.
    pub fn run(&mut self, limit: Duration) -> Trace {
        let watchdog = Watchdog::arm(limit);
        let started = Instant::now();
        let mut outs = Vec::new();
        let mut exits = 0;
        let stop = loop {
            let exit = self.vcpu.run();
            exits += 1;
            match exit {
                Ok(VcpuExit::IoOut(DONE_PORT, _)) => break Stop::Done,
                Ok(VcpuExit::IoOut(port, data)) => {
                    let value = data.iter().rev().fold(0u64, |v, &b| v << 8 | u64::from(b));
                    outs.push((port, value));
                }
                Ok(VcpuExit::IoIn(_, data)) => data.fill(0xff),
                Ok(VcpuExit::Hlt) => break Stop::Halted,
                Ok(VcpuExit::Shutdown) => break Stop::Shutdown,
                Ok(VcpuExit::Debug(arch)) => break Stop::Debug(arch),
                Ok(VcpuExit::InternalError) => {
                    // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the
                    // union member KVM filled in.
                    let suberror =
                        unsafe { self.vcpu.get_kvm_run().__bindgen_anon_1.internal.suberror };
                    break Stop::InternalError { suberror };
                }
                Ok(other) => break Stop::Other(format!("{other:?}")),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    if watchdog.fired() {
                        break Stop::TimedOut;
                    }
                }
                Err(e) => break Stop::Other(format!("KVM_RUN failed: {e}")),
            }
        };
        Trace {
            outs,
            stop,
            exits,
            elapsed: started.elapsed(),
        }
    }
}
