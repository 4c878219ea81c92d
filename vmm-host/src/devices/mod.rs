//! The guest's devices, reached through two buses as on a PC: port I/O and MMIO.
//!
//! The buses are rust-vmm's `vm-device` [`Bus`]es (range bookkeeping, overlap and access
//! checks). What sits on them is a name ([`Port`], [`Mmio`]); the devices themselves are
//! fields of [`Devices`], so each is reached with its own type and `&mut` (a run has one
//! vCPU, and vm-device's `IoManager` would wrap every device in `Arc<Mutex<_>>` and give no
//! device a way to answer "end the run").
//!
//! Byte-wide ISA devices see a wide access as consecutive byte accesses, as on real
//! hardware: `out dx, ax` to COM1 writes two registers. An access that starts on no device,
//! or a byte that falls past a device's ports, is a stray access: reads return all ones, and
//! the first stray access is described in the run's report.

pub mod com1;
pub mod debug_exit;

use crate::addr::Gpa;
use crate::console::ConsoleSink;
use com1::Com1;
use debug_exit::ExitRequest;
use vm_device::bus::{MmioAddress, MmioBus, PioAddress, PioBus, PioRange};

/// The device a port range belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Port {
    Com1,
    DebugExit,
}

/// The device an MMIO range belongs to. None exists yet: every MMIO access is stray.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mmio {}

/// What a port write asks of the run loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortWrite {
    Done,
    /// The guest wrote its exit code: the run is over.
    Exit {
        code: u8,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("cannot place {device} at ports {base:#x}+{len}: {error}")]
    Overlap {
        device: &'static str,
        base: u16,
        len: u16,
        error: vm_device::bus::Error,
    },
}

/// Counts and describes guest accesses that reached no device.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StrayAccesses {
    pub count: u64,
    /// The first one, in words.
    pub first: Option<String>,
}

impl StrayAccesses {
    pub fn note(&mut self, what: impl FnOnce() -> String) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(what());
        }
    }
}

/// Every device of the VM, on its buses.
pub struct Devices {
    pio: PioBus<Port>,
    mmio: MmioBus<Mmio>,
    pub com1: Com1,
    pub stray: StrayAccesses,
}

impl std::fmt::Debug for Devices {
    /// vm-device's buses have no `Debug`; the devices and the stray count say enough.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Devices")
            .field("com1", &self.com1)
            .field("stray", &self.stray)
            .finish_non_exhaustive()
    }
}

impl Devices {
    /// The PC this host emulates: COM1 and the debug-exit port.
    pub fn new(console: ConsoleSink) -> Result<Self, DeviceError> {
        let mut devices = Self {
            pio: PioBus::new(),
            mmio: MmioBus::new(),
            com1: Com1::new(console),
            stray: StrayAccesses::default(),
        };
        devices.place("COM1", Port::Com1, com1::BASE, com1::PORTS)?;
        devices.place("the debug-exit port", Port::DebugExit, debug_exit::PORT, 1)?;
        Ok(devices)
    }

    fn place(
        &mut self,
        device: &'static str,
        port: Port,
        base: u16,
        len: u16,
    ) -> Result<(), DeviceError> {
        let overlap = |error| DeviceError::Overlap {
            device,
            base,
            len,
            error,
        };
        let range = PioRange::new(PioAddress(base), len).map_err(overlap)?;
        self.pio.register(range, port).map_err(overlap)
    }

    /// The device decoding `port`, and the port's offset in its range.
    fn port(&self, port: u16) -> Option<(Port, u16)> {
        let (range, device) = self.pio.device(PioAddress(port))?;
        Some((*device, port - range.base().0))
    }

    /// One `out` access of 1, 2 or 4 bytes (little-endian) at `port`.
    pub fn port_write(&mut self, port: u16, access: &[u8]) -> PortWrite {
        match self.port(port) {
            Some((Port::DebugExit, _)) => {
                let ExitRequest { code, ignored } = debug_exit::write(access);
                if let Some(ignored) = ignored {
                    self.stray.note(|| ignored);
                }
                PortWrite::Exit { code }
            }
            Some((Port::Com1, _)) => {
                for (at, &byte) in consecutive(port).zip(access) {
                    match self.port(at) {
                        Some((Port::Com1, offset)) => self.com1.write(offset, byte),
                        _ => self.stray.note(|| format!("out {byte:#x} to port {at:#x}")),
                    }
                }
                PortWrite::Done
            }
            None => {
                let value = little_endian(access);
                self.stray
                    .note(|| format!("out {value:#x} to port {port:#x}"));
                PortWrite::Done
            }
        }
    }

    /// One `in` access of 1, 2 or 4 bytes at `port`, filled in little-endian order.
    pub fn port_read(&mut self, port: u16, access: &mut [u8]) {
        let mut stray = false;
        for (at, byte) in consecutive(port).zip(access.iter_mut()) {
            *byte = match self.port(at) {
                Some((Port::Com1, offset)) => self.com1.read(offset),
                // The debug-exit port is write-only; absent ISA hardware reads as all ones.
                Some((Port::DebugExit, _)) | None => {
                    stray = true;
                    0xff
                }
            };
        }
        if stray {
            self.stray.note(|| format!("in from port {port:#x}"));
        }
    }

    /// An MMIO read of `data.len()` bytes at `gpa`.
    pub fn mmio_read(&mut self, gpa: Gpa, data: &mut [u8]) {
        match self.mmio.device(MmioAddress(gpa.raw())) {
            Some((_, device)) => match *device {},
            None => {
                data.fill(0xff);
                self.stray
                    .note(|| format!("read of {} bytes at physical {:#x}", data.len(), gpa.raw()));
            }
        }
    }

    /// An MMIO write of `data` at `gpa`.
    pub fn mmio_write(&mut self, gpa: Gpa, data: &[u8]) {
        match self.mmio.device(MmioAddress(gpa.raw())) {
            Some((_, device)) => match *device {},
            None => self
                .stray
                .note(|| format!("write of {} bytes at physical {:#x}", data.len(), gpa.raw())),
        }
    }
}

/// `port` and the ports after it, wrapping at 0xffff as the CPU's port addresses do.
fn consecutive(port: u16) -> impl Iterator<Item = u16> {
    (0..=u16::MAX).map(move |i| port.wrapping_add(i))
}

/// The value of a little-endian access (at most 8 bytes count).
fn little_endian(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .take(8)
        .rev()
        .fold(0, |value, &byte| value << 8 | u64::from(byte))
}

#[cfg(test)]
mod tests;
