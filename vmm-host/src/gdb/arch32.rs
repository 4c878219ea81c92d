//! gdb's i386 register layout, for a session that starts while the vCPU runs 32-bit (or
//! 16-bit) code: eax, ecx, edx, ebx, esp, ebp, esi, edi, eip, eflags, the six selectors, the
//! x87 stack and its control words, xmm0–7 and mxcsr in gdb's numbering (0–40), then
//! fs_base, gs_base, cr0, cr2, cr3, cr4 and efer (41–47) as `target_xml::PROTECTED_MODE`
//! describes them.

use super::arch::{GdbRegisters, Layout, abridged_tag_word, full_tag_word};
use crate::narrow::{low_u16, low_u32};
use crate::vm::Registers;

pub(super) const REGISTERS: usize = 48;

/// Bytes per register in the `g` packet.
pub(super) const SIZES: [usize; REGISTERS] = {
    let mut sizes = [4; REGISTERS];
    let mut i = 0;
    while i < REGISTERS {
        sizes[i] = match i {
            16..=23 => 10,
            32..=39 => 16,
            47 => 8,
            _ => 4,
        };
        i += 1;
    }
    sizes
};

const ST0: usize = 16;
const FCTRL: usize = 24;
const XMM0: usize = 32;
const MXCSR: usize = 40;
const SYSTEM: usize = 41;

/// The low 32 bits of each general register, in gdb's i386 order.
fn general(cpu: &Registers) -> [u64; 10] {
    let r = &cpu.regs;
    [
        r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi, r.rip, r.rflags,
    ]
}

pub(super) fn from_vcpu(cpu: &Registers) -> GdbRegisters {
    let mut out = GdbRegisters::zeroed(Layout::Protected);
    for (id, value) in general(cpu).into_iter().enumerate() {
        out.put(id, value & 0xffff_ffff);
    }
    let s = &cpu.sregs;
    for (i, seg) in [&s.cs, &s.ss, &s.ds, &s.es, &s.fs, &s.gs]
        .iter()
        .enumerate()
    {
        out.put(10 + i, u64::from(seg.selector));
    }
    let f = &cpu.fpu;
    for (i, st) in f.fpr.iter().enumerate() {
        out.set(ST0 + i, &st[..10]);
    }
    out.put(FCTRL, u64::from(f.fcw));
    out.put(FCTRL + 1, u64::from(f.fsw));
    out.put(FCTRL + 2, u64::from(full_tag_word(f.ftwx)));
    out.put(FCTRL + 4, f.last_ip & 0xffff_ffff);
    out.put(FCTRL + 6, f.last_dp & 0xffff_ffff);
    out.put(FCTRL + 7, u64::from(f.last_opcode));
    for (i, xmm) in f.xmm.iter().take(8).enumerate() {
        out.set(XMM0 + i, xmm);
    }
    out.put(MXCSR, u64::from(f.mxcsr));
    let system = [s.fs.base, s.gs.base, s.cr0, s.cr2, s.cr3, s.cr4];
    for (i, value) in system.into_iter().enumerate() {
        out.put(SYSTEM + i, value & 0xffff_ffff);
    }
    out.put(SYSTEM + 6, s.efer);
    out
}

/// `base` with gdb's values written over it; the upper halves of the 64-bit registers, which
/// 32-bit code cannot see, keep their values.
pub(super) fn to_vcpu(gdb: &GdbRegisters, base: &Registers) -> Registers {
    let mut cpu = base.clone();
    let r = &mut cpu.regs;
    let slots = [
        &mut r.rax,
        &mut r.rcx,
        &mut r.rdx,
        &mut r.rbx,
        &mut r.rsp,
        &mut r.rbp,
        &mut r.rsi,
        &mut r.rdi,
        &mut r.rip,
        &mut r.rflags,
    ];
    for (id, slot) in slots.into_iter().enumerate() {
        *slot = (*slot & !0xffff_ffff) | gdb.u64(id);
    }
    let s = &mut cpu.sregs;
    let segments = [
        &mut s.cs, &mut s.ss, &mut s.ds, &mut s.es, &mut s.fs, &mut s.gs,
    ];
    for (i, seg) in segments.into_iter().enumerate() {
        seg.selector = low_u16(gdb.u64(10 + i));
    }
    let system = [
        &mut s.fs.base,
        &mut s.gs.base,
        &mut s.cr0,
        &mut s.cr2,
        &mut s.cr3,
        &mut s.cr4,
    ];
    for (i, slot) in system.into_iter().enumerate() {
        *slot = (*slot & !0xffff_ffff) | gdb.u64(SYSTEM + i);
    }
    s.efer = gdb.u64(SYSTEM + 6);
    let f = &mut cpu.fpu;
    for (i, st) in f.fpr.iter_mut().enumerate() {
        st[..10].copy_from_slice(gdb.get(ST0 + i));
    }
    f.fcw = low_u16(gdb.u64(FCTRL));
    f.fsw = low_u16(gdb.u64(FCTRL + 1));
    f.ftwx = abridged_tag_word(low_u16(gdb.u64(FCTRL + 2)));
    f.last_opcode = low_u16(gdb.u64(FCTRL + 7));
    for (i, xmm) in f.xmm.iter_mut().take(8).enumerate() {
        xmm.copy_from_slice(gdb.get(XMM0 + i));
    }
    f.mxcsr = low_u32(gdb.u64(MXCSR));
    cpu
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gdb::target_xml;
    use gdbstub::arch::Registers as _;

    /// kernel32 at its #DE: flat 32-bit protected mode, paging off.
    fn protected() -> Registers {
        let mut cpu = Registers::default();
        cpu.regs.rax = 1;
        cpu.regs.rcx = 0;
        cpu.regs.rsp = 0x20_6000;
        cpu.regs.rbp = 0x20_6100;
        cpu.regs.rip = 0x20_0123;
        cpu.regs.rflags = 0x46;
        cpu.sregs.cs.selector = 0x08;
        cpu.sregs.cr0 = 0x11;
        cpu.sregs.efer = 0;
        cpu.fpu.xmm[7] = [9; 16];
        cpu
    }

    #[test]
    fn the_description_names_every_register_of_the_layout_in_order() {
        let xml = target_xml::PROTECTED_MODE;
        assert_eq!(xml.matches("<reg ").count(), REGISTERS);
        assert!(xml.contains("<architecture>i386</architecture>"));
        let names: Vec<&str> = xml
            .split("<reg name=\"")
            .skip(1)
            .filter_map(|r| r.split('"').next())
            .collect();
        assert_eq!(
            &names[..10],
            [
                "eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "eip", "eflags"
            ]
        );
        assert_eq!(
            (names[XMM0], names[MXCSR], names[SYSTEM + 2]),
            ("xmm0", "mxcsr", "cr0")
        );
        // Each register's bitsize is its size in the g packet.
        let bits: Vec<usize> = xml
            .split("bitsize=\"")
            .skip(1)
            .filter_map(|r| r.split('"').next()?.parse().ok())
            .collect();
        assert_eq!(bits, SIZES.map(|bytes| bytes * 8));
    }

    #[test]
    fn a_32_bit_vcpu_gets_the_i386_layout_and_survives_the_round_trip() {
        let cpu = protected();
        assert_eq!(Layout::of(&cpu), Layout::Protected);
        let gdb = GdbRegisters::from_vcpu(&cpu, Layout::Protected);
        assert_eq!(gdb.pc(), 0x20_0123);
        assert_eq!(gdb.get(4), 0x20_6000u32.to_le_bytes()); // esp
        assert_eq!(gdb.get(SYSTEM + 2), 0x11u32.to_le_bytes()); // cr0
        assert_eq!(gdb.to_vcpu(&cpu), cpu);
        // A G packet of the i386 size is read as i386.
        let mut bytes = Vec::new();
        gdb.gdb_serialize(|b| bytes.push(b.unwrap_or(0)));
        assert_eq!(bytes.len(), SIZES.iter().sum::<usize>());
        let mut back = GdbRegisters::default();
        back.gdb_deserialize(&bytes).unwrap();
        assert_eq!(back.layout(), Layout::Protected);
        assert_eq!(back, gdb);
    }

    #[test]
    fn the_default_layout_follows_what_the_kernel_file_is() {
        use std::path::Path;
        assert_eq!(
            Layout::for_kernel(Path::new(crate::GUEST_KERNEL_ELF)),
            Layout::Long
        );
        assert_eq!(
            Layout::for_kernel(Path::new(crate::GUEST_KERNEL_BZIMAGE)),
            Layout::Long
        );
        assert_eq!(
            Layout::for_kernel(Path::new(crate::GUEST_KERNEL_DISK)),
            Layout::Protected
        );
        let dir = tempfile::tempdir().unwrap();
        let elf32 = dir.path().join("kernel.elf");
        std::fs::write(&elf32, b"\x7fELF\x01\x01\x01").unwrap();
        assert_eq!(Layout::for_kernel(&elf32), Layout::Protected);
        // Unreadable or unknown: x86-64, QEMU's layout.
        assert_eq!(Layout::for_kernel(&dir.path().join("none")), Layout::Long);
        assert_eq!("i386".parse(), Ok(Layout::Protected));
        assert_eq!("x86-64".parse(), Ok(Layout::Long));
        assert_eq!(
            "arm".parse::<Layout>(),
            Err("`arm` is not a register layout: i386 (32-bit code) or x86-64".into())
        );
    }

    #[test]
    fn a_write_of_eax_keeps_the_upper_half_of_rax() {
        let mut cpu = protected();
        cpu.regs.rax = 0xdead_beef_0000_0001;
        let mut gdb = GdbRegisters::from_vcpu(&cpu, Layout::Protected);
        assert!(gdb.set(0, &7u32.to_le_bytes()));
        assert_eq!(gdb.to_vcpu(&cpu).regs.rax, 0xdead_beef_0000_0007);
        assert!(!gdb.set(REGISTERS, &[1]));
        assert!(gdb.get(REGISTERS).is_empty());
    }
}
