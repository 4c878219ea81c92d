//! Loading a kernel: checking the ELF says what we need before linux-loader copies it into
//! guest RAM, then writing the PVH start info, memory map and command line.

use crate::addr::Gpa;
use crate::layout::RamLayout;
use abi::boot::{CMDLINE, CMDLINE_MAX, MEMMAP_TABLE, START_INFO};
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::elf::start_info::{
    XEN_HVM_START_MAGIC_VALUE, hvm_memmap_table_entry, hvm_start_info,
};
use linux_loader::loader::{Elf, KernelLoader, PvhBootCapability};
use object::elf;
use object::read::elf::{FileHeader, ProgramHeader};
use std::path::{Path, PathBuf};
use vm_memory::GuestMemoryMmap;

/// XEN_ELFNOTE_PHYS32_ENTRY: the note type that holds a PVH kernel's 32-bit entry point.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// The host's PVH boot data: start info, memory map table and command line.
const BOOT_DATA: (u64, u64) = (START_INFO, CMDLINE + CMDLINE_MAX as u64);
/// `e_ident[EI_CLASS]`.
const ELF_CLASS_OFFSET: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("kernel `{path}` does not exist: pass --kernel with the path of an ELF kernel", path = .0.display())]
    Missing(PathBuf),
    #[error("cannot read kernel `{path}`: {error}", path = .0.display(), error = .1)]
    Read(PathBuf, std::io::Error),
    #[error("`{path}` is not an ELF file (it starts with {start}): vmm-host boots ELF kernels with a PVH entry note", path = .0.display(), start = .1)]
    NotElf(PathBuf, String),
    #[error("`{path}` is a 32-bit ELF: vmm-host boots x86-64 (ELFCLASS64) kernels", path = .0.display())]
    NotElf64(PathBuf),
    #[error("`{path}` is an ELF for machine {machine}, not x86-64 (62)", path = .0.display(), machine = .1)]
    NotX86_64(PathBuf, u16),
    #[error("`{path}` is a malformed ELF: {why}", path = .0.display(), why = .1)]
    Malformed(PathBuf, String),
    #[error("`{path}` has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY in a PT_NOTE segment): see \"Boot protocol\" in the README", path = .0.display())]
    NoPvhEntry(PathBuf),
    #[error("`{path}` has no loadable (PT_LOAD) segment", path = .0.display())]
    NoSegments(PathBuf),
    #[error("`{path}`: segment [{start:#x}, {end:#x}) lies outside guest RAM ({ram}): raise --mem or link the kernel lower", path = .0.display(), start = .1, end = .2, ram = .3)]
    OutsideRam(PathBuf, u64, u64, String),
    #[error("`{path}`: segment [{start:#x}, {end:#x}) overlaps the PVH boot data at [{lo:#x}, {hi:#x}): link the kernel at 1 MiB or above", path = .0.display(), start = .1, end = .2, lo = BOOT_DATA.0, hi = BOOT_DATA.1)]
    OverlapsBootData(PathBuf, u64, u64),
    #[error("`{path}`: the PVH entry {entry:#x} is not inside a loaded segment", path = .0.display(), entry = .1)]
    EntryOutsideImage(PathBuf, u64),
    #[error("loading `{path}` into guest RAM failed: {error}", path = .0.display(), error = .1)]
    Load(PathBuf, linux_loader::loader::Error),
    #[error("the kernel command line is {0} bytes; at most {max} fit", max = CMDLINE_MAX - 1)]
    CmdlineTooLong(usize),
    #[error("the kernel command line `{0}` is not acceptable: {1}")]
    Cmdline(String, linux_loader::cmdline::Error),
    #[error("writing the PVH boot data failed: {0}")]
    BootData(String),
}

/// A checked kernel ELF.
#[derive(Debug, Clone)]
pub struct KernelImage {
    pub path: PathBuf,
    pub pvh_entry: Gpa,
    /// Physical [start, end) of every PT_LOAD segment.
    pub segments: Vec<(Gpa, Gpa)>,
}

impl KernelImage {
    /// Read and check `path`: an x86-64 ELF with a PVH entry note whose segments fit in `ram`
    /// without touching the host's boot data.
    pub fn inspect(path: &Path, ram: &RamLayout) -> Result<Self, LoadError> {
        let data = std::fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => LoadError::Missing(path.to_path_buf()),
            _ => LoadError::Read(path.to_path_buf(), e),
        })?;
        Self::inspect_bytes(path, &data, ram)
    }

    pub(crate) fn inspect_bytes(
        path: &Path,
        data: &[u8],
        ram: &RamLayout,
    ) -> Result<Self, LoadError> {
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
        let pvh_entry = pvh_entry.ok_or_else(|| LoadError::NoPvhEntry(path_buf()))?;
        check_placement(path, &segments, pvh_entry, ram)?;
        Ok(Self {
            path: path_buf(),
            pvh_entry,
            segments,
        })
    }

    /// Copy the image into guest RAM with linux-loader.
    pub fn load(&self, mem: &GuestMemoryMmap) -> Result<(), LoadError> {
        let mut file =
            std::fs::File::open(&self.path).map_err(|e| LoadError::Read(self.path.clone(), e))?;
        let result = Elf::load(mem, None, &mut file, None)
            .map_err(|e| LoadError::Load(self.path.clone(), e))?;
        match result.pvh_boot_cap {
            PvhBootCapability::PvhEntryPresent(entry) if entry.0 == self.pvh_entry.raw() => Ok(()),
            other => Err(LoadError::Malformed(
                self.path.clone(),
                format!(
                    "linux-loader read the PVH entry as {other:?}, the note says {}",
                    self.pvh_entry
                ),
            )),
        }
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
        let start: Vec<String> = data.iter().take(4).map(|b| format!("{b:02x}")).collect();
        let start = if start.is_empty() {
            "nothing: it is empty".into()
        } else {
            start.join(" ")
        };
        return Err(LoadError::NotElf(path_buf(), start));
    }
    if data.get(ELF_CLASS_OFFSET) != Some(&elf::ELFCLASS64.0) {
        return Err(LoadError::NotElf64(path_buf()));
    }
    let malformed = |e: object::Error| LoadError::Malformed(path_buf(), e.to_string());
    let header = Elf64Header::parse(data).map_err(malformed)?;
    let endian = header.endian().map_err(malformed)?;
    let machine = header.e_machine(endian);
    if machine != elf::EM_X86_64 {
        return Err(LoadError::NotX86_64(path_buf(), machine.0));
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

/// Every segment in RAM and clear of the host's boot data, and the entry inside one.
fn check_placement(
    path: &Path,
    segments: &[(Gpa, Gpa)],
    entry: Gpa,
    ram: &RamLayout,
) -> Result<(), LoadError> {
    let path_buf = || path.to_path_buf();
    if segments.is_empty() {
        return Err(LoadError::NoSegments(path_buf()));
    }
    for &(start, end) in segments {
        if !ram.contains(start, end.raw() - start.raw()) {
            return Err(LoadError::OutsideRam(
                path_buf(),
                start.raw(),
                end.raw(),
                ram.to_string(),
            ));
        }
        if start.raw() < BOOT_DATA.1 && end.raw() > BOOT_DATA.0 {
            return Err(LoadError::OverlapsBootData(
                path_buf(),
                start.raw(),
                end.raw(),
            ));
        }
    }
    if !segments
        .iter()
        .any(|&(start, end)| start <= entry && entry < end)
    {
        return Err(LoadError::EntryOutsideImage(path_buf(), entry.raw()));
    }
    Ok(())
}

/// Write `hvm_start_info`, its memory map and the command line where the guest expects them.
pub fn write_boot_data(
    mem: &GuestMemoryMmap,
    ram: &RamLayout,
    cmdline: &str,
) -> Result<(), LoadError> {
    if cmdline.len() >= CMDLINE_MAX {
        return Err(LoadError::CmdlineTooLong(cmdline.len()));
    }
    let mut line = linux_loader::cmdline::Cmdline::new(CMDLINE_MAX)
        .map_err(|e| LoadError::Cmdline(cmdline.to_string(), e))?;
    if !cmdline.trim().is_empty() {
        line.insert_str(cmdline.trim())
            .map_err(|e| LoadError::Cmdline(cmdline.to_string(), e))?;
    }
    linux_loader::loader::load_cmdline(mem, Gpa::new(CMDLINE).guest_address(), &line)
        .map_err(|e| LoadError::BootData(format!("command line: {e}")))?;

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
        ..Default::default()
    };
    let mut params = BootParams::new(&start_info, Gpa::new(START_INFO).guest_address());
    params.set_sections(&memmap, Gpa::new(MEMMAP_TABLE).guest_address());
    PvhBootConfigurator::write_bootparams(&params, mem)
        .map_err(|e| LoadError::BootData(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi::start_info::{MEMMAP_ENTRY_SIZE, MemmapEntry, START_INFO_SIZE, StartInfo};
    use vm_memory::Bytes;

    fn ram() -> RamLayout {
        RamLayout::new(64 << 20, None).unwrap()
    }

    fn guest_memory(ram: &RamLayout) -> GuestMemoryMmap {
        let ranges: Vec<_> = ram
            .regions()
            .iter()
            .map(|&(b, s)| (b.guest_address(), s as usize))
            .collect();
        GuestMemoryMmap::from_ranges(&ranges).unwrap()
    }

    #[test]
    fn the_guest_parser_reads_what_linux_loader_writes() {
        let ram = ram();
        let mem = guest_memory(&ram);
        write_boot_data(&mem, &ram, "test=hello log=quiet").unwrap();

        let mut info = [0u8; START_INFO_SIZE];
        mem.read_slice(&mut info, Gpa::new(START_INFO).guest_address())
            .unwrap();
        let info = StartInfo::parse(&info).unwrap();
        assert_eq!(info.cmdline_paddr, CMDLINE);
        assert_eq!(info.memmap_paddr, MEMMAP_TABLE);
        let map = ram.memory_map();
        assert_eq!(info.memmap_entries as usize, map.len());

        let mut table = vec![0u8; map.len() * MEMMAP_ENTRY_SIZE];
        mem.read_slice(&mut table, Gpa::new(MEMMAP_TABLE).guest_address())
            .unwrap();
        let parsed: Vec<MemmapEntry> = (0..map.len())
            .filter_map(|i| MemmapEntry::parse(&table, i))
            .collect();
        assert_eq!(parsed, map);

        let mut line = [0u8; 21];
        mem.read_slice(&mut line, Gpa::new(CMDLINE).guest_address())
            .unwrap();
        assert_eq!(&line, b"test=hello log=quiet\0");
    }

    #[test]
    fn refuses_overlong_and_unprintable_command_lines() {
        let ram = ram();
        let mem = guest_memory(&ram);
        let long = "x".repeat(CMDLINE_MAX);
        assert!(matches!(
            write_boot_data(&mem, &ram, &long),
            Err(LoadError::CmdlineTooLong(4096))
        ));
        assert!(matches!(
            write_boot_data(&mem, &ram, "a\u{7}b"),
            Err(LoadError::Cmdline(..))
        ));
    }

    /// A minimal ELF64 image: header, program headers, and their contents.
    fn elf(machine: elf::Machine, phdrs: &[(elf::ProgramType, u64, u64, Vec<u8>)]) -> Vec<u8> {
        let ph_off = 64usize;
        let mut data_off = ph_off + phdrs.len() * 56;
        let mut out = vec![0u8; data_off];
        out[..4].copy_from_slice(elf::ELFMAG.as_slice());
        out[4] = elf::ELFCLASS64.0;
        out[5] = elf::ELFDATA2LSB.0;
        out[6] = 1;
        out[16..18].copy_from_slice(&elf::ET_EXEC.0.to_le_bytes());
        out[18..20].copy_from_slice(&machine.0.to_le_bytes());
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[32..40].copy_from_slice(&(ph_off as u64).to_le_bytes());
        out[52..54].copy_from_slice(&64u16.to_le_bytes());
        out[54..56].copy_from_slice(&56u16.to_le_bytes());
        out[56..58].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
        let mut contents = Vec::new();
        for (i, (kind, paddr, memsz, bytes)) in phdrs.iter().enumerate() {
            let p = ph_off + i * 56;
            out[p..p + 4].copy_from_slice(&kind.0.to_le_bytes());
            out[p + 8..p + 16].copy_from_slice(&(data_off as u64).to_le_bytes());
            out[p + 16..p + 24].copy_from_slice(&paddr.to_le_bytes());
            out[p + 24..p + 32].copy_from_slice(&paddr.to_le_bytes());
            out[p + 32..p + 40].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
            out[p + 40..p + 48].copy_from_slice(&memsz.to_le_bytes());
            out[p + 48..p + 56].copy_from_slice(&4u64.to_le_bytes());
            data_off += bytes.len();
            contents.extend_from_slice(bytes);
        }
        out.extend(contents);
        out
    }

    fn pvh_note(entry: u64) -> Vec<u8> {
        let mut note = Vec::new();
        for word in [4u32, 8, XEN_ELFNOTE_PHYS32_ENTRY] {
            note.extend(word.to_le_bytes());
        }
        note.extend(b"Xen\0");
        note.extend(entry.to_le_bytes());
        note
    }

    fn inspect(data: &[u8]) -> Result<KernelImage, LoadError> {
        KernelImage::inspect_bytes(Path::new("k.elf"), data, &ram())
    }

    #[test]
    fn accepts_a_pvh_kernel() {
        let image = elf(
            elf::EM_X86_64,
            &[
                (elf::PT_LOAD, 0x10_0000, 0x2000, vec![0xf4; 16]),
                (elf::PT_NOTE, 0, 0, pvh_note(0x10_0000)),
            ],
        );
        let kernel = inspect(&image).unwrap();
        assert_eq!(kernel.pvh_entry, Gpa::new(0x10_0000));
        assert_eq!(
            kernel.segments,
            vec![(Gpa::new(0x10_0000), Gpa::new(0x10_2000))]
        );
    }

    #[test]
    fn explains_each_bad_kernel() {
        let note = (elf::PT_NOTE, 0, 0, pvh_note(0x10_0000));
        let load = |paddr: u64, size: u64| (elf::PT_LOAD, paddr, size, vec![0u8; 4]);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                Vec::new(),
                "is not an ELF file (it starts with nothing: it is empty)",
            ),
            (
                b"#!/bin/sh\n".to_vec(),
                "is not an ELF file (it starts with 23 21 2f 62)",
            ),
            (
                {
                    let mut e = elf(elf::EM_X86_64, &[]);
                    e[4] = elf::ELFCLASS32.0;
                    e
                },
                "is a 32-bit ELF",
            ),
            (
                elf(elf::EM_AARCH64, &[load(0x10_0000, 0x1000), note.clone()]),
                "machine 183, not x86-64",
            ),
            (
                elf(elf::EM_X86_64, &[load(0x10_0000, 0x1000)]),
                "has no PVH entry note",
            ),
            (
                elf(elf::EM_X86_64, std::slice::from_ref(&note)),
                "has no loadable (PT_LOAD) segment",
            ),
            (
                elf(elf::EM_X86_64, &[load(0x3fff_f000, 0x2000), note.clone()]),
                "segment [0x3ffff000, 0x40001000) lies outside guest RAM (64 MiB of RAM at [0x0, 0x4000000))",
            ),
            (
                elf(elf::EM_X86_64, &[load(0x8000, 0x1000), note.clone()]),
                "overlaps the PVH boot data at [0x6000, 0xa000)",
            ),
            (
                elf(elf::EM_X86_64, &[load(0x20_0000, 0x1000), note.clone()]),
                "the PVH entry 0x100000 is not inside a loaded segment",
            ),
            (
                elf(elf::EM_X86_64, &[load(u64::MAX - 4, 0x1000), note]),
                "segment at 0xfffffffffffffffb wraps around",
            ),
        ];
        for (image, expected) in cases {
            let message = inspect(&image).unwrap_err().to_string();
            assert!(
                message.contains(expected),
                "{message:?} should contain {expected:?}"
            );
            assert!(!message.contains('\n'), "one line: {message:?}");
        }
    }

    #[test]
    fn empty_segments_and_other_xen_notes_are_ignored_and_a_missing_file_is_named() {
        let mut other_note = pvh_note(0x10_0000);
        other_note[8..12].copy_from_slice(&17u32.to_le_bytes()); // XEN_ELFNOTE_... not 18
        let image = elf(
            elf::EM_X86_64,
            &[
                (elf::PT_LOAD, 0x10_0000, 0x2000, vec![0xf4; 16]),
                // Nothing to load: where it claims to be does not matter.
                (elf::PT_LOAD, 0x3fff_ffff_0000, 0, Vec::new()),
                (elf::PT_NOTE, 0, 0, pvh_note(0x10_0000)),
            ],
        );
        assert_eq!(inspect(&image).unwrap().segments.len(), 1);
        let only_other = elf(
            elf::EM_X86_64,
            &[
                (elf::PT_LOAD, 0x10_0000, 0x2000, vec![0xf4; 16]),
                (elf::PT_NOTE, 0, 0, other_note),
            ],
        );
        assert!(matches!(
            inspect(&only_other),
            Err(LoadError::NoPvhEntry(..))
        ));
        assert!(matches!(
            KernelImage::inspect(Path::new("/nonexistent/k.elf"), &ram()),
            Err(LoadError::Missing(..))
        ));
    }

    #[test]
    fn segments_may_touch_the_boot_data_and_the_end_of_ram_but_not_cross_them() {
        let note = (elf::PT_NOTE, 0, 0, pvh_note(0x10_0000));
        let kernel = (elf::PT_LOAD, 0x10_0000, 0x1000, vec![0xf4; 4]);
        let load = |paddr: u64, size: u64| (elf::PT_LOAD, paddr, size, vec![0u8; 4]);
        for edge in [
            load(0x5000, 0x1000),     // ends where the boot data starts
            load(0xa000, 0x1000),     // starts where it ends
            load(0x3ff_f000, 0x1000), // ends at the end of the 64 MiB of RAM
        ] {
            let image = elf(elf::EM_X86_64, &[kernel.clone(), edge, note.clone()]);
            assert!(inspect(&image).is_ok(), "{:?}", inspect(&image).err());
        }
        // The entry is the first byte of its segment, never the byte past its end.
        let at_end = elf(
            elf::EM_X86_64,
            &[kernel.clone(), (elf::PT_NOTE, 0, 0, pvh_note(0x10_1000))],
        );
        assert!(matches!(
            inspect(&at_end),
            Err(LoadError::EntryOutsideImage(..))
        ));
    }

    #[test]
    fn a_segment_crossing_the_end_of_ram_is_refused_and_a_good_one_is_loaded_where_it_says() {
        let note = (elf::PT_NOTE, 0, 0, pvh_note(0x10_0000));
        let crossing = elf(
            elf::EM_X86_64,
            &[(elf::PT_LOAD, 0x3ff_f000, 0x2000, vec![0; 4]), note.clone()],
        );
        let message = inspect(&crossing).unwrap_err().to_string();
        assert!(message.contains("lies outside guest RAM"), "{message}");

        let image = elf(
            elf::EM_X86_64,
            &[
                (elf::PT_LOAD, 0x10_0000, 0x1000, vec![0xf4, 0xeb, 0xfe]),
                note,
            ],
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.elf");
        std::fs::write(&path, &image).unwrap();
        let ram = ram();
        let kernel = KernelImage::inspect(&path, &ram).unwrap();
        let mem = guest_memory(&ram);
        kernel.load(&mem).unwrap();
        let mut bytes = [0u8; 3];
        mem.read_slice(&mut bytes, Gpa::new(0x10_0000).guest_address())
            .unwrap();
        assert_eq!(bytes, [0xf4, 0xeb, 0xfe]);
        // The note said one entry, linux-loader another: refused, not booted at random.
        let mut other = kernel;
        other.pvh_entry = Gpa::new(0x10_0004);
        assert!(matches!(other.load(&mem), Err(LoadError::Malformed(..))));
    }

    #[test]
    fn truncated_headers_are_malformed_not_a_panic() {
        let image = elf(
            elf::EM_X86_64,
            &[(elf::PT_LOAD, 0x10_0000, 0x1000, vec![0; 4])],
        );
        for len in 5..image.len() {
            let _ = inspect(&image[..len]);
        }
        assert!(matches!(
            inspect(&image[..70]),
            Err(LoadError::Malformed(..))
        ));
    }
}
