//! PVH: an x86-64 ELF with a Xen entry note, loaded by linux-loader, entered in 32-bit
//! protected mode with EBX pointing at `hvm_start_info`, its memory map and command line.

use super::multiboot_info::{ModuleArg, Strings, fit_in_list, place_modules};
use super::{LoadError, first_bytes};
use crate::addr::Gpa;
use crate::layout::RamLayout;
use abi::boot::{CMDLINE, MEMMAP_TABLE, START_INFO};
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::elf::start_info::{
    XEN_HVM_START_MAGIC_VALUE, hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::{Elf, KernelLoader, PvhBootCapability};
use object::elf;
use object::read::elf::{FileHeader, ProgramHeader};
use std::path::Path;
use vm_memory::GuestMemoryMmap;

/// XEN_ELFNOTE_PHYS32_ENTRY: the note type that holds a PVH kernel's 32-bit entry point.
pub(super) const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// `e_ident[EI_CLASS]`.
const ELF_CLASS_OFFSET: usize = 4;

/// Whether `data` is a well-formed x86-64 ELF carrying a PVH entry note.
pub(super) fn has_pvh_note(data: &[u8]) -> bool {
    inspect(Path::new(""), data).is_ok()
}

/// What the program headers of an x86-64 ELF say: its entry (`e_entry`), the physical extent
/// of every PT_LOAD segment, and the PVH entry when a note gives one.
#[derive(Debug, Clone)]
pub(super) struct ElfLayout {
    pub e_entry: Gpa,
    pub segments: Vec<(Gpa, Gpa)>,
    pub pvh_entry: Option<Gpa>,
}

/// The layout of an x86-64 ELF, or why it is none.
pub(super) fn layout(path: &Path, data: &[u8]) -> Result<ElfLayout, LoadError> {
    let path_buf = || path.to_path_buf();
    let malformed = |e: object::Error| LoadError::Malformed(path_buf(), e.to_string());
    let (header, endian) = x86_64_elf(path, data)?;
    let mut segments = Vec::new();
    let mut pvh_entry = None;
    for phdr in header.program_headers(endian, data).map_err(malformed)? {
        match phdr.p_type(endian) {
            elf::PT_LOAD if phdr.p_memsz(endian) > 0 => {
                let start = phdr.p_paddr(endian);
                let Some(end) = start.checked_add(phdr.p_memsz(endian)) else {
                    return Err(LoadError::Malformed(
                        path_buf(),
                        format!("segment at {start:#x} wraps around"),
                    ));
                };
                segments.push((Gpa::new(start), Gpa::new(end)));
            }
            elf::PT_NOTE => {
                if let Some(mut notes) = phdr.notes(endian, data).map_err(malformed)? {
                    while let Some(note) = notes.next().map_err(malformed)? {
                        pvh_entry = pvh_entry_of(path, &note, endian)?.or(pvh_entry);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(ElfLayout {
        e_entry: Gpa::new(header.e_entry(endian)),
        segments,
        pvh_entry,
    })
}

/// The PVH entry and the physical extent of every PT_LOAD segment of an x86-64 ELF.
pub(super) fn inspect(path: &Path, data: &[u8]) -> Result<(Gpa, Vec<(Gpa, Gpa)>), LoadError> {
    let layout = layout(path, data)?;
    let pvh_entry = layout
        .pvh_entry
        .ok_or_else(|| LoadError::NoPvhEntry(path.to_path_buf()))?;
    Ok((pvh_entry, layout.segments))
}

/// Copy the image into guest RAM with linux-loader, which must find the same entry.
pub(super) fn load(path: &Path, entry: Gpa, mem: &GuestMemoryMmap) -> Result<(), LoadError> {
    let mut file = std::fs::File::open(path).map_err(|e| LoadError::Read(path.to_path_buf(), e))?;
    let result = Elf::load(mem, None, &mut file, None)
        .map_err(|e| LoadError::Load(path.to_path_buf(), e.to_string()))?;
    match result.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(found) if found.0 == entry.raw() => Ok(()),
        other => Err(LoadError::Malformed(
            path.to_path_buf(),
            format!("linux-loader read the PVH entry as {other:?}, the note says {entry}"),
        )),
    }
}

type Elf64Header = elf::FileHeader64<object::Endianness>;

/// The ELF header of a 64-bit x86-64 ELF, or what the file is instead.
fn x86_64_elf<'d>(
    path: &Path,
    data: &'d [u8],
) -> Result<(&'d Elf64Header, object::Endianness), LoadError> {
    let path_buf = || path.to_path_buf();
    if data.get(..4) != Some(elf::ELFMAG.as_slice()) {
        return Err(LoadError::NotElf(path_buf(), first_bytes(data)));
    }
    if data.get(ELF_CLASS_OFFSET) != Some(&elf::ELFCLASS64.0) {
        return Err(LoadError::NotElf64(path_buf()));
    }
    let malformed = |e: object::Error| LoadError::Malformed(path_buf(), e.to_string());
    let header = Elf64Header::parse(data).map_err(malformed)?;
    let endian = header.endian().map_err(malformed)?;
    let machine = header.e_machine(endian);
    if machine != elf::EM_X86_64 {
        return Err(LoadError::NotX86(path_buf(), machine.0));
    }
    Ok((header, endian))
}

/// The 32-bit entry a Xen PVH note (XEN_ELFNOTE_PHYS32_ENTRY) gives, if this is one.
fn pvh_entry_of(
    path: &Path,
    note: &object::read::elf::Note<'_, Elf64Header>,
    endian: object::Endianness,
) -> Result<Option<Gpa>, LoadError> {
    if note.name() != b"Xen" || note.n_type(endian).0 != XEN_ELFNOTE_PHYS32_ENTRY {
        return Ok(None);
    }
    let desc = note.desc();
    let bytes: [u8; 4] = desc
        .get(..4)
        .and_then(|d| d.try_into().ok())
        .ok_or_else(|| {
            LoadError::Malformed(
                path.to_path_buf(),
                format!("PVH entry note holds {} bytes, not 4 or 8", desc.len()),
            )
        })?;
    Ok(Some(Gpa::new(u64::from(u32::from_le_bytes(bytes)))))
}

/// Where the module list goes: after `hvm_start_info`, before the memory map.
const MODLIST_AT: u64 = START_INFO + 0x100;
const MODLIST_ENTRY_SIZE: u64 = 32;

/// Write `hvm_start_info`, its memory map, the command line and the module list where the
/// guest expects them; `modules` (the initrd first: Linux takes module 0 as its initrd) are
/// copied above `kernel_end`.
pub(super) fn write_boot_data(
    mem: &GuestMemoryMmap,
    ram: &RamLayout,
    cmdline: &str,
    kernel_end: Gpa,
    modules: &[ModuleArg],
) -> Result<(), LoadError> {
    super::write_cmdline(mem, cmdline)?;
    let modlist = load_modules(mem, ram, kernel_end, modules)?;

    let memmap: Vec<hvm_memmap_table_entry> = ram
        .memory_map()
        .iter()
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
            reserved: 0,
        })
        .collect();
    let start_info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        cmdline_paddr: CMDLINE,
        memmap_paddr: MEMMAP_TABLE,
        memmap_entries: u32::try_from(memmap.len()).unwrap_or(u32::MAX),
        nr_modules: u32::try_from(modlist.len()).unwrap_or(u32::MAX),
        modlist_paddr: if modlist.is_empty() { 0 } else { MODLIST_AT },
        ..Default::default()
    };
    let mut params = BootParams::new(&start_info, Gpa::new(START_INFO).guest_address());
    params.set_sections(&memmap, Gpa::new(MEMMAP_TABLE).guest_address());
    if !modlist.is_empty() {
        params.set_modules(&modlist, Gpa::new(MODLIST_AT).guest_address());
    }
    PvhBootConfigurator::write_bootparams(&params, mem)
        .map_err(|e| LoadError::BootData(e.to_string()))
}

/// Copy the modules above the kernel; their list entries, each command line in the strings
/// area (0 when it has none).
fn load_modules(
    mem: &GuestMemoryMmap,
    ram: &RamLayout,
    kernel_end: Gpa,
    modules: &[ModuleArg],
) -> Result<Vec<hvm_modlist_entry>, LoadError> {
    fit_in_list(modules, (MEMMAP_TABLE - MODLIST_AT) / MODLIST_ENTRY_SIZE)?;
    let mut strings = Strings::new();
    let placed = place_modules(mem, ram, kernel_end, modules)?;
    placed
        .iter()
        .zip(modules)
        .map(|(at, module)| {
            let cmdline_paddr = match module.cmdline.as_str() {
                "" => 0,
                line => u64::from(strings.put(mem, line)?),
            };
            Ok(hvm_modlist_entry {
                paddr: u64::from(at.start),
                size: u64::from(at.end - at.start),
                cmdline_paddr,
                reserved: 0,
            })
        })
        .collect()
}
