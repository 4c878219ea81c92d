//! The kernel heap at 0xFFFF_8000_0000_0000 (seed 000, 1.3 and 4): vmalloc over the first
//! 512 KiB, and demand paging for all of it, done by the #PF handler.

use super::{Context, Variant, VmmError, kernel_context, variant, vmm_map_page, vmm_unmap_page};
use crate::pmm::{pmm_alloc, pmm_free};
use crate::sync::Global;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};
use mm::paging::{KERNEL_RW, NO_EXECUTE, PAGE_SIZE, page_base};

pub const HEAP_BASE: u64 = abi::boot::KERNEL_HEAP_BASE;
pub const HEAP_SIZE: u64 = abi::boot::KERNEL_HEAP_SIZE;
/// vmalloc's arena; the heap above it is only ever demand-paged.
pub const VMALLOC_END: u64 = HEAP_BASE + 0x8_0000;

const MAX_ALLOCATIONS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeapError {
    ZeroSize,
    ArenaFull { size: u64 },
    TooManyAllocations,
    NotAllocated { va: u64 },
    Vmm(VmmError),
}

impl fmt::Display for HeapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroSize => f.write_str("vmalloc(0)"),
            Self::ArenaFull { size } => write!(f, "no room for {size} bytes in the vmalloc arena"),
            Self::TooManyAllocations => {
                write!(f, "more than {MAX_ALLOCATIONS} live vmalloc allocations")
            }
            Self::NotAllocated { va } => write!(f, "vfree({va:#x}): not a vmalloc address"),
            Self::Vmm(e) => write!(f, "{e}"),
        }
    }
}

impl From<VmmError> for HeapError {
    fn from(e: VmmError) -> Self {
        Self::Vmm(e)
    }
}

#[derive(Debug, Clone, Copy)]
struct Allocation {
    va: u64,
    pages: usize,
    phys: u64,
}

static VMALLOC_NEXT: AtomicU64 = AtomicU64::new(HEAP_BASE);
static ALLOCATIONS: Global<[Option<Allocation>; MAX_ALLOCATIONS]> = Global::new("vmalloc's table");

/// Demand-paging counters, for the workload's summary.
#[derive(Debug, Clone, Copy, Default)]
pub struct DemandStats {
    pub faults: u64,
    pub frames_above_identity: u64,
    pub highest_frame: u64,
}

static STATS: Global<DemandStats> = Global::new("heap statistics");

pub fn init() {
    ALLOCATIONS.set([None; MAX_ALLOCATIONS]);
    STATS.set(DemandStats::default());
}

pub fn stats() -> DemandStats {
    STATS.with(|s| *s)
}

/// Heap pages carry NX except in the faithful variant, whose flags are the seed's.
pub fn heap_flags() -> u64 {
    if variant() == Variant::BoxKernel {
        KERNEL_RW
    } else {
        KERNEL_RW | NO_EXECUTE
    }
}

pub fn is_heap(addr: u64) -> bool {
    (HEAP_BASE..HEAP_BASE + HEAP_SIZE).contains(&addr)
}

/// BoxKernel's `vmalloc`.
pub fn vmalloc(size: u64) -> Result<u64, HeapError> {
    if size == 0 {
        return Err(HeapError::ZeroSize);
    }
    let pages = size.div_ceil(PAGE_SIZE);
    let va = VMALLOC_NEXT.load(Ordering::Relaxed);
    if va + pages * PAGE_SIZE > VMALLOC_END {
        return Err(HeapError::ArenaFull { size });
    }
    let slot = ALLOCATIONS
        .with(|table| table.iter().position(Option::is_none))
        .ok_or(HeapError::TooManyAllocations)?;
    let phys = vmm_alloc_pages(kernel_context(), va, pages as usize, heap_flags())?;
    ALLOCATIONS.with(|table| {
        table[slot] = Some(Allocation {
            va,
            pages: pages as usize,
            phys,
        })
    });
    VMALLOC_NEXT.store(va + pages * PAGE_SIZE, Ordering::Relaxed);
    Ok(va)
}

/// BoxKernel's `vmm_alloc_pages`: contiguous frames from the PMM, mapped page by page.
#[inline(never)]
fn vmm_alloc_pages(ctx: Context, va: u64, pages: usize, flags: u64) -> Result<u64, VmmError> {
    let phys = pmm_alloc(pages).ok_or(VmmError::OutOfMemory)?;
    for page in 0..pages as u64 {
        vmm_map_page(ctx, va + page * PAGE_SIZE, phys + page * PAGE_SIZE, flags)?;
    }
    Ok(phys)
}

/// BoxKernel's `vfree`: unmap and give the frames back. The arena itself is a bump allocator.
pub fn vfree(va: u64) -> Result<(), HeapError> {
    let allocation = ALLOCATIONS
        .with(|table| {
            let slot = table.iter().position(|a| a.is_some_and(|a| a.va == va))?;
            table[slot].take()
        })
        .ok_or(HeapError::NotAllocated { va })?;
    for page in 0..allocation.pages as u64 {
        vmm_unmap_page(kernel_context(), va + page * PAGE_SIZE)?;
    }
    pmm_free(allocation.phys, allocation.pages);
    Ok(())
}

/// BoxKernel's `vmm_handle_page_fault` for the heap: map a fresh frame at the faulting page.
/// Returns the page and the frame.
#[inline(never)]
pub fn vmm_handle_page_fault(fault_addr: u64) -> Result<(u64, u64), VmmError> {
    let page = page_base(fault_addr);
    let phys = pmm_alloc(1).ok_or(VmmError::OutOfMemory)?;
    vmm_map_page(kernel_context(), page, phys, heap_flags())?;
    STATS.with(|s| {
        s.faults += 1;
        if phys >= super::IDENTITY_MAP_END {
            s.frames_above_identity += 1;
        }
        s.highest_frame = s.highest_frame.max(phys);
    });
    Ok((page, phys))
}
