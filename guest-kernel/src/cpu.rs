//! Segments the CPU still insists on in long mode: a GDT with kernel and user segments, and a
//! TSS that gives ring-3 traps a kernel stack and #DF a stack of its own.

use crate::sync::Once;
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;

/// IST slot (1-based in the TSS, 0-based in the IDT entry) of the double-fault stack.
pub const DOUBLE_FAULT_IST: u16 = 0;

const STACK_SIZE: usize = 16 * 1024;

#[repr(C, align(16))]
struct Stack([u8; STACK_SIZE]);

/// Separate stacks: a #DF caused by a blown kernel stack must not run on that stack.
static mut DOUBLE_FAULT_STACK: Stack = Stack([0; STACK_SIZE]);
/// Where the CPU switches to when a user process traps into the kernel (TSS.RSP0).
static mut TRAP_STACK: Stack = Stack([0; STACK_SIZE]);

#[derive(Debug, Clone, Copy)]
pub struct Selectors {
    pub kernel_code: SegmentSelector,
    pub kernel_data: SegmentSelector,
    pub user_code: SegmentSelector,
    pub user_data: SegmentSelector,
    pub tss: SegmentSelector,
}

static TSS: Once<TaskStateSegment> = Once::new();
static GDT: Once<(GlobalDescriptorTable, Selectors)> = Once::new();

fn stack_top(stack: *mut Stack) -> VirtAddr {
    VirtAddr::from_ptr(stack)
        .as_u64()
        .checked_add(STACK_SIZE as u64)
        .map_or(VirtAddr::zero(), VirtAddr::new_truncate)
}

/// Load the GDT and TSS and reload every segment register; returns the selectors.
pub fn init() -> Selectors {
    let mut tss = TaskStateSegment::new();
    tss.interrupt_stack_table[usize::from(DOUBLE_FAULT_IST)] =
        stack_top(&raw mut DOUBLE_FAULT_STACK);
    tss.privilege_stack_table[0] = stack_top(&raw mut TRAP_STACK);
    let tss = TSS.init(tss);

    let mut gdt = GlobalDescriptorTable::new();
    let kernel_code = gdt.append(Descriptor::kernel_code_segment());
    let kernel_data = gdt.append(Descriptor::kernel_data_segment());
    let user_data = gdt.append(Descriptor::user_data_segment());
    let user_code = gdt.append(Descriptor::user_code_segment());
    let tss_selector = gdt.append(Descriptor::tss_segment(tss));
    let selectors = Selectors {
        kernel_code,
        kernel_data,
        user_code,
        user_data,
        tss: tss_selector,
    };
    let (gdt, selectors) = GDT.init((gdt, selectors));
    gdt.load();
    // SAFETY: the selectors index the GDT just loaded, with the segments their names say.
    unsafe {
        CS::set_reg(selectors.kernel_code);
        SS::set_reg(selectors.kernel_data);
        DS::set_reg(selectors.kernel_data);
        ES::set_reg(selectors.kernel_data);
        load_tss(selectors.tss);
    }
    *selectors
}
