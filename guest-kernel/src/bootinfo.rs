//! What the host told us at boot: the PVH start info, turned into BoxKernel's E820 map at
//! 0x500 and a command line.

use abi::boot::{CMDLINE_MAX, E820_MAP, E820_MAX_ENTRIES};
use abi::start_info::{MEMMAP_ENTRY_SIZE, MemmapEntry, START_INFO_SIZE, StartInfo, StartInfoError};
use core::fmt;

/// Size of one BIOS-style E820 entry: base, length, type.
const E820_ENTRY_SIZE: usize = 20;

#[derive(Debug)]
pub enum BootError {
    StartInfo(StartInfoError),
    NoMemoryMap { version: u32 },
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
            Self::CmdlineNotUtf8 => f.write_str("the command line is not UTF-8"),
        }
    }
}

pub struct BootInfo {
    pub start_info_paddr: u64,
    pub version: u32,
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

impl BootInfo {
    /// Read the start info at `paddr` and copy its memory map to the E820 area.
    pub fn read(paddr: u32) -> Result<Self, BootError> {
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
        let cmdline = if info.cmdline_paddr == 0 {
            ""
        } else {
            // SAFETY: the host writes the command line in low RAM, at most CMDLINE_MAX bytes.
            let raw = unsafe { phys_bytes(info.cmdline_paddr, CMDLINE_MAX) };
            let len = raw.iter().position(|&b| b == 0).unwrap_or(CMDLINE_MAX);
            core::str::from_utf8(&raw[..len]).map_err(|_| BootError::CmdlineNotUtf8)?
        };
        Ok(Self {
            start_info_paddr: paddr,
            version: info.version,
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
