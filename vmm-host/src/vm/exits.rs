//! One vCPU exit, served: port and MMIO accesses go to the devices, and what the run loop
//! must act on comes back as an [`Event`]. A free function over [`Vcpu`], so it is tested
//! with scripted exits and no `/dev/kvm`.

use super::vcpu::{DebugExit, Exit, Vcpu};
use crate::devices::{Devices, PortWrite};
use crate::ending::Ending;

/// What an exit leaves for the run loop once the devices have served it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A port or MMIO access, served.
    Served,
    Halted,
    Debug(DebugExit),
    /// A signal kicked the vCPU out (the watchdog, the timer or gdb's interrupt).
    Kicked,
    /// The vCPU can take the interrupt waiting for it.
    InterruptWindow,
    Ended(Ending),
}

impl Event {
    /// Exits after which the tap re-checks the IDT: the guest ran its own code since the
    /// last look. Halt and debug exits are the tap's own traps, examined on their own path.
    pub fn idt_may_have_changed(&self) -> bool {
        matches!(self, Self::Served | Self::Kicked | Self::InterruptWindow)
    }
}

/// Run the vCPU to its next exit and serve it.
pub fn next_event(vcpu: &mut impl Vcpu, devices: &mut Devices) -> Event {
    match vcpu.run() {
        Exit::PortOut { port, size, .. } => port_out(vcpu.exit_data(), port, size, devices),
        Exit::PortIn { port, size, .. } => {
            // `rep insb` reads the same port(s) again for every element.
            for access in vcpu.exit_data().chunks_mut(usize::from(size).max(1)) {
                devices.port_read(port, access);
            }
            Event::Served
        }
        Exit::MmioRead { gpa, .. } => {
            devices.mmio_read(gpa, vcpu.exit_data());
            Event::Served
        }
        Exit::MmioWrite { gpa, .. } => {
            devices.mmio_write(gpa, vcpu.exit_data());
            Event::Served
        }
        Exit::Hlt => Event::Halted,
        Exit::Debug(debug) => Event::Debug(debug),
        Exit::Kicked => Event::Kicked,
        Exit::InterruptWindow => Event::InterruptWindow,
        Exit::Shutdown => Event::Ended(Ending::TripleFault),
        Exit::FailEntry { reason, cpu } => Event::Ended(Ending::EntryFailure { reason, cpu }),
        Exit::InternalError { suberror, data } => {
            Event::Ended(Ending::InternalError { suberror, data })
        }
        Exit::Unexpected(what) => Event::Ended(Ending::HostError {
            what: format!("unexpected VM exit {what}"),
        }),
        Exit::Failed(error) => Event::Ended(Ending::HostError {
            what: format!("KVM_RUN failed: {error}"),
        }),
    }
}

/// `out` or `rep outs`: KVM may hand over up to a page of bytes in one exit; each access of
/// `size` bytes writes the same port(s) again, so `rep outsb` to THR sends every byte.
fn port_out(data: &[u8], port: u16, size: u8, devices: &mut Devices) -> Event {
    for access in data.chunks(usize::from(size).max(1)) {
        match devices.port_write(port, access) {
            PortWrite::Done => {}
            PortWrite::Exit { code } => return Event::Ended(Ending::GuestExit { code }),
            PortWrite::Reset(by) => {
                return Event::Ended(Ending::Reset { how: by.describe() });
            }
        }
    }
    Event::Served
}

#[cfg(test)]
mod tests;
