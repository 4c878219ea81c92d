//! BoxKernel's PMM (seed 000, section 2) over the memory map: `pmm_alloc` hands out
//! *physical* addresses, and `pmm_alloc_zero` is bug site #1.

use crate::bootinfo::BootInfo;
use crate::sync::Global;
use abi::boot::{BOOT_PAGE_TABLES, BOOT_STACK_TOP, KERNEL_LOAD};
use mm::pmm::{FRAME_SIZE, FrameBitmap, Placement};

/// The PMM manages physical memory from 1 MiB, like BoxKernel's.
pub const BASE: u64 = 0x10_0000;
/// RAM the bitmap can describe; frames above are left unused (and the boot log says so).
pub const MAX_MANAGED: u64 = 64 << 30;
const FRAMES: usize = ((MAX_MANAGED - BASE) / FRAME_SIZE) as usize;

/// One bit per frame, in the kernel's BSS "after the kernel end" as in the seed.
const WORDS: usize = FRAMES.div_ceil(64);
static mut BITMAP: [u64; WORDS] = [0; WORDS];
static PMM: Global<FrameBitmap<'static>> = Global::new("the PMM");

unsafe extern "C" {
    static __kernel_end: u8;
}

/// What `init` found, for the boot log.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub managed_end: u64,
    pub free_frames: usize,
    pub ignored_above: Option<u64>,
}

/// Build the bitmap from the memory map and reserve what the kernel occupies. Allocations
/// come from the bottom until [`set_placement`] says otherwise, so the VMM's own tables are
/// built from frames the boot identity map reaches.
pub fn init(boot: &BootInfo) -> Summary {
    let ram_end = boot
        .memory_map()
        .filter(|e| e.kind == abi::boot::e820::RAM)
        .map(|e| e.end())
        .max()
        .unwrap_or(BASE);
    let managed_end = ram_end.clamp(BASE, MAX_MANAGED);
    let frames = ((managed_end - BASE) / FRAME_SIZE) as usize;
    // SAFETY: the bitmap is used only through the PMM global, created once here.
    let bits = unsafe { core::slice::from_raw_parts_mut((&raw mut BITMAP).cast::<u64>(), WORDS) };
    let mut pmm = match FrameBitmap::new(bits, BASE, frames, Placement::Low) {
        Ok(pmm) => pmm,
        Err(error) => panic!("PMM: {error}"),
    };
    for entry in boot.memory_map() {
        if entry.kind == abi::boot::e820::RAM {
            pmm.add_usable(entry.addr, entry.end());
        }
    }
    let kernel_end = &raw const __kernel_end as u64;
    pmm.reserve(KERNEL_LOAD, kernel_end);
    // The boot tables (0x500000..0x504000) and the boot stack below 0x510000.
    pmm.reserve(BOOT_PAGE_TABLES, BOOT_STACK_TOP);
    let summary = Summary {
        managed_end,
        free_frames: pmm.free_frames(),
        ignored_above: (ram_end > MAX_MANAGED).then_some(MAX_MANAGED),
    };
    PMM.set(pmm);
    summary
}

pub fn set_placement(placement: Placement) {
    PMM.with(|pmm| pmm.set_placement(placement));
}

pub fn free_frames() -> usize {
    PMM.with(|pmm| pmm.free_frames())
}

/// `pages` contiguous frames; their physical address.
pub fn pmm_alloc(pages: usize) -> Option<u64> {
    PMM.with(|pmm| pmm.alloc(pages))
}

/// How `pmm_alloc_zero` reaches a fresh frame; the VMM sets it for its variant.
#[derive(Clone, Copy)]
pub enum Zeroing {
    /// BoxKernel's way: the physical address written through as if it were virtual.
    ThroughPhysical,
    /// Through a mapping the VMM lends for the frame at this physical address.
    Through(fn(u64)),
}

static ZEROING: Global<Zeroing> = Global::new("the frame-zeroing method");

pub fn set_zeroing(zeroing: Zeroing) {
    ZEROING.set(zeroing);
}

/// `pages` contiguous zeroed frames; their physical address.
#[inline(never)]
pub fn pmm_alloc_zero(pages: usize) -> Option<u64> {
    let phys = pmm_alloc(pages)?;
    let len = pages * FRAME_SIZE as usize;
    match ZEROING
        .try_with(|zeroing| *zeroing)
        .unwrap_or(Zeroing::ThroughPhysical)
    {
        Zeroing::ThroughPhysical => {
            // BUG #1 (seed 000, 2.3): the physical address is written through as if it were
            // virtual. Right only while `phys` is inside the identity map (64 MiB, or 4 GiB
            // with identity4g); above it this faults, inside whatever fault handler asked for
            // the frame.
            // SAFETY: not safe in general, which is the point of these variants; the identity
            // map makes it land on the frame as long as the frame is below its end.
            unsafe { core::ptr::write_bytes(phys as *mut u8, 0, len) };
        }
        Zeroing::Through(zero) => {
            for page in 0..pages as u64 {
                zero(phys + page * FRAME_SIZE);
            }
        }
    }
    Some(phys)
}

pub fn pmm_free(phys: u64, pages: usize) {
    if let Err(error) = PMM.with(|pmm| pmm.free(phys, pages)) {
        panic!("pmm_free: {error}");
    }
}
