//! A snapshot of the vCPU for reports: general registers, segment and control registers with
//! their bits named, and the instruction at RIP.

use crate::addr::{Gpa, Gva};
use crate::translate;
use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};
use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use kvm_ioctls::VcpuFd;
use std::fmt;
use vm_memory::GuestMemoryMmap;
use x86_64::registers::control::{Cr0Flags, Cr4Flags};
use x86_64::registers::model_specific::EferFlags;
use x86_64::registers::rflags::RFlags;

/// Longest x86 instruction.
const MAX_INSTRUCTION: usize = 15;

#[derive(Debug, Clone)]
pub struct CpuState {
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub code: Code,
}

/// The instruction at RIP, or why it could not be read.
#[derive(Debug, Clone)]
pub enum Code {
    Decoded {
        at: Gpa,
        bytes: Vec<u8>,
        text: String,
    },
    Unavailable(String),
}

/// What the CPU executes as, from CR0, EFER and CS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuMode {
    Real,
    Protected16,
    Protected32,
    Compatibility,
    Long64,
}

impl CpuMode {
    pub fn of(sregs: &kvm_sregs) -> Self {
        if sregs.cr0 & Cr0Flags::PROTECTED_MODE_ENABLE.bits() == 0 {
            Self::Real
        } else if sregs.efer & EferFlags::LONG_MODE_ACTIVE.bits() != 0 {
            if sregs.cs.l != 0 {
                Self::Long64
            } else {
                Self::Compatibility
            }
        } else if sregs.cs.db != 0 {
            Self::Protected32
        } else {
            Self::Protected16
        }
    }

    pub fn bitness(self) -> u32 {
        match self {
            Self::Real | Self::Protected16 => 16,
            Self::Protected32 | Self::Compatibility => 32,
            Self::Long64 => 64,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Real => "real mode",
            Self::Protected16 => "16-bit protected mode",
            Self::Protected32 => "32-bit protected mode",
            Self::Compatibility => "compatibility mode",
            Self::Long64 => "64-bit long mode",
        }
    }
}

/// The SDM's short names of the bits set in `value`; the bits are the x86_64 crate's.
fn named_bits(value: u64, names: &[(u64, &'static str)]) -> String {
    let set: Vec<&str> = names
        .iter()
        .filter(|(mask, _)| value & mask != 0)
        .map(|&(_, n)| n)
        .collect();
    set.join(" ")
}

pub fn cr0_bits(cr0: u64) -> String {
    use Cr0Flags as F;
    named_bits(
        cr0,
        &[
            (F::PROTECTED_MODE_ENABLE.bits(), "PE"),
            (F::MONITOR_COPROCESSOR.bits(), "MP"),
            (F::EMULATE_COPROCESSOR.bits(), "EM"),
            (F::TASK_SWITCHED.bits(), "TS"),
            (F::EXTENSION_TYPE.bits(), "ET"),
            (F::NUMERIC_ERROR.bits(), "NE"),
            (F::WRITE_PROTECT.bits(), "WP"),
            (F::ALIGNMENT_MASK.bits(), "AM"),
            (F::NOT_WRITE_THROUGH.bits(), "NW"),
            (F::CACHE_DISABLE.bits(), "CD"),
            (F::PAGING.bits(), "PG"),
        ],
    )
}

pub fn cr4_bits(cr4: u64) -> String {
    use Cr4Flags as F;
    named_bits(
        cr4,
        &[
            (F::VIRTUAL_8086_MODE_EXTENSIONS.bits(), "VME"),
            (F::PROTECTED_MODE_VIRTUAL_INTERRUPTS.bits(), "PVI"),
            (F::TIMESTAMP_DISABLE.bits(), "TSD"),
            (F::DEBUGGING_EXTENSIONS.bits(), "DE"),
            (F::PAGE_SIZE_EXTENSION.bits(), "PSE"),
            (F::PHYSICAL_ADDRESS_EXTENSION.bits(), "PAE"),
            (F::MACHINE_CHECK_EXCEPTION.bits(), "MCE"),
            (F::PAGE_GLOBAL.bits(), "PGE"),
            (F::PERFORMANCE_MONITOR_COUNTER.bits(), "PCE"),
            (F::OSFXSR.bits(), "OSFXSR"),
            (F::OSXMMEXCPT_ENABLE.bits(), "OSXMMEXCPT"),
            (F::USER_MODE_INSTRUCTION_PREVENTION.bits(), "UMIP"),
            (F::L5_PAGING.bits(), "LA57"),
            (F::FSGSBASE.bits(), "FSGSBASE"),
            (F::PCID.bits(), "PCIDE"),
            (F::OSXSAVE.bits(), "OSXSAVE"),
            (F::SUPERVISOR_MODE_EXECUTION_PROTECTION.bits(), "SMEP"),
            (F::SUPERVISOR_MODE_ACCESS_PREVENTION.bits(), "SMAP"),
            (F::PROTECTION_KEY_USER.bits(), "PKE"),
        ],
    )
}

pub fn efer_bits(efer: u64) -> String {
    use EferFlags as F;
    named_bits(
        efer,
        &[
            (F::SYSTEM_CALL_EXTENSIONS.bits(), "SCE"),
            (F::LONG_MODE_ENABLE.bits(), "LME"),
            (F::LONG_MODE_ACTIVE.bits(), "LMA"),
            (F::NO_EXECUTE_ENABLE.bits(), "NXE"),
            (F::SECURE_VIRTUAL_MACHINE_ENABLE.bits(), "SVME"),
            (F::FAST_FXSAVE_FXRSTOR.bits(), "FFXSR"),
        ],
    )
}

pub fn rflags_bits(rflags: u64) -> String {
    use RFlags as F;
    let mut s = named_bits(
        rflags,
        &[
            (F::CARRY_FLAG.bits(), "CF"),
            (F::PARITY_FLAG.bits(), "PF"),
            (F::AUXILIARY_CARRY_FLAG.bits(), "AF"),
            (F::ZERO_FLAG.bits(), "ZF"),
            (F::SIGN_FLAG.bits(), "SF"),
            (F::TRAP_FLAG.bits(), "TF"),
            (F::INTERRUPT_FLAG.bits(), "IF"),
            (F::DIRECTION_FLAG.bits(), "DF"),
            (F::OVERFLOW_FLAG.bits(), "OF"),
            (F::NESTED_TASK.bits(), "NT"),
            (F::RESUME_FLAG.bits(), "RF"),
            (F::VIRTUAL_8086_MODE.bits(), "VM"),
            (F::ALIGNMENT_CHECK.bits(), "AC"),
            (F::ID.bits(), "ID"),
        ],
    );
    let iopl = (rflags >> 12) & 3;
    if iopl != 0 {
        s.push_str(&format!(" IOPL={iopl}"));
    }
    s
}

impl CpuState {
    pub fn capture(vcpu: &VcpuFd, mem: &GuestMemoryMmap) -> Result<Self, kvm_ioctls::Error> {
        let regs = vcpu.get_regs()?;
        let sregs = vcpu.get_sregs()?;
        let code = read_code(vcpu, mem, &regs, &sregs);
        Ok(Self { regs, sregs, code })
    }

    /// The state in `regs` and `sregs`, with the instruction at RIP read through `space` (a
    /// core read back, where there is no vCPU to translate with).
    pub fn of_space(
        regs: kvm_regs,
        sregs: kvm_sregs,
        space: &crate::virt::AddressSpace<'_>,
    ) -> Self {
        let mode = CpuMode::of(&sregs);
        let linear = if mode == CpuMode::Long64 {
            regs.rip
        } else {
            sregs.cs.base.wrapping_add(regs.rip)
        };
        let mut bytes = [0u8; MAX_INSTRUCTION];
        let code = match space.read_prefix(Gva::new(linear), &mut bytes) {
            Err(e) => Code::Unavailable(e.to_string()),
            Ok((at, len)) => {
                let (text, used) = disassemble(&bytes[..len], regs.rip, mode.bitness())
                    .unwrap_or_else(|| ("(not a valid instruction)".into(), len));
                Code::Decoded {
                    at,
                    bytes: bytes[..used].to_vec(),
                    text,
                }
            }
        };
        Self { regs, sregs, code }
    }

    /// Current privilege level (the RPL bits of CS).
    pub fn cpl(&self) -> u16 {
        self.sregs.cs.selector & 3
    }

    pub fn mode(&self) -> CpuMode {
        CpuMode::of(&self.sregs)
    }
}

fn read_code(vcpu: &VcpuFd, mem: &GuestMemoryMmap, regs: &kvm_regs, sregs: &kvm_sregs) -> Code {
    let mode = CpuMode::of(sregs);
    let linear = if mode == CpuMode::Long64 {
        regs.rip
    } else {
        sregs.cs.base.wrapping_add(regs.rip)
    };
    let mut bytes = [0u8; MAX_INSTRUCTION];
    // Read as much as is mapped: an instruction near the end of a mapping is still decodable.
    let mut len = MAX_INSTRUCTION;
    let at = loop {
        match translate::read_virtual(vcpu, mem, Gva::new(linear), &mut bytes[..len]) {
            Ok(at) => break at,
            Err(e) if len == 1 => return Code::Unavailable(e.to_string()),
            Err(_) => len -= 1,
        }
    };
    let text = disassemble(&bytes[..len], regs.rip, mode.bitness());
    match text {
        Some((text, used)) => Code::Decoded {
            at,
            bytes: bytes[..used].to_vec(),
            text,
        },
        None => Code::Decoded {
            at,
            bytes: bytes[..len].to_vec(),
            text: "(not a valid instruction)".into(),
        },
    }
}

/// Decode the first instruction of `bytes`: its Intel-syntax text and length.
pub fn disassemble(bytes: &[u8], ip: u64, bitness: u32) -> Option<(String, usize)> {
    let mut decoder = Decoder::with_ip(bitness, bytes, ip, DecoderOptions::NONE);
    let instruction = decoder.decode();
    if instruction.is_invalid() {
        return None;
    }
    let mut text = String::new();
    IntelFormatter::new().format(&instruction, &mut text);
    Some((text, instruction.len()))
}

fn segment(name: &str, s: &kvm_segment) -> String {
    format!("{name} {:#06x}", s.selector)
}

impl fmt::Display for CpuState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.regs;
        let s = &self.sregs;
        writeln!(f, "  mode   {}, CPL {}", self.mode().name(), self.cpl())?;
        writeln!(
            f,
            "  rip    {:#018x}   rflags {:#018x} [{}]",
            r.rip,
            r.rflags,
            rflags_bits(r.rflags)
        )?;
        let gprs = [
            ("rax", r.rax),
            ("rbx", r.rbx),
            ("rcx", r.rcx),
            ("rdx", r.rdx),
            ("rsi", r.rsi),
            ("rdi", r.rdi),
            ("rbp", r.rbp),
            ("rsp", r.rsp),
            ("r8", r.r8),
            ("r9", r.r9),
            ("r10", r.r10),
            ("r11", r.r11),
            ("r12", r.r12),
            ("r13", r.r13),
            ("r14", r.r14),
            ("r15", r.r15),
        ];
        for row in gprs.chunks(4) {
            let cells: Vec<String> = row
                .iter()
                .map(|(n, v)| format!("{n:<4} {v:#018x}"))
                .collect();
            writeln!(f, "  {}", cells.join("   "))?;
        }
        let segs = [
            segment("cs", &s.cs),
            segment("ss", &s.ss),
            segment("ds", &s.ds),
            segment("es", &s.es),
            segment("fs", &s.fs),
            segment("gs", &s.gs),
            segment("tr", &s.tr),
        ];
        writeln!(f, "  {}", segs.join("  "))?;
        writeln!(f, "  cr0    {:#018x} [{}]", s.cr0, cr0_bits(s.cr0))?;
        writeln!(f, "  cr2    {:#018x}", s.cr2)?;
        writeln!(f, "  cr3    {:#018x}", s.cr3)?;
        writeln!(f, "  cr4    {:#018x} [{}]", s.cr4, cr4_bits(s.cr4))?;
        writeln!(f, "  efer   {:#018x} [{}]", s.efer, efer_bits(s.efer))?;
        writeln!(
            f,
            "  gdt    base {:#018x} limit {:#06x}   idt base {:#018x} limit {:#06x}",
            s.gdt.base, s.gdt.limit, s.idt.base, s.idt.limit
        )?;
        match &self.code {
            Code::Decoded { at, bytes, text } => {
                let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
                write!(f, "  code   {text}   ({} at physical {at})", hex.join(" "))
            }
            Code::Unavailable(why) => write!(f, "  code   unavailable: {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_control_register_bits() {
        assert_eq!(cr0_bits(0x8001_0011), "PE ET WP PG");
        assert_eq!(cr4_bits(0x20), "PAE");
        assert_eq!(efer_bits(0xd00), "LME LMA NXE");
        assert_eq!(rflags_bits(0x3246), "PF ZF IF IOPL=3");
    }

    #[test]
    fn decodes_one_instruction_per_mode() {
        assert_eq!(
            disassemble(&[0x0f, 0x0b, 0x90], 0x1000, 64),
            Some(("ud2".into(), 2))
        );
        assert_eq!(
            disassemble(&[0x48, 0x89, 0x08], 0, 64),
            Some(("mov [rax],rcx".into(), 3))
        );
        assert_eq!(
            disassemble(&[0x48], 0, 64),
            None,
            "a truncated instruction does not decode"
        );
        assert_eq!(
            disassemble(&[0x89, 0x08], 0, 32),
            Some(("mov [eax],ecx".into(), 2))
        );
    }

    #[test]
    fn mode_follows_cr0_efer_and_cs() {
        let mut s = kvm_sregs::default();
        assert_eq!(CpuMode::of(&s), CpuMode::Real);
        s.cr0 = 1;
        s.cs.db = 1;
        assert_eq!(CpuMode::of(&s), CpuMode::Protected32);
        s.efer = 1 << 10;
        s.cs.l = 1;
        assert_eq!(CpuMode::of(&s), CpuMode::Long64);
    }
}
