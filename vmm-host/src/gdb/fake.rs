//! A fake VM for the gdb stub's unit tests: 768 KiB of RAM at physical 0 (the VGA text buffer
//! at 0xB8000 included), code in its first 64 KiB, paging off, and a
//! CPU that knows three instructions. Enough to check what the stub says about registers,
//! memory, breakpoints, steps and stops, with no `/dev/kvm`.
//!
//! Its CPU: `hlt` (0xf4) ends the run as a halt; `ud2` (0x0f 0x0b) raises #UD, which stops
//! before its handler when gdb catches it and otherwise ends the run as a triple fault
//! (there is no IDT); every other byte is a one-byte instruction.

use super::debuggable::{Debuggable, Inspect};
use crate::addr::{Gpa, Gva};
use crate::analysis::Diff;
use crate::console::{ConsoleSink, DEFAULT_LIMIT};
use crate::devices::{Clock, Devices};
use crate::ending::Ending;
use crate::exceptions::ExceptionLog;
use crate::virt::AddressSpace;
use crate::vm::{DebugError, HwKind, Registers, Resume, Stop, StopOn};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use x86_64::registers::rflags::RFlags;

pub const RAM: u64 = 0xc_0000;
/// The code (no-ops up to a `hlt`) ends here.
const CODE_END: u64 = 0x1_0000;
/// Where the fake's code starts.
pub const ENTRY: u64 = 0x1000;
/// Instructions a `continue` runs before it gives up (a run the test did not bound).
const FUEL: u32 = 100_000;

#[derive(Debug)]
pub struct FakeVm {
    mem: GuestMemoryMmap,
    ram: Vec<(Gpa, u64)>,
    regs: Registers,
    breakpoints: BTreeSet<Gva>,
    hw: [Option<(HwKind, Gva)>; 4],
    stop_on: StopOn,
    exceptions: ExceptionLog,
    ended: Option<Ending>,
    exceptions_raised: u64,
    /// gdb detached and the stub cleared its breakpoints.
    pub cleared: bool,
    /// Reading registers fails, as it would if KVM refused.
    pub registers_broken: bool,
    /// The PC's devices, on a clock stopped at zero.
    pub devices: Devices,
}

impl FakeVm {
    /// The same machine running 32-bit code (EFER.LMA clear), as kernel32 does.
    pub fn protected_mode(mut self) -> Self {
        self.regs.sregs.efer = 0;
        self
    }
}

impl FakeVm {
    /// RAM of one-byte instructions from [`ENTRY`] on, ending in `hlt` at `halt_at`.
    pub fn new(halt_at: u64) -> Self {
        let mem =
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), crate::narrow::to_usize(RAM))])
                .expect("768 KiB of anonymous memory");
        mem.write_slice(
            &vec![0x90; crate::narrow::to_usize(CODE_END - ENTRY)],
            GuestAddress(ENTRY),
        )
        .expect("in RAM");
        mem.write_obj(0xf4u8, GuestAddress(halt_at))
            .expect("in RAM");
        let mut regs = Registers::default();
        regs.regs.rip = ENTRY;
        regs.regs.rsp = 0x8000;
        regs.regs.rflags = 0x2;
        regs.sregs.cr0 = 0x11;
        // EFER.LMA|LME: gdb gets the x86-64 layout, as with guest-kernel.
        regs.sregs.efer = 0x500;
        regs.sregs.cs.selector = 0x8;
        Self {
            mem,
            ram: vec![(Gpa::new(0), RAM)],
            regs,
            breakpoints: BTreeSet::new(),
            hw: [None; 4],
            stop_on: StopOn::default(),
            exceptions: ExceptionLog::default(),
            ended: None,
            exceptions_raised: 0,
            cleared: false,
            registers_broken: false,
            devices: {
                let console = ConsoleSink::new(false, None, DEFAULT_LIMIT).expect("no log file");
                let mut devices = Devices::new(console).expect("the standard ports");
                devices.set_clock(Clock::Fixed(std::time::Duration::ZERO));
                devices
            },
        }
    }

    pub fn byte(&self, at: u64) -> Option<u8> {
        self.mem.read_obj(GuestAddress(at)).ok()
    }

    pub fn ended(&self) -> Option<&Ending> {
        self.ended.as_ref()
    }

    pub fn breakpoints(&self) -> usize {
        self.breakpoints.len() + self.hw.iter().flatten().count()
    }

    /// Run the instruction at RIP; a stop it causes.
    fn execute(&mut self) -> Option<Stop> {
        let rip = self.regs.regs.rip;
        match (self.byte(rip), self.byte(rip.wrapping_add(1))) {
            (None, _) => Some(self.end(Ending::TripleFault)),
            (Some(0xf4), _) => {
                let interrupts_enabled = self.regs.regs.rflags & RFlags::INTERRUPT_FLAG.bits() != 0;
                Some(self.end(Ending::Halted { interrupts_enabled }))
            }
            (Some(0x0f), Some(0x0b)) if self.stop_on.catch.contains(6) => {
                self.exceptions_raised += 1;
                Some(Stop::Exception {
                    seq: self.exceptions_raised,
                    vector: 6,
                })
            }
            (Some(0x0f), Some(0x0b)) => Some(self.end(Ending::TripleFault)),
            (Some(_), _) => {
                self.regs.regs.rip = rip.wrapping_add(1);
                None
            }
        }
    }

    fn end(&mut self, ending: Ending) -> Stop {
        self.ended = Some(ending.clone());
        Stop::Ended(ending)
    }

    /// A breakpoint of gdb's at RIP.
    fn breakpoint_here(&self) -> Option<Stop> {
        let rip = Gva::new(self.regs.regs.rip);
        if self.breakpoints.contains(&rip) {
            return Some(Stop::Breakpoint);
        }
        let slot = self
            .hw
            .iter()
            .position(|s| *s == Some((HwKind::Execute, rip)))?;
        Some(Stop::HwBreakpoint { slot })
    }
}

impl Debuggable for FakeVm {
    fn registers(&self) -> Result<Registers, DebugError> {
        if self.registers_broken {
            return Err(DebugError::Kvm {
                what: "read registers",
                error: kvm_ioctls::Error::new(libc::EIO),
            });
        }
        Ok(self.regs.clone())
    }

    fn set_registers(&mut self, new: &Registers) -> Result<(), DebugError> {
        self.regs = new.clone();
        Ok(())
    }

    fn read_virtual(&self, at: Gva, buf: &mut [u8]) -> Result<usize, DebugError> {
        self.read_physical(Gpa::new(at.raw()), buf)
    }

    fn read_physical(&self, at: Gpa, buf: &mut [u8]) -> Result<usize, DebugError> {
        let readable = RAM.saturating_sub(at.raw()).min(buf.len() as u64) as usize;
        if readable == 0 && !buf.is_empty() {
            return Err(DebugError::NotRam(at));
        }
        self.mem
            .read_slice(&mut buf[..readable], at.guest_address())
            .map_err(|_| DebugError::NotRam(at))?;
        Ok(readable)
    }

    fn write_virtual(&mut self, at: Gva, data: &[u8]) -> Result<(), DebugError> {
        self.write_physical(Gpa::new(at.raw()), data)
    }

    fn write_physical(&mut self, at: Gpa, data: &[u8]) -> Result<(), DebugError> {
        self.mem
            .write_slice(data, at.guest_address())
            .map_err(|_| DebugError::NotRam(at))
    }

    fn add_breakpoint(&mut self, at: Gva) -> Result<(), DebugError> {
        if at.raw() >= RAM {
            return Err(DebugError::NotRam(Gpa::new(at.raw())));
        }
        self.breakpoints.insert(at);
        Ok(())
    }

    fn remove_breakpoint(&mut self, at: Gva) -> bool {
        self.breakpoints.remove(&at)
    }

    fn add_hw(&mut self, kind: HwKind, at: Gva, len: u64) -> bool {
        let watchable = matches!(len, 1 | 2 | 4 | 8) && at.raw().is_multiple_of(len);
        match self.hw.iter_mut().find(|s| s.is_none()) {
            Some(slot) if watchable => {
                *slot = Some((kind, at));
                true
            }
            _ => false,
        }
    }

    fn remove_hw(&mut self, kind: HwKind, at: Gva) -> bool {
        match self.hw.iter_mut().find(|s| **s == Some((kind, at))) {
            Some(slot) => {
                *slot = None;
                true
            }
            None => false,
        }
    }

    fn hw_slot(&self, slot: usize) -> Option<(HwKind, Gva)> {
        *self.hw.get(slot)?
    }

    fn resume(&mut self, mode: Resume) -> Stop {
        if let Some(ending) = &self.ended {
            return Stop::Ended(ending.clone());
        }
        if mode == Resume::Step {
            return self.execute().unwrap_or(Stop::Stepped);
        }
        for _ in 0..FUEL {
            if let Some(stop) = self.execute().or_else(|| self.breakpoint_here()) {
                return stop;
            }
            let interrupt = self.stop_on.interrupt.as_ref();
            if interrupt.is_some_and(|flag| flag.swap(false, Ordering::SeqCst)) {
                return Stop::Interrupted;
            }
        }
        let limit = std::time::Duration::from_secs(1);
        self.end(Ending::Timeout { limit })
    }

    fn stop_on(&mut self) -> &mut StopOn {
        &mut self.stop_on
    }

    fn clear_debug_state(&mut self) {
        self.breakpoints.clear();
        self.hw = [None; 4];
        self.cleared = true;
    }

    fn kill(&mut self) {
        self.ended.get_or_insert(Ending::Killed);
    }

    fn vcpu_count(&self) -> usize {
        1
    }

    fn tap_enabled(&self) -> bool {
        true
    }
}

impl Inspect for FakeVm {
    fn current_space(&self) -> Result<Option<AddressSpace<'_>>, DebugError> {
        Ok(None)
    }

    fn ram_regions(&self) -> &[(Gpa, u64)] {
        &self.ram
    }

    fn symbol(&self, at: Gva) -> Option<String> {
        (ENTRY..RAM)
            .contains(&at.raw())
            .then(|| format!("fake_code+{:#x}", at.raw() - ENTRY))
    }

    fn held_exception(&self) -> Option<u64> {
        None
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
}
