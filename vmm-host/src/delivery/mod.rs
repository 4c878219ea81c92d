//! Exception delivery replayed on the host: when the CPU shut down (a triple fault), the
//! exceptions it tried to deliver never reached a handler, so the tap saw none of them. From
//! the state KVM reports (the instruction that raised the first exception, its RSP, CR2, CR3,
//! IDTR, GDTR, TR and the TSS), this module finds the first exception and replays each
//! delivery as the CPU makes it (Intel SDM vol. 3 §6.12–6.14, 64-bit mode): the gate against
//! the IDT limit, its type and present bit, the code segment, the stack (IST, TSS.RSP0 or the
//! current one) and each push, as supervisor accesses through the guest's own page tables.
//! The first check that fails raises the next exception; the double-fault rules
//! ([`rules`]) decide whether it is delivered, becomes a #DF, or shuts the CPU down.

mod first;
mod long_mode;
mod protected;
pub mod rules;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests32;
mod unwind;

pub use first::first_exception;
pub use unwind::{Loop, origin_of};

use crate::addr::Gva;
use crate::virt::AddressSpace;
use abi::exception::mnemonic;
use kvm_bindings::{kvm_regs, kvm_sregs};
use std::fmt;

/// The machine as KVM reported it when the CPU shut down.
#[derive(Debug, Clone, Copy)]
pub struct Machine<'a> {
    /// Guest memory through the tables under the final CR3.
    pub space: AddressSpace<'a>,
    pub regs: &'a kvm_regs,
    pub sregs: &'a kvm_sregs,
}

impl Machine<'_> {
    pub fn cpl(&self) -> u8 {
        self.sregs.cs.dpl & 3
    }

    /// EFER.LMA: 64-bit delivery (16-byte gates, IST, 8-byte pushes).
    pub fn long_mode(&self) -> bool {
        use x86_64::registers::model_specific::EferFlags;
        self.sregs.efer & EferFlags::LONG_MODE_ACTIVE.bits() != 0
    }
}

/// An exception the CPU raised, and what raised it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raised {
    pub vector: u8,
    pub error: Option<u64>,
    /// The faulting address, for a page fault.
    pub cr2: Option<u64>,
    /// Why: "`call …` pushes its return address at 0x329f18: the PTE is not present".
    pub why: String,
}

impl Raised {
    pub fn new(vector: u8, error: Option<u64>, why: impl Into<String>) -> Self {
        Self {
            vector,
            error,
            cr2: None,
            why: why.into(),
        }
    }

    pub fn page_fault(error: u64, at: Gva, why: impl Into<String>) -> Self {
        Self {
            vector: 14,
            error: Some(error),
            cr2: Some(at.raw()),
            why: why.into(),
        }
    }
}

impl fmt::Display for Raised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", mnemonic(self.vector))?;
        if let Some(error) = self.error {
            write!(f, " error {error:#x}")?;
        }
        if let Some(cr2) = self.cr2 {
            write!(f, " CR2 {cr2:#x}")?;
        }
        Ok(())
    }
}

/// A delivery that reached its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub handler: Gva,
    /// RSP at the handler: the frame's lowest byte.
    pub frame: Gva,
}

/// One delivery the CPU attempted: the exception, and what delivering it raised, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub exception: Raised,
    /// `Ok`: the handler was reached. `Err`: the exception the delivery raised.
    pub outcome: Result<Delivered, Raised>,
}

/// Each delivery the CPU attempted, in order: one per `v=` line of QEMU's `-d int` log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub attempts: Vec<Attempt>,
    /// The loop of deliveries to a handler the CPU could not run that came before them, and
    /// the exception that started it.
    pub before: Option<(Loop, Option<Raised>)>,
}

impl Chain {
    /// Whether the double-fault rules end the chain in a shutdown, as KVM reported. `false`
    /// means a handler was reached, or the replay gave up: the final state is not the one
    /// the first exception was raised in.
    pub fn shuts_down(&self) -> bool {
        self.attempts
            .last()
            .is_some_and(|last| match &last.outcome {
                Ok(_) => false,
                Err(raised) => {
                    rules::combine(last.exception.vector, raised.vector) == rules::Next::Shutdown
                }
            })
    }
}

impl Chain {
    /// Every exception in order: each one the CPU tried to deliver, then what the last
    /// delivery raised, if it failed.
    pub fn entries(&self) -> Vec<&Raised> {
        let mut entries: Vec<&Raised> = self.attempts.iter().map(|a| &a.exception).collect();
        if let Some(Err(last)) = self.attempts.last().map(|a| &a.outcome) {
            entries.push(last);
        }
        entries
    }

    /// The exceptions in order, "#PF → #DF → #PF".
    pub fn summary(&self) -> String {
        let names: Vec<&str> = (self.entries().iter())
            .map(|e| mnemonic(e.vector))
            .collect();
        names.join(" → ")
    }

    /// What started it and what stopped the CPU, in one sentence, with the usual remedy when
    /// the chain is a known kind.
    pub fn cause(&self) -> String {
        let (Some(first), Some(last)) = (self.attempts.first(), self.attempts.last()) else {
            return String::new();
        };
        let mut text = first.exception.why.clone();
        if let Err(raised) = &last.outcome {
            text.push_str(&format!(
                "; delivering {} then raised {}: {}",
                mnemonic(last.exception.vector),
                mnemonic(raised.vector),
                raised.why
            ));
            if last.exception.vector == 8 && raised.why.contains("on the current stack") {
                text.push_str(
                    " — #DF runs on the stack that failed (no IST): give it an IST stack in the TSS",
                );
            }
        }
        text
    }
}

/// Deliveries after which the replay stops: a chain is two deliveries long at most (the
/// exception, then #DF), plus benign exceptions handed on before them.
const MAX_ATTEMPTS: usize = 8;

/// The chain that ended in the shutdown `machine` shows: its first exception, then every
/// delivery. An error says why it cannot be replayed.
pub fn replay_shutdown(machine: &Machine) -> Result<Chain, String> {
    if machine.sregs.cr0 & 1 == 0 {
        return Err(format!(
            "the replay covers protected and long mode; this CPU was in real mode (CR0 {:#x})",
            machine.sregs.cr0
        ));
    }
    let first = first_exception(machine)?;
    // Raised by fetching the handler of its own vector: the CPU looped, each delivery
    // faulting again at the handler.
    let looped = machine.long_mode()
        && long_mode::gate(machine, &first).is_ok_and(|g| g.handler.raw() == machine.regs.rip);
    let mut chain = replay(machine, first);
    chain.before = looped
        .then(|| unwind::unwind(machine))
        .flatten()
        .map(|found| started(machine, found));
    Ok(chain)
}

/// A loop with the exception that started it, found from the instruction at its origin.
pub fn started(machine: &Machine, found: Loop) -> (Loop, Option<Raised>) {
    let started = found.origin.and_then(|(rip, rsp)| {
        let regs = kvm_bindings::kvm_regs {
            rip: rip.raw(),
            rsp: rsp.raw(),
            ..*machine.regs
        };
        first_exception(&Machine {
            regs: &regs,
            ..*machine
        })
        .ok()
    });
    (found, started)
}

/// Replay the delivery of `first` and of every exception it leads to.
pub fn replay(machine: &Machine, first: Raised) -> Chain {
    let mut attempts: Vec<Attempt> = vec![];
    let mut current = first;
    while attempts.len() < MAX_ATTEMPTS {
        let outcome = if machine.long_mode() {
            long_mode::deliver(machine, &current)
        } else {
            protected::deliver(machine, &current)
        };
        let next = match &outcome {
            Ok(_) => None,
            Err(failed) => match rules::combine(current.vector, failed.vector) {
                rules::Next::Second => Some(failed.clone()),
                rules::Next::Shutdown => None,
                rules::Next::DoubleFault => Some(Raised::new(
                    8,
                    Some(0),
                    format!(
                        "{} while delivering {} ({} then {}: a double fault)",
                        mnemonic(failed.vector),
                        mnemonic(current.vector),
                        class_name(current.vector),
                        class_name(failed.vector),
                    ),
                )),
            },
        };
        attempts.push(Attempt {
            exception: current,
            outcome,
        });
        match next {
            Some(next) => current = next,
            None => break,
        }
    }
    Chain {
        attempts,
        before: None,
    }
}

fn class_name(vector: u8) -> &'static str {
    match rules::Class::of(vector) {
        rules::Class::Benign => "benign",
        rules::Class::Contributory => "contributory",
        rules::Class::PageFault => "page fault",
        rules::Class::DoubleFault => "#DF",
    }
}

impl fmt::Display for Loop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.deliveries == 0 {
            write!(
                f,
                "the CPU looped, each delivery to the handler at {} faulting again at its fetch, each frame below the last, until the stack reached {}",
                self.handler, self.newest
            )?;
            if let Some(why) = &self.stopped {
                write!(f, "; the frames cannot be read back: {why}")?;
            }
            return Ok(());
        }
        write!(
            f,
            "{} deliveries to the handler at {}, which the CPU cannot run{}, each frame below the last: the stack ran from {} down to {}",
            self.deliveries,
            self.handler,
            if self.live {
                " (counted as they came, a breakpoint on it)"
            } else {
                ""
            },
            self.oldest,
            self.newest
        )?;
        if self.unreadable > 0 {
            write!(
                f,
                " ({} of the frames on pages the tables no longer map, counted 48 bytes apart)",
                self.unreadable
            )?;
        }
        match (&self.origin, &self.stopped) {
            (Some((rip, rsp)), _) => write!(
                f,
                "; the first exception was raised at rip {rip} (RSP {rsp})"
            ),
            (None, Some(why)) => write!(f, "; the walk back stopped there: {why}"),
            (None, None) => Ok(()),
        }
    }
}

impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((found, started)) = &self.before {
            writeln!(f, "  before them: {found}")?;
            if let Some(e) = started {
                writeln!(f, "  the loop began with {e}: {}", e.why)?;
            }
        }
        for (n, attempt) in (1..).zip(&self.attempts) {
            let e = &attempt.exception;
            writeln!(f, "  [{n}] {e}: {}", e.why)?;
            match &attempt.outcome {
                Ok(d) => writeln!(
                    f,
                    "      delivered: handler {}, frame at {}",
                    d.handler, d.frame
                )?,
                Err(raised) => writeln!(f, "      delivering it raised {raised}: {}", raised.why)?,
            }
        }
        if self.shuts_down() {
            writeln!(
                f,
                "  a fault while delivering #DF: the CPU shuts down (triple fault)"
            )?;
        } else if self.attempts.last().is_some_and(|a| a.outcome.is_ok()) {
            writeln!(
                f,
                "  the replay reached a handler, yet KVM reported a shutdown: the final state is not the one the first exception was raised in"
            )?;
        }
        Ok(())
    }
}
