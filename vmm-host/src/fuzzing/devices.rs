//! The PC's devices (PIC, PIT, CMOS, i8042, VGA, COM1, the debug and reset ports) under port
//! sequences the fuzzer chooses.

use super::Input;
use crate::console::ConsoleSink;
use crate::devices::{Clock, Devices};
use crate::screen::Screen;
use std::time::Duration;

/// Any sequence of port accesses leaves a screen of 25 rows of at most 80 characters, and a
/// VGA CRTC register still reads back what was written to it.
pub fn devices(data: &[u8]) {
    let mut input = Input::new(data);
    let sink = ConsoleSink::new(false, None, 4096).expect("a sink with no log file");
    let mut devices = Devices::new(sink).expect("the PC's devices");
    devices.set_clock(Clock::Fixed(Duration::from_secs(1)));
    let text_len = usize::from(input.u16()) % 0x1000;
    let text = input.bytes(text_len).to_vec();
    while !input.is_empty() {
        let port = input.u16() % 0x400;
        let tag = input.u8();
        let len = [1usize, 2, 4][usize::from(tag & 3) % 3];
        if tag & 4 != 0 {
            let value = input.u8();
            let _ = devices.port_write(port, &vec![value; len]);
        } else {
            let mut buf = vec![0u8; len];
            devices.port_read(port, &mut buf);
        }
    }
    let screen = Screen::from_buffer(&text, devices.vga.text_mode());
    let lines = screen.lines();
    assert_eq!(lines.len(), 25);
    assert!(lines.iter().all(|l| l.chars().count() <= 80));
    devices.port_write(0x3d4, &[0x0e]);
    devices.port_write(0x3d5, &[0x12]);
    let mut back = [0u8];
    devices.port_read(0x3d5, &mut back);
    assert_eq!(back[0], 0x12, "the CRTC's cursor register");
}
