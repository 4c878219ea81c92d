//! Guest RAM: its size, where it sits (with the hole below 4 GiB), and the memory map the
//! guest is told about.

use crate::addr::Gpa;
use abi::boot::e820;
use abi::start_info::MemmapEntry;
use std::fmt;

/// RAM that would reach past here continues at 4 GiB instead, leaving the usual hole for
/// devices (PCI, APIC, firmware) below 4 GiB.
pub const HOLE_START: u64 = 0xc000_0000;
/// First address above the hole.
pub const HOLE_END: u64 = 1 << 32;
/// Default guest RAM.
pub const DEFAULT_RAM: u64 = 128 << 20;
/// Top of conventional memory; 640 KiB to 1 MiB is the legacy VGA/BIOS area.
const LOW_RAM_END: u64 = 0xa_0000;
const LEGACY_END: u64 = 0x10_0000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("memory size `{0}` is not a size: write e.g. 256M, 4G or 1024 (MiB)")]
    Unparsable(String),
    #[error("memory size {} is not a multiple of 4 KiB: round it, e.g. to {}", human(*.0), human(.0.next_multiple_of(4096)))]
    Unaligned(u64),
    #[error("memory size {} is too small: the boot layout needs at least {}", human(*.0), human(*.1))]
    TooSmall(u64, u64),
    #[error("memory size {} is more than this host's {} of RAM: ask for less with --mem", human(*.0), human(*.1))]
    MoreThanHost(u64, u64),
}

/// Guest RAM as the host maps it: one region below the hole and, for large sizes, one above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RamLayout {
    size: u64,
    regions: Vec<(Gpa, u64)>,
}

impl RamLayout {
    /// Lay out `size` bytes of RAM, refusing sizes the boot layout or the host cannot hold.
    /// `host_ram` is the host's total RAM, when known.
    pub fn new(size: u64, host_ram: Option<u64>) -> Result<Self, LayoutError> {
        if !size.is_multiple_of(4096) {
            return Err(LayoutError::Unaligned(size));
        }
        if size < abi::boot::MIN_RAM {
            return Err(LayoutError::TooSmall(size, abi::boot::MIN_RAM));
        }
        if let Some(host) = host_ram.filter(|&host| size > host) {
            return Err(LayoutError::MoreThanHost(size, host));
        }
        let low = size.min(HOLE_START);
        let mut regions = vec![(Gpa::new(0), low)];
        if size > low {
            regions.push((Gpa::new(HOLE_END), size - low));
        }
        Ok(Self { size, regions })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// (start, length) of each RAM region, in address order.
    pub fn regions(&self) -> &[(Gpa, u64)] {
        &self.regions
    }

    /// True when every byte of `[start, start + len)` is RAM.
    pub fn contains(&self, start: Gpa, len: u64) -> bool {
        let Some(end) = start.raw().checked_add(len) else {
            return false;
        };
        self.regions
            .iter()
            .any(|&(base, size)| start >= base && end <= base.raw() + size)
    }

    /// First address past the highest RAM byte.
    pub fn end(&self) -> Gpa {
        self.regions
            .last()
            .map_or(Gpa::new(0), |&(base, size)| Gpa::new(base.raw() + size))
    }

    /// The memory map handed to the guest: conventional memory, the legacy area reserved,
    /// and the RAM above 1 MiB (split around the hole).
    pub fn memory_map(&self) -> Vec<MemmapEntry> {
        let mut map = vec![
            MemmapEntry {
                addr: 0,
                size: LOW_RAM_END,
                kind: e820::RAM,
            },
            MemmapEntry {
                addr: LOW_RAM_END,
                size: LEGACY_END - LOW_RAM_END,
                kind: e820::RESERVED,
            },
        ];
        for &(base, size) in &self.regions {
            let start = base.raw().max(LEGACY_END);
            let end = base.raw() + size;
            if end > start {
                map.push(MemmapEntry {
                    addr: start,
                    size: end - start,
                    kind: e820::RAM,
                });
            }
        }
        map
    }
}

/// Parse a memory size: a number with an optional K/M/G/T suffix (KiB/MiB/… and a trailing B
/// accepted); a bare number means MiB, as in QEMU's `-m`.
pub fn parse_size(text: &str) -> Result<u64, LayoutError> {
    let bad = || LayoutError::Unparsable(text.to_string());
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, suffix) = trimmed.split_at(digits_end);
    let number: u64 = digits.parse().map_err(|_| bad())?;
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "m" | "mb" | "mib" => 20,
        "b" => 0,
        "k" | "kb" | "kib" => 10,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad()),
    };
    number.checked_mul(1 << shift).ok_or_else(bad)
}

/// A size for people: the largest unit that divides it exactly.
pub fn human(bytes: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

/// The host's total RAM, from /proc/meminfo; `None` when it cannot be read.
pub fn host_ram() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

impl fmt::Display for RamLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of RAM", human(self.size))?;
        for (i, (base, size)) in self.regions.iter().enumerate() {
            let sep = if i == 0 { " at " } else { ", " };
            write!(f, "{sep}[{base}, {:#x})", base.raw() + size)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes_like_qemu() {
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("1024"), Ok(1 << 30));
        assert_eq!(parse_size("65536k"), Ok(64 << 20));
        assert_eq!(parse_size("4096b"), Ok(4096));
        for bad in ["", "G", "12Q", "-1M", "1.5G", "99999999999999999999T"] {
            assert_eq!(
                parse_size(bad),
                Err(LayoutError::Unparsable(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn small_ram_is_one_region_and_map_reserves_legacy_area() {
        let layout = RamLayout::new(128 << 20, None).unwrap();
        assert_eq!(layout.regions(), &[(Gpa::new(0), 128 << 20)]);
        let map = layout.memory_map();
        assert_eq!(
            map,
            vec![
                MemmapEntry {
                    addr: 0,
                    size: 0xa_0000,
                    kind: e820::RAM
                },
                MemmapEntry {
                    addr: 0xa_0000,
                    size: 0x6_0000,
                    kind: e820::RESERVED
                },
                MemmapEntry {
                    addr: 0x10_0000,
                    size: (128 << 20) - 0x10_0000,
                    kind: e820::RAM
                },
            ]
        );
    }

    #[test]
    fn ram_past_three_gib_continues_above_four_gib() {
        let layout = RamLayout::new(4 << 30, None).unwrap();
        assert_eq!(
            layout.regions(),
            &[(Gpa::new(0), 3 << 30), (Gpa::new(4 << 30), 1 << 30)]
        );
        assert_eq!(layout.end(), Gpa::new(5 << 30));
        let map = layout.memory_map();
        assert_eq!(
            map.last(),
            Some(&MemmapEntry {
                addr: 4 << 30,
                size: 1 << 30,
                kind: e820::RAM
            })
        );
        assert!(!layout.contains(Gpa::new(HOLE_START), 1));
        assert!(layout.contains(Gpa::new(HOLE_END), 4096));
        assert!(
            !layout.contains(Gpa::new((3 << 30) - 4), 8),
            "a range across the hole"
        );
    }

    #[test]
    fn refuses_sizes_the_boot_layout_or_host_cannot_hold() {
        assert_eq!(
            RamLayout::new(16 << 20, None),
            Err(LayoutError::TooSmall(16 << 20, 32 << 20))
        );
        assert_eq!(
            RamLayout::new((64 << 20) + 1, None),
            Err(LayoutError::Unaligned((64 << 20) + 1))
        );
        assert_eq!(
            RamLayout::new(8 << 30, Some(4 << 30)),
            Err(LayoutError::MoreThanHost(8 << 30, 4 << 30))
        );
        let message = RamLayout::new(16 << 20, None).unwrap_err().to_string();
        assert_eq!(
            message,
            "memory size 16 MiB is too small: the boot layout needs at least 32 MiB"
        );
    }

    #[test]
    fn contains_rejects_wrapping_ranges() {
        let layout = RamLayout::new(64 << 20, None).unwrap();
        assert!(!layout.contains(Gpa::new(u64::MAX), 2));
        assert!(layout.contains(Gpa::new(0), 64 << 20));
        assert!(!layout.contains(Gpa::new(0), (64 << 20) + 1));
    }
}
