//! The analysis of an exception at instruction bytes, registers and page tables the fuzzer
//! chooses: what the report explains for it.

use super::delivery::{CODE, RAM, identity_ram, scribble};
use super::{Input, assert_one_line};
use crate::addr::{Gpa, Gva};
use crate::analysis::{Context, analyse};
use crate::paging::{CpuPaging, Cr3, PagingMode};
use crate::registers::SegmentBases;
use crate::tap::{ControlRegisters, ExceptionRecord, Frame};
use crate::virt::{AddressSpace, GuestView};
use kvm_bindings::kvm_regs;
use vm_memory::{Bytes, GuestAddress};

/// The explanation is one paragraph (one line, not empty), and every walk behind it stays
/// within the four levels of the mode.
pub fn explain(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.u8();
    let vector = input.pick(&[0u8, 1, 3, 5, 6, 8, 10, 11, 12, 13, 14, 17, 18]);
    let error = u64::from(input.u32());
    let cr2 = if flags & 1 != 0 {
        input.u64()
    } else {
        input.below(RAM)
    };
    let rip = if flags & 2 != 0 {
        input.u64()
    } else {
        CODE + input.below(0x100)
    };
    let regs = kvm_regs {
        rax: input.u64(),
        rbx: input.u64(),
        rcx: input.below(RAM),
        rdi: input.u64(),
        rsi: input.below(RAM),
        rsp: input.below(RAM),
        rbp: input.u64(),
        rip,
        rflags: 2,
        ..Default::default()
    };
    let ram = identity_ram(flags & 4 != 0);
    let code = input.bytes(16);
    let _ = ram.write_slice(code, GuestAddress(rip));
    scribble(&ram, &mut input, [0x1000, 0x2000, 0x4000, regs.rsp]);
    let record = ExceptionRecord {
        seq: 1,
        vector,
        shared_handler: false,
        handler: Gva::new(0x1000),
        frame: Some(Frame {
            at: Gva::new(regs.rsp),
            error: abi::exception::pushes_error_code(vector).then_some(error),
            rip: Gva::new(rip),
            cs: if flags & 8 != 0 { 0x2b } else { 0x08 },
            rflags: 0x2,
            rsp: Gva::new(regs.rsp),
            ss: 0x10,
            real_mode: false,
        }),
        frame_error: None,
        control: ControlRegisters {
            cr0: 0x8001_0011,
            cr2,
            cr3: 0x1000,
            cr4: 0x20 | if flags & 16 != 0 { 0x30_0000 } else { 0 },
            efer: 0xd00,
        },
        regs,
        segments: SegmentBases::default(),
        depth: 1 + usize::from(flags >> 6),
        outer: vec![],
    };
    let space = AddressSpace {
        view: GuestView::new(&ram, None),
        mode: PagingMode::new(CpuPaging::with_phys_bits(46), 0xd00),
        cr3: Cr3::new(0x1000),
    };
    let regions = [(Gpa::new(0), RAM)];
    let context = Context::new(space, &regions, None, None, false);
    let (analysis, _) = analyse(&record, &context);
    assert_one_line("an explanation", &analysis.explanation);
    assert!(analysis.walks.iter().all(|w| w.walk.steps.len() <= 4));
}
