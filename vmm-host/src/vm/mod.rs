//! A VM booting one kernel (PVH or Multiboot): guest RAM, one vCPU, COM1 and the debug-exit port.
//! [`run`] holds the loop that runs it; [`debug`] what gdb reads and changes while it stands.

mod carry;
mod debug;
mod dump;
mod error;
mod exits;
mod firmware;
mod interrupts;
mod looping;
mod run;
mod stopped;
mod vcpu;

pub use debug::{DebugError, HwKind, Registers, read_physical_in, read_virtual_in};
pub use run::{Resume, Stop, StopOn};

use crate::addr::{Gpa, Gva};
use crate::analysis::{self, Captured, Context, Snapshot};
use crate::bios::Bios;
use crate::boot_cpu;
use crate::console::{ConsoleError, ConsoleSink};
use crate::cpuid::{self, CpuidError};
use crate::devices::vga::{TEXT_BUFFER, TEXT_BUFFER_SIZE};
use crate::devices::{DeviceError, Devices};
use crate::exceptions::{ExceptionLog, ExceptionReport};
use crate::hypervisor::{self, KvmError};
use crate::layout::{LayoutError, RamLayout};
use crate::loader::{BootEntry, BootFiles, BootProtocol, KernelImage, LoadError};
use crate::paging::{self, CpuPaging, Cr3, PagingMode, Walk};
use crate::report::{self, ReportError, ReportFile};
use crate::screen::Screen;
use crate::symbols::Symbolizer;
use crate::tap::{ExceptionRecord, Tap};
use crate::virt::AddressSpace;
pub use dump::CoreOn;
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use std::path::PathBuf;
use std::time::Duration;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use x86_64::registers::control::Cr0Flags;

/// Where KVM on Intel keeps its real-mode TSS: three pages inside the hole below 4 GiB.
const TSS_ADDRESS: usize = 0xfffb_d000;

#[derive(Debug, Clone)]
pub struct VmConfig {
    pub kernel: PathBuf,
    /// The ELF holding the kernel's symbols; `None`: the kernel file, when it has them.
    pub symbols: Option<PathBuf>,
    /// The boot protocol; `None` recognises it from the kernel file.
    pub boot: Option<BootProtocol>,
    /// Files loaded next to a Multiboot kernel.
    pub files: BootFiles,
    /// CPUID features hidden from the guest.
    pub cpuid: cpuid::Hidden,
    /// Unix seconds the CMOS clock starts at; `None`: the host's time.
    pub clock: Option<u64>,
    pub mem: u64,
    pub cmdline: String,
    pub timeout: Duration,
    pub serial_log: Option<PathBuf>,
    /// Serial output kept in the capture, the log and the terminal; the rest is counted.
    pub serial_limit: u64,
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
    Devices(#[from] DeviceError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error(transparent)]
    Symbols(#[from] crate::symbols::SymbolError),
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
            Self::Memory { .. } | Self::Setup { .. } | Self::Cpuid(_) | Self::Devices(_)
        )
    }
}

fn setup(step: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |error| VmError::Setup { step, error }
}

#[derive(Debug)]
pub struct Vm {
    // Field order is drop order: the vCPU and VM go before /dev/kvm, and guest RAM last.
    vcpu: VcpuFd,
    _vm: VmFd,
    _kvm: Kvm,
    devices: Devices,
    config: VmConfig,
    /// The guest's MAXPHYADDR and 1 GiB pages, from the CPUID it was given.
    cpu_paging: CpuPaging,
    ram: Vec<(Gpa, u64)>,
    tap: Option<Tap>,
    exceptions: ExceptionLog,
    /// The walk of the last exception, whose diff is due at the next stop.
    pending_diff: Option<Snapshot>,
    /// Deliveries to a handler the CPU cannot fetch, counted as they happen.
    live_loop: Option<looping::LiveLoop>,
    /// Set while the vCPU stands at a handler entry whose exception gdb was shown.
    held: Option<run::Held>,
    progress: run::Progress,
    /// External interrupts injected, by vector.
    interrupts: interrupts::InterruptCounts,
    /// The vector injected before the vCPU's current run, if any.
    injected_now: Option<u8>,
    /// An interrupt acknowledged at the PIC and shown to gdb, delivered when the guest
    /// resumes.
    held_irq: Option<u8>,
    pub stop_on: StopOn,
    /// `--core-on`: a core written at the first exception of a set of vectors.
    pub core_on: Option<CoreOn>,
    hw: debug::HwSlots,
    sw_breakpoints: debug::SwBreakpoints,
    /// The gdb debug state last given to KVM (and whether it single-stepped).
    applied_debug: Option<(debug::HwSlots, bool)>,
    /// Registers read while the guest stands, kept until it runs again.
    stopped: stopped::StoppedState,
    symbols: Option<Symbolizer>,
    report: Option<ReportFile>,
    /// The host's BIOS, when a disk image boots.
    bios: Option<Bios>,
    /// Instructions KVM could not emulate that the host carried out, by name.
    carried: std::collections::BTreeMap<&'static str, u64>,
    mem: GuestMemoryMmap,
}

/// The PC's devices, the CMOS told how much RAM there is and, perhaps, what time it is.
fn pc_devices(
    console: ConsoleSink,
    layout: &RamLayout,
    clock: Option<u64>,
) -> Result<Devices, VmError> {
    let mut devices = Devices::new(console)?;
    let (below, above) = layout
        .regions()
        .iter()
        .fold((0, 0), |(below, above), &(base, size)| {
            if base.raw() < 1 << 32 {
                (below + size, above)
            } else {
                (below, above + size)
            }
        });
    devices.set_ram(below, above);
    if let Some(epoch) = clock {
        devices.cmos.set_epoch(epoch);
    }
    Ok(devices)
}

/// Guest RAM as `layout` lays it out, in anonymous host memory.
fn guest_ram(layout: &RamLayout) -> Result<GuestMemoryMmap, VmError> {
    let ranges: Vec<(GuestAddress, usize)> = layout
        .regions()
        .iter()
        .map(|&(base, size)| (base.guest_address(), crate::narrow::to_usize(size)))
        .collect();
    GuestMemoryMmap::from_ranges(&ranges).map_err(|e| VmError::Memory {
        size: layout.size(),
        error: e.to_string(),
    })
}

/// vCPU 0 with the CPUID this host gives guests, in the state the boot protocol promises at
/// the kernel's entry; and the paging features that CPUID lets the guest use.
fn boot_vcpu(
    kvm: &Kvm,
    vm: &VmFd,
    entry: BootEntry,
    hidden: &cpuid::Hidden,
) -> Result<(VcpuFd, CpuPaging), VmError> {
    let vcpu = vm.create_vcpu(0).map_err(setup("KVM_CREATE_VCPU"))?;
    let guest_cpuid = cpuid::guest_cpuid(kvm, 0, hidden)?;
    vcpu.set_cpuid2(&guest_cpuid)
        .map_err(setup("KVM_SET_CPUID2"))?;
    let sregs = vcpu.get_sregs().map_err(setup("KVM_GET_SREGS"))?;
    vcpu.set_sregs(&boot_cpu::entry_sregs(sregs, &entry))
        .map_err(setup("KVM_SET_SREGS"))?;
    vcpu.set_regs(&boot_cpu::entry_regs(entry))
        .map_err(setup("KVM_SET_REGS"))?;
    Ok((vcpu, cpuid::paging_features(&guest_cpuid)))
}

impl Vm {
    /// Check the inputs, create the VM and load the kernel; nothing runs yet.
    pub fn new(config: VmConfig) -> Result<Self, VmError> {
        let layout = RamLayout::new(config.mem, crate::layout::host_ram())?;
        let kernel = KernelImage::inspect(&config.kernel, &layout, config.boot)?;
        kernel.check_inputs(&config.cmdline, &config.files)?;
        // Without symbols reports show bare addresses; that is no reason to refuse to run,
        // unless symbols were asked for by name.
        let symbols = match &config.symbols {
            Some(elf) => Some(Symbolizer::open(elf)?),
            None => Symbolizer::open(&config.kernel).ok(),
        };
        let report = config
            .report
            .as_deref()
            .map(ReportFile::create)
            .transpose()?;
        let kvm = hypervisor::open(&config.kvm_device)?;
        let sink = ConsoleSink::new(
            config.echo_serial,
            config.serial_log.as_deref(),
            config.serial_limit,
        )?;

        let mem = guest_ram(&layout)?;

        let vm = kvm.create_vm().map_err(setup("KVM_CREATE_VM"))?;
        vm.set_tss_address(TSS_ADDRESS)
            .map_err(setup("KVM_SET_TSS_ADDR"))?;
        hypervisor::register_memory(&vm, &mem).map_err(setup("KVM_SET_USER_MEMORY_REGION"))?;

        let entry = kernel.boot(&mem, &layout, &config.cmdline, &config.files)?;
        let bios = kernel
            .disk()
            .map(|disk| Bios::new(disk, layout.memory_map()));
        let mut devices = pc_devices(sink, &layout, config.clock)?;
        if let Some(bios) = &bios {
            bios.power_on(&mem, &mut devices);
        }
        let (mut vcpu, cpu_paging) = boot_vcpu(&kvm, &vm, entry, &config.cpuid)?;

        let synced_sregs = kvm.check_extension(kvm_ioctls::Cap::SyncRegs);
        if synced_sregs {
            vcpu.set_sync_valid_reg(kvm_ioctls::SyncReg::SystemRegister);
        }
        let tap = config.tap.then(|| {
            let mut tap = Tap::new(crate::doctor::trap_kind(&kvm), cpu_paging);
            if synced_sregs {
                tap.use_synced_sregs();
            }
            tap
        });
        Ok(Self {
            vcpu,
            _vm: vm,
            _kvm: kvm,
            devices,
            config,
            cpu_paging,
            ram: layout.regions().to_vec(),
            tap,
            exceptions: ExceptionLog::default(),
            pending_diff: None,
            live_loop: None,
            held: None,
            progress: run::Progress::default(),
            interrupts: interrupts::InterruptCounts::new(),
            injected_now: None,
            held_irq: None,
            stop_on: StopOn::default(),
            core_on: None,
            hw: debug::HwSlots::default(),
            sw_breakpoints: debug::SwBreakpoints::new(),
            applied_debug: None,
            stopped: stopped::StoppedState::default(),
            symbols,
            report,
            bios,
            carried: std::collections::BTreeMap::new(),
            mem,
        })
    }

    /// Walk `gva` with the host's walker through the vCPU's current CR3 (after a run: the
    /// state the guest ended in).
    pub fn walk(&self, gva: Gva) -> Result<Walk, kvm_ioctls::Error> {
        let sregs = self.vcpu.get_sregs()?;
        let mode = PagingMode::of_vcpu(self.cpu_paging, sregs.cr0, sregs.cr4, sregs.efer);
        Ok(paging::walk(&self.mem, mode, Cr3::new(sregs.cr3), gva))
    }

    /// KVM's own translation of `gva` (KVM_TRANSLATE), the oracle the walker is tested against.
    pub fn kvm_translate(&self, gva: Gva) -> Result<Option<Gpa>, kvm_ioctls::Error> {
        let t = self.vcpu.translate_gva(gva.raw())?;
        Ok((t.valid != 0).then(|| Gpa::new(t.physical_address)))
    }

    /// Everything the guest wrote to its serial port, up to the serial limit.
    pub fn serial_output(&self) -> &[u8] {
        self.devices.com1.sink().captured()
    }

    /// The VGA text screen as it stands: the text buffer read where the CRTC says the screen
    /// starts.
    pub fn screen(&self) -> Screen {
        let mode = self.devices.vga.text_mode();
        let mut buffer = vec![0u8; crate::narrow::to_usize(TEXT_BUFFER_SIZE)];
        // Only the bytes the screen shows: this runs at every exception a report records.
        let shown = crate::screen::window(mode, buffer.len());
        let at = GuestAddress(TEXT_BUFFER + shown.start as u64);
        // Guest RAM starts at 0 and is at least 32 MiB, so the read cannot fail; if it did,
        // the screen would read as blank.
        let _ = self.mem.read_slice(&mut buffer[shown], at);
        Screen::from_buffer(&buffer, mode)
    }

    /// The host's BIOS, when a disk image boots.
    pub fn bios(&self) -> Option<&Bios> {
        self.bios.as_ref()
    }

    /// The emulated devices, as they stand.
    pub fn devices(&self) -> &Devices {
        &self.devices
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
            interrupts: &self.interrupts,
        })
    }

    /// Add the run's diagnosis to the JSON lines, after the run record.
    pub fn record_diagnosis(&mut self, diagnosis: &crate::diagnosis::Diagnosis) {
        if let Some(file) = &mut self.report {
            file.line(&diagnosis.json());
        }
    }

    /// Close the report file; a write error that happened during the run surfaces here.
    pub fn finish_report(&mut self) -> Result<(), ReportError> {
        match self.report.take() {
            Some(file) => file.finish(),
            None => Ok(()),
        }
    }

    /// Analyse, report and log an exception the tap just recorded.
    fn log_exception(&mut self, record: ExceptionRecord, sregs: &kvm_bindings::kvm_sregs) {
        let Some(tap) = &self.tap else {
            return;
        };
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
        let screen = self.report.is_some().then(|| self.screen());
        if let Some(file) = &mut self.report {
            let mut line = report::exception_json(&record, analysis.as_ref());
            if let Some(changed) = screen.and_then(|s| file.screen_changed(&s)) {
                line["screen"] = changed.into();
            }
            file.line(&line);
            if let Some(audit) = analysis.as_ref().and_then(|a| a.audit.as_ref()) {
                file.line(&report::audit_json(Some(record.seq), audit));
            }
        }
        self.progress.live.exception(record.vector);
        self.exceptions.push(Captured { record, analysis });
    }

    /// Guest memory under `cr3` as the guest sees it (the tap's bytes hidden).
    fn address_space(&self, mode: PagingMode, cr3: Cr3) -> AddressSpace<'_> {
        AddressSpace {
            view: self.guest_view(),
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

    /// The deliveries that ended in the shutdown, replayed from the final state.
    fn replay_shutdown(
        &self,
        regs: &kvm_bindings::kvm_regs,
        sregs: &kvm_bindings::kvm_sregs,
    ) -> Result<crate::delivery::Chain, String> {
        let mode = PagingMode::of_vcpu(self.cpu_paging, sregs.cr0, sregs.cr4, sregs.efer);
        let machine = crate::delivery::Machine {
            space: self.address_space(mode, Cr3::new(sregs.cr3)),
            regs,
            sregs,
        };
        let mut chain = crate::delivery::replay_shutdown(&machine)?;
        // Counted live, the loop needs no walk through frames the stack may have lost.
        if let Some(live) = &self.live_loop {
            chain.before = Some(crate::delivery::started(&machine, live.as_loop()));
        }
        Ok(chain)
    }

    /// At the end of a run: the last diff, the whole-tree audit under the final CR3, and the
    /// guest's bytes back in place.
    fn finish_tap(&mut self, triple_fault: bool) {
        let Some(tap) = &self.tap else {
            return;
        };
        if triple_fault && let Ok(sregs) = self.vcpu.get_sregs() {
            self.exceptions.idt_at_end = Some(tap.describe_idt(&self.mem, &sregs));
            if let Ok(regs) = self.vcpu.get_regs() {
                let chain = self.replay_shutdown(&regs, &sregs);
                if let (Ok(chain), Some(file)) = (&chain, &mut self.report) {
                    if let Some((found, started)) = &chain.before {
                        file.line(&report::loop_json(found, started.as_ref()));
                    }
                    let last = chain.attempts.len();
                    for (step, attempt) in (1..).zip(&chain.attempts) {
                        let shutdown = step == last && chain.shuts_down();
                        file.line(&report::delivery_json(step, attempt, shutdown));
                    }
                }
                self.exceptions.chain_at_end = Some(chain);
            }
        }
        self.resolve_diff(true);
        if self.config.audit != AuditMode::Off
            && let Ok(sregs) = self.vcpu.get_sregs()
            && sregs.cr0 & Cr0Flags::PAGING.bits() != 0
        {
            let mode = PagingMode::of_vcpu(self.cpu_paging, sregs.cr0, sregs.cr4, sregs.efer);
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
}
