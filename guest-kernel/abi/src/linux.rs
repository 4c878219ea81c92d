//! The Linux boot protocol's `boot_params` (the "zero page", the kernel's
//! Documentation/arch/x86/boot.rst): the offsets guest-kernel reads when it is entered as a
//! bzImage, and a parser the host can test.

/// What guest-kernel's `linux_start32` passes on as the protocol's magic: the protocol has
/// none, so the entry stub uses the setup header's own signature, "HdrS".
pub const ENTRY_MAGIC: u32 = 0x5372_6448;
/// The size of `boot_params`.
pub const BOOT_PARAMS_SIZE: usize = 4096;

/// Byte offsets inside `boot_params`.
pub mod offset {
    pub const E820_ENTRIES: usize = 0x1e8;
    /// The setup header's "HdrS".
    pub const HEADER: usize = 0x202;
    pub const VERSION: usize = 0x206;
    pub const TYPE_OF_LOADER: usize = 0x210;
    pub const CMD_LINE_PTR: usize = 0x228;
    pub const E820_TABLE: usize = 0x2d0;
}
/// The E820 table in `boot_params` holds at most this many 20-byte entries.
pub const E820_TABLE_MAX: usize = 128;
const E820_ENTRY_SIZE: usize = 20;

use crate::start_info::MemmapEntry;

/// What guest-kernel needs from `boot_params`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootParams<'a> {
    /// The boot protocol version the setup header declares (0x020f is 2.15).
    pub version: u16,
    pub type_of_loader: u8,
    pub cmd_line_ptr: u32,
    e820: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootParamsError {
    /// Fewer than 4096 bytes.
    TooShort(usize),
    /// No "HdrS" where the setup header should be.
    NoHeader(u32),
}

impl<'a> BootParams<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BootParamsError> {
        if bytes.len() < BOOT_PARAMS_SIZE {
            return Err(BootParamsError::TooShort(bytes.len()));
        }
        let u32_at = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        if u32_at(offset::HEADER) != ENTRY_MAGIC {
            return Err(BootParamsError::NoHeader(u32_at(offset::HEADER)));
        }
        let entries = usize::from(bytes[offset::E820_ENTRIES]).min(E820_TABLE_MAX);
        let table = offset::E820_TABLE;
        Ok(Self {
            version: u16::from_le_bytes([bytes[offset::VERSION], bytes[offset::VERSION + 1]]),
            type_of_loader: bytes[offset::TYPE_OF_LOADER],
            cmd_line_ptr: u32_at(offset::CMD_LINE_PTR),
            e820: &bytes[table..table + entries * E820_ENTRY_SIZE],
        })
    }

    /// The E820 map: base, length and type, 20 bytes an entry.
    pub fn memory_map(&self) -> impl Iterator<Item = MemmapEntry> + 'a {
        self.e820.chunks_exact(E820_ENTRY_SIZE).map(|e| {
            let u64_at = |at: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&e[at..at + 8]);
                u64::from_le_bytes(b)
            };
            MemmapEntry {
                addr: u64_at(0),
                size: u64_at(8),
                kind: u32::from_le_bytes([e[16], e[17], e[18], e[19]]),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(entries: u8) -> [u8; BOOT_PARAMS_SIZE] {
        let mut p = [0u8; BOOT_PARAMS_SIZE];
        p[offset::HEADER..offset::HEADER + 4].copy_from_slice(b"HdrS");
        p[offset::VERSION..offset::VERSION + 2].copy_from_slice(&0x020fu16.to_le_bytes());
        p[offset::TYPE_OF_LOADER] = 0xff;
        p[offset::CMD_LINE_PTR..offset::CMD_LINE_PTR + 4].copy_from_slice(&0x9000u32.to_le_bytes());
        p[offset::E820_ENTRIES] = entries;
        let e = offset::E820_TABLE + 20;
        p[e..e + 8].copy_from_slice(&0x10_0000u64.to_le_bytes());
        p[e + 8..e + 16].copy_from_slice(&0x7f0_0000u64.to_le_bytes());
        p[e + 16..e + 20].copy_from_slice(&1u32.to_le_bytes());
        p
    }

    #[test]
    fn reads_the_header_command_line_and_memory_map() {
        let bytes = params(2);
        let p = BootParams::parse(&bytes).unwrap();
        assert_eq!(
            (p.version, p.type_of_loader, p.cmd_line_ptr),
            (0x020f, 0xff, 0x9000)
        );
        let map: [MemmapEntry; 2] = {
            let mut it = p.memory_map();
            [it.next().unwrap(), it.next().unwrap()]
        };
        assert_eq!(
            map[1],
            MemmapEntry {
                addr: 0x10_0000,
                size: 0x7f0_0000,
                kind: 1
            }
        );
        assert_eq!(
            map[0],
            MemmapEntry {
                addr: 0,
                size: 0,
                kind: 0
            }
        );
    }

    #[test]
    fn an_overlong_count_stops_at_the_table_and_garbage_is_refused() {
        let bytes = params(255);
        assert_eq!(
            BootParams::parse(&bytes).unwrap().memory_map().count(),
            E820_TABLE_MAX
        );
        assert_eq!(
            BootParams::parse(&bytes[..100]),
            Err(BootParamsError::TooShort(100))
        );
        assert_eq!(
            BootParams::parse(&[0u8; 4096]),
            Err(BootParamsError::NoHeader(0))
        );
    }
}
