//! COM1: a vm-superio 16550 UART whose transmitted bytes go to the console sink.

use crate::console::ConsoleSink;
use vm_superio::{Serial, Trigger};

/// The UART's eight registers start here.
pub const BASE: u16 = abi::ports::SERIAL_COM1;
/// How many ports the UART decodes.
pub const PORTS: u16 = 8;

/// The UART's interrupt line. This VM has no interrupt controller, so the guest polls the
/// UART and a raised line has nowhere to go.
#[derive(Debug, Default)]
pub struct UnwiredIrq;

impl Trigger for UnwiredIrq {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        Ok(())
    }
}

type Uart = Serial<UnwiredIrq, vm_superio::serial::NoEvents, ConsoleSink>;

/// COM1 as the host emulates it.
#[derive(Debug)]
pub struct Com1 {
    uart: Uart,
}

impl Com1 {
    pub fn new(sink: ConsoleSink) -> Self {
        Self {
            uart: Serial::new(UnwiredIrq, sink),
        }
    }

    /// One byte written to register `offset` (0–7; the bus decodes no other).
    pub fn write(&mut self, offset: u16, byte: u8) {
        if let Ok(offset) = u8::try_from(offset) {
            // The UART's only error is a failed trigger, and ours cannot fail.
            let _ = self.uart.write(offset, byte);
        }
    }

    /// One byte read from register `offset` (0–7).
    pub fn read(&mut self, offset: u16) -> u8 {
        u8::try_from(offset).map_or(0xff, |offset| self.uart.read(offset))
    }

    /// Where the transmitted bytes went.
    pub fn sink(&self) -> &ConsoleSink {
        self.uart.writer()
    }

    pub fn sink_mut(&mut self) -> &mut ConsoleSink {
        self.uart.writer_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::DEFAULT_LIMIT;

    /// Line status register: transmitter holding register and transmitter both empty.
    const LSR_IDLE: u8 = 0x60;

    #[test]
    fn bytes_written_to_thr_reach_the_capture() {
        let mut com1 = Com1::new(ConsoleSink::new(false, None, DEFAULT_LIMIT).unwrap());
        for &b in b"ok\r\n" {
            com1.write(0, b);
        }
        assert_eq!(com1.sink().captured(), b"ok\n");
        assert_eq!(com1.read(5), LSR_IDLE, "the line status says ready to send");
    }
}
