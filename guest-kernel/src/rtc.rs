//! The CMOS real-time clock read the way kernels read it: wait while an update is in
//! progress (status A bit 7), read the date and time registers, and decode BCD unless
//! status B says binary.

use x86_64::instructions::port::Port;

fn cmos(index: u8) -> u8 {
    let mut select: Port<u8> = Port::new(0x70);
    let mut data: Port<u8> = Port::new(0x71);
    // SAFETY: the CMOS index and data ports only read the RTC; bit 7 of the index (NMI
    // masking) stays clear.
    unsafe {
        select.write(index & 0x7f);
        data.read()
    }
}

/// The date and time as `YYYY-MM-DD HH:MM:SS` fields.
pub struct DateTime {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

pub fn now() -> DateTime {
    while cmos(0x0a) & 0x80 != 0 {
        core::hint::spin_loop();
    }
    let binary = cmos(0x0b) & 0x04 != 0;
    let decode = |v: u8| {
        if binary {
            v
        } else {
            (v >> 4) * 10 + (v & 0x0f)
        }
    };
    DateTime {
        year: u16::from(decode(cmos(0x32))) * 100 + u16::from(decode(cmos(0x09))),
        month: decode(cmos(0x08)),
        day: decode(cmos(0x07)),
        hour: decode(cmos(0x04)),
        minute: decode(cmos(0x02)),
        second: decode(cmos(0x00)),
    }
}
