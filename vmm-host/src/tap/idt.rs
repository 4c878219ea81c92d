//! The guest's IDT as the tap reads it: IDTR from the vCPU, 16-byte long-mode gates from guest
//! memory through the guest's own page tables.

use crate::addr::Gva;
use std::fmt;

/// Vectors the tap instruments: the architectural exceptions.
pub const EXCEPTION_VECTORS: u8 = 32;
/// Bytes per long-mode gate descriptor.
pub const GATE_BYTES: usize = 16;
/// The same, for address arithmetic.
pub const GATE_SIZE: u64 = GATE_BYTES as u64;

/// IDTR: where the table is (virtual) and its limit (size − 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Idtr {
    pub base: Gva,
    pub limit: u16,
}

impl Idtr {
    /// How many of vectors 0–31 the limit covers.
    pub fn covered_vectors(self) -> u8 {
        let entries = (u64::from(self.limit) + 1) / GATE_SIZE;
        u8::try_from(entries).map_or(EXCEPTION_VECTORS, |n| n.min(EXCEPTION_VECTORS))
    }

    /// The gate's virtual address, if inside the limit.
    pub fn gate_address(self, vector: u8) -> Option<Gva> {
        (vector < self.covered_vectors())
            .then(|| Gva::new(self.base.raw().wrapping_add(u64::from(vector) * GATE_SIZE)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateKind {
    Interrupt,
    Trap,
    /// Any other type (call gate, TSS, reserved): the CPU raises #GP on delivery.
    Invalid(u8),
}

/// One long-mode IDT gate, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gate {
    pub vector: u8,
    pub handler: Gva,
    pub selector: u16,
    pub ist: u8,
    pub kind: GateKind,
    pub dpl: u8,
    pub present: bool,
}

impl Gate {
    pub fn parse(vector: u8, raw: &[u8; GATE_BYTES]) -> Self {
        let word = |at: usize| u16::from_le_bytes([raw[at], raw[at + 1]]);
        let offset = u64::from(word(0))
            | u64::from(word(6)) << 16
            | u64::from(u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]])) << 32;
        let attributes = raw[5];
        let kind = match attributes & 0xf {
            0xe => GateKind::Interrupt,
            0xf => GateKind::Trap,
            other => GateKind::Invalid(other),
        };
        Self {
            vector,
            handler: Gva::new(offset),
            selector: word(2),
            ist: raw[4] & 7,
            kind,
            dpl: (attributes >> 5) & 3,
            present: attributes & 0x80 != 0,
        }
    }

    /// Whether the CPU can deliver an exception through this gate to a handler at all.
    pub fn usable(&self) -> bool {
        self.present && !matches!(self.kind, GateKind::Invalid(_)) && self.handler.is_canonical()
    }
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            GateKind::Interrupt => "interrupt gate".to_string(),
            GateKind::Trap => "trap gate".to_string(),
            GateKind::Invalid(t) => format!("invalid gate type {t:#x}"),
        };
        write!(
            f,
            "vector {:>2}: {} {}:{} DPL {}{}{}",
            self.vector,
            kind,
            format_args!("{:#06x}", self.selector),
            self.handler,
            self.dpl,
            if self.ist != 0 {
                format!(" IST{}", self.ist)
            } else {
                String::new()
            },
            if self.present { "" } else { " (not present)" },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate_bytes(handler: u64, selector: u16, ist: u8, attributes: u8) -> [u8; 16] {
        let mut raw = [0u8; 16];
        raw[0..2].copy_from_slice(&(handler as u16).to_le_bytes());
        raw[2..4].copy_from_slice(&selector.to_le_bytes());
        raw[4] = ist;
        raw[5] = attributes;
        raw[6..8].copy_from_slice(&((handler >> 16) as u16).to_le_bytes());
        raw[8..12].copy_from_slice(&((handler >> 32) as u32).to_le_bytes());
        raw
    }

    #[test]
    fn decodes_an_interrupt_gate_with_ist() {
        let gate = Gate::parse(8, &gate_bytes(0xffff_ffff_8123_4567, 0x08, 1, 0x8e));
        assert_eq!(gate.handler, Gva::new(0xffff_ffff_8123_4567));
        assert_eq!(gate.kind, GateKind::Interrupt);
        assert_eq!((gate.selector, gate.ist, gate.dpl), (0x08, 1, 0));
        assert!(gate.usable());
        assert_eq!(
            gate.to_string(),
            "vector  8: interrupt gate 0x0008:0xffffffff81234567 DPL 0 IST1"
        );
    }

    #[test]
    fn absent_or_invalid_gates_are_not_usable() {
        assert!(!Gate::parse(3, &gate_bytes(0x1000, 8, 0, 0x0e)).usable());
        assert!(!Gate::parse(3, &gate_bytes(0x1000, 8, 0, 0x8c)).usable());
        assert!(Gate::parse(3, &gate_bytes(0x1000, 8, 0, 0xef)).usable());
        assert!(!Gate::parse(3, &gate_bytes(0x8000_0000_0000, 8, 0, 0x8e)).usable());
    }

    #[test]
    fn the_limit_bounds_the_vectors() {
        let idtr = Idtr {
            base: Gva::new(0x1000),
            limit: 14 * 16 + 15,
        };
        assert_eq!(idtr.covered_vectors(), 15);
        assert_eq!(idtr.gate_address(14), Some(Gva::new(0x1000 + 14 * 16)));
        assert_eq!(idtr.gate_address(15), None);
        let empty = Idtr {
            base: Gva::new(0),
            limit: 0,
        };
        assert_eq!(empty.covered_vectors(), 0);
    }
}
