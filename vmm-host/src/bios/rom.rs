//! What a BIOS leaves in low memory before it jumps to a boot sector: the interrupt vector
//! table, the BIOS data area, and the code the vectors point to.
//!
//! Every vector points to a stub of its own in the ROM segment: `hlt; iret`. The `hlt` exits
//! to the host (there is no in-kernel irqchip), which recognises the stub by its address,
//! does the service's work on the caller's registers and memory, and lets the guest run on
//! into the `iret`. `int n` works in real mode on every KVM measured (../shared/notes), so
//! this path needs no emulation; the stubs are real code, and a boot sector may read,
//! copy or chain to them as it would to any BIOS's handlers.

use crate::addr::Gpa;
use vm_memory::{Bytes, GuestMemoryMmap};

/// The segment of the ROM: F000:0000 is physical 0xF0000.
pub const ROM_SEGMENT: u16 = 0xf000;
/// Physical address of the first stub (vector 0's).
pub const STUBS: u64 = 0xf_0000;
/// Bytes per stub: `hlt`, `iret`, and two bytes of `nop` padding.
const STUB_SIZE: u64 = 4;
const STUB: [u8; 4] = [0xf4, 0xcf, 0x90, 0x90];

/// The BIOS data area's segment and physical address.
pub const BDA_SEGMENT: u16 = 0x40;
pub const BDA: u64 = 0x400;

/// Offsets in the BIOS data area that the services keep up to date.
pub mod bda {
    pub const COM1: u64 = 0x00;
    pub const EQUIPMENT: u64 = 0x10;
    pub const MEMORY_KIB: u64 = 0x13;
    pub const KEYBOARD_HEAD: u64 = 0x1a;
    pub const KEYBOARD_TAIL: u64 = 0x1c;
    pub const VIDEO_MODE: u64 = 0x49;
    pub const COLUMNS: u64 = 0x4a;
    pub const PAGE_SIZE: u64 = 0x4c;
    /// Eight (column, row) pairs, one per video page.
    pub const CURSOR: u64 = 0x50;
    /// Cursor end and start scan lines.
    pub const CURSOR_SHAPE: u64 = 0x60;
    pub const ACTIVE_PAGE: u64 = 0x62;
    pub const CRTC_BASE: u64 = 0x63;
    pub const TICKS: u64 = 0x6c;
    pub const MIDNIGHT: u64 = 0x70;
    pub const HARD_DISKS: u64 = 0x75;
    pub const KEYBOARD_START: u64 = 0x80;
    pub const KEYBOARD_END: u64 = 0x82;
    pub const ROWS_MINUS_ONE: u64 = 0x84;
    pub const CHARACTER_HEIGHT: u64 = 0x85;
}

/// The equipment word (int 11h): a maths coprocessor, 80×25 colour text, one serial port.
pub const EQUIPMENT: u16 = (1 << 1) | (2 << 4) | (1 << 9);
/// Conventional memory in KiB (int 12h): no extended BIOS data area is carved out of it.
pub const CONVENTIONAL_KIB: u16 = 640;
/// The keyboard buffer's offsets in the BDA segment (empty: head == tail).
const KEYBOARD_BUFFER: (u16, u16) = (0x1e, 0x3e);

/// The vector whose stub holds a `hlt` at physical `linear`, if it is one.
pub fn stub_vector(linear: u64) -> Option<u8> {
    let offset = linear.checked_sub(STUBS)?;
    if !offset.is_multiple_of(STUB_SIZE) {
        return None;
    }
    u8::try_from(offset / STUB_SIZE).ok()
}

/// The offset of `vector`'s stub in [`ROM_SEGMENT`].
pub fn stub_offset(vector: u8) -> u16 {
    u16::from(vector) * 4
}

#[derive(Debug, thiserror::Error)]
#[error("writing the BIOS's tables into guest RAM failed at {what}: {error}")]
pub struct RomError {
    what: &'static str,
    error: vm_memory::GuestMemoryError,
}

/// Write the vector table, the data area and the stubs into guest RAM.
pub fn install(mem: &GuestMemoryMmap) -> Result<(), RomError> {
    let put = |what, at: u64, bytes: &[u8]| {
        mem.write_slice(bytes, Gpa::new(at).guest_address())
            .map_err(|error| RomError { what, error })
    };
    let stubs: Vec<u8> = (0..256).flat_map(|_| STUB).collect();
    put("the stubs", STUBS, &stubs)?;
    let ivt: Vec<u8> = (0..=255u8)
        .flat_map(|v| {
            let [lo, hi] = stub_offset(v).to_le_bytes();
            let [slo, shi] = ROM_SEGMENT.to_le_bytes();
            [lo, hi, slo, shi]
        })
        .collect();
    put("the interrupt vector table", 0, &ivt)?;
    put("the BIOS data area", BDA, &data_area())
}

/// The BIOS data area as a BIOS leaves it: COM1, the equipment word, 640 KiB, an empty
/// keyboard buffer, 80×25 colour text mode 3 with the cursor at the top left, one hard disk.
fn data_area() -> [u8; 0x100] {
    let mut area = [0u8; 0x100];
    let mut put16 = |at: u64, value: u16| {
        let at = crate::narrow::to_usize(at);
        area[at..at + 2].copy_from_slice(&value.to_le_bytes());
    };
    put16(bda::COM1, crate::devices::com1::BASE);
    put16(bda::EQUIPMENT, EQUIPMENT);
    put16(bda::MEMORY_KIB, CONVENTIONAL_KIB);
    put16(bda::KEYBOARD_HEAD, KEYBOARD_BUFFER.0);
    put16(bda::KEYBOARD_TAIL, KEYBOARD_BUFFER.0);
    put16(bda::KEYBOARD_START, KEYBOARD_BUFFER.0);
    put16(bda::KEYBOARD_END, KEYBOARD_BUFFER.1);
    put16(bda::COLUMNS, 80);
    put16(bda::PAGE_SIZE, 80 * 25 * 2);
    put16(bda::CURSOR_SHAPE, 0x0d0e);
    put16(bda::CRTC_BASE, 0x3d4);
    put16(bda::CHARACTER_HEIGHT, 16);
    area[crate::narrow::to_usize(bda::VIDEO_MODE)] = 3;
    area[crate::narrow::to_usize(bda::HARD_DISKS)] = 1;
    area[crate::narrow::to_usize(bda::ROWS_MINUS_ONE)] = 24;
    area
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_vector_has_its_own_stub() {
        assert_eq!(stub_vector(STUBS), Some(0));
        assert_eq!(stub_vector(STUBS + 0x10 * 4), Some(0x10));
        assert_eq!(stub_vector(STUBS + 255 * 4), Some(255));
        assert_eq!(stub_vector(STUBS + 256 * 4), None, "past the last stub");
        assert_eq!(stub_vector(STUBS + 1), None, "the iret, not a hlt");
        assert_eq!(stub_vector(STUBS - 4), None);
        assert_eq!(stub_offset(0x13), 0x4c);
    }
}
