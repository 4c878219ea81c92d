//! The narrow seam between the gdb stub and what it debugs: a VM, or in unit tests a fake
//! one. [`Debuggable`] is what the remote protocol needs (registers, memory by virtual and
//! physical address, breakpoints, watchpoints, resume and step, stop reasons); [`Inspect`]
//! adds what the monitor commands show (page tables, exceptions, symbols).

use crate::addr::{Gpa, Gva};
use crate::analysis::Diff;
use crate::devices::Devices;
use crate::exceptions::ExceptionLog;
use crate::virt::AddressSpace;
use crate::vm::{DebugError, HwKind, Registers, Resume, Stop, StopOn, Vm};
use kvm_bindings::kvm_regs;

/// What the gdb stub reads, changes and runs.
pub trait Debuggable {
    /// The registers as gdb should see them (at a caught exception: the interrupted code's).
    fn registers(&self) -> Result<Registers, DebugError>;
    /// Just the general-purpose registers and RIP, for stop replies.
    fn general_registers(&self) -> Result<kvm_regs, DebugError> {
        self.registers().map(|r| r.regs)
    }
    fn set_registers(&mut self, new: &Registers) -> Result<(), DebugError>;

    /// How many bytes from `at` could be read; an unreadable first byte is an error.
    fn read_virtual(&self, at: Gva, buf: &mut [u8]) -> Result<usize, DebugError>;
    fn read_physical(&self, at: Gpa, buf: &mut [u8]) -> Result<usize, DebugError>;
    fn write_virtual(&mut self, at: Gva, data: &[u8]) -> Result<(), DebugError>;
    fn write_physical(&mut self, at: Gpa, data: &[u8]) -> Result<(), DebugError>;

    fn add_breakpoint(&mut self, at: Gva) -> Result<(), DebugError>;
    /// False when no breakpoint was there.
    fn remove_breakpoint(&mut self, at: Gva) -> bool;
    /// Take a debug register; false when none is free or the range cannot be watched.
    fn add_hw(&mut self, kind: HwKind, at: Gva, len: u64) -> bool;
    fn remove_hw(&mut self, kind: HwKind, at: Gva) -> bool;
    /// What debug register `slot` watches.
    fn hw_slot(&self, slot: usize) -> Option<(HwKind, Gva)>;

    /// Let the guest go until something stops it.
    fn resume(&mut self, mode: Resume) -> Stop;
    /// What stops the guest besides the end of the run.
    fn stop_on(&mut self) -> &mut StopOn;
    /// gdb has gone: remove its breakpoints and debug registers.
    fn clear_debug_state(&mut self);
    /// End the run at gdb's request.
    fn kill(&mut self);
    fn vcpu_count(&self) -> usize;
    /// Breakpoints and exception stops need the tap.
    fn tap_enabled(&self) -> bool;
}

/// What the monitor commands show besides registers and memory.
pub trait Inspect: Debuggable {
    /// The address space the vCPU is in; `None` while paging is off.
    fn current_space(&self) -> Result<Option<AddressSpace<'_>>, DebugError>;
    fn ram_regions(&self) -> &[(Gpa, u64)];
    /// The kernel function (and file:line) at `at`, from its symbols.
    fn symbol(&self, at: Gva) -> Option<String>;
    /// The exception gdb is being shown before its handler, if any.
    fn held_exception(&self) -> Option<u64>;
    fn exceptions(&self) -> &ExceptionLog;
    /// Page-table entries on the last exception's walk that changed since.
    fn diff_since_last_exception(&self) -> Option<(u64, Diff)>;
    /// The emulated devices (PIC, PIT, …).
    fn devices(&self) -> &Devices;
    /// What waits for gdb to connect, in words.
    fn waiting(&self) -> &'static str {
        "the guest waits at its first instruction"
    }
}

impl Debuggable for Vm {
    fn registers(&self) -> Result<Registers, DebugError> {
        Vm::registers(self)
    }
    fn general_registers(&self) -> Result<kvm_regs, DebugError> {
        Vm::general_registers(self)
    }
    fn set_registers(&mut self, new: &Registers) -> Result<(), DebugError> {
        Vm::set_registers(self, new)
    }
    fn read_virtual(&self, at: Gva, buf: &mut [u8]) -> Result<usize, DebugError> {
        Vm::read_virtual(self, at, buf)
    }
    fn read_physical(&self, at: Gpa, buf: &mut [u8]) -> Result<usize, DebugError> {
        Vm::read_physical(self, at, buf)
    }
    fn write_virtual(&mut self, at: Gva, data: &[u8]) -> Result<(), DebugError> {
        Vm::write_virtual(self, at, data)
    }
    fn write_physical(&mut self, at: Gpa, data: &[u8]) -> Result<(), DebugError> {
        Vm::write_physical(self, at, data)
    }
    fn add_breakpoint(&mut self, at: Gva) -> Result<(), DebugError> {
        Vm::add_breakpoint(self, at)
    }
    fn remove_breakpoint(&mut self, at: Gva) -> bool {
        Vm::remove_breakpoint(self, at)
    }
    fn add_hw(&mut self, kind: HwKind, at: Gva, len: u64) -> bool {
        Vm::add_hw(self, kind, at, len)
    }
    fn remove_hw(&mut self, kind: HwKind, at: Gva) -> bool {
        Vm::remove_hw(self, kind, at)
    }
    fn hw_slot(&self, slot: usize) -> Option<(HwKind, Gva)> {
        Vm::hw_slot(self, slot)
    }
    fn resume(&mut self, mode: Resume) -> Stop {
        Vm::resume(self, mode)
    }
    fn stop_on(&mut self) -> &mut StopOn {
        &mut self.stop_on
    }
    fn clear_debug_state(&mut self) {
        Vm::clear_debug_state(self)
    }
    fn kill(&mut self) {
        Vm::kill(self)
    }
    fn vcpu_count(&self) -> usize {
        Vm::vcpu_count(self)
    }
    fn tap_enabled(&self) -> bool {
        Vm::tap_enabled(self)
    }
}

impl Inspect for Vm {
    fn current_space(&self) -> Result<Option<AddressSpace<'_>>, DebugError> {
        Vm::current_space(self)
    }
    fn ram_regions(&self) -> &[(Gpa, u64)] {
        Vm::ram_regions(self)
    }
    fn symbol(&self, at: Gva) -> Option<String> {
        Vm::symbol(self, at)
    }
    fn held_exception(&self) -> Option<u64> {
        Vm::held_exception(self)
    }
    fn exceptions(&self) -> &ExceptionLog {
        Vm::exceptions(self)
    }
    fn diff_since_last_exception(&self) -> Option<(u64, Diff)> {
        Vm::diff_since_last_exception(self)
    }
    fn devices(&self) -> &Devices {
        Vm::devices(self)
    }
}
