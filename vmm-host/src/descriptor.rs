//! GDT descriptors as the CPU reads them: code and data segments, and the system descriptors
//! (TSS, LDT) in their 8-byte legacy form. Long mode's system descriptors add 8 bytes holding
//! bits 32–63 of the base; [`Descriptor::base`] is the legacy 32 bits.
//!
//! One decoder for the tap (task gates and their TSS), gdb's `monitor gdt` and the host's own
//! 32-bit `iret`.

use kvm_bindings::kvm_segment;

/// One 8-byte descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor(pub u64);

/// System descriptor types (S = 0) outside long mode.
pub mod system {
    pub const TSS16_AVAILABLE: u8 = 0x1;
    pub const LDT: u8 = 0x2;
    pub const TSS16_BUSY: u8 = 0x3;
    pub const TSS_AVAILABLE: u8 = 0x9;
    pub const TSS_BUSY: u8 = 0xb;
}

impl Descriptor {
    fn bit(self, n: u32) -> bool {
        self.0 >> n & 1 == 1
    }

    pub fn is_null(self) -> bool {
        self.0 == 0
    }

    pub fn present(self) -> bool {
        self.bit(47)
    }

    pub fn dpl(self) -> u8 {
        self.0.to_le_bytes()[5] >> 5 & 3
    }

    /// A system descriptor (TSS, LDT, gate) rather than a code or data segment.
    pub fn is_system(self) -> bool {
        !self.bit(44)
    }

    /// The 4-bit type field.
    pub fn kind(self) -> u8 {
        self.0.to_le_bytes()[5] & 0xf
    }

    pub fn is_code(self) -> bool {
        !self.is_system() && self.kind() & 0x8 != 0
    }

    /// A 32-bit (or 64-bit, in long mode) TSS, available or busy.
    pub fn is_tss(self) -> bool {
        self.is_system() && matches!(self.kind(), system::TSS_AVAILABLE | system::TSS_BUSY)
    }

    pub fn granular(self) -> bool {
        self.bit(55)
    }

    /// The L bit: a 64-bit code segment.
    pub fn long(self) -> bool {
        self.bit(53)
    }

    /// The D/B bit: 32-bit code or stack.
    pub fn default32(self) -> bool {
        self.bit(54)
    }

    /// The 32-bit base.
    pub fn base(self) -> u64 {
        (self.0 >> 16 & 0xff_ffff) | (self.0 >> 56 & 0xff) << 24
    }

    /// The limit in bytes (the last valid offset), scaled by 4 KiB when G is set.
    pub fn limit(self) -> u32 {
        let raw = crate::narrow::low_u32((self.0 & 0xffff) | (self.0 >> 32 & 0xf_0000));
        if self.granular() {
            raw << 12 | 0xfff
        } else {
            raw
        }
    }

    /// The segment register KVM would hold after loading this descriptor with `selector`.
    pub fn segment(self, selector: u16) -> kvm_segment {
        kvm_segment {
            base: self.base(),
            limit: self.limit(),
            selector,
            type_: self.kind(),
            present: u8::from(self.present()),
            dpl: self.dpl(),
            db: u8::from(self.default32()),
            s: u8::from(!self.is_system()),
            l: u8::from(self.long()),
            g: u8::from(self.granular()),
            avl: u8::from(self.bit(52)),
            unusable: 0,
            padding: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_flat_code_segment() {
        let code = Descriptor(0x00cf_9a00_0000_ffff);
        assert!(code.present() && code.is_code() && code.default32() && !code.long());
        assert_eq!((code.base(), code.limit(), code.dpl()), (0, 0xffff_ffff, 0));
        let data = Descriptor(0x00cf_9200_0000_ffff);
        assert!(!data.is_code() && !data.is_system());
        let user = Descriptor(0x00af_fa00_0000_ffff);
        assert!(user.long() && user.dpl() == 3);
    }

    #[test]
    fn decodes_a_tss_with_a_split_base() {
        // Base 0x12345678, limit 0x67, type 9, present.
        let tss = Descriptor(0x1200_8934_5678_0067);
        assert!(tss.is_tss() && tss.is_system() && tss.present());
        assert_eq!(
            (tss.base(), tss.limit(), tss.kind()),
            (0x1234_5678, 0x67, 9)
        );
        let busy = Descriptor(tss.0 | 2 << 40);
        assert!(busy.is_tss());
        assert_eq!(busy.kind(), system::TSS_BUSY);
        let ldt = Descriptor(0x0000_8200_0000_0fff);
        assert!(!ldt.is_tss() && ldt.is_system());
        let segment = tss.segment(0x28);
        assert_eq!(
            (segment.base, segment.limit, segment.s),
            (0x1234_5678, 0x67, 0)
        );
    }
}
