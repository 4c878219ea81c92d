//! `int n` and `iret` in real mode: on a KVM whose emulator fails them (doctor's "int n in
//! real mode"), the host carries them out on the registers and the stack as the CPU would,
//! so a boot sector's BIOS calls still reach the stubs.

use crate::addr::Gpa;
use kvm_bindings::{kvm_regs, kvm_sregs};
use vm_memory::{Bytes, GuestMemoryMmap};

/// IF, TF and AC: what a real-mode `int` clears.
const INT_CLEARS: u64 = (1 << 9) | (1 << 8) | (1 << 18);

use super::Carried;

fn linear(base: u64, offset: u64) -> Gpa {
    Gpa::new(base + (offset & 0xffff))
}

fn read_u16(mem: &GuestMemoryMmap, at: Gpa) -> Option<u16> {
    mem.read_obj(at.guest_address()).ok()
}

fn write_u16(mem: &GuestMemoryMmap, at: Gpa, value: u16) -> Option<()> {
    mem.write_obj(value, at.guest_address()).ok()
}

/// Load CS with a real-mode segment value.
fn load_cs(sregs: &mut kvm_sregs, segment: u16) {
    sregs.cs.selector = segment;
    sregs.cs.base = u64::from(segment) << 4;
}

/// Carry out the `int n` or `iret` at CS:IP; `None` when it is neither, or its memory is not
/// RAM (the run then ends with KVM's emulation failure, as it would have).
pub fn emulate(
    regs: &mut kvm_regs,
    sregs: &mut kvm_sregs,
    mem: &GuestMemoryMmap,
) -> Option<Carried> {
    let at = linear(sregs.cs.base, regs.rip);
    let opcode: [u8; 2] = mem.read_obj(at.guest_address()).ok()?;
    let sp = regs.rsp & 0xffff;
    let stack = |offset: u64| linear(sregs.ss.base, sp.wrapping_add(offset));
    match opcode {
        [0xcd, vector] => {
            let target = Gpa::new(u64::from(vector) * 4);
            let offset = read_u16(mem, target)?;
            let segment = read_u16(mem, Gpa::new(target.raw() + 2))?;
            let back = crate::narrow::low_u16(regs.rip.wrapping_add(2));
            write_u16(mem, stack(0xfffe), crate::narrow::low_u16(regs.rflags))?;
            write_u16(mem, stack(0xfffc), sregs.cs.selector)?;
            write_u16(mem, stack(0xfffa), back)?;
            regs.rsp = (regs.rsp & !0xffff) | (sp.wrapping_sub(6) & 0xffff);
            regs.rflags &= !INT_CLEARS;
            load_cs(sregs, segment);
            regs.rip = u64::from(offset);
            Some(Carried::RealModeInt(vector))
        }
        [0xcf, _] => {
            let ip = read_u16(mem, stack(0))?;
            let cs = read_u16(mem, stack(2))?;
            let flags = read_u16(mem, stack(4))?;
            regs.rsp = (regs.rsp & !0xffff) | (sp.wrapping_add(6) & 0xffff);
            regs.rflags = (regs.rflags & !0xffff) | u64::from(flags) | 0x2;
            load_cs(sregs, cs);
            regs.rip = u64::from(ip);
            Some(Carried::RealModeIret)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;

    fn machine() -> (kvm_regs, kvm_sregs, GuestMemoryMmap) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let regs = kvm_regs {
            rip: 0x7c10,
            rsp: 0x7000,
            rflags: 0x246 | (1 << 8),
            ..Default::default()
        };
        (regs, kvm_sregs::default(), mem)
    }

    #[test]
    fn an_int_pushes_flags_cs_and_ip_and_jumps_through_the_ivt() {
        let (mut regs, mut sregs, mem) = machine();
        mem.write_slice(&[0xcd, 0x13], GuestAddress(0x7c10))
            .unwrap();
        mem.write_slice(&[0x4c, 0x00, 0x00, 0xf0], GuestAddress(0x13 * 4))
            .unwrap();
        assert_eq!(
            emulate(&mut regs, &mut sregs, &mem),
            Some(Carried::RealModeInt(0x13))
        );
        assert_eq!(
            (sregs.cs.selector, sregs.cs.base, regs.rip),
            (0xf000, 0xf_0000, 0x4c)
        );
        assert_eq!(regs.rsp, 0x6ffa);
        let mut frame = [0u8; 6];
        mem.read_slice(&mut frame, GuestAddress(0x6ffa)).unwrap();
        assert_eq!(
            frame,
            [0x12, 0x7c, 0, 0, 0x46, 0x03],
            "IP after the int, CS 0, FLAGS"
        );
        assert_eq!(regs.rflags & (1 << 9 | 1 << 8), 0, "IF and TF cleared");

        // The stub's iret comes back to the instruction after the int, with the flags.
        mem.write_slice(&[0xcf], GuestAddress(0xf_004c)).unwrap();
        assert_eq!(
            emulate(&mut regs, &mut sregs, &mem),
            Some(Carried::RealModeIret)
        );
        assert_eq!((sregs.cs.base, regs.rip, regs.rsp), (0, 0x7c12, 0x7000));
        assert_eq!(regs.rflags, 0x346);
    }

    #[test]
    fn other_instructions_are_left_to_kvm() {
        let (mut regs, mut sregs, mem) = machine();
        mem.write_slice(&[0x0f, 0x0b], GuestAddress(0x7c10))
            .unwrap();
        assert_eq!(emulate(&mut regs, &mut sregs, &mem), None);
        assert_eq!(regs.rip, 0x7c10);
        regs.rip = 0x1_0000_0000; // not RAM
        assert_eq!(emulate(&mut regs, &mut sregs, &mem), None);
    }
}
