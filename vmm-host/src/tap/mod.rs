//! The exception tap: the host sees every exception the guest takes, with no help from it.
//!
//! The tap reads the guest's IDTR and gates 0–31, translates each handler's address through the
//! guest's own page tables, and replaces the handler's first byte with an instruction that
//! exits to the host (`hlt` here; `int3` where KVM supports software breakpoints). On a hit it
//! records the exception frame and control registers, then lets the handler run: it emulates
//! the displaced instruction when it can, else puts the byte back and single-steps it. Every
//! host read goes through [`GuestView`], which hides the patched bytes.

pub(crate) mod emulate;
mod idt;
mod patch;
mod record;
pub mod task;

pub use idt::{EXCEPTION_VECTORS, Gate, GateFormat, GateKind, Idtr, REAL_MODE_EXCEPTIONS};
pub use patch::{Patch, PatchError, Patches};
pub use record::{ControlRegisters, ExceptionRecord, Frame, Nesting};

use crate::addr::{Gpa, Gva};
use crate::paging::{CpuPaging, Cr3, PagingMode};
use crate::registers::SegmentBases;
use crate::virt::{AddressSpace, GuestView};
use kvm_bindings::{
    KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP, KVM_GUESTDBG_USE_SW_BP,
    kvm_guest_debug, kvm_regs, kvm_sregs,
};
use kvm_ioctls::VcpuFd;
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestMemoryMmap};

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("the tap could not {what}: {error}")]
    Kvm {
        what: &'static str,
        error: kvm_ioctls::Error,
    },
    #[error(transparent)]
    Patch(#[from] PatchError),
}

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> TapError {
    move |error| TapError::Kvm { what, error }
}

/// The instruction the tap plants at handler entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrapKind {
    /// `hlt` (0xF4): exits as KVM_EXIT_HLT when there is no in-kernel irqchip; works on the
    /// nested KVM of these machines, where `int3` in ring 0 is an emulation failure.
    Hlt,
    /// `int3` (0xCC) with KVM_GUESTDBG_USE_SW_BP: exits as KVM_EXIT_DEBUG, exception 3.
    Int3,
}

impl TrapKind {
    pub fn byte(self) -> u8 {
        match self {
            Self::Hlt => 0xf4,
            Self::Int3 => 0xcc,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Hlt => "hlt",
            Self::Int3 => "int3",
        }
    }

    fn debug_control(self) -> u32 {
        match self {
            Self::Hlt => 0,
            Self::Int3 => KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP,
        }
    }
}

/// Counters that say what the tap cost.
#[derive(Debug, Clone, Default)]
pub struct TapStats {
    /// Exceptions captured.
    pub hits: u64,
    /// Displaced instructions run on the host (one exit per exception).
    pub emulated: u64,
    /// Displaced instructions single-stepped (two exits per exception).
    pub stepped: u64,
    /// IDT checks made at exits that were not the tap's.
    pub checks: u64,
    pub check_time: Duration,
    /// Times the handler set changed and was armed again.
    pub arms: u64,
    /// Handler entries armed at the last check.
    pub handlers: usize,
    /// Handlers the tap could not arm, and why (last check).
    pub unarmed: Vec<String>,
}

/// What the tap last armed: enough to notice any change cheaply.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Armed {
    idtr: Idtr,
    /// Task gates lead through the GDT.
    gdtr: task::Gdtr,
    cr3: u64,
    /// Gates 0..idtr.covered_vectors(); the rest stays zero.
    gates: [u8; GATES_BYTES],
}

/// The debug register the tap takes for an unfetchable handler: the last, which gdb's
/// breakpoints use only when the other three are taken.
const LOOP_SLOT: usize = 3;
/// DR7's enable bits of slot 3 (L3, G3), and L3 alone: an execution breakpoint (RW3 = 00,
/// LEN3 = 00).
const DR7_SLOT3: u64 = 0b11 << 6;
const DR7_L3: u64 = 1 << 6;

/// The handler to watch for a loop: a canonical handler of a usable gate the tables do not
/// map, #PF's first (a loop is #PF after #PF), else the lowest vector's.
fn unfetchable_handler(space: &AddressSpace, armed: &Armed) -> Option<Gva> {
    let unmapped: Vec<Gate> = (armed.gates())
        .filter(|g| {
            g.usable() && g.kind != GateKind::RealMode && space.translate(g.handler).is_err()
        })
        .collect();
    let page_fault = unmapped.iter().find(|g| g.vector == 14);
    page_fault.or(unmapped.first()).map(|g| g.handler)
}

/// The 32 exception gates' bytes.
const GATES_BYTES: usize = EXCEPTION_VECTORS as usize * idt::GATE_BYTES;

/// The IDT (or real mode's IVT) the CPU delivers through in this vCPU state.
fn idtr_of(sregs: &kvm_sregs) -> Idtr {
    Idtr {
        base: Gva::new(sregs.idt.base),
        limit: sregs.idt.limit,
        format: GateFormat::of(sregs.cr0, sregs.efer),
    }
}

/// Whether the tap arms `gate`'s handler: in real mode only the vectors that are nothing but
/// exceptions there, and not while they still point at the BIOS's own stubs (the BIOS reports
/// those).
fn worth_arming(gate: &Gate) -> bool {
    gate.kind != GateKind::RealMode
        || (REAL_MODE_EXCEPTIONS.contains(&gate.vector)
            && crate::bios::rom::stub_vector(gate.handler.raw()).is_none())
}

fn gdtr_of(sregs: &kvm_sregs) -> task::Gdtr {
    task::Gdtr {
        base: Gva::new(sregs.gdt.base),
        limit: sregs.gdt.limit,
    }
}

impl Armed {
    /// The gates inside the IDT limit, decoded.
    fn gates(&self) -> impl Iterator<Item = Gate> + '_ {
        let format = self.idtr.format;
        let covered = usize::from(self.idtr.covered_vectors()) * format.size();
        (0u8..)
            .zip(self.gates[..covered].chunks_exact(format.size()))
            .map(move |(vector, raw)| {
                let mut gate_bytes = [0u8; idt::GATE_BYTES];
                gate_bytes[..raw.len()].copy_from_slice(raw);
                Gate::parse(vector, &gate_bytes, format)
            })
    }
}

/// The frame of the exception whose handler the vCPU (at `sregs`, with RSP at the frame) has
/// just reached, and for a task gate the interrupted task's general registers.
fn read_frame(
    space: &AddressSpace,
    sregs: &kvm_sregs,
    at: Gva,
    has_error: bool,
    through_task: bool,
) -> Result<(Frame, Option<[u32; 8]>), String> {
    if through_task {
        let gdtr = gdtr_of(sregs);
        let current = task::follow(space, gdtr, sregs.tr.selector).map_err(|e| e.to_string())?;
        let previous = task::follow(space, gdtr, current.tss.link)
            .map_err(|e| format!("the interrupted task (the TSS's link): {e}"))?;
        let error = if has_error {
            let mut raw = [0u8; 4];
            space.read(at, &mut raw).map_err(|e| e.to_string())?;
            Some(u64::from(u32::from_le_bytes(raw)))
        } else {
            None
        };
        return Ok((
            Frame::from_task(at, error, &previous.tss),
            Some(previous.tss.gprs),
        ));
    }
    let format = GateFormat::of(sregs.cr0, sregs.efer);
    if format == GateFormat::RealMode {
        let mut raw = [0u8; 6];
        space.read(at, &mut raw).map_err(|e| e.to_string())?;
        let word = |i: usize| u16::from_le_bytes([raw[2 * i], raw[2 * i + 1]]);
        let sp = at.raw().wrapping_sub(sregs.ss.base);
        let frame = Frame::parse16(at, [word(0), word(1), word(2)], sregs.ss.selector, sp);
        return Ok((frame, None));
    }
    if format == GateFormat::Protected {
        let mut raw = [0u8; 24];
        space.read(at, &mut raw).map_err(|e| e.to_string())?;
        let mut words = [0u32; 6];
        for (word, bytes) in words.iter_mut().zip(raw.chunks_exact(4)) {
            *word = u32::from_le_bytes(bytes.try_into().unwrap_or_default());
        }
        return Ok((
            Frame::parse32(at, &words, has_error, sregs.ss.selector),
            None,
        ));
    }
    let words = space.read_u64s(at).map_err(|e| e.to_string())?;
    Ok((Frame::parse(at, &words, has_error), None))
}

/// Where a task gate leads, for the IDT's description: the TSS, the task's entry and where
/// that is, or why the CPU cannot switch to it.
fn describe_task(space: &AddressSpace, gdtr: task::Gdtr, selector: u16) -> String {
    match task::follow(space, gdtr, selector) {
        Err(e) => format!(": {e}; delivering through it raises #TS or #GP"),
        Ok(task) => {
            let entry = task.entry();
            let place = match task.space(space).translate(entry) {
                Ok(gpa) => format!("physical {gpa}"),
                Err(e) => e.to_string(),
            };
            let busy = if task.busy {
                " (busy: a switch to it raises #GP, unless it is the task running)"
            } else {
                ""
            };
            format!(
                ", TSS at {}{busy}, task entry {:#06x}:{entry} CR3 {:#x} ESP {:#x}, at {place}",
                task.base,
                task.tss.cs,
                task.tss.cr3,
                task.tss.esp()
            )
        }
    }
}

/// Where the handler of `gate` is in guest RAM, and whether a task switch leads there; `None`
/// for a gate the CPU cannot deliver through (nothing to arm), an error saying why a handler
/// that exists cannot be armed.
fn handler_of(
    space: &AddressSpace,
    gdtr: task::Gdtr,
    gate: &Gate,
) -> Result<Option<(Gpa, bool)>, String> {
    if gate.kind == GateKind::Task && gate.present {
        let task = task::follow(space, gdtr, gate.selector)
            .map_err(|e| format!("task gate to TSS {:#06x}: {e}", gate.selector))?;
        let gpa = task.space(space).translate(task.entry()).map_err(|e| {
            format!(
                "task gate to TSS {:#06x}: the task's entry {e}",
                gate.selector
            )
        })?;
        return Ok(Some((gpa, true)));
    }
    if !gate.usable() {
        return Ok(None);
    }
    match space.translate(gate.handler) {
        Ok(gpa) => Ok(Some((gpa, false))),
        Err(e) => Err(format!("handler {e}")),
    }
}

#[derive(Debug)]
pub struct Tap {
    kind: TrapKind,
    cpu_paging: CpuPaging,
    patches: Patches,
    armed: Option<Armed>,
    /// The patch lifted for a single-step in progress.
    stepping: Option<Gpa>,
    /// What gdb adds to the vCPU's debug state (hardware breakpoints, its own single-step).
    extra_debug: kvm_guest_debug,
    nesting: Nesting,
    /// Vectors whose armed handler is a task's entry, reached through a task gate.
    task_vectors: u32,
    /// A handler the page tables do not map, watched by a code breakpoint in DR3 (when gdb
    /// leaves it free): deliveries to it loop, each fetch faulting again, and are counted.
    unfetchable: Option<Gva>,
    next_seq: u64,
    pub stats: TapStats,
    /// The IDTR comes from `kvm_run`'s synced system registers (see [`Tap::use_synced_sregs`]).
    synced_sregs: bool,
}

/// How an exit relates to the tap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hit {
    /// The guest reached the armed handler at this physical address (where a gdb breakpoint
    /// may sit too).
    Handler {
        gpa: Gpa,
        handler: Gva,
        breakpoint: bool,
    },
    /// The guest reached a gdb software breakpoint.
    Breakpoint {
        gpa: Gpa,
        at: Gva,
    },
    NotOurs,
}

/// How the instruction displaced by a trap byte was run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Displaced {
    /// On the host: the vCPU is already past it.
    Emulated,
    /// By a single-step now under way: the next exit ends it.
    Stepping,
}

impl Tap {
    pub fn new(kind: TrapKind, cpu_paging: CpuPaging) -> Self {
        Self {
            kind,
            cpu_paging,
            patches: Patches::new(kind.byte()),
            armed: None,
            stepping: None,
            extra_debug: kvm_guest_debug::default(),
            nesting: Nesting::default(),
            task_vectors: 0,
            unfetchable: None,
            next_seq: 1,
            stats: TapStats::default(),
            synced_sregs: false,
        }
    }

    pub fn kind(&self) -> TrapKind {
        self.kind
    }

    pub fn patches(&self) -> &Patches {
        &self.patches
    }

    /// Exceptions still being handled, outermost first.
    pub fn chain(&self) -> Vec<u64> {
        self.nesting.chain()
    }

    pub fn space<'a>(&'a self, ram: &'a GuestMemoryMmap, sregs: &kvm_sregs) -> AddressSpace<'a> {
        AddressSpace {
            view: GuestView::new(ram, Some(&self.patches)),
            mode: PagingMode::of_vcpu(self.cpu_paging, sregs.cr0, sregs.cr4, sregs.efer),
            cr3: Cr3::new(sregs.cr3),
        }
    }

    /// Read the IDTR from the copy KVM leaves in `kvm_run` at every exit rather than by a
    /// KVM_GET_SREGS per check. The VM must have asked for that copy (`KVM_CAP_SYNC_REGS`).
    pub fn use_synced_sregs(&mut self) {
        self.synced_sregs = true;
    }

    /// Check the IDT and arm (or re-arm) its handlers. Cheap when nothing changed: the
    /// system registers (synced at the exit, or one KVM_GET_SREGS) and a compare of the gate
    /// bytes.
    pub fn check(&mut self, vcpu: &VcpuFd, ram: &GuestMemoryMmap) -> Result<(), TapError> {
        if self.stepping.is_some() {
            return Ok(());
        }
        let started = Instant::now();
        // A nested KVM pays a trip through the outer hypervisor for each vCPU ioctl; at one
        // check per port write, KVM_GET_SREGS was a third of the cost of a serial byte.
        let sregs = if self.synced_sregs {
            vcpu.sync_regs().sregs
        } else {
            vcpu.get_sregs().map_err(kvm("read the IDTR"))?
        };
        let result = self.check_with(vcpu, ram, &sregs);
        self.stats.checks += 1;
        self.stats.check_time += started.elapsed();
        result
    }

    fn check_with(
        &mut self,
        vcpu: &VcpuFd,
        ram: &GuestMemoryMmap,
        sregs: &kvm_sregs,
    ) -> Result<(), TapError> {
        let idtr = idtr_of(sregs);
        // Runs at every exit that is not the tap's: no allocation unless something changed.
        let mut gates = [0u8; GATES_BYTES];
        let covered = usize::from(idtr.covered_vectors()) * idtr.format.size();
        let space = self.space(ram, sregs);
        if covered > 0 && space.read(idtr.base, &mut gates[..covered]).is_err() {
            gates = [0; GATES_BYTES];
        }
        let current = Armed {
            idtr,
            gdtr: gdtr_of(sregs),
            cr3: sregs.cr3 & mm::paging::ADDR_MASK,
            gates,
        };
        let overwritten =
            |(gpa, p): &(Gpa, &Patch)| !p.lifted && !self.patches.holds_trap(ram, *gpa);
        if self.armed.as_ref() == Some(&current) && !self.patches.iter().any(|e| overwritten(&e)) {
            return Ok(());
        }
        let overwritten: Vec<Gpa> = self
            .patches
            .iter()
            .filter(|e| overwritten(e))
            .map(|(gpa, _)| gpa)
            .collect();
        for gpa in overwritten {
            self.patches.forget(gpa);
        }
        self.arm(vcpu, ram, sregs, &current)?;
        self.armed = Some(current);
        Ok(())
    }

    fn arm(
        &mut self,
        vcpu: &VcpuFd,
        ram: &GuestMemoryMmap,
        sregs: &kvm_sregs,
        armed: &Armed,
    ) -> Result<(), TapError> {
        let space = self.space(ram, sregs);
        let mut wanted: Vec<(Gpa, u8)> = Vec::new();
        let mut unarmed = Vec::new();
        let mut task_vectors = 0;
        let unfetchable = unfetchable_handler(&space, armed);
        for gate in armed.gates().filter(worth_arming) {
            let vector = gate.vector;
            match handler_of(&space, armed.gdtr, &gate) {
                Ok(Some((gpa, through_task))) => {
                    wanted.push((gpa, vector));
                    if through_task {
                        task_vectors |= 1 << vector;
                    }
                }
                Ok(None) => {}
                Err(why) => unarmed.push(format!("vector {vector}: {why}")),
            }
        }
        self.task_vectors = task_vectors;
        let stale: Vec<Gpa> = self
            .patches
            .iter()
            .filter(|(gpa, p)| p.is_handler() && !wanted.iter().any(|(w, _)| w == gpa))
            .map(|(gpa, _)| gpa)
            .collect();
        for gpa in stale {
            self.patches.release_handler(ram, gpa);
        }
        for (gpa, vector) in wanted {
            if let Err(e) = self.patches.arm(ram, gpa, vector) {
                unarmed.push(format!("vector {vector}: {e}"));
            }
        }
        let watch_changed = unfetchable != self.unfetchable;
        self.unfetchable = unfetchable;
        if (self.kind == TrapKind::Int3 && !self.patches.is_empty()) || watch_changed {
            self.set_debug(vcpu, self.stepping.is_some())?;
        }
        self.stats.arms += 1;
        self.stats.handlers = self.patches.handlers();
        self.stats.unarmed = unarmed;
        Ok(())
    }

    fn set_debug(&self, vcpu: &VcpuFd, single_step: bool) -> Result<(), TapError> {
        let mut debug = self.extra_debug;
        debug.control |= self.kind.debug_control();
        if let Some(handler) = self.unfetchable
            && debug.arch.debugreg[7] & DR7_SLOT3 == 0
        {
            debug.arch.debugreg[LOOP_SLOT] = handler.raw();
            debug.arch.debugreg[7] |= DR7_L3;
            debug.control |= KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP;
        }
        if single_step {
            debug.control |= KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP;
        }
        vcpu.set_guest_debug(&debug)
            .map_err(kvm("set KVM_SET_GUEST_DEBUG"))
    }

    /// Debug state gdb wants on top of the tap's own (debug registers, single-step); the
    /// tap keeps it through its own steps.
    pub fn set_extra_debug(
        &mut self,
        vcpu: &VcpuFd,
        extra: kvm_guest_debug,
    ) -> Result<(), TapError> {
        self.extra_debug = extra;
        self.set_debug(vcpu, self.stepping.is_some())
    }

    /// Plant a gdb software breakpoint at `gpa`.
    pub fn add_breakpoint(
        &mut self,
        vcpu: &VcpuFd,
        ram: &GuestMemoryMmap,
        gpa: Gpa,
    ) -> Result<(), TapError> {
        self.patches.add_breakpoint(ram, gpa)?;
        if self.kind == TrapKind::Int3 {
            self.set_debug(vcpu, self.stepping.is_some())?;
        }
        Ok(())
    }

    pub fn remove_breakpoint(&mut self, ram: &GuestMemoryMmap, gpa: Gpa) -> bool {
        self.patches.remove_breakpoint(ram, gpa)
    }

    /// A host write into guest RAM (gdb) that keeps trap bytes planted.
    pub fn write_through(&mut self, ram: &GuestMemoryMmap, gpa: Gpa, data: &[u8]) -> bool {
        self.patches.write_through(ram, gpa, data)
    }

    /// Whether a `hlt` exit (RIP after the instruction) or an int3 debug exit (RIP at it) is
    /// one of the tap's traps.
    pub fn classify(&self, ram: &GuestMemoryMmap, sregs: &kvm_sregs, trap_at: u64) -> Hit {
        if self.patches.is_empty() {
            return Hit::NotOurs;
        }
        // The trap's linear address: CS base + RIP outside long mode (real mode's CS × 16).
        let bitness = ControlRegisters::of(sregs).bitness();
        let linear = Gva::new(crate::registers::linear_address(
            bitness,
            SegmentBases::of(sregs).cs,
            trap_at,
        ));
        let Ok(gpa) = self.space(ram, sregs).translate(linear) else {
            return Hit::NotOurs;
        };
        // What RIP holds there (an offset in CS), as the vCPU resumes at it.
        let at = Gva::new(trap_at);
        match self.patches.get(gpa) {
            Some(p) if p.lifted => Hit::NotOurs,
            Some(p) if p.is_handler() => Hit::Handler {
                gpa,
                handler: at,
                breakpoint: p.breakpoint,
            },
            Some(_) => Hit::Breakpoint { gpa, at },
            None => Hit::NotOurs,
        }
    }

    /// Whether the handler trapped at `gpa` is the one of `vector`.
    pub fn handles(&self, gpa: Gpa, vector: u8) -> bool {
        self.patches
            .get(gpa)
            .is_some_and(|p| vector < 32 && p.vectors & (1 << vector) != 0)
    }

    pub fn has_breakpoints(&self) -> bool {
        self.patches.iter().any(|(_, p)| p.breakpoint)
    }

    /// Whether an unlifted trap byte sits at `gpa` (the vCPU must step over it to go on).
    pub fn trap_at(&self, gpa: Gpa) -> bool {
        self.patches.get(gpa).is_some_and(|p| !p.lifted)
    }

    /// Record the exception whose handler was just reached without letting the handler run:
    /// `regs` must hold RIP at the handler. [`Tap::deliver`] or [`Tap::run_displaced`] let
    /// the handler go on.
    pub fn record_hit(
        &mut self,
        ram: &GuestMemoryMmap,
        regs: &kvm_regs,
        sregs: &kvm_sregs,
        gpa: Gpa,
        handler: Gva,
    ) -> ExceptionRecord {
        self.stats.hits += 1;
        let patch = self.patches.get(gpa).copied().unwrap_or(Patch {
            original: 0,
            vectors: 1,
            breakpoint: false,
            lifted: false,
        });
        self.record(ram, regs, sregs, &patch, handler)
    }

    /// Run the instruction displaced by the trap byte at `gpa`, where the vCPU stands: on the
    /// host when it can be emulated, else by a single-step.
    pub fn run_displaced(
        &mut self,
        vcpu: &VcpuFd,
        ram: &GuestMemoryMmap,
        gpa: Gpa,
    ) -> Result<Displaced, TapError> {
        let regs = vcpu.get_regs().map_err(kvm("read registers"))?;
        let sregs = vcpu.get_sregs().map_err(kvm("read system registers"))?;
        self.deliver(vcpu, ram, regs, &sregs, gpa)?;
        Ok(if self.stepping.is_some() {
            Displaced::Stepping
        } else {
            Displaced::Emulated
        })
    }

    /// Single-step the original instruction under the trap byte at `gpa` (a breakpoint gdb
    /// continues from): no emulation, so a hardware breakpoint or watchpoint on it still fires.
    pub fn step_over(
        &mut self,
        vcpu: &VcpuFd,
        ram: &GuestMemoryMmap,
        gpa: Gpa,
    ) -> Result<(), TapError> {
        self.patches.lift(ram, gpa);
        self.set_debug(vcpu, true)?;
        self.stepping = Some(gpa);
        self.stats.stepped += 1;
        Ok(())
    }

    fn record(
        &mut self,
        ram: &GuestMemoryMmap,
        regs: &kvm_regs,
        sregs: &kvm_sregs,
        patch: &Patch,
        handler: Gva,
    ) -> ExceptionRecord {
        let vector = patch.vector();
        let seq = self.next_seq;
        self.next_seq += 1;
        let space = self.space(ram, sregs);
        let control = ControlRegisters::of(sregs);
        let mut segments = SegmentBases::of(sregs);
        let at = Gva::new(crate::registers::linear_address(
            control.bitness(),
            segments.ss,
            regs.rsp,
        ));
        // Real mode pushes no error code.
        let has_error = control.bitness() > 16 && abi::exception::pushes_error_code(vector);
        let through_task = self.task_vectors & 1 << vector != 0;
        let (frame, frame_error, task_gprs) =
            match read_frame(&space, sregs, at, has_error, through_task) {
                Ok((frame, gprs)) => (Some(frame), None, gprs),
                Err(e) => (
                    None,
                    Some(format!("cannot read the exception frame: {e}")),
                    None,
                ),
            };
        let mut interrupted = *regs;
        if let Some(f) = &frame {
            interrupted.rip = f.rip.raw();
            interrupted.rsp = f.rsp.raw();
            interrupted.rflags = f.rflags;
        }
        if let Some(g) = task_gprs {
            [
                interrupted.rax,
                interrupted.rcx,
                interrupted.rdx,
                interrupted.rbx,
                _,
                interrupted.rbp,
                interrupted.rsi,
                interrupted.rdi,
            ] = g.map(u64::from);
        }
        if let Some(f) = frame.as_ref().filter(|_| control.bitness() == 16) {
            // The interrupted code's CS, not the handler's, forms its addresses.
            segments.cs = u64::from(f.cs) * 16;
        }
        let outer = self.nesting.enter(seq, frame.as_ref());
        ExceptionRecord {
            seq,
            vector,
            shared_handler: patch.shared(),
            handler,
            frame,
            frame_error,
            control,
            regs: interrupted,
            segments,
            depth: outer.len() + 1,
            outer,
        }
    }

    /// Let the handler whose entry `regs` stands at run on: its displaced first instruction
    /// on the host if possible, else single-stepped.
    pub fn deliver(
        &mut self,
        vcpu: &VcpuFd,
        ram: &GuestMemoryMmap,
        regs: kvm_regs,
        sregs: &kvm_sregs,
        gpa: Gpa,
    ) -> Result<(), TapError> {
        let space = self.space(ram, sregs);
        let mut bytes = [0u8; 15];
        // The host's emulation of a displaced instruction is 64-bit: a 32-bit handler's first
        // instruction is single-stepped instead.
        let long_mode = GateFormat::of(sregs.cr0, sregs.efer) == GateFormat::Long;
        let effect = space
            .read_prefix(Gva::new(regs.rip), &mut bytes)
            .ok()
            .filter(|_| long_mode)
            .and_then(|(_, len)| emulate::emulate(&bytes[..len], &regs, &space));
        if let Some(effect) = effect {
            let stored = match effect.store {
                Some((at, value)) => ram.write_obj(value, at.guest_address()).is_ok(),
                None => true,
            };
            if stored {
                let mut after = regs;
                after.rip = effect.rip;
                after.rsp = effect.rsp;
                after.rflags = effect.rflags;
                vcpu.set_regs(&after).map_err(kvm("set registers"))?;
                self.stats.emulated += 1;
                return Ok(());
            }
        }
        self.patches.lift(ram, gpa);
        vcpu.set_regs(&regs).map_err(kvm("set registers"))?;
        self.set_debug(vcpu, true)?;
        self.stepping = Some(gpa);
        self.stats.stepped += 1;
        Ok(())
    }

    /// Whether a debug exit at `pc` with this DR6 is the tap's breakpoint on a handler the
    /// CPU cannot fetch: one more delivery of a loop.
    pub fn loop_breakpoint(&self, dr6: u64, pc: u64) -> bool {
        dr6 & 1 << LOOP_SLOT != 0 && self.unfetchable.is_some_and(|h| h.raw() == pc)
    }

    /// Arm again at the next check even if the IDT looks the same: its handlers' mappings
    /// changed (a handler watched as unfetchable was mapped since).
    pub fn rearm(&mut self) {
        self.armed = None;
    }

    /// The handler the tap watches with a breakpoint because it cannot be fetched.
    pub fn unfetchable(&self) -> Option<Gva> {
        self.unfetchable
    }

    /// Whether a single-step is in progress.
    pub fn stepping(&self) -> bool {
        self.stepping.is_some()
    }

    /// Called at the exit after a single-step was started, whatever the exit is: re-arm.
    pub fn end_step(&mut self, vcpu: &VcpuFd, ram: &GuestMemoryMmap) -> Result<(), TapError> {
        if let Some(gpa) = self.stepping.take() {
            self.patches.relower(ram, gpa);
            self.set_debug(vcpu, false)?;
        }
        Ok(())
    }

    /// Why exceptions could not be delivered: IDTR and the gates of the vectors a triple
    /// fault escalates through (#UD, #DF, #TS, #NP, #SS, #GP, #PF).
    pub fn describe_idt(&self, ram: &GuestMemoryMmap, sregs: &kvm_sregs) -> String {
        let idtr = idtr_of(sregs);
        let mut text = format!(
            "  IDTR base {} limit {:#x}: {} of the 32 exception gates inside the limit\n",
            idtr.base,
            idtr.limit,
            idtr.covered_vectors()
        );
        let space = self.space(ram, sregs);
        for vector in [6u8, 8, 10, 11, 12, 13, 14] {
            let name = abi::exception::mnemonic(vector);
            let line = match idtr.gate_address(vector) {
                None => "outside the IDT limit: delivering it raises #GP".to_string(),
                Some(at) => {
                    let mut raw = [0u8; idt::GATE_BYTES];
                    match space.read(at, &mut raw[..idtr.format.size()]) {
                        Err(e) => format!("gate unreadable: {e}"),
                        Ok(_) => {
                            let gate = Gate::parse(vector, &raw, idtr.format);
                            let handler = if gate.kind == GateKind::Task && gate.present {
                                describe_task(&space, gdtr_of(sregs), gate.selector)
                            } else if gate.usable() {
                                match space.translate(gate.handler) {
                                    Ok(gpa) => format!(", handler at physical {gpa}"),
                                    Err(e) => format!(", handler {e}"),
                                }
                            } else {
                                " — not usable".to_string()
                            };
                            format!("{gate}{handler}")
                        }
                    }
                }
            };
            text.push_str(&format!("  {name:<4} {line}\n"));
        }
        text
    }

    /// Give the guest back every byte (at the end of a run, before reports read memory).
    pub fn disarm(&mut self, ram: &GuestMemoryMmap) {
        self.patches.disarm_all(ram);
        self.armed = None;
    }
}
