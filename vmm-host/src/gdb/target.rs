//! The VM as a gdbstub target: one gdb thread per vCPU, memory by virtual address (or
//! physical in QEMU's PhyMemMode), breakpoints through the tap, monitor commands.

use super::arch::{GdbRegId, GdbRegisters, Layout, X86_64Kvm};
use super::debuggable::Inspect;
use super::interrupt::Interrupter;
use super::monitor;
use crate::addr::{Gpa, Gva};
use crate::ending::Ending;
use crate::vm::{DebugError, HwKind, Resume, Stop};
use gdbstub::common::{Signal, Tid};
use gdbstub::stub::MultiThreadStopReason;
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::base::multithread::{
    MultiThreadBase, MultiThreadResume, MultiThreadResumeOps, MultiThreadSchedulerLocking,
    MultiThreadSchedulerLockingOps, MultiThreadSingleStep, MultiThreadSingleStepOps,
};
use gdbstub::target::ext::base::single_register_access::{
    SingleRegisterAccess, SingleRegisterAccessOps,
};
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps,
    SwBreakpoint, SwBreakpointOps, WatchKind,
};
use gdbstub::target::ext::monitor_cmd::{ConsoleOutput, MonitorCmd, MonitorCmdOps};
use gdbstub::target::ext::target_description_xml_override::{
    TargetDescriptionXmlOverride, TargetDescriptionXmlOverrideOps,
};
use gdbstub::target::{Target, TargetError, TargetResult};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// gdb numbers threads from 1; vCPU n is thread n + 1.
pub(super) fn tid_of(vcpu: usize) -> Tid {
    Tid::new(vcpu + 1).unwrap_or(Tid::MIN)
}

/// The signal gdb shows for an exception (as a Unix kernel would deliver it).
pub fn signal_for(vector: u8) -> Signal {
    match vector {
        13 | 14 => Signal::SIGSEGV,
        6 => Signal::SIGILL,
        0 | 16 | 19 => Signal::SIGFPE,
        1 | 3 => Signal::SIGTRAP,
        _ => Signal::SIGBUS,
    }
}

/// The signal of a run that ended without the guest exiting.
fn signal_for_ending(ending: &Ending) -> Signal {
    match ending {
        Ending::Timeout { .. } => Signal::SIGXCPU,
        Ending::Killed => Signal::SIGKILL,
        _ => Signal::SIGABRT,
    }
}

/// What a gdb request failed on.
#[derive(Debug, thiserror::Error)]
pub enum TargetFault {
    #[error("there is no thread {0}: this VM has one vCPU, thread 1")]
    NoSuchThread(usize),
    #[error("cannot read the vCPU's registers: {0}")]
    ReadRegisters(DebugError),
    #[error("cannot set the registers: {0}")]
    WriteRegisters(DebugError),
    #[error("there is no register {0} in this architecture's list")]
    NoSuchRegister(usize),
    #[error("cannot access memory at {addr:#x}: {error}")]
    Memory { addr: u64, error: DebugError },
}

/// The one place that decides what a failed request does to the session: a vCPU whose
/// registers cannot be read ends it; anything else is answered with an error packet, and
/// gdb, which sees only a number, has the reason printed on the host's terminal.
pub(super) fn answer(fault: TargetFault) -> TargetError<TargetFault> {
    match fault {
        TargetFault::ReadRegisters(_) => TargetError::Fatal(fault),
        // EFAULT: gdb says "Cannot access memory at address …".
        TargetFault::Memory { .. } => TargetError::Errno(14),
        TargetFault::WriteRegisters(_) => {
            eprintln!("gdb: {fault}");
            TargetError::NonFatal
        }
        TargetFault::NoSuchThread(_) | TargetFault::NoSuchRegister(_) => TargetError::NonFatal,
    }
}

pub struct GdbTarget<'a> {
    pub vm: &'a mut dyn Inspect,
    /// QEMU's `Qqemu.PhyMemMode:1`: memory packets address guest-physical memory.
    pub physical: Arc<AtomicBool>,
    pub interrupter: Interrupter,
    pub(super) mode: Resume,
    /// The end of the run was shown as a stop; the next resume reports it as final.
    end_shown: bool,
    /// The register layout of this session (gdb reads the description once).
    pub(super) layout: Layout,
}

impl<'a> GdbTarget<'a> {
    pub fn new(
        vm: &'a mut dyn Inspect,
        physical: Arc<AtomicBool>,
        interrupter: Interrupter,
        layout: Layout,
    ) -> Self {
        vm.stop_on().interrupt = Some(interrupter.flag());
        Self {
            vm,
            physical,
            interrupter,
            mode: Resume::Continue,
            end_shown: false,
            layout,
        }
    }

    pub(super) fn stop_reason(&mut self, stop: Stop) -> MultiThreadStopReason<u64> {
        let tid = tid_of(0);
        match stop {
            Stop::Ended(Ending::GuestExit { code }) => MultiThreadStopReason::Exited(code),
            Stop::Ended(ending) => {
                let signal = signal_for_ending(&ending);
                if std::mem::replace(&mut self.end_shown, true) {
                    MultiThreadStopReason::Terminated(signal)
                } else {
                    MultiThreadStopReason::SignalWithThread { tid, signal }
                }
            }
            Stop::Exception { vector, .. } => MultiThreadStopReason::SignalWithThread {
                tid,
                signal: signal_for(vector),
            },
            Stop::Breakpoint => MultiThreadStopReason::SwBreak(tid),
            Stop::HwBreakpoint { .. } => MultiThreadStopReason::HwBreak(tid),
            Stop::Watchpoint { slot } => match self.vm.hw_slot(slot) {
                Some((kind, at)) => MultiThreadStopReason::Watch {
                    tid,
                    kind: if kind == HwKind::Write {
                        WatchKind::Write
                    } else {
                        WatchKind::ReadWrite
                    },
                    addr: at.raw(),
                },
                None => MultiThreadStopReason::HwBreak(tid),
            },
            // A T packet rather than gdbstub's bare S05, so the reply can carry registers.
            Stop::Stepped => MultiThreadStopReason::SignalWithThread {
                tid,
                signal: Signal::SIGTRAP,
            },
            Stop::Interrupted => MultiThreadStopReason::SignalWithThread {
                tid,
                signal: Signal::SIGINT,
            },
            Stop::Irq { .. } => MultiThreadStopReason::SignalWithThread {
                tid,
                signal: Signal::SIGTRAP,
            },
        }
    }

    fn read_memory(&self, start: u64, data: &mut [u8]) -> Result<usize, TargetFault> {
        let read = if self.physical.load(Ordering::SeqCst) {
            self.vm.read_physical(Gpa::new(start), data)
        } else {
            self.vm.read_virtual(Gva::new(start), data)
        };
        read.map_err(|error| TargetFault::Memory { addr: start, error })
    }

    fn write_memory(&mut self, start: u64, data: &[u8]) -> Result<(), TargetFault> {
        let written = if self.physical.load(Ordering::SeqCst) {
            self.vm.write_physical(Gpa::new(start), data)
        } else {
            self.vm.write_virtual(Gva::new(start), data)
        };
        written.map_err(|error| TargetFault::Memory { addr: start, error })
    }

    fn registers(&self) -> Result<crate::vm::Registers, TargetFault> {
        self.vm.registers().map_err(TargetFault::ReadRegisters)
    }

    fn set_registers(&mut self, new: &crate::vm::Registers) -> Result<(), TargetFault> {
        self.vm
            .set_registers(new)
            .map_err(TargetFault::WriteRegisters)
    }

    fn write_register(&mut self, reg: usize, value: &[u8]) -> Result<(), TargetFault> {
        let base = self.registers()?;
        let mut regs = GdbRegisters::from_vcpu(&base, self.layout);
        if !regs.set(reg, value) {
            return Err(TargetFault::NoSuchRegister(reg));
        }
        self.set_registers(&regs.to_vcpu(&base))
    }
}

impl Target for GdbTarget<'_> {
    type Arch = X86_64Kvm;
    type Error = TargetFault;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::MultiThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    fn support_monitor_cmd(&mut self) -> Option<MonitorCmdOps<'_, Self>> {
        Some(self)
    }

    fn support_target_description_xml_override(
        &mut self,
    ) -> Option<TargetDescriptionXmlOverrideOps<'_, Self>> {
        Some(self)
    }
}

/// The description of this session's layout: gdb reads it once, when it connects.
impl TargetDescriptionXmlOverride for GdbTarget<'_> {
    fn target_description_xml(
        &self,
        _annex: &[u8],
        offset: u64,
        length: usize,
        buf: &mut [u8],
    ) -> TargetResult<usize, Self> {
        let xml = self.layout.target_xml().as_bytes();
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(xml.len());
        let n = length.min(buf.len()).min(xml.len() - start);
        buf[..n].copy_from_slice(&xml[start..start + n]);
        Ok(n)
    }
}

/// One vCPU today; every request still names the one it means, and others are refused.
fn check_vcpu(tid: Tid) -> Result<(), TargetError<TargetFault>> {
    if tid.get() == 1 {
        Ok(())
    } else {
        Err(answer(TargetFault::NoSuchThread(tid.get())))
    }
}

impl MultiThreadBase for GdbTarget<'_> {
    fn read_registers(&mut self, regs: &mut GdbRegisters, tid: Tid) -> TargetResult<(), Self> {
        check_vcpu(tid)?;
        *regs = GdbRegisters::from_vcpu(&self.registers().map_err(answer)?, self.layout);
        Ok(())
    }

    fn write_registers(&mut self, regs: &GdbRegisters, tid: Tid) -> TargetResult<(), Self> {
        check_vcpu(tid)?;
        let base = self.registers().map_err(answer)?;
        self.set_registers(&regs.to_vcpu(&base)).map_err(answer)
    }

    fn support_single_register_access(&mut self) -> Option<SingleRegisterAccessOps<'_, Tid, Self>> {
        Some(self)
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8], tid: Tid) -> TargetResult<usize, Self> {
        check_vcpu(tid)?;
        self.read_memory(start, data).map_err(answer)
    }

    fn write_addrs(&mut self, start: u64, data: &[u8], tid: Tid) -> TargetResult<(), Self> {
        check_vcpu(tid)?;
        self.write_memory(start, data).map_err(answer)
    }

    fn list_active_threads(
        &mut self,
        thread_is_active: &mut dyn FnMut(Tid),
    ) -> Result<(), Self::Error> {
        for vcpu in 0..self.vm.vcpu_count() {
            thread_is_active(tid_of(vcpu));
        }
        Ok(())
    }

    fn support_resume(&mut self) -> Option<MultiThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl SingleRegisterAccess<Tid> for GdbTarget<'_> {
    fn read_register(
        &mut self,
        tid: Tid,
        reg_id: GdbRegId,
        buf: &mut [u8],
    ) -> TargetResult<usize, Self> {
        check_vcpu(tid)?;
        let value = GdbRegisters::from_vcpu(&self.registers().map_err(answer)?, self.layout);
        let bytes = value.get(reg_id.0);
        if bytes.is_empty() {
            return Err(answer(TargetFault::NoSuchRegister(reg_id.0)));
        }
        let n = bytes.len().min(buf.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        Ok(n)
    }

    fn write_register(&mut self, tid: Tid, reg_id: GdbRegId, val: &[u8]) -> TargetResult<(), Self> {
        check_vcpu(tid)?;
        GdbTarget::write_register(self, reg_id.0, val).map_err(answer)
    }
}

impl MultiThreadResume for GdbTarget<'_> {
    fn resume(&mut self) -> Result<(), Self::Error> {
        // The guest runs in the event loop, where a Ctrl-C can reach it.
        Ok(())
    }

    fn clear_resume_actions(&mut self) -> Result<(), Self::Error> {
        self.mode = Resume::Continue;
        Ok(())
    }

    fn set_resume_action_continue(
        &mut self,
        _tid: Tid,
        _signal: Option<Signal>,
    ) -> Result<(), Self::Error> {
        // A pending exception is delivered as it was raised, whatever signal gdb passes.
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<MultiThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    fn support_scheduler_locking(&mut self) -> Option<MultiThreadSchedulerLockingOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadSchedulerLocking for GdbTarget<'_> {
    fn set_resume_action_scheduler_lock(&mut self) -> Result<(), Self::Error> {
        // Only the vCPUs gdb resumes run; with one vCPU there is nothing else to hold.
        Ok(())
    }
}

impl MultiThreadSingleStep for GdbTarget<'_> {
    fn set_resume_action_step(
        &mut self,
        _tid: Tid,
        _signal: Option<Signal>,
    ) -> Result<(), Self::Error> {
        self.mode = Resume::Step;
        Ok(())
    }
}

impl Breakpoints for GdbTarget<'_> {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        Some(self)
    }
}

impl SwBreakpoint for GdbTarget<'_> {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        match self.vm.add_breakpoint(Gva::new(addr)) {
            Ok(()) => Ok(true),
            Err(e) => {
                eprintln!("gdb: breakpoint at {addr:#x}: {e}");
                Ok(false)
            }
        }
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.vm.remove_breakpoint(Gva::new(addr)))
    }
}

impl HwBreakpoint for GdbTarget<'_> {
    fn add_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.vm.add_hw(HwKind::Execute, Gva::new(addr), 1))
    }

    fn remove_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.vm.remove_hw(HwKind::Execute, Gva::new(addr)))
    }
}

impl HwWatchpoint for GdbTarget<'_> {
    fn add_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        let kind = match kind {
            WatchKind::Write => HwKind::Write,
            WatchKind::ReadWrite => HwKind::Access,
            // x86 debug registers cannot watch reads alone.
            WatchKind::Read => return Ok(false),
        };
        Ok(self.vm.add_hw(kind, Gva::new(addr), len))
    }

    fn remove_hw_watchpoint(
        &mut self,
        addr: u64,
        _len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        let kind = match kind {
            WatchKind::Write => HwKind::Write,
            _ => HwKind::Access,
        };
        Ok(self.vm.remove_hw(kind, Gva::new(addr)))
    }
}

impl MonitorCmd for GdbTarget<'_> {
    fn handle_monitor_cmd(
        &mut self,
        cmd: &[u8],
        mut out: ConsoleOutput<'_>,
    ) -> Result<(), Self::Error> {
        let line = String::from_utf8_lossy(cmd);
        let text = monitor::run(self.vm, &line);
        for line in text.lines() {
            gdbstub::outputln!(out, "{}", line);
        }
        Ok(())
    }
}
