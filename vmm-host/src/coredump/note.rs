//! The notes of a core. Two are the ones gdb and QEMU's tools read: NT_PRSTATUS ("CORE") with
//! the general registers in the layout of Linux's `elf_prstatus`, and QEMU's CPU state
//! ("QEMU", as `dump-guest-memory` writes it) with the segments, descriptor tables and
//! control registers. The third is ours ("VMMHOST"): JSON with what only the run knew.

use crate::addr::Gva;
use crate::paging::CpuPaging;
use crate::registers::SegmentBases;
use crate::tap::{ControlRegisters, ExceptionRecord, Frame};
use kvm_bindings::{kvm_dtable, kvm_regs, kvm_segment, kvm_sregs};
use serde::{Deserialize, Serialize};

pub const CORE: &str = "CORE";
pub const QEMU: &str = "QEMU";
pub const VMMHOST: &str = "VMMHOST";
pub const NT_PRSTATUS: u32 = 1;
/// QEMU writes its CPU state with type 0.
pub const NT_QEMU_CPU: u32 = 0;
/// "VMM" and a version byte.
pub const NT_VMMHOST: u32 = 0x564d_4d01;

/// `elf_prstatus` on x86-64: the signal at 12, the pid at 32, `user_regs_struct` at 112.
pub const PRSTATUS_SIZE: usize = 336;
const PR_CURSIG: usize = 12;
const PR_PID: usize = 32;
const PR_REG: usize = 112;

/// QEMU's `QEMUCPUState`, version 1: 8 bytes of header, 18 registers, 10 segments of 24 bytes
/// and CR0–CR4.
pub const QEMU_STATE_SIZE: usize = 8 + 18 * 8 + 10 * 24 + 5 * 8;

/// One note: its header, its name and its descriptor, each padded to 4 bytes.
pub fn encode(name: &str, kind: u32, desc: &[u8]) -> Vec<u8> {
    let name_size = name.len() + 1;
    let mut out = Vec::with_capacity(12 + name_size + desc.len() + 8);
    for word in [name_size, desc.len()] {
        out.extend(u32::try_from(word).unwrap_or(u32::MAX).to_le_bytes());
    }
    out.extend(kind.to_le_bytes());
    out.extend(name.as_bytes());
    out.push(0);
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend(desc);
    out.resize(out.len().next_multiple_of(4), 0);
    out
}

/// `kvm_regs` in `user_regs_struct` order: r15 … rdi, orig_rax, rip, cs, eflags, rsp, ss,
/// fs_base, gs_base, ds, es, fs, gs.
fn user_regs(regs: &kvm_regs, sregs: &kvm_sregs) -> [u64; 27] {
    let r = regs;
    let s = sregs;
    [
        r.r15,
        r.r14,
        r.r13,
        r.r12,
        r.rbp,
        r.rbx,
        r.r11,
        r.r10,
        r.r9,
        r.r8,
        r.rax,
        r.rcx,
        r.rdx,
        r.rsi,
        r.rdi,
        0,
        r.rip,
        u64::from(s.cs.selector),
        r.rflags,
        r.rsp,
        u64::from(s.ss.selector),
        s.fs.base,
        s.gs.base,
        u64::from(s.ds.selector),
        u64::from(s.es.selector),
        u64::from(s.fs.selector),
        u64::from(s.gs.selector),
    ]
}

/// The NT_PRSTATUS descriptor for the vCPU (pid 1, `signal` as the one that "killed" it).
pub fn prstatus(regs: &kvm_regs, sregs: &kvm_sregs, signal: u16) -> Vec<u8> {
    let mut desc = vec![0u8; PRSTATUS_SIZE];
    desc[PR_CURSIG..PR_CURSIG + 2].copy_from_slice(&signal.to_le_bytes());
    desc[PR_PID..PR_PID + 4].copy_from_slice(&1u32.to_le_bytes());
    for (i, value) in user_regs(regs, sregs).iter().enumerate() {
        let at = PR_REG + i * 8;
        desc[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }
    desc
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// The general registers of an NT_PRSTATUS descriptor; `None` when it is too short.
pub fn regs_of_prstatus(desc: &[u8]) -> Option<kvm_regs> {
    if desc.len() < PRSTATUS_SIZE {
        return None;
    }
    let reg = |i: usize| u64_at(desc, PR_REG + i * 8).unwrap_or(0);
    Some(kvm_regs {
        r15: reg(0),
        r14: reg(1),
        r13: reg(2),
        r12: reg(3),
        rbp: reg(4),
        rbx: reg(5),
        r11: reg(6),
        r10: reg(7),
        r9: reg(8),
        r8: reg(9),
        rax: reg(10),
        rcx: reg(11),
        rdx: reg(12),
        rsi: reg(13),
        rdi: reg(14),
        rip: reg(16),
        rflags: reg(18),
        rsp: reg(19),
    })
}

/// A segment's attributes as QEMU keeps them: the descriptor's bits 8–23.
fn segment_flags(s: &kvm_segment) -> u32 {
    u32::from(s.type_) << 8
        | u32::from(s.s) << 12
        | u32::from(s.dpl) << 13
        | u32::from(s.present) << 15
        | u32::from(s.avl) << 20
        | u32::from(s.l) << 21
        | u32::from(s.db) << 22
        | u32::from(s.g) << 23
}

fn segment_of(selector: u32, limit: u32, flags: u32, base: u64) -> kvm_segment {
    let bit = |n: u32| u8::from(flags >> n & 1 == 1);
    let field = |shift: u32, mask: u32| u8::try_from(flags >> shift & mask).unwrap_or(0);
    kvm_segment {
        base,
        limit,
        selector: crate::narrow::low_u16(u64::from(selector)),
        type_: field(8, 0xf),
        present: bit(15),
        dpl: field(13, 3),
        db: bit(22),
        s: bit(12),
        l: bit(21),
        g: bit(23),
        avl: bit(20),
        unusable: u8::from(flags >> 15 & 1 == 0),
        padding: 0,
    }
}

/// QEMU's CPU-state descriptor.
pub fn qemu_cpu_state(regs: &kvm_regs, sregs: &kvm_sregs) -> Vec<u8> {
    let mut out = Vec::with_capacity(QEMU_STATE_SIZE);
    out.extend(1u32.to_le_bytes());
    out.extend(u32::try_from(QEMU_STATE_SIZE).unwrap_or(0).to_le_bytes());
    let r = regs;
    for value in [
        r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rsp, r.rbp, r.r8, r.r9, r.r10, r.r11, r.r12,
        r.r13, r.r14, r.r15, r.rip, r.rflags,
    ] {
        out.extend(value.to_le_bytes());
    }
    let s = sregs;
    for segment in [&s.cs, &s.ds, &s.es, &s.fs, &s.gs, &s.ss, &s.ldt, &s.tr] {
        out.extend(u32::from(segment.selector).to_le_bytes());
        out.extend(segment.limit.to_le_bytes());
        out.extend(segment_flags(segment).to_le_bytes());
        out.extend(0u32.to_le_bytes());
        out.extend(segment.base.to_le_bytes());
    }
    for table in [&s.gdt, &s.idt] {
        out.extend(0u32.to_le_bytes());
        out.extend(u32::from(table.limit).to_le_bytes());
        out.extend(0u64.to_le_bytes());
        out.extend(table.base.to_le_bytes());
    }
    for cr in [s.cr0, 0, s.cr2, s.cr3, s.cr4] {
        out.extend(cr.to_le_bytes());
    }
    out
}

/// The system registers of QEMU's CPU-state descriptor (EFER and CR8 are not in it: they
/// come from our note).
pub fn sregs_of_qemu(desc: &[u8]) -> Option<kvm_sregs> {
    if desc.len() < QEMU_STATE_SIZE || u32_at(desc, 0)? != 1 {
        return None;
    }
    let segments_at = 8 + 18 * 8;
    let segment = |i: usize| {
        let at = segments_at + i * 24;
        Some(segment_of(
            u32_at(desc, at)?,
            u32_at(desc, at + 4)?,
            u32_at(desc, at + 8)?,
            u64_at(desc, at + 16)?,
        ))
    };
    let table = |i: usize| {
        let at = segments_at + i * 24;
        Some(kvm_dtable {
            base: u64_at(desc, at + 16)?,
            limit: crate::narrow::low_u16(u64::from(u32_at(desc, at + 4)?)),
            padding: [0; 3],
        })
    };
    let crs = segments_at + 10 * 24;
    Some(kvm_sregs {
        cs: segment(0)?,
        ds: segment(1)?,
        es: segment(2)?,
        fs: segment(3)?,
        gs: segment(4)?,
        ss: segment(5)?,
        ldt: segment(6)?,
        tr: segment(7)?,
        gdt: table(8)?,
        idt: table(9)?,
        cr0: u64_at(desc, crs)?,
        cr2: u64_at(desc, crs + 16)?,
        cr3: u64_at(desc, crs + 24)?,
        cr4: u64_at(desc, crs + 32)?,
        ..Default::default()
    })
}

/// What the run knew that the registers and memory do not say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmmNote {
    /// Bumped when a field changes meaning.
    pub version: u32,
    /// When the core was written: "at the run's end", or at which exception.
    pub taken: String,
    /// How the run ended, when it had: its headline, and its kind (`triple-fault`, `exit`…).
    pub ending: Option<String>,
    pub ending_kind: Option<String>,
    /// The kernel file and the file its symbols were read from.
    pub kernel: String,
    pub symbols: Option<String>,
    pub efer: u64,
    pub cr8: u64,
    pub apic_base: u64,
    pub paging: CpuPaging,
    /// Guest RAM: (start, size).
    pub ram: Vec<(u64, u64)>,
    pub exceptions: u64,
    /// `#PF×15746 #GP`.
    pub summary: String,
    /// The exceptions still being handled when the core was written, outermost first.
    pub active: Vec<RecordNote>,
}

impl VmmNote {
    pub const VERSION: u32 = 1;
}

/// One exception record, as the tap took it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordNote {
    pub seq: u64,
    pub vector: u8,
    pub shared_handler: bool,
    pub handler: Gva,
    pub frame: Option<Frame>,
    pub frame_error: Option<String>,
    pub control: ControlRegisters,
    /// rax rbx rcx rdx rsi rdi rsp rbp r8–r15 rip rflags.
    pub regs: [u64; 18],
    pub segments: SegmentBases,
    pub depth: usize,
    pub outer: Vec<u64>,
}

impl From<&ExceptionRecord> for RecordNote {
    fn from(r: &ExceptionRecord) -> Self {
        let g = &r.regs;
        Self {
            seq: r.seq,
            vector: r.vector,
            shared_handler: r.shared_handler,
            handler: r.handler,
            frame: r.frame,
            frame_error: r.frame_error.clone(),
            control: r.control,
            regs: [
                g.rax, g.rbx, g.rcx, g.rdx, g.rsi, g.rdi, g.rsp, g.rbp, g.r8, g.r9, g.r10, g.r11,
                g.r12, g.r13, g.r14, g.r15, g.rip, g.rflags,
            ],
            segments: r.segments,
            depth: r.depth,
            outer: r.outer.clone(),
        }
    }
}

impl RecordNote {
    pub fn record(&self) -> ExceptionRecord {
        let [
            rax,
            rbx,
            rcx,
            rdx,
            rsi,
            rdi,
            rsp,
            rbp,
            r8,
            r9,
            r10,
            r11,
            r12,
            r13,
            r14,
            r15,
            rip,
            rflags,
        ] = self.regs;
        ExceptionRecord {
            seq: self.seq,
            vector: self.vector,
            shared_handler: self.shared_handler,
            handler: self.handler,
            frame: self.frame,
            frame_error: self.frame_error.clone(),
            control: self.control,
            regs: kvm_regs {
                rax,
                rbx,
                rcx,
                rdx,
                rsi,
                rdi,
                rsp,
                rbp,
                r8,
                r9,
                r10,
                r11,
                r12,
                r13,
                r14,
                r15,
                rip,
                rflags,
            },
            segments: self.segments,
            depth: self.depth,
            outer: self.outer.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> (kvm_regs, kvm_sregs) {
        let regs = kvm_regs {
            rax: 1,
            rbx: 2,
            rcx: 3,
            rdx: 4,
            rsi: 5,
            rdi: 6,
            rsp: 0x7000,
            rbp: 0x7010,
            r8: 8,
            r15: 15,
            rip: 0x10_1234,
            rflags: 0x246,
            ..Default::default()
        };
        let mut sregs = kvm_sregs {
            cr0: 0x8001_0011,
            cr2: 0xdead_b000,
            cr3: 0x33_2000,
            cr4: 0x20,
            ..Default::default()
        };
        sregs.cs = kvm_segment {
            selector: 0x08,
            limit: 0xffff_ffff,
            type_: 0xb,
            present: 1,
            s: 1,
            l: 1,
            g: 1,
            ..Default::default()
        };
        sregs.ss = kvm_segment {
            selector: 0x10,
            type_: 3,
            present: 1,
            s: 1,
            db: 1,
            ..Default::default()
        };
        sregs.gdt = kvm_dtable {
            base: 0x1000,
            limit: 0x37,
            padding: [0; 3],
        };
        sregs.idt = kvm_dtable {
            base: 0x2000,
            limit: 0xfff,
            padding: [0; 3],
        };
        (regs, sregs)
    }

    #[test]
    fn prstatus_puts_rip_and_rsp_where_gdb_reads_them() {
        let (regs, sregs) = state();
        let desc = prstatus(&regs, &sregs, 11);
        assert_eq!(desc.len(), 336);
        assert_eq!(u64_at(&desc, 112 + 16 * 8), Some(0x10_1234), "rip");
        assert_eq!(u64_at(&desc, 112 + 19 * 8), Some(0x7000), "rsp");
        assert_eq!(u64_at(&desc, 112 + 17 * 8), Some(0x08), "cs");
        assert_eq!(desc[12], 11, "the signal");
        assert_eq!(regs_of_prstatus(&desc), Some(regs));
        assert_eq!(regs_of_prstatus(&desc[..300]), None);
    }

    #[test]
    fn qemu_state_round_trips_segments_tables_and_control_registers() {
        let (regs, sregs) = state();
        let desc = qemu_cpu_state(&regs, &sregs);
        assert_eq!(desc.len(), QEMU_STATE_SIZE);
        assert_eq!(desc.len(), 432);
        let back = sregs_of_qemu(&desc).expect("a state");
        assert_eq!(
            (back.cr0, back.cr2, back.cr3, back.cr4),
            (sregs.cr0, sregs.cr2, sregs.cr3, sregs.cr4)
        );
        assert_eq!((back.gdt.base, back.gdt.limit), (0x1000, 0x37));
        assert_eq!((back.idt.base, back.idt.limit), (0x2000, 0xfff));
        assert_eq!(back.cs.l, 1);
        assert_eq!(back.cs.type_, 0xb);
        assert_eq!(back.ss.db, 1);
        assert_eq!(back.ss.selector, 0x10);
        let mut wrong = desc.clone();
        wrong[0] = 2;
        assert!(sregs_of_qemu(&wrong).is_none(), "only version 1");
        assert!(sregs_of_qemu(&desc[..400]).is_none());
    }

    #[test]
    fn a_note_is_padded_to_four_bytes() {
        let note = encode("QEMU", 0, &[1, 2, 3]);
        assert_eq!(note.len(), 12 + 8 + 4);
        assert_eq!(&note[0..4], &5u32.to_le_bytes());
        assert_eq!(&note[4..8], &3u32.to_le_bytes());
        assert_eq!(&note[12..17], b"QEMU\0");
    }
}
