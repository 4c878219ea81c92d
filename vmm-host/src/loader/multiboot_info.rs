//! The Multiboot 1 information structure the host hands a kernel in EBX, with its memory map,
//! command line, boot loader name and modules, laid out in the host's boot data area:
//!
//! | at      | what                                             |
//! |---------|--------------------------------------------------|
//! | 0x6000  | the information structure (116 bytes)            |
//! | 0x6100  | the module list (16 bytes a module)              |
//! | 0x7000  | the memory map (24 bytes an entry, size first)   |
//! | 0x8000  | strings: the loader's name, module command lines |
//! | 0x9000  | the kernel's command line                        |
//!
//! Modules go above the kernel, each on a page of its own, as GRUB places them.

use super::multiboot::Image;
use super::{BOOT_DATA, LoadError};
use crate::addr::Gpa;
use crate::layout::RamLayout;
use abi::boot::{CMDLINE, MEMMAP_TABLE, START_INFO};
use abi::multiboot::{
    FRAMEBUFFER_EGA_TEXT, INFO_SIZE, MMAP_ENTRY_SIZE, MODULE_SIZE, info_flags, mmap_entry_bytes,
    offset,
};
use std::path::{Path, PathBuf};
use vm_memory::{Bytes, GuestMemoryMmap};

const INFO_AT: u64 = START_INFO;
const MODULES_AT: u64 = START_INFO + 0x100;
const MMAP_AT: u64 = MEMMAP_TABLE;
const STRINGS_AT: u64 = MEMMAP_TABLE + 0x1000;
/// What the kernel finds at `boot_loader_name`.
pub const LOADER_NAME: &str = concat!("vmm-host ", env!("CARGO_PKG_VERSION"));
/// The EGA text screen a kernel that asks for a video mode is given.
pub(super) const TEXT_SCREEN: (u64, u32, u32) = (0xb_8000, 80, 25);
const PAGE: u64 = 4096;

/// `--module FILE[,CMDLINE]`: a file loaded next to a Multiboot kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleArg {
    pub path: PathBuf,
    pub cmdline: String,
}

impl std::str::FromStr for ModuleArg {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (path, cmdline) = text.split_once(',').unwrap_or((text, ""));
        if path.is_empty() {
            return Err(format!(
                "`{text}` names no file: write --module FILE[,CMDLINE]"
            ));
        }
        Ok(Self {
            path: PathBuf::from(path),
            cmdline: cmdline.to_string(),
        })
    }
}

/// Bytes the strings area holds, packed one after another.
pub(super) struct Strings {
    next: u64,
}

impl Strings {
    /// An empty strings area at 0x8000.
    pub(super) fn new() -> Self {
        Self { next: STRINGS_AT }
    }

    pub(super) fn put(&mut self, mem: &GuestMemoryMmap, text: &str) -> Result<u32, LoadError> {
        let at = self.next;
        let end = at + text.len() as u64 + 1;
        if end > CMDLINE {
            return Err(LoadError::Module(format!(
                "the module command lines need more than the {} bytes the host keeps for them",
                CMDLINE - STRINGS_AT
            )));
        }
        let mut bytes = text.as_bytes().to_vec();
        bytes.push(0);
        write_bytes(mem, Gpa::new(at), &bytes)?;
        self.next = end;
        Ok(low32(at))
    }
}

pub(super) fn write_bytes(mem: &GuestMemoryMmap, at: Gpa, bytes: &[u8]) -> Result<(), LoadError> {
    mem.write_slice(bytes, at.guest_address())
        .map_err(|e| LoadError::BootData(format!("{} bytes at {at}: {e}", bytes.len())))
}

fn set(info: &mut [u8; INFO_SIZE], at: usize, value: u32) {
    info[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// Every address here is below 4 GiB: checked where it is chosen.
pub(super) fn low32(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

/// Write the information structure and everything it points at; its address, for EBX.
pub(super) fn write(
    mem: &GuestMemoryMmap,
    ram: &RamLayout,
    image: &Image,
    kernel: &Path,
    cmdline: &str,
    modules: &[ModuleArg],
) -> Result<Gpa, LoadError> {
    let mut info = [0u8; INFO_SIZE];
    let mut flags = info_flags::MEMORY | info_flags::CMDLINE | info_flags::MEMORY_MAP;
    flags |= info_flags::LOADER_NAME | info_flags::MODULES;

    let map = ram.memory_map();
    let (lower, upper) = memory_kib(ram);
    set(&mut info, offset::MEM_LOWER, lower);
    set(&mut info, offset::MEM_UPPER, upper);
    let line = command_line(kernel, cmdline);
    set(
        &mut info,
        offset::CMDLINE,
        low32(super::write_cmdline(mem, &line)?.raw()),
    );

    let mut table = Vec::with_capacity(map.len() * MMAP_ENTRY_SIZE);
    for entry in &map {
        table.extend(mmap_entry_bytes(entry));
    }
    if table.len() as u64 > STRINGS_AT - MMAP_AT {
        return Err(LoadError::BootData(format!(
            "{} memory-map entries do not fit",
            map.len()
        )));
    }
    write_bytes(mem, Gpa::new(MMAP_AT), &table)?;
    set(&mut info, offset::MMAP_LENGTH, low32(table.len() as u64));
    set(&mut info, offset::MMAP_ADDR, low32(MMAP_AT));

    let mut strings = Strings::new();
    set(
        &mut info,
        offset::BOOT_LOADER_NAME,
        strings.put(mem, LOADER_NAME)?,
    );
    let count = load_modules(mem, ram, image.end(), modules, &mut strings)?;
    set(&mut info, offset::MODS_COUNT, count);
    set(&mut info, offset::MODS_ADDR, low32(MODULES_AT));

    if image.wants_screen {
        flags |= info_flags::FRAMEBUFFER;
        let (addr, width, height) = TEXT_SCREEN;
        info[offset::FRAMEBUFFER_ADDR..][..8].copy_from_slice(&addr.to_le_bytes());
        set(&mut info, offset::FRAMEBUFFER_PITCH, width * 2);
        set(&mut info, offset::FRAMEBUFFER_WIDTH, width);
        set(&mut info, offset::FRAMEBUFFER_HEIGHT, height);
        info[offset::FRAMEBUFFER_BPP] = 16;
        info[offset::FRAMEBUFFER_TYPE] = FRAMEBUFFER_EGA_TEXT;
    }
    info[offset::FLAGS..][..4].copy_from_slice(&flags.to_le_bytes());
    write_bytes(mem, Gpa::new(INFO_AT), &info)?;
    Ok(Gpa::new(INFO_AT))
}

/// mem_lower and mem_upper in KiB: the usable RAM from 0 (at most 1 MiB), and from 1 MiB to
/// the first hole.
pub(super) fn memory_kib(ram: &RamLayout) -> (u32, u32) {
    let map = ram.memory_map();
    let lower = map
        .iter()
        .find(|e| e.addr == 0 && e.kind == abi::boot::e820::RAM)
        .map_or(0, |e| e.size.min(0x10_0000));
    let upper = map
        .iter()
        .find(|e| e.addr == 0x10_0000)
        .map_or(0, |e| e.size);
    (low32(lower / 1024), low32(upper / 1024))
}

/// The command line as GRUB and QEMU hand it over, "IMAGE ARGS": kernels written for them
/// skip the first word.
pub(super) fn command_line(kernel: &Path, args: &str) -> String {
    format!("{} {}", kernel.display(), args.trim())
        .trim()
        .to_string()
}

/// A module copied into guest RAM: [start, end) and the string the kernel is given.
pub(super) struct Placed {
    pub start: u32,
    pub end: u32,
    pub text: String,
}

/// Refuse more modules than a list of `most` entries holds.
pub(super) fn fit_in_list(modules: &[ModuleArg], most: u64) -> Result<(), LoadError> {
    if modules.len() as u64 > most {
        return Err(LoadError::Module(format!(
            "{} modules given; the host lists at most {most}",
            modules.len()
        )));
    }
    Ok(())
}

/// Copy each module to the next free page above the kernel (GRUB's placement).
pub(super) fn place_modules(
    mem: &GuestMemoryMmap,
    ram: &RamLayout,
    kernel_end: Gpa,
    modules: &[ModuleArg],
) -> Result<Vec<Placed>, LoadError> {
    let mut next = kernel_end.raw().max(BOOT_DATA.1).next_multiple_of(PAGE);
    let mut placed = Vec::with_capacity(modules.len());
    for module in modules {
        let bytes = std::fs::read(&module.path).map_err(|e| {
            LoadError::Module(format!("cannot read `{}`: {e}", module.path.display()))
        })?;
        let start = next;
        let end = start + bytes.len() as u64;
        if !ram.contains(Gpa::new(start), bytes.len() as u64) || end > 1 << 32 {
            return Err(LoadError::Module(format!(
                "`{}` ({} bytes) does not fit in guest RAM at {start:#x} ({ram}): raise --mem",
                module.path.display(),
                bytes.len()
            )));
        }
        write_bytes(mem, Gpa::new(start), &bytes)?;
        let text = format!("{} {}", module.path.display(), module.cmdline);
        placed.push(Placed {
            start: low32(start),
            end: low32(end),
            text: text.trim().to_string(),
        });
        next = end.max(start + 1).next_multiple_of(PAGE);
    }
    Ok(placed)
}

/// Copy each module above the kernel and list it with its string; the count.
fn load_modules(
    mem: &GuestMemoryMmap,
    ram: &RamLayout,
    kernel_end: Gpa,
    modules: &[ModuleArg],
    strings: &mut Strings,
) -> Result<u32, LoadError> {
    fit_in_list(modules, (MMAP_AT - MODULES_AT) / MODULE_SIZE as u64)?;
    let placed = place_modules(mem, ram, kernel_end, modules)?;
    for (index, module) in placed.iter().enumerate() {
        let mut entry = [0u8; MODULE_SIZE];
        entry[0..4].copy_from_slice(&module.start.to_le_bytes());
        entry[4..8].copy_from_slice(&module.end.to_le_bytes());
        entry[8..12].copy_from_slice(&strings.put(mem, &module.text)?.to_le_bytes());
        write_bytes(
            mem,
            Gpa::new(MODULES_AT + (index * MODULE_SIZE) as u64),
            &entry,
        )?;
    }
    Ok(u32::try_from(placed.len()).unwrap_or(u32::MAX))
}
