//! One user process at a time (seed 004): its own PML4 sharing the kernel's entries, VMAs in
//! an ordered tree, `mmap` that records a VMA and allocates nothing, demand paging of
//! anonymous memory in the #PF handler, and SIGSEGV for addresses outside every VMA.

use crate::cpu::Selectors;
use crate::exceptions;
use crate::frame::TrapFrame;
use crate::pmm::pmm_alloc_zero;
use crate::sync::Global;
use crate::user::{KernelResume, Program, enter_user, program_bytes, resume_kernel};
use crate::vmm::{self, Context};
use crate::{fault_log, kprintln};
use abi::exception::PfError;
use core::sync::atomic::{AtomicBool, Ordering};
use mm::paging::{
    ACCESSED, Flags, Level, NO_EXECUTE, PAGE_SIZE, PRESENT, USER, USER_ANON_DIRTY, WRITABLE,
    entry_phys, index, page_base, page_offset,
};
use mm::vma::{Prot, Vma, VmaTree};

/// Where the program's code is mapped (a PIE-like address, PML4 slot 170).
pub const CODE_BASE: u64 = 0x0000_5555_5555_4000;
/// The top of the user stack (PML4 slot 255); one page is mapped, eight are its VMA.
pub const STACK_TOP: u64 = 0x0000_7ffe_0000_0000;
const STACK_PAGES: u64 = 8;
/// mmap hands out addresses top-down from here: the layout seed 004's process had, fixed
/// instead of randomised, so its first anonymous page lands at 0x716b326c8000.
pub const MMAP_BASE: u64 = 0x0000_716b_326c_9000;
/// A read-only page standing for the shared libraries above the mmap area.
const LIBRARY_PAGE: u64 = MMAP_BASE + 0x7000;
const MMAP_FLOOR: u64 = 0x0000_1000_0000_0000;

const SYS_WRITE: u64 = 1;
const SYS_MMAP: u64 = 9;
const SYS_EXIT: u64 = 60;
const EFAULT: i64 = 14;
const ENOMEM: i64 = 12;
const EINVAL: i64 = 22;
const ENOSYS: i64 = 38;
const MAP_PRIVATE_ANONYMOUS: u64 = 0x22;
pub const SIGILL: u8 = 4;
pub const SIGBUS: u8 = 7;
pub const SIGFPE: u8 = 8;
pub const SIGSEGV: u8 = 11;
pub const SIGTRAP: u8 = 5;

struct Process {
    pid: u32,
    name: &'static str,
    ctx: Context,
    vmas: VmaTree<16>,
}

static PROCESS: Global<Process> = Global::new("the process table");
static mut RESUME: KernelResume = KernelResume::new();
static INT80_AS_UD_NOTED: AtomicBool = AtomicBool::new(false);

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Exited(u8),
    Killed(u8),
}

pub fn signal_name(signal: u8) -> &'static str {
    match signal {
        SIGILL => "SIGILL",
        SIGTRAP => "SIGTRAP",
        SIGBUS => "SIGBUS",
        SIGFPE => "SIGFPE",
        SIGSEGV => "SIGSEGV",
        _ => "signal",
    }
}

fn insert_vma(vmas: &mut VmaTree<16>, vma: Vma) {
    if let Err(error) = vmas.insert(vma) {
        panic!("process setup: {error}");
    }
}

/// Map a fresh zeroed frame at `va` in `ctx`, filled by `fill`.
fn map_new_page(ctx: Context, va: u64, flags: u64, fill: impl FnOnce(&mut [u8; 4096])) {
    let Some(frame) = pmm_alloc_zero(1) else {
        panic!("process setup: out of memory")
    };
    vmm::with_frame(frame, fill);
    if let Err(error) = vmm::vmm_map_page(ctx, va, frame, flags) {
        panic!("process setup: {error}");
    }
}

/// Start `program` as process 1 in ring 3 and run it until it exits or is killed.
pub fn run(program: Program, selectors: &Selectors) -> Outcome {
    let ctx = match vmm::new_context() {
        Ok(ctx) => ctx,
        Err(error) => panic!("process setup: {error}"),
    };
    let code = program_bytes();
    map_new_page(ctx, CODE_BASE, PRESENT | USER, |page| {
        page[..code.len()].copy_from_slice(code)
    });
    let stack_page = STACK_TOP - PAGE_SIZE;
    map_new_page(
        ctx,
        stack_page,
        PRESENT | WRITABLE | USER | NO_EXECUTE,
        |_| {},
    );
    // What Linux has above the mmap area (seed 004's process had its libraries there): a
    // mapped page in the same 2 MiB region, so the tables down to the PT that covers the
    // first anonymous page exist and its fault stops at the PTE, as in the seed. A gap is
    // left above MMAP_BASE, so the page past the first mmap stays outside every VMA.
    map_new_page(ctx, LIBRARY_PAGE, PRESENT | USER | NO_EXECUTE, |_| {});
    let mut vmas = VmaTree::new();
    insert_vma(
        &mut vmas,
        Vma {
            start: LIBRARY_PAGE,
            end: LIBRARY_PAGE + PAGE_SIZE,
            prot: Prot::R,
        },
    );
    insert_vma(
        &mut vmas,
        Vma {
            start: CODE_BASE,
            end: CODE_BASE + PAGE_SIZE,
            prot: Prot::RX,
        },
    );
    insert_vma(
        &mut vmas,
        Vma {
            start: STACK_TOP - STACK_PAGES * PAGE_SIZE,
            end: STACK_TOP,
            prot: Prot::RW,
        },
    );
    PROCESS.set(Process {
        pid: 1,
        name: program.name(),
        ctx,
        vmas,
    });
    kprintln!(
        "[proc] process 1 ({}): PML4 at {:#x}, code at {:#x} ({} bytes), stack top {:#x}",
        program.name(),
        ctx.pml4,
        CODE_BASE,
        code.len(),
        STACK_TOP
    );
    vmm::switch_to(ctx);
    // SAFETY: code and stack are mapped for ring 3 in `ctx`, now active; the selectors are
    // the GDT's user segments; RESUME is a static.
    let status = unsafe {
        enter_user(
            &raw mut RESUME,
            CODE_BASE,
            STACK_TOP,
            program as u64,
            u64::from(selectors.user_code.0),
            u64::from(selectors.user_data.0),
        )
    };
    vmm::switch_to(vmm::kernel_context());
    let freed = vmm::destroy_context(ctx);
    PROCESS.with(|p| p.ctx = vmm::kernel_context());
    kprintln!("[proc] process 1 torn down: {freed} frames back to the PMM");
    match u8::try_from(status) {
        Ok(code) if status < 128 => Outcome::Exited(code),
        _ => Outcome::Killed((status - 128) as u8),
    }
}

/// End the process with `status` (128 + signal when killed) and return to [`run`].
fn terminate(status: u64) -> ! {
    exceptions::leave_all();
    // SAFETY: RESUME was filled by enter_user in `run`, which is waiting for this.
    unsafe { resume_kernel(&raw const RESUME, status) }
}

/// Whether user memory `[addr, addr + len)` is mapped for ring 3 in the active process.
fn user_range_mapped(addr: u64, len: u64, write: bool) -> bool {
    let Some(end) = addr.checked_add(len) else {
        return false;
    };
    PROCESS
        .try_with(|p| {
            let mut page = page_base(addr);
            while page < end {
                let ok = vmm::leaf_entry(p.ctx, page)
                    .is_some_and(|e| e & USER != 0 && (!write || e & WRITABLE != 0))
                    && p.vmas.find(page.max(addr)).is_some();
                if !ok {
                    return false;
                }
                page += PAGE_SIZE;
            }
            true
        })
        .unwrap_or(false)
}

/// Whether the bytes at user RIP are `int 0x80` (CD 80).
pub fn is_int80_at(rip: u64) -> bool {
    if !user_range_mapped(rip, 2, false) {
        return false;
    }
    // SAFETY: both bytes are mapped for ring 3 in the active address space (checked above).
    let bytes = unsafe { core::ptr::read_unaligned(rip as *const [u8; 2]) };
    bytes == [0xcd, 0x80]
}

pub fn note_int80_as_ud() {
    if !INT80_AS_UD_NOTED.swap(true, Ordering::Relaxed) {
        kprintln!(
            "[proc] this CPU delivers int 0x80 from ring 3 as #UD; the #UD handler dispatches it"
        );
    }
}

pub fn syscall(frame: &mut TrapFrame) {
    let result: i64 = match frame.rax {
        SYS_MMAP => sys_mmap(frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8),
        SYS_WRITE => sys_write(frame.rdi, frame.rsi, frame.rdx),
        SYS_EXIT => {
            let (pid, name) = PROCESS.with(|p| (p.pid, p.name));
            kprintln!(
                "[proc] process {pid} ({name}) exited with status {}",
                frame.rdi & 0x7f
            );
            terminate(frame.rdi & 0x7f)
        }
        _ => -ENOSYS,
    };
    frame.rax = result as u64;
}

fn sys_mmap(addr: u64, len: u64, prot: u64, flags: u64, fd: u64) -> i64 {
    if len == 0 || flags != MAP_PRIVATE_ANONYMOUS || fd != u64::MAX || prot & !7 != 0 {
        return -EINVAL;
    }
    let placed = PROCESS.with(|p| {
        let start = p.vmas.find_gap_top_down(len, MMAP_FLOOR, MMAP_BASE)?;
        let vma = Vma {
            start,
            end: start + len.next_multiple_of(PAGE_SIZE),
            prot: Prot::from_mmap(prot),
        };
        p.vmas.insert(vma).ok()?;
        Some((vma, p.vmas.len(), p.vmas.depth()))
    });
    let Some((vma, count, depth)) = placed else {
        return -ENOMEM;
    };
    fault_log!(
        "[mm] mmap(addr {addr:#x}, len {len}, prot {prot:#x}, flags {flags:#x}) -> {:#x}: VMA {vma} inserted ({count} VMAs, tree depth {depth}); no frame allocated",
        vma.start
    );
    vma.start as i64
}

fn sys_write(fd: u64, buf: u64, len: u64) -> i64 {
    if fd != 1 && fd != 2 {
        return -EINVAL;
    }
    let len = len.min(256);
    if !user_range_mapped(buf, len, false) {
        return -EFAULT;
    }
    // SAFETY: the range is mapped for ring 3 in the active address space (checked above).
    let bytes = unsafe { core::slice::from_raw_parts(buf as *const u8, len as usize) };
    match core::str::from_utf8(bytes) {
        Ok(text) => kprintln!("[user] {text}"),
        Err(_) => kprintln!("[user] {bytes:02x?}"),
    }
    len as i64
}

/// A #PF from ring 3: demand-page an anonymous page inside a VMA, or kill the process.
pub fn user_page_fault(frame: &mut TrapFrame, cr2: u64) {
    let write = frame.error & 2 != 0;
    let fetch = frame.error & 0x10 != 0;
    let Some((vma, ctx)) = PROCESS.with(|p| p.vmas.find(cr2).map(|v| (v, p.ctx))) else {
        kill(frame, SIGSEGV, cr2, "outside every VMA");
    };
    if frame.error & 1 != 0 || (write && !vma.prot.write) || (fetch && !vma.prot.exec) {
        kill(frame, SIGSEGV, cr2, "not allowed by its VMA");
    }
    let page = page_base(cr2);
    fault_log!("[mm] {cr2:#x} is in VMA {vma}: demand paging an anonymous page");
    fault_log!(
        "[mm] indices: PGD {}, PUD {}, PMD {}, PTE {}, offset {} ({:#x})",
        index(cr2, Level::Pml4),
        index(cr2, Level::Pdpt),
        index(cr2, Level::Pd),
        index(cr2, Level::Pt),
        page_offset(cr2),
        page_offset(cr2)
    );
    let Some(frame_phys) = pmm_alloc_zero(1) else {
        kill(frame, SIGBUS, cr2, "no memory left for the page");
    };
    let mut flags = PRESENT | USER | ACCESSED;
    if write {
        flags = USER_ANON_DIRTY;
    } else if vma.prot.write {
        flags |= WRITABLE;
    }
    match vmm::vmm_map_page(ctx, page, frame_phys, flags) {
        Ok(pte) => fault_log!(
            "[mm] frame {:#x} (PFN {:#x}) zeroed; PTE[{}] = {:#x} ({})",
            entry_phys(pte),
            entry_phys(pte) >> 12,
            index(cr2, Level::Pt),
            pte,
            Flags(pte)
        ),
        Err(error) => exceptions::fatal(frame, cr2, format_args!("mapping a user page: {error}")),
    }
}

/// A user exception other than a page fault: the signal Unix would send.
pub fn kill_for_exception(frame: &mut TrapFrame, vector: u8, cr2: u64) -> ! {
    let signal = match vector {
        0 | 16 | 19 => SIGFPE,
        1 | 3 => SIGTRAP,
        6 => SIGILL,
        12..=14 => SIGSEGV,
        _ => SIGBUS,
    };
    kill(frame, signal, cr2, abi::exception::name(vector))
}

fn kill(frame: &TrapFrame, signal: u8, cr2: u64, why: &str) -> ! {
    let (pid, name) = PROCESS.with(|p| (p.pid, p.name));
    if frame.vector == 14 {
        kprintln!(
            "[proc] process {pid} ({name}) killed by {}: {} at {cr2:#x} {why} (error {:#x}), rip {:#x}",
            signal_name(signal),
            PfError(frame.error),
            frame.error,
            frame.rip
        );
    } else {
        kprintln!(
            "[proc] process {pid} ({name}) killed by {}: {why} at rip {:#x}",
            signal_name(signal),
            frame.rip
        );
    }
    terminate(128 + u64::from(signal))
}
