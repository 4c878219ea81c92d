//! The IDT: an entry stub for each of the 32 exception vectors and for `int 0x80`, written as
//! naked functions, all funnelling into one Rust dispatcher with the full register state.
//!
//! The gates are built here rather than with `x86_64::structures::idt`, because that type has
//! no way to fill the reserved vectors (9, 15, 22–27, 31) and this kernel wants a handler, and
//! a report, behind every one of the 32.

use crate::cpu::{DOUBLE_FAULT_IST, Selectors};
use crate::sync::Once;
use abi::trace::SYSCALL_VECTOR;
use core::arch::naked_asm;
use x86_64::VirtAddr;
use x86_64::structures::DescriptorTablePointer;

/// Saves the general registers, calls the dispatcher with a pointer to the frame, restores
/// them, drops vector and error code, and returns with `iretq`. The frame is 176 bytes, so the
/// stack stays 16-byte aligned at the call as the CPU aligned it on entry.
#[unsafe(naked)]
extern "C" fn trap_common() {
    naked_asm!(
        "push rax",
        "push rbx",
        "push rcx",
        "push rdx",
        "push rsi",
        "push rdi",
        "push rbp",
        "push r8",
        "push r9",
        "push r10",
        "push r11",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "mov rdi, rsp",
        "cld",
        "call {dispatch}",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop r11",
        "pop r10",
        "pop r9",
        "pop r8",
        "pop rbp",
        "pop rdi",
        "pop rsi",
        "pop rdx",
        "pop rcx",
        "pop rbx",
        "pop rax",
        "add rsp, 16",
        "iretq",
        dispatch = sym crate::traps::trap_dispatch,
    )
}

/// An entry stub: vectors without an error code push a 0 in its place, so every frame has
/// the same shape.
macro_rules! stub {
    ($name:ident, $vector:expr, error_code) => {
        #[unsafe(naked)]
        extern "C" fn $name() {
            naked_asm!("push {v}", "jmp {common}", v = const $vector, common = sym trap_common)
        }
    };
    ($name:ident, $vector:expr) => {
        #[unsafe(naked)]
        extern "C" fn $name() {
            naked_asm!(
                "push 0",
                "push {v}",
                "jmp {common}",
                v = const $vector,
                common = sym trap_common
            )
        }
    };
}

stub!(vector_0, 0);
stub!(vector_1, 1);
stub!(vector_2, 2);
stub!(vector_3, 3);
stub!(vector_4, 4);
stub!(vector_5, 5);
stub!(vector_6, 6);
stub!(vector_7, 7);
stub!(vector_8, 8, error_code);
stub!(vector_9, 9);
stub!(vector_10, 10, error_code);
stub!(vector_11, 11, error_code);
stub!(vector_12, 12, error_code);
stub!(vector_13, 13, error_code);
stub!(vector_14, 14, error_code);
stub!(vector_15, 15);
stub!(vector_16, 16);
stub!(vector_17, 17, error_code);
stub!(vector_18, 18);
stub!(vector_19, 19);
stub!(vector_20, 20);
stub!(vector_21, 21, error_code);
stub!(vector_22, 22);
stub!(vector_23, 23);
stub!(vector_24, 24);
stub!(vector_25, 25);
stub!(vector_26, 26);
stub!(vector_27, 27);
stub!(vector_28, 28);
stub!(vector_29, 29, error_code);
stub!(vector_30, 30, error_code);
stub!(vector_31, 31);
stub!(vector_syscall, SYSCALL_VECTOR);
stub!(irq_0, crate::timer::IRQ_BASE);
stub!(irq_1, crate::timer::IRQ_BASE + 1);
stub!(irq_2, crate::timer::IRQ_BASE + 2);
stub!(irq_3, crate::timer::IRQ_BASE + 3);
stub!(irq_4, crate::timer::IRQ_BASE + 4);
stub!(irq_5, crate::timer::IRQ_BASE + 5);
stub!(irq_6, crate::timer::IRQ_BASE + 6);
stub!(irq_7, crate::timer::IRQ_BASE + 7);
stub!(irq_8, crate::timer::IRQ_BASE + 8);
stub!(irq_9, crate::timer::IRQ_BASE + 9);
stub!(irq_10, crate::timer::IRQ_BASE + 10);
stub!(irq_11, crate::timer::IRQ_BASE + 11);
stub!(irq_12, crate::timer::IRQ_BASE + 12);
stub!(irq_13, crate::timer::IRQ_BASE + 13);
stub!(irq_14, crate::timer::IRQ_BASE + 14);
stub!(irq_15, crate::timer::IRQ_BASE + 15);

/// The 16 IRQs of the remapped PICs (see `timer`).
const IRQ_STUBS: [extern "C" fn(); 16] = [
    irq_0, irq_1, irq_2, irq_3, irq_4, irq_5, irq_6, irq_7, irq_8, irq_9, irq_10, irq_11, irq_12,
    irq_13, irq_14, irq_15,
];

const EXCEPTION_STUBS: [extern "C" fn(); 32] = [
    vector_0, vector_1, vector_2, vector_3, vector_4, vector_5, vector_6, vector_7, vector_8,
    vector_9, vector_10, vector_11, vector_12, vector_13, vector_14, vector_15, vector_16,
    vector_17, vector_18, vector_19, vector_20, vector_21, vector_22, vector_23, vector_24,
    vector_25, vector_26, vector_27, vector_28, vector_29, vector_30, vector_31,
];

/// A 64-bit interrupt gate.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attributes: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

/// Present, 64-bit interrupt gate (IF cleared on entry).
const INTERRUPT_GATE: u8 = 0x8e;
const DOUBLE_FAULT: usize = 8;

impl Gate {
    fn new(handler: extern "C" fn(), selectors: &Selectors, dpl: u8, ist: u8) -> Self {
        Self::at(handler as usize as u64, selectors, dpl, ist)
    }

    /// A gate to any address, usable or not.
    fn at(addr: u64, selectors: &Selectors, dpl: u8, ist: u8) -> Self {
        Self {
            offset_low: addr as u16,
            selector: selectors.kernel_code.0,
            ist,
            type_attributes: INTERRUPT_GATE | (dpl << 5),
            offset_mid: (addr >> 16) as u16,
            offset_high: (addr >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

static IDT: Once<Idt> = Once::new();
/// The same gates with #DF on the interrupted stack, for the stack-overflow workload.
static IDT_WITHOUT_IST: Once<Idt> = Once::new();
/// Every exception gate at one address, for the hostile-IDT workloads.
static IDT_ALL_AT: Once<Idt> = Once::new();

fn gates(selectors: &Selectors, double_fault_ist: u8) -> Idt {
    let mut gates = [Gate::default(); 256];
    for (vector, stub) in EXCEPTION_STUBS.into_iter().enumerate() {
        let ist = if vector == DOUBLE_FAULT {
            double_fault_ist
        } else {
            0
        };
        gates[vector] = Gate::new(stub, selectors, 0, ist);
    }
    gates[usize::from(SYSCALL_VECTOR)] = Gate::new(vector_syscall, selectors, 3, 0);
    let irqs = usize::from(crate::timer::IRQ_BASE);
    for (gate, stub) in gates[irqs..irqs + 16].iter_mut().zip(IRQ_STUBS) {
        *gate = Gate::new(stub, selectors, 0, 0);
    }
    Idt(gates)
}

fn load(idt: &'static Idt) {
    let pointer = DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: VirtAddr::from_ptr(idt),
    };
    // SAFETY: the IDT lives in a static for ever and every present gate points at a stub
    // above, in the kernel code segment.
    unsafe { x86_64::instructions::tables::lidt(&pointer) };
}

/// Build and load the IDT: the 32 exceptions for ring 0, #DF on its own IST stack, the 16
/// IRQs of the remapped PICs, and `int 0x80` callable from ring 3.
pub fn init(selectors: &Selectors) {
    load(IDT.init(gates(selectors, DOUBLE_FAULT_IST as u8 + 1)));
}

/// Load an IDT whose #DF gate has no IST: a #DF then runs on the stack that faulted.
pub fn load_without_double_fault_stack(selectors: &Selectors) {
    load(IDT_WITHOUT_IST.init(gates(selectors, 0)));
}

/// Load an IDT whose 32 exception gates all point at `handler`, mapped or not.
pub fn load_every_exception_at(handler: u64, selectors: &Selectors) {
    let mut gates = [Gate::default(); 256];
    for gate in gates.iter_mut().take(32) {
        *gate = Gate::at(handler, selectors, 0, 0);
    }
    load(IDT_ALL_AT.init(Idt(gates)));
}
