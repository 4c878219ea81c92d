//! Loading a kernel: recognising its boot protocol from the file's contents, checking that it
//! fits in guest RAM before anything is copied, then writing the boot data that protocol
//! promises (PVH's start info, Multiboot's information structure, Linux's boot_params) and
//! naming the entry state.

mod disk;
mod linux;
mod multiboot;
mod multiboot2;
mod multiboot2_info;
mod multiboot_info;
mod pvh;
mod vmlinux;

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
    /// Multiboot 2: a header of tags in the first 32 KiB; ELF32, ELF64, or its address tag.
    Multiboot2,
    /// The Linux boot protocol: a bzImage ("HdrS" at 0x202), entered at its 64-bit entry if it
    /// has one, else its 32-bit entry; or an ELF vmlinux, entered at its 64-bit entry.
    Linux,
    /// A raw disk image: its boot sector (ending in 55 AA) runs in real mode at 0x7C00 on the
    /// host's BIOS.
    Disk,
}

impl std::fmt::Display for BootProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Pvh => "PVH",
            Self::Multiboot => "Multiboot",
            Self::Multiboot2 => "Multiboot 2",
            Self::Linux => "Linux",
            Self::Disk => "disk image",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("kernel `{path}` does not exist: pass --kernel with the path of a kernel", path = .0.display())]
    Missing(PathBuf),
    #[error("cannot read `{path}`: {error}", path = .0.display(), error = .1)]
    Read(PathBuf, std::io::Error),
    #[error("`{path}` is neither an ELF with a PVH entry note, a Multiboot kernel, a Linux bzImage nor a disk image (it starts with {start}): see \"Booting your kernel\" in the README", path = .0.display(), start = .1)]
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
    #[error("`{path}` has no Multiboot header (Multiboot 1: magic 0x1badb002, 4-aligned in the first 8 KiB; Multiboot 2: 0xe85250d6, 8-aligned in the first 32 KiB)", path = .0.display())]
    NoMultibootHeader(PathBuf),
    #[error("`{path}`: the Multiboot header at file offset {offset:#x} is invalid: {why}", path = .0.display(), offset = .1, why = .2)]
    BadMultibootHeader(PathBuf, usize, String),
    #[error("`{path}` is not a bzImage the host can boot: {why}", path = .0.display(), why = .1)]
    BadBzImage(PathBuf, String),
    #[error("`{path}` is not a disk image the host can boot: {why}", path = .0.display(), why = .1)]
    BadDiskImage(PathBuf, String),
    #[error(
        "a disk image's boot loader passes the kernel its own command line, modules and initrd: drop {0}"
    )]
    DiskTakesNoFiles(&'static str),
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
    #[error("--initrd: {0}")]
    Initrd(String),
    #[error("a bzImage takes no --module: pass its initrd with --initrd")]
    ModulesUnsupported,
    #[error("{protocol} has no initrd: pass the file as --module FILE[,CMDLINE]")]
    InitrdUnsupported { protocol: BootProtocol },
    #[error("writing the boot data failed: {0}")]
    BootData(String),
}

/// A checked kernel, ready to be copied into guest RAM.
#[derive(Debug, Clone)]
pub struct KernelImage {
    pub path: PathBuf,
    pub protocol: BootProtocol,
    /// Where the vCPU starts (physical: paging is off, or identity-mapped at Linux's 64-bit entry).
    pub entry: Gpa,
    /// Physical [start, end) of everything loaded, bss included.
    pub segments: Vec<(Gpa, Gpa)>,
    plan: Plan,
}

#[derive(Debug, Clone)]
enum Plan {
    Pvh,
    /// Multiboot 1 or 2, as `protocol` says: the same planning, different boot information.
    Multiboot(multiboot::Image),
    Linux(linux::Image),
    /// The whole image: int 13h serves it after the boot sector is loaded.
    Disk(Vec<u8>),
}

/// A GDT the host wrote for the kernel, and the selectors of its flat code and data
/// descriptors (Linux's 32-bit entry asks for 0x10 and 0x18).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryGdt {
    pub base: Gpa,
    pub limit: u16,
    pub code: u16,
    pub data: u16,
}

/// The registers a protocol sets at the kernel's 32-bit entry: EAX a magic value (0 for PVH,
/// which has none), EBX (PVH, Multiboot) or ESI (Linux) the physical address of the boot
/// data, and the GDT when the protocol names its selectors (Linux).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootEntry {
    pub rip: Gpa,
    pub eax: u32,
    pub ebx: Gpa,
    pub esi: u32,
    pub gdt: Option<EntryGdt>,
    pub mode: EntryMode,
}

/// The CPU mode a protocol enters the kernel in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryMode {
    /// 32-bit protected mode, paging off: PVH, Multiboot, Linux's 32-bit entry.
    Protected,
    /// 64-bit long mode on the host's identity-mapping page tables (Linux's 64-bit entry).
    Long { page_tables: Gpa },
    /// Real mode at 0000:`rip`, as a BIOS enters a boot sector: DL the boot drive,
    /// interrupts on.
    Real { drive: u8 },
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
            BootProtocol::Multiboot | BootProtocol::Multiboot2 => {
                let image = if protocol == BootProtocol::Multiboot {
                    multiboot::inspect(path, data)?
                } else {
                    multiboot2::inspect(path, data)?
                };
                Self {
                    path: path.to_path_buf(),
                    protocol,
                    entry: image.entry,
                    segments: image.segments(),
                    plan: Plan::Multiboot(image),
                }
            }
            BootProtocol::Linux => {
                // An ELF is a vmlinux: its 64-bit entry, a setup header of the host's.
                let image = if data.starts_with(object::elf::ELFMAG.as_slice()) {
                    linux::inspect_vmlinux(path, &data)?
                } else {
                    linux::inspect(path, data)?
                };
                Self {
                    path: path.to_path_buf(),
                    protocol,
                    entry: image.entry(),
                    segments: image.segments(),
                    plan: Plan::Linux(image),
                }
            }
            BootProtocol::Disk => {
                disk::inspect(path, &data)?;
                let sector = Gpa::new(disk::BOOT_SECTOR);
                Self {
                    path: path.to_path_buf(),
                    protocol,
                    entry: sector,
                    segments: vec![(sector, Gpa::new(disk::BOOT_SECTOR + 512))],
                    plan: Plan::Disk(data),
                }
            }
        };
        // A boot sector lands at 0x7C00 by definition, and the host writes no boot data for it.
        if protocol != BootProtocol::Disk {
            check_placement(path, &image.segments, image.entry, ram)?;
        }
        Ok(image)
    }

    /// Copy the kernel, `modules` and the `initrd` into guest RAM, write the protocol's boot
    /// data, and say how the vCPU enters it.
    pub fn boot(
        &self,
        mem: &GuestMemoryMmap,
        ram: &RamLayout,
        cmdline: &str,
        files: &BootFiles,
    ) -> Result<BootEntry, LoadError> {
        let modules = files.modules.as_slice();
        match &self.plan {
            Plan::Pvh => {
                pvh::load(&self.path, self.entry, mem)?;
                // check_placement saw at least one segment.
                let kernel_end = self.segments.iter().map(|&(_, end)| end).max();
                let kernel_end = kernel_end.unwrap_or(self.entry);
                let with_initrd: Vec<ModuleArg> = files
                    .initrd
                    .iter()
                    .map(|path| ModuleArg {
                        path: path.clone(),
                        cmdline: String::new(),
                    })
                    .chain(modules.iter().cloned())
                    .collect();
                pvh::write_boot_data(mem, ram, cmdline, kernel_end, &with_initrd)?;
                Ok(BootEntry {
                    rip: self.entry,
                    eax: 0,
                    ebx: Gpa::new(START_INFO),
                    esi: 0,
                    gdt: None,
                    mode: EntryMode::Protected,
                })
            }
            Plan::Multiboot(_) if files.initrd.is_some() => Err(LoadError::InitrdUnsupported {
                protocol: self.protocol,
            }),
            Plan::Multiboot(image) => {
                image.load(&self.path, mem)?;
                let (write, eax) = if self.protocol == BootProtocol::Multiboot {
                    (
                        multiboot_info::write as InfoWriter,
                        abi::multiboot::BOOTLOADER_MAGIC,
                    )
                } else {
                    (
                        multiboot2_info::write as InfoWriter,
                        abi::multiboot2::BOOTLOADER_MAGIC,
                    )
                };
                let ebx = write(mem, ram, image, &self.path, cmdline, modules)?;
                Ok(BootEntry {
                    rip: self.entry,
                    eax,
                    ebx,
                    esi: 0,
                    gdt: None,
                    mode: EntryMode::Protected,
                })
            }
            Plan::Linux(_) if !modules.is_empty() => Err(LoadError::ModulesUnsupported),
            Plan::Linux(image) => {
                image.boot(&self.path, mem, ram, cmdline, files.initrd.as_deref())
            }
            Plan::Disk(data) => {
                self.check_inputs(cmdline, files)?;
                disk::boot(&self.path, data, mem)
            }
        }
    }

    /// Refuse what this kind of kernel cannot be given, before a VM is made: a disk image's
    /// own boot loader passes its kernel a command line, modules and an initrd.
    pub fn check_inputs(&self, cmdline: &str, files: &BootFiles) -> Result<(), LoadError> {
        if !matches!(self.plan, Plan::Disk(_)) {
            return Ok(());
        }
        if !cmdline.trim().is_empty() {
            return Err(LoadError::DiskTakesNoFiles("--cmdline"));
        }
        if !files.modules.is_empty() {
            return Err(LoadError::DiskTakesNoFiles("--module"));
        }
        if files.initrd.is_some() {
            return Err(LoadError::DiskTakesNoFiles("--initrd"));
        }
        Ok(())
    }

    /// The boot disk the BIOS serves, for a disk image.
    pub fn disk(&self) -> Option<crate::bios::Disk> {
        match &self.plan {
            Plan::Disk(data) => Some(crate::bios::Disk::new(data.clone())),
            _ => None,
        }
    }
}

/// The files loaded next to the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootFiles {
    /// `--module`: Multiboot modules, or PVH modules after the initrd.
    pub modules: Vec<ModuleArg>,
    /// `--initrd`: a bzImage's initrd, or PVH's module 0 (which Linux takes as its initrd).
    pub initrd: Option<PathBuf>,
}

/// Writes a Multiboot protocol's boot information; its address.
type InfoWriter = fn(
    &GuestMemoryMmap,
    &RamLayout,
    &multiboot::Image,
    &Path,
    &str,
    &[ModuleArg],
) -> Result<Gpa, LoadError>;

fn read_file(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => LoadError::Missing(path.to_path_buf()),
        _ => LoadError::Read(path.to_path_buf(), e),
    })
}

/// The protocol a file asks for: a PVH note wins (the kernel's 64-bit-friendly entry, and the
/// one Linux prefers), then a bzImage's setup header, then a Multiboot 2 header (richer boot
/// information), then Multiboot 1, then a boot sector's signature (a bzImage has one too).
fn recognise(path: &Path, data: &[u8]) -> Result<BootProtocol, LoadError> {
    if pvh::has_pvh_note(data) {
        return Ok(BootProtocol::Pvh);
    }
    if linux::has_header(data) {
        return Ok(BootProtocol::Linux);
    }
    if multiboot2::has_header(data) {
        return Ok(BootProtocol::Multiboot2);
    }
    if multiboot::has_header(data) {
        return Ok(BootProtocol::Multiboot);
    }
    if disk::has_boot_signature(data) {
        return Ok(BootProtocol::Disk);
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
    use object::elf;

    /// 64 MiB of guest RAM, as the loader tests lay it out.
    pub fn ram() -> RamLayout {
        RamLayout::new(64 << 20, None).unwrap()
    }

    /// The bundled guest-kernel, checked for `protocol` in 128 MiB, and that RAM.
    pub fn bundled(protocol: Option<BootProtocol>) -> (KernelImage, RamLayout) {
        let path = Path::new(crate::GUEST_KERNEL_ELF);
        let ram = RamLayout::new(128 << 20, None).unwrap();
        let data = std::fs::read(path).unwrap();
        let kernel = KernelImage::inspect_bytes(path, data, &ram, protocol).unwrap();
        (kernel, ram)
    }

    /// `--module` files and no initrd.
    pub fn modules(modules: &[ModuleArg]) -> BootFiles {
        BootFiles {
            modules: modules.to_vec(),
            initrd: None,
        }
    }

    pub fn guest_memory(ram: &RamLayout) -> GuestMemoryMmap {
        let ranges: Vec<_> = ram
            .regions()
            .iter()
            .map(|&(b, s)| (b.guest_address(), crate::narrow::to_usize(s)))
            .collect();
        GuestMemoryMmap::from_ranges(&ranges).unwrap()
    }

    /// A minimal ELF64 image: header, program headers, and their contents.
    pub fn elf(machine: elf::Machine, phdrs: &[(elf::ProgramType, u64, u64, Vec<u8>)]) -> Vec<u8> {
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
}
#[cfg(test)]
mod linux_tests;
#[cfg(test)]
mod multiboot2_tests;
#[cfg(test)]
mod multiboot_tests;
#[cfg(test)]
mod tests;
