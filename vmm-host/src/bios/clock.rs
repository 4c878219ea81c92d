//! int 1Ah and the timer tick: the tick count since midnight in the BIOS data area (set from
//! the RTC at power-on, advanced by IRQ 0 at the PIT's 18.2 Hz) and the RTC's time and date,
//! read from the CMOS through its ports as a BIOS reads them (so `--clock` fixes them too).

use super::rom::{BDA, bda};
use super::{Call, Firmware, Served};
use crate::devices::cmos;

/// Ticks in a day at 1,193,182 Hz / 65,536: the count wraps to 0 here.
const TICKS_PER_DAY: u32 = 0x18_00b0;

pub(super) fn serve(call: &mut Call, fw: &mut Firmware) -> Served {
    match call.ah() {
        0x00 => {
            let ticks = fw.read_u32(BDA + bda::TICKS);
            call.set_cx(crate::narrow::low_u16(u64::from(ticks >> 16)));
            call.set_dx(crate::narrow::low_u16(u64::from(ticks)));
            call.set_al(fw.read_u8(BDA + bda::MIDNIGHT));
            fw.write_u8(BDA + bda::MIDNIGHT, 0);
            Served::Done
        }
        0x01 => {
            let ticks = u32::from(call.cx()) << 16 | u32::from(call.dx());
            fw.write_u32(BDA + bda::TICKS, ticks);
            fw.write_u8(BDA + bda::MIDNIGHT, 0);
            Served::Done
        }
        0x02 => {
            let [hours, minutes, seconds] = [0x04, 0x02, 0x00].map(|r| rtc(fw, r));
            call.set_cx(u16::from_be_bytes([hours, minutes]));
            call.set_dx(u16::from_be_bytes([seconds, 0]));
            call.succeed();
            Served::Done
        }
        0x04 => {
            let [century, year, month, day] = [0x32, 0x09, 0x08, 0x07].map(|r| rtc(fw, r));
            call.set_cx(u16::from_be_bytes([century, year]));
            call.set_dx(u16::from_be_bytes([month, day]));
            call.succeed();
            Served::Done
        }
        _ => {
            call.fail(super::system::UNSUPPORTED);
            Served::Unsupported
        }
    }
}

/// A CMOS register, through the index and data ports.
fn rtc(fw: &mut Firmware, register: u8) -> u8 {
    fw.devices.port_write(cmos::INDEX, &[register]);
    let mut value = [0u8];
    fw.devices.port_read(cmos::INDEX + 1, &mut value);
    value[0]
}

fn from_bcd(value: u8) -> u32 {
    u32::from(value >> 4) * 10 + u32::from(value & 0xf)
}

/// Set the tick count from the RTC's time of day, as a BIOS does at power-on.
pub(super) fn power_on(fw: &mut Firmware) {
    let [hours, minutes, seconds] = [0x04, 0x02, 0x00].map(|r| from_bcd(rtc(fw, r)));
    let since_midnight = u64::from((hours * 60 + minutes) * 60 + seconds);
    let ticks = since_midnight * 1_193_182 / 65_536;
    fw.write_u32(BDA + bda::TICKS, crate::narrow::low_u32(ticks));
}

/// IRQ 0: one more tick, wrapping at midnight with the flag int 1Ah AH=00h reports.
pub(super) fn tick(fw: &Firmware) {
    let ticks = fw.read_u32(BDA + bda::TICKS) + 1;
    if ticks >= TICKS_PER_DAY {
        fw.write_u32(BDA + bda::TICKS, 0);
        fw.write_u8(BDA + bda::MIDNIGHT, 1);
    } else {
        fw.write_u32(BDA + bda::TICKS, ticks);
    }
}
