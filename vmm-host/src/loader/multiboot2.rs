//! Multiboot 2 kernels: the header (8-aligned in the first 32 KiB, its checksum, the i386
//! architecture) and its tags: information requests, the address and entry address tags,
//! console flags, framebuffer and module alignment. A tag the host cannot honour fails the
//! load unless the kernel marked it optional, as the specification asks.

use super::LoadError;
use super::multiboot::{Image, address_plan, elf_plan, u32_at};
use crate::addr::Gpa;
use abi::multiboot2::{ARCH_I386, HEADER_MAGIC, HEADER_SEARCH, header_tag, info_tag};
use std::path::Path;

/// Boot information tags this host writes (the framebuffer only when asked for).
const PROVIDED: [u32; 6] = [
    info_tag::CMDLINE,
    info_tag::LOADER_NAME,
    info_tag::MODULE,
    info_tag::BASIC_MEMINFO,
    info_tag::MEMORY_MAP,
    info_tag::FRAMEBUFFER,
];

/// File offsets, 8-aligned in the first 32 KiB, that hold the header magic.
fn magic_offsets(data: &[u8]) -> impl Iterator<Item = usize> + '_ {
    (0..HEADER_SEARCH.min(data.len()))
        .step_by(8)
        .filter(|&at| u32_at(data, at) == Some(HEADER_MAGIC))
}

pub(super) fn has_header(data: &[u8]) -> bool {
    magic_offsets(data).next().is_some()
}

/// What the header's tags ask for.
#[derive(Debug, Default)]
struct Requests {
    address: Option<[u32; 4]>,
    entry: Option<u32>,
    wants_screen: bool,
}

/// The header at the first magic: (offset, length) once its checksum and architecture hold.
fn find_header(path: &Path, data: &[u8]) -> Result<(usize, usize), LoadError> {
    let Some(offset) = magic_offsets(data).next() else {
        return Err(LoadError::NoMultibootHeader(path.to_path_buf()));
    };
    let bad = |why: String| LoadError::BadMultibootHeader(path.to_path_buf(), offset, why);
    let word = |i: usize| {
        u32_at(data, offset + 4 * i)
            .ok_or_else(|| bad("it is cut off by the end of the file".into()))
    };
    let (arch, length, checksum) = (word(1)?, word(2)?, word(3)?);
    let sum = HEADER_MAGIC
        .wrapping_add(arch)
        .wrapping_add(length)
        .wrapping_add(checksum);
    if sum != 0 {
        let want = 0u32
            .wrapping_sub(HEADER_MAGIC)
            .wrapping_sub(arch)
            .wrapping_sub(length);
        return Err(bad(format!(
            "Multiboot 2 checksum {checksum:#010x} is wrong (magic + architecture + header_length + checksum must be 0; it should be {want:#010x})"
        )));
    }
    if arch != ARCH_I386 {
        return Err(bad(format!(
            "architecture {arch} is not 0 (i386 protected mode), the only one x86 loaders enter"
        )));
    }
    let length = length as usize;
    if length < 24 || offset + length > data.len() {
        return Err(bad(format!(
            "header_length {length:#x} does not fit: at least 24 bytes (the end tag included), inside the file's {:#x}",
            data.len()
        )));
    }
    Ok((offset, length))
}

/// Walk the header's tags up to the end tag.
fn read_tags(data: &[u8], offset: usize, length: usize) -> Result<Requests, String> {
    let mut requests = Requests::default();
    let end = offset + length;
    let mut at = offset + 16;
    loop {
        let head = data
            .get(at..at + 8)
            .filter(|_| at + 8 <= end)
            .ok_or_else(|| {
                format!("its tags run past header_length without an end tag (at {at:#x})")
            })?;
        let kind = u16::from_le_bytes([head[0], head[1]]);
        let optional = u16::from_le_bytes([head[2], head[3]]) & header_tag::OPTIONAL != 0;
        let size = u32_at(head, 4).unwrap_or(0) as usize;
        if size < 8 || at + size > end {
            return Err(format!(
                "tag {kind} at {at:#x} has size {size:#x}, outside the header"
            ));
        }
        let body = &data[at + 8..at + size];
        let field =
            |i: usize| u32_at(body, 4 * i).ok_or_else(|| format!("tag {kind} is too short"));
        match kind {
            header_tag::END => return Ok(requests),
            header_tag::INFORMATION_REQUEST if !optional => {
                for i in 0..body.len() / 4 {
                    let wanted = field(i)?;
                    if !PROVIDED.contains(&wanted) {
                        return Err(format!(
                            "it requires boot information tag {wanted}, which this host does not provide (it provides {PROVIDED:?}); mark the request optional"
                        ));
                    }
                }
            }
            header_tag::ADDRESS => {
                requests.address = Some([field(0)?, field(1)?, field(2)?, field(3)?]);
            }
            header_tag::ENTRY_ADDRESS => requests.entry = Some(field(0)?),
            header_tag::CONSOLE_FLAGS | header_tag::FRAMEBUFFER => requests.wants_screen = true,
            header_tag::INFORMATION_REQUEST | header_tag::MODULE_ALIGN => {}
            // Relocatable (10): loading at the linked addresses is allowed.
            10 => {}
            _ if optional => {}
            other => {
                return Err(format!(
                    "it requires header tag {other} ({}), which this host does not honour",
                    match other {
                        7 => "EFI boot services",
                        8 | 9 => "an EFI entry point",
                        _ => "unknown",
                    }
                ));
            }
        }
        at = (at + size).next_multiple_of(8);
    }
}

/// Check a Multiboot 2 kernel and plan its load.
pub(super) fn inspect(path: &Path, data: Vec<u8>) -> Result<Image, LoadError> {
    let (offset, length) = find_header(path, &data)?;
    let bad = |why: String| LoadError::BadMultibootHeader(path.to_path_buf(), offset, why);
    let requests = read_tags(&data, offset, length).map_err(bad)?;
    let (chunks, entry) = match requests.address {
        Some(fields) => {
            let chunk = address_plan(&data, offset, fields).map_err(bad)?;
            let entry = requests.entry.ok_or_else(|| {
                bad("it has an address tag but no entry address tag to say where to enter".into())
            })?;
            (vec![chunk], Gpa::new(u64::from(entry)))
        }
        None => {
            let (chunks, elf_entry) = elf_plan(path, &data)?;
            let entry = requests.entry.map_or(elf_entry, |e| Gpa::new(u64::from(e)));
            (chunks, entry)
        }
    };
    Image::new(data, chunks, entry, requests.wants_screen).map_err(bad)
}
