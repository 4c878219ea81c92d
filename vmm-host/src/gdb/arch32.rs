//! gdb's i386 register layout, for a session that starts while the vCPU runs 32-bit (or
//! 16-bit) code: eax, ecx, edx, ebx, esp, ebp, esi, edi, eip, eflags, the six selectors, the
//! x87 stack and its control words, xmm0–7 and mxcsr in gdb's numbering (0–40), then
//! fs_base, gs_base, cr0, cr2, cr3, cr4 and efer (41–47) as `target_xml::PROTECTED_MODE`
//! describes them.

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

/// Where register `id` starts in the `g` packet.
fn offset(id: usize) -> usize {
    SIZES[..id].iter().sum()
}

/// The `g` packet's bytes for `cpu`, register after register.
pub(super) fn from_vcpu(cpu: &Registers) -> Vec<u8> {
    let mut out = vec![0u8; offset(REGISTERS)];
    let mut put = |id: usize, value: &[u8]| {
        let n = value.len().min(SIZES[id]);
        out[offset(id)..offset(id) + n].copy_from_slice(&value[..n]);
    };
    for (id, value) in general(cpu).into_iter().enumerate() {
        put(id, &(value & 0xffff_ffff).to_le_bytes());
    }
    let s = &cpu.sregs;
    for (i, seg) in [&s.cs, &s.ss, &s.ds, &s.es, &s.fs, &s.gs]
        .iter()
        .enumerate()
    {
        put(10 + i, &seg.selector.to_le_bytes());
    }
    let f = &cpu.fpu;
    for (i, st) in f.fpr.iter().enumerate() {
        put(ST0 + i, &st[..10]);
    }
    put(FCTRL, &f.fcw.to_le_bytes());
    put(FCTRL + 1, &f.fsw.to_le_bytes());
    put(FCTRL + 2, &full_tag_word(f.ftwx).to_le_bytes());
    put(FCTRL + 4, &(f.last_ip & 0xffff_ffff).to_le_bytes());
    put(FCTRL + 6, &(f.last_dp & 0xffff_ffff).to_le_bytes());
    put(FCTRL + 7, &f.last_opcode.to_le_bytes());
    for (i, xmm) in f.xmm.iter().take(8).enumerate() {
        put(XMM0 + i, xmm);
    }
    put(MXCSR, &f.mxcsr.to_le_bytes());
    let system = [s.fs.base, s.gs.base, s.cr0, s.cr2, s.cr3, s.cr4];
    for (i, value) in system.into_iter().enumerate() {
        put(SYSTEM + i, &(value & 0xffff_ffff).to_le_bytes());
    }
    put(SYSTEM + 6, &s.efer.to_le_bytes());
    out
}

/// Register `id` of a `g` packet's `bytes`, zero-extended.
fn value(bytes: &[u8], id: usize) -> u64 {
    let mut raw = [0u8; 8];
    let n = SIZES[id].min(8);
    raw[..n].copy_from_slice(&bytes[offset(id)..offset(id) + n]);
    u64::from_le_bytes(raw)
}

fn slot(bytes: &[u8], id: usize) -> &[u8] {
    &bytes[offset(id)..offset(id) + SIZES[id]]
}

/// `base` with the `g` packet's values written over it; the upper halves of the 64-bit
/// registers, which 32-bit code cannot see, keep their values.
pub(super) fn to_vcpu(bytes: &[u8], base: &Registers) -> Registers {
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
        *slot = (*slot & !0xffff_ffff) | value(bytes, id);
    }
    let s = &mut cpu.sregs;
    let segments = [
        &mut s.cs, &mut s.ss, &mut s.ds, &mut s.es, &mut s.fs, &mut s.gs,
    ];
    for (i, seg) in segments.into_iter().enumerate() {
        seg.selector = low_u16(value(bytes, 10 + i));
    }
    let system = [
        &mut s.fs.base,
        &mut s.gs.base,
        &mut s.cr0,
        &mut s.cr2,
        &mut s.cr3,
        &mut s.cr4,
    ];
    for (i, register) in system.into_iter().enumerate() {
        *register = (*register & !0xffff_ffff) | value(bytes, SYSTEM + i);
    }
    s.efer = value(bytes, SYSTEM + 6);
    let f = &mut cpu.fpu;
    for (i, st) in f.fpr.iter_mut().enumerate() {
        st[..10].copy_from_slice(slot(bytes, ST0 + i));
    }
    f.fcw = low_u16(value(bytes, FCTRL));
    f.fsw = low_u16(value(bytes, FCTRL + 1));
    f.ftwx = abridged_tag_word(low_u16(value(bytes, FCTRL + 2)));
    f.last_opcode = low_u16(value(bytes, FCTRL + 7));
    for (i, xmm) in f.xmm.iter_mut().take(8).enumerate() {
        xmm.copy_from_slice(slot(bytes, XMM0 + i));
    }
    f.mxcsr = low_u32(value(bytes, MXCSR));
    cpu
}

/// FXSAVE keeps one "valid" bit per x87 register; gdb wants the 2-bit tags (11 = empty).
pub(super) fn full_tag_word(abridged: u8) -> u16 {
    (0..8).fold(0, |tags, i| {
        let tag = if abridged & (1 << i) != 0 { 0b00 } else { 0b11 };
        tags | tag << (2 * i)
    })
}

pub(super) fn abridged_tag_word(full: u16) -> u8 {
    (0..8).fold(0, |bits, i| {
        if (full >> (2 * i)) & 0b11 != 0b11 {
            bits | 1 << i
        } else {
            bits
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gdb::target_xml;

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
}
