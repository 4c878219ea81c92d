//! The register sets gdb sees. In long mode, QEMU's x86-64 layout (the i386-64bit core
//! feature with fs_base … efer after the segment selectors), so gdb scripts written against
//! `qemu -s` work unchanged: `info registers cr3`, `$efer`, `p $cr2`. In protected or real
//! mode, gdb's i386 layout (`arch32`), which QEMU's x86-64 binary never offers: `x/i $pc`
//! then disassembles 32-bit code as 32-bit code.

use super::arch32::{abridged_tag_word, full_tag_word};
use super::target_xml;
use crate::narrow::{low_u16, low_u32};
use crate::vm::Registers;
use gdbstub::arch::{Arch, RegId};
use std::num::NonZeroUsize;

/// The architecture gdbstub speaks for us.
#[derive(Debug)]
pub enum X86_64Kvm {}

impl Arch for X86_64Kvm {
    type Usize = u64;
    type Registers = GdbRegisters;
    type BreakpointKind = usize;
    type RegId = GdbRegId;

    /// Long mode's; a session that starts in 32-bit code gets [`Layout::Protected`]'s through
    /// the target's override.
    fn target_description_xml() -> Option<&'static str> {
        Some(target_xml::LONG_MODE)
    }
}

/// Which register layout a gdb session uses: fixed when gdb connects, since gdb reads the
/// target description once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// QEMU's x86-64 layout, 66 registers, 608 bytes.
    #[default]
    Long,
    /// gdb's i386 layout, 48 registers.
    Protected,
}

impl std::str::FromStr for Layout {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "x86-64" => Ok(Self::Long),
            "i386" => Ok(Self::Protected),
            other => Err(format!(
                "`{other}` is not a register layout: i386 (32-bit code) or x86-64"
            )),
        }
    }
}

impl Layout {
    /// The layout for debugging the kernel in `file`, by what it is: i386 for an ELF32 kernel
    /// and for a disk image (a boot sector runs 16- and 32-bit code), x86-64 for an ELF64
    /// (a Multiboot kernel that starts in 32-bit code but goes on to long mode) and a
    /// bzImage. `--gdb-arch` overrides it for a 32-bit kernel in an ELF64 file.
    pub fn for_kernel(file: &std::path::Path) -> Self {
        use std::io::Read;
        // Enough for the ELF class, the boot signature and a bzImage's "HdrS" at 0x202.
        let mut head = Vec::new();
        let _ = std::fs::File::open(file).and_then(|f| f.take(0x206).read_to_end(&mut head));
        let elf = head.starts_with(b"\x7fELF");
        let elf32 = elf && head.get(4) == Some(&1);
        let boot_sector = !elf
            && head.get(0x1fe..0x200) == Some(&[0x55, 0xaa])
            && head.get(0x202..0x206) != Some(b"HdrS");
        if elf32 || boot_sector {
            Self::Protected
        } else {
            Self::Long
        }
    }

    /// The layout for a vCPU in this state: i386 unless long mode is active.
    pub fn of(cpu: &Registers) -> Self {
        const EFER_LMA: u64 = 1 << 10;
        if cpu.sregs.efer & EFER_LMA != 0 {
            Self::Long
        } else {
            Self::Protected
        }
    }

    pub const fn sizes(self) -> &'static [usize] {
        match self {
            Self::Long => &SIZES,
            Self::Protected => &super::arch32::SIZES,
        }
    }

    pub const fn target_xml(self) -> &'static str {
        match self {
            Self::Long => target_xml::LONG_MODE,
            Self::Protected => target_xml::PROTECTED_MODE,
        }
    }

    /// gdb's numbers for the frame registers it wants with every stop: (bp, sp, pc) and their
    /// width in bytes.
    pub const fn frame_registers(self) -> ([GdbRegId; 3], usize) {
        match self {
            Self::Long => ([GdbRegId::RBP, GdbRegId::RSP, GdbRegId::RIP], 8),
            Self::Protected => ([GdbRegId(5), GdbRegId(4), GdbRegId(8)], 4),
        }
    }

    fn total(self) -> usize {
        let mut total = 0;
        for size in self.sizes() {
            total += size;
        }
        total
    }
}

/// Size in bytes of each register in the `g` packet, in gdb's numbering (QEMU's order).
const SIZES: [usize; REGISTERS] = {
    let mut sizes = [8; REGISTERS];
    let mut i = 0;
    while i < REGISTERS {
        sizes[i] = match i {
            0..=16 => 8,
            17..=23 => 4,
            24..=32 => 8,
            33..=40 => 10,
            41..=48 => 4,
            49..=64 => 16,
            _ => 4,
        };
        i += 1;
    }
    sizes
};
const REGISTERS: usize = 66;

/// gdb's register number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GdbRegId(pub usize);

impl GdbRegId {
    pub const RBP: Self = Self(6);
    pub const RSP: Self = Self(7);
    pub const RIP: Self = Self(16);
}

impl RegId for GdbRegId {
    /// Any number of either layout; the size is left to the session's layout (gdbstub would
    /// refuse a register whose size differs from one given here).
    fn from_raw_id(id: usize) -> Option<(Self, Option<NonZeroUsize>)> {
        (id < REGISTERS).then_some((Self(id), None))
    }

    fn to_raw_id(&self) -> Option<usize> {
        Some(self.0)
    }
}

/// The registers in the `g` packet, as raw little-endian bytes per register.
#[derive(Debug, Clone, PartialEq)]
pub struct GdbRegisters {
    layout: Layout,
    bytes: Vec<u8>,
}

impl Default for GdbRegisters {
    fn default() -> Self {
        Self::zeroed(Layout::Long)
    }
}

fn offset(layout: Layout, id: usize) -> usize {
    layout.sizes()[..id].iter().sum()
}

impl GdbRegisters {
    pub fn zeroed(layout: Layout) -> Self {
        Self {
            layout,
            bytes: vec![0; layout.total()],
        }
    }

    pub const fn layout(&self) -> Layout {
        self.layout
    }

    /// Register `id`'s bytes; empty when this layout has no such register.
    pub fn get(&self, id: usize) -> &[u8] {
        let Some(&size) = self.layout.sizes().get(id) else {
            return &[];
        };
        let at = offset(self.layout, id);
        &self.bytes[at..at + size]
    }

    /// Replace register `id` with `value` (shorter values are zero-extended); false when `id`
    /// is unknown.
    pub fn set(&mut self, id: usize, value: &[u8]) -> bool {
        let Some(&size) = self.layout.sizes().get(id) else {
            return false;
        };
        let at = offset(self.layout, id);
        let slot = &mut self.bytes[at..at + size];
        slot.fill(0);
        let n = value.len().min(size);
        slot[..n].copy_from_slice(&value[..n]);
        true
    }

    fn u64(&self, id: usize) -> u64 {
        let mut raw = [0u8; 8];
        let value = self.get(id);
        raw[..value.len().min(8)].copy_from_slice(&value[..value.len().min(8)]);
        u64::from_le_bytes(raw)
    }

    fn put(&mut self, id: usize, value: u64) {
        self.set(id, &value.to_le_bytes());
    }

    /// gdb's view of the vCPU in `layout`.
    pub fn from_vcpu(cpu: &Registers, layout: Layout) -> Self {
        match layout {
            Layout::Long => Self::long_from_vcpu(cpu),
            Layout::Protected => Self {
                layout,
                bytes: super::arch32::from_vcpu(cpu),
            },
        }
    }

    /// The vCPU state with gdb's values written over `base`.
    pub fn to_vcpu(&self, base: &Registers) -> Registers {
        match self.layout {
            Layout::Long => self.long_to_vcpu(base),
            Layout::Protected => super::arch32::to_vcpu(&self.bytes, base),
        }
    }

    fn long_from_vcpu(cpu: &Registers) -> Self {
        let mut out = Self::zeroed(Layout::Long);
        let r = &cpu.regs;
        let s = &cpu.sregs;
        let gprs = [
            r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11,
            r.r12, r.r13, r.r14, r.r15, r.rip,
        ];
        for (id, value) in gprs.into_iter().enumerate() {
            out.put(id, value);
        }
        out.put(17, r.rflags);
        for (i, seg) in [&s.cs, &s.ss, &s.ds, &s.es, &s.fs, &s.gs]
            .iter()
            .enumerate()
        {
            out.put(18 + i, u64::from(seg.selector));
        }
        let system = [
            s.fs.base,
            s.gs.base,
            cpu.kernel_gs_base,
            s.cr0,
            s.cr2,
            s.cr3,
            s.cr4,
            s.cr8,
            s.efer,
        ];
        for (i, value) in system.into_iter().enumerate() {
            out.put(24 + i, value);
        }
        let f = &cpu.fpu;
        for (i, st) in f.fpr.iter().enumerate() {
            out.set(33 + i, &st[..10]);
        }
        out.put(41, u64::from(f.fcw));
        out.put(42, u64::from(f.fsw));
        out.put(43, u64::from(full_tag_word(f.ftwx)));
        out.put(45, f.last_ip & 0xffff_ffff);
        out.put(47, f.last_dp & 0xffff_ffff);
        out.put(48, u64::from(f.last_opcode));
        for (i, xmm) in f.xmm.iter().enumerate() {
            out.set(49 + i, xmm);
        }
        out.put(65, u64::from(f.mxcsr));
        out
    }

    fn long_to_vcpu(&self, base: &Registers) -> Registers {
        let mut cpu = base.clone();
        let r = &mut cpu.regs;
        let gprs = [
            &mut r.rax, &mut r.rbx, &mut r.rcx, &mut r.rdx, &mut r.rsi, &mut r.rdi, &mut r.rbp,
            &mut r.rsp, &mut r.r8, &mut r.r9, &mut r.r10, &mut r.r11, &mut r.r12, &mut r.r13,
            &mut r.r14, &mut r.r15, &mut r.rip,
        ];
        for (id, slot) in gprs.into_iter().enumerate() {
            *slot = self.u64(id);
        }
        // The upper half of RFLAGS is reserved: gdb only has the low 32 bits.
        r.rflags = (r.rflags & !0xffff_ffff) | self.u64(17);
        let s = &mut cpu.sregs;
        for (i, seg) in [
            &mut s.cs, &mut s.ss, &mut s.ds, &mut s.es, &mut s.fs, &mut s.gs,
        ]
        .into_iter()
        .enumerate()
        {
            seg.selector = low_u16(self.u64(18 + i));
        }
        s.fs.base = self.u64(24);
        s.gs.base = self.u64(25);
        cpu.kernel_gs_base = self.u64(26);
        s.cr0 = self.u64(27);
        s.cr2 = self.u64(28);
        s.cr3 = self.u64(29);
        s.cr4 = self.u64(30);
        s.cr8 = self.u64(31);
        s.efer = self.u64(32);
        let f = &mut cpu.fpu;
        for (i, st) in f.fpr.iter_mut().enumerate() {
            st[..10].copy_from_slice(self.get(33 + i));
        }
        f.fcw = low_u16(self.u64(41));
        f.fsw = low_u16(self.u64(42));
        f.ftwx = abridged_tag_word(low_u16(self.u64(43)));
        f.last_opcode = low_u16(self.u64(48));
        for (i, xmm) in f.xmm.iter_mut().enumerate() {
            xmm.copy_from_slice(self.get(49 + i));
        }
        f.mxcsr = low_u32(self.u64(65));
        cpu
    }
}

impl gdbstub::arch::Registers for GdbRegisters {
    type ProgramCounter = u64;

    fn pc(&self) -> u64 {
        let (frame, _) = self.layout.frame_registers();
        self.u64(frame[2].0)
    }

    fn gdb_serialize(&self, mut write_byte: impl FnMut(Option<u8>)) {
        for &byte in &self.bytes {
            write_byte(Some(byte));
        }
    }

    /// The layout is the one whose size the packet has: gdbstub starts from a default.
    fn gdb_deserialize(&mut self, bytes: &[u8]) -> Result<(), ()> {
        let layout = [Layout::Long, Layout::Protected]
            .into_iter()
            .find(|l| l.total() == bytes.len())
            .ok_or(())?;
        *self = Self {
            layout,
            bytes: bytes.to_vec(),
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_g_packet_has_qemus_size_and_offsets() {
        // Measured from QEMU 7.2 with `maint print remote-registers`.
        assert_eq!(GdbRegisters::default().bytes.len(), 608);
        let offset = |id| offset(Layout::Long, id);
        assert_eq!(offset(17), 136); // eflags
        assert_eq!(offset(24), 164); // fs_base
        assert_eq!(offset(29), 204); // cr3
        assert_eq!(offset(33), 236); // st0
        assert_eq!(offset(49), 348); // xmm0
        assert_eq!(offset(65), 604); // mxcsr
        assert_eq!(target_xml::LONG_MODE.matches("<reg ").count(), REGISTERS);
    }

    #[test]
    fn vcpu_state_survives_the_round_trip_through_gdbs_layout() {
        let mut cpu = Registers::default();
        cpu.regs.rax = 0x1111;
        cpu.regs.r15 = 0xffff_8000_0000_0000;
        cpu.regs.rip = 0x10_0000;
        cpu.regs.rflags = 0x246;
        cpu.sregs.cs.selector = 0x8;
        cpu.sregs.cr3 = 0x7000;
        cpu.sregs.efer = 0xd01;
        cpu.kernel_gs_base = 0xdead_0000;
        cpu.fpu.ftwx = 0b1000_0001;
        cpu.fpu.xmm[3] = [7; 16];
        let gdb = GdbRegisters::from_vcpu(&cpu, Layout::of(&cpu));
        assert_eq!(gdb.layout(), Layout::Long);
        assert_eq!(gdbstub::arch::Registers::pc(&gdb), 0x10_0000);
        assert_eq!(gdb.get(29), 0x7000u64.to_le_bytes());
        assert_eq!(
            gdb.get(43),
            0x3ffcu16
                .to_le_bytes()
                .iter()
                .chain(&[0, 0])
                .copied()
                .collect::<Vec<_>>()
        );
        assert_eq!(gdb.to_vcpu(&Registers::default()), cpu);
    }

    /// kernel32 at its #DE: flat 32-bit protected mode, paging off.
    fn protected() -> Registers {
        let mut cpu = Registers::default();
        cpu.regs.rax = 1;
        cpu.regs.rsp = 0x20_6000;
        cpu.regs.rbp = 0x20_6100;
        cpu.regs.rip = 0x20_0123;
        cpu.regs.rflags = 0x46;
        cpu.sregs.cs.selector = 0x08;
        cpu.sregs.cr0 = 0x11;
        cpu.fpu.xmm[7] = [9; 16];
        cpu.fpu.ftwx = 0b1000_0001;
        cpu
    }

    #[test]
    fn a_32_bit_vcpu_gets_the_i386_layout_and_survives_the_round_trip() {
        use gdbstub::arch::Registers as _;
        let cpu = protected();
        assert_eq!(Layout::of(&cpu), Layout::Protected);
        let gdb = GdbRegisters::from_vcpu(&cpu, Layout::Protected);
        assert_eq!(gdb.pc(), 0x20_0123);
        assert_eq!(gdb.get(4), 0x20_6000u32.to_le_bytes()); // esp
        assert_eq!(gdb.get(43), 0x11u32.to_le_bytes()); // cr0
        assert_eq!(gdb.to_vcpu(&cpu), cpu);
        // A G packet of the i386 size is read as i386.
        let mut bytes = Vec::new();
        gdb.gdb_serialize(|b| bytes.push(b.unwrap_or(0)));
        assert_eq!(bytes.len(), 340);
        let mut back = GdbRegisters::default();
        back.gdb_deserialize(&bytes).unwrap();
        assert_eq!(back.layout(), Layout::Protected);
        assert_eq!(back, gdb);
    }

    #[test]
    fn a_write_of_eax_keeps_the_upper_half_of_rax() {
        let mut cpu = protected();
        cpu.regs.rax = 0xdead_beef_0000_0001;
        let mut gdb = GdbRegisters::from_vcpu(&cpu, Layout::Protected);
        assert!(gdb.set(0, &7u32.to_le_bytes()));
        assert_eq!(gdb.to_vcpu(&cpu).regs.rax, 0xdead_beef_0000_0007);
        assert!(!gdb.set(48, &[1]));
        assert!(gdb.get(48).is_empty());
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
    fn a_g_packet_of_the_wrong_size_is_refused() {
        let mut regs = GdbRegisters::default();
        assert!(gdbstub::arch::Registers::gdb_deserialize(&mut regs, &[0; 10]).is_err());
        assert!(!regs.set(66, &[1]));
    }
}
