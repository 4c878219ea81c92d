//! The MC146818-style CMOS RTC and NVRAM at ports 0x70 (index, bit 7 masks NMI) and 0x71
//! (data), as a PC kernel reads it: the date and time (BCD, 24-hour, from the host's clock
//! at the VM's start plus the time the VM has run), status registers A–D, and the memory
//! sizes a BIOS leaves there. Writes to the time registers are ignored (the clock cannot be
//! set); other registers are plain NVRAM. Periodic, alarm and update interrupts are not
//! modelled.

use std::time::Duration;

/// The index port; the data port is `INDEX + 1`.
pub const INDEX: u16 = 0x70;

const STATUS_A: u8 = 0x0a;
const STATUS_B: u8 = 0x0b;
const STATUS_C: u8 = 0x0c;
const STATUS_D: u8 = 0x0d;
/// 24-hour mode, BCD: what every PC BIOS sets.
const STATUS_B_DEFAULT: u8 = 0x02;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmos {
    ram: [u8; 128],
    index: u8,
    /// Bit 7 of the last index write: NMIs masked.
    pub nmi_masked: bool,
    /// Seconds since 1970 (UTC) when the VM started.
    epoch: u64,
}

impl Cmos {
    /// The RTC at `epoch` (Unix seconds) when the VM starts, with the BIOS's memory sizes for
    /// `below_4g` and `above_4g` bytes of RAM.
    pub fn new(epoch: u64, below_4g: u64, above_4g: u64) -> Self {
        let mut ram = [0u8; 128];
        ram[usize::from(STATUS_A)] = 0x26;
        ram[usize::from(STATUS_B)] = STATUS_B_DEFAULT;
        ram[usize::from(STATUS_D)] = 0x80;
        // Base memory in KiB; memory above 1 MiB in KiB (at most 64 MiB); above 16 MiB in
        // 64 KiB units (at most 4 GiB); above 4 GiB in 64 KiB units (QEMU's 0x5b–0x5d).
        let kib = |bytes: u64| u16::try_from(bytes >> 10).unwrap_or(u16::MAX);
        let blocks = |bytes: u64| u16::try_from(bytes >> 16).unwrap_or(u16::MAX);
        let put16 = |ram: &mut [u8; 128], at: usize, value: u16| {
            ram[at..at + 2].copy_from_slice(&value.to_le_bytes());
        };
        put16(&mut ram, 0x15, 640);
        let extended = kib(below_4g.saturating_sub(1 << 20));
        put16(&mut ram, 0x17, extended);
        put16(&mut ram, 0x30, extended);
        put16(&mut ram, 0x34, blocks(below_4g.saturating_sub(16 << 20)));
        let high = (above_4g >> 16).min(0xff_ffff).to_le_bytes();
        ram[0x5b..0x5e].copy_from_slice(&high[..3]);
        Self {
            ram,
            index: 0,
            nmi_masked: false,
            epoch,
        }
    }

    /// Start the clock at `epoch` (Unix seconds) instead of the host's time.
    pub fn set_epoch(&mut self, epoch: u64) {
        self.epoch = epoch;
    }

    pub fn write(&mut self, port: u16, value: u8) {
        if port == INDEX {
            self.nmi_masked = value & 0x80 != 0;
            self.index = value & 0x7f;
            return;
        }
        match self.index {
            0x00..=0x09 | 0x32 | STATUS_C | STATUS_D => {}
            // Only the format bits matter to the reader: keep them, drop interrupt enables.
            STATUS_B => self.ram[usize::from(STATUS_B)] = value & 0x06,
            index => self.ram[usize::from(index)] = value,
        }
    }

    pub fn read(&mut self, port: u16, now: Duration) -> u8 {
        if port == INDEX {
            return 0xff;
        }
        let time = Civil::at(self.epoch + now.as_secs());
        let binary = self.ram[usize::from(STATUS_B)] & 0x04 != 0;
        let encode = |value: u8| if binary { value } else { bcd(value) };
        match self.index {
            0x00 => encode(time.second),
            0x02 => encode(time.minute),
            0x04 => encode(time.hour),
            0x06 => encode(time.weekday),
            0x07 => encode(time.day),
            0x08 => encode(time.month),
            0x09 => encode(time.year_in_century),
            0x32 => encode(time.century),
            STATUS_C => std::mem::take(&mut self.ram[usize::from(STATUS_C)]),
            index => self.ram[usize::from(index)],
        }
    }
}

/// `--clock TIME`: `2026-12-02T01:30:00` (UTC; a space for the `T` and a trailing `Z` are
/// fine) or `@SECONDS` since 1970; Unix seconds.
pub fn parse_time(text: &str) -> Result<u64, String> {
    let bad = || {
        format!("`{text}` is not a time: write 2026-12-02T01:30:00 (UTC) or @SECONDS since 1970")
    };
    if let Some(seconds) = text.strip_prefix('@') {
        return seconds.parse().map_err(|_| bad());
    }
    let at = humantime::parse_rfc3339_weak(text).map_err(|_| bad())?;
    at.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| bad())
}

fn bcd(value: u8) -> u8 {
    ((value / 10) << 4) | (value % 10)
}

/// A UTC date and time, as the RTC counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Civil {
    second: u8,
    minute: u8,
    hour: u8,
    /// 1 = Sunday.
    weekday: u8,
    day: u8,
    month: u8,
    year_in_century: u8,
    century: u8,
}

impl Civil {
    /// The civil date of `unix` seconds (the days-to-date arithmetic of the proleptic
    /// Gregorian calendar, counting eras of 400 years from 0000-03-01).
    fn at(unix: u64) -> Self {
        let days = unix / 86_400;
        let secs = unix % 86_400;
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + u64::from(month <= 2);
        let small = |v: u64| u8::try_from(v % 256).unwrap_or(0);
        Self {
            second: small(secs % 60),
            minute: small(secs / 60 % 60),
            hour: small(secs / 3600),
            // 1970-01-01 was a Thursday (5 with Sunday = 1).
            weekday: small((days + 4) % 7 + 1),
            day: small(day),
            month: small(month),
            year_in_century: small(year % 100),
            century: small(year / 100),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-01 22:30:58 UTC, a Tuesday.
    const WHEN: u64 = 1_796_164_258;

    fn read(cmos: &mut Cmos, index: u8, now: Duration) -> u8 {
        cmos.write(INDEX, index);
        cmos.read(INDEX + 1, now)
    }

    #[test]
    fn the_clock_reads_in_bcd_and_moves_with_the_vm() {
        let mut cmos = Cmos::new(WHEN, 128 << 20, 0);
        let start = Duration::ZERO;
        let fields: Vec<u8> = [0x32, 0x09, 0x08, 0x07, 0x04, 0x02, 0x00, 0x06]
            .iter()
            .map(|&i| read(&mut cmos, i, start))
            .collect();
        assert_eq!(fields, [0x20, 0x26, 0x12, 0x01, 0x22, 0x30, 0x58, 3]);
        assert_eq!(
            read(&mut cmos, 0x00, Duration::from_secs(3)),
            0x01,
            "58 + 3 s"
        );
        assert_eq!(read(&mut cmos, 0x02, Duration::from_secs(3)), 0x31);
    }

    #[test]
    fn binary_mode_and_status_registers() {
        let mut cmos = Cmos::new(WHEN, 128 << 20, 0);
        assert_eq!(read(&mut cmos, STATUS_B, Duration::ZERO), 0x02);
        assert_eq!(
            read(&mut cmos, STATUS_D, Duration::ZERO),
            0x80,
            "valid RAM and time"
        );
        cmos.write(INDEX, STATUS_B);
        cmos.write(INDEX + 1, 0x06);
        assert_eq!(read(&mut cmos, 0x04, Duration::ZERO), 22, "hours in binary");
        assert_eq!(
            read(&mut cmos, STATUS_A, Duration::ZERO) & 0x80,
            0,
            "no update in progress"
        );
    }

    #[test]
    fn memory_sizes_are_where_a_bios_leaves_them() {
        let mut cmos = Cmos::new(WHEN, 3 << 30, 1 << 30);
        let word = |cmos: &mut Cmos, at: u8| {
            u16::from_le_bytes([
                read(cmos, at, Duration::ZERO),
                read(cmos, at + 1, Duration::ZERO),
            ])
        };
        assert_eq!(word(&mut cmos, 0x15), 640);
        assert_eq!(word(&mut cmos, 0x30), 0xffff, "capped at 64 MiB");
        assert_eq!(
            word(&mut cmos, 0x34),
            (((3u64 << 30) - (16 << 20)) >> 16) as u16
        );
        assert_eq!(
            read(&mut cmos, 0x5c, Duration::ZERO),
            0x40,
            "1 GiB above 4 GiB: 0x4000 blocks"
        );
    }

    #[test]
    fn the_index_port_masks_nmi_and_nvram_keeps_what_is_written() {
        let mut cmos = Cmos::new(WHEN, 128 << 20, 0);
        cmos.write(INDEX, 0x80 | 0x0f);
        assert!(cmos.nmi_masked);
        cmos.write(INDEX + 1, 0x0a);
        assert_eq!(read(&mut cmos, 0x0f, Duration::ZERO), 0x0a);
        assert!(!cmos.nmi_masked);
        cmos.write(INDEX, 0x00);
        cmos.write(INDEX + 1, 0x99);
        assert_eq!(
            read(&mut cmos, 0x00, Duration::ZERO),
            0x58,
            "the clock cannot be set"
        );
    }

    #[test]
    fn a_fixed_clock_starts_where_it_is_told_and_runs_on() {
        assert_eq!(parse_time("@86400"), Ok(86_400));
        let at = parse_time("2026-12-02T01:30:00").unwrap();
        assert_eq!(parse_time("2026-12-02 01:30:00Z"), Ok(at));
        assert!(
            parse_time("yesterday")
                .unwrap_err()
                .starts_with("`yesterday` is not a time")
        );
        let mut cmos = Cmos::new(0, 0, 0);
        cmos.set_epoch(at);
        let mut read = |index: u8, now: u64| {
            cmos.write(INDEX, index);
            cmos.read(INDEX + 1, Duration::from_secs(now))
        };
        // BCD: 2026-12-02 01:30:00, then 61 s later 01:31:01.
        assert_eq!(
            [read(0x32, 0), read(0x09, 0), read(0x08, 0), read(0x07, 0)],
            [0x20, 0x26, 0x12, 0x02]
        );
        assert_eq!(
            [read(0x04, 0), read(0x02, 0), read(0x00, 0)],
            [0x01, 0x30, 0x00]
        );
        assert_eq!([read(0x02, 61), read(0x00, 61)], [0x31, 0x01]);
    }
}
