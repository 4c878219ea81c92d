//! The Multiboot 2 boot information the host hands a kernel in EBX: one block of 8-aligned
//! tags at 0x6000 (command line, loader name, modules, basic memory information, memory map,
//! the EGA text framebuffer when asked for, the end tag), at most the 16 KiB of boot data.

use super::multiboot::Image;
use super::multiboot_info::{
    LOADER_NAME, ModuleArg, TEXT_SCREEN, command_line, low32, memory_kib, place_modules,
    write_bytes,
};
use super::{BOOT_DATA, LoadError};
use crate::addr::Gpa;
use crate::layout::RamLayout;
use abi::multiboot2::{MMAP_ENTRY_SIZE, info_tag};
use std::path::Path;
use vm_memory::GuestMemoryMmap;

/// The boot information's place: the host's whole boot data area.
const MBI_AT: u64 = BOOT_DATA.0;
const MBI_MAX: u64 = BOOT_DATA.1 - BOOT_DATA.0;
/// Framebuffer type 2: EGA text.
const EGA_TEXT: u8 = 2;

/// The boot information being built: 8 bytes of header, then tags.
struct Mbi(Vec<u8>);

impl Mbi {
    fn tag(&mut self, kind: u32, body: &[u8]) {
        let size = u32::try_from(8 + body.len()).unwrap_or(u32::MAX);
        self.0.extend(kind.to_le_bytes());
        self.0.extend(size.to_le_bytes());
        self.0.extend(body);
        self.0.resize(self.0.len().next_multiple_of(8), 0);
    }

    fn string_tag(&mut self, kind: u32, prefix: &[u8], text: &str) {
        let mut body = prefix.to_vec();
        body.extend(text.as_bytes());
        body.push(0);
        self.tag(kind, &body);
    }
}

/// Write the boot information and load the modules; its address, for EBX.
pub(super) fn write(
    mem: &GuestMemoryMmap,
    ram: &RamLayout,
    image: &Image,
    kernel: &Path,
    cmdline: &str,
    modules: &[ModuleArg],
) -> Result<Gpa, LoadError> {
    let mut mbi = Mbi(vec![0; 8]);
    mbi.string_tag(info_tag::CMDLINE, &[], &command_line(kernel, cmdline));
    mbi.string_tag(info_tag::LOADER_NAME, &[], LOADER_NAME);
    for module in place_modules(mem, ram, image.end(), modules)? {
        let mut range = module.start.to_le_bytes().to_vec();
        range.extend(module.end.to_le_bytes());
        mbi.string_tag(info_tag::MODULE, &range, &module.text);
    }
    let map = ram.memory_map();
    let (lower, upper) = memory_kib(ram);
    let mut meminfo = lower.to_le_bytes().to_vec();
    meminfo.extend(upper.to_le_bytes());
    mbi.tag(info_tag::BASIC_MEMINFO, &meminfo);
    let mut table = low32(MMAP_ENTRY_SIZE as u64).to_le_bytes().to_vec();
    table.extend(0u32.to_le_bytes());
    for e in &map {
        table.extend(e.addr.to_le_bytes());
        table.extend(e.size.to_le_bytes());
        table.extend(e.kind.to_le_bytes());
        table.extend(0u32.to_le_bytes());
    }
    mbi.tag(info_tag::MEMORY_MAP, &table);
    if image.wants_screen {
        let (addr, width, height) = TEXT_SCREEN;
        let mut fb = addr.to_le_bytes().to_vec();
        for word in [width * 2, width, height] {
            fb.extend(word.to_le_bytes());
        }
        fb.extend([16, EGA_TEXT, 0, 0]);
        mbi.tag(info_tag::FRAMEBUFFER, &fb);
    }
    mbi.tag(info_tag::END, &[]);
    let total = mbi.0.len() as u64;
    if total > MBI_MAX {
        return Err(LoadError::BootData(format!(
            "the Multiboot 2 boot information needs {total} bytes; the host keeps {MBI_MAX} for it (shorten the command line or the module strings)"
        )));
    }
    mbi.0[..4].copy_from_slice(&low32(total).to_le_bytes());
    write_bytes(mem, Gpa::new(MBI_AT), &mbi.0)?;
    Ok(Gpa::new(MBI_AT))
}
