//! BoxKernel's VMM (seed 000, section 3) in five variants: the faithful one with its bugs, a
//! second bug (unmasked entries), and the seed's three fixes.
//!
//! Every variant builds the same page tables; they differ only in how the kernel reaches a
//! page-table frame, given its physical address:
//!
//! | variant        | a table at physical P is reached at          |
//! |----------------|-----------------------------------------------|
//! | `boxkernel`    | P itself (bug: only right inside the identity map) |
//! | `boxkernel-nx` | the raw entry with the low 12 bits cleared (bug: NX stays set) |
//! | `identity4g`   | P, with the identity map widened to 4 GiB (fix 1) |
//! | `hhdm`         | P + 0xFFFF_8800_0000_0000, all RAM mapped there (fix 2) |
//! | `recursive`    | its address through PML4 slot 510 (fix 3) |

pub mod dump;
pub mod heap;

use crate::pmm::{Zeroing, pmm_alloc, pmm_alloc_zero, pmm_free};
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use mm::paging::{
    ADDR_MASK, ENTRIES, HUGE, KERNEL_RW, Level, NO_EXECUTE, PAGE_SIZE, USER, USER_TABLE, canonical,
    entry_phys, index, is_present, make_entry,
};
use x86_64::instructions::tlb;
use x86_64::registers::control::{Cr3, Cr3Flags};
use x86_64::structures::paging::PhysFrame;
use x86_64::{PhysAddr, VirtAddr};

/// What vmm_init identity-maps with 4 KiB pages (seed 000, 1.4).
pub const IDENTITY_MAP_END: u64 = 64 << 20;
/// The seed's fix 1 widens it to 4 GiB.
pub const IDENTITY4G_END: u64 = 4 << 30;
/// Fix 2: every byte of RAM also appears here (Linux's old direct-map base, as in the seed).
pub const HHDM_BASE: u64 = 0xffff_8800_0000_0000;
/// Fix 3: the PML4 entry that points at the PML4 itself.
pub const RECURSIVE_SLOT: usize = 510;
/// A page the recursive variant maps any frame at to touch it (its own PML4 slot, 509).
const SCRATCH_PAGE: u64 = 0xffff_fe80_0000_0000;

pub type Table = [u64; ENTRIES];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Variant {
    BoxKernel,
    BoxKernelNx,
    Identity4g,
    Hhdm,
    Recursive,
}

impl Variant {
    pub const ALL: [Variant; 5] = [
        Variant::BoxKernel,
        Variant::BoxKernelNx,
        Variant::Identity4g,
        Variant::Hhdm,
        Variant::Recursive,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::BoxKernel => "boxkernel",
            Variant::BoxKernelNx => "boxkernel-nx",
            Variant::Identity4g => "identity4g",
            Variant::Hhdm => "hhdm",
            Variant::Recursive => "recursive",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Variant::BoxKernel => "seed 000 as written: physical addresses used as pointers",
            Variant::BoxKernelNx => {
                "boxkernel, with NX on heap tables and entries used unmasked as pointers"
            }
            Variant::Identity4g => "fix 1: identity map widened to 4 GiB",
            Variant::Hhdm => "fix 2: all RAM mapped at 0xffff880000000000, phys_to_virt everywhere",
            Variant::Recursive => "fix 3: tables reached through recursive PML4 slot 510",
        }
    }

    pub fn parse(name: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.name() == name)
    }
}

static VARIANT: AtomicU8 = AtomicU8::new(Variant::BoxKernel as u8);
/// Physical address of the kernel's PML4, once vmm_init built it.
static KERNEL_PML4: AtomicU64 = AtomicU64::new(0);
/// Set once CR3 holds a PML4 built here: the direct map and the recursive slot exist only then.
static LIVE: AtomicBool = AtomicBool::new(false);

pub fn variant() -> Variant {
    // Asked several times per page-table walk: a plain match, no search.
    match VARIANT.load(Ordering::Relaxed) {
        1 => Variant::BoxKernelNx,
        2 => Variant::Identity4g,
        3 => Variant::Hhdm,
        4 => Variant::Recursive,
        _ => Variant::BoxKernel,
    }
}

fn live() -> bool {
    LIVE.load(Ordering::Relaxed)
}

/// An address space: BoxKernel's `vmm_context_t`, reduced to the physical address of its PML4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    pub pml4: u64,
}

pub fn kernel_context() -> Context {
    Context {
        pml4: KERNEL_PML4.load(Ordering::Relaxed),
    }
}

/// The PML4 in CR3, kept here because reading CR3 may cost a VM exit on every map_page.
static ACTIVE_PML4: AtomicU64 = AtomicU64::new(abi::boot::BOOT_PAGE_TABLES);

pub fn active_pml4() -> u64 {
    ACTIVE_PML4.load(Ordering::Relaxed)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmmError {
    OutOfMemory,
    AlreadyMapped { va: u64, entry: u64 },
    HugePageInTheWay { va: u64, level: Level },
    NotMapped { va: u64 },
}

impl fmt::Display for VmmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfMemory => f.write_str("out of physical memory"),
            Self::AlreadyMapped { va, entry } => {
                write!(f, "{va:#x} is already mapped (entry {entry:#x})")
            }
            Self::HugePageInTheWay { va, level } => {
                write!(f, "{va:#x} lies in a large page at the {level} level")
            }
            Self::NotMapped { va } => write!(f, "{va:#x} is not mapped"),
        }
    }
}

/// Fix 2's translation. Before CR3 holds the kernel's own tables there is no direct map yet,
/// and the boot identity map is what reaches low frames.
pub fn phys_to_virt(phys: u64) -> u64 {
    if live() { HHDM_BASE + phys } else { phys }
}

/// The address of the table of `level` on the path of `va`, through the recursive slot.
fn recursive_table(va: u64, level: Level) -> *mut Table {
    let r = RECURSIVE_SLOT as u64;
    let [i4, i3, i2, _] = mm::paging::indices(va).map(|i| i as u64);
    let raw = match level {
        Level::Pml4 => (r << 39) | (r << 30) | (r << 21) | (r << 12),
        Level::Pdpt => (r << 39) | (r << 30) | (r << 21) | (i4 << 12),
        Level::Pd => (r << 39) | (r << 30) | (i4 << 21) | (i3 << 12),
        Level::Pt => (r << 39) | (i4 << 30) | (i3 << 21) | (i2 << 12),
    };
    canonical(raw) as *mut Table
}

/// The recursive slot only reaches the active address space.
fn recursive_ready(ctx: Context) -> bool {
    variant() == Variant::Recursive && live() && ctx.pml4 == active_pml4()
}

/// The context's PML4 as the kernel reaches it.
#[inline(always)]
fn pml4_table(ctx: Context) -> *mut Table {
    match variant() {
        // Same cast as bug #2, on the PML4 frame.
        Variant::BoxKernel | Variant::BoxKernelNx | Variant::Identity4g => ctx.pml4 as *mut Table,
        Variant::Hhdm => phys_to_virt(ctx.pml4) as *mut Table,
        Variant::Recursive if recursive_ready(ctx) => recursive_table(0, Level::Pml4),
        Variant::Recursive => ctx.pml4 as *mut Table,
    }
}

/// The table of `level` that `entry` (on the path of `va`) points at, as the kernel reaches it.
#[inline(always)]
fn next_table(ctx: Context, entry: u64, va: u64, level: Level) -> *mut Table {
    match variant() {
        // BUG #2/#3/#4 (seed 000, 3.1 and 8): the frame's physical address cast to a pointer.
        Variant::BoxKernel | Variant::Identity4g => entry_phys(entry) as *mut Table,
        // The unmasked-entry bug: only the 12 low flag bits are cleared, so NX (bit 63) stays
        // in the "pointer", which is then not canonical.
        Variant::BoxKernelNx => (entry & !0xfff) as *mut Table,
        Variant::Hhdm => phys_to_virt(entry_phys(entry)) as *mut Table,
        Variant::Recursive if recursive_ready(ctx) => recursive_table(va, level),
        Variant::Recursive => entry_phys(entry) as *mut Table,
    }
}

fn level_below(level: Level) -> Level {
    match level {
        Level::Pml4 => Level::Pdpt,
        Level::Pdpt => Level::Pd,
        Level::Pd | Level::Pt => Level::Pt,
    }
}

/// Flags of a table entry created on the way to a leaf with `leaf_flags`: the leaf decides
/// the rights, except that NX on the leaf is repeated on its tables.
fn table_flags(leaf_flags: u64) -> u64 {
    (if leaf_flags & USER != 0 {
        USER_TABLE
    } else {
        KERNEL_RW
    }) | (leaf_flags & NO_EXECUTE)
}

/// BoxKernel's `vmm_alloc_page_table`: a zeroed frame for a new table, by physical address.
#[inline(never)]
fn alloc_page_table(ctx: Context) -> Result<u64, VmmError> {
    if recursive_ready(ctx) {
        // Zeroed after it is linked in, through its recursive address.
        pmm_alloc(1).ok_or(VmmError::OutOfMemory)
    } else {
        pmm_alloc_zero(1).ok_or(VmmError::OutOfMemory)
    }
}

/// Run `f` with `ctx` in CR3 when the variant can only edit the active address space.
fn in_context<R>(ctx: Context, f: impl FnOnce() -> R) -> R {
    let active = active_pml4();
    if variant() != Variant::Recursive || !live() || ctx.pml4 == active {
        return f();
    }
    switch_to(ctx);
    let result = f();
    switch_to(Context { pml4: active });
    result
}

pub fn switch_to(ctx: Context) {
    let frame = PhysFrame::containing_address(PhysAddr::new_truncate(ctx.pml4));
    // SAFETY: every context shares the kernel's entries (identity map and upper half), so the
    // code and stack running now stay mapped across the switch.
    unsafe { Cr3::write(frame, Cr3Flags::empty()) };
    ACTIVE_PML4.store(ctx.pml4, Ordering::Relaxed);
}

fn flush(ctx: Context, va: u64) {
    if ctx.pml4 == active_pml4() {
        tlb::flush(VirtAddr::new_truncate(va));
    }
}

/// BoxKernel's `vmm_get_or_create_table`: walk from the PML4 down to the table of `level`
/// on the path of `va`, creating missing tables on the way.
#[inline(never)]
pub fn vmm_get_or_create_table(
    ctx: Context,
    va: u64,
    level: Level,
    leaf_flags: u64,
) -> Result<*mut Table, VmmError> {
    let mut table = pml4_table(ctx);
    let mut current = Level::Pml4;
    while current != level {
        let below = level_below(current);
        // SAFETY: `table` is how this variant reaches the table at this level (see the module
        // docs); for the bug variants that is exactly what may fault.
        let slot = unsafe { (*table).as_mut_ptr().add(index(va, current)) };
        // SAFETY: as above.
        let mut entry = unsafe { slot.read_volatile() };
        let fresh = !is_present(entry);
        if fresh {
            let frame = alloc_page_table(ctx)?;
            entry = make_entry(frame, table_flags(leaf_flags));
            // SAFETY: as above.
            unsafe { slot.write_volatile(entry) };
        } else if entry & HUGE != 0 {
            return Err(VmmError::HugePageInTheWay { va, level: current });
        } else if leaf_flags & USER != 0 && entry & USER == 0 {
            entry |= USER;
            // SAFETY: as above.
            unsafe { slot.write_volatile(entry) };
        }
        table = next_table(ctx, entry, va, below);
        if fresh && recursive_ready(ctx) {
            tlb::flush(VirtAddr::new_truncate(table as u64));
            // SAFETY: the recursive slot maps the new table's frame at `table`, just flushed.
            unsafe { table.write_bytes(0, 1) };
        }
        current = below;
    }
    Ok(table)
}

/// BoxKernel's `vmm_get_or_create_pte`.
pub fn vmm_get_or_create_pte(ctx: Context, va: u64, flags: u64) -> Result<*mut u64, VmmError> {
    let pt = vmm_get_or_create_table(ctx, va, Level::Pt, flags)?;
    // SAFETY: `pt` is the PT on the path of `va`, reached the variant's way.
    Ok(unsafe { (*pt).as_mut_ptr().add(index(va, Level::Pt)) })
}

/// BoxKernel's `vmm_map_page`: map the 4 KiB page at `va` to the frame at `phys`.
pub fn vmm_map_page(ctx: Context, va: u64, phys: u64, flags: u64) -> Result<u64, VmmError> {
    in_context(ctx, || {
        let pte = vmm_get_or_create_pte(ctx, va, flags)?;
        // SAFETY: `pte` points into the PT on the path of `va`.
        let old = unsafe { pte.read_volatile() };
        if is_present(old) {
            return Err(VmmError::AlreadyMapped { va, entry: old });
        }
        let entry = make_entry(phys, flags);
        // SAFETY: as above.
        unsafe { pte.write_volatile(entry) };
        flush(ctx, va);
        Ok(entry)
    })
}

/// Map `[va, va + len)` to `[phys, phys + len)` with 4 KiB pages, a page table at a time
/// (vmm_init's identity map: 16,384 pages). All three must be 2 MiB aligned.
fn vmm_map_range(ctx: Context, va: u64, phys: u64, len: u64, flags: u64) -> Result<(), VmmError> {
    const SPAN: u64 = 2 << 20;
    let mut offset = 0;
    while offset < len {
        let pt = vmm_get_or_create_table(ctx, va + offset, Level::Pt, flags)?;
        for (i, slot) in (0u64..).zip(0..ENTRIES) {
            // SAFETY: `pt` is the PT on the path of the range, reached the variant's way.
            unsafe { (*pt)[slot] = make_entry(phys + offset + i * PAGE_SIZE, flags) };
        }
        offset += SPAN;
    }
    Ok(())
}

/// Map `[va, va + len)` to `[phys, phys + len)` with 2 MiB pages (the direct map).
fn map_large(ctx: Context, va: u64, phys: u64, len: u64, flags: u64) -> Result<(), VmmError> {
    const LARGE: u64 = 2 << 20;
    let mut offset = 0;
    while offset < len {
        let pd = vmm_get_or_create_table(ctx, va + offset, Level::Pd, flags)?;
        // SAFETY: `pd` is the PD on the path of the address, reached the variant's way.
        unsafe {
            (*pd)
                .as_mut_ptr()
                .add(index(va + offset, Level::Pd))
                .write_volatile(make_entry(phys + offset, flags | HUGE));
        }
        offset += LARGE;
    }
    Ok(())
}

/// Where a walk that allocates nothing ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A 4 KiB leaf, whether present or not: its slot in the PT.
    Pte(*mut u64),
    /// A large page mapped at `level`, with its entry.
    Large { level: Level, entry: u64 },
    /// The entry at `level` is not present.
    Missing { level: Level },
}

/// BoxKernel's `vmm_get_pte_noalloc` (bug site #3 in the boxkernel variants).
#[inline(never)]
pub fn vmm_get_pte_noalloc(ctx: Context, va: u64) -> Lookup {
    let mut table = pml4_table(ctx);
    for level in [Level::Pml4, Level::Pdpt, Level::Pd] {
        // SAFETY: `table` is how this variant reaches the table at this level.
        let entry = unsafe { (*table).as_ptr().add(index(va, level)).read_volatile() };
        if !is_present(entry) {
            return Lookup::Missing { level };
        }
        if entry & HUGE != 0 && level != Level::Pml4 {
            return Lookup::Large { level, entry };
        }
        table = next_table(ctx, entry, va, level_below(level));
    }
    // SAFETY: `table` is the PT on the path of `va`.
    Lookup::Pte(unsafe { (*table).as_mut_ptr().add(index(va, Level::Pt)) })
}

/// The current leaf entry mapping `va`, if any.
pub fn leaf_entry(ctx: Context, va: u64) -> Option<u64> {
    in_context(ctx, || match vmm_get_pte_noalloc(ctx, va) {
        // SAFETY: the slot lies in the PT on the path of `va`.
        Lookup::Pte(pte) => Some(unsafe { pte.read_volatile() }).filter(|e| is_present(*e)),
        Lookup::Large { entry, .. } => Some(entry),
        Lookup::Missing { .. } => None,
    })
}

/// BoxKernel's `vmm_virt_to_phys`.
pub fn vmm_virt_to_phys(ctx: Context, va: u64) -> Option<u64> {
    in_context(ctx, || match vmm_get_pte_noalloc(ctx, va) {
        Lookup::Pte(pte) => {
            // SAFETY: the slot lies in the PT on the path of `va`.
            let entry = unsafe { pte.read_volatile() };
            is_present(entry).then(|| entry_phys(entry) | (va & (PAGE_SIZE - 1)))
        }
        Lookup::Large { level, entry } => {
            let size_mask = (1u64 << level.shift()) - 1;
            Some((entry & ADDR_MASK & !size_mask) | (va & size_mask))
        }
        Lookup::Missing { .. } => None,
    })
}

/// Remove the 4 KiB mapping at `va`; returns the frame it pointed at.
pub fn vmm_unmap_page(ctx: Context, va: u64) -> Result<u64, VmmError> {
    in_context(ctx, || match vmm_get_pte_noalloc(ctx, va) {
        Lookup::Pte(pte) => {
            // SAFETY: the slot lies in the PT on the path of `va`.
            let entry = unsafe { pte.read_volatile() };
            if !is_present(entry) {
                return Err(VmmError::NotMapped { va });
            }
            // SAFETY: as above.
            unsafe { pte.write_volatile(0) };
            flush(ctx, va);
            Ok(entry_phys(entry))
        }
        Lookup::Large { level, .. } => Err(VmmError::HugePageInTheWay { va, level }),
        Lookup::Missing { .. } => Err(VmmError::NotMapped { va }),
    })
}

/// Zero the frame at `phys` through the variant's way to reach it.
fn zero_frame(phys: u64) {
    with_frame(phys, |frame| frame.fill(0));
}

/// Let the kernel touch the frame at `phys` the variant's way.
pub fn with_frame<R>(phys: u64, f: impl FnOnce(&mut [u8; 4096]) -> R) -> R {
    let page = match variant() {
        Variant::Recursive if live() => {
            let pte = scratch_pte();
            // SAFETY: the scratch PT exists since vmm_init and is shared by every context.
            unsafe { pte.write_volatile(make_entry(phys, KERNEL_RW | NO_EXECUTE)) };
            tlb::flush(VirtAddr::new_truncate(SCRATCH_PAGE));
            SCRATCH_PAGE
        }
        Variant::Hhdm => phys_to_virt(phys),
        // The identity map reaches the frame only below its end: the same assumption as bug #1.
        _ => phys,
    };
    // SAFETY: `page` maps the frame at `phys` (see above) and nothing else uses it meanwhile.
    let result = f(unsafe { &mut *(page as *mut [u8; 4096]) });
    if variant() == Variant::Recursive && live() {
        // SAFETY: as above.
        unsafe { scratch_pte().write_volatile(0) };
        tlb::flush(VirtAddr::new_truncate(SCRATCH_PAGE));
    }
    result
}

fn scratch_pte() -> *mut u64 {
    let pt = recursive_table(SCRATCH_PAGE, Level::Pt);
    // SAFETY: address arithmetic only.
    unsafe { (*pt).as_mut_ptr().add(index(SCRATCH_PAGE, Level::Pt)) }
}

/// What vmm_init built, for the boot log.
#[derive(Debug, Clone, Copy)]
pub struct InitSummary {
    pub pml4: u64,
    pub identity_end: u64,
    pub direct_map_end: Option<u64>,
    pub table_frames: usize,
}

/// BoxKernel's `vmm_init`: a kernel PML4, the identity map with 4 KiB pages, the variant's
/// extras, and the switch to it.
pub fn vmm_init(chosen: Variant, ram_ranges: impl Iterator<Item = (u64, u64)>) -> InitSummary {
    VARIANT.store(chosen as u8, Ordering::Relaxed);
    crate::pmm::set_zeroing(match chosen {
        Variant::Hhdm | Variant::Recursive => Zeroing::Through(zero_frame),
        Variant::BoxKernel | Variant::BoxKernelNx | Variant::Identity4g => Zeroing::ThroughPhysical,
    });
    let free_before = crate::pmm::free_frames();
    let pml4 = match pmm_alloc_zero(1) {
        Some(pml4) => pml4,
        None => panic!("vmm_init: no frame for the kernel PML4"),
    };
    let ctx = Context { pml4 };
    let identity_end = if chosen == Variant::Identity4g {
        IDENTITY4G_END
    } else {
        IDENTITY_MAP_END
    };
    let fail = |error: VmmError| -> ! { panic!("vmm_init: {error}") };
    vmm_map_range(ctx, 0, 0, IDENTITY_MAP_END, KERNEL_RW).unwrap_or_else(|e| fail(e));
    if chosen == Variant::Identity4g {
        // The rest of the 4 GiB with 2 MiB pages: the seed's 4 KiB loop would need 2,048 page
        // tables and a million stores, seconds of boot under an emulating hypervisor.
        map_large(
            ctx,
            IDENTITY_MAP_END,
            IDENTITY_MAP_END,
            IDENTITY4G_END - IDENTITY_MAP_END,
            KERNEL_RW,
        )
        .unwrap_or_else(|e| fail(e));
    }
    let mut direct_map_end = None;
    if chosen == Variant::Hhdm {
        const LARGE: u64 = 2 << 20;
        for (start, end) in ram_ranges {
            let start = start & !(LARGE - 1);
            let end = end.next_multiple_of(LARGE);
            map_large(
                ctx,
                HHDM_BASE + start,
                start,
                end - start,
                KERNEL_RW | NO_EXECUTE,
            )
            .unwrap_or_else(|e| fail(e));
            direct_map_end = direct_map_end.max(Some(end));
        }
    }
    if chosen == Variant::Recursive {
        // Tables for the scratch page, so later contexts share them through the upper half.
        vmm_get_or_create_table(ctx, SCRATCH_PAGE, Level::Pt, KERNEL_RW | NO_EXECUTE)
            .unwrap_or_else(|e| fail(e));
        // SAFETY: the PML4 frame is inside the boot identity map (allocated from the bottom).
        unsafe {
            (*(pml4 as *mut Table))[RECURSIVE_SLOT] = make_entry(pml4, KERNEL_RW | NO_EXECUTE);
        }
    }
    let table_frames = free_before - crate::pmm::free_frames();
    KERNEL_PML4.store(pml4, Ordering::Relaxed);
    switch_to(ctx);
    LIVE.store(true, Ordering::Relaxed);
    InitSummary {
        pml4,
        identity_end,
        direct_map_end,
        table_frames,
    }
}

/// A new address space sharing the kernel's entries: the identity map in slot 0 and the whole
/// upper half (with its own recursive slot in the recursive variant).
pub fn new_context() -> Result<Context, VmmError> {
    let kernel = kernel_context();
    let pml4 = pmm_alloc_zero(1).ok_or(VmmError::OutOfMemory)?;
    let mut kernel_entries = [0u64; ENTRIES];
    in_context(kernel, || {
        // SAFETY: reading the kernel PML4 the variant's way.
        kernel_entries = unsafe { *pml4_table(kernel) };
    });
    with_frame(pml4, |frame| {
        let mut write = |slot: usize, entry: u64| {
            frame[slot * 8..slot * 8 + 8].copy_from_slice(&entry.to_le_bytes());
        };
        write(0, kernel_entries[0]);
        for (slot, entry) in kernel_entries.iter().enumerate().skip(ENTRIES / 2) {
            write(slot, *entry);
        }
        if variant() == Variant::Recursive {
            write(RECURSIVE_SLOT, make_entry(pml4, KERNEL_RW | NO_EXECUTE));
        }
    });
    Ok(Context { pml4 })
}

/// Free everything a context owns in the lower half except the shared slot 0: leaf frames,
/// tables, and the PML4. Returns the number of frames given back.
pub fn destroy_context(ctx: Context) -> usize {
    if ctx.pml4 == active_pml4() {
        switch_to(kernel_context());
    }
    let mut freed = 0;
    in_context(ctx, || {
        let pml4 = pml4_table(ctx);
        for i4 in 1..ENTRIES / 2 {
            // SAFETY: reading the context's PML4 the variant's way.
            let e4 = unsafe { (*pml4)[i4] };
            if is_present(e4) {
                freed += free_subtree(ctx, e4, (i4 as u64) << 39, Level::Pdpt);
                // SAFETY: as above.
                unsafe { (*pml4)[i4] = 0 };
            }
        }
    });
    pmm_free(ctx.pml4, 1);
    freed + 1
}

fn free_subtree(ctx: Context, entry: u64, va: u64, level: Level) -> usize {
    let table = next_table(ctx, entry, va, level);
    let mut freed = 0;
    for i in 0..ENTRIES {
        // SAFETY: `table` is the table `entry` points at, reached the variant's way.
        let e = unsafe { (*table)[i] };
        if !is_present(e) {
            continue;
        }
        if level == Level::Pt {
            pmm_free(entry_phys(e), 1);
            freed += 1;
        } else if e & HUGE == 0 {
            let child_va = va | ((i as u64) << level.shift());
            freed += free_subtree(ctx, e, child_va, level_below(level));
        }
    }
    pmm_free(entry_phys(entry), 1);
    freed + 1
}
