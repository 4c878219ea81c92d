//! Running a handler's first instruction on the host, so a trap costs one VM exit instead of
//! two (trap, then single-step of the displaced instruction).
//!
//! Only instructions whose whole effect the host can reproduce exactly are emulated: a push to
//! a stack page that is present, writable, already accessed and dirty (so the CPU would have
//! changed no A/D bit), and instructions that only move RIP or clear a flag. Anything else is
//! single-stepped.

use crate::addr::{Gpa, Gva};
use crate::paging::WalkEnd;
use crate::registers::RegisterFile;
use crate::virt::AddressSpace;
use iced_x86::{Code, Decoder, DecoderOptions, Instruction, Register};
use kvm_bindings::kvm_regs;
use x86_64::registers::rflags::RFlags;

const RFLAGS_DF: u64 = RFlags::DIRECTION_FLAG.bits();
const RFLAGS_AC: u64 = RFlags::ALIGNMENT_CHECK.bits();

/// The effect of one emulated instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effect {
    pub rip: u64,
    pub rsp: u64,
    pub rflags: u64,
    /// A qword the instruction stores, and where.
    pub store: Option<(Gpa, u64)>,
}

fn gpr(regs: &kvm_regs, register: Register) -> Option<u64> {
    let file = RegisterFile {
        regs,
        segments: crate::registers::SegmentBases::default(),
    };
    file.value(register).filter(|_| register.is_gpr64())
}

/// Where a qword push at `rsp` would land, if the CPU would store it without touching any
/// page-table bit or faulting.
fn push_target(space: &AddressSpace<'_>, rsp: u64) -> Option<Gpa> {
    let slot = Gva::new(rsp.wrapping_sub(8));
    if slot.page_offset() > 4096 - 8 {
        return None;
    }
    let walk = space.walk(slot);
    let WalkEnd::Mapped(mapping) = walk.end else {
        return None;
    };
    let leaf = walk.steps.last()?.entry;
    (mapping.writable && leaf.accessed() && leaf.dirty()).then_some(mapping.gpa)
}

/// Decode the 64-bit instruction in `bytes` (the guest's original bytes at RIP) and emulate it
/// if it is one the host reproduces exactly.
pub fn emulate(bytes: &[u8], regs: &kvm_regs, space: &AddressSpace<'_>) -> Option<Effect> {
    let mut decoder = Decoder::with_ip(64, bytes, regs.rip, DecoderOptions::NONE);
    let instruction: Instruction = decoder.decode();
    if instruction.is_invalid() {
        return None;
    }
    let next = instruction.next_ip();
    let unchanged = Effect {
        rip: next,
        rsp: regs.rsp,
        rflags: regs.rflags,
        store: None,
    };
    let push = |value: u64| {
        push_target(space, regs.rsp).map(|gpa| Effect {
            rsp: regs.rsp.wrapping_sub(8),
            store: Some((gpa, value)),
            ..unchanged
        })
    };
    match instruction.code() {
        // `immediate(0)` sign-extends per operand kind; `push -1` must store all ones.
        Code::Pushq_imm8 | Code::Pushq_imm32 => push(instruction.immediate(0)),
        Code::Push_r64 => {
            let register = instruction.op0_register();
            push(gpr(regs, register)?)
        }
        Code::Nopd | Code::Nopq | Code::Nop_rm32 | Code::Nop_rm64 | Code::Endbr64 => {
            Some(unchanged)
        }
        Code::Cld => Some(Effect {
            rflags: regs.rflags & !RFLAGS_DF,
            ..unchanged
        }),
        Code::Clac => Some(Effect {
            rflags: regs.rflags & !RFLAGS_AC,
            ..unchanged
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paging::{Cr3, PagingMode};
    use crate::virt::GuestView;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    /// 2 MiB of RAM: PML4 at 0x1000, PDPT 0x2000, PD 0x3000, PT 0x4000 mapping VA 0..2 MiB
    /// to PA 0..2 MiB with `leaf_flags`.
    fn space_ram(leaf_flags: u64) -> GuestMemoryMmap {
        let ram = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x20_0000)]).unwrap();
        ram.write_obj(0x2003u64, GuestAddress(0x1000)).unwrap();
        ram.write_obj(0x3003u64, GuestAddress(0x2000)).unwrap();
        ram.write_obj(0x4003u64, GuestAddress(0x3000)).unwrap();
        for page in 0..512u64 {
            ram.write_obj(page << 12 | leaf_flags, GuestAddress(0x4000 + page * 8))
                .unwrap();
        }
        ram
    }

    fn regs(rip: u64, rsp: u64) -> kvm_regs {
        kvm_regs {
            rip,
            rsp,
            rflags: 0x2 | RFLAGS_DF,
            rbx: 0x1234,
            ..Default::default()
        }
    }

    fn with_space<T>(leaf_flags: u64, f: impl FnOnce(&AddressSpace<'_>) -> T) -> T {
        let ram = space_ram(leaf_flags);
        let space = AddressSpace {
            view: GuestView::new(&ram, None),
            mode: PagingMode::new(crate::paging::CpuPaging::with_phys_bits(48), 0),
            cr3: Cr3::new(0x1000),
        };
        f(&space)
    }

    #[test]
    fn push_imm8_stores_the_sign_extended_value_below_rsp() {
        let effect = with_space(0x63, |s| emulate(&[0x6a, 0xff], &regs(0x9000, 0x8010), s));
        assert_eq!(
            effect,
            Some(Effect {
                rip: 0x9002,
                rsp: 0x8008,
                rflags: 0x2 | RFLAGS_DF,
                store: Some((Gpa::new(0x8008), u64::MAX)),
            })
        );
        let effect = with_space(0x63, |s| emulate(&[0x53], &regs(0x9000, 0x8010), s)).unwrap();
        assert_eq!(effect.store, Some((Gpa::new(0x8008), 0x1234)));
    }

    #[test]
    fn a_push_that_would_set_a_or_d_or_fault_is_left_to_the_cpu() {
        // Present and writable but not yet dirty: the CPU would set D.
        assert_eq!(
            with_space(0x23, |s| emulate(&[0x6a, 0], &regs(0x9000, 0x8010), s)),
            None
        );
        // Dirty but not accessed: the CPU would set A.
        assert_eq!(
            with_space(0x43, |s| emulate(&[0x6a, 0], &regs(0x9000, 0x8010), s)),
            None
        );
        // Read-only stack.
        assert_eq!(
            with_space(0x61, |s| emulate(&[0x6a, 0], &regs(0x9000, 0x8010), s)),
            None
        );
        // The slot crosses into the page below.
        assert_eq!(
            with_space(0x63, |s| emulate(&[0x6a, 0], &regs(0x9000, 0x8004), s)),
            None
        );
    }

    #[test]
    fn flag_and_nop_instructions_only_move_rip() {
        let cld = with_space(0x63, |s| emulate(&[0xfc], &regs(0x9000, 0x8010), s)).unwrap();
        assert_eq!((cld.rip, cld.rflags, cld.store), (0x9001, 0x2, None));
        let endbr = with_space(0x63, |s| {
            emulate(&[0xf3, 0x0f, 0x1e, 0xfa], &regs(0x9000, 0x8010), s)
        })
        .unwrap();
        assert_eq!(endbr.rip, 0x9004);
        assert_eq!(
            with_space(0x63, |s| emulate(
                &[0x0f, 0x01, 0xf8],
                &regs(0x9000, 0x8010),
                s
            )),
            None,
            "swapgs changes state the host does not emulate"
        );
    }
}
