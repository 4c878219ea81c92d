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

pub mod cmos;
pub mod com1;
pub mod debug_exit;
pub mod pic;
pub mod pit;
pub mod reset;
pub mod vga;

use crate::addr::Gpa;
use crate::console::ConsoleSink;
use cmos::Cmos;
use com1::Com1;
use debug_exit::ExitRequest;
use pic::Pic;
use pit::Pit;
use reset::{ResetBy, ResetPorts};
use std::collections::VecDeque;
use std::io::Write as _;
use std::time::{Duration, Instant};
use vga::Vga;
use vm_device::bus::{MmioAddress, MmioBus, PioAddress, PioBus, PioRange};

/// Bochs' and QEMU's debug console: bytes written here go to the console like COM1's.
pub const DEBUG_CONSOLE: u16 = 0xe9;
/// POST codes: firmware and many kernels write progress bytes here (Linux also as a delay).
pub const POST: u16 = 0x80;
/// POST codes kept for the report.
const POST_KEPT: usize = 8;

/// The device a port range belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Port {
    Com1,
    DebugExit,
    DebugConsole,
    Post,
    Pic,
    Pit,
    Cmos,
    Reset,
    Vga,
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
    /// The guest reset the machine.
    Reset(ResetBy),
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
    pub pic: Pic,
    pub pit: Pit,
    pub cmos: Cmos,
    pub vga: Vga,
    reset: ResetPorts,
    /// The last POST codes written to port 0x80, oldest first.
    pub post_codes: VecDeque<u8>,
    pub stray: StrayAccesses,
    clock: Clock,
}

/// The time devices see: since the VM was made, or set by a test.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    Host { started: Instant },
    Fixed(Duration),
}

impl Clock {
    fn now(self) -> Duration {
        match self {
            Self::Host { started } => started.elapsed(),
            Self::Fixed(at) => at,
        }
    }
}

impl std::fmt::Debug for Devices {
    /// vm-device's buses have no `Debug`; the devices and the stray count say enough.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Devices")
            .field("com1", &self.com1)
            .field("pic", &self.pic)
            .field("pit", &self.pit)
            .field("stray", &self.stray)
            .finish_non_exhaustive()
    }
}

impl Devices {
    /// The PC this host emulates: COM1, the debug-exit port, the debug console at 0xE9,
    /// POST codes at 0x80, the 8259A pair, the 8254 PIT, the CMOS RTC (whose memory
    /// sizes the VM sets with [`Devices::set_ram`]) and the VGA's registers.
    pub fn new(console: ConsoleSink) -> Result<Self, DeviceError> {
        let mut devices = Self {
            pio: PioBus::new(),
            mmio: MmioBus::new(),
            com1: Com1::new(console),
            pic: Pic::default(),
            pit: Pit::default(),
            cmos: Cmos::new(unix_now(), 0, 0),
            vga: Vga::default(),
            reset: ResetPorts::default(),
            post_codes: VecDeque::with_capacity(POST_KEPT),
            stray: StrayAccesses::default(),
            clock: Clock::Host {
                started: Instant::now(),
            },
        };
        devices.place("COM1", Port::Com1, com1::BASE, com1::PORTS)?;
        devices.place("the debug-exit port", Port::DebugExit, debug_exit::PORT, 1)?;
        devices.place("the debug console", Port::DebugConsole, DEBUG_CONSOLE, 1)?;
        devices.place("the POST port", Port::Post, POST, 1)?;
        devices.place("the master PIC", Port::Pic, pic::MASTER, 2)?;
        devices.place("the slave PIC", Port::Pic, pic::SLAVE, 2)?;
        devices.place("the PICs' ELCR", Port::Pic, pic::ELCR, 2)?;
        devices.place("the PIT", Port::Pit, pit::BASE, 4)?;
        devices.place("port B", Port::Pit, pit::PORT_B, 1)?;
        devices.place("the CMOS RTC", Port::Cmos, cmos::INDEX, 2)?;
        // The i8042's data and command ports; 0x61 between them is port B (the PIT's).
        devices.place("the i8042's data port", Port::Reset, reset::I8042, 1)?;
        devices.place("the i8042's command port", Port::Reset, reset::I8042 + 4, 1)?;
        devices.place("port A", Port::Reset, reset::PORT_A, 1)?;
        devices.place("the VGA", Port::Vga, vga::BASE, vga::PORTS)?;
        Ok(devices)
    }

    /// The RAM the CMOS reports, below and above 4 GiB.
    pub fn set_ram(&mut self, below_4g: u64, above_4g: u64) {
        self.cmos = Cmos::new(unix_now(), below_4g, above_4g);
    }

    /// Devices' time from now on (tests make it deterministic).
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    /// The time the devices see now.
    pub fn now(&self) -> Duration {
        self.clock.now()
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
            Some(_) => {
                let mut reset = None;
                for (at, &byte) in consecutive(port).zip(access) {
                    reset = reset.or(self.write_byte(at, byte));
                }
                reset.map_or(PortWrite::Done, PortWrite::Reset)
            }
            None => {
                let value = little_endian(access);
                self.stray
                    .note(|| format!("out {value:#x} to port {port:#x}"));
                PortWrite::Done
            }
        }
    }

    /// One byte of a write to a byte-wide device (or to no device); the reset it asks for.
    fn write_byte(&mut self, at: u16, byte: u8) -> Option<ResetBy> {
        let now = self.now();
        match self.port(at) {
            Some((Port::Com1, offset)) => self.com1.write(offset, byte),
            Some((Port::DebugConsole, _)) => {
                // The sink never fails; a full log is noted by the sink itself.
                let _ = self.com1.sink_mut().write_all(&[byte]);
            }
            Some((Port::Post, _)) => {
                if self.post_codes.len() == POST_KEPT {
                    self.post_codes.pop_front();
                }
                self.post_codes.push_back(byte);
            }
            Some((Port::Pic, _)) => self.pic.write(at, byte),
            Some((Port::Pit, _)) => self.pit.write(at, byte, now),
            Some((Port::Cmos, _)) => self.cmos.write(at, byte),
            Some((Port::Reset, _)) => return self.reset.write(at, byte),
            Some((Port::Vga, _)) => self.vga.write(at, byte),
            Some((Port::DebugExit, _)) | None => {
                self.stray.note(|| format!("out {byte:#x} to port {at:#x}"));
            }
        }
        None
    }

    /// One `in` access of 1, 2 or 4 bytes at `port`, filled in little-endian order.
    pub fn port_read(&mut self, port: u16, access: &mut [u8]) {
        let now = self.now();
        let mut stray = false;
        for (at, byte) in consecutive(port).zip(access.iter_mut()) {
            *byte = match self.port(at) {
                Some((Port::Com1, offset)) => self.com1.read(offset),
                // Bochs' and QEMU's answer, by which kernels detect the debug console.
                Some((Port::DebugConsole, _)) => 0xe9,
                Some((Port::Post, _)) => 0xff,
                Some((Port::Pic, _)) => self.pic.read(at),
                Some((Port::Pit, _)) => self.pit.read(at, now),
                Some((Port::Cmos, _)) => self.cmos.read(at, now),
                Some((Port::Reset, _)) => self.reset.read(at),
                Some((Port::Vga, _)) => self.vga.read(at),
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

/// Seconds since 1970 by the host's clock (0 if it is set before then).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
