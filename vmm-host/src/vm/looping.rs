//! Deliveries to a handler the CPU cannot fetch, counted as they happen. The tap watches such
//! a handler with a code breakpoint, which fires when a delivery reaches it, before the fetch
//! faults (`doctor`: "breakpoint on an unmapped handler"). The host counts the delivery, then
//! raises what the fetch would have: it sets CR2 and injects the fault, and the CPU delivers
//! it, to the same handler, until a delivery fails and the chain ends in a shutdown.

use super::Vm;
use super::error::RunError;
use crate::addr::Gva;
use crate::delivery::{Loop, Machine, first_exception, origin_of};
use crate::paging::{Cr3, PagingMode};
use kvm_bindings::kvm_sregs;

/// The loop so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveLoop {
    pub handler: Gva,
    pub deliveries: u64,
    /// RSP at the first delivery (its frame) and at the last.
    pub first_frame: Gva,
    pub last_frame: Gva,
    /// RIP and RSP of the exception that started the loop, from the first frame.
    pub origin: Option<(Gva, Gva)>,
}

impl LiveLoop {
    /// As the shutdown's replay reports a loop.
    pub fn as_loop(&self) -> Loop {
        Loop {
            handler: self.handler,
            deliveries: self.deliveries,
            newest: self.last_frame,
            oldest: self.first_frame,
            origin: self.origin,
            stopped: None,
            unreadable: 0,
            live: true,
        }
    }
}

impl Vm {
    /// The tap's breakpoint on an unfetchable handler fired: count the delivery and inject
    /// the fault its fetch raises. False when the fetch would not fault after all (the guest
    /// mapped the handler): the tap is told to look again.
    pub(super) fn on_loop_delivery(&mut self) -> Result<bool, RunError> {
        let regs = self
            .vcpu
            .get_regs()
            .map_err(super::error::kvm("KVM_GET_REGS"))?;
        let mut sregs: kvm_sregs = self
            .vcpu
            .get_sregs()
            .map_err(super::error::kvm("KVM_GET_SREGS"))?;
        let mode = PagingMode::of_vcpu(self.cpu_paging, sregs.cr0, sregs.cr4, sregs.efer);
        let space = self.address_space(mode, Cr3::new(sregs.cr3));
        let machine = Machine {
            space,
            regs: &regs,
            sregs: &sregs,
        };
        // Mapped since the tap armed it: the handler runs; the tap looks again.
        if space.translate(Gva::new(regs.rip)).is_ok() {
            return Ok(false);
        }
        let Ok(raised) = first_exception(&machine) else {
            return Ok(false);
        };
        let frame = Gva::new(regs.rsp);
        let origin = self.live_loop.is_none().then(|| {
            let words = space.read_u64s(frame).ok()?;
            origin_of(&words, u64::from(sregs.cs.selector))
        });
        let state = self.live_loop.get_or_insert(LiveLoop {
            handler: Gva::new(regs.rip),
            deliveries: 0,
            first_frame: frame,
            last_frame: frame,
            origin: origin.flatten(),
        });
        state.deliveries += 1;
        state.last_frame = frame;
        if let Some(cr2) = raised.cr2 {
            sregs.cr2 = cr2;
            self.vcpu
                .set_sregs(&sregs)
                .map_err(super::error::kvm("KVM_SET_SREGS"))?;
        }
        let mut events = self
            .vcpu
            .get_vcpu_events()
            .map_err(super::error::kvm("KVM_GET_VCPU_EVENTS"))?;
        events.exception.injected = 1;
        events.exception.nr = raised.vector;
        events.exception.has_error_code = u8::from(raised.error.is_some());
        events.exception.error_code = raised.error.map_or(0, crate::narrow::low_u32);
        self.vcpu
            .set_vcpu_events(&events)
            .map_err(super::error::kvm("KVM_SET_VCPU_EVENTS"))?;
        self.stopped.forget();
        Ok(true)
    }
}
