//! The loop that runs the vCPU until something stops it: the end of the run or, with gdb
//! attached, a caught exception, a breakpoint, a finished step or an interrupt.

use super::{COM1, Vm};
use crate::addr::{Gpa, Gva};
use crate::catch::VectorSet;
use crate::cpu_state::CpuState;
use crate::ending::{Ending, RunReport};
use crate::report;
use crate::tap::{Displaced, Hit, Tap, TrapKind};
use crate::watchdog::Watchdog;
use kvm_bindings::{kvm_debug_exit_arch, kvm_regs, kvm_sregs};
use kvm_ioctls::VcpuExit;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Exits a single step may take before the run's time limit is armed for it.
const STEP_EXITS_BEFORE_WATCHDOG: u32 = 64;

/// How far to let the guest go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    Continue,
    /// One instruction (or, at an exception shown before its handler, the delivery).
    Step,
}

/// Why the guest stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The run is over; the guest cannot go on.
    Ended(Ending),
    /// A caught exception: the guest is shown at the faulting instruction, before its handler.
    Exception {
        seq: u64,
        vector: u8,
    },
    /// A software breakpoint: RIP is at it.
    Breakpoint,
    /// A hardware breakpoint in debug register `slot`: RIP is at it.
    HwBreakpoint {
        slot: usize,
    },
    /// A watchpoint in debug register `slot` fired after the access.
    Watchpoint {
        slot: usize,
    },
    Stepped,
    /// gdb asked for a stop (Ctrl-C).
    Interrupted,
}

/// What stops the guest besides the end of the run.
#[derive(Debug, Clone)]
pub struct StopOn {
    /// Exceptions that stop before their handler runs.
    pub catch: VectorSet,
    /// Set by another thread (which also kicks the vCPU out of KVM_RUN) to stop the guest.
    pub interrupt: Option<Arc<AtomicBool>>,
}

impl Default for StopOn {
    /// A plain run stops only at its end.
    fn default() -> Self {
        Self {
            catch: VectorSet::NONE,
            interrupt: None,
        }
    }
}

/// A handler entry the vCPU stands at, with the displaced instruction not yet run.
#[derive(Debug, Clone, Copy)]
pub(super) struct Held {
    pub gpa: Gpa,
    pub seq: u64,
    /// gdb is shown the interrupted code (the faulting instruction), not the handler entry.
    pub presented: bool,
    /// The interrupted context: registers from the exception frame.
    pub interrupted: kvm_regs,
    pub interrupted_cs: u16,
    pub interrupted_ss: u16,
}

/// Counts and describes guest accesses that reached no device.
#[derive(Debug, Default)]
pub(super) struct StrayAccesses {
    count: u64,
    first: Option<String>,
}

impl StrayAccesses {
    pub(super) fn note(&mut self, what: impl FnOnce() -> String) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(what());
        }
    }
}

/// The run so far, across resumes.
#[derive(Debug, Default)]
pub(super) struct Progress {
    /// Time spent in the run loop (the watchdog's budget is spent only there).
    running: Duration,
    exits: u64,
    pub(super) stray: StrayAccesses,
    ended: Option<Ending>,
}

/// What a trap exit turned out to be.
enum Trap {
    NotOurs,
    Handled,
    Stop(Stop),
}

impl Vm {
    /// Run the guest until it ends, one way or another. Never panics on guest behaviour.
    pub fn run(&mut self) -> RunReport {
        loop {
            if let Stop::Ended(ending) = self.resume(Resume::Continue) {
                return self.finish(ending);
            }
        }
    }

    /// How the run ended, once it has.
    pub fn ended(&self) -> Option<&Ending> {
        self.progress.ended.as_ref()
    }

    /// Let the guest go until something in [`Vm::stop_on`], a breakpoint or the end stops it.
    pub fn resume(&mut self, mode: Resume) -> Stop {
        if let Some(ending) = &self.progress.ended {
            return Stop::Ended(ending.clone());
        }
        let step = mode == Resume::Step;
        let left = self.leave_current(step);
        self.stopped.forget();
        let stop = match left {
            Ok(Some(stop)) => stop,
            Ok(None) => match self.apply_debug(step) {
                Ok(()) => {
                    self.watch_baseline();
                    self.run_loop(step)
                }
                Err(what) => Stop::Ended(Ending::HostError { what }),
            },
            Err(what) => Stop::Ended(Ending::HostError { what }),
        };
        // The single-step flag stays set while the guest stands; every resume applies what
        // it needs before KVM_RUN, so clearing it here would cost an ioctl per step.
        self.stopped.forget();
        match stop {
            Stop::Ended(ending) => self.end(ending),
            other => other,
        }
    }

    pub(super) fn progress_end(&mut self, ending: Ending) {
        self.progress.ended.get_or_insert(ending);
    }

    fn end(&mut self, ending: Ending) -> Stop {
        self.progress.ended = Some(ending.clone());
        Stop::Ended(ending)
    }

    /// The report of a run that ended: final state, exceptions, the last diff and audit.
    pub fn finish(&mut self, ending: Ending) -> RunReport {
        let _ = self.uart.writer_mut().flush();
        self.finish_tap(matches!(ending, Ending::TripleFault));
        let state = match ending {
            Ending::GuestExit { .. } => None,
            _ => CpuState::capture(&self.vcpu, &self.mem).ok(),
        };
        let report = RunReport {
            ending,
            state,
            elapsed: self.progress.running,
            vm_exits: self.progress.exits,
            stray_accesses: self.progress.stray.count,
            first_stray: self.progress.stray.first.clone(),
            serial_dropped: self.uart.writer().dropped(),
            serial_limit: self.config.serial_limit,
        };
        if let Some(file) = &mut self.report {
            file.line(&report::run_json(&report, self.exceptions.total));
        }
        report
    }

    /// Get off whatever the vCPU stands on: a held handler entry, a trap byte, a hardware
    /// breakpoint. May finish a step on its own.
    fn leave_current(&mut self, step: bool) -> Result<Option<Stop>, String> {
        if let Some(held) = self.held.take() {
            if held.presented && step {
                // Stepping the faulting instruction delivers the exception: show the handler.
                self.held = Some(Held {
                    presented: false,
                    ..held
                });
                return Ok(Some(Stop::Stepped));
            }
            let tap = self
                .tap
                .as_mut()
                .ok_or("an exception is held without the tap")?;
            let how = tap
                .run_displaced(&self.vcpu, &self.mem, held.gpa)
                .map_err(|e| e.to_string())?;
            return Ok((how == Displaced::Emulated && step).then_some(Stop::Stepped));
        }
        if self.hw.is_empty() && self.tap.as_ref().is_none_or(|t| !t.has_breakpoints()) && !step {
            return Ok(None);
        }
        let regs = self.stopped.regs(&self.vcpu).map_err(|e| e.to_string())?;
        if let Some(slot) = self.hw.execute_slot_at(Gva::new(regs.rip)) {
            // Resuming with RF set does not help on every KVM: step past with the slot off.
            self.hw.suspend(slot);
            return Ok(None);
        }
        let sregs = self.stopped.sregs(&self.vcpu).map_err(|e| e.to_string())?;
        let Some(tap) = &mut self.tap else {
            return Ok(None);
        };
        match tap.classify(&self.mem, &sregs, regs.rip) {
            // At a handler entry whose exception was not recorded yet (a step that ended
            // on it): record it now rather than step over the trap unseen.
            hit @ Hit::Handler { .. } => match self.on_trap(hit, regs, &sregs, step)? {
                Trap::Stop(stop) => Ok(Some(stop)),
                _ => Ok(None),
            },
            Hit::Breakpoint { gpa, .. } => {
                tap.step_over(&self.vcpu, &self.mem, gpa)
                    .map_err(|e| e.to_string())?;
                Ok(None)
            }
            Hit::NotOurs => Ok(None),
        }
    }

    fn run_loop(&mut self, step: bool) -> Stop {
        let started = Instant::now();
        let remaining = self.config.timeout.saturating_sub(self.progress.running);
        // A step usually ends at its first exit or two, so its watchdog (a thread) is armed
        // only once it has taken more: an instruction KVM retries for ever (a fetch from
        // unbacked memory, say) must still end at the time limit.
        let mut watchdog = (!step).then(|| Watchdog::arm(remaining));
        let stop = self.exits_until_stop(step, &mut watchdog, remaining);
        drop(watchdog);
        self.progress.running += started.elapsed();
        stop
    }

    fn exits_until_stop(
        &mut self,
        step: bool,
        watchdog: &mut Option<Watchdog>,
        remaining: Duration,
    ) -> Stop {
        let mut exits = 0u32;
        loop {
            exits += 1;
            if exits == STEP_EXITS_BEFORE_WATCHDOG && watchdog.is_none() {
                *watchdog = Some(Watchdog::arm(remaining));
            }
            let tap_stepping = self.tap.as_ref().is_some_and(Tap::stepping);
            let suspended = self.hw.suspended();
            let exit = self.vcpu.run();
            self.stopped.forget();
            self.progress.exits += 1;
            // Exits the tap may have to look at once `exit` no longer borrows the vCPU.
            let mut idt_may_have_changed = false;
            let mut halted = false;
            let mut debug = None;
            let mut to_uart = None;
            match exit {
                Ok(VcpuExit::IoOut(port, data)) => {
                    idt_may_have_changed = true;
                    let value = data.iter().rev().fold(0u64, |v, &b| v << 8 | u64::from(b));
                    if port == abi::ports::DEBUG_EXIT {
                        let code = data.first().copied().unwrap_or(0);
                        if value > 0xff {
                            // Only the low byte is the exit code; say what else came.
                            self.progress.stray.note(|| {
                                format!(
                                    "out {value:#x} to the debug-exit port {port:#x}: only its low byte, {code}, is the exit code"
                                )
                            });
                        }
                        return Stop::Ended(Ending::GuestExit { code });
                    } else if COM1.contains(&port) {
                        // `rep outsb` hands over up to a page at once; how to split it
                        // needs the access size, readable once `data` is let go.
                        self.serial_out.clear();
                        self.serial_out.extend_from_slice(data);
                        to_uart = Some(port);
                    } else {
                        self.progress
                            .stray
                            .note(|| format!("out {value:#x} to port {port:#x}"));
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
                        self.progress
                            .stray
                            .note(|| format!("in from port {port:#x}"));
                    }
                }
                Ok(VcpuExit::MmioRead(address, data)) => {
                    idt_may_have_changed = true;
                    data.fill(0xff);
                    self.progress
                        .stray
                        .note(|| format!("read of {} bytes at physical {address:#x}", data.len()));
                }
                Ok(VcpuExit::MmioWrite(address, data)) => {
                    idt_may_have_changed = true;
                    self.progress
                        .stray
                        .note(|| format!("write of {} bytes at physical {address:#x}", data.len()));
                }
                Ok(VcpuExit::Hlt) => halted = true,
                Ok(VcpuExit::Debug(arch)) => debug = Some(arch),
                Ok(VcpuExit::Shutdown) => return Stop::Ended(Ending::TripleFault),
                Ok(VcpuExit::FailEntry(reason, cpu)) => {
                    return Stop::Ended(Ending::EntryFailure { reason, cpu });
                }
                Ok(VcpuExit::InternalError) => return Stop::Ended(self.internal_error()),
                Ok(other) => {
                    return Stop::Ended(Ending::HostError {
                        what: format!("unexpected VM exit {other:?}"),
                    });
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    if watchdog.as_ref().is_some_and(Watchdog::fired) {
                        return Stop::Ended(Ending::Timeout {
                            limit: self.config.timeout,
                        });
                    }
                    idt_may_have_changed = true;
                }
                Err(e) => {
                    return Stop::Ended(Ending::HostError {
                        what: format!("KVM_RUN failed: {e}"),
                    });
                }
            }
            if let Some(port) = to_uart {
                self.feed_uart(port);
            }
            if let Err(what) = self.after_exit(tap_stepping, idt_may_have_changed) {
                return Stop::Ended(Ending::HostError { what });
            }
            if let Some(arch) = debug
                && arch.exception == 1
            {
                if let Some(slot) = self.hw.hit(arch.dr6) {
                    return if self.hw.is_watchpoint(slot) {
                        Stop::Watchpoint { slot }
                    } else {
                        Stop::HwBreakpoint { slot }
                    };
                }
                if suspended.is_some() {
                    self.hw.unsuspend();
                    if let Err(what) = self.apply_debug(step) {
                        return Stop::Ended(Ending::HostError { what });
                    }
                }
                if self.hw.stepping_watches()
                    && let Some(slot) = self.stepped_watch_hit()
                {
                    return Stop::Watchpoint { slot };
                }
                if step {
                    return Stop::Stepped;
                }
                if tap_stepping || suspended.is_some() || self.hw.stepping_watches() {
                    continue;
                }
            }
            if halted {
                match self.on_hlt(step) {
                    Ok(Trap::Handled) => {}
                    Ok(Trap::Stop(stop)) => return stop,
                    Ok(Trap::NotOurs) => {
                        let interrupts_enabled = self
                            .vcpu
                            .get_regs()
                            .map(|r| r.rflags & (1 << 9) != 0)
                            .unwrap_or(false);
                        return Stop::Ended(Ending::Halted { interrupts_enabled });
                    }
                    Err(what) => return Stop::Ended(Ending::HostError { what }),
                }
            }
            if let Some(arch) = debug
                && arch.exception != 1
            {
                match self.on_debug(arch, step) {
                    Ok(Some(stop)) => return stop,
                    Ok(None) => {}
                    Err(what) => return Stop::Ended(Ending::HostError { what }),
                }
            }
            let busy = self.tap.as_ref().is_some_and(Tap::stepping);
            if !busy
                && let Some(flag) = &self.stop_on.interrupt
                && flag.swap(false, Ordering::SeqCst)
            {
                return Stop::Interrupted;
            }
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

    /// A `hlt` exit: one of the tap's traps (RIP is past the one-byte `hlt`), or the guest
    /// halting.
    fn on_hlt(&mut self, step: bool) -> Result<Trap, String> {
        let Some(tap) = &self.tap else {
            return Ok(Trap::NotOurs);
        };
        if tap.kind() != TrapKind::Hlt {
            return Ok(Trap::NotOurs);
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
            .find(|hit| *hit != Hit::NotOurs)
            .unwrap_or(Hit::NotOurs);
        self.on_trap(hit, regs, &sregs, step)
    }

    /// A debug exit other than a single-step: an int3 trap of the tap or a breakpoint, or
    /// the guest's own int3, which goes back to the guest as the #BP it would have raised.
    fn on_debug(&mut self, arch: kvm_debug_exit_arch, step: bool) -> Result<Option<Stop>, String> {
        let sregs = self
            .vcpu
            .get_sregs()
            .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
        let hit = match &self.tap {
            Some(tap) if arch.exception == 3 => tap.classify(&self.mem, &sregs, arch.pc),
            _ => Hit::NotOurs,
        };
        if hit != Hit::NotOurs {
            let regs = self
                .vcpu
                .get_regs()
                .map_err(|e| format!("KVM_GET_REGS: {e}"))?;
            return match self.on_trap(hit, regs, &sregs, step)? {
                Trap::Stop(stop) => Ok(Some(stop)),
                _ => Ok(None),
            };
        }
        if arch.exception != 3 {
            return Err(format!(
                "unexpected debug exit (exception {} at {:#x})",
                arch.exception, arch.pc
            ));
        }
        let mut events = self
            .vcpu
            .get_vcpu_events()
            .map_err(|e| format!("KVM_GET_VCPU_EVENTS: {e}"))?;
        events.exception.injected = 1;
        events.exception.nr = 3;
        events.exception.has_error_code = 0;
        self.vcpu
            .set_vcpu_events(&events)
            .map_err(|e| format!("re-injecting the guest's own #BP: {e}"))?;
        Ok(None)
    }

    /// The guest reached a trap byte: record the exception whose handler it is, and decide
    /// whether gdb sees it.
    fn on_trap(
        &mut self,
        hit: Hit,
        mut regs: kvm_regs,
        sregs: &kvm_sregs,
        step: bool,
    ) -> Result<Trap, String> {
        let (gpa, handler, breakpoint) = match hit {
            Hit::NotOurs => return Ok(Trap::NotOurs),
            Hit::Breakpoint { at, .. } => {
                regs.rip = at.raw();
                self.vcpu
                    .set_regs(&regs)
                    .map_err(|e| format!("KVM_SET_REGS: {e}"))?;
                return Ok(Trap::Stop(Stop::Breakpoint));
            }
            Hit::Handler {
                gpa,
                handler,
                breakpoint,
            } => (gpa, handler, breakpoint),
        };
        // The previous handler has run since its exception: its diff is due.
        self.resolve_diff(false);
        // The access a watchpoint saw coming faulted instead of completing.
        self.hw.forget_pending_access();
        let Some(tap) = &mut self.tap else {
            return Ok(Trap::NotOurs);
        };
        regs.rip = handler.raw();
        let record = tap.record_hit(&self.mem, &regs, sregs, gpa, handler);
        let (seq, vector) = (record.seq, record.vector);
        let caught = self.stop_on.catch.contains(vector);
        let stop = if caught {
            Some(Stop::Exception { seq, vector })
        } else if breakpoint {
            Some(Stop::Breakpoint)
        } else if step {
            Some(Stop::Stepped)
        } else {
            None
        };
        if stop.is_some() {
            self.vcpu
                .set_regs(&regs)
                .map_err(|e| format!("KVM_SET_REGS: {e}"))?;
            let frame = record.frame;
            self.held = Some(Held {
                gpa,
                seq,
                presented: caught,
                interrupted: record.regs,
                interrupted_cs: frame.map_or(sregs.cs.selector, |f| f.cs),
                interrupted_ss: frame.map_or(sregs.ss.selector, |f| f.ss),
            });
        } else {
            tap.deliver(&self.vcpu, &self.mem, regs, sregs, gpa)
                .map_err(|e| e.to_string())?;
        }
        self.log_exception(record, sregs);
        Ok(stop.map_or(Trap::Handled, Trap::Stop))
    }
}
