//! The two ways a PC kernel resets the machine on purpose: the keyboard controller's pulse
//! of the reset line (0xFE to port 0x64; vm-superio's i8042 at 0x60–0x64) and the fast-reset
//! bit of system control port A (bit 0 of port 0x92, whose bit 1 is the A20 gate). There is
//! nothing to reset to here, so either ends the run as a reset.

use std::cell::Cell;
use vm_superio::{I8042Device, Trigger};

/// The i8042's data port; its command and status port is `I8042 + 4`.
pub const I8042: u16 = 0x60;
/// System control port A.
pub const PORT_A: u16 = 0x92;

/// The i8042's reset line, raised by its 0xFE command.
#[derive(Debug, Default)]
pub struct ResetLine(Cell<bool>);

impl Trigger for ResetLine {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        self.0.set(true);
        Ok(())
    }
}

/// How the guest reset the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetBy {
    KeyboardController,
    PortA,
}

impl ResetBy {
    pub fn describe(self) -> &'static str {
        match self {
            Self::KeyboardController => {
                "the keyboard controller's reset command (0xfe to port 0x64)"
            }
            Self::PortA => "the fast-reset bit of port 0x92",
        }
    }
}

/// The i8042 and port A.
#[derive(Debug)]
pub struct ResetPorts {
    i8042: I8042Device<ResetLine>,
    /// Port A as last written, reset bit clear (A20 in bit 1: always on in this VM).
    port_a: u8,
}

impl Default for ResetPorts {
    fn default() -> Self {
        Self {
            i8042: I8042Device::new(ResetLine::default()),
            port_a: 0x02,
        }
    }
}

impl ResetPorts {
    /// A write to 0x60–0x64 or 0x92; a reset it asks for.
    pub fn write(&mut self, port: u16, value: u8) -> Option<ResetBy> {
        if port == PORT_A {
            self.port_a = value & !1;
            return (value & 1 != 0).then_some(ResetBy::PortA);
        }
        let offset = u8::try_from(port.wrapping_sub(I8042)).unwrap_or(u8::MAX);
        // The line's trigger cannot fail.
        let _ = self.i8042.write(offset, value);
        self.i8042
            .reset_evt()
            .0
            .replace(false)
            .then_some(ResetBy::KeyboardController)
    }

    /// A read of 0x60–0x64 (no key, no data: the controller is always ready) or 0x92.
    pub fn read(&mut self, port: u16) -> u8 {
        if port == PORT_A {
            return self.port_a;
        }
        let offset = u8::try_from(port.wrapping_sub(I8042)).unwrap_or(u8::MAX);
        self.i8042.read(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_0xfe_to_the_command_port_resets() {
        let mut ports = ResetPorts::default();
        assert_eq!(
            ports.write(0x64, 0xd1),
            None,
            "write output port: A20 stays on"
        );
        assert_eq!(
            ports.write(0x60, 0xfe),
            None,
            "0xfe to the data port is a key code"
        );
        assert_eq!(
            ports.read(0x64) & 0x02,
            0,
            "input buffer empty: ready for a command"
        );
        assert_eq!(ports.write(0x64, 0xfe), Some(ResetBy::KeyboardController));
        assert_eq!(
            ports.write(0x64, 0xfe),
            Some(ResetBy::KeyboardController),
            "again"
        );
    }

    #[test]
    fn port_a_resets_on_bit_0_and_keeps_a20() {
        let mut ports = ResetPorts::default();
        assert_eq!(ports.read(0x92), 0x02, "A20 on");
        assert_eq!(ports.write(0x92, 0x02), None);
        assert_eq!(ports.write(0x92, 0x03), Some(ResetBy::PortA));
        assert_eq!(ports.read(0x92), 0x02, "the reset bit reads back clear");
    }
}
