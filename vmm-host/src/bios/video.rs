//! int 10h: the video services boot loaders use in 80×25 colour text mode 3 — teletype
//! output (also copied to the console, as the debug port 0xE9 is), the cursor (kept in the
//! BIOS data area and in the CRTC's registers, where the screen report reads it), scrolling,
//! characters with attributes, strings, and the mode queries. Graphics modes are not drawn:
//! setting one is answered as unsupported.

use super::rom::{BDA, bda};
use super::{Call, Firmware, Served};
use crate::devices::DEBUG_CONSOLE;
use crate::devices::vga::TEXT_BUFFER;

const COLUMNS: u8 = 80;
const ROWS: u8 = 25;
/// Light grey on black, what a cleared screen holds.
pub const NORMAL: u8 = 0x07;
const CRTC_INDEX: u16 = 0x3d4;

pub(super) fn serve(call: &mut Call, fw: &mut Firmware) -> Served {
    match call.ah() {
        0x00 => set_mode(call, fw),
        0x01 => {
            let shape = u16::from_be_bytes([call.ch(), call.cl()]);
            // The data area keeps the end scan line first.
            fw.write_u16(
                BDA + bda::CURSOR_SHAPE,
                u16::from_le_bytes([call.cl(), call.ch()]),
            );
            crtc(fw, 0x0a, shape.to_be_bytes()[0]);
            crtc(fw, 0x0b, shape.to_be_bytes()[1]);
            Served::Done
        }
        0x02 => {
            set_cursor(fw, call.dh().min(ROWS - 1), call.dl().min(COLUMNS - 1));
            Served::Done
        }
        0x03 => {
            let (row, column) = cursor(fw);
            call.set_dx(u16::from_be_bytes([row, column]));
            let shape = fw.read_u16(BDA + bda::CURSOR_SHAPE).to_le_bytes();
            call.set_cx(u16::from_be_bytes([shape[1], shape[0]]));
            Served::Done
        }
        0x05 if call.al() == 0 => Served::Done,
        0x06 | 0x07 => {
            scroll(fw, call);
            Served::Done
        }
        0x08 => {
            let (row, column) = cursor(fw);
            let cell = fw.read_u16(cell_address(row, column));
            // The cell is character then attribute: AL and AH.
            call.set_ax(cell);
            Served::Done
        }
        0x09 | 0x0a => {
            let attribute = (call.ah() == 0x09).then(|| call.bl());
            repeat_character(fw, call.al(), attribute, call.cx());
            Served::Done
        }
        0x0e => {
            teletype(fw, call.al());
            Served::Done
        }
        0x0f => {
            let mode = fw.read_u8(BDA + bda::VIDEO_MODE);
            call.set_ax(u16::from_be_bytes([COLUMNS, mode]));
            call.regs.rbx &= !0xff00; // BH: the active page, always 0
            Served::Done
        }
        0x12 if call.bl() == 0x10 => {
            // EGA information: colour, 256 KiB, no feature bits.
            call.set_bx(0x0003);
            call.set_cx(0);
            Served::Done
        }
        0x13 => write_string(call, fw),
        0x1a if call.al() == 0 => {
            // Display combination: VGA with a colour display.
            call.set_al(0x1a);
            call.set_bx(0x0008);
            Served::Done
        }
        _ => Served::Unsupported,
    }
}

/// AH=00h: text modes 2, 3 and 7 clear the screen (unless AL bit 7 asks not to); others are
/// graphics modes this host does not draw.
fn set_mode(call: &mut Call, fw: &mut Firmware) -> Served {
    let mode = call.al() & 0x7f;
    if !matches!(mode, 2 | 3 | 7) {
        return Served::Unsupported;
    }
    fw.write_u8(BDA + bda::VIDEO_MODE, 3);
    if call.al() & 0x80 == 0 {
        clear(fw, 0, 0, ROWS - 1, COLUMNS - 1, NORMAL);
    }
    set_cursor(fw, 0, 0);
    // AL after a mode set: the "mode set" byte most BIOSes return for text modes.
    call.set_al(0x30);
    Served::Done
}

/// Fill the screen with blanks and put the cursor home: what a BIOS does at power-on.
pub(super) fn power_on(fw: &mut Firmware) {
    clear(fw, 0, 0, ROWS - 1, COLUMNS - 1, NORMAL);
    set_cursor(fw, 0, 0);
}

fn cell_address(row: u8, column: u8) -> u64 {
    TEXT_BUFFER + (u64::from(row) * u64::from(COLUMNS) + u64::from(column)) * 2
}

/// Page 0's cursor as the BIOS data area holds it: (row, column).
fn cursor(fw: &Firmware) -> (u8, u8) {
    let [column, row] = fw.read_u16(BDA + bda::CURSOR).to_le_bytes();
    (row.min(ROWS - 1), column.min(COLUMNS - 1))
}

fn set_cursor(fw: &mut Firmware, row: u8, column: u8) {
    fw.write_u16(BDA + bda::CURSOR, u16::from_le_bytes([column, row]));
    let [high, low] = (u16::from(row) * u16::from(COLUMNS) + u16::from(column)).to_be_bytes();
    crtc(fw, 0x0e, high);
    crtc(fw, 0x0f, low);
}

/// A CRTC register, written through its ports as a BIOS does.
fn crtc(fw: &mut Firmware, index: u8, value: u8) {
    fw.devices.port_write(CRTC_INDEX, &[index]);
    fw.devices.port_write(CRTC_INDEX + 1, &[value]);
}

/// AH=0Eh: write at the cursor and move it; CR, LF, backspace and bell act as on a
/// terminal, and the screen scrolls at the bottom. The byte also goes to the console.
fn teletype(fw: &mut Firmware, byte: u8) {
    fw.devices.port_write(DEBUG_CONSOLE, &[byte]);
    let (mut row, mut column) = cursor(fw);
    match byte {
        b'\r' => column = 0,
        b'\n' => row += 1,
        0x08 => column = column.saturating_sub(1),
        0x07 => {}
        _ => {
            fw.write_u8(cell_address(row, column), byte);
            column += 1;
            if column == COLUMNS {
                column = 0;
                row += 1;
            }
        }
    }
    if row == ROWS {
        scroll_window(fw, Window::screen(), 1, NORMAL, true);
        row = ROWS - 1;
    }
    set_cursor(fw, row, column);
}

/// AH=09h/0Ah: `count` copies of `byte` from the cursor on, the cursor left where it is.
fn repeat_character(fw: &mut Firmware, byte: u8, attribute: Option<u8>, count: u16) {
    let (row, column) = cursor(fw);
    let start = u64::from(row) * u64::from(COLUMNS) + u64::from(column);
    let cells = u64::from(count).min(u64::from(ROWS) * u64::from(COLUMNS) - start);
    for cell in start..start + cells {
        let at = TEXT_BUFFER + cell * 2;
        fw.write_u8(at, byte);
        if let Some(attribute) = attribute {
            fw.write_u8(at + 1, attribute);
        }
    }
}

/// AH=13h: CX bytes at ES:BP at row DH, column DL; AL bit 1 says the string alternates
/// characters and attributes, bit 0 that the cursor moves.
fn write_string(call: &mut Call, fw: &mut Firmware) -> Served {
    let mode = call.al();
    let with_attributes = mode & 2 != 0;
    let step = if with_attributes { 2 } else { 1 };
    let length = usize::from(call.cx()) * step;
    let bp = crate::narrow::low_u16(call.regs.rbp);
    let Some(text) = fw.read(Call::at(call.es, bp), length) else {
        return Served::Unsupported;
    };
    let saved = cursor(fw);
    set_cursor(fw, call.dh().min(ROWS - 1), call.dl().min(COLUMNS - 1));
    for pair in text.chunks(step) {
        let (row, column) = cursor(fw);
        let attribute = if with_attributes { pair[1] } else { call.bl() };
        teletype(fw, pair[0]);
        if !matches!(pair[0], b'\r' | b'\n' | 0x07 | 0x08) {
            fw.write_u8(cell_address(row, column) + 1, attribute);
        }
    }
    if mode & 1 == 0 {
        set_cursor(fw, saved.0, saved.1);
    }
    Served::Done
}

/// A rectangle of the screen, inclusive.
#[derive(Debug, Clone, Copy)]
struct Window {
    top: u8,
    left: u8,
    bottom: u8,
    right: u8,
}

impl Window {
    fn screen() -> Self {
        Self {
            top: 0,
            left: 0,
            bottom: ROWS - 1,
            right: COLUMNS - 1,
        }
    }
}

/// AH=06h (up) / 07h (down): AL lines (0 clears the window), BH the attribute of new lines,
/// CH/CL the top-left corner and DH/DL the bottom-right.
fn scroll(fw: &mut Firmware, call: &Call) {
    let window = Window {
        top: call.ch().min(ROWS - 1),
        left: call.cl().min(COLUMNS - 1),
        bottom: call.dh().min(ROWS - 1),
        right: call.dl().min(COLUMNS - 1),
    };
    if window.top > window.bottom || window.left > window.right {
        return;
    }
    scroll_window(fw, window, call.al(), call.bh(), call.ah() == 0x06);
}

fn scroll_window(fw: &mut Firmware, w: Window, lines: u8, attribute: u8, up: bool) {
    let height = w.bottom - w.top + 1;
    if lines == 0 || lines >= height {
        clear(fw, w.top, w.left, w.bottom, w.right, attribute);
        return;
    }
    let width = usize::from(w.right - w.left + 1) * 2;
    let moved: Vec<u8> = if up {
        (w.top..=w.bottom - lines).collect()
    } else {
        (w.top + lines..=w.bottom).rev().collect()
    };
    for row in moved {
        let from = if up { row + lines } else { row - lines };
        if let Some(cells) = fw.read(cell_gpa(from, w.left), width) {
            fw.write(cell_gpa(row, w.left), &cells);
        }
    }
    let (first, last) = if up {
        (w.bottom - lines + 1, w.bottom)
    } else {
        (w.top, w.top + lines - 1)
    };
    clear(fw, first, w.left, last, w.right, attribute);
}

fn cell_gpa(row: u8, column: u8) -> crate::addr::Gpa {
    crate::addr::Gpa::new(cell_address(row, column))
}

fn clear(fw: &mut Firmware, top: u8, left: u8, bottom: u8, right: u8, attribute: u8) {
    let blank: Vec<u8> = (left..=right).flat_map(|_| [b' ', attribute]).collect();
    for row in top..=bottom {
        fw.write(cell_gpa(row, left), &blank);
    }
}
