//! The PC's legacy timer: the 8259A PICs remapped off the exception vectors and the 8254 PIT
//! ticking on IRQ 0, as nearly every hobby kernel sets them up, and the `timer` workload that
//! idles in `sti; hlt` until enough ticks came.

use crate::exceptions::finish;
use crate::kprintln;
use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::instructions::interrupts;
use x86_64::instructions::port::Port;

/// IRQ 0–7 land at 0x20–0x27, IRQ 8–15 at 0x28–0x2f.
pub const IRQ_BASE: u8 = 0x20;
/// The PIT's input clock.
const PIT_HZ: u32 = 1_193_182;
/// The timer workload's rate and length: `hz=` and `ticks=` on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub hz: u32,
    pub ticks: u64,
}

impl Rate {
    /// 100 ticks at 1 kHz: a tenth of a second.
    pub const DEFAULT: Self = Self {
        hz: 1000,
        ticks: 100,
    };
    /// Rates whose PIT count fits 16 bits and is at least 2 (mode 2's smallest).
    pub const HZ: core::ops::RangeInclusive<u32> = 19..=PIT_HZ / 2;
}

static TICKS: AtomicU64 = AtomicU64::new(0);

fn outb(port: u16, value: u8) {
    let mut port: Port<u8> = Port::new(port);
    // SAFETY: the PIC and PIT ports only program those devices; no memory is touched.
    unsafe { port.write(value) };
}

/// Remap both PICs to IRQ_BASE and mask every line but the ones in `unmasked`.
fn remap_pics(unmasked: u16) {
    init_pics(IRQ_BASE, IRQ_BASE + 8, unmasked);
}

/// Initialise both PICs with these vector bases, masking all lines but `unmasked`.
fn init_pics(master_base: u8, slave_base: u8, unmasked: u16) {
    for (port, value) in [
        (0x20, 0x11),
        (0xa0, 0x11),
        (0x21, master_base),
        (0xa1, slave_base),
        (0x21, 0x04),
        (0xa1, 0x02),
        (0x21, 0x01),
        (0xa1, 0x01),
    ] {
        outb(port, value);
    }
    let [low, high] = (!unmasked).to_le_bytes();
    outb(0x21, low);
    outb(0xa1, high);
}

/// Channel 0 as a rate generator at `hz`.
fn start_pit(hz: u32) {
    let [low, high, ..] = (PIT_HZ / hz).to_le_bytes();
    outb(0x43, 0x34);
    outb(0x40, low);
    outb(0x40, high);
}

/// An IRQ from the stubs in `idt`, with interrupts off: count timer ticks, then EOI.
pub fn irq(vector: u8) {
    if vector == IRQ_BASE {
        TICKS.fetch_add(1, Ordering::Relaxed);
    }
    if vector >= IRQ_BASE + 8 {
        outb(0xa0, 0x20);
    }
    outb(0x20, 0x20);
}

/// The classic mistake: the PICs left at the vectors a PC BIOS gives them (IRQ 0 at 0x08,
/// the CPU's #DF vector), then the PIT started and interrupts enabled. The first tick runs
/// the #DF handler, which reports a double fault.
pub fn unremapped_workload() -> ! {
    init_pics(0x08, 0x70, 1 << 0);
    start_pit(1000);
    kprintln!("[timer] PICs at the BIOS's vectors (IRQ 0 at 0x08), PIT at 1000 Hz; sti");
    loop {
        interrupts::enable_and_hlt();
    }
}

/// Hostile: the PIT at the fastest rate it has (a count of 2, about 597 kHz), IRQ 0
/// unmasked, `sti; hlt` until 200 ticks. The host must coalesce what the guest cannot take
/// and stay responsive; the run ends by the guest's own exit.
pub fn pit_flood() -> ! {
    remap_pics(1 << 0);
    outb(0x43, 0x34);
    outb(0x40, 2);
    outb(0x40, 0);
    kprintln!("[hostile] PIT at its fastest rate (count 2); waiting for 200 ticks");
    while TICKS.load(Ordering::Relaxed) < 200 {
        interrupts::enable_and_hlt();
    }
    interrupts::disable();
    remap_pics(0);
    kprintln!("[hostile] 200 ticks");
    finish(abi::exit::SUCCESS)
}

/// Hostile: both PICs given the same vector base, so IRQ n and IRQ n+8 would arrive at one
/// vector; the timer still ticks on IRQ 0. The host's report says so. After 50 ticks every
/// line is masked (the chips keep their bases) and the guest exits 0.
pub fn pic_overlap() -> ! {
    init_pics(IRQ_BASE, IRQ_BASE, 1 << 0);
    start_pit(1000);
    kprintln!(
        "[hostile] both PICs at vectors {IRQ_BASE:#x}-0x27, PIT at 1000 Hz; waiting for 50 ticks"
    );
    while TICKS.load(Ordering::Relaxed) < 50 {
        interrupts::enable_and_hlt();
    }
    interrupts::disable();
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
    kprintln!("[hostile] 50 ticks");
    finish(abi::exit::SUCCESS)
}

/// How the timer workload waits for its ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// `sti; hlt`: the CPU sleeps until the interrupt.
    Halt,
    /// Interrupts on, spinning on the tick count without ever leaving the guest.
    Spin,
}

/// Wait for `rate.ticks` ticks of the PIT at `rate.hz`, then mask everything and exit 0.
pub fn timer_workload(wait: Wait, rate: Rate) -> ! {
    let Rate { hz, ticks: wanted } = rate;
    remap_pics(1 << 0);
    start_pit(hz);
    kprintln!("[timer] PIC remapped to {IRQ_BASE:#x}, PIT at {hz} Hz; waiting for {wanted} ticks");
    if wait == Wait::Spin {
        interrupts::enable();
    }
    while TICKS.load(Ordering::Relaxed) < wanted {
        match wait {
            Wait::Halt => interrupts::enable_and_hlt(),
            Wait::Spin => core::hint::spin_loop(),
        }
    }
    interrupts::disable();
    remap_pics(0);
    // The count reached; one more tick may have come in before `cli`.
    kprintln!("[timer] {wanted} ticks");
    finish(abi::exit::SUCCESS)
}
