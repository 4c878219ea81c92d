//! What the loader told us at boot — PVH's start info or Multiboot's information structure —
//! turned into BoxKernel's E820 map at 0x500 and a command line.

use abi::boot::{CMDLINE_MAX, E820_MAP, E820_MAX_ENTRIES};
use abi::multiboot::{self, info_flags};
use abi::start_info::{MEMMAP_ENTRY_SIZE, MemmapEntry, START_INFO_SIZE, StartInfo, StartInfoError};
use core::fmt;

/// The protocol that entered the kernel, told apart by the magic its entry stub passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Pvh,
    Multiboot,
    Multiboot2,
    Linux,
}

impl Protocol {
    pub fn from_magic(magic: u32) -> Option<Self> {
        match magic {
            abi::start_info::MAGIC => Some(Self::Pvh),
            multiboot::BOOTLOADER_MAGIC => Some(Self::Multiboot),
            abi::multiboot2::BOOTLOADER_MAGIC => Some(Self::Multiboot2),
            abi::linux::ENTRY_MAGIC => Some(Self::Linux),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Pvh => "PVH",
            Self::Multiboot => "Multiboot",
            Self::Multiboot2 => "Multiboot 2",
            Self::Linux => "Linux",
        }
    }
}

/// Size of one BIOS-style E820 entry: base, length, type.
const E820_ENTRY_SIZE: usize = 20;

#[derive(Debug)]
pub enum BootError {
    StartInfo(StartInfoError),
    NoMemoryMap { version: u32 },
    UnknownMagic(u32),
    MultibootTooShort,
    MultibootNoMemoryMap { flags: u32 },
    BootParams(abi::linux::BootParamsError),
    CmdlineNotUtf8,
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::StartInfo(StartInfoError::BadMagic(m)) => {
                write!(
                    f,
                    "hvm_start_info magic is {m:#x}, expected {:#x}",
                    abi::start_info::MAGIC
                )
            }
            Self::StartInfo(e) => write!(f, "hvm_start_info unreadable: {e:?}"),
            Self::NoMemoryMap { version } => {
                write!(f, "hvm_start_info version {version} carries no memory map")
            }
            Self::UnknownMagic(magic) => write!(
                f,
                "entered with magic {magic:#x}: neither PVH nor Multiboot ({:#x})",
                multiboot::BOOTLOADER_MAGIC
            ),
            Self::MultibootTooShort => f.write_str("the Multiboot information is cut short"),
            Self::MultibootNoMemoryMap { flags } => write!(
                f,
                "the Multiboot information (flags {flags:#x}) carries no memory map"
            ),
            Self::BootParams(abi::linux::BootParamsError::NoHeader(found)) => write!(
                f,
                "boot_params holds {found:#x} where the setup header's \"HdrS\" should be"
            ),
            Self::BootParams(e) => write!(f, "boot_params unreadable: {e:?}"),
            Self::CmdlineNotUtf8 => f.write_str("the command line is not UTF-8"),
        }
    }
}

pub struct BootInfo {
    pub protocol: Protocol,
    /// Where the start info or the Multiboot information was.
    pub info_paddr: u64,
    /// PVH: the start info's version. Linux: the boot protocol's (0x020f is 2.15). Multiboot: 0.
    pub version: u32,
    /// Multiboot: the boot loader's name, when it gave one.
    pub loader: &'static str,
    pub cmdline: &'static str,
    /// Entries the host gave; more than [`E820_MAX_ENTRIES`] are dropped (and counted here).
    pub dropped_entries: usize,
    entries: usize,
}

/// Bytes at a physical address inside the boot identity map.
///
/// # Safety
/// `paddr..paddr+len` must be identity-mapped RAM that nothing writes while the slice lives.
unsafe fn phys_bytes(paddr: u64, len: usize) -> &'static [u8] {
    // SAFETY: guaranteed by the caller.
    unsafe { core::slice::from_raw_parts(paddr as *const u8, len) }
}

/// The command line, copied out of the loader's memory: QEMU's Multiboot loader puts its
/// information right after the kernel's bss, in frames the PMM hands out.
static mut CMDLINE_COPY: [u8; CMDLINE_MAX] = [0; CMDLINE_MAX];

/// The NUL-terminated string at `paddr` (at most [`CMDLINE_MAX`] bytes), copied to
/// [`CMDLINE_COPY`].
fn keep_cmdline(paddr: u64) -> Result<&'static str, BootError> {
    if paddr == 0 {
        return Ok("");
    }
    // SAFETY: loaders write the command line in low RAM, inside the 32 MiB identity map.
    let raw = unsafe { phys_bytes(paddr, CMDLINE_MAX) };
    let len = raw.iter().position(|&b| b == 0).unwrap_or(CMDLINE_MAX);
    let copy: *mut u8 = (&raw mut CMDLINE_COPY).cast();
    // SAFETY: called once, during boot, on the only CPU, before anything reads the copy; only
    // shared references to it exist afterwards. `len` is at most the copy's size.
    let kept = unsafe {
        core::ptr::copy_nonoverlapping(raw.as_ptr(), copy, len);
        core::slice::from_raw_parts(copy, len)
    };
    core::str::from_utf8(kept).map_err(|_| BootError::CmdlineNotUtf8)
}

/// GRUB and QEMU start a Multiboot command line with the image's name: a first word without
/// `=` is that name.
fn without_image_name(line: &'static str) -> &'static str {
    match line.split_once(' ') {
        Some((first, rest)) if !first.contains('=') => rest.trim_start(),
        None if !line.contains('=') => "",
        _ => line,
    }
}

/// The NUL-terminated string at `paddr`, in place (at most 256 bytes; not UTF-8: empty).
fn c_string(paddr: u64) -> &'static str {
    if paddr == 0 {
        return "";
    }
    // SAFETY: loaders write their strings in low RAM, inside the 32 MiB identity map.
    let raw = unsafe { phys_bytes(paddr, 256) };
    let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    core::str::from_utf8(&raw[..len]).unwrap_or("")
}

impl BootInfo {
    /// Read the boot data the entry stub found in EBX, as the protocol `magic` names.
    pub fn read(paddr: u32, magic: u32) -> Result<Self, BootError> {
        match Protocol::from_magic(magic) {
            Some(Protocol::Pvh) => Self::read_pvh(paddr),
            Some(Protocol::Multiboot) => Self::read_multiboot(paddr),
            Some(Protocol::Multiboot2) => Self::read_multiboot2(paddr),
            Some(Protocol::Linux) => Self::read_linux(paddr),
            None => Err(BootError::UnknownMagic(magic)),
        }
    }

    /// Read the Multiboot information at `paddr` and copy its memory map to the E820 area.
    /// GRUB and QEMU start the command line with the image's name: a first word without `=`
    /// is that name, and dropped.
    fn read_multiboot(paddr: u32) -> Result<Self, BootError> {
        let paddr = u64::from(paddr);
        // SAFETY: Multiboot loaders put the information in low RAM, inside the identity map.
        let info = multiboot::Info::parse(unsafe { phys_bytes(paddr, multiboot::INFO_SIZE) })
            .map_err(|_| BootError::MultibootTooShort)?;
        if info.flags & info_flags::MEMORY_MAP == 0 {
            return Err(BootError::MultibootNoMemoryMap { flags: info.flags });
        }
        // SAFETY: the memory map lies in low RAM where the loader wrote it.
        let map = unsafe { phys_bytes(u64::from(info.mmap_addr), info.mmap_length as usize) };
        let mut count = 0;
        for entry in multiboot::mmap_entries(map) {
            if count < E820_MAX_ENTRIES {
                write_e820(count, &entry);
            }
            count += 1;
        }
        let cmdline = without_image_name(keep_cmdline(u64::from(info.cmdline_paddr))?);
        let kept = count.min(E820_MAX_ENTRIES);
        Ok(Self {
            protocol: Protocol::Multiboot,
            info_paddr: paddr,
            version: 0,
            loader: c_string(u64::from(info.boot_loader_name_paddr)),
            cmdline,
            dropped_entries: count - kept,
            entries: kept,
        })
    }

    /// Read the Multiboot 2 boot information at `paddr`: its tags give the command line (the
    /// image's name dropped, as for Multiboot 1), the loader's name and the memory map.
    fn read_multiboot2(paddr: u32) -> Result<Self, BootError> {
        use abi::multiboot2::{info_tag, mmap_entries, tag_string, tags};
        let paddr = u64::from(paddr);
        // SAFETY: Multiboot 2 loaders put the information in low RAM, inside the identity map;
        // its first word is its size, read before the rest.
        let total = unsafe { phys_bytes(paddr, 4) };
        let total = u32::from_le_bytes([total[0], total[1], total[2], total[3]]).min(0x1_0000);
        // SAFETY: as above, `total` bytes (at most 64 KiB) from the same place.
        let mbi = unsafe { phys_bytes(paddr, total as usize) };
        let (mut count, mut line, mut loader) = (0, "", "");
        for tag in tags(mbi) {
            match tag.kind {
                info_tag::CMDLINE => line = keep_cmdline(tag.body.as_ptr() as u64)?,
                info_tag::LOADER_NAME => {
                    loader = core::str::from_utf8(tag_string(tag.body, 0)).unwrap_or("")
                }
                info_tag::MEMORY_MAP => {
                    for entry in mmap_entries(tag.body) {
                        if count < E820_MAX_ENTRIES {
                            write_e820(count, &entry);
                        }
                        count += 1;
                    }
                }
                _ => {}
            }
        }
        if count == 0 {
            return Err(BootError::MultibootNoMemoryMap { flags: 0 });
        }
        let kept = count.min(E820_MAX_ENTRIES);
        Ok(Self {
            protocol: Protocol::Multiboot2,
            info_paddr: paddr,
            version: 2,
            loader,
            cmdline: without_image_name(line),
            dropped_entries: count - kept,
            entries: kept,
        })
    }

    /// Read the Linux boot protocol's `boot_params` at `paddr`: its E820 table and the command
    /// line `cmd_line_ptr` points at. `version` is the protocol version (0x020f for 2.15).
    fn read_linux(paddr: u32) -> Result<Self, BootError> {
        let paddr = u64::from(paddr);
        // SAFETY: the loader puts boot_params in low RAM, inside the 32 MiB identity map.
        let bytes = unsafe { phys_bytes(paddr, abi::linux::BOOT_PARAMS_SIZE) };
        let params = abi::linux::BootParams::parse(bytes).map_err(BootError::BootParams)?;
        let mut count = 0;
        for entry in params.memory_map() {
            if count < E820_MAX_ENTRIES {
                write_e820(count, &entry);
            }
            count += 1;
        }
        let kept = count.min(E820_MAX_ENTRIES);
        Ok(Self {
            protocol: Protocol::Linux,
            info_paddr: paddr,
            version: u32::from(params.version),
            loader: "",
            cmdline: keep_cmdline(u64::from(params.cmd_line_ptr))?,
            dropped_entries: count - kept,
            entries: kept,
        })
    }

    /// Read the start info at `paddr` and copy its memory map to the E820 area.
    fn read_pvh(paddr: u32) -> Result<Self, BootError> {
        let paddr = u64::from(paddr);
        // SAFETY: the PVH protocol puts start_info in low RAM, inside the 32 MiB identity map.
        let info = StartInfo::parse(unsafe { phys_bytes(paddr, START_INFO_SIZE) })
            .map_err(BootError::StartInfo)?;
        if info.version < 1 || info.memmap_paddr == 0 {
            return Err(BootError::NoMemoryMap {
                version: info.version,
            });
        }
        let count = info.memmap_entries as usize;
        let kept = count.min(E820_MAX_ENTRIES);
        // SAFETY: the host writes the memory map table in low RAM next to start_info.
        let table = unsafe { phys_bytes(info.memmap_paddr, kept * MEMMAP_ENTRY_SIZE) };
        for index in 0..kept {
            let entry = MemmapEntry::parse(table, index).unwrap_or(MemmapEntry {
                addr: 0,
                size: 0,
                kind: 0,
            });
            write_e820(index, &entry);
        }
        let cmdline = keep_cmdline(info.cmdline_paddr)?;
        Ok(Self {
            protocol: Protocol::Pvh,
            info_paddr: paddr,
            version: info.version,
            loader: "",
            cmdline,
            dropped_entries: count - kept,
            entries: kept,
        })
    }

    /// The E820 map as copied to 0x500.
    pub fn memory_map(&self) -> impl Iterator<Item = MemmapEntry> + '_ {
        (0..self.entries).map(read_e820)
    }
}

fn e820_slot(index: usize) -> *mut u8 {
    (E820_MAP as usize + index * E820_ENTRY_SIZE) as *mut u8
}

fn write_e820(index: usize, entry: &MemmapEntry) {
    let mut bytes = [0u8; E820_ENTRY_SIZE];
    bytes[0..8].copy_from_slice(&entry.addr.to_le_bytes());
    bytes[8..16].copy_from_slice(&entry.size.to_le_bytes());
    bytes[16..20].copy_from_slice(&entry.kind.to_le_bytes());
    // SAFETY: 0x500.. (64 entries) is the E820 area of the boot layout, identity-mapped, unused
    // by anything else.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), e820_slot(index), E820_ENTRY_SIZE) };
}

fn read_e820(index: usize) -> MemmapEntry {
    let mut bytes = [0u8; E820_ENTRY_SIZE];
    // SAFETY: as in write_e820; `index` is below the count written there.
    unsafe {
        core::ptr::copy_nonoverlapping(e820_slot(index), bytes.as_mut_ptr(), E820_ENTRY_SIZE)
    };
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap_or([0; 8]));
    let kind = u32::from_le_bytes(bytes[16..20].try_into().unwrap_or([0; 4]));
    MemmapEntry {
        addr: u64_at(0),
        size: u64_at(8),
        kind,
    }
}
