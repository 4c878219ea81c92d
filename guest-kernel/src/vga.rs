//! A text console on the VGA screen, the way kernel tutorials write one: characters and
//! colours straight into the buffer at 0xB8000, scrolling by copying rows up, and the
//! hardware cursor moved through the CRTC's ports 0x3D4/0x3D5.
//!
//! The `vga` workload draws a boot log long enough to scroll ([`draw_boot_log`]), then
//! dereferences a null pointer; the fatal-exception report writes its summary in white on red, as a kernel's
//! panic screen would, so the host's report shows the screen the user would have seen.

use core::fmt::{self, Write as _};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use x86_64::instructions::port::Port;

const BUFFER: usize = 0xb_8000;
const COLUMNS: usize = 80;
const ROWS: usize = 25;
/// Light grey on black, white on blue, white on red.
pub const NORMAL: u8 = 0x07;
pub const TITLE: u8 = 0x1f;
pub const ALERT: u8 = 0x4f;
/// Lines the workload writes after its title: enough to scroll the first ones off.
const LOG_LINES: usize = 30;

/// The row the next line goes to.
static ROW: AtomicUsize = AtomicUsize::new(0);
/// Whether a workload drew on the screen: only then does a fatal exception paint on it.
static IN_USE: AtomicBool = AtomicBool::new(false);

fn cell(row: usize, column: usize) -> *mut u16 {
    (BUFFER + (row * COLUMNS + column) * 2) as *mut u16
}

fn put(row: usize, column: usize, byte: u8, attribute: u8) {
    // SAFETY: the text buffer lies inside the identity map of every VMM variant that runs
    // this workload (boxkernel's 0–64 MiB); `row` and `column` are inside the screen.
    unsafe { cell(row, column).write_volatile(u16::from_le_bytes([byte, attribute])) };
}

fn get(row: usize, column: usize) -> u16 {
    // SAFETY: as in `put`.
    unsafe { cell(row, column).read_volatile() }
}

/// `text` on `row`, padded with blanks to the right edge.
fn write_row(row: usize, text: &[u8], attribute: u8) {
    for column in 0..COLUMNS {
        put(
            row,
            column,
            text.get(column).copied().unwrap_or(b' '),
            attribute,
        );
    }
}

fn scroll() {
    for row in 1..ROWS {
        for column in 0..COLUMNS {
            let moved = get(row, column);
            // SAFETY: as in `put`.
            unsafe { cell(row - 1, column).write_volatile(moved) };
        }
    }
    write_row(ROWS - 1, b"", NORMAL);
}

fn set_cursor(row: usize, column: usize) {
    set_cursor_cell(row * COLUMNS + column);
}

/// The cursor at `cell` of the text buffer (the CRTC counts from the buffer, not the screen).
fn set_cursor_cell(cell: usize) {
    let [low, high] = u16::try_from(cell).unwrap_or(0).to_le_bytes();
    for (index, value) in [(0x0f, low), (0x0e, high)] {
        let mut select: Port<u8> = Port::new(0x3d4);
        let mut data: Port<u8> = Port::new(0x3d5);
        // SAFETY: the CRTC's index and data ports only move the cursor.
        unsafe {
            select.write(index);
            data.write(value);
        }
    }
}

/// One line at the next row (scrolling at the bottom), the cursor after it.
pub fn write_line(text: &[u8], attribute: u8) {
    IN_USE.store(true, Ordering::Relaxed);
    let mut row = ROW.load(Ordering::Relaxed);
    if row == ROWS {
        scroll();
        row = ROWS - 1;
    }
    write_row(row, text, attribute);
    ROW.store(row + 1, Ordering::Relaxed);
    set_cursor((row + 1).min(ROWS - 1), 0);
}

/// A line of at most 80 bytes built with `write!`; the rest is cut.
struct Line {
    bytes: [u8; COLUMNS],
    len: usize,
}

impl fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len < COLUMNS {
                self.bytes[self.len] = b;
                self.len += 1;
            }
        }
        Ok(())
    }
}

fn line(args: fmt::Arguments<'_>) -> Line {
    let mut line = Line {
        bytes: [b' '; COLUMNS],
        len: 0,
    };
    let _ = line.write_fmt(args);
    line
}

/// The fatal-exception summary as the next line, white on red, when the screen is in use.
pub fn paint_fatal(args: fmt::Arguments<'_>) {
    if IN_USE.load(Ordering::Relaxed) {
        let text = line(args);
        write_line(&text.bytes[..text.len], ALERT);
    }
}

/// Clear the screen, then write a title and a boot log long enough to scroll.
pub fn draw_boot_log() {
    for row in 0..ROWS {
        write_row(row, b"", NORMAL);
    }
    ROW.store(0, Ordering::Relaxed);
    write_line(b"guest-kernel: VGA text console, 80x25 at 0xb8000", TITLE);
    for n in 1..=LOG_LINES {
        let text = line(format_args!("[vga] boot log line {n:2} of {LOG_LINES}"));
        write_line(&text.bytes[..text.len], NORMAL);
    }
    crate::kprintln!(
        "[vga] wrote a title and {LOG_LINES} lines to the screen; the first {} scrolled off",
        LOG_LINES + 1 - ROWS
    );
}

/// Cells in the 32 KiB text buffer.
const BUFFER_CELLS: usize = 0x4000;

/// Hostile: garbage to every VGA register and the whole text buffer, `rounds` times; then the
/// screen's start address near the buffer's end, so the screen wraps to its beginning, with
/// one line written there. The host must survive the ports and draw the wrapped screen.
pub fn flood(rounds: u32) {
    let mut seed: u32 = 0x1234_5678;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    for _ in 0..rounds {
        let [a, b, c, d] = next().to_le_bytes();
        let port = 0x3c0 + u16::from(a % 0x20);
        let mut any: Port<u8> = Port::new(port);
        let mut index: Port<u8> = Port::new(0x3d4);
        let mut data: Port<u8> = Port::new(0x3d5);
        // SAFETY: VGA register ports only; no memory is touched.
        unsafe {
            any.write(b);
            let _ = any.read();
            index.write(c);
            data.write(d);
        }
    }
    for i in 0..BUFFER_CELLS {
        let [ch, attr, ..] = next().to_le_bytes();
        // SAFETY: inside the 32 KiB text buffer, identity-mapped as in `put`.
        unsafe { ((BUFFER + i * 2) as *mut u16).write_volatile(u16::from_le_bytes([ch, attr])) };
    }
    // The screen starts three rows before the buffer's end: its fourth row is the buffer's first.
    let start = BUFFER_CELLS - 3 * COLUMNS;
    let message = b"[hostile] VGA flood done; this row wrapped to the buffer's start";
    for (row, at) in [(0usize, start), (3, 0)] {
        for column in 0..COLUMNS {
            let ch = if row == 3 {
                message.get(column).copied().unwrap_or(b' ')
            } else {
                b'-'
            };
            // SAFETY: as above; `at + column` stays inside the buffer.
            unsafe {
                ((BUFFER + (at + column) * 2) as *mut u16)
                    .write_volatile(u16::from_le_bytes([ch, NORMAL]))
            };
        }
    }
    let [high, low] = u16::try_from(start).unwrap_or(0).to_be_bytes();
    for (index, value) in [(0x0c, high), (0x0d, low), (0x0a, 0x0d)] {
        let mut select: Port<u8> = Port::new(0x3d4);
        let mut data: Port<u8> = Port::new(0x3d5);
        // SAFETY: the CRTC's start address and cursor shape.
        unsafe {
            select.write(index);
            data.write(value);
        }
    }
    // The cursor is an address in the buffer: after the message, shown on the fourth row.
    set_cursor_cell(message.len());
}
