//! The displaced-instruction emulator on instruction bytes, registers and stack mappings the
//! fuzzer chooses, held to what the CPU would do.

use super::Input;
use super::delivery::{CODE, RAM, identity_ram};
use crate::addr::Gva;
use crate::paging::{CpuPaging, Cr3, PagingMode, WalkEnd};
use crate::virt::{AddressSpace, GuestView};
use iced_x86::{Decoder, DecoderOptions};
use kvm_bindings::kvm_regs;
use vm_memory::{Bytes, GuestAddress};

/// The only flags an emulated instruction may change: DF (`cld`) and AC (`clac`), cleared.
const MAY_CLEAR: u64 = 1 << 10 | 1 << 18;

/// An instruction the host emulates moves RIP past itself, clears at most DF or AC, and
/// either leaves RSP alone or pushes one qword to the frame the page tables give for RSP − 8,
/// on a page the CPU would not have to mark accessed or dirty.
pub fn emulate(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.u8();
    let ram = identity_ram(false);
    let rsp = if flags & 1 != 0 {
        input.u64()
    } else {
        input.below(RAM)
    };
    // The stack page's leaf: P, RW, A and D each on or off.
    let leaf = u64::from(input.u8()) & 0x63;
    let stack_page = rsp.wrapping_sub(8) >> 12;
    if stack_page < RAM >> 12 {
        let at = GuestAddress(0x4000 + stack_page * 8);
        ram.write_obj(stack_page << 12 | leaf, at)
            .expect("a PT entry inside RAM");
    }
    let regs = kvm_regs {
        rax: input.u64(),
        rbx: input.u64(),
        rbp: input.u64(),
        r12: input.u64(),
        rsp,
        rip: CODE,
        rflags: input.u64() & 0x0004_0cd5 | 2,
        ..Default::default()
    };
    let bytes = input.bytes(15);
    let space = AddressSpace {
        view: GuestView::new(&ram, None),
        mode: PagingMode::new(CpuPaging::with_phys_bits(46), 0xd00),
        cr3: Cr3::new(0x1000),
    };
    let Some(effect) = crate::tap::emulate::emulate(bytes, &regs, &space) else {
        return;
    };
    let mut decoder = Decoder::with_ip(64, bytes, regs.rip, DecoderOptions::NONE);
    let instruction = decoder.decode();
    assert!(
        !instruction.is_invalid(),
        "emulated an invalid instruction {bytes:02x?}"
    );
    assert_eq!(
        effect.rip,
        regs.rip + instruction.len() as u64,
        "{instruction}"
    );
    let cleared = regs.rflags & !effect.rflags;
    assert!(
        effect.rflags & !regs.rflags == 0 && cleared & !MAY_CLEAR == 0,
        "{instruction}: RFLAGS {:#x} -> {:#x}",
        regs.rflags,
        effect.rflags
    );
    let Some((gpa, _)) = effect.store else {
        assert_eq!(
            effect.rsp, regs.rsp,
            "{instruction} moved RSP without a store"
        );
        return;
    };
    assert_eq!(effect.rsp, regs.rsp.wrapping_sub(8), "{instruction}");
    let slot = Gva::new(effect.rsp);
    assert!(
        slot.page_offset() <= 4096 - 8,
        "{instruction}: a push across pages"
    );
    let walk = space.walk(slot);
    let WalkEnd::Mapped(mapping) = walk.end else {
        panic!("{instruction}: a push to {slot} which is not mapped");
    };
    assert_eq!(
        gpa, mapping.gpa,
        "{instruction}: stored where RSP − 8 does not lead"
    );
    let pte = walk
        .steps
        .last()
        .expect("a mapped walk reads entries")
        .entry;
    assert!(
        mapping.writable && pte.accessed() && pte.dirty(),
        "{instruction}: a push the CPU would fault on or mark"
    );
}
