//! The PC's pair of 8259A interrupt controllers (master at 0x20, slave at 0xA0 on its IRQ 2)
//! and their edge/level control registers (ELCR, 0x4D0–0x4D1).
//!
//! What kernels do with it: the ICW1–ICW4 initialisation that remaps the vectors (every
//! protected-mode kernel moves IRQ 0–15 off the CPU's exception vectors), masking through
//! OCW1, non-specific and specific EOI through OCW2, reading IRR or ISR through OCW3. Auto-EOI
//! and the spurious IRQ 7/15 of an interrupt that went away before it was acknowledged are
//! modelled; special mask mode, priority rotation and poll mode are accepted and ignored.

/// The master's command and data ports.
pub const MASTER: u16 = 0x20;
/// The slave's.
pub const SLAVE: u16 = 0xa0;
/// ELCR: one bit per IRQ, level-triggered when set.
pub const ELCR: u16 = 0x4d0;

/// The slave's output reaches the master on this line.
const CASCADE_LINE: u8 = 2;

/// What the next write to the data port is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Init {
    #[default]
    Ready,
    Icw2,
    Icw3,
    Icw4,
}

/// One 8259A.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chip {
    /// Interrupt request register: lines asking for service.
    pub irr: u8,
    /// In-service register: lines whose handler has not sent EOI.
    pub isr: u8,
    /// Interrupt mask register (OCW1).
    pub imr: u8,
    /// Vector of line 0 (ICW2, low three bits clear).
    pub vector_base: u8,
    /// The level of each input line, for edge detection.
    lines: u8,
    /// Level-triggered lines (ELCR).
    level: u8,
    init: Init,
    icw4_expected: bool,
    auto_eoi: bool,
    /// OCW3 chose ISR (true) or IRR for reads of the command port.
    read_isr: bool,
    /// Initialised at least once: a kernel that never sets the PIC up gets no interrupts.
    pub initialised: bool,
}

impl Chip {
    /// Raise or lower input `line` (0–7). Edge-triggered lines request on the rising edge.
    fn set_line(&mut self, line: u8, high: bool) {
        let bit = 1 << line;
        let was_high = self.lines & bit != 0;
        if high {
            self.lines |= bit;
            if !was_high || self.level & bit != 0 {
                self.irr |= bit;
            }
        } else {
            self.lines &= !bit;
            if self.level & bit != 0 {
                self.irr &= !bit;
            }
        }
    }

    /// The line that would be serviced next: requested, unmasked, and of higher priority
    /// (a lower number) than every line in service.
    fn next_line(&self) -> Option<u8> {
        let requested = self.irr & !self.imr;
        let line = (0..8).find(|l| requested & (1 << l) != 0)?;
        let blocked = (0..=line).any(|l| self.isr & (1 << l) != 0);
        (!blocked).then_some(line)
    }

    /// INTA for `line`: it moves from IRR to ISR (unless auto-EOI).
    fn acknowledge(&mut self, line: u8) {
        let bit = 1 << line;
        if self.level & bit == 0 {
            self.irr &= !bit;
        }
        if !self.auto_eoi {
            self.isr |= bit;
        }
    }

    fn write_command(&mut self, value: u8) {
        if value & 0x10 != 0 {
            // ICW1: start (again); IRR, IMR and ISR clear.
            *self = Self {
                level: self.level,
                lines: self.lines,
                init: Init::Icw2,
                icw4_expected: value & 1 != 0,
                ..Self::default()
            };
        } else if value & 0x18 == 0 {
            self.write_ocw2(value);
        } else if value & 0x18 == 0x08 && value & 0x02 != 0 {
            // OCW3 with RR set: RIS picks the register reads return.
            self.read_isr = value & 0x01 != 0;
        }
    }

    /// OCW2: end of interrupt, non-specific (0x20) or for line `value & 7` (0x60).
    fn write_ocw2(&mut self, value: u8) {
        match value & 0xe0 {
            0x20 | 0xa0 => {
                if let Some(line) = (0..8).find(|l| self.isr & (1 << l) != 0) {
                    self.isr &= !(1 << line);
                }
            }
            0x60 | 0xe0 => self.isr &= !(1 << (value & 7)),
            _ => {}
        }
    }

    fn write_data(&mut self, value: u8) {
        self.init = match self.init {
            Init::Ready => {
                self.imr = value;
                Init::Ready
            }
            Init::Icw2 => {
                self.vector_base = value & 0xf8;
                Init::Icw3
            }
            Init::Icw3 if self.icw4_expected => Init::Icw4,
            Init::Icw3 => {
                self.initialised = true;
                Init::Ready
            }
            Init::Icw4 => {
                self.auto_eoi = value & 0x02 != 0;
                self.initialised = true;
                Init::Ready
            }
        };
    }

    fn read(&self, data_port: bool) -> u8 {
        match (data_port, self.read_isr) {
            (true, _) => self.imr,
            (false, true) => self.isr,
            (false, false) => self.irr,
        }
    }
}

/// Master and slave, cascaded as on every PC.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pic {
    pub master: Chip,
    pub slave: Chip,
}

impl Pic {
    /// Raise (`high`) or lower IRQ `irq` (0–15).
    pub fn set_irq(&mut self, irq: u8, high: bool) {
        match irq {
            0..=7 => self.master.set_line(irq, high),
            8..=15 => {
                self.slave.set_line(irq - 8, high);
                self.update_cascade();
            }
            _ => {}
        }
    }

    /// The slave's INT output is the master's IRQ 2.
    fn update_cascade(&mut self) {
        let slave_wants = self.slave.next_line().is_some();
        self.master.set_line(CASCADE_LINE, slave_wants);
    }

    /// Whether IRQ `irq` (0–15) could reach the CPU: its chip initialised and the line
    /// unmasked (the cascade line 2 carries the slave's requests, not an IRQ of its own).
    pub fn irq_reaches_cpu(&self, irq: u8) -> bool {
        let (chip, line) = match irq {
            0..=7 => (&self.master, irq),
            8..=15 => (&self.slave, irq - 8),
            _ => return false,
        };
        irq != CASCADE_LINE && chip.initialised && chip.imr & (1 << line) == 0
    }

    /// The vector base both chips were given, when they were given the same one: IRQ n and
    /// IRQ n+8 then arrive at one vector, and a handler cannot tell them (or the chip to
    /// acknowledge) apart.
    pub fn shared_vector_base(&self) -> Option<u8> {
        let both = self.master.initialised && self.slave.initialised;
        (both && self.master.vector_base == self.slave.vector_base)
            .then_some(self.master.vector_base)
    }

    /// Whether the master would interrupt the CPU now.
    pub fn has_pending(&self) -> bool {
        self.master.next_line().is_some()
    }

    /// The CPU acknowledges the interrupt: the vector it gets, or `None` with nothing
    /// pending. An interrupt that went away meanwhile is the spurious IRQ 7 (or 15).
    pub fn acknowledge(&mut self) -> Option<u8> {
        let line = self.master.next_line()?;
        self.master.acknowledge(line);
        if line != CASCADE_LINE {
            return Some(self.master.vector_base + line);
        }
        let vector = match self.slave.next_line() {
            Some(slave_line) => {
                self.slave.acknowledge(slave_line);
                self.slave.vector_base + slave_line
            }
            None => self.slave.vector_base + 7,
        };
        self.update_cascade();
        Some(vector)
    }

    /// A write to 0x20, 0x21, 0xA0, 0xA1, 0x4D0 or 0x4D1.
    pub fn write(&mut self, port: u16, value: u8) {
        match port {
            MASTER => self.master.write_command(value),
            0x21 => self.master.write_data(value),
            SLAVE => self.slave.write_command(value),
            0xa1 => self.slave.write_data(value),
            ELCR => self.master.level = value & 0xf8,
            0x4d1 => self.slave.level = value & 0xde,
            _ => {}
        }
        self.update_cascade();
    }

    pub fn read(&self, port: u16) -> u8 {
        match port {
            MASTER | 0x21 => self.master.read(port == 0x21),
            SLAVE | 0xa1 => self.slave.read(port == 0xa1),
            ELCR => self.master.level,
            0x4d1 => self.slave.level,
            _ => 0xff,
        }
    }
}

impl std::fmt::Display for Chip {
    /// `vectors 0x20-0x27  IMR 0xfe  IRR 0x00  ISR 0x00`, or that ICW1–ICW4 never came.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.initialised {
            return write!(f, "not initialised (no ICW1-ICW4 yet): delivers nothing");
        }
        write!(
            f,
            "vectors {:#04x}-{:#04x}  IMR {:#04x}  IRR {:#04x}  ISR {:#04x}  ELCR {:#04x}{}",
            self.vector_base,
            self.vector_base + 7,
            self.imr,
            self.irr,
            self.isr,
            self.level,
            if self.auto_eoi { "  auto-EOI" } else { "" }
        )
    }
}

impl std::fmt::Display for Pic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "master (0x20): {}", self.master)?;
        writeln!(f, "slave  (0xa0): {}", self.slave)?;
        let unmasked: Vec<String> = (0..16u8)
            .filter(|&irq| self.irq_reaches_cpu(irq))
            .map(|irq| irq.to_string())
            .collect();
        if unmasked.is_empty() {
            write!(f, "no IRQ can reach the CPU")
        } else {
            write!(f, "unmasked IRQs: {}", unmasked.join(" "))
        }
    }
}

#[cfg(test)]
mod tests;
