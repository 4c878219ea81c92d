//! Multiboot 2 (the Multiboot2 Specification, version 2.0): the header a kernel carries and
//! the boot information a loader hands it, both lists of 8-aligned tags, read from bytes.

use crate::start_info::{MemmapEntry, u32_at, u64_at};

/// The header's magic, 8-aligned in the image's first [`HEADER_SEARCH`] bytes.
pub const HEADER_MAGIC: u32 = 0xe852_50d6;
/// What EAX holds at the kernel's entry.
pub const BOOTLOADER_MAGIC: u32 = 0x36d7_6289;
pub const HEADER_SEARCH: usize = 32768;
/// The header's architecture field for 32-bit protected-mode i386 entry.
pub const ARCH_I386: u32 = 0;

/// Header tag types.
pub mod header_tag {
    pub const END: u16 = 0;
    pub const INFORMATION_REQUEST: u16 = 1;
    pub const ADDRESS: u16 = 2;
    pub const ENTRY_ADDRESS: u16 = 3;
    pub const CONSOLE_FLAGS: u16 = 4;
    pub const FRAMEBUFFER: u16 = 5;
    pub const MODULE_ALIGN: u16 = 6;
    /// Bit 0 of a header tag's flags: the loader may ignore the tag.
    pub const OPTIONAL: u16 = 1;
}

/// Boot information tag types.
pub mod info_tag {
    pub const END: u32 = 0;
    pub const CMDLINE: u32 = 1;
    pub const LOADER_NAME: u32 = 2;
    pub const MODULE: u32 = 3;
    pub const BASIC_MEMINFO: u32 = 4;
    pub const MEMORY_MAP: u32 = 6;
    pub const FRAMEBUFFER: u32 = 8;
}

/// Size of one memory-map entry: base, length, type, reserved.
pub const MMAP_ENTRY_SIZE: usize = 24;

/// One boot information tag: its type and its body (after the 8-byte tag header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag<'a> {
    pub kind: u32,
    pub body: &'a [u8],
}

/// The tags of the boot information in `mbi` (which starts with total_size and reserved),
/// up to the end tag or the first tag that does not fit.
pub fn tags(mbi: &[u8]) -> impl Iterator<Item = Tag<'_>> + '_ {
    let total = mbi
        .get(..4)
        .map_or(0, |_| u32_at(mbi, 0) as usize)
        .min(mbi.len());
    let mut at = 8usize;
    core::iter::from_fn(move || {
        let head = mbi
            .get(at..at.checked_add(8)?)
            .filter(|_| at + 8 <= total)?;
        let (kind, size) = (u32_at(head, 0), u32_at(head, 4) as usize);
        if kind == info_tag::END || size < 8 || at + size > total {
            return None;
        }
        let body = &mbi[at + 8..at + size];
        at = (at + size).checked_next_multiple_of(8)?;
        Some(Tag { kind, body })
    })
}

/// The NUL-terminated string a cmdline, loader-name or module tag carries (after `skip` bytes).
pub fn tag_string(body: &[u8], skip: usize) -> &[u8] {
    let text = body.get(skip..).unwrap_or(&[]);
    let len = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    &text[..len]
}

/// The entries of a memory-map tag's body (entry_size, entry_version, then the entries).
pub fn mmap_entries(body: &[u8]) -> impl Iterator<Item = MemmapEntry> + '_ {
    let entry_size = body.get(..4).map_or(0, |_| u32_at(body, 0) as usize);
    let entries = body.get(8..).unwrap_or(&[]);
    let step = entry_size.max(1);
    (0..if entry_size >= 20 {
        entries.len() / step
    } else {
        0
    })
        .map(move |i| {
            let e = &entries[i * step..];
            MemmapEntry {
                addr: u64_at(e, 0),
                size: u64_at(e, 8),
                kind: u32_at(e, 16),
            }
        })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn tag(kind: u32, body: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend(kind.to_le_bytes());
        t.extend(u32::try_from(8 + body.len()).unwrap().to_le_bytes());
        t.extend(body);
        while t.len() % 8 != 0 {
            t.push(0);
        }
        t
    }

    #[test]
    fn tags_are_read_to_the_end_tag_and_strings_and_maps_decoded() {
        let mut map = Vec::new();
        map.extend(24u32.to_le_bytes());
        map.extend(0u32.to_le_bytes());
        for (addr, size, kind) in [(0u64, 0xa_0000u64, 1u32), (0x10_0000, 0x700_0000, 1)] {
            map.extend(addr.to_le_bytes());
            map.extend(size.to_le_bytes());
            map.extend(kind.to_le_bytes());
            map.extend(0u32.to_le_bytes());
        }
        let mut mbi = std::vec![0u8; 8];
        mbi.extend(tag(info_tag::CMDLINE, b"k.elf test=1\0"));
        mbi.extend(tag(info_tag::MEMORY_MAP, &map));
        mbi.extend(tag(info_tag::END, &[]));
        mbi.extend(tag(info_tag::CMDLINE, b"after the end\0"));
        let total = u32::try_from(mbi.len()).unwrap();
        mbi[..4].copy_from_slice(&total.to_le_bytes());
        let found: Vec<Tag<'_>> = tags(&mbi).collect();
        assert_eq!(found.len(), 2);
        assert_eq!(tag_string(found[0].body, 0), b"k.elf test=1");
        let entries: Vec<MemmapEntry> = mmap_entries(found[1].body).collect();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].size, 0x700_0000);
        // A total size that cuts a tag stops before it; garbage never panics.
        mbi[..4].copy_from_slice(&20u32.to_le_bytes());
        assert_eq!(tags(&mbi).count(), 0);
        assert_eq!(tags(&[0xff; 3]).count(), 0);
        assert_eq!(mmap_entries(&[4, 0, 0, 0, 0, 0, 0, 0, 1, 2]).count(), 0);
    }
}
