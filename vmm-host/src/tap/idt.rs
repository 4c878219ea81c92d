//! The guest's IDT as the tap reads it: IDTR from the vCPU, gates from guest memory through
//! the guest's own page tables: 16-byte gates in long mode, 8-byte gates in 32-bit protected
//! mode, and in real mode the interrupt vector table's 4-byte far pointers.

use crate::addr::Gva;
use std::fmt;

/// Vectors the tap instruments: the architectural exceptions.
pub const EXCEPTION_VECTORS: u8 = 32;
/// Bytes per long-mode gate descriptor, the larger of the two formats.
pub const GATE_BYTES: usize = 16;

/// How the CPU reads the IDT's gates in the vCPU's current mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateFormat {
    /// Long mode: 16 bytes, a 64-bit offset and an IST index.
    Long,
    /// 32-bit protected mode: 8 bytes, a 32-bit offset.
    Protected,
    /// Real mode's interrupt vector table: 4 bytes, offset then segment.
    RealMode,
}

/// The vectors that are CPU exceptions in real mode and nothing else there: #DE, #DB, #BP,
/// #OF, #BR, #UD, #NM. From 8 on, a PC's real-mode vectors are the master PIC's IRQs and the
/// BIOS's services, which the tap must not count as exceptions.
pub const REAL_MODE_EXCEPTIONS: [u8; 7] = [0, 1, 3, 4, 5, 6, 7];

impl GateFormat {
    /// The format of the vCPU with these control registers.
    pub fn of(cr0: u64, efer: u64) -> Self {
        use x86_64::registers::control::Cr0Flags;
        use x86_64::registers::model_specific::EferFlags;
        if cr0 & Cr0Flags::PROTECTED_MODE_ENABLE.bits() == 0 {
            Self::RealMode
        } else if efer & EferFlags::LONG_MODE_ACTIVE.bits() != 0 {
            Self::Long
        } else {
            Self::Protected
        }
    }

    pub fn size(self) -> usize {
        match self {
            Self::Long => GATE_BYTES,
            Self::Protected => 8,
            Self::RealMode => 4,
        }
    }
}

/// IDTR: where the table is (virtual) and its limit (size − 1), and its gates' format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Idtr {
    pub base: Gva,
    pub limit: u16,
    pub format: GateFormat,
}

impl Idtr {
    /// How many of vectors 0–31 the limit covers.
    pub fn covered_vectors(self) -> u8 {
        let entries = (u64::from(self.limit) + 1) / self.format.size() as u64;
        u8::try_from(entries).map_or(EXCEPTION_VECTORS, |n| n.min(EXCEPTION_VECTORS))
    }

    /// The gate's virtual address, if inside the limit.
    pub fn gate_address(self, vector: u8) -> Option<Gva> {
        let offset = u64::from(vector) * self.format.size() as u64;
        (vector < self.covered_vectors()).then(|| Gva::new(self.base.raw().wrapping_add(offset)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateKind {
    Interrupt,
    Trap,
    /// A task gate: delivery switches to the task whose TSS the gate's selector names.
    Task,
    /// A real-mode IVT entry: a far pointer, `selector` its segment.
    RealMode,
    /// Any other type (call gate, TSS, reserved): the CPU raises #GP on delivery.
    Invalid(u8),
}

/// One IDT gate, decoded.
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
    /// Decode the gate at the start of `raw` (16 bytes read; a 32-bit gate uses the first 8).
    pub fn parse(vector: u8, raw: &[u8; GATE_BYTES], format: GateFormat) -> Self {
        let word = |at: usize| u16::from_le_bytes([raw[at], raw[at + 1]]);
        if format == GateFormat::RealMode {
            let (offset, segment) = (word(0), word(2));
            return Self {
                vector,
                handler: Gva::new(u64::from(segment) * 16 + u64::from(offset)),
                selector: segment,
                ist: 0,
                kind: GateKind::RealMode,
                dpl: 0,
                present: true,
            };
        }
        let low = u64::from(word(0)) | u64::from(word(6)) << 16;
        let (offset, ist) = match format {
            GateFormat::Long => (
                low | u64::from(u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]])) << 32,
                raw[4] & 7,
            ),
            GateFormat::Protected | GateFormat::RealMode => (low, 0),
        };
        let attributes = raw[5];
        // Types 0xE and 0xF are 64-bit gates in long mode and 32-bit ones in protected mode;
        // long mode has no task gates; 16-bit gates (6, 7) are not followed here.
        let kind = match attributes & 0xf {
            0xe => GateKind::Interrupt,
            0xf => GateKind::Trap,
            0x5 if format == GateFormat::Protected => GateKind::Task,
            other => GateKind::Invalid(other),
        };
        Self {
            vector,
            handler: Gva::new(offset),
            selector: word(2),
            ist,
            kind,
            dpl: (attributes >> 5) & 3,
            present: attributes & 0x80 != 0,
        }
    }

    /// Whether the CPU can deliver an exception through this interrupt or trap gate to the
    /// handler at its offset. A task gate's offset means nothing: see [`crate::tap::task`].
    pub fn usable(&self) -> bool {
        self.present
            && matches!(
                self.kind,
                GateKind::Interrupt | GateKind::Trap | GateKind::RealMode
            )
            && self.handler.is_canonical()
    }
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            GateKind::Interrupt => "interrupt gate".to_string(),
            GateKind::Trap => "trap gate".to_string(),
            GateKind::Invalid(t) => format!("invalid gate type {t:#x}"),
            GateKind::RealMode => {
                return write!(
                    f,
                    "vector {:>2}: IVT entry {:04x}:{:04x} (linear {})",
                    self.vector,
                    self.selector,
                    self.handler.raw() - u64::from(self.selector) * 16,
                    self.handler
                );
            }
            GateKind::Task => {
                return write!(
                    f,
                    "vector {:>2}: task gate to TSS {:#06x} DPL {}{}",
                    self.vector,
                    self.selector,
                    self.dpl,
                    if self.present { "" } else { " (not present)" },
                );
            }
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
        let gate = Gate::parse(
            8,
            &gate_bytes(0xffff_ffff_8123_4567, 0x08, 1, 0x8e),
            GateFormat::Long,
        );
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
        let parse = |raw| Gate::parse(3, &raw, GateFormat::Long);
        assert!(!parse(gate_bytes(0x1000, 8, 0, 0x0e)).usable());
        assert!(!parse(gate_bytes(0x1000, 8, 0, 0x8c)).usable());
        assert!(parse(gate_bytes(0x1000, 8, 0, 0xef)).usable());
        assert!(!parse(gate_bytes(0x8000_0000_0000, 8, 0, 0x8e)).usable());
    }

    /// A 32-bit gate is the first 8 bytes: whatever follows (the next gate) is not part of
    /// its offset, and it has no IST.
    #[test]
    fn decodes_a_32_bit_interrupt_gate() {
        let mut raw = gate_bytes(0x0020_00ff, 0x08, 0, 0x8e);
        raw[8..16].copy_from_slice(&[0xff; 8]);
        raw[4] = 0x07;
        let gate = Gate::parse(0, &raw, GateFormat::Protected);
        assert_eq!(gate.handler, Gva::new(0x20_00ff));
        assert_eq!((gate.ist, gate.kind), (0, GateKind::Interrupt));
        assert!(gate.usable());
        assert_eq!(
            gate.to_string(),
            "vector  0: interrupt gate 0x0008:0x2000ff DPL 0"
        );
        let task = Gate::parse(8, &gate_bytes(0, 0x28, 0, 0x85), GateFormat::Protected);
        assert_eq!((task.kind, task.selector), (GateKind::Task, 0x28));
        assert!(!task.usable(), "its offset is no handler");
        assert_eq!(task.to_string(), "vector  8: task gate to TSS 0x0028 DPL 0");
        let in_long_mode = Gate::parse(8, &gate_bytes(0, 0x28, 0, 0x85), GateFormat::Long);
        assert_eq!(
            in_long_mode.kind,
            GateKind::Invalid(5),
            "no task gates in long mode"
        );
        assert_eq!(GateFormat::of(0x11, 0), GateFormat::Protected);
        assert_eq!(GateFormat::of(0x8000_0011, 0x500), GateFormat::Long);
        assert_eq!(GateFormat::of(0x10, 0), GateFormat::RealMode);
    }

    #[test]
    fn the_limit_bounds_the_vectors() {
        let idtr = Idtr {
            base: Gva::new(0x1000),
            limit: 14 * 16 + 15,
            format: GateFormat::Long,
        };
        assert_eq!(idtr.covered_vectors(), 15);
        assert_eq!(idtr.gate_address(14), Some(Gva::new(0x1000 + 14 * 16)));
        assert_eq!(idtr.gate_address(15), None);
        let protected = Idtr {
            format: GateFormat::Protected,
            ..idtr
        };
        assert_eq!(protected.covered_vectors(), 30, "8-byte gates");
        assert_eq!(protected.gate_address(14), Some(Gva::new(0x1000 + 14 * 8)));
        let empty = Idtr {
            base: Gva::new(0),
            limit: 0,
            format: GateFormat::Long,
        };
        assert_eq!(empty.covered_vectors(), 0);
    }

    /// A real-mode IVT entry is offset then segment; the handler is segment × 16 + offset.
    #[test]
    fn decodes_a_real_mode_vector() {
        let mut raw = [0xffu8; 16];
        raw[..4].copy_from_slice(&[0x20, 0x00, 0xc0, 0x07]);
        let entry = Gate::parse(6, &raw, GateFormat::RealMode);
        assert_eq!((entry.handler, entry.selector), (Gva::new(0x7c20), 0x07c0));
        assert!(entry.usable());
        assert_eq!(
            entry.to_string(),
            "vector  6: IVT entry 07c0:0020 (linear 0x7c20)"
        );
        let ivt = Idtr {
            base: Gva::new(0),
            limit: 0x3ff,
            format: GateFormat::RealMode,
        };
        assert_eq!(ivt.covered_vectors(), EXCEPTION_VECTORS);
        assert_eq!(ivt.gate_address(6), Some(Gva::new(24)));
    }
}
