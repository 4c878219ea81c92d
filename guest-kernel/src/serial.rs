//! Polled 16550 UART on COM1: the kernel's only console.

use core::fmt;
use x86_64::instructions::port::Port;

/// Line status register bit: the transmit holding register can take a byte.
const LSR_THR_EMPTY: u8 = 0x20;
/// A 16550A's transmit FIFO.
const FIFO_DEPTH: usize = 16;

pub struct Serial {
    base: u16,
}

impl Serial {
    pub const fn new(base: u16) -> Self {
        Self { base }
    }

    fn port(&self, offset: u16) -> Port<u8> {
        Port::new(self.base + offset)
    }

    /// 115200 8N1, FIFOs on, interrupts off (the kernel polls).
    pub fn init(&self) {
        let settings: [(u16, u8); 7] = [
            (1, 0x00), // IER: no interrupts
            (3, 0x80), // LCR: DLAB on
            (0, 0x01), // DLL: divisor 1
            (1, 0x00), // DLM
            (3, 0x03), // LCR: 8N1, DLAB off
            (2, 0xc7), // FCR: enable and clear FIFOs
            (4, 0x03), // MCR: DTR + RTS
        ];
        for (offset, value) in settings {
            // SAFETY: COM1's registers are I/O ports with no memory side effects.
            unsafe { self.port(offset).write(value) };
        }
    }

    /// Send `bytes`, waiting for an empty transmitter once per FIFO's worth: with FIFOs on,
    /// THRE means all 16 slots are free. Every port access is a VM exit, so this halves them.
    pub fn write_bytes(&self, bytes: impl Iterator<Item = u8>) {
        let mut room = 0;
        for byte in bytes {
            if room == 0 {
                // SAFETY: reading LSR of COM1 only affects the UART.
                while unsafe { self.port(5).read() } & LSR_THR_EMPTY == 0 {
                    core::hint::spin_loop();
                }
                room = FIFO_DEPTH;
            }
            // SAFETY: writing THR of COM1 only affects the UART.
            unsafe { self.port(0).write(byte) };
            room -= 1;
        }
    }
}

impl fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.write_bytes(s.bytes().flat_map(|byte| {
            let cr = (byte == b'\n').then_some(b'\r');
            cr.into_iter().chain(core::iter::once(byte))
        }));
        Ok(())
    }
}

/// The console. Single CPU, and the port is stateless between bytes, so every writer can
/// make its own handle; no lock is needed to keep bytes intact.
pub fn console() -> Serial {
    Serial::new(abi::ports::SERIAL_COM1)
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments) {
    use fmt::Write;
    let _ = console().write_fmt(args);
}

#[macro_export]
macro_rules! kprint {
    ($($arg:tt)*) => ($crate::serial::_print(format_args!($($arg)*)));
}

#[macro_export]
macro_rules! kprintln {
    () => ($crate::kprint!("\n"));
    ($($arg:tt)*) => ($crate::serial::_print(format_args!("{}\n", format_args!($($arg)*))));
}
