//! The x86-64 register set gdb sees, laid out as QEMU's gdbstub lays it out (the
//! i386-64bit core feature with fs_base … efer after the segment selectors), so gdb scripts
//! written against `qemu -s` work unchanged: `info registers cr3`, `$efer`, `p $cr2`.

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

    fn target_description_xml() -> Option<&'static str> {
        Some(TARGET_XML)
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
    fn from_raw_id(id: usize) -> Option<(Self, Option<NonZeroUsize>)> {
        let size = *SIZES.get(id)?;
        Some((Self(id), NonZeroUsize::new(size)))
    }

    fn to_raw_id(&self) -> Option<usize> {
        Some(self.0)
    }
}

/// The registers in the `g` packet, as raw little-endian bytes per register.
#[derive(Debug, Clone, PartialEq)]
pub struct GdbRegisters {
    bytes: Vec<u8>,
}

impl Default for GdbRegisters {
    fn default() -> Self {
        Self {
            bytes: vec![0; SIZES.iter().sum()],
        }
    }
}

fn offset(id: usize) -> usize {
    SIZES[..id].iter().sum()
}

impl GdbRegisters {
    pub fn get(&self, id: usize) -> &[u8] {
        let at = offset(id);
        &self.bytes[at..at + SIZES[id]]
    }

    /// Replace register `id` with `value` (shorter values are zero-extended); false when `id`
    /// is unknown.
    pub fn set(&mut self, id: usize, value: &[u8]) -> bool {
        let Some(&size) = SIZES.get(id) else {
            return false;
        };
        let at = offset(id);
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

    /// gdb's view of the vCPU.
    pub fn from_vcpu(cpu: &Registers) -> Self {
        let mut out = Self::default();
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

    /// The vCPU state with gdb's values written over `base`.
    pub fn to_vcpu(&self, base: &Registers) -> Registers {
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

/// FXSAVE keeps one "valid" bit per x87 register; gdb wants the 2-bit tags (11 = empty).
fn full_tag_word(abridged: u8) -> u16 {
    (0..8).fold(0, |tags, i| {
        let tag = if abridged & (1 << i) != 0 { 0b00 } else { 0b11 };
        tags | tag << (2 * i)
    })
}

fn abridged_tag_word(full: u16) -> u8 {
    (0..8).fold(0, |bits, i| {
        if (full >> (2 * i)) & 0b11 != 0b11 {
            bits | 1 << i
        } else {
            bits
        }
    })
}

impl gdbstub::arch::Registers for GdbRegisters {
    type ProgramCounter = u64;

    fn pc(&self) -> u64 {
        self.u64(16)
    }

    fn gdb_serialize(&self, mut write_byte: impl FnMut(Option<u8>)) {
        for &byte in &self.bytes {
            write_byte(Some(byte));
        }
    }

    fn gdb_deserialize(&mut self, bytes: &[u8]) -> Result<(), ()> {
        if bytes.len() != self.bytes.len() {
            return Err(());
        }
        self.bytes.copy_from_slice(bytes);
        Ok(())
    }
}

/// The target description: register names, sizes, order and bit fields as QEMU 7's.
const TARGET_XML: &str = r#"<?xml version="1.0"?>
<!DOCTYPE target SYSTEM "gdb-target.dtd">
<target version="1.0">
  <architecture>i386:x86-64</architecture>
  <feature name="org.gnu.gdb.i386.core">
    <flags id="x64_eflags" size="4">
      <field name="CF" start="0" end="0"/>
      <field name="" start="1" end="1"/>
      <field name="PF" start="2" end="2"/>
      <field name="AF" start="4" end="4"/>
      <field name="ZF" start="6" end="6"/>
      <field name="SF" start="7" end="7"/>
      <field name="TF" start="8" end="8"/>
      <field name="IF" start="9" end="9"/>
      <field name="DF" start="10" end="10"/>
      <field name="OF" start="11" end="11"/>
      <field name="NT" start="14" end="14"/>
      <field name="RF" start="16" end="16"/>
      <field name="VM" start="17" end="17"/>
      <field name="AC" start="18" end="18"/>
      <field name="VIF" start="19" end="19"/>
      <field name="VIP" start="20" end="20"/>
      <field name="ID" start="21" end="21"/>
    </flags>
    <flags id="x64_cr0" size="8">
      <field name="PG" start="31" end="31"/>
      <field name="CD" start="30" end="30"/>
      <field name="NW" start="29" end="29"/>
      <field name="AM" start="18" end="18"/>
      <field name="WP" start="16" end="16"/>
      <field name="NE" start="5" end="5"/>
      <field name="ET" start="4" end="4"/>
      <field name="TS" start="3" end="3"/>
      <field name="EM" start="2" end="2"/>
      <field name="MP" start="1" end="1"/>
      <field name="PE" start="0" end="0"/>
    </flags>
    <flags id="x64_cr3" size="8">
      <field name="PDBR" start="12" end="63"/>
      <field name="PCID" start="0" end="11"/>
    </flags>
    <flags id="x64_cr4" size="8">
      <field name="PKE" start="22" end="22"/>
      <field name="SMAP" start="21" end="21"/>
      <field name="SMEP" start="20" end="20"/>
      <field name="OSXSAVE" start="18" end="18"/>
      <field name="PCIDE" start="17" end="17"/>
      <field name="FSGSBASE" start="16" end="16"/>
      <field name="LA57" start="12" end="12"/>
      <field name="UMIP" start="11" end="11"/>
      <field name="OSXMMEXCPT" start="10" end="10"/>
      <field name="OSFXSR" start="9" end="9"/>
      <field name="PCE" start="8" end="8"/>
      <field name="PGE" start="7" end="7"/>
      <field name="MCE" start="6" end="6"/>
      <field name="PAE" start="5" end="5"/>
      <field name="PSE" start="4" end="4"/>
      <field name="DE" start="3" end="3"/>
      <field name="TSD" start="2" end="2"/>
      <field name="PVI" start="1" end="1"/>
      <field name="VME" start="0" end="0"/>
    </flags>
    <flags id="x64_efer" size="8">
      <field name="TCE" start="15" end="15"/>
      <field name="FFXSR" start="14" end="14"/>
      <field name="LMSLE" start="13" end="13"/>
      <field name="SVME" start="12" end="12"/>
      <field name="NXE" start="11" end="11"/>
      <field name="LMA" start="10" end="10"/>
      <field name="LME" start="8" end="8"/>
      <field name="SCE" start="0" end="0"/>
    </flags>
    <vector id="v4f" type="ieee_single" count="4"/>
    <vector id="v2d" type="ieee_double" count="2"/>
    <vector id="v16i8" type="int8" count="16"/>
    <vector id="v8i16" type="int16" count="8"/>
    <vector id="v4i32" type="int32" count="4"/>
    <vector id="v2i64" type="int64" count="2"/>
    <union id="vec128">
      <field name="v4_float" type="v4f"/>
      <field name="v2_double" type="v2d"/>
      <field name="v16_int8" type="v16i8"/>
      <field name="v8_int16" type="v8i16"/>
      <field name="v4_int32" type="v4i32"/>
      <field name="v2_int64" type="v2i64"/>
      <field name="uint128" type="uint128"/>
    </union>
    <flags id="x64_mxcsr" size="4">
      <field name="IE" start="0" end="0"/>
      <field name="DE" start="1" end="1"/>
      <field name="ZE" start="2" end="2"/>
      <field name="OE" start="3" end="3"/>
      <field name="UE" start="4" end="4"/>
      <field name="PE" start="5" end="5"/>
      <field name="DAZ" start="6" end="6"/>
      <field name="IM" start="7" end="7"/>
      <field name="DM" start="8" end="8"/>
      <field name="ZM" start="9" end="9"/>
      <field name="OM" start="10" end="10"/>
      <field name="UM" start="11" end="11"/>
      <field name="PM" start="12" end="12"/>
      <field name="FZ" start="15" end="15"/>
    </flags>
    <reg name="rax" bitsize="64" type="int64" regnum="0"/>
    <reg name="rbx" bitsize="64" type="int64"/>
    <reg name="rcx" bitsize="64" type="int64"/>
    <reg name="rdx" bitsize="64" type="int64"/>
    <reg name="rsi" bitsize="64" type="int64"/>
    <reg name="rdi" bitsize="64" type="int64"/>
    <reg name="rbp" bitsize="64" type="data_ptr"/>
    <reg name="rsp" bitsize="64" type="data_ptr"/>
    <reg name="r8" bitsize="64" type="int64"/>
    <reg name="r9" bitsize="64" type="int64"/>
    <reg name="r10" bitsize="64" type="int64"/>
    <reg name="r11" bitsize="64" type="int64"/>
    <reg name="r12" bitsize="64" type="int64"/>
    <reg name="r13" bitsize="64" type="int64"/>
    <reg name="r14" bitsize="64" type="int64"/>
    <reg name="r15" bitsize="64" type="int64"/>
    <reg name="rip" bitsize="64" type="code_ptr"/>
    <reg name="eflags" bitsize="32" type="x64_eflags"/>
    <reg name="cs" bitsize="32" type="int32"/>
    <reg name="ss" bitsize="32" type="int32"/>
    <reg name="ds" bitsize="32" type="int32"/>
    <reg name="es" bitsize="32" type="int32"/>
    <reg name="fs" bitsize="32" type="int32"/>
    <reg name="gs" bitsize="32" type="int32"/>
    <reg name="fs_base" bitsize="64" type="int64"/>
    <reg name="gs_base" bitsize="64" type="int64"/>
    <reg name="k_gs_base" bitsize="64" type="int64"/>
    <reg name="cr0" bitsize="64" type="x64_cr0"/>
    <reg name="cr2" bitsize="64" type="int64"/>
    <reg name="cr3" bitsize="64" type="x64_cr3"/>
    <reg name="cr4" bitsize="64" type="x64_cr4"/>
    <reg name="cr8" bitsize="64" type="int64"/>
    <reg name="efer" bitsize="64" type="x64_efer"/>
    <reg name="st0" bitsize="80" type="i387_ext"/>
    <reg name="st1" bitsize="80" type="i387_ext"/>
    <reg name="st2" bitsize="80" type="i387_ext"/>
    <reg name="st3" bitsize="80" type="i387_ext"/>
    <reg name="st4" bitsize="80" type="i387_ext"/>
    <reg name="st5" bitsize="80" type="i387_ext"/>
    <reg name="st6" bitsize="80" type="i387_ext"/>
    <reg name="st7" bitsize="80" type="i387_ext"/>
    <reg name="fctrl" bitsize="32" type="int" group="float"/>
    <reg name="fstat" bitsize="32" type="int" group="float"/>
    <reg name="ftag" bitsize="32" type="int" group="float"/>
    <reg name="fiseg" bitsize="32" type="int" group="float"/>
    <reg name="fioff" bitsize="32" type="int" group="float"/>
    <reg name="foseg" bitsize="32" type="int" group="float"/>
    <reg name="fooff" bitsize="32" type="int" group="float"/>
    <reg name="fop" bitsize="32" type="int" group="float"/>
    <reg name="xmm0" bitsize="128" type="vec128"/>
    <reg name="xmm1" bitsize="128" type="vec128"/>
    <reg name="xmm2" bitsize="128" type="vec128"/>
    <reg name="xmm3" bitsize="128" type="vec128"/>
    <reg name="xmm4" bitsize="128" type="vec128"/>
    <reg name="xmm5" bitsize="128" type="vec128"/>
    <reg name="xmm6" bitsize="128" type="vec128"/>
    <reg name="xmm7" bitsize="128" type="vec128"/>
    <reg name="xmm8" bitsize="128" type="vec128"/>
    <reg name="xmm9" bitsize="128" type="vec128"/>
    <reg name="xmm10" bitsize="128" type="vec128"/>
    <reg name="xmm11" bitsize="128" type="vec128"/>
    <reg name="xmm12" bitsize="128" type="vec128"/>
    <reg name="xmm13" bitsize="128" type="vec128"/>
    <reg name="xmm14" bitsize="128" type="vec128"/>
    <reg name="xmm15" bitsize="128" type="vec128"/>
    <reg name="mxcsr" bitsize="32" type="x64_mxcsr" group="vector"/>
  </feature>
</target>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_g_packet_has_qemus_size_and_offsets() {
        // Measured from QEMU 7.2 with `maint print remote-registers`.
        assert_eq!(GdbRegisters::default().bytes.len(), 608);
        assert_eq!(offset(17), 136); // eflags
        assert_eq!(offset(24), 164); // fs_base
        assert_eq!(offset(29), 204); // cr3
        assert_eq!(offset(33), 236); // st0
        assert_eq!(offset(49), 348); // xmm0
        assert_eq!(offset(65), 604); // mxcsr
        assert_eq!(TARGET_XML.matches("<reg ").count(), REGISTERS);
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
        let gdb = GdbRegisters::from_vcpu(&cpu);
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

    #[test]
    fn a_g_packet_of_the_wrong_size_is_refused() {
        let mut regs = GdbRegisters::default();
        assert!(gdbstub::arch::Registers::gdb_deserialize(&mut regs, &[0; 10]).is_err());
        assert!(!regs.set(66, &[1]));
    }
}
