//! PVH `hvm_start_info` (Xen's `arch-x86/hvm/start_info.h`), read from bytes.
//!
//! The host writes these structures with linux-loader; the guest parses them here, from a byte
//! slice, so that the parser is tested on the host and the guest's only `unsafe` is making the
//! slice.

/// `hvm_start_info.magic`: "xEn3" with the 0x80 bit set in the 'n'.
pub const MAGIC: u32 = 0x336e_c578;
/// Size of `hvm_start_info` (version 1, with the memory map fields).
pub const START_INFO_SIZE: usize = 56;
/// Size of one `hvm_memmap_table_entry`.
pub const MEMMAP_ENTRY_SIZE: usize = 24;

/// The fields of `hvm_start_info` the kernel uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartInfo {
    pub version: u32,
    pub cmdline_paddr: u64,
    pub memmap_paddr: u64,
    pub memmap_entries: u32,
}

/// One memory-map region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemmapEntry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

impl MemmapEntry {
    /// First address past the region, saturating rather than wrapping on hostile sizes.
    pub const fn end(&self) -> u64 {
        self.addr.saturating_add(self.size)
    }
}

/// Why a start-info structure could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartInfoError {
    TooShort { len: usize, need: usize },
    BadMagic(u32),
}

/// The little-endian u32 at `offset`; the caller has checked the length.
pub(crate) fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_le_bytes(b)
}

/// The little-endian u64 at `offset`; the caller has checked the length.
pub(crate) fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[offset..offset + 8]);
    u64::from_le_bytes(b)
}

impl StartInfo {
    /// Parse `hvm_start_info` from its first [`START_INFO_SIZE`] bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, StartInfoError> {
        if bytes.len() < START_INFO_SIZE {
            return Err(StartInfoError::TooShort {
                len: bytes.len(),
                need: START_INFO_SIZE,
            });
        }
        let magic = u32_at(bytes, 0);
        if magic != MAGIC {
            return Err(StartInfoError::BadMagic(magic));
        }
        let version = u32_at(bytes, 4);
        // Version 0 has no memory map: its memmap fields are reserved and must be ignored.
        let (memmap_paddr, memmap_entries) = if version >= 1 {
            (u64_at(bytes, 40), u32_at(bytes, 48))
        } else {
            (0, 0)
        };
        Ok(Self {
            version,
            cmdline_paddr: u64_at(bytes, 24),
            memmap_paddr,
            memmap_entries,
        })
    }
}

impl MemmapEntry {
    /// Parse entry `index` of a memory-map table; `None` past the end of `table`.
    pub fn parse(table: &[u8], index: usize) -> Option<Self> {
        let start = index.checked_mul(MEMMAP_ENTRY_SIZE)?;
        let bytes = table.get(start..start.checked_add(MEMMAP_ENTRY_SIZE)?)?;
        Some(Self {
            addr: u64_at(bytes, 0),
            size: u64_at(bytes, 8),
            kind: u32_at(bytes, 16),
        })
    }

    /// The entry's bytes in the PVH table layout.
    pub fn to_bytes(&self) -> [u8; MEMMAP_ENTRY_SIZE] {
        let mut out = [0u8; MEMMAP_ENTRY_SIZE];
        out[0..8].copy_from_slice(&self.addr.to_le_bytes());
        out[8..16].copy_from_slice(&self.size.to_le_bytes());
        out[16..20].copy_from_slice(&self.kind.to_le_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start_info_bytes(version: u32) -> [u8; START_INFO_SIZE] {
        let mut b = [0u8; START_INFO_SIZE];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&version.to_le_bytes());
        b[24..32].copy_from_slice(&0x9000u64.to_le_bytes());
        b[40..48].copy_from_slice(&0x7000u64.to_le_bytes());
        b[48..52].copy_from_slice(&3u32.to_le_bytes());
        b
    }

    #[test]
    fn parses_version_1_with_memory_map() {
        let info = StartInfo::parse(&start_info_bytes(1)).unwrap();
        assert_eq!(
            info,
            StartInfo {
                version: 1,
                cmdline_paddr: 0x9000,
                memmap_paddr: 0x7000,
                memmap_entries: 3
            }
        );
    }

    #[test]
    fn version_0_has_no_memory_map() {
        let info = StartInfo::parse(&start_info_bytes(0)).unwrap();
        assert_eq!((info.memmap_paddr, info.memmap_entries), (0, 0));
    }

    #[test]
    fn rejects_bad_magic_and_short_input() {
        let mut b = start_info_bytes(1);
        b[0] = 0;
        assert_eq!(
            StartInfo::parse(&b),
            Err(StartInfoError::BadMagic(0x336e_c500))
        );
        assert_eq!(
            StartInfo::parse(&b[..10]),
            Err(StartInfoError::TooShort {
                len: 10,
                need: START_INFO_SIZE
            })
        );
    }

    #[test]
    fn memmap_entry_round_trips_and_stops_at_table_end() {
        let e = MemmapEntry {
            addr: 0x10_0000,
            size: 0x7f0_0000,
            kind: 1,
        };
        let mut table = [0u8; 2 * MEMMAP_ENTRY_SIZE];
        table[MEMMAP_ENTRY_SIZE..].copy_from_slice(&e.to_bytes());
        assert_eq!(MemmapEntry::parse(&table, 1), Some(e));
        assert_eq!(MemmapEntry::parse(&table, 2), None);
        assert_eq!(MemmapEntry::parse(&table, usize::MAX), None);
    }

    #[test]
    fn end_saturates_on_hostile_sizes() {
        let e = MemmapEntry {
            addr: u64::MAX - 1,
            size: 10,
            kind: 1,
        };
        assert_eq!(e.end(), u64::MAX);
    }
}
