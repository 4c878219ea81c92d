//! Workloads that each commit one classic kernel bug, for the scenario catalogue: the host
//! must catch the exception and explain it. Each prints what it is about to do first, so
//! a scenario can check that the fault came from the intended access.

use crate::exceptions::finish;
use crate::kprintln;
use crate::pmm;
use crate::vmm::{self, kernel_context};
use abi::exit::FAILURE;
use core::hint::black_box;
use mm::paging::{KERNEL_RW, NO_EXECUTE, PAGE_SIZE, PRESENT};

/// Where the fault workloads map their pages: above the heap, below the hhdm variant's
/// direct map, so no variant uses it.
const SCRATCH: u64 = 0xffff_c000_0000_0000;

const OVERFLOW_STACK_SIZE: usize = 8 * PAGE_SIZE as usize;

#[repr(C, align(4096))]
struct OverflowStack([u8; OVERFLOW_STACK_SIZE]);

/// The stack the overflow runs on; its lowest page becomes the guard page.
static mut OVERFLOW_STACK: OverflowStack = OverflowStack([0; OVERFLOW_STACK_SIZE]);

fn give_up(what: &str, error: impl core::fmt::Display) -> ! {
    kprintln!("[fault] {what}: {error}");
    finish(FAILURE)
}

/// Map one fresh frame at `va` with `flags`.
fn map_scratch(va: u64, flags: u64) -> u64 {
    let Some(phys) = pmm::pmm_alloc_zero(1) else {
        give_up("no frame for the scratch page", "out of memory")
    };
    if let Err(error) = vmm::vmm_map_page(kernel_context(), va, phys, flags) {
        give_up("mapping the scratch page", error)
    }
    phys
}

/// Recurse with 2 KiB of locals per call until the stack runs into its guard page. Frames
/// stay below a page so that no call can step over the guard page.
#[inline(never)]
extern "C" fn recurse(depth: u64) -> u64 {
    let frame = [depth; 256];
    let frame = black_box(frame);
    if depth == u64::MAX {
        return frame[1];
    }
    recurse(depth + 1).wrapping_add(frame[7])
}

/// A kernel stack overflow: the push that crosses into the guard page raises #PF, the CPU
/// cannot push the #PF frame on that stack either, and the fault becomes a #DF. With
/// `ist`, the #DF handler runs on its own stack and reports; without, the #DF's frame
/// faults too and the CPU shuts down.
pub fn stack_overflow(ist: bool, selectors: &crate::cpu::Selectors) -> ! {
    let base = (&raw const OVERFLOW_STACK) as u64;
    if let Err(error) = vmm::vmm_unmap_page(kernel_context(), base) {
        give_up("unmapping the guard page", error)
    }
    let top = base + OVERFLOW_STACK_SIZE as u64;
    if !ist {
        crate::idt::load_without_double_fault_stack(selectors);
    }
    kprintln!(
        "[fault] recursing on a {} KiB stack at {top:#x} with its guard page at {base:#x}; #DF {}",
        OVERFLOW_STACK_SIZE / 1024,
        if ist {
            "has its own IST stack"
        } else {
            "uses the same stack (no IST)"
        }
    );
    // SAFETY: the new stack is mapped below `top` down to the guard page, and nothing
    // returns here: the recursion ends in #DF (reported, then the run ends) or a shutdown.
    unsafe {
        core::arch::asm!(
            "mov rsp, {top}",
            "xor edi, edi",
            "call {recurse}",
            "ud2",
            top = in(reg) top,
            recurse = sym recurse,
            options(noreturn)
        )
    }
}

/// Executing from a data page: the heap page is mapped NX, so the fetch raises #PF with
/// the instruction-fetch bit.
pub fn execute_nx() -> ! {
    let va = SCRATCH;
    map_scratch(va, KERNEL_RW | NO_EXECUTE);
    let code = va as *mut u8;
    // SAFETY: the page was just mapped writable; 0xc3 is `ret`.
    unsafe { code.write_volatile(0xc3) };
    kprintln!("[fault] calling code written to the NX data page at {va:#x}");
    // SAFETY: deliberately calls into an NX page: the fetch faults before anything runs.
    let function: extern "C" fn() = unsafe { core::mem::transmute(code) };
    black_box(function)();
    give_up("the NX page executed", "NX is not enforced")
}

/// A write to a read-only kernel page with CR0.WP set: supervisor writes honour R/W.
pub fn write_read_only() -> ! {
    let va = SCRATCH + PAGE_SIZE;
    map_scratch(va, PRESENT | NO_EXECUTE);
    kprintln!("[fault] writing to the read-only kernel page at {va:#x} with CR0.WP set");
    // SAFETY: deliberately writes a read-only page: the write faults.
    unsafe { (va as *mut u64).write_volatile(0xdead_beef) };
    give_up("the read-only page took the write", "CR0.WP is not set")
}

/// A null-pointer dereference, caught because page 0 is unmapped as in any kernel.
pub fn null_dereference() -> ! {
    if let Err(error) = vmm::vmm_unmap_page(kernel_context(), 0) {
        give_up("unmapping page 0", error)
    }
    kprintln!("[fault] page 0 unmapped; reading a field through a null pointer");
    let null = black_box(core::ptr::null::<[u64; 4]>());
    // SAFETY: deliberately dereferences null: page 0 is unmapped, so the read faults.
    let value = unsafe { (&raw const (*null)[2]).read_volatile() };
    give_up("the null read returned", value)
}

/// An invalid opcode in kernel code.
pub fn invalid_opcode() -> ! {
    kprintln!("[fault] executing ud2 in the kernel");
    // SAFETY: deliberately raises #UD; the handler reports and ends the run.
    unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
    give_up("ud2 returned", "")
}

/// An integer division by zero.
pub fn divide_by_zero() -> ! {
    let divisor = black_box(0u64);
    kprintln!("[fault] dividing 1000 by zero");
    let quotient: u64;
    // SAFETY: deliberately raises #DE with `div`; Rust's own check would panic instead.
    unsafe {
        core::arch::asm!(
            "div {divisor}",
            divisor = in(reg) divisor,
            inout("rax") 1000u64 => quotient,
            inout("rdx") 0u64 => _,
            options(nomem, nostack)
        )
    };
    give_up("the division returned", quotient)
}

/// A pointer with bits 63..47 not all equal: #GP, not #PF, and CR2 is not set.
pub fn non_canonical() -> ! {
    let pointer = black_box(0x8000_0000_0000_0000u64) as *const u64;
    kprintln!("[fault] reading through the non-canonical pointer {pointer:p}");
    // SAFETY: deliberately reads a non-canonical address: the CPU raises #GP.
    let value = unsafe { pointer.read_volatile() };
    give_up("the non-canonical read returned", value)
}
