//! What a debugger reads and changes while the guest stands: registers (the interrupted
//! context at a caught exception), memory by virtual or physical address, software
//! breakpoints planted like the tap's traps, and hardware breakpoints in DR0–DR3.

use super::Vm;
use super::error::RunError;
use super::stopped::{MSR_KERNEL_GS_BASE, ReadError};
use crate::addr::{Gpa, Gva};
use crate::paging::{Cr3, PagingMode};
use crate::tap::TapError;
use crate::virt::{AddressSpace, GuestView, HostBytes, VirtError};
use kvm_bindings::{
    KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP, Msrs, kvm_fpu,
    kvm_guest_debug, kvm_msr_entry, kvm_regs, kvm_sregs,
};
use std::collections::BTreeMap;
use x86_64::registers::control::Cr0Flags;

#[derive(Debug, thiserror::Error)]
pub enum DebugError {
    #[error("could not {what}: {error}")]
    Kvm {
        what: &'static str,
        error: kvm_ioctls::Error,
    },
    #[error(transparent)]
    Virt(#[from] VirtError),
    #[error("physical {0} is not guest RAM")]
    NotRam(Gpa),
    #[error("breakpoints and exception stops need the tap: run without --no-tap")]
    NoTap,
    #[error(
        "the exception came from ring {ring} while its handler runs in ring {handler_ring}: registers cannot be rewound to before it; `stepi` into the handler first"
    )]
    CannotRewind { ring: u8, handler_ring: u8 },
    #[error(transparent)]
    Tap(#[from] TapError),
}

impl From<ReadError> for DebugError {
    fn from(e: ReadError) -> Self {
        Self::Kvm {
            what: e.what,
            error: e.error,
        }
    }
}

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> DebugError {
    move |error| DebugError::Kvm { what, error }
}

/// The vCPU state gdb sees.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Registers {
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub fpu: kvm_fpu,
    pub kernel_gs_base: u64,
}

/// What a debug register watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HwKind {
    Execute,
    Write,
    /// Reads and writes (x86 has no read-only watchpoint).
    Access,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HwSlot {
    kind: HwKind,
    at: Gva,
    len: u64,
    /// Watching by single-step: the value last seen (a write watchpoint), or that the
    /// instruction just stepped accesses the range (an access watchpoint).
    seen: Option<u64>,
    accessed: bool,
}

/// DR0–DR3 as gdb set them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct HwSlots {
    slots: [Option<HwSlot>; 4],
    /// A breakpoint switched off for one step, so the guest can leave the address it is at.
    suspended: Option<usize>,
    /// This KVM reports no data breakpoints (nested KVM here): watchpoints are checked by
    /// the host after every single-stepped instruction instead.
    pub watch_by_stepping: bool,
}

impl HwSlots {
    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }

    pub fn suspended(&self) -> Option<usize> {
        self.suspended
    }

    pub fn suspend(&mut self, slot: usize) {
        self.suspended = Some(slot);
    }

    pub fn unsuspend(&mut self) {
        self.suspended = None;
    }

    pub fn execute_slot_at(&self, rip: Gva) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.is_some_and(|s| s.kind == HwKind::Execute && s.at == rip))
    }

    pub fn is_watchpoint(&self, slot: usize) -> bool {
        self.slots
            .get(slot)
            .copied()
            .flatten()
            .is_some_and(|s| s.kind != HwKind::Execute)
    }

    pub fn address(&self, slot: usize) -> Option<(HwKind, Gva)> {
        self.slots
            .get(slot)
            .copied()
            .flatten()
            .map(|s| (s.kind, s.at))
    }

    /// The armed slot DR6 reports as hit.
    pub fn hit(&self, dr6: u64) -> Option<usize> {
        (0..4)
            .find(|&i| dr6 & (1 << i) != 0 && self.slots[i].is_some() && self.suspended != Some(i))
    }

    /// Take a free slot; `Ok(false)` when all four are taken or the range cannot be watched
    /// (x86 watches 1, 2, 4 or 8 aligned bytes).
    fn add(&mut self, kind: HwKind, at: Gva, len: u64) -> bool {
        let len = if kind == HwKind::Execute { 1 } else { len };
        if !matches!(len, 1 | 2 | 4 | 8) || !at.raw().is_multiple_of(len) {
            return false;
        }
        match self.slots.iter_mut().find(|s| s.is_none()) {
            Some(free) => {
                *free = Some(HwSlot {
                    kind,
                    at,
                    len,
                    seen: None,
                    accessed: false,
                });
                true
            }
            None => false,
        }
    }

    fn remove(&mut self, kind: HwKind, at: Gva) -> bool {
        let found = self
            .slots
            .iter()
            .position(|s| s.is_some_and(|s| s.kind == kind && s.at == at));
        if let Some(i) = found {
            self.slots[i] = None;
            if self.suspended == Some(i) {
                self.suspended = None;
            }
        }
        found.is_some()
    }

    pub fn forget_pending_access(&mut self) {
        for slot in self.slots.iter_mut().flatten() {
            slot.accessed = false;
        }
    }

    /// Whether watchpoints are set that the host checks by single-stepping.
    pub fn stepping_watches(&self) -> bool {
        self.watch_by_stepping
            && self
                .slots
                .iter()
                .any(|s| s.is_some_and(|s| s.kind != HwKind::Execute))
    }

    /// KVM's debug state for these slots, single-stepping when asked, while a slot is
    /// suspended, or while watchpoints are checked by stepping.
    pub fn guest_debug(&self, step: bool) -> kvm_guest_debug {
        let mut debug = kvm_guest_debug::default();
        let mut dr7 = 0u64;
        for (i, slot) in self.slots.iter().enumerate() {
            let Some(slot) = slot else { continue };
            if self.suspended == Some(i) || (self.watch_by_stepping && slot.kind != HwKind::Execute)
            {
                continue;
            }
            let rw = match slot.kind {
                HwKind::Execute => 0b00,
                HwKind::Write => 0b01,
                HwKind::Access => 0b11,
            };
            let len = match slot.len {
                2 => 0b01,
                4 => 0b11,
                8 => 0b10,
                _ => 0b00,
            };
            debug.arch.debugreg[i] = slot.at.raw();
            dr7 |= 1 << (2 * i) | rw << (16 + 4 * i) | len << (18 + 4 * i);
        }
        if dr7 != 0 {
            debug.control |= KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP;
            debug.arch.debugreg[7] = dr7;
        }
        if step || self.suspended.is_some() || self.stepping_watches() {
            debug.control |= KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP;
        }
        debug
    }
}

/// Whether this KVM reports write watchpoints in DR0–DR3; probed once per process.
fn data_breakpoints_work(kvm: &kvm_ioctls::Kvm) -> bool {
    static WORKS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WORKS.get_or_init(|| {
        crate::doctor::probes::data_breakpoint(kvm).verdict == crate::doctor::Verdict::Yes
    })
}

/// Software breakpoints by the address gdb gave, with where they were planted.
pub(super) type SwBreakpoints = BTreeMap<Gva, Gpa>;

impl Vm {
    /// Give KVM the debug state gdb wants (kept by the tap through its own steps).
    pub(super) fn apply_debug(&mut self, step: bool) -> Result<(), RunError> {
        let key = (self.hw.clone(), step);
        if self.applied_debug.as_ref() == Some(&key) {
            return Ok(());
        }
        let debug = self.hw.guest_debug(step);
        match &mut self.tap {
            Some(tap) => tap.set_extra_debug(&self.vcpu, debug)?,
            None => self
                .vcpu
                .set_guest_debug(&debug)
                .map_err(|error| RunError::Kvm {
                    ioctl: "KVM_SET_GUEST_DEBUG",
                    error,
                })?,
        }
        self.applied_debug = Some(key);
        Ok(())
    }

    /// The registers as gdb should see them: at a caught exception, those of the code it
    /// interrupted (RIP at the faulting instruction), with the CPU's CR2.
    pub fn registers(&self) -> Result<Registers, DebugError> {
        let regs = self.general_registers()?;
        let mut sregs = self.stopped.sregs(&self.vcpu)?;
        let fpu = self.stopped.fpu(&self.vcpu)?;
        let kernel_gs_base = self.stopped.kernel_gs_base(&self.vcpu)?;
        if let Some(held) = self.held.filter(|h| h.presented) {
            sregs.cs.selector = held.interrupted_cs;
            sregs.ss.selector = held.interrupted_ss;
        }
        Ok(Registers {
            regs,
            sregs,
            fpu,
            kernel_gs_base,
        })
    }

    /// Just the general-purpose registers and RIP of [`Vm::registers`]: one ioctl, for
    /// stop replies.
    pub fn general_registers(&self) -> Result<kvm_regs, DebugError> {
        match self.held.filter(|h| h.presented) {
            Some(held) => Ok(held.interrupted),
            None => Ok(self.stopped.regs(&self.vcpu)?),
        }
    }

    /// Change registers. At a caught exception this rewinds it: the guest goes back to the
    /// interrupted code with the new values, as if the exception had not been raised yet.
    pub fn set_registers(&mut self, new: &Registers) -> Result<(), DebugError> {
        let shown = self.registers()?;
        if *new == shown {
            return Ok(());
        }
        let mut actual_sregs = self.stopped.sregs(&self.vcpu)?;
        // Whatever happens below, what was read before may no longer be what KVM holds.
        self.stopped.forget();
        if let Some(held) = self.held.filter(|h| h.presented) {
            let ring = (held.interrupted_cs & 3) as u8;
            let handler_ring = (actual_sregs.cs.selector & 3) as u8;
            if ring != handler_ring {
                return Err(DebugError::CannotRewind { ring, handler_ring });
            }
            self.held = None;
        }
        if new.regs != shown.regs || self.held.is_none() {
            self.vcpu
                .set_regs(&new.regs)
                .map_err(kvm("set registers"))?;
        }
        if new.sregs != shown.sregs {
            let wanted = &new.sregs;
            actual_sregs.cr0 = wanted.cr0;
            actual_sregs.cr2 = wanted.cr2;
            actual_sregs.cr3 = wanted.cr3;
            actual_sregs.cr4 = wanted.cr4;
            actual_sregs.cr8 = wanted.cr8;
            actual_sregs.efer = wanted.efer;
            actual_sregs.fs.base = wanted.fs.base;
            actual_sregs.gs.base = wanted.gs.base;
            for (actual, wanted) in [
                (&mut actual_sregs.ds, &wanted.ds),
                (&mut actual_sregs.es, &wanted.es),
                (&mut actual_sregs.fs, &wanted.fs),
                (&mut actual_sregs.gs, &wanted.gs),
            ] {
                actual.selector = wanted.selector;
            }
            self.vcpu
                .set_sregs(&actual_sregs)
                .map_err(kvm("set system registers"))?;
        }
        if new.fpu != shown.fpu {
            self.vcpu
                .set_fpu(&new.fpu)
                .map_err(kvm("set FPU registers"))?;
        }
        if new.kernel_gs_base != shown.kernel_gs_base {
            let msrs = Msrs::from_entries(&[kvm_msr_entry {
                index: MSR_KERNEL_GS_BASE,
                data: new.kernel_gs_base,
                ..Default::default()
            }])
            .map_err(|_| DebugError::Kvm {
                what: "build an MSR list",
                error: kvm_ioctls::Error::new(libc::ENOMEM),
            })?;
            self.vcpu
                .set_msrs(&msrs)
                .map_err(kvm("set KERNEL_GS_BASE"))?;
        }
        Ok(())
    }

    /// The address space the vCPU is in now; `None` while paging is off (virtual is physical).
    pub fn current_space(&self) -> Result<Option<AddressSpace<'_>>, DebugError> {
        let sregs = self.stopped.sregs(&self.vcpu)?;
        if sregs.cr0 & Cr0Flags::PAGING.bits() == 0 {
            return Ok(None);
        }
        let mode = PagingMode::of_vcpu(self.cpu_paging, sregs.cr0, sregs.cr4, sregs.efer);
        Ok(Some(self.address_space(mode, Cr3::new(sregs.cr3))))
    }

    /// Guest RAM as the guest sees it (trap bytes hidden).
    pub fn guest_view(&self) -> GuestView<'_> {
        GuestView::new(
            &self.mem,
            self.tap.as_ref().map(|t| t.patches() as &dyn HostBytes),
        )
    }

    fn to_physical(&self, at: Gva) -> Result<Gpa, DebugError> {
        match self.current_space()? {
            Some(space) => Ok(space.translate(at)?),
            None => Ok(Gpa::new(at.raw())),
        }
    }

    /// Read guest memory at a virtual address through the current page tables, page by page.
    /// Returns how many bytes could be read; an unmapped first page is an error.
    pub fn read_virtual(&self, at: Gva, buf: &mut [u8]) -> Result<usize, DebugError> {
        read_virtual_in(self.current_space()?.as_ref(), &self.guest_view(), at, buf)
    }

    /// Read guest RAM at a physical address; how many bytes were in RAM.
    pub fn read_physical(&self, at: Gpa, buf: &mut [u8]) -> Result<usize, DebugError> {
        read_physical_in(&self.guest_view(), at, buf)
    }

    /// Write guest memory at a virtual address (read-only pages included, as debuggers do).
    pub fn write_virtual(&mut self, at: Gva, data: &[u8]) -> Result<(), DebugError> {
        let mut done = 0;
        while done < data.len() {
            let here = Gva::new(at.raw().wrapping_add(done as u64));
            let len = here.to_page_end().min(data.len() - done);
            let gpa = self.to_physical(here)?;
            self.write_physical(gpa, &data[done..done + len])?;
            done += len;
        }
        Ok(())
    }

    pub fn write_physical(&mut self, at: Gpa, data: &[u8]) -> Result<(), DebugError> {
        let written = match &mut self.tap {
            Some(tap) => tap.write_through(&self.mem, at, data),
            None => vm_memory::Bytes::write_slice(&self.mem, data, at.guest_address()).is_ok(),
        };
        if written {
            Ok(())
        } else {
            Err(DebugError::NotRam(at))
        }
    }

    /// Plant a software breakpoint at `at` in the current address space.
    pub fn add_breakpoint(&mut self, at: Gva) -> Result<(), DebugError> {
        let gpa = self.to_physical(at)?;
        let tap = self.tap.as_mut().ok_or(DebugError::NoTap)?;
        tap.add_breakpoint(&self.vcpu, &self.mem, gpa)?;
        self.sw_breakpoints.insert(at, gpa);
        Ok(())
    }

    pub fn remove_breakpoint(&mut self, at: Gva) -> bool {
        match (self.sw_breakpoints.remove(&at), &mut self.tap) {
            (Some(gpa), Some(tap)) => {
                // The guest may have overwritten the byte since: it is gone either way.
                tap.remove_breakpoint(&self.mem, gpa);
                true
            }
            _ => false,
        }
    }

    /// Take a debug register; false when none is free or the range cannot be watched.
    pub fn add_hw(&mut self, kind: HwKind, at: Gva, len: u64) -> bool {
        if kind != HwKind::Execute {
            self.hw.watch_by_stepping = !data_breakpoints_work(&self._kvm);
        }
        self.hw.add(kind, at, len)
    }

    /// Before the guest runs with watchpoints checked by stepping: note the watched values
    /// and whether the next instruction accesses a watched range.
    pub(super) fn watch_baseline(&mut self) {
        if !self.hw.stepping_watches() {
            return;
        }
        for i in 0..4 {
            let Some(slot) = self.hw.slots[i] else {
                continue;
            };
            let seen = self.watched_value(slot);
            let accessed = self.next_access_touches(slot);
            if let Some(s) = &mut self.hw.slots[i] {
                s.seen = seen;
                s.accessed = accessed;
            }
        }
    }

    /// After a single-stepped instruction: the watchpoint it hit, if any.
    pub(super) fn stepped_watch_hit(&mut self) -> Option<usize> {
        let mut hit = None;
        for i in 0..4 {
            let Some(slot) = self.hw.slots[i] else {
                continue;
            };
            let (seen, accessed, fired) = match slot.kind {
                HwKind::Execute => continue,
                HwKind::Write => {
                    let now = self.watched_value(slot);
                    // A page mapped meanwhile gives a first value, not a change.
                    let changed = slot.seen.is_some() && now.is_some() && now != slot.seen;
                    (now, false, changed)
                }
                HwKind::Access => (None, self.next_access_touches(slot), slot.accessed),
            };
            if let Some(s) = &mut self.hw.slots[i] {
                s.seen = seen;
                s.accessed = accessed;
            }
            if fired && hit.is_none() {
                hit = Some(i);
            }
        }
        hit
    }

    fn watched_value(&self, slot: HwSlot) -> Option<u64> {
        let mut raw = [0u8; 8];
        let len = crate::narrow::to_usize(slot.len);
        match self.read_virtual(slot.at, &mut raw[..len]) {
            Ok(n) if n == len => Some(u64::from_le_bytes(raw)),
            _ => None,
        }
    }

    fn next_access_touches(&self, slot: HwSlot) -> bool {
        let (Ok(regs), Ok(sregs)) = (self.vcpu.get_regs(), self.vcpu.get_sregs()) else {
            return false;
        };
        let mode = PagingMode::of_vcpu(self.cpu_paging, sregs.cr0, sregs.cr4, sregs.efer);
        let space = self.address_space(mode, Cr3::new(sregs.cr3));
        let registers = crate::registers::RegisterFile {
            regs: &regs,
            segments: crate::registers::SegmentBases::of(&sregs),
        };
        let bitness = crate::tap::ControlRegisters::of(&sregs).bitness();
        let Ok(instruction) = crate::analysis::decode_at(&space, &registers, bitness) else {
            return false;
        };
        let (start, end) = (slot.at.raw(), slot.at.raw().saturating_add(slot.len));
        instruction.operands.iter().any(|op| {
            op.address.is_some_and(|a| {
                a.raw() < end && a.raw().saturating_add(op.size.max(1) as u64) > start
            })
        })
    }

    pub fn remove_hw(&mut self, kind: HwKind, at: Gva) -> bool {
        self.hw.remove(kind, at)
    }

    /// What debug register `slot` watches.
    pub fn hw_slot(&self, slot: usize) -> Option<(HwKind, Gva)> {
        self.hw.address(slot)
    }

    /// The kernel function at `at`, from its symbols.
    pub fn symbol(&self, at: Gva) -> Option<String> {
        self.symbols
            .as_ref()?
            .locate(at.raw())
            .map(|l| l.to_string())
    }

    /// Just the function's name at `at` (for matching scenario expectations).
    pub fn function_at(&self, at: Gva) -> Option<String> {
        Some(self.symbols.as_ref()?.locate(at.raw())?.function)
    }

    /// `function+offset (file:line)` at `at`, as reports print a place.
    pub fn location_at(&self, at: Gva) -> Option<String> {
        Some(self.symbols.as_ref()?.locate(at.raw())?.to_string())
    }

    /// The kernel (or disk image) file this VM booted.
    pub fn kernel_file(&self) -> &std::path::Path {
        &self.config.kernel
    }

    pub fn ram_regions(&self) -> &[(Gpa, u64)] {
        &self.ram
    }

    /// Whether exceptions are analysed (explained, diffed), not just recorded.
    pub fn analyses_exceptions(&self) -> bool {
        self.config.audit != super::AuditMode::Off
    }

    pub fn tap_enabled(&self) -> bool {
        self.tap.is_some()
    }

    pub fn vcpu_count(&self) -> usize {
        1
    }

    /// The page-table entries on the last exception's walk that changed since, as the diff
    /// the report will show (resolved now, without waiting for the next exception).
    pub fn diff_since_last_exception(&self) -> Option<(u64, crate::analysis::Diff)> {
        let snapshot = self.pending_diff.as_ref()?;
        let space = self.address_space(snapshot.mode, snapshot.walk.cr3);
        Some((snapshot.seq, snapshot.resolve(&space, false)))
    }

    /// gdb has gone: remove its breakpoints and debug registers so the guest runs on alone.
    pub fn clear_debug_state(&mut self) {
        let planted: Vec<Gva> = self.sw_breakpoints.keys().copied().collect();
        for at in planted {
            self.remove_breakpoint(at);
        }
        self.hw = HwSlots::default();
    }

    /// End the run at gdb's request.
    pub fn kill(&mut self) {
        self.progress_end(crate::ending::Ending::Killed);
    }

    /// The exception gdb is being shown before its handler, if any.
    pub fn held_exception(&self) -> Option<u64> {
        self.held.filter(|h| h.presented).map(|h| h.seq)
    }
}

/// Read guest memory at a virtual address through `space` (`None`: paging off), as much as is
/// mapped from `at` on: an error only when not even the first byte is.
pub fn read_virtual_in(
    space: Option<&AddressSpace<'_>>,
    view: &GuestView<'_>,
    at: Gva,
    buf: &mut [u8],
) -> Result<usize, DebugError> {
    let mut done = 0;
    while done < buf.len() {
        let here = Gva::new(at.raw().wrapping_add(done as u64));
        let len = here.to_page_end().min(buf.len() - done);
        let gpa = match space {
            Some(space) => space.translate(here),
            None => Ok(Gpa::new(here.raw())),
        };
        let ok = match gpa {
            Ok(gpa) if view.read(gpa, &mut buf[done..done + len]) => Ok(()),
            Ok(gpa) => Err(DebugError::NotRam(gpa)),
            Err(e) => Err(e.into()),
        };
        match ok {
            Ok(()) => done += len,
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(done)
}

/// Read guest RAM at a physical address, as much as is RAM from `at` on.
pub fn read_physical_in(
    view: &GuestView<'_>,
    at: Gpa,
    buf: &mut [u8],
) -> Result<usize, DebugError> {
    let mut done = 0;
    while done < buf.len() {
        let here = Gpa::new(at.raw().wrapping_add(done as u64));
        let len = here.to_page_end().min(buf.len() - done);
        if !view.read(here, &mut buf[done..done + len]) {
            if done == 0 {
                return Err(DebugError::NotRam(here));
            }
            break;
        }
        done += len;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dr7_encodes_each_slot_kind_and_length() {
        let mut hw = HwSlots::default();
        assert!(hw.add(HwKind::Execute, Gva::new(0x1000), 1));
        assert!(hw.add(HwKind::Write, Gva::new(0x2000), 4));
        assert!(hw.add(HwKind::Access, Gva::new(0x3000), 8));
        let debug = hw.guest_debug(false);
        assert_eq!(debug.arch.debugreg[..3], [0x1000, 0x2000, 0x3000]);
        // L0 L1 L2; slot 1: RW=01 LEN=11; slot 2: RW=11 LEN=10.
        assert_eq!(
            debug.arch.debugreg[7],
            0b01_0101 | 0b1101 << 20 | 0b1011 << 24
        );
        assert_eq!(
            debug.control,
            KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP,
            "no single-step unless asked"
        );
        assert_eq!(hw.hit(0b100), Some(2));
        assert!(hw.is_watchpoint(2) && !hw.is_watchpoint(0));
    }

    #[test]
    fn unaligned_or_odd_ranges_and_a_fifth_slot_are_refused() {
        let mut hw = HwSlots::default();
        assert!(!hw.add(HwKind::Write, Gva::new(0x1002), 4));
        assert!(!hw.add(HwKind::Write, Gva::new(0x1000), 3));
        for i in 0..4 {
            assert!(hw.add(HwKind::Write, Gva::new(0x1000 + 8 * i), 8));
        }
        assert!(!hw.add(HwKind::Write, Gva::new(0x2000), 8));
        assert!(hw.remove(HwKind::Write, Gva::new(0x1008)));
        assert!(!hw.remove(HwKind::Write, Gva::new(0x1008)));
    }

    #[test]
    fn a_suspended_breakpoint_is_left_out_and_single_steps() {
        let mut hw = HwSlots::default();
        assert!(hw.add(HwKind::Execute, Gva::new(0x1000), 1));
        assert_eq!(hw.execute_slot_at(Gva::new(0x1000)), Some(0));
        hw.suspend(0);
        let debug = hw.guest_debug(false);
        assert_eq!(debug.arch.debugreg[7], 0);
        assert_ne!(debug.control & KVM_GUESTDBG_SINGLESTEP, 0);
        assert_eq!(hw.hit(1), None, "a suspended slot does not report hits");
    }
}
