//! A VM booting one kernel through PVH: guest RAM, one vCPU, COM1 and the debug-exit port,
//! and the loop that runs it until it ends.

use crate::addr::{Gpa, Gva};
use crate::analysis::{self, Context, Snapshot};
use crate::boot_cpu;
use crate::console::{self, ConsoleError, ConsoleSink, Uart};
use crate::cpu_state::CpuState;
use crate::cpuid::{self, CpuidError};
use crate::ending::{Ending, RunReport};
use crate::exceptions::{Captured, ExceptionLog, ExceptionReport};
use crate::hypervisor::{self, KvmError};
use crate::layout::{LayoutError, RamLayout};
use crate::loader::{self, KernelImage, LoadError};
use crate::paging::{self, Cr3, PagingMode, Walk};
use crate::report::{self, ReportError, ReportFile};
use crate::symbols::Symbolizer;
use crate::tap::{GuestView, Hit, Tap, TrapKind};
use crate::virt::AddressSpace;
use crate::watchdog::Watchdog;
use kvm_bindings::kvm_regs;
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use vm_memory::{GuestAddress, GuestMemoryMmap};

/// Where KVM on Intel keeps its real-mode TSS: three pages inside the hole below 4 GiB.
const TSS_ADDRESS: usize = 0xfffb_d000;
/// COM1's eight registers.
const COM1: std::ops::Range<u16> = abi::ports::SERIAL_COM1..abi::ports::SERIAL_COM1 + 8;

#[derive(Debug, Clone)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub mem: u64,
    pub cmdline: String,
    pub timeout: Duration,
    pub serial_log: Option<PathBuf>,
    /// Copy the guest's serial output to stdout as it arrives.
    pub echo_serial: bool,
    pub kvm_device: PathBuf,
    /// Capture every exception with the tap.
    pub tap: bool,
    pub audit: AuditMode,
    /// Write every exception, diff and audit as JSON lines here.
    pub report: Option<PathBuf>,
}

/// How much the host works out per captured exception.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AuditMode {
    /// Record vector, error code, frame and control registers only.
    Off,
    /// Also decode the instruction, walk CR2/RIP/RSP/operands, explain, diff; audit the whole
    /// tree when an explanation needs it and once at the end of the run.
    #[default]
    Faults,
    /// Also audit the whole page-table tree at every exception.
    Full,
}

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error(transparent)]
    Kvm(#[from] KvmError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Console(#[from] ConsoleError),
    #[error(transparent)]
    Cpuid(#[from] CpuidError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("cannot allocate {size} bytes of guest RAM: {error}")]
    Memory { size: u64, error: String },
    #[error("setting up the VM failed at {step}: {error}")]
    Setup {
        step: &'static str,
        error: kvm_ioctls::Error,
    },
}

impl VmError {
    /// True when the user can fix it by changing what they passed in (exit status 2); false
    /// for failures of the host itself.
    pub fn is_bad_input(&self) -> bool {
        !matches!(
            self,
            Self::Memory { .. } | Self::Setup { .. } | Self::Cpuid(_)
        )
    }
}

fn setup(step: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |error| VmError::Setup { step, error }
}

/// Counts and describes guest accesses that reached no device.
#[derive(Debug, Default)]
struct StrayAccesses {
    count: u64,
    first: Option<String>,
}

impl StrayAccesses {
    fn note(&mut self, what: impl FnOnce() -> String) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(what());
        }
    }
}

#[derive(Debug)]
pub struct Vm {
    // Field order is drop order: the vCPU and VM go before /dev/kvm, and guest RAM last.
    vcpu: VcpuFd,
    _vm: VmFd,
    _kvm: Kvm,
    uart: Uart,
    config: VmConfig,
    /// The guest's MAXPHYADDR, from the CPUID it was given.
    max_phys_addr: u8,
    ram: Vec<(Gpa, u64)>,
    tap: Option<Tap>,
    exceptions: ExceptionLog,
    /// The walk of the last exception, whose diff is due at the next stop.
    pending_diff: Option<Snapshot>,
    symbols: Option<Symbolizer>,
    report: Option<ReportFile>,
    mem: GuestMemoryMmap,
}

impl Vm {
    /// Check the inputs, create the VM and load the kernel; nothing runs yet.
    pub fn new(config: VmConfig) -> Result<Self, VmError> {
        let layout = RamLayout::new(config.mem, crate::layout::host_ram())?;
        let kernel = KernelImage::inspect(&config.kernel, &layout)?;
        let report = config
            .report
            .as_deref()
            .map(ReportFile::create)
            .transpose()?;
        let kvm = hypervisor::open(&config.kvm_device)?;
        let sink = ConsoleSink::new(config.echo_serial, config.serial_log.as_deref())?;

        let ranges: Vec<(GuestAddress, usize)> = layout
            .regions()
            .iter()
            .map(|&(base, size)| (base.guest_address(), size as usize))
            .collect();
        let mem = GuestMemoryMmap::from_ranges(&ranges).map_err(|e| VmError::Memory {
            size: layout.size(),
            error: e.to_string(),
        })?;

        let vm = kvm.create_vm().map_err(setup("KVM_CREATE_VM"))?;
        vm.set_tss_address(TSS_ADDRESS)
            .map_err(setup("KVM_SET_TSS_ADDR"))?;
        hypervisor::register_memory(&vm, &mem).map_err(setup("KVM_SET_USER_MEMORY_REGION"))?;

        kernel.load(&mem)?;
        loader::write_boot_data(&mem, &layout, &config.cmdline)?;

        let vcpu = vm.create_vcpu(0).map_err(setup("KVM_CREATE_VCPU"))?;
        let guest_cpuid = cpuid::guest_cpuid(&kvm, 0)?;
        let max_phys_addr = cpuid::max_phys_addr_bits(&guest_cpuid);
        vcpu.set_cpuid2(&guest_cpuid)
            .map_err(setup("KVM_SET_CPUID2"))?;
        let sregs = vcpu.get_sregs().map_err(setup("KVM_GET_SREGS"))?;
        vcpu.set_sregs(&boot_cpu::pvh_sregs(sregs))
            .map_err(setup("KVM_SET_SREGS"))?;
        let start_info = Gpa::new(abi::boot::START_INFO);
        vcpu.set_regs(&boot_cpu::pvh_regs(kernel.pvh_entry, start_info))
            .map_err(setup("KVM_SET_REGS"))?;

        let tap = config
            .tap
            .then(|| Tap::new(TrapKind::probe(&kvm), max_phys_addr));
        // Without symbols reports show bare addresses; that is no reason to refuse to run.
        let symbols = Symbolizer::open(&config.kernel).ok();
        Ok(Self {
            vcpu,
            _vm: vm,
            _kvm: kvm,
            uart: console::uart(sink),
            config,
            max_phys_addr,
            ram: layout.regions().to_vec(),
            tap,
            exceptions: ExceptionLog::default(),
            pending_diff: None,
            symbols,
            report,
            mem,
        })
    }

    /// Walk `gva` with the host's walker through the vCPU's current CR3 (after a run: the
    /// state the guest ended in).
    pub fn walk(&self, gva: Gva) -> Result<Walk, kvm_ioctls::Error> {
        let sregs = self.vcpu.get_sregs()?;
        let mode = PagingMode::new(self.max_phys_addr, sregs.efer);
        Ok(paging::walk(&self.mem, mode, Cr3::new(sregs.cr3), gva))
    }

    /// KVM's own translation of `gva` (KVM_TRANSLATE), the oracle the walker is tested against.
    pub fn kvm_translate(&self, gva: Gva) -> Result<Option<Gpa>, kvm_ioctls::Error> {
        let t = self.vcpu.translate_gva(gva.raw())?;
        Ok((t.valid != 0).then(|| Gpa::new(t.physical_address)))
    }

    /// Everything the guest wrote to its serial port (bounded, see [`console::CAPTURE_LIMIT`]).
    pub fn serial_output(&self) -> &[u8] {
        self.uart.writer().captured()
    }

    /// Everything the tap captured so far.
    pub fn exceptions(&self) -> &ExceptionLog {
        &self.exceptions
    }

    /// The console block about captured exceptions; `None` when the tap is off.
    pub fn exception_report(&self) -> Option<ExceptionReport<'_>> {
        let tap = self.tap.as_ref()?;
        Some(ExceptionReport {
            log: &self.exceptions,
            kind: tap.kind(),
            stats: &tap.stats,
            handlers: tap.stats.handlers,
        })
    }

    /// Run the guest until it ends, one way or another. Never panics on guest behaviour.
    pub fn run(&mut self) -> RunReport {
        let started = Instant::now();
        let watchdog = Watchdog::arm(self.config.timeout);
        let mut exits = 0u64;
        let mut stray = StrayAccesses::default();
        let ending = loop {
            let stepping = self.tap.as_ref().is_some_and(Tap::stepping);
            let exit = self.vcpu.run();
            exits += 1;
            // Exits the tap may have to look at once `exit` no longer borrows the vCPU.
            let mut idt_may_have_changed = false;
            let mut halted = false;
            let mut debug = None;
            match exit {
                Ok(VcpuExit::IoOut(port, data)) => {
                    idt_may_have_changed = true;
                    if port == abi::ports::DEBUG_EXIT {
                        break Ending::GuestExit {
                            code: data.first().copied().unwrap_or(0),
                        };
                    } else if COM1.contains(&port) {
                        let offset = (port - COM1.start) as u8;
                        // The UART's only error is a failed trigger, and ours cannot fail.
                        let _ = self.uart.write(offset, data.first().copied().unwrap_or(0));
                    } else {
                        let value = data.iter().rev().fold(0u64, |v, &b| v << 8 | u64::from(b));
                        stray.note(|| format!("out {value:#x} to port {port:#x}"));
                    }
                }
                Ok(VcpuExit::IoIn(port, data)) => {
                    idt_may_have_changed = true;
                    if COM1.contains(&port) {
                        let value = self.uart.read((port - COM1.start) as u8);
                        data.fill(0);
                        if let Some(first) = data.first_mut() {
                            *first = value;
                        }
                    } else {
                        // Absent ISA hardware reads as all ones.
                        data.fill(0xff);
                        stray.note(|| format!("in from port {port:#x}"));
                    }
                }
                Ok(VcpuExit::MmioRead(address, data)) => {
                    idt_may_have_changed = true;
                    data.fill(0xff);
                    stray.note(|| format!("read of {} bytes at physical {address:#x}", data.len()));
                }
                Ok(VcpuExit::MmioWrite(address, data)) => {
                    idt_may_have_changed = true;
                    stray
                        .note(|| format!("write of {} bytes at physical {address:#x}", data.len()));
                }
                Ok(VcpuExit::Hlt) => halted = true,
                Ok(VcpuExit::Debug(arch)) => debug = Some(arch),
                Ok(VcpuExit::Shutdown) => break Ending::TripleFault,
                Ok(VcpuExit::FailEntry(reason, cpu)) => break Ending::EntryFailure { reason, cpu },
                Ok(VcpuExit::InternalError) => break self.internal_error(),
                Ok(other) => {
                    break Ending::HostError {
                        what: format!("unexpected VM exit {other:?}"),
                    };
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    if watchdog.fired() {
                        break Ending::Timeout {
                            limit: self.config.timeout,
                        };
                    }
                    idt_may_have_changed = true;
                }
                Err(e) => {
                    break Ending::HostError {
                        what: format!("KVM_RUN failed: {e}"),
                    };
                }
            }
            if let Err(what) = self.after_exit(stepping, idt_may_have_changed) {
                break Ending::HostError { what };
            }
            if stepping && debug.is_some_and(|arch| arch.exception == 1) {
                continue;
            }
            if halted {
                match self.on_hlt() {
                    Ok(true) => continue,
                    Ok(false) => {
                        let interrupts_enabled = self
                            .vcpu
                            .get_regs()
                            .map(|r| r.rflags & (1 << 9) != 0)
                            .unwrap_or(false);
                        break Ending::Halted { interrupts_enabled };
                    }
                    Err(what) => break Ending::HostError { what },
                }
            }
            if let Some(arch) = debug {
                match self.on_debug(arch) {
                    Ok(()) => continue,
                    Err(what) => break Ending::HostError { what },
                }
            }
        };
        drop(watchdog);
        let elapsed = started.elapsed();
        let _ = self.uart.writer_mut().flush();
        self.finish_tap(matches!(ending, Ending::TripleFault));
        let state = match ending {
            Ending::GuestExit { .. } => None,
            _ => CpuState::capture(&self.vcpu, &self.mem).ok(),
        };
        let report = RunReport {
            ending,
            state,
            elapsed,
            vm_exits: exits,
            stray_accesses: stray.count,
            first_stray: stray.first,
            serial_dropped: self.uart.writer().dropped(),
        };
        if let Some(file) = &mut self.report {
            file.line(&report::run_json(&report, self.exceptions.total));
        }
        report
    }

    /// Close the report file; a write error that happened during the run surfaces here.
    pub fn finish_report(&mut self) -> Result<(), ReportError> {
        match self.report.take() {
            Some(file) => file.finish(),
            None => Ok(()),
        }
    }

    /// Tap work at every exit: end a single-step, and re-check the IDT where it may have
    /// changed.
    fn after_exit(&mut self, stepping: bool, idt_may_have_changed: bool) -> Result<(), String> {
        let Some(tap) = &mut self.tap else {
            return Ok(());
        };
        if stepping {
            tap.end_step(&self.vcpu, &self.mem)
                .map_err(|e| e.to_string())?;
        }
        if idt_may_have_changed {
            tap.check(&self.vcpu, &self.mem)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// A `hlt` exit: the tap's trap (RIP is past the one-byte `hlt`), or the guest halting.
    fn on_hlt(&mut self) -> Result<bool, String> {
        let Some(tap) = &self.tap else {
            return Ok(false);
        };
        if tap.kind() != TrapKind::Hlt {
            return Ok(false);
        }
        let regs = self
            .vcpu
            .get_regs()
            .map_err(|e| format!("KVM_GET_REGS: {e}"))?;
        let sregs = self
            .vcpu
            .get_sregs()
            .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
        let hit = [regs.rip.wrapping_sub(1), regs.rip]
            .into_iter()
            .map(|at| tap.classify(&self.mem, &sregs, at))
            .find(|hit| matches!(hit, Hit::Handler { .. }));
        let Some(Hit::Handler { gpa, handler }) = hit else {
            return Ok(false);
        };
        self.capture(regs, &sregs, gpa, handler)?;
        Ok(true)
    }

    /// A debug exit outside a single-step: an int3 trap of the tap, or the guest's own int3,
    /// which goes back to the guest as the #BP it would have raised.
    fn on_debug(&mut self, arch: kvm_bindings::kvm_debug_exit_arch) -> Result<(), String> {
        let sregs = self
            .vcpu
            .get_sregs()
            .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
        let hit = match &self.tap {
            Some(tap) if arch.exception == 3 => tap.classify(&self.mem, &sregs, arch.pc),
            _ => Hit::NotOurs,
        };
        match hit {
            Hit::Handler { gpa, handler } => {
                let regs = self
                    .vcpu
                    .get_regs()
                    .map_err(|e| format!("KVM_GET_REGS: {e}"))?;
                self.capture(regs, &sregs, gpa, handler)
            }
            Hit::NotOurs if arch.exception == 3 => {
                let mut events = self
                    .vcpu
                    .get_vcpu_events()
                    .map_err(|e| format!("KVM_GET_VCPU_EVENTS: {e}"))?;
                events.exception.injected = 1;
                events.exception.nr = 3;
                events.exception.has_error_code = 0;
                self.vcpu
                    .set_vcpu_events(&events)
                    .map_err(|e| format!("re-injecting the guest's own #BP: {e}"))
            }
            Hit::NotOurs => Err(format!(
                "unexpected debug exit (exception {} at {:#x})",
                arch.exception, arch.pc
            )),
        }
    }

    /// Record, analyse and log the exception whose handler the guest just reached.
    fn capture(
        &mut self,
        regs: kvm_regs,
        sregs: &kvm_bindings::kvm_sregs,
        gpa: Gpa,
        handler: Gva,
    ) -> Result<(), String> {
        // The previous handler has run since its exception: its diff is due.
        self.resolve_diff(false);
        let Some(tap) = &mut self.tap else {
            return Ok(());
        };
        let record = tap
            .on_hit(&self.vcpu, &self.mem, regs, sregs, gpa, handler)
            .map_err(|e| e.to_string())?;
        let analysis = (self.config.audit != AuditMode::Off).then(|| {
            let outer = record
                .outer
                .last()
                .and_then(|seq| self.exceptions.active.iter().find(|c| c.record.seq == *seq));
            let ctx = Context::new(
                tap.space(&self.mem, sregs),
                &self.ram,
                self.symbols.as_ref(),
                outer,
                self.config.audit == AuditMode::Full,
            );
            let (analysis, snapshot) = analysis::analyse(&record, &ctx);
            self.pending_diff = snapshot;
            analysis
        });
        if let Some(file) = &mut self.report {
            file.line(&report::exception_json(&record, analysis.as_ref()));
            if let Some(audit) = analysis.as_ref().and_then(|a| a.audit.as_ref()) {
                file.line(&report::audit_json(Some(record.seq), audit));
            }
        }
        self.exceptions.push(Captured { record, analysis });
        Ok(())
    }

    /// Guest memory under `cr3` as the guest sees it (the tap's bytes hidden).
    fn address_space(&self, mode: PagingMode, cr3: Cr3) -> AddressSpace<'_> {
        AddressSpace {
            view: GuestView::new(&self.mem, self.tap.as_ref().map(Tap::patches)),
            mode,
            cr3,
        }
    }

    fn resolve_diff(&mut self, at_end: bool) {
        let Some(snapshot) = self.pending_diff.take() else {
            return;
        };
        let diff = snapshot.resolve(
            &self.address_space(snapshot.mode, snapshot.walk.cr3),
            at_end,
        );
        if let Some(file) = &mut self.report {
            file.line(&report::diff_json(snapshot.seq, &diff));
        }
        self.exceptions.attach_diff(snapshot.seq, diff);
    }

    /// At the end of a run: the last diff, the whole-tree audit under the final CR3, and the
    /// guest's bytes back in place.
    fn finish_tap(&mut self, triple_fault: bool) {
        let Some(tap) = &self.tap else {
            return;
        };
        if triple_fault && let Ok(sregs) = self.vcpu.get_sregs() {
            self.exceptions.idt_at_end = Some(tap.describe_idt(&self.mem, &sregs));
        }
        self.resolve_diff(true);
        if self.config.audit != AuditMode::Off
            && let Ok(sregs) = self.vcpu.get_sregs()
            && sregs.cr0 & (1 << 31) != 0
        {
            let mode = PagingMode::new(self.max_phys_addr, sregs.efer);
            let space = self.address_space(mode, Cr3::new(sregs.cr3));
            let audit = paging::audit(&space.view, mode, space.cr3, &self.ram);
            if let Some(file) = &mut self.report {
                file.line(&report::audit_json(None, &audit));
            }
            self.exceptions.final_audit = Some(audit);
        }
        if let Some(tap) = &mut self.tap {
            tap.disarm(&self.mem);
        }
    }

    fn internal_error(&mut self) -> Ending {
        let run = self.vcpu.get_kvm_run();
        // SAFETY: KVM_RUN just returned KVM_EXIT_INTERNAL_ERROR, so `internal` is the union
        // member KVM filled in.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        let count = (internal.ndata as usize).min(internal.data.len());
        Ending::InternalError {
            suberror: internal.suberror,
            data: internal.data[..count].to_vec(),
        }
    }
}
