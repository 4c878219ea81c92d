//! The kernel's record of its exceptions: the ones being handled right now, the digest of
//! every one taken, and the fatal report in the seed's style that ends the run.

use crate::frame::TrapFrame;
use crate::sync::Global;
use crate::vmm::heap;
use crate::{exit, kprintln};
use abi::trace::ExceptionDigest;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use x86_64::registers::control::Cr3;

use abi::exception::PAGE_FAULT;
/// Faults nested deeper than this are a handler faulting on itself: give up.
const MAX_DEPTH: usize = 4;

use abi::exception::{PfError, name};

/// The exceptions being handled right now, outermost first.
#[derive(Clone, Copy)]
struct Active {
    vector: u8,
    error: u64,
    rip: u64,
    cr2: u64,
}

static IN_FATAL: AtomicBool = AtomicBool::new(false);
static DEPTH: AtomicUsize = AtomicUsize::new(0);
const IDLE: Active = Active {
    vector: 0,
    error: 0,
    rip: 0,
    cr2: 0,
};
static ACTIVE: Global<[Active; MAX_DEPTH]> = Global::new("the exception stack");
static DIGEST: Global<ExceptionDigest> = Global::new("the exception digest");

/// The exceptions taken so far, as a digest to compare with QEMU's `-d int` log.
pub fn digest() -> ExceptionDigest {
    DIGEST.try_with(|d| *d).unwrap_or_default()
}

pub fn print_digest() {
    let d = digest();
    kprintln!(
        "[kernel] exceptions taken: {}, sequence digest {:#018x}",
        d.count(),
        d.hash()
    );
}

/// Set up the exception bookkeeping; before this, an exception is reported without it.
pub fn init() {
    ACTIVE.set([IDLE; MAX_DEPTH]);
    DIGEST.set(ExceptionDigest::new());
}

/// Forget the exceptions being handled: a process ended inside one, and the kernel resumes
/// where it started the process, outside any handler.
pub fn leave_all() {
    DEPTH.store(0, Ordering::Relaxed);
}

/// Count exception `recorded` (as the digest names it) and note it as being handled; a
/// handler that keeps faulting ends the run.
pub fn enter(frame: &TrapFrame, recorded: u8, cr2: u64) {
    DIGEST.try_with(|d| d.record(recorded, frame.error, cr2));
    let depth = DEPTH.fetch_add(1, Ordering::Relaxed);
    if depth >= MAX_DEPTH {
        fatal(
            frame,
            cr2,
            "exceptions nested too deep: a handler keeps faulting",
        );
    }
    ACTIVE.try_with(|active| {
        active[depth] = Active {
            vector: recorded,
            error: frame.error,
            rip: frame.rip,
            cr2,
        }
    });
}

/// The innermost exception's handler is done.
pub fn leave() {
    DEPTH.fetch_sub(1, Ordering::Relaxed);
}

/// End a workload: the exception digest first (see `abi::trace`), then the exit code.
pub fn finish(code: u8) -> ! {
    print_digest();
    exit::exit(code)
}

pub fn log_page_fault(cr2: u64, error: u64, rip: u64) {
    kprintln!(
        "[VMM] Page fault at {:#x} (error {:#x}: {}; rip {:#x})",
        cr2,
        error,
        PfError(error),
        rip
    );
}

pub fn log_demand_paging(cr2: u64) {
    kprintln!(
        "[VMM] Demand paging: mapping kernel heap page at {:#x}",
        cr2 & !0xfff
    );
}

/// Report an exception the kernel cannot handle, with the faults it interrupted, and end the
/// run with [`abi::exit::UNHANDLED_EXCEPTION`].
pub fn fatal(frame: &TrapFrame, cr2: u64, why: impl fmt::Display) -> ! {
    let vector = frame.vector as u8;
    if IN_FATAL.swap(true, Ordering::Relaxed) {
        // The report itself faulted: say the least that is still true, and stop.
        kprintln!(
            "[EXC] vector {vector} at rip {:#x} (cr2 {cr2:#x}) while reporting a fatal exception",
            frame.rip
        );
        exit::exit(abi::exit::UNHANDLED_EXCEPTION)
    }
    let depth = DEPTH.load(Ordering::Relaxed).clamp(1, MAX_DEPTH);
    let active = ACTIVE.try_with(|a| *a).unwrap_or([IDLE; MAX_DEPTH]);
    if !crate::log::per_fault() {
        // The per-fault lines were silenced; the faults that led here still belong in the report.
        for fault in active[..depth].iter().filter(|a| a.vector == PAGE_FAULT) {
            log_page_fault(fault.cr2, fault.error, fault.rip);
            if heap::is_heap(fault.cr2) && fault.error & 1 == 0 {
                log_demand_paging(fault.cr2);
            }
        }
    }
    kprintln!("[EXC] Unhandled exception in kernel mode: {why}");
    crate::vga::paint_fatal(format_args!(
        "KERNEL PANIC: vector {vector} ({}) at rip {:#x}, cr2 {cr2:#x}",
        name(vector),
        frame.rip
    ));
    kprintln!("  Exception Vector: {} ({})", vector, name(vector));
    if vector == PAGE_FAULT {
        kprintln!(
            "  Error code:       {:#x} ({})",
            frame.error,
            PfError(frame.error)
        );
    } else {
        kprintln!("  Error code:       {:#x}", frame.error);
    }
    kprintln!(
        "  RIP:              {:#018x}  CS {:#x}  RFLAGS {:#x}",
        frame.rip,
        frame.cs,
        frame.rflags
    );
    kprintln!(
        "  RSP:              {:#018x}  SS {:#x}",
        frame.rsp,
        frame.ss
    );
    kprintln!("  CR2:              {cr2:#018x}");
    kprintln!(
        "  CR3:              {:#018x}",
        Cr3::read().0.start_address().as_u64()
    );
    kprintln!(
        "  RAX {:#018x}  RBX {:#018x}  RCX {:#018x}  RDX {:#018x}",
        frame.rax,
        frame.rbx,
        frame.rcx,
        frame.rdx
    );
    kprintln!(
        "  RSI {:#018x}  RDI {:#018x}  RBP {:#018x}  R8  {:#018x}",
        frame.rsi,
        frame.rdi,
        frame.rbp,
        frame.r8
    );
    kprintln!(
        "  R9  {:#018x}  R10 {:#018x}  R11 {:#018x}  R12 {:#018x}",
        frame.r9,
        frame.r10,
        frame.r11,
        frame.r12
    );
    kprintln!(
        "  R13 {:#018x}  R14 {:#018x}  R15 {:#018x}",
        frame.r13,
        frame.r14,
        frame.r15
    );
    if depth > 1 {
        kprintln!("  Nesting:          exception {depth}, raised while handling:");
        for (level, outer) in active[..depth - 1].iter().enumerate() {
            let doing = if outer.vector == PAGE_FAULT && heap::is_heap(outer.cr2) {
                "demand-paging kernel heap page"
            } else {
                "at address"
            };
            kprintln!(
                "    {}. {} at rip {:#x}, {} {:#x}",
                level + 1,
                name(outer.vector),
                outer.rip,
                doing,
                if outer.vector == PAGE_FAULT {
                    outer.cr2 & !0xfff
                } else {
                    outer.cr2
                }
            );
        }
    }
    print_digest();
    exit::exit(abi::exit::UNHANDLED_EXCEPTION)
}
