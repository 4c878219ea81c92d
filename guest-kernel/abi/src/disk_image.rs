//! guest-kernel's raw disk image, `guest-kernel.img` (`GUEST_KERNEL_DISK`): a boot sector and
//! a stage2 that load the kernel as BoxKernel's own loader does, through BIOS calls only, and
//! enter it through Multiboot 1. The loader is guest-kernel's `bootsector` binary; vmm-host's
//! build script assembles the image.
//!
//! The image, in 512-byte sectors (its size is a multiple of 512):
//!
//! | LBA   | image bytes     | loaded at             | what                                   |
//! |-------|-----------------|-----------------------|----------------------------------------|
//! | 0     | 0x0000..0x0200  | 0x7C00                | stage1, 0x55 0xAA at offset 510        |
//! | 1..=8 | 0x0200..0x1200  | 0x8000 (4 KiB)        | stage2, its config block at offset 8   |
//! | 9..   | 0x1200..        | 0x10000, then 1 MiB   | the kernel, `__kernel_start..__load_end`, zero-padded to 512 |
//!
//! Low memory while the loader runs: stage2's E820 map at 0x500 (24-byte entries, at most
//! [`E820_MAX_ENTRIES`](crate::boot::E820_MAX_ENTRIES)), the stack below 0x7C00, stage1 at
//! 0x7C00 (stage2 calls its disk and print routines), stage2 at 0x8000, the Multiboot
//! information at [`MULTIBOOT_INFO`] with its memory map at [`MULTIBOOT_MMAP`], and the
//! 64 KiB bounce buffer at [`BOUNCE_BUFFER`] (BoxKernel's kernel address) through which the
//! kernel is read, [`CHUNK_SECTORS`] at a time, and moved up to 1 MiB with int 15h AH=87h.
//!
//! The config block, at [`CONFIG_IMAGE_OFFSET`] (0x208) in the image and 0x8008 in memory;
//! the build script fills it in, offsets in [`config`], little-endian u32 fields:
//!
//! | offset | field          | value                                          |
//! |--------|----------------|------------------------------------------------|
//! | 0x00   | magic          | [`CONFIG_MAGIC`], "GKSTAGE2"                    |
//! | 0x08   | kernel_lba     | [`KERNEL_LBA`]                                 |
//! | 0x0C   | kernel_sectors | the kernel's sectors                           |
//! | 0x10   | load_addr      | 0x100000, `__kernel_start`                     |
//! | 0x14   | load_end_addr  | `__load_end`: the file's bytes end, bss starts |
//! | 0x18   | bss_end_addr   | `__bss_end`: stage2 zeroes load_end..bss_end   |
//! | 0x1C   | entry_addr     | `multiboot_start32`                            |
//! | 0x20   | cmdline_size   | [`CMDLINE_MAX`]: the room for the command line |
//! | 0x24   | reserved       | 0                                              |
//! | 0x28   | cmdline        | NUL-terminated, [`CMDLINE_MAX`] bytes          |
//!
//! The command line lives at [`CMDLINE_IMAGE_OFFSET`] (0x230) in the image: to boot a copy
//! with another one, call [`set_cmdline`] on the copy's bytes; it checks the magic first.
//! Stage2 hands the kernel a pointer to it in place (Multiboot's `cmdline`, 0x8030).

/// Bytes per sector: of the image, and of every BIOS read.
pub const SECTOR_SIZE: usize = 512;
/// Where the BIOS loads stage1 (the image's first sector).
pub const STAGE1_ADDR: u32 = 0x7c00;
/// Stage2's first sector.
pub const STAGE2_LBA: u32 = 1;
/// Stage2's size in sectors (4 KiB).
pub const STAGE2_SECTORS: u32 = 8;
/// Where stage1 loads stage2 and jumps to it.
pub const STAGE2_ADDR: u32 = 0x8000;
/// The kernel's first sector, right after stage2.
pub const KERNEL_LBA: u32 = STAGE2_LBA + STAGE2_SECTORS;
/// The bounce buffer the kernel is read into below 1 MiB (BoxKernel's kernel address), 64 KiB.
pub const BOUNCE_BUFFER: u32 = 0x1_0000;
/// Sectors per int 13h read (32 KiB): under the extended read's 127, and a 64 KiB BIOS move
/// (0x8000 words) carries a whole chunk.
pub const CHUNK_SECTORS: u32 = 64;
/// Where stage2 builds the Multiboot information (in 0x9000–0xFFFF, which the kernel leaves
/// alone: its E820 copy is at 0x500, its PMM starts at 1 MiB).
pub const MULTIBOOT_INFO: u32 = 0x9000;
/// Where stage2 writes the Multiboot memory map: after the 116-byte information structure,
/// room for 64 entries of 24 bytes.
pub const MULTIBOOT_MMAP: u32 = 0x9100;
/// Size of one E820 entry as stage2 stores it at 0x500: base, length, type and the ACPI 3.0
/// extended attributes.
pub const E820_ENTRY_STRIDE: usize = 24;
/// The loader's name in the Multiboot information.
pub const LOADER_NAME: &str = "guest-kernel stage2";
/// The command line the build script writes into the image.
pub const DEFAULT_CMDLINE: &str = "test=heap vmm=boxkernel log=quiet";

/// Offset of the config block in stage2.
pub const CONFIG_OFFSET: usize = 8;
/// The config block's first 8 bytes.
pub const CONFIG_MAGIC: [u8; 8] = *b"GKSTAGE2";
/// Room for the command line in the config block, terminating NUL included.
pub const CMDLINE_MAX: usize = 256;
/// Offset of the config block in the image.
pub const CONFIG_IMAGE_OFFSET: usize = STAGE2_LBA as usize * SECTOR_SIZE + CONFIG_OFFSET;
/// Offset of the command line in the image.
pub const CMDLINE_IMAGE_OFFSET: usize = CONFIG_IMAGE_OFFSET + config::CMDLINE;

/// Offsets of the config block's fields, from the block's start.
pub mod config {
    pub const MAGIC: usize = 0x00;
    pub const KERNEL_LBA: usize = 0x08;
    pub const KERNEL_SECTORS: usize = 0x0c;
    pub const LOAD_ADDR: usize = 0x10;
    pub const LOAD_END_ADDR: usize = 0x14;
    pub const BSS_END_ADDR: usize = 0x18;
    pub const ENTRY_ADDR: usize = 0x1c;
    pub const CMDLINE_SIZE: usize = 0x20;
    pub const CMDLINE: usize = 0x28;
    /// The block's size: the command line is its last field.
    pub const SIZE: usize = CMDLINE + super::CMDLINE_MAX;
}

/// Why [`set_cmdline`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmdlineError {
    /// No [`CONFIG_MAGIC`] at [`CONFIG_IMAGE_OFFSET`]: not a guest-kernel disk image.
    NotAnImage,
    /// `len` bytes do not fit in the [`CMDLINE_MAX`] bytes the terminating NUL shares.
    TooLong { len: usize },
    /// The line holds a NUL, which would end it early.
    HasNul,
}

/// Replace the command line of a disk image held in `image`.
pub fn set_cmdline(image: &mut [u8], line: &str) -> Result<(), CmdlineError> {
    let magic = image.get(CONFIG_IMAGE_OFFSET..CONFIG_IMAGE_OFFSET + CONFIG_MAGIC.len());
    if magic != Some(CONFIG_MAGIC.as_slice()) {
        return Err(CmdlineError::NotAnImage);
    }
    if line.len() >= CMDLINE_MAX {
        return Err(CmdlineError::TooLong { len: line.len() });
    }
    if line.contains('\0') {
        return Err(CmdlineError::HasNul);
    }
    let field = image
        .get_mut(CMDLINE_IMAGE_OFFSET..CMDLINE_IMAGE_OFFSET + CMDLINE_MAX)
        .ok_or(CmdlineError::NotAnImage)?;
    field.fill(0);
    field[..line.len()].copy_from_slice(line.as_bytes());
    Ok(())
}
