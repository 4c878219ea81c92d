//! The loop that runs the vCPU until something stops it: the end of the run or, with gdb
//! attached, a caught exception, a breakpoint, a finished step or an interrupt.

use super::Vm;
use super::error::{RunError, kvm};
use super::exits::{self, Event};
use super::firmware::BiosCall;
use super::interrupts::Wake;
use super::vcpu::DebugExit;
use crate::addr::{Gpa, Gva};
use crate::catch::VectorSet;
use crate::cpu_state::CpuState;
use crate::ending::{Ending, RunReport};
use crate::live;
use crate::report;
use crate::tap::{Displaced, Hit, Tap, TrapKind};
use crate::watchdog::{Ticker, Watchdog};
use kvm_bindings::{kvm_regs, kvm_sregs};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use x86_64::registers::rflags::RFlags;

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
    /// An external interrupt in `--break-on` is about to be delivered: the guest stands at
    /// the instruction it interrupts; resuming delivers it.
    Irq {
        vector: u8,
    },
}

/// What stops the guest besides the end of the run.
#[derive(Debug, Clone)]
pub struct StopOn {
    /// Exceptions that stop before their handler runs, and interrupt vectors (32–255) that
    /// stop before they are delivered.
    pub catch: VectorSet,
    /// Set by another thread (which also kicks the vCPU out of KVM_RUN) to stop the guest.
    pub interrupt: Option<Arc<AtomicBool>>,
    /// The captured exception (its number in the report) that stops the guest before its
    /// handler runs, whatever its vector (`--break-at`).
    pub at_seq: Option<u64>,
}

impl Default for StopOn {
    /// A plain run stops only at its end.
    fn default() -> Self {
        Self {
            catch: VectorSet::NONE,
            interrupt: None,
            at_seq: None,
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

/// The run so far, across resumes.
#[derive(Debug, Default)]
pub(super) struct Progress {
    /// Time spent in the run loop (the watchdog's budget is spent only there).
    running: Duration,
    exits: u64,
    ended: Option<Ending>,
    /// The last exit was a kick (KVM_EXIT_INTR): the guest may not have run since.
    kicked: bool,
    /// What the live status line shows (`live`).
    pub(super) live: Arc<live::Counters>,
}

/// What an exit leaves the loop to do.
enum Flow {
    Stop(Stop),
    /// The host's own single-step (the tap's, or past a suspended slot): go on at once.
    HostStep,
    /// Go on, unless gdb asked for a stop.
    Go,
}

/// State read before an exit that decides what its debug exit means.
#[derive(Debug, Clone, Copy)]
struct Before {
    tap_stepping: bool,
    hw_suspended: bool,
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
                Err(e) => Stop::Ended(Ending::HostError {
                    what: e.to_string(),
                }),
            },
            Err(e) => Stop::Ended(Ending::HostError {
                what: e.to_string(),
            }),
        };
        // The single-step flag stays set while the guest stands; every resume applies what
        // it needs before KVM_RUN, so clearing it here would cost an ioctl per step.
        self.stopped.forget();
        match stop {
            Stop::Ended(ending) => self.end(ending),
            other => other,
        }
    }

    /// The counters behind the live status line, for a [`live::StatusLine`] to draw.
    pub fn live_counters(&self) -> Arc<live::Counters> {
        Arc::clone(&self.progress.live)
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
        let _ = self.devices.com1.sink_mut().flush();
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
            stray_accesses: self.devices.stray.count,
            first_stray: self.devices.stray.first.clone(),
            post_codes: self.devices.post_codes.iter().copied().collect(),
            screen: Some(self.screen()).filter(|s| !s.is_blank()),
            interrupts: self.interrupts.iter().map(|(&v, &n)| (v, n)).collect(),
            pic_shared_base: self.devices.pic.shared_vector_base(),
            bios: self.bios.as_ref().map(crate::bios::Bios::report),
            carried_out: self.carried.iter().map(|(&k, &n)| (k, n)).collect(),
            diagnosis: None,
            serial_dropped: self.devices.com1.sink().dropped(),
            serial_limit: self.config.serial_limit,
        };
        if let Some(file) = &mut self.report {
            file.line(&report::run_json(&report, self.exceptions.total));
        }
        report
    }

    /// Get off whatever the vCPU stands on: a held handler entry, a trap byte, a hardware
    /// breakpoint. May finish a step on its own.
    fn leave_current(&mut self, step: bool) -> Result<Option<Stop>, RunError> {
        if let Some(held) = self.held.take() {
            if held.presented && step {
                // Stepping the faulting instruction delivers the exception: show the handler.
                self.held = Some(Held {
                    presented: false,
                    ..held
                });
                return Ok(Some(Stop::Stepped));
            }
            let tap = self.tap.as_mut().ok_or(RunError::HeldWithoutTap)?;
            let how = tap.run_displaced(&self.vcpu, &self.mem, held.gpa)?;
            return Ok((how == Displaced::Emulated && step).then_some(Stop::Stepped));
        }
        if self.hw.is_empty() && self.tap.as_ref().is_none_or(|t| !t.has_breakpoints()) && !step {
            return Ok(None);
        }
        let regs = self.stopped.regs(&self.vcpu)?;
        if let Some(slot) = self.hw.execute_slot_at(Gva::new(regs.rip)) {
            // Resuming with RF set does not help on every KVM: step past with the slot off.
            self.hw.suspend(slot);
            return Ok(None);
        }
        let sregs = self.stopped.sregs(&self.vcpu)?;
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
                tap.step_over(&self.vcpu, &self.mem, gpa)?;
                Ok(None)
            }
            Hit::NotOurs => Ok(None),
        }
    }

    fn run_loop(&mut self, step: bool) -> Stop {
        let started = Instant::now();
        self.progress.live.loop_started(self.progress.running);
        let remaining = self.config.timeout.saturating_sub(self.progress.running);
        // A step usually ends at its first exit or two, so its watchdog (a thread) is armed
        // only once it has taken more: an instruction KVM retries for ever (a fetch from
        // unbacked memory, say) must still end at the time limit.
        let mut watchdog = (!step).then(|| Watchdog::arm(remaining));
        let stop = self.exits_until_stop(step, &mut watchdog, remaining);
        drop(watchdog);
        self.progress.running += started.elapsed();
        self.progress.live.loop_ended(self.progress.running);
        stop
    }

    fn exits_until_stop(
        &mut self,
        step: bool,
        watchdog: &mut Option<Watchdog>,
        remaining: Duration,
    ) -> Stop {
        let mut ticker: Option<Ticker> = None;
        for exits in 1u32.. {
            if exits == STEP_EXITS_BEFORE_WATCHDOG && watchdog.is_none() {
                *watchdog = Some(Watchdog::arm(remaining));
            }
            self.keep_ticker(&mut ticker, step);
            match self.next_exit(step, watchdog.as_ref()) {
                Ok(None) => {}
                Ok(Some(stop)) => return stop,
                Err(e) => {
                    return Stop::Ended(Ending::HostError {
                        what: e.to_string(),
                    });
                }
            }
        }
        Stop::Ended(Ending::HostError {
            what: format!("the vCPU exited {} times in one resume", u32::MAX),
        })
    }

    /// Run the vCPU to its next exit and act on it; `None` lets the guest go on.
    fn next_exit(
        &mut self,
        step: bool,
        watchdog: Option<&Watchdog>,
    ) -> Result<Option<Stop>, RunError> {
        let before = Before {
            tap_stepping: self.tap.as_ref().is_some_and(Tap::stepping),
            hw_suspended: self.hw.suspended().is_some(),
        };
        let host_stepping =
            step || before.tap_stepping || before.hw_suspended || self.hw.stepping_watches();
        // An interrupt injected before a run that a kick cut short may still be on its way
        // into its handler (whose first instruction is the tap's trap): it is forgotten only
        // once an exit shows the guest ran.
        if !self.progress.kicked {
            self.injected_now = None;
        }
        if let Some(vector) = self.offer_interrupt(host_stepping)? {
            return Ok(Some(Stop::Irq { vector }));
        }
        let event = exits::next_event(&mut self.vcpu, &mut self.devices);
        self.stopped.forget();
        self.progress.exits += 1;
        self.progress.live.exit();
        self.progress.kicked = event == Event::Kicked;
        let debug = match event {
            Event::Ended(Ending::InternalError { suberror: 1, .. }) if self.carry_out()? => {
                return Ok(None);
            }
            Event::Ended(ending) => return Ok(Some(Stop::Ended(ending))),
            Event::Kicked if watchdog.is_some_and(Watchdog::fired) => {
                let limit = self.config.timeout;
                return Ok(Some(Stop::Ended(Ending::Timeout { limit })));
            }
            Event::Debug(debug) => Some(debug),
            _ => None,
        };
        self.after_exit(before.tap_stepping, event.idt_may_have_changed())?;
        let flow = match debug {
            Some(debug) if debug.exception == 1 && self.is_loop_breakpoint(&debug) => {
                if !self.on_loop_delivery()? {
                    // Mapped since: arm its entry and drop the breakpoint, which would
                    // otherwise fire again at the same RIP.
                    if let Some(tap) = &mut self.tap {
                        tap.rearm();
                    }
                    self.after_exit(false, true)?;
                }
                Flow::Go
            }
            Some(debug) if debug.exception == 1 => self.on_single_step(debug, step, before)?,
            Some(debug) => self.on_debug(debug, step)?.map_or(Flow::Go, Flow::Stop),
            None if event == Event::Halted => self.on_halt(step, watchdog)?,
            None => Flow::Go,
        };
        Ok(match flow {
            Flow::Stop(stop) => Some(stop),
            Flow::HostStep => None,
            Flow::Go => self.interrupt_requested().then_some(Stop::Interrupted),
        })
    }

    /// A single-step or hardware-breakpoint exit: gdb's slots, the step that got past a
    /// suspended slot, a watchpoint checked by stepping, gdb's own step, or the tap's.
    fn on_single_step(
        &mut self,
        debug: DebugExit,
        step: bool,
        before: Before,
    ) -> Result<Flow, RunError> {
        if let Some(slot) = self.hw.hit(debug.dr6) {
            return Ok(Flow::Stop(if self.hw.is_watchpoint(slot) {
                Stop::Watchpoint { slot }
            } else {
                Stop::HwBreakpoint { slot }
            }));
        }
        if before.hw_suspended {
            self.hw.unsuspend();
            self.apply_debug(step)?;
        }
        if self.hw.stepping_watches()
            && let Some(slot) = self.stepped_watch_hit()
        {
            return Ok(Flow::Stop(Stop::Watchpoint { slot }));
        }
        if step {
            return Ok(Flow::Stop(Stop::Stepped));
        }
        if before.tap_stepping || before.hw_suspended || self.hw.stepping_watches() {
            return Ok(Flow::HostStep);
        }
        Ok(Flow::Go)
    }

    fn is_loop_breakpoint(&self, debug: &DebugExit) -> bool {
        self.tap
            .as_ref()
            .is_some_and(|tap| tap.loop_breakpoint(debug.dr6, debug.pc))
    }

    /// A `hlt` exit: one of the tap's traps, or the guest halting for good (nothing here
    /// raises an interrupt).
    fn on_halt(&mut self, step: bool, watchdog: Option<&Watchdog>) -> Result<Flow, RunError> {
        match self.on_bios_call()? {
            BiosCall::NotOurs => {}
            // The boot code ran up to its BIOS call: its IVT may have new handlers.
            BiosCall::Served => {
                self.after_exit(false, true)?;
                return Ok(if step {
                    Flow::Stop(Stop::Stepped)
                } else {
                    Flow::Go
                });
            }
            BiosCall::Ends(ending) => return Ok(Flow::Stop(Stop::Ended(ending))),
        }
        Ok(match self.on_hlt(step)? {
            Trap::Handled => Flow::Go,
            Trap::Stop(stop) => Flow::Stop(stop),
            Trap::NotOurs => {
                let interrupts_enabled = self
                    .vcpu
                    .get_regs()
                    .is_ok_and(|r| r.rflags & RFlags::INTERRUPT_FLAG.bits() != 0);
                let wake = if interrupts_enabled {
                    self.wait_for_interrupt(watchdog)
                } else {
                    Wake::Never
                };
                match wake {
                    Wake::Interrupt => Flow::Go,
                    Wake::Never => Flow::Stop(Stop::Ended(Ending::Halted { interrupts_enabled })),
                    Wake::TimedOut => Flow::Stop(Stop::Ended(Ending::Timeout {
                        limit: self.config.timeout,
                    })),
                }
            }
        })
    }

    /// Keep a ticker kicking the vCPU at the PIT's rate while IRQ 0 can reach the guest, so
    /// ticks arrive even when the guest never exits; none while gdb steps.
    fn keep_ticker(&self, ticker: &mut Option<Ticker>, step: bool) {
        let period = self
            .devices
            .pit
            .irq0_period()
            .filter(|_| !step && self.devices.pic.irq_reaches_cpu(0))
            .map(|p| p.max(Ticker::MIN_PERIOD));
        if ticker.as_ref().map(Ticker::period) != period {
            *ticker = period.map(Ticker::arm);
        }
    }

    /// gdb asked for a stop, and the tap is not in the middle of its own step.
    fn interrupt_requested(&self) -> bool {
        !self.tap.as_ref().is_some_and(Tap::stepping)
            && self
                .stop_on
                .interrupt
                .as_ref()
                .is_some_and(|flag| flag.swap(false, Ordering::SeqCst))
    }

    /// Tap work at every exit: end a single-step, and re-check the IDT where it may have
    /// changed.
    fn after_exit(&mut self, stepping: bool, idt_may_have_changed: bool) -> Result<(), RunError> {
        let Some(tap) = &mut self.tap else {
            return Ok(());
        };
        if stepping {
            tap.end_step(&self.vcpu, &self.mem)?;
        }
        if idt_may_have_changed {
            tap.check(&self.vcpu, &self.mem)?;
        }
        Ok(())
    }

    /// A `hlt` exit: one of the tap's traps (RIP is past the one-byte `hlt`), or the guest
    /// halting.
    fn on_hlt(&mut self, step: bool) -> Result<Trap, RunError> {
        let Some(tap) = &self.tap else {
            return Ok(Trap::NotOurs);
        };
        if tap.kind() != TrapKind::Hlt {
            return Ok(Trap::NotOurs);
        }
        let regs = self.stopped.regs(&self.vcpu)?;
        let sregs = self.stopped.sregs(&self.vcpu)?;
        let hit = [regs.rip.wrapping_sub(1), regs.rip]
            .into_iter()
            .map(|at| tap.classify(&self.mem, &sregs, at))
            .find(|hit| *hit != Hit::NotOurs)
            .unwrap_or(Hit::NotOurs);
        self.on_trap(hit, regs, &sregs, step)
    }

    /// A debug exit other than a single-step: an int3 trap of the tap or a breakpoint, or
    /// the guest's own int3, which goes back to the guest as the #BP it would have raised.
    fn on_debug(&mut self, arch: DebugExit, step: bool) -> Result<Option<Stop>, RunError> {
        let sregs = self.vcpu.get_sregs().map_err(kvm("KVM_GET_SREGS"))?;
        let hit = match &self.tap {
            Some(tap) if arch.exception == 3 => tap.classify(&self.mem, &sregs, arch.pc),
            _ => Hit::NotOurs,
        };
        if hit != Hit::NotOurs {
            let regs = self.vcpu.get_regs().map_err(kvm("KVM_GET_REGS"))?;
            return match self.on_trap(hit, regs, &sregs, step)? {
                Trap::Stop(stop) => Ok(Some(stop)),
                _ => Ok(None),
            };
        }
        if arch.exception != 3 {
            return Err(RunError::UnexpectedDebug {
                exception: arch.exception,
                pc: arch.pc,
            });
        }
        let mut events = self
            .vcpu
            .get_vcpu_events()
            .map_err(kvm("KVM_GET_VCPU_EVENTS"))?;
        events.exception.injected = 1;
        events.exception.nr = 3;
        events.exception.has_error_code = 0;
        self.vcpu
            .set_vcpu_events(&events)
            .map_err(RunError::ReinjectBreakpoint)?;
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
    ) -> Result<Trap, RunError> {
        let (gpa, handler, breakpoint) = match hit {
            Hit::NotOurs => return Ok(Trap::NotOurs),
            Hit::Breakpoint { at, .. } => {
                regs.rip = at.raw();
                self.vcpu.set_regs(&regs).map_err(kvm("KVM_SET_REGS"))?;
                return Ok(Trap::Stop(Stop::Breakpoint));
            }
            Hit::Handler {
                gpa,
                handler,
                breakpoint,
            } => (gpa, handler, breakpoint),
        };
        if self.entered_by_interrupt(gpa) {
            let Some(tap) = &mut self.tap else {
                return Ok(Trap::NotOurs);
            };
            regs.rip = handler.raw();
            tap.deliver(&self.vcpu, &self.mem, regs, sregs, gpa)?;
            return Ok(Trap::Handled);
        }
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
        self.core_on_exception(&record, &regs)?;
        let caught = self.stop_on.catch.contains(vector) || self.stop_on.at_seq == Some(seq);
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
            self.vcpu.set_regs(&regs).map_err(kvm("KVM_SET_REGS"))?;
            let frame = record.frame;
            self.held = Some(Held {
                gpa,
                seq,
                presented: caught,
                interrupted: record.regs,
                interrupted_cs: frame.map_or(sregs.cs.selector, |f| f.cs),
                interrupted_ss: frame.map_or(sregs.ss.selector, |f| f.ss),
            });
        } else if let Some(tap) = &mut self.tap {
            tap.deliver(&self.vcpu, &self.mem, regs, sregs, gpa)?;
        }
        self.log_exception(record, sregs);
        Ok(stop.map_or(Trap::Handled, Trap::Stop))
    }
}
