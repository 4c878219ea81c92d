//! The narrowing conversions the host makes on purpose, each in one place with its reason.
//! Everywhere else a narrowing `as` is refused by clippy (`cast_possible_truncation`,
//! `cast_possible_wrap`, `cast_sign_loss`, set in lib.rs and main.rs).

// vmm-host drives KVM on x86-64 Linux: a usize is 64 bits wide, so a u64 always fits.
#[cfg(not(target_pointer_width = "64"))]
compile_error!("vmm-host runs on 64-bit hosts (KVM on x86-64)");

/// A guest size or offset as a host index. Lossless on the 64-bit hosts vmm-host builds for.
#[allow(clippy::cast_possible_truncation)]
pub const fn to_usize(value: u64) -> usize {
    value as usize
}

/// The low 16 bits: a segment selector or an x87 control word that gdb or an exception frame
/// hands over in a wider slot, whose upper bits the CPU ignores.
pub const fn low_u16(value: u64) -> u16 {
    let b = value.to_le_bytes();
    u16::from_le_bytes([b[0], b[1]])
}

/// The low 32 bits: MXCSR, which gdb hands over in a 64-bit slot, or one of the two 32-bit
/// page-table entries a 64-bit read of a table returns.
pub const fn low_u32(value: u64) -> u32 {
    let b = value.to_le_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// The bits of `value` read as two's complement: a sign-extended displacement, or the top
/// bits of an address that must all equal bit 47.
#[allow(clippy::cast_possible_wrap)]
pub const fn signed(value: u64) -> i64 {
    value as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrowing_keeps_the_low_bits_and_the_sign() {
        assert_eq!(to_usize(0x1_0000_0000), 0x1_0000_0000);
        assert_eq!(low_u16(0xdead_0010), 0x0010);
        assert_eq!(low_u32(0xffff_ffff_1f80), 0xffff_1f80);
        assert_eq!(signed(u64::MAX), -1);
        assert_eq!(signed(0xffff_8000_0000_0000) >> 47, -1);
    }
}
