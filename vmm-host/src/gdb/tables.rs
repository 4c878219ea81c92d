//! The IDT and GDT as the CPU reads them, for `monitor idt` and `monitor gdt`.

use super::debuggable::Inspect;
use crate::addr::Gva;
use crate::tap::{EXCEPTION_VECTORS, Gate, GateFormat, Idtr};
use std::fmt::Write as _;

/// The 32 exception gates, each with where its handler is.
pub fn idt(vm: &dyn Inspect) -> Result<String, String> {
    let cpu = vm.registers().map_err(|e| e.to_string())?;
    let idtr = Idtr {
        base: Gva::new(cpu.sregs.idt.base),
        limit: cpu.sregs.idt.limit,
        format: GateFormat::of(cpu.sregs.cr0, cpu.sregs.efer),
    };
    let mut text = format!(
        "IDTR base {} limit {:#x}: {} of the {EXCEPTION_VECTORS} exception gates inside the limit\n",
        idtr.base,
        idtr.limit,
        idtr.covered_vectors()
    );
    for vector in 0..EXCEPTION_VECTORS {
        let Some(at) = idtr.gate_address(vector) else {
            let _ = writeln!(
                text,
                "vector {vector:>2} {:<5} outside the IDT limit: delivering it raises #GP",
                abi::exception::mnemonic(vector)
            );
            continue;
        };
        let mut raw = [0u8; 16];
        let size = idtr.format.size();
        let unreadable = match vm.read_virtual(at, &mut raw[..size]) {
            Ok(n) if n == size => None,
            Ok(n) => Some(format!("only {n} of its {size} bytes are mapped")),
            Err(e) => Some(e.to_string()),
        };
        if let Some(why) = unreadable {
            let _ = writeln!(text, "vector {vector:>2} gate at {at} unreadable: {why}");
            continue;
        }
        let gate = Gate::parse(vector, &raw, idtr.format);
        let whose = if !gate.present {
            String::new()
        } else {
            vm.symbol(gate.handler)
                .map(|s| format!("  {s}"))
                .unwrap_or_default()
        };
        let _ = writeln!(
            text,
            "{gate} {:<4}{whose}",
            abi::exception::mnemonic(vector)
        );
    }
    Ok(text)
}

/// One GDT descriptor, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub selector: u16,
    pub text: String,
    /// System descriptors (TSS, LDT) take two slots in long mode.
    pub slots: u16,
}

/// Decode the descriptor at `selector` from its 8 bytes (and the next 8 for a system one).
pub fn decode(selector: u16, low: u64, high: u64) -> Descriptor {
    let d = crate::descriptor::Descriptor(low);
    if d.is_null() {
        return Descriptor {
            selector,
            text: "null".into(),
            slots: 1,
        };
    }
    let (kind, dpl, limit, base32) = (d.kind(), d.dpl(), d.limit(), d.base());
    let p = if d.present() { "" } else { ", not present" };
    if d.is_system() {
        use crate::descriptor::system;
        let base = base32 | (high & 0xffff_ffff) << 32;
        let name = match kind {
            system::LDT => "LDT",
            system::TSS_AVAILABLE => "64-bit TSS (available)",
            system::TSS_BUSY => "64-bit TSS (busy)",
            _ => "system descriptor",
        };
        let slots = if d.is_tss() || kind == system::LDT {
            2
        } else {
            1
        };
        return Descriptor {
            selector,
            text: format!("{name} type {kind:#x} base {base:#x} limit {limit:#x} DPL {dpl}{p}"),
            slots,
        };
    }
    let text = if d.is_code() {
        let bits = match (d.long(), d.default32()) {
            (true, _) => "64-bit",
            (false, true) => "32-bit",
            (false, false) => "16-bit",
        };
        let readable = if kind & 0x2 != 0 { " readable" } else { "" };
        let conforming = if kind & 0x4 != 0 { " conforming" } else { "" };
        format!(
            "code {bits}{readable}{conforming} ring {dpl}, base {base32:#x} limit {limit:#x}{p}"
        )
    } else {
        let writable = if kind & 0x2 != 0 {
            "writable"
        } else {
            "read-only"
        };
        format!("data {writable} ring {dpl}, base {base32:#x} limit {limit:#x}{p}")
    };
    Descriptor {
        selector,
        text,
        slots: 1,
    }
}

/// Every descriptor inside the GDT limit (at most 64 are listed).
pub fn gdt(vm: &dyn Inspect) -> Result<String, String> {
    let cpu = vm.registers().map_err(|e| e.to_string())?;
    let base = Gva::new(cpu.sregs.gdt.base);
    let limit = u64::from(cpu.sregs.gdt.limit);
    let mut text = format!("GDTR base {base} limit {limit:#x}\n");
    let size = crate::narrow::to_usize(limit + 1).min(64 * 8);
    let mut raw = vec![0u8; size];
    let got = vm.read_virtual(base, &mut raw).map_err(|e| e.to_string())?;
    let qword = |i: usize| {
        raw.get(i * 8..i * 8 + 8)
            .filter(|_| i * 8 + 8 <= got)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
    };
    let mut index = 0usize;
    while let Some(low) = qword(index) {
        let high = qword(index + 1).unwrap_or(0);
        let d = decode(u16::try_from(index * 8).unwrap_or(u16::MAX), low, high);
        let mark = |sel: u16| {
            if cpu.sregs.cs.selector & !3 == sel {
                "  <- CS"
            } else if cpu.sregs.tr.selector & !3 == sel {
                "  <- TR"
            } else {
                ""
            }
        };
        let _ = writeln!(
            text,
            "{:#06x}  {:<70}{}",
            d.selector,
            d.text,
            mark(d.selector)
        );
        index += usize::from(d.slots);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_long_mode_code_data_and_tss_descriptors() {
        assert_eq!(decode(0, 0, 0).text, "null");
        let code = decode(0x08, 0x00af_9a00_0000_ffff, 0);
        assert_eq!(
            code.text,
            "code 64-bit readable ring 0, base 0x0 limit 0xffffffff"
        );
        let data = decode(0x10, 0x00cf_9200_0000_ffff, 0);
        assert_eq!(data.text, "data writable ring 0, base 0x0 limit 0xffffffff");
        let user = decode(0x23, 0x00af_fa00_0000_ffff, 0);
        assert!(user.text.contains("ring 3"), "{}", user.text);
        // A TSS at 0xffff_8000_0012_3456 with limit 0x67.
        let low = 0x67 | 0x3456 << 16 | 0x12 << 32 | 0x89 << 40;
        let tss = decode(0x28, low, 0xffff_8000);
        assert_eq!(tss.slots, 2);
        assert_eq!(
            tss.text,
            "64-bit TSS (available) type 0x9 base 0xffff800000123456 limit 0x67 DPL 0"
        );
    }
}
