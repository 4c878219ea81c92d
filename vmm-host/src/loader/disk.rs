//! A raw disk image booted as a PC boots a hard disk: its first sector (the boot sector,
//! ending in 55h AAh) at 0000:7C00 in real mode with DL = 80h, on the host's BIOS
//! ([`crate::bios`]), which serves the rest of the image through int 13h.

use super::{BootEntry, EntryMode, LoadError};
use crate::addr::Gpa;
use crate::bios::disk::{BOOT_DRIVE, SECTOR};
use std::path::Path;
use vm_memory::{Bytes, GuestMemoryMmap};

/// Where a BIOS loads the boot sector and jumps to it.
pub const BOOT_SECTOR: u64 = 0x7c00;
/// The boot signature's offset in the sector, and its bytes.
const SIGNATURE_AT: usize = 510;
const SIGNATURE: [u8; 2] = [0x55, 0xaa];

/// True when `data` ends its first sector with the boot signature.
pub(super) fn has_boot_signature(data: &[u8]) -> bool {
    data.get(SIGNATURE_AT..SECTOR) == Some(&SIGNATURE[..])
}

/// Check that `data` is a bootable image: whole sectors, the first one signed.
pub(super) fn inspect(path: &Path, data: &[u8]) -> Result<(), LoadError> {
    let bad = |why: String| LoadError::BadDiskImage(path.to_path_buf(), why);
    if data.is_empty() {
        return Err(bad(
            "it is empty; a disk image holds at least its boot sector".into(),
        ));
    }
    if !data.len().is_multiple_of(SECTOR) {
        return Err(bad(format!(
            "its size, {} bytes, is not a multiple of the 512-byte sector (pad it with zeros)",
            data.len()
        )));
    }
    if !has_boot_signature(data) {
        let found = &data[SIGNATURE_AT..SECTOR];
        return Err(bad(format!(
            "its first sector ends in {:02x} {:02x}, not the boot signature 55 aa",
            found[0], found[1]
        )));
    }
    Ok(())
}

/// Copy the boot sector to 0x7C00 and name the entry: real mode at 0000:7C00.
pub(super) fn boot(
    path: &Path,
    data: &[u8],
    mem: &GuestMemoryMmap,
) -> Result<BootEntry, LoadError> {
    mem.write_slice(&data[..SECTOR], Gpa::new(BOOT_SECTOR).guest_address())
        .map_err(|e| LoadError::Load(path.to_path_buf(), e.to_string()))?;
    crate::bios::rom::install(mem).map_err(|e| LoadError::BootData(e.to_string()))?;
    Ok(BootEntry {
        rip: Gpa::new(BOOT_SECTOR),
        eax: 0,
        ebx: Gpa::new(0),
        esi: 0,
        gdt: None,
        mode: EntryMode::Real { drive: BOOT_DRIVE },
    })
}
