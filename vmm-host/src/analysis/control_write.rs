//! A #GP at `mov cr0, reg`: which architectural rule the new value breaks, or, when it breaks
//! none, that the hypervisor refused it. Kernels turn paging on with this one instruction, and
//! a nested KVM that cannot run 32-bit paging refuses exactly this write (../shared/notes).

use crate::paging::{Format, Level, PagingMode, PhysMemory, Pte};
use crate::tap::ControlRegisters;
use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};

const PE: u64 = 1;
const NW: u64 = 1 << 29;
const CD: u64 = 1 << 30;
const PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// The general register a `mov cr0, reg` at the start of `bytes` reads, decoded at `bitness`.
pub fn cr0_source(bytes: &[u8], bitness: u32) -> Option<Register> {
    let instruction = Decoder::new(bitness, bytes, DecoderOptions::NONE).decode();
    let writes_cr0 = instruction.mnemonic() == Mnemonic::Mov
        && instruction.op0_kind() == OpKind::Register
        && instruction.op0_register() == Register::CR0;
    (writes_cr0 && instruction.op1_kind() == OpKind::Register).then(|| instruction.op1_register())
}

/// Why writing `value` to CR0 with the other registers in `control` raised #GP, reading the
/// PAE PDPTEs the write would load from `mem`.
pub fn cr0_write_fault(
    value: u64,
    control: &ControlRegisters,
    mode: PagingMode,
    mem: &impl PhysMemory,
) -> String {
    let old = control.cr0;
    let written = format!("`mov cr0` wrote {value:#x} (CR0 was {old:#x})");
    let long_mode_active = control.efer & EFER_LMA != 0;
    let rule = if value >> 32 != 0 {
        Some("bits 63..32 of CR0 are reserved".to_string())
    } else if value & PG != 0 && value & PE == 0 {
        Some("paging (PG) needs protected mode (PE)".into())
    } else if value & NW != 0 && value & CD == 0 {
        Some("NW (not write-through) without CD (cache disable) is invalid".into())
    } else if long_mode_active && value & PG == 0 {
        Some(
            "64-bit code cannot turn paging off: leave long mode from compatibility mode first"
                .into(),
        )
    } else if value & PG != 0 && control.efer & EFER_LME != 0 && control.cr4 & CR4_PAE == 0 {
        Some("long mode (EFER.LME) needs CR4.PAE before paging is turned on".into())
    } else {
        None
    };
    if let Some(rule) = rule {
        return format!("{written}, which the CPU refuses: {rule}");
    }
    let turning_on = old & PG == 0 && value & PG != 0;
    let format = Format::of_registers(value, control.cr4, control.efer);
    if turning_on
        && format == Format::Pae
        && let Some(bad) = bad_pdpte(control.cr3, mode, mem)
    {
        return format!(
            "{written}, turning on PAE paging, which loads the four PDPTEs at CR3 {:#x}: {bad}",
            control.cr3
        );
    }
    if turning_on && format.is_32_bit() {
        return format!(
            "{written}, turning on {format}: the value is valid and a CPU would not raise #GP here, so the hypervisor refused it. A nested KVM like this project's machines cannot run 32-bit or PAE paging (`vmm-host doctor` measures it); run this kernel under QEMU TCG (`-d int` shows its faults), or on a KVM on bare metal"
        );
    }
    format!(
        "{written}; no architectural rule forbids that value, so look for a write at CPL > 0 or a feature this CPU lacks"
    )
}

/// The first PDPTE at `cr3` with reserved bits set, in words; loading it raises #GP.
fn bad_pdpte(cr3: u64, mode: PagingMode, mem: &impl PhysMemory) -> Option<String> {
    let pae = mode.with_format(Format::Pae);
    let table = Format::Pae.top_table(cr3);
    (0..4u64).find_map(|slot| {
        let at = table.checked_add(slot * 8)?;
        let entry = Pte::new(mem.read_u64(at)?);
        let bits = entry.reserved_bits(Level::Pdpt, pae);
        (entry.present() && bits != 0).then(|| {
            format!(
                "PDPTE[{slot}] at {at} is {:#018x} with reserved bits {bits:#x} set (a PDPTE has no R/W, U/S or NX)",
                entry.raw()
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Gpa;
    use crate::paging::{CpuPaging, SyntheticMemory};

    /// Flat 32-bit protected mode, paging off, CR4 as given.
    fn protected(cr4: u64) -> ControlRegisters {
        ControlRegisters {
            cr0: 0x11,
            cr2: 0,
            cr3: 0x1000,
            cr4,
            efer: 0,
        }
    }

    fn mode() -> PagingMode {
        PagingMode::new(CpuPaging::with_phys_bits(40), 0)
    }

    #[test]
    fn the_source_register_of_mov_cr0_is_decoded_in_the_code_s_bitness() {
        assert_eq!(cr0_source(&[0x0f, 0x22, 0xc0], 32), Some(Register::EAX));
        assert_eq!(cr0_source(&[0x0f, 0x22, 0xc3], 64), Some(Register::RBX));
        // mov cr4, eax and mov eax, cr0 are not writes of CR0.
        assert_eq!(cr0_source(&[0x0f, 0x22, 0xe0], 32), None);
        assert_eq!(cr0_source(&[0x0f, 0x20, 0xc0], 32), None);
    }

    #[test]
    fn each_architectural_rule_is_named() {
        let mem = SyntheticMemory::new(1 << 20);
        let why =
            |value: u64, control: ControlRegisters| cr0_write_fault(value, &control, mode(), &mem);
        assert!(why(0x8000_0000, protected(0)).ends_with("paging (PG) needs protected mode (PE)"));
        assert!(why(0x2000_0011, protected(0)).contains("NW (not write-through) without CD"));
        assert!(why(1 << 32 | 0x11, protected(0)).contains("bits 63..32 of CR0 are reserved"));
        let lme = ControlRegisters {
            efer: EFER_LME,
            ..protected(0)
        };
        assert!(why(0x8000_0011, lme).contains("needs CR4.PAE"));
        let long = ControlRegisters {
            cr0: 0x8000_0011,
            efer: EFER_LME | EFER_LMA,
            ..protected(CR4_PAE)
        };
        assert!(why(0x11, long).contains("64-bit code cannot turn paging off"));
    }

    #[test]
    fn a_valid_32_bit_paging_value_is_the_hypervisor_s_refusal() {
        let mem = SyntheticMemory::new(1 << 20);
        let text = cr0_write_fault(0x8001_0011, &protected(0x10), mode(), &mem);
        assert!(
            text.starts_with("`mov cr0` wrote 0x80010011 (CR0 was 0x11), turning on 32-bit paging"),
            "{text}"
        );
        assert!(text.contains("so the hypervisor refused it"), "{text}");
    }

    #[test]
    fn turning_on_pae_with_a_bad_pdpte_names_the_entry() {
        let mut mem = SyntheticMemory::new(1 << 20);
        // PDPTE[2] with R/W set: reserved in a PDPTE.
        mem.write_u64(Gpa::new(0x1000 + 16), 0x3003);
        let text = cr0_write_fault(0x8000_0011, &protected(CR4_PAE), mode(), &mem);
        assert!(
            text.ends_with("PDPTE[2] at 0x1010 is 0x0000000000003003 with reserved bits 0x2 set (a PDPTE has no R/W, U/S or NX)"),
            "{text}"
        );
        // Well-formed PDPTEs: then it is the hypervisor again.
        mem.write_u64(Gpa::new(0x1000 + 16), 0x3001);
        let text = cr0_write_fault(0x8000_0011, &protected(CR4_PAE), mode(), &mem);
        assert!(
            text.contains("turning on PAE paging (3 levels): the value is valid"),
            "{text}"
        );
    }
}
