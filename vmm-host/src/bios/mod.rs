//! The PC BIOS a boot sector runs on, served by the host: no SeaBIOS, no firmware image.
//!
//! [`rom`] fills the interrupt vector table, the BIOS data area and one `hlt; iret` stub per
//! vector. When the guest's `int n` (or an IRQ) reaches a stub, the `hlt` exits to the host,
//! which finds the vector from the stub's address and serves the call here, on the caller's
//! registers, its memory and the emulated devices (the screen through the VGA's text buffer
//! and CRTC, the clock through the CMOS, IRQs acknowledged at the PICs), then sets CF and ZF
//! in the FLAGS image the `iret` restores.
//!
//! Served: int 10h (video), 11h, 12h, 13h (the boot disk), 15h (memory, A20, block moves),
//! 16h (a keyboard with no keys), 1Ah (ticks and the RTC), and the hardware IRQs' handlers
//! (EOI; IRQ 0 counts ticks). A call it does not know fails as a BIOS fails it (CF, AH
//! 01h or 86h) and is counted, the first one described in the run's report.
//!
//! Written by hand: rust-vmm has no BIOS, and SeaBIOS would need `int n` in the ring-0
//! code it runs in protected mode, which this nested KVM cannot emulate (../shared/notes).

mod call;
mod clock;
pub mod disk;
pub mod rom;
mod system;
mod video;

pub use call::Call;
pub use disk::Disk;

use crate::addr::Gpa;
use crate::devices::{Devices, StrayAccesses};
use abi::start_info::MemmapEntry;
use std::collections::BTreeMap;
use vm_memory::{Bytes, GuestMemoryMmap};

/// What serving a call asks of the run loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    Done,
    /// Answered as a BIOS answers a call it does not have: CF set (and AH a status) by the
    /// services whose convention that is (int 13h, 15h, 1Ah); the video and keyboard
    /// services (int 10h, 16h) have none and leave the registers alone. Counted and noted.
    Unsupported,
    /// int 16h AH=00h/10h: the guest waits for a keystroke, and this host has no keyboard.
    WaitsForKey,
    /// A CPU exception (no IRQ was in service on this vector) reached the BIOS's stub: the
    /// guest's IVT has no handler for it.
    Exception,
}

/// Vectors a real-mode CPU raises exceptions on: #DE, #DB, #BP, #OF, #UD, #NM, #DF, #SS and
/// #GP. NMI (2) and int 05h (print screen, or BOUND's #BR) are left out: a BIOS serves them.
/// 08h–0Fh are IRQs as well, which `irq_in_service` tells apart.
const EXCEPTION_VECTORS: [u8; 9] = [0x00, 0x01, 0x03, 0x04, 0x06, 0x07, 0x08, 0x0c, 0x0d];

/// What the services reach: guest RAM, the devices, and the memory map.
#[derive(Debug)]
pub struct Firmware<'a> {
    pub mem: &'a GuestMemoryMmap,
    pub devices: &'a mut Devices,
    pub memory_map: &'a [MemmapEntry],
}

impl Firmware<'_> {
    /// `len` bytes of guest RAM at `at`, or `None` when any of them is not RAM.
    pub fn read(&self, at: Gpa, len: usize) -> Option<Vec<u8>> {
        let mut bytes = vec![0u8; len];
        self.mem
            .read_slice(&mut bytes, at.guest_address())
            .ok()
            .map(|()| bytes)
    }

    /// Write `bytes` at `at`; false when they do not all land in RAM.
    pub fn write(&self, at: Gpa, bytes: &[u8]) -> bool {
        self.mem.write_slice(bytes, at.guest_address()).is_ok()
    }

    // The data area and the text buffer are always RAM (it starts at 0 and is at least
    // 32 MiB), so their reads and writes below cannot fail; a failure would read as 0.
    fn read_u8(&self, at: u64) -> u8 {
        self.mem.read_obj(Gpa::new(at).guest_address()).unwrap_or(0)
    }
    fn read_u16(&self, at: u64) -> u16 {
        self.mem.read_obj(Gpa::new(at).guest_address()).unwrap_or(0)
    }
    fn read_u32(&self, at: u64) -> u32 {
        self.mem.read_obj(Gpa::new(at).guest_address()).unwrap_or(0)
    }
    fn write_u8(&self, at: u64, value: u8) {
        let _ = self.mem.write_obj(value, Gpa::new(at).guest_address());
    }
    fn write_u16(&self, at: u64, value: u16) {
        let _ = self.mem.write_obj(value, Gpa::new(at).guest_address());
    }
    fn write_u32(&self, at: u64, value: u32) {
        let _ = self.mem.write_obj(value, Gpa::new(at).guest_address());
    }

    /// RAM below the hole under 4 GiB, from the memory map.
    fn ram_below_4g(&self) -> u64 {
        self.memory_map
            .iter()
            .filter(|e| e.kind == abi::boot::e820::RAM && e.addr < 1 << 32)
            .map(|e| e.end().min(1 << 32))
            .max()
            .unwrap_or(0)
    }
}

/// The BIOS of one VM: its boot disk and what it was asked.
#[derive(Debug, Clone)]
pub struct Bios {
    disk: Disk,
    memory_map: Vec<MemmapEntry>,
    /// Calls served, by (vector, AH).
    pub calls: BTreeMap<(u8, u8), u64>,
    /// Calls answered as unsupported, the first one described.
    pub unsupported: StrayAccesses,
    /// Vectors that reached a stub with no service and no IRQ in service: a CPU exception
    /// in real mode, or an `int` the BIOS does not have. The first one described.
    pub unexpected: StrayAccesses,
}

impl Bios {
    pub fn new(disk: Disk, memory_map: Vec<MemmapEntry>) -> Self {
        Self {
            disk,
            memory_map,
            calls: BTreeMap::new(),
            unsupported: StrayAccesses::default(),
            unexpected: StrayAccesses::default(),
        }
    }

    /// What a BIOS does before it reads the boot sector: the PICs at vectors 08h and 70h
    /// with IRQ 0 (and the cascade) unmasked, the PIT at 18.2 Hz, a blank screen, the tick
    /// count from the RTC.
    pub fn power_on(&self, mem: &GuestMemoryMmap, devices: &mut Devices) {
        let icws = [
            (0x20, 0x11),
            (0x21, 0x08),
            (0x21, 0x04),
            (0x21, 0x01),
            (0xa0, 0x11),
            (0xa1, 0x70),
            (0xa1, 0x02),
            (0xa1, 0x01),
            (0x21, 0xfa),
            (0xa1, 0xff),
            // Channel 0, low then high byte, mode 3, count 65536: 18.2 Hz.
            (0x43, 0x36),
            (0x40, 0x00),
            (0x40, 0x00),
        ];
        for (port, value) in icws {
            devices.port_write(port, &[value]);
        }
        let mut fw = Firmware {
            mem,
            devices,
            memory_map: &self.memory_map,
        };
        video::power_on(&mut fw);
        clock::power_on(&mut fw);
    }

    /// Serve `vector`, whose stub the guest reached with `call`'s registers.
    pub fn serve(
        &mut self,
        vector: u8,
        call: &mut Call,
        mem: &GuestMemoryMmap,
        devices: &mut Devices,
    ) -> Served {
        if let Some(irq) = irq_in_service(vector, devices) {
            end_of_interrupt(irq, devices);
            if irq == 0 {
                let fw = Firmware {
                    mem,
                    devices,
                    memory_map: &self.memory_map,
                };
                clock::tick(&fw);
            }
            return Served::Done;
        }
        if EXCEPTION_VECTORS.contains(&vector) {
            return Served::Exception;
        }
        let ah = call.ah();
        let mut fw = Firmware {
            mem,
            devices,
            memory_map: &self.memory_map,
        };
        let served = match vector {
            0x10 => video::serve(call, &mut fw),
            0x11 => system::equipment(call),
            0x12 => system::conventional_memory(call),
            0x13 => self.disk.serve(call, &mut fw),
            0x15 => system::serve(call, &mut fw),
            0x16 => keyboard(call),
            0x1a => clock::serve(call, &mut fw),
            _ => {
                self.unexpected.note(|| format!("int {vector:02x}h"));
                return Served::Done;
            }
        };
        *self.calls.entry((vector, ah)).or_default() += 1;
        if served == Served::Unsupported {
            self.unsupported
                .note(|| format!("int {vector:02x}h AH={ah:02x}h AL={:02x}h", call.al()));
        }
        served
    }

    /// What the run's report says about the BIOS.
    pub fn report(&self) -> BiosReport {
        BiosReport {
            calls: self.calls.values().sum(),
            summary: self.summary(),
            unsupported: self.unsupported.clone(),
            unexpected: self.unexpected.clone(),
        }
    }

    /// The calls served, one line: `int 10h ×52 (AH 0eh ×52); int 13h ×6 (AH 41h ×1, 42h ×5)`.
    fn summary(&self) -> String {
        let mut by_vector: BTreeMap<u8, Vec<(u8, u64)>> = BTreeMap::new();
        for (&(vector, ah), &count) in &self.calls {
            by_vector.entry(vector).or_default().push((ah, count));
        }
        let parts: Vec<String> = by_vector
            .iter()
            .map(|(vector, functions)| {
                let total: u64 = functions.iter().map(|(_, n)| n).sum();
                let each: Vec<String> = functions
                    .iter()
                    .map(|(ah, n)| format!("{ah:02x}h ×{n}"))
                    .collect();
                format!("int {vector:02x}h ×{total} (AH {})", each.join(", "))
            })
            .collect();
        parts.join("; ")
    }
}

/// The BIOS's part of a run's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BiosReport {
    pub calls: u64,
    /// Calls by vector and function, one line.
    pub summary: String,
    pub unsupported: StrayAccesses,
    pub unexpected: StrayAccesses,
}

impl std::fmt::Display for BiosReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "  BIOS   {} calls served: {}", self.calls, self.summary)?;
        if let Some(first) = &self.unsupported.first {
            writeln!(
                f,
                "  note   {} BIOS calls are not supported here (first: {first}); each returned CF set",
                self.unsupported.count
            )?;
        }
        if let Some(first) = &self.unexpected.first {
            writeln!(
                f,
                "  note   {} interrupts reached a BIOS vector with no service (first: {first}): \
                 a CPU exception in real mode, or an int no BIOS answers; each returned at once",
                self.unexpected.count
            )?;
        }
        Ok(())
    }
}

/// int 16h with no keyboard: nothing is ever waiting, and a blocking read cannot return.
fn keyboard(call: &mut Call) -> Served {
    match call.ah() {
        0x00 | 0x10 => Served::WaitsForKey,
        0x01 | 0x11 => {
            call.set_ax(0);
            call.zero = Some(true);
            Served::Done
        }
        0x02 | 0x12 => {
            call.set_ax(0);
            Served::Done
        }
        0x03 => Served::Done,
        _ => Served::Unsupported,
    }
}

/// The IRQ `vector` is the handler of, when the PIC has that IRQ in service (a CPU exception
/// in real mode uses the same vectors 08h–0Fh, and has none).
fn irq_in_service(vector: u8, devices: &Devices) -> Option<u8> {
    let pic = &devices.pic;
    for (chip, first_irq) in [(&pic.master, 0u8), (&pic.slave, 8u8)] {
        let line = vector.wrapping_sub(chip.vector_base);
        if chip.initialised && line < 8 && chip.isr & (1 << line) != 0 {
            return Some(first_irq + line);
        }
    }
    None
}

/// A non-specific EOI to the PIC(s) the IRQ went through.
fn end_of_interrupt(irq: u8, devices: &mut Devices) {
    if irq >= 8 {
        devices.port_write(crate::devices::pic::SLAVE, &[0x20]);
    }
    devices.port_write(crate::devices::pic::MASTER, &[0x20]);
}

#[cfg(test)]
mod tests;
