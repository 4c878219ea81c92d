//! External interrupts: the PIT's ticks become IRQ 0 at the PIC, and the PIC's vector is
//! injected into the vCPU when it can take one. There is no in-kernel irqchip, so `hlt`
//! still exits to the host (the tap's trap relies on it) and every interrupt the guest sees
//! is one the host chose to give it, counted per vector.

use super::Vm;
use super::error::{RunError, kvm};
use crate::watchdog::Watchdog;
use std::collections::BTreeMap;
use std::time::Duration;

/// The longest a halted guest waits in one go for its next tick; the run loop then looks
/// at the time limit and gdb again.
const MAX_WAIT: Duration = Duration::from_millis(20);

/// Interrupts injected so far, by vector.
pub type InterruptCounts = BTreeMap<u8, u64>;

/// What a halt with interrupts enabled leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wake {
    /// An interrupt is (or will shortly be) there: run the guest again.
    Interrupt,
    /// Nothing can raise an interrupt: the guest is idle for good.
    Never,
    /// The run's time limit passed while waiting.
    TimedOut,
}

impl Vm {
    /// Before each KVM_RUN: raise IRQ 0 for the PIT's ticks, then inject the PIC's next
    /// vector if the vCPU can take it now, or ask KVM to exit as soon as it can. Nothing is
    /// injected while the host single-steps (gdb's step, the tap's displaced instruction).
    /// A vector in `--break-on` is held back for gdb instead (and returned); the next offer
    /// delivers it.
    pub(super) fn offer_interrupt(&mut self, stepping: bool) -> Result<Option<u8>, RunError> {
        if !self.devices.pic.master.initialised {
            return Ok(None);
        }
        let now = self.devices.now();
        if self.devices.pit.take_irq0_edges(now) > 0 {
            self.devices.pic.set_irq(0, true);
            self.devices.pic.set_irq(0, false);
        }
        let pending = (self.held_irq.is_some() || self.devices.pic.has_pending()) && !stepping;
        let run = self.vcpu.get_kvm_run();
        let ready = run.ready_for_interrupt_injection != 0 && run.if_flag != 0;
        run.request_interrupt_window = u8::from(pending && !ready);
        if !(pending && ready) {
            return Ok(None);
        }
        if let Some(vector) = self.held_irq.take() {
            self.inject(vector)?;
            return Ok(None);
        }
        let Some(vector) = self.devices.pic.acknowledge() else {
            return Ok(None);
        };
        if self.stop_on.catch.stops_interrupt(vector) {
            self.held_irq = Some(vector);
            return Ok(Some(vector));
        }
        self.inject(vector)?;
        Ok(None)
    }

    /// Give the vCPU external interrupt `vector`, as the CPU's INTA cycle would.
    fn inject(&mut self, vector: u8) -> Result<(), RunError> {
        let mut events = self.vcpu.get_vcpu_events().map_err(|error| RunError::Kvm {
            ioctl: "KVM_GET_VCPU_EVENTS",
            error,
        })?;
        events.interrupt.injected = 1;
        events.interrupt.nr = vector;
        events.interrupt.soft = 0;
        self.vcpu
            .set_vcpu_events(&events)
            .map_err(kvm("KVM_SET_VCPU_EVENTS"))?;
        *self.interrupts.entry(vector).or_default() += 1;
        self.injected_now = Some(vector);
        Ok(())
    }

    /// Whether the handler the tap just caught was entered by the interrupt injected for
    /// this run of the vCPU (a PIC left at the CPU's exception vectors sends IRQ 0 through
    /// the #DF gate): then it is an interrupt, not that exception.
    pub(super) fn entered_by_interrupt(&self, gpa: crate::addr::Gpa) -> bool {
        match (self.injected_now, &self.tap) {
            (Some(vector), Some(tap)) => tap.handles(gpa, vector),
            _ => false,
        }
    }

    /// The guest halted with interrupts enabled: wait for its next interrupt, if the PIC
    /// and PIT will ever raise one.
    pub(super) fn wait_for_interrupt(&mut self, watchdog: Option<&Watchdog>) -> Wake {
        let pic = &self.devices.pic;
        if pic.has_pending() {
            return Wake::Interrupt;
        }
        let timer_unmasked = pic.irq_reaches_cpu(0);
        let Some(next) = self.devices.pit.next_irq0().filter(|_| timer_unmasked) else {
            return Wake::Never;
        };
        if watchdog.is_some_and(Watchdog::fired) {
            return Wake::TimedOut;
        }
        let wait = next.saturating_sub(self.devices.now()).min(MAX_WAIT);
        std::thread::sleep(wait);
        Wake::Interrupt
    }
}
