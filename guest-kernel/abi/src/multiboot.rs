//! Multiboot 1 (the GNU Multiboot Specification 0.6.96): the header a kernel carries and the
//! information structure a boot loader hands it, read from bytes.
//!
//! The host writes the information structure; the guest parses it here, so the parser is
//! tested on the host. Offsets are the specification's.

use crate::start_info::{MemmapEntry, u32_at, u64_at};

/// The header's magic, somewhere in the image's first [`HEADER_SEARCH`] bytes, 4-aligned.
pub const HEADER_MAGIC: u32 = 0x1bad_b002;
/// What EAX holds at the kernel's entry.
pub const BOOTLOADER_MAGIC: u32 = 0x2bad_b002;
/// How far into the image a loader looks for the header.
pub const HEADER_SEARCH: usize = 8192;

/// Header flags the kernel sets.
pub mod header_flags {
    /// Align modules on 4 KiB pages.
    pub const PAGE_ALIGN: u32 = 1 << 0;
    /// Provide mem_lower/mem_upper and the memory map.
    pub const MEMORY_INFO: u32 = 1 << 1;
    /// Provide the video mode table (the header's mode fields say which mode).
    pub const VIDEO_MODE: u32 = 1 << 2;
    /// The address fields after the checksum are valid: load by them (the "a.out kludge").
    pub const ADDRESS: u32 = 1 << 16;
    /// Bits 0–15 a loader must refuse when it does not know them.
    pub const REQUIRED_MASK: u32 = 0xffff;
}

/// Flags in the information structure: which of its fields are valid.
pub mod info_flags {
    pub const MEMORY: u32 = 1 << 0;
    pub const BOOT_DEVICE: u32 = 1 << 1;
    pub const CMDLINE: u32 = 1 << 2;
    pub const MODULES: u32 = 1 << 3;
    pub const MEMORY_MAP: u32 = 1 << 6;
    pub const LOADER_NAME: u32 = 1 << 9;
    pub const FRAMEBUFFER: u32 = 1 << 12;
}

/// Size of the information structure, framebuffer fields included.
pub const INFO_SIZE: usize = 116;
/// Size of one module entry: start, end, string, reserved.
pub const MODULE_SIZE: usize = 16;
/// Size of one memory-map entry as the host writes it: the size field (20) and 20 bytes.
pub const MMAP_ENTRY_SIZE: usize = 24;
/// Framebuffer type 2: EGA text, width and height in characters.
pub const FRAMEBUFFER_EGA_TEXT: u8 = 2;

/// Offsets of the information structure's fields.
pub mod offset {
    pub const FLAGS: usize = 0;
    pub const MEM_LOWER: usize = 4;
    pub const MEM_UPPER: usize = 8;
    pub const BOOT_DEVICE: usize = 12;
    pub const CMDLINE: usize = 16;
    pub const MODS_COUNT: usize = 20;
    pub const MODS_ADDR: usize = 24;
    pub const MMAP_LENGTH: usize = 44;
    pub const MMAP_ADDR: usize = 48;
    pub const BOOT_LOADER_NAME: usize = 64;
    pub const FRAMEBUFFER_ADDR: usize = 88;
    pub const FRAMEBUFFER_PITCH: usize = 96;
    pub const FRAMEBUFFER_WIDTH: usize = 100;
    pub const FRAMEBUFFER_HEIGHT: usize = 104;
    pub const FRAMEBUFFER_BPP: usize = 108;
    pub const FRAMEBUFFER_TYPE: usize = 109;
}

/// The fields of the information structure a kernel reads; invalid ones (flag clear) are 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Info {
    pub flags: u32,
    /// KiB of conventional memory, from 0.
    pub mem_lower: u32,
    /// KiB of memory from 1 MiB to the first hole.
    pub mem_upper: u32,
    pub cmdline_paddr: u32,
    pub mods_count: u32,
    pub mods_addr: u32,
    pub mmap_length: u32,
    pub mmap_addr: u32,
    pub boot_loader_name_paddr: u32,
}

/// Why an information structure could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooShort {
    pub len: usize,
    pub need: usize,
}

impl Info {
    /// Parse the information structure from its first bytes (at least up to the loader name).
    pub fn parse(bytes: &[u8]) -> Result<Self, TooShort> {
        let need = offset::BOOT_LOADER_NAME + 4;
        if bytes.len() < need {
            return Err(TooShort {
                len: bytes.len(),
                need,
            });
        }
        let flags = u32_at(bytes, offset::FLAGS);
        let field = |flag: u32, at: usize| {
            if flags & flag != 0 {
                u32_at(bytes, at)
            } else {
                0
            }
        };
        Ok(Self {
            flags,
            mem_lower: field(info_flags::MEMORY, offset::MEM_LOWER),
            mem_upper: field(info_flags::MEMORY, offset::MEM_UPPER),
            cmdline_paddr: field(info_flags::CMDLINE, offset::CMDLINE),
            mods_count: field(info_flags::MODULES, offset::MODS_COUNT),
            mods_addr: field(info_flags::MODULES, offset::MODS_ADDR),
            mmap_length: field(info_flags::MEMORY_MAP, offset::MMAP_LENGTH),
            mmap_addr: field(info_flags::MEMORY_MAP, offset::MMAP_ADDR),
            boot_loader_name_paddr: field(info_flags::LOADER_NAME, offset::BOOT_LOADER_NAME),
        })
    }
}

/// The memory map's entries. Each starts with its own size (not counting the size field), so
/// a loader may use longer entries than 20 bytes; an entry cut off by the end is not returned.
pub fn mmap_entries(map: &[u8]) -> impl Iterator<Item = MemmapEntry> + '_ {
    let mut at = 0usize;
    core::iter::from_fn(move || {
        let size = usize::try_from(u32_at(map.get(at..at.checked_add(4)?)?, 0)).ok()?;
        let body = map.get(at + 4..at.checked_add(4)?.checked_add(size)?)?;
        if body.len() < 20 {
            return None;
        }
        at += 4 + size;
        Some(MemmapEntry {
            addr: u64_at(body, 0),
            size: u64_at(body, 8),
            kind: u32_at(body, 16),
        })
    })
}

/// One memory-map entry in the layout the host writes: size 20, base, length, type.
pub fn mmap_entry_bytes(entry: &MemmapEntry) -> [u8; MMAP_ENTRY_SIZE] {
    let mut out = [0u8; MMAP_ENTRY_SIZE];
    out[0..4].copy_from_slice(&20u32.to_le_bytes());
    out[4..12].copy_from_slice(&entry.addr.to_le_bytes());
    out[12..20].copy_from_slice(&entry.size.to_le_bytes());
    out[20..24].copy_from_slice(&entry.kind.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn fields_whose_flag_is_clear_read_as_zero() {
        let mut b = [0u8; INFO_SIZE];
        b[offset::FLAGS..][..4].copy_from_slice(&info_flags::CMDLINE.to_le_bytes());
        b[offset::CMDLINE..][..4].copy_from_slice(&0x9000u32.to_le_bytes());
        b[offset::MEM_UPPER..][..4].copy_from_slice(&1234u32.to_le_bytes());
        let info = Info::parse(&b).unwrap();
        assert_eq!((info.cmdline_paddr, info.mem_upper), (0x9000, 0));
        assert_eq!(Info::parse(&b[..20]), Err(TooShort { len: 20, need: 68 }));
    }

    #[test]
    fn mmap_entries_follow_each_entrys_own_size_and_stop_at_a_cut_one() {
        let a = MemmapEntry {
            addr: 0,
            size: 0xa_0000,
            kind: 1,
        };
        let b = MemmapEntry {
            addr: 0x10_0000,
            size: 0x700_0000,
            kind: 1,
        };
        let mut map = [0u8; 2 * MMAP_ENTRY_SIZE + 4 + 10];
        map[..24].copy_from_slice(&mmap_entry_bytes(&a));
        // A 24-byte entry (size 24): four bytes of padding a reader must skip.
        let mut longer = [0u8; 28];
        longer[..24].copy_from_slice(&mmap_entry_bytes(&b));
        longer[0..4].copy_from_slice(&24u32.to_le_bytes());
        map[24..52].copy_from_slice(&longer);
        map[52..56].copy_from_slice(&20u32.to_le_bytes()); // cut off after 4 bytes of body
        let entries: std::vec::Vec<MemmapEntry> = mmap_entries(&map).collect();
        assert_eq!(entries, [a, b]);
    }
}
