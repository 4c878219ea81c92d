//! A 32-bit `iret` in ring 0 returning to ring 0, with paging off: pop EIP, CS and EFLAGS
//! and load CS from the GDT, as the SDM's IRET pseudocode does for a return to the same
//! privilege level.

use super::Carried;
use crate::addr::Gpa;
use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestMemoryMmap};
use x86_64::registers::control::Cr0Flags;
use x86_64::registers::model_specific::EferFlags;
use x86_64::registers::rflags::RFlags;

fn read<T: vm_memory::ByteValued>(mem: &GuestMemoryMmap, linear: u64) -> Option<T> {
    // Paging is off: a linear address is physical, wrapping at 4 GiB.
    mem.read_obj(Gpa::new(linear & 0xffff_ffff).guest_address())
        .ok()
}

/// The segment a GDT descriptor describes, or `None` if it is no present code segment.
pub fn code_segment(selector: u16, descriptor: u64) -> Option<kvm_segment> {
    let descriptor = crate::descriptor::Descriptor(descriptor);
    (descriptor.present() && descriptor.is_code()).then(|| descriptor.segment(selector))
}

/// Carry out the `iret` at CS:EIP, if the vCPU is in 32-bit ring 0 with paging off and the
/// frame returns to ring 0 through a present code segment of the GDT.
pub fn iret(regs: &mut kvm_regs, sregs: &mut kvm_sregs, mem: &GuestMemoryMmap) -> Option<Carried> {
    let paged = sregs.cr0 & Cr0Flags::PAGING.bits() != 0;
    let long = sregs.efer & EferFlags::LONG_MODE_ACTIVE.bits() != 0;
    let nested_task = regs.rflags & RFlags::NESTED_TASK.bits() != 0;
    if paged || long || nested_task || sregs.cs.db == 0 || sregs.ss.db == 0 || sregs.cs.dpl != 0 {
        return None;
    }
    let opcode: u8 = read(mem, sregs.cs.base + (regs.rip & 0xffff_ffff))?;
    if opcode != 0xcf {
        return None;
    }
    let sp = regs.rsp & 0xffff_ffff;
    let frame = |offset: u64| read::<u32>(mem, sregs.ss.base + ((sp + offset) & 0xffff_ffff));
    let (eip, cs, eflags) = (frame(0)?, frame(4)?, frame(8)?);
    let selector = crate::narrow::low_u16(u64::from(cs));
    let to_ring0 = selector & 3 == 0;
    let in_gdt = selector & 4 == 0 && u32::from(selector | 7) <= u32::from(sregs.gdt.limit);
    let to_vm86 = u64::from(eflags) & RFlags::VIRTUAL_8086_MODE.bits() != 0;
    if !to_ring0 || !in_gdt || to_vm86 || selector < 8 {
        return None;
    }
    let descriptor: u64 = read(mem, sregs.gdt.base + u64::from(selector & !7))?;
    let segment = code_segment(selector, descriptor)?;
    if segment.dpl != 0 || segment.l != 0 {
        return None;
    }
    sregs.cs = segment;
    regs.rip = u64::from(eip);
    regs.rsp = (regs.rsp & !0xffff_ffff) | ((sp + 12) & 0xffff_ffff);
    regs.rflags = u64::from(eflags) | 0x2;
    Some(Carried::ProtectedIret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;

    const FLAT_CODE: u64 = 0x00cf_9a00_0000_ffff;

    /// 32-bit ring 0, paging off, a GDT at 0x1000 with flat code at 0x08, an `iret` at 0x2000
    /// and a frame at 0x3000 returning to 0x08:0x2100 with IF set.
    fn machine() -> (kvm_regs, kvm_sregs, GuestMemoryMmap) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        mem.write_obj(FLAT_CODE, GuestAddress(0x1008)).unwrap();
        mem.write_obj(0xcfu8, GuestAddress(0x2000)).unwrap();
        for (i, word) in [0x2100u32, 0x08, 0x202].iter().enumerate() {
            mem.write_obj(*word, GuestAddress(0x3000 + 4 * i as u64))
                .unwrap();
        }
        let mut sregs = kvm_sregs {
            cr0: 0x11,
            cs: code_segment(0x08, FLAT_CODE).unwrap(),
            ..Default::default()
        };
        sregs.ss.db = 1;
        sregs.gdt.base = 0x1000;
        sregs.gdt.limit = 0x17;
        let regs = kvm_regs {
            rip: 0x2000,
            rsp: 0x3000,
            rflags: 0x2,
            ..Default::default()
        };
        (regs, sregs, mem)
    }

    #[test]
    fn a_flat_code_descriptor_becomes_a_32_bit_segment() {
        let cs = code_segment(0x08, FLAT_CODE).unwrap();
        assert_eq!((cs.base, cs.limit, cs.type_), (0, 0xffff_ffff, 0xa));
        assert_eq!((cs.db, cs.l, cs.g, cs.dpl, cs.present), (1, 0, 1, 0, 1));
        assert_eq!(
            code_segment(0x10, 0x00cf_9200_0000_ffff),
            None,
            "data, not code"
        );
        assert_eq!(
            code_segment(0x08, FLAT_CODE & !(1 << 47)),
            None,
            "not present"
        );
    }

    #[test]
    fn iret_pops_the_frame_and_reloads_cs() {
        let (mut regs, mut sregs, mem) = machine();
        assert_eq!(
            iret(&mut regs, &mut sregs, &mem),
            Some(Carried::ProtectedIret)
        );
        assert_eq!((regs.rip, regs.rsp, regs.rflags), (0x2100, 0x300c, 0x202));
        assert_eq!((sregs.cs.selector, sregs.cs.db), (0x08, 1));
    }

    /// A change to the machine that makes the `iret` something the host leaves to KVM.
    type Change = fn(&mut kvm_regs, &mut kvm_sregs, &GuestMemoryMmap);

    #[test]
    fn anything_but_a_same_level_return_is_left_to_kvm() {
        let cases: [(&str, Change); 6] = [
            ("outer privilege", |_, _, m| {
                m.write_obj(0x1bu32, GuestAddress(0x3004)).unwrap();
            }),
            ("past the GDT limit", |_, s, _| s.gdt.limit = 0x7),
            ("virtual-8086", |_, _, m| {
                m.write_obj(0x2_0202u32, GuestAddress(0x3008)).unwrap();
            }),
            ("a nested task", |r, _, _| r.rflags |= 1 << 14),
            ("paging on", |_, s, _| s.cr0 |= 1 << 31),
            ("not an iret", |_, _, m| {
                m.write_obj(0x90u8, GuestAddress(0x2000)).unwrap();
            }),
        ];
        for (what, change) in cases {
            let (mut regs, mut sregs, mem) = machine();
            change(&mut regs, &mut sregs, &mem);
            let before = (regs.rip, regs.rsp);
            assert_eq!(iret(&mut regs, &mut sregs, &mem), None, "{what}");
            assert_eq!((regs.rip, regs.rsp), before, "{what}: nothing changed");
        }
    }
}
