//! A VM booting one kernel through PVH: guest RAM, one vCPU, COM1 and the debug-exit port,
//! and the loop that runs it until it ends.

use crate::addr::{Gpa, Gva};
use crate::boot_cpu;
use crate::console::{self, ConsoleError, ConsoleSink, Uart};
use crate::cpu_state::CpuState;
use crate::cpuid::{self, CpuidError};
use crate::ending::{Ending, RunReport};
use crate::hypervisor::{self, KvmError};
use crate::layout::{LayoutError, RamLayout};
use crate::loader::{self, KernelImage, LoadError};
use crate::paging::{self, Cr3, PagingMode, Walk};
use crate::watchdog::Watchdog;
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
    mem: GuestMemoryMmap,
}

impl Vm {
    /// Check the inputs, create the VM and load the kernel; nothing runs yet.
    pub fn new(config: VmConfig) -> Result<Self, VmError> {
        let layout = RamLayout::new(config.mem, crate::layout::host_ram())?;
        let kernel = KernelImage::inspect(&config.kernel, &layout)?;
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

        Ok(Self {
            vcpu,
            _vm: vm,
            _kvm: kvm,
            uart: console::uart(sink),
            config,
            max_phys_addr,
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

    /// Run the guest until it ends, one way or another. Never panics on guest behaviour.
    pub fn run(&mut self) -> RunReport {
        let started = Instant::now();
        let watchdog = Watchdog::arm(self.config.timeout);
        let mut exits = 0u64;
        let mut stray = StrayAccesses::default();
        let ending = loop {
            let exit = self.vcpu.run();
            exits += 1;
            match exit {
                Ok(VcpuExit::IoOut(port, data)) => {
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
                    data.fill(0xff);
                    stray.note(|| format!("read of {} bytes at physical {address:#x}", data.len()));
                }
                Ok(VcpuExit::MmioWrite(address, data)) => {
                    stray
                        .note(|| format!("write of {} bytes at physical {address:#x}", data.len()));
                }
                Ok(VcpuExit::Hlt) => {
                    let interrupts_enabled = self
                        .vcpu
                        .get_regs()
                        .map(|r| r.rflags & (1 << 9) != 0)
                        .unwrap_or(false);
                    break Ending::Halted { interrupts_enabled };
                }
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
                }
                Err(e) => {
                    break Ending::HostError {
                        what: format!("KVM_RUN failed: {e}"),
                    };
                }
            }
        };
        drop(watchdog);
        let elapsed = started.elapsed();
        let _ = self.uart.writer_mut().flush();
        let state = match ending {
            Ending::GuestExit { .. } => None,
            _ => CpuState::capture(&self.vcpu, &self.mem).ok(),
        };
        RunReport {
            ending,
            state,
            elapsed,
            vm_exits: exits,
            stray_accesses: stray.count,
            first_stray: stray.first,
            serial_dropped: self.uart.writer().dropped(),
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
