//! Loading a kernel: recognising its boot protocol from the file's contents, checking that it
//! fits in guest RAM before anything is copied, then writing the boot data that protocol
//! promises (PVH's start info, Multiboot's information structure) and naming the entry state.

mod multiboot;
mod multiboot_info;
mod pvh;

use crate::addr::Gpa;
use crate::layout::RamLayout;
use abi::boot::{CMDLINE, CMDLINE_MAX, START_INFO};
use std::path::{Path, PathBuf};
use vm_memory::GuestMemoryMmap;

pub use multiboot_info::ModuleArg;

/// The host's boot data (start info or Multiboot information, memory map, strings, command
/// line): no kernel segment may overlap it.
const BOOT_DATA: (u64, u64) = (START_INFO, CMDLINE + CMDLINE_MAX as u64);

/// How the host enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootProtocol {
    /// An x86-64 ELF with a Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY).
    Pvh,
    /// Multiboot 1: a header in the first 8 KiB; ELF32, ELF64, or loaded by its address fields.
    Multiboot,
}

impl std::fmt::Display for BootProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Pvh => "PVH",
            Self::Multiboot => "Multiboot",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("kernel `{path}` does not exist: pass --kernel with the path of a kernel", path = .0.display())]
    Missing(PathBuf),
    #[error("cannot read `{path}`: {error}", path = .0.display(), error = .1)]
    Read(PathBuf, std::io::Error),
    #[error("`{path}` is neither an ELF with a PVH entry note nor a Multiboot kernel (it starts with {start}): see \"Booting your kernel\" in the README", path = .0.display(), start = .1)]
    Unrecognised(PathBuf, String),
    #[error("`{path}` is not an ELF file (it starts with {start}): --boot pvh needs an x86-64 ELF with a PVH entry note", path = .0.display(), start = .1)]
    NotElf(PathBuf, String),
    #[error("`{path}` is a 32-bit ELF: PVH boots x86-64 (ELFCLASS64) kernels; a 32-bit kernel boots through Multiboot", path = .0.display())]
    NotElf64(PathBuf),
    #[error("`{path}` is an ELF for machine {machine}, not x86", path = .0.display(), machine = .1)]
    NotX86(PathBuf, u16),
    #[error("`{path}` is a malformed ELF: {why}", path = .0.display(), why = .1)]
    Malformed(PathBuf, String),
    #[error("`{path}` has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY in a PT_NOTE segment) and no Multiboot header: see \"Booting your kernel\" in the README", path = .0.display())]
    NoPvhEntry(PathBuf),
    #[error("`{path}` has no Multiboot header (magic 0x1badb002, 4-aligned, in the first 8192 bytes)", path = .0.display())]
    NoMultibootHeader(PathBuf),
    #[error("`{path}`: the Multiboot header at file offset {offset:#x} is invalid: {why}", path = .0.display(), offset = .1, why = .2)]
    BadMultibootHeader(PathBuf, usize, String),
    #[error("`{path}` has no loadable (PT_LOAD) segment", path = .0.display())]
    NoSegments(PathBuf),
    #[error("`{path}`: segment [{start:#x}, {end:#x}) lies outside guest RAM ({ram}): raise --mem or link the kernel lower", path = .0.display(), start = .1, end = .2, ram = .3)]
    OutsideRam(PathBuf, u64, u64, String),
    #[error("`{path}`: segment [{start:#x}, {end:#x}) overlaps the host's boot data at [{lo:#x}, {hi:#x}): link the kernel at 1 MiB or above", path = .0.display(), start = .1, end = .2, lo = BOOT_DATA.0, hi = BOOT_DATA.1)]
    OverlapsBootData(PathBuf, u64, u64),
    #[error("`{path}`: the entry point {entry:#x} is not inside a loaded segment", path = .0.display(), entry = .1)]
    EntryOutsideImage(PathBuf, u64),
    #[error("loading `{path}` into guest RAM failed: {error}", path = .0.display(), error = .1)]
    Load(PathBuf, String),
    #[error("the kernel command line is {0} bytes; at most {max} fit", max = CMDLINE_MAX - 1)]
    CmdlineTooLong(usize),
    #[error("the kernel command line `{0}` is not acceptable: {1}")]
    Cmdline(String, linux_loader::cmdline::Error),
    #[error("--module: {0}")]
    Module(String),
    #[error("{protocol} takes no modules: --module works with Multiboot kernels")]
    ModulesUnsupported { protocol: BootProtocol },
    #[error("writing the boot data failed: {0}")]
    BootData(String),
}

/// A checked kernel, ready to be copied into guest RAM.
#[derive(Debug, Clone)]
pub struct KernelImage {
    pub path: PathBuf,
    pub protocol: BootProtocol,
    /// Where the vCPU starts (physical; paging is off at every entry the host offers).
    pub entry: Gpa,
    /// Physical [start, end) of everything loaded, bss included.
    pub segments: Vec<(Gpa, Gpa)>,
    plan: Plan,
}

#[derive(Debug, Clone)]
enum Plan {
    Pvh,
    Multiboot(multiboot::Image),
}

/// The registers a protocol sets at the kernel's 32-bit entry: EAX a magic value (0 for PVH,
/// which has none) and EBX the physical address of the boot data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootEntry {
    pub rip: Gpa,
    pub eax: u32,
    pub ebx: Gpa,
}

impl KernelImage {
    /// Read and check `path`: its protocol (`forced`, else recognised from the contents), and
    /// that what it loads fits in `ram` without touching the host's boot data.
    pub fn inspect(
        path: &Path,
        ram: &RamLayout,
        forced: Option<BootProtocol>,
    ) -> Result<Self, LoadError> {
        let data = read_file(path)?;
        Self::inspect_bytes(path, data, ram, forced)
    }

    pub(crate) fn inspect_bytes(
        path: &Path,
        data: Vec<u8>,
        ram: &RamLayout,
        forced: Option<BootProtocol>,
    ) -> Result<Self, LoadError> {
        let protocol = match forced {
            Some(protocol) => protocol,
            None => recognise(path, &data)?,
        };
        let image = match protocol {
            BootProtocol::Pvh => {
                let (entry, segments) = pvh::inspect(path, &data)?;
                Self {
                    path: path.to_path_buf(),
                    protocol,
                    entry,
                    segments,
                    plan: Plan::Pvh,
                }
            }
            BootProtocol::Multiboot => {
                let image = multiboot::inspect(path, data)?;
                Self {
                    path: path.to_path_buf(),
                    protocol,
                    entry: image.entry,
                    segments: image.segments(),
                    plan: Plan::Multiboot(image),
                }
            }
        };
        check_placement(path, &image.segments, image.entry, ram)?;
        Ok(image)
    }

    /// Copy the kernel (and `modules`) into guest RAM, write the protocol's boot data, and say
    /// how the vCPU enters it.
    pub fn boot(
        &self,
        mem: &GuestMemoryMmap,
        ram: &RamLayout,
        cmdline: &str,
        modules: &[ModuleArg],
    ) -> Result<BootEntry, LoadError> {
        match &self.plan {
            Plan::Pvh => {
                if !modules.is_empty() {
                    return Err(LoadError::ModulesUnsupported {
                        protocol: self.protocol,
                    });
                }
                pvh::load(&self.path, self.entry, mem)?;
                pvh::write_boot_data(mem, ram, cmdline)?;
                Ok(BootEntry {
                    rip: self.entry,
                    eax: 0,
                    ebx: Gpa::new(START_INFO),
                })
            }
            Plan::Multiboot(image) => {
                image.load(&self.path, mem)?;
                let info = multiboot_info::write(mem, ram, image, &self.path, cmdline, modules)?;
                Ok(BootEntry {
                    rip: self.entry,
                    eax: abi::multiboot::BOOTLOADER_MAGIC,
                    ebx: info,
                })
            }
        }
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => LoadError::Missing(path.to_path_buf()),
        _ => LoadError::Read(path.to_path_buf(), e),
    })
}

/// The protocol a file asks for: a PVH note wins (the kernel's 64-bit-friendly entry, and the
/// one Linux prefers), then a Multiboot header.
fn recognise(path: &Path, data: &[u8]) -> Result<BootProtocol, LoadError> {
    if pvh::has_pvh_note(data) {
        return Ok(BootProtocol::Pvh);
    }
    if multiboot::has_header(data) {
        return Ok(BootProtocol::Multiboot);
    }
    // Neither: let the PVH checks say what the file is, when it is an x86-64 ELF.
    if data.starts_with(object::elf::ELFMAG.as_slice()) {
        return Ok(BootProtocol::Pvh);
    }
    Err(LoadError::Unrecognised(
        path.to_path_buf(),
        first_bytes(data),
    ))
}

/// The first four bytes in hex, for errors about files of the wrong kind.
fn first_bytes(data: &[u8]) -> String {
    if data.is_empty() {
        return "nothing: it is empty".into();
    }
    let start: Vec<String> = data.iter().take(4).map(|b| format!("{b:02x}")).collect();
    start.join(" ")
}

/// Write the NUL-terminated command line at [`CMDLINE`], where both protocols point.
fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str) -> Result<Gpa, LoadError> {
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

    Ok(Gpa::new(CMDLINE))
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

#[cfg(test)]
mod test_support {
    use super::*;

    /// 64 MiB of guest RAM, as the loader tests lay it out.
    pub fn ram() -> RamLayout {
        RamLayout::new(64 << 20, None).unwrap()
    }

    pub fn guest_memory(ram: &RamLayout) -> GuestMemoryMmap {
        let ranges: Vec<_> = ram
            .regions()
            .iter()
            .map(|&(b, s)| (b.guest_address(), crate::narrow::to_usize(s)))
            .collect();
        GuestMemoryMmap::from_ranges(&ranges).unwrap()
    }
}
#[cfg(test)]
mod multiboot_tests;
#[cfg(test)]
mod tests;
