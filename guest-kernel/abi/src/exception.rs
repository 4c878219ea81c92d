//! The architectural exceptions 0–31 in words, and their error codes decoded.
//!
//! Both sides print them: the guest in its fault reports, the host in the exception tap's.
//! One table means the two reports can never name a vector differently.

use crate::trace::SYSCALL_VECTOR;
use core::fmt;

pub const PAGE_FAULT: u8 = 14;
pub const GENERAL_PROTECTION: u8 = 13;
pub const DOUBLE_FAULT: u8 = 8;
pub const INVALID_OPCODE: u8 = 6;
pub const DIVIDE_ERROR: u8 = 0;

/// Vector number, mnemonic and name, as the SDM lists them.
pub const NAMES: [&str; 32] = [
    "#DE divide error",
    "#DB debug",
    "NMI",
    "#BP breakpoint",
    "#OF overflow",
    "#BR bound range",
    "#UD invalid opcode",
    "#NM device not available",
    "#DF double fault",
    "coprocessor segment overrun",
    "#TS invalid TSS",
    "#NP segment not present",
    "#SS stack fault",
    "#GP general protection",
    "#PF page fault",
    "reserved (15)",
    "#MF x87 floating point",
    "#AC alignment check",
    "#MC machine check",
    "#XM SIMD floating point",
    "#VE virtualization",
    "#CP control protection",
    "reserved (22)",
    "reserved (23)",
    "reserved (24)",
    "reserved (25)",
    "reserved (26)",
    "reserved (27)",
    "#HV hypervisor injection",
    "#VC VMM communication",
    "#SX security",
    "reserved (31)",
];

pub fn name(vector: u8) -> &'static str {
    match vector {
        SYSCALL_VECTOR => "int 0x80 system call",
        v => NAMES.get(usize::from(v)).copied().unwrap_or("interrupt"),
    }
}

/// Just the mnemonic ("#PF"), or the name for vectors that have none.
pub fn mnemonic(vector: u8) -> &'static str {
    let full = name(vector);
    match full.split_once(' ') {
        Some((short, _)) if short.starts_with('#') => short,
        _ => full,
    }
}

/// Whether the CPU pushes an error code for `vector` (SDM vol. 3, table 6-1).
pub const fn pushes_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// Whether the error code of `vector` is a selector error code (#TS, #NP, #SS, #GP, and
/// #DF's always-zero one).
pub const fn has_selector_error(vector: u8) -> bool {
    matches!(vector, 10..=13)
}

/// Page-fault error code bits.
pub mod pf {
    pub const PRESENT: u64 = 1 << 0;
    pub const WRITE: u64 = 1 << 1;
    pub const USER: u64 = 1 << 2;
    pub const RESERVED: u64 = 1 << 3;
    pub const FETCH: u64 = 1 << 4;
    pub const PROTECTION_KEY: u64 = 1 << 5;
    pub const SHADOW_STACK: u64 = 1 << 6;
}

/// A page-fault error code in the seed's words: "write, user, not-present".
#[derive(Debug, Clone, Copy)]
pub struct PfError(pub u64);

impl PfError {
    /// The access that faulted: "fetch", "write" or "read".
    pub fn access(&self) -> &'static str {
        if self.0 & pf::FETCH != 0 {
            "fetch"
        } else if self.0 & pf::WRITE != 0 {
            "write"
        } else {
            "read"
        }
    }
}

impl fmt::Display for PfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        write!(
            f,
            "{}, {}, {}",
            self.access(),
            if e & pf::USER != 0 { "user" } else { "kernel" },
            if e & pf::PRESENT != 0 {
                "protection"
            } else {
                "not-present"
            }
        )?;
        if e & pf::RESERVED != 0 {
            f.write_str(", reserved bit")?;
        }
        if e & pf::PROTECTION_KEY != 0 {
            f.write_str(", protection key")?;
        }
        if e & pf::SHADOW_STACK != 0 {
            f.write_str(", shadow stack")?;
        }
        Ok(())
    }
}

/// Every page-fault bit by its SDM name with its value: "P=0 W=1 U=1 RSVD=0 I=0 PK=0 SS=0".
#[derive(Debug, Clone, Copy)]
pub struct PfBits(pub u64);

impl fmt::Display for PfBits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = ["P", "W", "U", "RSVD", "I", "PK", "SS"];
        for (bit, name) in names.iter().enumerate() {
            if bit > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{name}={}", (self.0 >> bit) & 1)?;
        }
        Ok(())
    }
}

/// A selector error code (#TS #NP #SS #GP): which descriptor table entry was at fault.
#[derive(Debug, Clone, Copy)]
pub struct SelectorError(pub u64);

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        if e == 0 {
            return f.write_str("no selector (0)");
        }
        let table = if e & 2 != 0 {
            "IDT"
        } else if e & 4 != 0 {
            "LDT"
        } else {
            "GDT"
        };
        let index = (e & 0xffff) >> 3;
        write!(f, "{table} index {index}")?;
        if table == "IDT" {
            write!(f, " (vector {index})")?;
        } else {
            write!(f, " (selector {:#x})", e & 0xfff8)?;
        }
        if e & 1 != 0 {
            f.write_str(", external event")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    #[test]
    fn page_fault_error_codes_in_words_and_bits() {
        assert_eq!(PfError(0x6).to_string(), "write, user, not-present");
        assert_eq!(PfError(0x2).to_string(), "write, kernel, not-present");
        assert_eq!(PfError(0x11).to_string(), "fetch, kernel, protection");
        assert_eq!(
            PfError(0x9).to_string(),
            "read, kernel, protection, reserved bit"
        );
        assert_eq!(PfBits(0x6).to_string(), "P=0 W=1 U=1 RSVD=0 I=0 PK=0 SS=0");
    }

    #[test]
    fn selector_error_codes_name_the_table_and_index() {
        assert_eq!(SelectorError(0).to_string(), "no selector (0)");
        assert_eq!(
            SelectorError(0x28).to_string(),
            "GDT index 5 (selector 0x28)"
        );
        assert_eq!(
            SelectorError(0x402).to_string(),
            "IDT index 128 (vector 128)"
        );
        assert_eq!(
            SelectorError(0x1d).to_string(),
            "LDT index 3 (selector 0x18), external event"
        );
    }

    #[test]
    fn which_vectors_push_an_error_code() {
        let with: std::vec::Vec<u8> = (0..32).filter(|&v| pushes_error_code(v)).collect();
        assert_eq!(with, [8, 10, 11, 12, 13, 14, 17, 21, 29, 30]);
        assert_eq!(mnemonic(14), "#PF");
        assert_eq!(mnemonic(2), "NMI");
        assert_eq!(name(0x80), "int 0x80 system call");
    }
}
