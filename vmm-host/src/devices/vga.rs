//! The VGA's registers at ports 0x3C0–0x3DF, as a text-mode kernel uses them: the CRTC's
//! cursor position, cursor shape and start address (0x3D4 index, 0x3D5 data), the input
//! status register whose retrace bits kernels poll (0x3DA), and the sequencer, graphics,
//! attribute and DAC registers, kept so that they read back what was written.
//!
//! The text itself is guest RAM at 0xB8000 (80×25 cells of character and attribute): writes
//! to it cause no exit, so the host reads the screen from memory when it wants one
//! ([`crate::screen`]). Graphics modes are not drawn.

/// The first port; the range is [`PORTS`] long.
pub const BASE: u16 = 0x3c0;
pub const PORTS: u16 = 0x20;
/// The colour text buffer (32 KiB: eight 80×25 pages, or scrolled by the start address).
pub const TEXT_BUFFER: u64 = 0xb_8000;
pub const TEXT_BUFFER_SIZE: u64 = 0x8000;

const ATTRIBUTE: u16 = 0x3c0;
const ATTRIBUTE_READ: u16 = 0x3c1;
const MISC_WRITE: u16 = 0x3c2;
const SEQUENCER_INDEX: u16 = 0x3c4;
const SEQUENCER_DATA: u16 = 0x3c5;
const DAC_READ_INDEX: u16 = 0x3c7;
const DAC_WRITE_INDEX: u16 = 0x3c8;
const DAC_DATA: u16 = 0x3c9;
const MISC_READ: u16 = 0x3cc;
const GRAPHICS_INDEX: u16 = 0x3ce;
const GRAPHICS_DATA: u16 = 0x3cf;
const CRTC_INDEX: u16 = 0x3d4;
const CRTC_DATA: u16 = 0x3d5;
const INPUT_STATUS: u16 = 0x3da;

/// CRTC registers: cursor start (bit 5 hides the cursor), start address, cursor location.
const CURSOR_START: usize = 0x0a;
const START_HIGH: usize = 0x0c;
const START_LOW: usize = 0x0d;
const CURSOR_HIGH: usize = 0x0e;
const CURSOR_LOW: usize = 0x0f;
const CURSOR_DISABLED: u8 = 1 << 5;
/// Miscellaneous output as a BIOS leaves it in colour text mode (CRTC at 0x3Dx).
const MISC_COLOUR_TEXT: u8 = 0x67;

pub use crate::screen::TextMode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vga {
    crtc_index: u8,
    crtc: [u8; 0x19],
    sequencer_index: u8,
    sequencer: [u8; 5],
    graphics_index: u8,
    graphics: [u8; 9],
    attribute_index: u8,
    attribute: [u8; 0x15],
    /// The attribute controller's flip-flop: the next 0x3C0 write is data (true) or an index.
    attribute_data_next: bool,
    misc: u8,
    dac_index: u16,
    dac: Box<[u8; 768]>,
    /// Toggled at each status read, so both polling loops (wait while, wait until) end.
    retrace: bool,
    /// Register writes the guest made, for the report of a flood.
    pub writes: u64,
}

impl Default for Vga {
    fn default() -> Self {
        let mut crtc = [0u8; 0x19];
        // A BIOS's 80×25 text mode: underline cursor on scan lines 13–14.
        crtc[CURSOR_START] = 0x0d;
        crtc[CURSOR_START + 1] = 0x0e;
        Self {
            crtc_index: 0,
            crtc,
            sequencer_index: 0,
            sequencer: [0; 5],
            graphics_index: 0,
            graphics: [0; 9],
            attribute_index: 0,
            attribute: [0; 0x15],
            attribute_data_next: false,
            misc: MISC_COLOUR_TEXT,
            dac_index: 0,
            dac: Box::new([0; 768]),
            retrace: false,
            writes: 0,
        }
    }
}

/// `registers[index]`, or the write dropped / 0 read when the index is past them.
fn slot(registers: &mut [u8], index: u8) -> Option<&mut u8> {
    registers.get_mut(usize::from(index))
}

impl Vga {
    pub fn write(&mut self, port: u16, value: u8) {
        self.writes += 1;
        match port {
            CRTC_INDEX => self.crtc_index = value,
            CRTC_DATA => {
                if let Some(r) = slot(&mut self.crtc, self.crtc_index) {
                    *r = value;
                }
            }
            SEQUENCER_INDEX => self.sequencer_index = value,
            SEQUENCER_DATA => {
                if let Some(r) = slot(&mut self.sequencer, self.sequencer_index) {
                    *r = value;
                }
            }
            GRAPHICS_INDEX => self.graphics_index = value,
            GRAPHICS_DATA => {
                if let Some(r) = slot(&mut self.graphics, self.graphics_index) {
                    *r = value;
                }
            }
            ATTRIBUTE => self.write_attribute(value),
            MISC_WRITE => self.misc = value,
            DAC_READ_INDEX | DAC_WRITE_INDEX => self.dac_index = u16::from(value) * 3,
            DAC_DATA => {
                self.dac[usize::from(self.dac_index)] = value & 0x3f;
                self.dac_index = (self.dac_index + 1) % 768;
            }
            _ => {}
        }
    }

    fn write_attribute(&mut self, value: u8) {
        if self.attribute_data_next {
            if let Some(r) = slot(&mut self.attribute, self.attribute_index) {
                *r = value;
            }
        } else {
            self.attribute_index = value & 0x1f;
        }
        self.attribute_data_next = !self.attribute_data_next;
    }

    pub fn read(&mut self, port: u16) -> u8 {
        let get = |registers: &[u8], index: u8| registers.get(usize::from(index)).copied();
        match port {
            CRTC_INDEX => self.crtc_index,
            CRTC_DATA => get(&self.crtc, self.crtc_index).unwrap_or(0),
            SEQUENCER_INDEX => self.sequencer_index,
            SEQUENCER_DATA => get(&self.sequencer, self.sequencer_index).unwrap_or(0),
            GRAPHICS_INDEX => self.graphics_index,
            GRAPHICS_DATA => get(&self.graphics, self.graphics_index).unwrap_or(0),
            ATTRIBUTE => self.attribute_index,
            ATTRIBUTE_READ => get(&self.attribute, self.attribute_index).unwrap_or(0),
            MISC_READ => self.misc,
            DAC_DATA => {
                let value = self.dac[usize::from(self.dac_index)];
                self.dac_index = (self.dac_index + 1) % 768;
                value
            }
            INPUT_STATUS => {
                // Reading it also resets the attribute flip-flop to "index next".
                self.attribute_data_next = false;
                self.retrace = !self.retrace;
                if self.retrace { 0x09 } else { 0x00 }
            }
            _ => 0xff,
        }
    }

    /// The text screen's start and cursor, as the CRTC has them.
    pub fn text_mode(&self) -> TextMode {
        let word = |high: usize, low: usize| u16::from_be_bytes([self.crtc[high], self.crtc[low]]);
        let hidden = self.crtc[CURSOR_START] & CURSOR_DISABLED != 0;
        TextMode {
            start: word(START_HIGH, START_LOW),
            cursor: (!hidden).then(|| word(CURSOR_HIGH, CURSOR_LOW)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_and_start_address_are_what_the_crtc_was_told() {
        let mut vga = Vga::default();
        assert_eq!(
            vga.text_mode(),
            TextMode {
                start: 0,
                cursor: Some(0)
            }
        );
        // Row 2, column 5 (cell 165) the way every tutorial writes it.
        for (index, value) in [(0x0f, 165u8), (0x0e, 0), (0x0c, 0x01), (0x0d, 0x40)] {
            vga.write(CRTC_INDEX, index);
            vga.write(CRTC_DATA, value);
        }
        assert_eq!(
            vga.text_mode(),
            TextMode {
                start: 0x140,
                cursor: Some(165)
            }
        );
        vga.write(CRTC_INDEX, 0x0f);
        assert_eq!(vga.read(CRTC_DATA), 165, "reads back");
        vga.write(CRTC_INDEX, 0x0a);
        vga.write(CRTC_DATA, 0x20);
        assert_eq!(vga.text_mode().cursor, None, "hidden");
        assert_eq!(vga.writes, 11);
    }

    #[test]
    fn status_polling_loops_end_and_the_attribute_flip_flop_resets() {
        let mut vga = Vga::default();
        let first = vga.read(INPUT_STATUS) & 0x08;
        let second = vga.read(INPUT_STATUS) & 0x08;
        assert_ne!(first, second, "the retrace bit changes between reads");
        vga.write(ATTRIBUTE, 0x10); // index
        vga.write(ATTRIBUTE, 0x01); // data
        vga.write(ATTRIBUTE, 0x10); // index again
        vga.read(INPUT_STATUS); // resets: the next write is an index
        vga.write(ATTRIBUTE, 0x10);
        vga.write(ATTRIBUTE, 0x0c);
        vga.write(ATTRIBUTE, 0x10);
        assert_eq!(vga.read(ATTRIBUTE_READ), 0x0c);
    }

    #[test]
    fn out_of_range_indices_and_unknown_ports_are_harmless() {
        let mut vga = Vga::default();
        vga.write(CRTC_INDEX, 0xff);
        vga.write(CRTC_DATA, 1);
        assert_eq!(vga.read(CRTC_DATA), 0);
        assert_eq!(vga.read(0x3c6), 0xff);
        assert_eq!(vga.read(MISC_READ), MISC_COLOUR_TEXT);
        vga.write(DAC_WRITE_INDEX, 255);
        for v in [0x3f, 0x20, 0x10, 0x01] {
            vga.write(DAC_DATA, v);
        }
        vga.write(DAC_READ_INDEX, 255);
        let first = [vga.read(DAC_DATA), vga.read(DAC_DATA), vga.read(DAC_DATA)];
        assert_eq!(first, [0x3f, 0x20, 0x10]);
        assert_eq!(vga.read(DAC_DATA), 0x01, "wrapped to entry 0");
    }
}
