//! Workloads that attack the host rather than the kernel: page tables that loop or point
//! past RAM, IDTs the host cannot follow, an IDT rewritten in a loop, garbage on the
//! debug-exit port. The host must report each and end cleanly; none of them is a bug the
//! kernel could survive.

use crate::exceptions::finish;
use crate::kprintln;
use crate::vmm::active_pml4;
use abi::exit::FAILURE;
use core::hint::black_box;
use mm::paging::{PRESENT, WRITABLE};
use x86_64::VirtAddr;
use x86_64::instructions::tables::{lidt, sidt};
use x86_64::structures::DescriptorTablePointer;

/// A PML4 slot no variant uses.
const SLOT: u64 = 300;

fn sign_extend(va: u64) -> u64 {
    if va & (1 << 47) != 0 {
        va | 0xffff_0000_0000_0000
    } else {
        va
    }
}

/// Write `entry` into the active PML4's `slot` (the PML4 is identity-mapped in every
/// variant's low memory) and flush the TLB.
fn set_pml4_entry(slot: u64, entry: u64) {
    let pml4 = active_pml4() as *mut u64;
    // SAFETY: the active PML4 is a page of RAM reachable at its physical address through
    // the identity map, and `slot` < 512.
    unsafe { pml4.add(slot as usize).write_volatile(entry) };
    x86_64::instructions::tlb::flush_all();
}

/// A PML4 entry that points at the PML4 itself: every walk through slot 300 loops back to
/// the same table at each level. Then a read whose loop ends at an empty entry.
pub fn page_table_loop() -> ! {
    let pml4 = active_pml4();
    set_pml4_entry(SLOT, pml4 | PRESENT | WRITABLE);
    // Indices 300, 300, 300, then 5: the last level reads PML4[5], which is empty.
    let va = sign_extend((SLOT << 39) | (SLOT << 30) | (SLOT << 21) | (5 << 12));
    kprintln!(
        "[hostile] PML4[{SLOT}] points at the PML4 itself ({pml4:#x}); reading {va:#x}, whose walk loops to an empty entry"
    );
    // SAFETY: deliberately reads through the loop: the walk ends at a not-present entry.
    let value = unsafe { black_box(va as *const u64).read_volatile() };
    kprintln!("[hostile] the read returned {value:#x}");
    finish(FAILURE)
}

/// A PML4 entry whose PDPT would be 1 TiB up, far past RAM; then a read through it.
pub fn page_table_past_ram() -> ! {
    let table = 1u64 << 40;
    set_pml4_entry(SLOT, table | PRESENT | WRITABLE);
    let va = sign_extend(SLOT << 39);
    kprintln!("[hostile] PML4[{SLOT}] points at a table at {table:#x}, past RAM; reading {va:#x}");
    // SAFETY: deliberately reads through a table outside RAM.
    let value = unsafe { black_box(va as *const u64).read_volatile() };
    kprintln!("[hostile] the read returned {value:#x}");
    finish(FAILURE)
}

/// Room for the 32 exception gates of a copied IDT.
#[repr(C, align(16))]
struct Gates([u64; 64]);

static mut HOSTILE_IDT: Gates = Gates([0; 64]);

/// Every exception gate points at `handler`; then `ud2`. The line is printed after the IDT is
/// loaded, as a kernel logs its setup: its port writes are the exits where a host sees the
/// new gates.
pub fn idt_pointing_at(handler: u64, what: &str, selectors: &crate::cpu::Selectors) -> ! {
    crate::idt::load_every_exception_at(handler, selectors);
    kprintln!("[hostile] every exception gate now points at {handler:#x} ({what}); executing ud2");
    // SAFETY: deliberately raises #UD with handlers that cannot run.
    unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
    finish(FAILURE)
}

/// Rewrites the IDT over and over (a copy with its gates moved, `lidt` back and forth), with
/// a serial line between rewrites so the host sees exits; then takes one #UD the kernel's own
/// handler reports.
pub fn idt_churn(rounds: u32) -> ! {
    let original = sidt();
    for round in 0..rounds {
        // A valid IDT whose gates point at the kernel's own stubs: copy the current gates.
        let source = original.base.as_ptr::<u64>();
        let idt = (&raw mut HOSTILE_IDT).cast::<u64>();
        for i in 0..64 {
            // SAFETY: within the 32 gates of the original IDT (4 KiB of mapped kernel data)
            // and of our copy, which nothing else uses.
            unsafe { idt.add(i).write_volatile(source.add(i).read_volatile()) };
        }
        let copy = DescriptorTablePointer {
            limit: (32 * 16 - 1) as u16,
            base: VirtAddr::new((&raw const HOSTILE_IDT) as u64),
        };
        // SAFETY: both IDTs hold the kernel's own gates.
        unsafe { lidt(if round % 2 == 0 { &copy } else { &original }) };
        if round % 64 == 0 {
            kprintln!("[hostile] IDT rewrite {round} of {rounds}");
        }
    }
    // SAFETY: the original IDT is back in place.
    unsafe { lidt(&original) };
    kprintln!("[hostile] {rounds} IDT rewrites done; executing ud2");
    // SAFETY: deliberately raises #UD; the kernel's handler reports it and ends the run.
    unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
    finish(FAILURE)
}

/// Garbage on the debug-exit port: wide writes and a read, before the real exit.
pub fn debug_exit_garbage() -> ! {
    kprintln!("[hostile] writing 0xdeadbeef as a dword to the debug-exit port");
    let mut port = x86_64::instructions::port::Port::<u32>::new(abi::ports::DEBUG_EXIT);
    // SAFETY: the debug-exit port ends the VM; the host takes the low byte as the code.
    unsafe { port.write(0xdead_beef) };
    finish(FAILURE)
}

/// One line of flood: 63 printable bytes and a newline, so a capped log stays readable.
const FLOOD_LINE: &[u8; 64] = b"flood 0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTU\n";

/// A console flood that never waits for the transmitter: `bytes_by_out` bytes one `out` at
/// a time, then `bytes_by_rep` by `rep outsb` a page at a time (one VM exit a page), then a
/// last line and a clean exit. The host must keep its memory bounded and say what it cut.
pub fn serial_flood(bytes_by_out: usize, bytes_by_rep: usize) -> ! {
    kprintln!(
        "[hostile] flooding COM1: {bytes_by_out} bytes by out, then {bytes_by_rep} by rep outsb"
    );
    let port = abi::ports::SERIAL_COM1;
    let mut data = x86_64::instructions::port::Port::<u8>::new(port);
    for i in 0..bytes_by_out {
        // SAFETY: writing THR of COM1 only affects the UART.
        unsafe { data.write(FLOOD_LINE[i % FLOOD_LINE.len()]) };
    }
    let mut page = [0u8; 4096];
    for (i, byte) in page.iter_mut().enumerate() {
        *byte = FLOOD_LINE[i % FLOOD_LINE.len()];
    }
    let mut left = bytes_by_rep;
    while left > 0 {
        let count = left.min(page.len());
        // SAFETY: `rep outsb` reads `count` bytes from `page` (in bounds) and writes them to
        // COM1's THR; it only advances RSI and RCX, declared as clobbered.
        unsafe {
            core::arch::asm!(
                "rep outsb",
                in("dx") port,
                inout("rsi") page.as_ptr() => _,
                inout("rcx") count => _,
                options(nostack, preserves_flags, readonly)
            )
        };
        left -= count;
    }
    kprintln!("[hostile] flood done");
    finish(abi::exit::SUCCESS)
}
