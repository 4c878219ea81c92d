//! A core served to gdb (`vmm-host inspect CORE --gdb PORT`): registers, memory by virtual
//! and physical address, and the monitor commands (walk, audit, exceptions, explain) on the
//! guest as it stood when the core was written. It cannot run: continuing or stepping ends
//! the session with the reason. Memory and register writes change the loaded copy only.

use super::debuggable::{Debuggable, Inspect};
use crate::addr::{Gpa, Gva};
use crate::analysis::Diff;
use crate::console::{ConsoleSink, DEFAULT_LIMIT};
use crate::coredump::{Core, inspect};
use crate::devices::Devices;
use crate::ending::Ending;
use crate::exceptions::ExceptionLog;
use crate::paging::{Cr3, PagingMode};
use crate::symbols::Symbolizer;
use crate::virt::{AddressSpace, GuestView};
use crate::vm::{
    DebugError, HwKind, Registers, Resume, Stop, StopOn, read_physical_in, read_virtual_in,
};
use std::collections::BTreeSet;
use vm_memory::Bytes;

/// The guest of a core, for the gdb stub.
#[derive(Debug)]
pub struct CoreTarget {
    core: Core,
    symbols: Option<Symbolizer>,
    regs: Registers,
    exceptions: ExceptionLog,
    devices: Devices,
    stop_on: StopOn,
    breakpoints: BTreeSet<Gva>,
    /// The exception whose handler entry the core was taken at (`--core-on`).
    held: Option<u64>,
}

impl CoreTarget {
    /// The core's guest, its exceptions analysed again as `inspect` analyses them.
    pub fn new(core: Core, symbols: Option<Symbolizer>) -> Result<Self, super::GdbError> {
        let mut exceptions = ExceptionLog::default();
        let active = inspect::analyse_active(&core, symbols.as_ref());
        let held = core
            .note
            .taken
            .starts_with("at exception")
            .then(|| active.last().map(|c| c.record.seq))
            .flatten();
        for captured in active {
            exceptions.push(captured);
        }
        // A sink with no log file cannot fail; the devices are fresh (a core keeps none).
        let console = ConsoleSink::new(false, None, DEFAULT_LIMIT)?;
        let devices = Devices::new(console)?;
        let regs = Registers {
            regs: core.regs,
            sregs: core.sregs,
            fpu: Default::default(),
            kernel_gs_base: 0,
        };
        Ok(Self {
            core,
            symbols,
            regs,
            exceptions,
            devices,
            stop_on: StopOn::default(),
            breakpoints: BTreeSet::new(),
            held,
        })
    }

    fn view(&self) -> GuestView<'_> {
        GuestView::new(&self.core.mem, None)
    }

    fn space(&self) -> Option<AddressSpace<'_>> {
        let s = &self.regs.sregs;
        let mode = PagingMode::of_vcpu(self.core.note.paging, s.cr0, s.cr4, s.efer);
        mode.enabled().then(|| AddressSpace {
            view: self.view(),
            mode,
            cr3: Cr3::new(s.cr3),
        })
    }
}

impl Debuggable for CoreTarget {
    fn registers(&self) -> Result<Registers, DebugError> {
        Ok(self.regs.clone())
    }
    fn set_registers(&mut self, new: &Registers) -> Result<(), DebugError> {
        self.regs = new.clone();
        Ok(())
    }
    fn read_virtual(&self, at: Gva, buf: &mut [u8]) -> Result<usize, DebugError> {
        read_virtual_in(self.space().as_ref(), &self.view(), at, buf)
    }
    fn read_physical(&self, at: Gpa, buf: &mut [u8]) -> Result<usize, DebugError> {
        read_physical_in(&self.view(), at, buf)
    }
    fn write_virtual(&mut self, at: Gva, data: &[u8]) -> Result<(), DebugError> {
        let gpa = match self.space() {
            Some(space) => space.translate(at)?,
            None => Gpa::new(at.raw()),
        };
        self.write_physical(gpa, data)
    }
    fn write_physical(&mut self, at: Gpa, data: &[u8]) -> Result<(), DebugError> {
        (self.core.mem)
            .write_slice(data, at.guest_address())
            .map_err(|_| DebugError::NotRam(at))
    }
    fn add_breakpoint(&mut self, at: Gva) -> Result<(), DebugError> {
        self.breakpoints.insert(at);
        Ok(())
    }
    fn remove_breakpoint(&mut self, at: Gva) -> bool {
        self.breakpoints.remove(&at)
    }
    fn add_hw(&mut self, _: HwKind, _: Gva, _: u64) -> bool {
        false
    }
    fn remove_hw(&mut self, _: HwKind, _: Gva) -> bool {
        false
    }
    fn hw_slot(&self, _: usize) -> Option<(HwKind, Gva)> {
        None
    }
    fn resume(&mut self, _: Resume) -> Stop {
        let what = format!(
            "{} is a core: the guest as it stood cannot run on; rerun the kernel to go on",
            self.core.path.display()
        );
        // gdb shows only a signal: the reason goes to the terminal vmm-host runs in.
        eprintln!("gdb: {what}");
        Stop::Ended(Ending::HostError { what })
    }
    fn stop_on(&mut self) -> &mut StopOn {
        &mut self.stop_on
    }
    fn clear_debug_state(&mut self) {
        self.breakpoints.clear();
    }
    fn kill(&mut self) {}
    fn vcpu_count(&self) -> usize {
        1
    }
    fn tap_enabled(&self) -> bool {
        true
    }
}

impl Inspect for CoreTarget {
    fn current_space(&self) -> Result<Option<AddressSpace<'_>>, DebugError> {
        Ok(self.space())
    }
    fn ram_regions(&self) -> &[(Gpa, u64)] {
        &self.core.ram
    }
    fn symbol(&self, at: Gva) -> Option<String> {
        Some(self.symbols.as_ref()?.locate(at.raw())?.to_string())
    }
    fn held_exception(&self) -> Option<u64> {
        self.held
    }
    fn exceptions(&self) -> &ExceptionLog {
        &self.exceptions
    }
    fn diff_since_last_exception(&self) -> Option<(u64, Diff)> {
        None
    }
    fn devices(&self) -> &Devices {
        &self.devices
    }
    fn waiting(&self) -> &'static str {
        "the core is served as the guest stood when it was written (it cannot run on)"
    }
}
