//! The VGA text screen as the user would have seen it: 80×25 cells of a code page 437
//! character and a colour attribute, read from the text buffer at 0xB8000 where the CRTC's
//! start address says the screen begins.

use codepage_437::CP437_WINGDINGS;
use std::fmt;

pub const COLUMNS: usize = 80;
pub const ROWS: usize = 25;
const CELLS: usize = COLUMNS * ROWS;

/// Where the screen starts in the text buffer and where the cursor is, in cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextMode {
    pub start: u16,
    /// `None` when the cursor is switched off (CRTC 0x0A bit 5).
    pub cursor: Option<u16>,
}

/// One screenful: character (low byte) and attribute (high byte) of each cell, row by row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Screen {
    cells: Vec<u16>,
    /// Row and column of the cursor, when it is on and inside the screen.
    pub cursor: Option<(usize, usize)>,
}

/// The bytes of a `buffer_len`-byte text buffer the screen at `mode` shows: its 4000 bytes,
/// or the whole buffer when the screen wraps past the buffer's end. Readers copy only these.
pub fn window(mode: TextMode, buffer_len: usize) -> std::ops::Range<usize> {
    let cells = buffer_len / 2;
    let first = if cells == 0 {
        0
    } else {
        usize::from(mode.start) % cells
    };
    if first + CELLS <= cells {
        first * 2..(first + CELLS) * 2
    } else {
        0..buffer_len
    }
}

impl Screen {
    /// The screen that starts `mode.start` cells into `buffer` (the text buffer), wrapping at
    /// the buffer's end as the VGA's address counter does.
    pub fn from_buffer(buffer: &[u8], mode: TextMode) -> Self {
        let buffer_cells = buffer.len() / 2;
        let cells = (0..CELLS)
            .map(|i| {
                if buffer_cells == 0 {
                    return 0;
                }
                let at = (usize::from(mode.start) + i) % buffer_cells * 2;
                u16::from_le_bytes([buffer[at], buffer[at + 1]])
            })
            .collect();
        // The cursor is an address in the buffer, shown where the screen's scan reaches it,
        // wrapping as the screen does.
        let cursor = mode
            .cursor
            .filter(|_| buffer_cells > 0)
            .map(|c| {
                (usize::from(c) + buffer_cells - usize::from(mode.start) % buffer_cells)
                    % buffer_cells
            })
            .filter(|&c| c < CELLS)
            .map(|c| (c / COLUMNS, c % COLUMNS));
        Self { cells, cursor }
    }

    /// Nothing but spaces and NULs, whatever their colours.
    pub fn is_blank(&self) -> bool {
        self.cells.iter().all(|&c| matches!(c & 0xff, 0 | 0x20))
    }

    /// The character at `row`, `column` (NUL shows as a space, as on the screen).
    pub fn char_at(&self, row: usize, column: usize) -> char {
        match self.cells[row * COLUMNS + column] & 0xff {
            0 => ' ',
            byte => CP437_WINGDINGS.decode(byte.to_le_bytes()[0]),
        }
    }

    /// The colour attribute at `row`, `column`: background in the high nibble.
    pub fn attribute_at(&self, row: usize, column: usize) -> u8 {
        self.cells[row * COLUMNS + column].to_le_bytes()[1]
    }

    /// All 25 rows as text, trailing spaces removed.
    pub fn lines(&self) -> Vec<String> {
        (0..ROWS)
            .map(|row| {
                let line: String = (0..COLUMNS).map(|c| self.char_at(row, c)).collect();
                line.trim_end().to_string()
            })
            .collect()
    }

    /// The rows up to the last one with text, joined by newlines: what scenarios search.
    pub fn text(&self) -> String {
        let mut lines = self.lines();
        while lines.last().is_some_and(String::is_empty) {
            lines.pop();
        }
        lines.join("\n")
    }

    /// Each row's attributes as 160 hex digits, for the HTML report's colours.
    pub fn attribute_rows(&self) -> Vec<String> {
        (0..ROWS)
            .map(|row| {
                (0..COLUMNS)
                    .map(|c| format!("{:02x}", self.attribute_at(row, c)))
                    .collect()
            })
            .collect()
    }
}

impl fmt::Display for Screen {
    /// The rows up to the last with text, in a frame 80 columns wide; the cursor's place in
    /// the heading line the caller writes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rule = format!("  +{}+", "-".repeat(COLUMNS));
        writeln!(f, "{rule}")?;
        let lines = self.lines();
        let shown = lines
            .iter()
            .rposition(|l| !l.is_empty())
            .map_or(0, |i| i + 1);
        for line in &lines[..shown] {
            let pad = COLUMNS - line.chars().count();
            writeln!(f, "  |{line}{}|", " ".repeat(pad))?;
        }
        if shown < ROWS {
            writeln!(
                f,
                "  |{:<COLUMNS$}|",
                format!(" (rows {}–{ROWS} blank)", shown + 1)
            )?;
        }
        write!(f, "{rule}")
    }
}

/// "row 3, column 12" (1-based, as people count rows), or "off".
pub fn cursor_words(cursor: Option<(usize, usize)>) -> String {
    cursor.map_or("off".into(), |(row, column)| {
        format!("row {}, column {}", row + 1, column + 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A text buffer with `text` written from cell `at` in attribute `attr`.
    fn buffer(at: usize, text: &[u8], attr: u8) -> Vec<u8> {
        let mut b = vec![0u8; 0x8000];
        for (i, &ch) in text.iter().enumerate() {
            let cell = (at + i) % (b.len() / 2);
            b[cell * 2] = ch;
            b[cell * 2 + 1] = attr;
        }
        b
    }

    #[test]
    fn text_lands_on_its_row_and_column_with_its_colour() {
        let b = buffer(2 * COLUMNS + 4, b"Hello \x01 \xc9\xcd\xbb", 0x1f);
        let screen = Screen::from_buffer(
            &b,
            TextMode {
                start: 0,
                cursor: Some(165),
            },
        );
        assert_eq!(screen.lines()[2], "    Hello ☺ ╔═╗");
        assert_eq!(screen.text(), "\n\n    Hello ☺ ╔═╗");
        assert_eq!(screen.attribute_at(2, 4), 0x1f);
        assert_eq!(screen.cursor, Some((2, 5)));
        assert_eq!(cursor_words(screen.cursor), "row 3, column 6");
        assert!(!screen.is_blank());
        assert_eq!(&screen.attribute_rows()[2][8..12], "1f1f");
    }

    #[test]
    fn the_start_address_scrolls_and_wraps_at_the_buffer_end() {
        let last_cell = 0x8000 / 2 - 1;
        let b = buffer(last_cell, b"AB", 0x07);
        // 'B' wrapped to cell 0; the screen starts at the last cell.
        let screen = Screen::from_buffer(
            &b,
            TextMode {
                start: u16::try_from(last_cell).unwrap(),
                cursor: Some(0),
            },
        );
        assert_eq!(screen.lines()[0], "AB");
        assert_eq!(
            screen.cursor,
            Some((0, 1)),
            "the cursor wrapped with the screen"
        );
        let far = Screen::from_buffer(
            &b,
            TextMode {
                start: 0,
                cursor: Some(2000),
            },
        );
        assert_eq!(far.cursor, None, "below the last row");
    }

    #[test]
    fn a_blank_screen_and_the_frame() {
        let blank = Screen::from_buffer(
            &buffer(0, b"    ", 0x4f),
            TextMode {
                start: 0,
                cursor: None,
            },
        );
        assert!(blank.is_blank());
        assert_eq!(blank.text(), "");
        let screen = Screen::from_buffer(
            &buffer(COLUMNS, b"x", 7),
            TextMode {
                start: 0,
                cursor: None,
            },
        );
        let framed = screen.to_string();
        let rows: Vec<&str> = framed.lines().collect();
        assert_eq!(rows.len(), 5, "{framed}");
        assert_eq!(rows[2], format!("  |x{}|", " ".repeat(79)));
        assert!(rows[3].starts_with("  | (rows 3–25 blank)"), "{}", rows[3]);
        assert!(rows.iter().all(|r| r.chars().count() == 84), "{framed}");
        assert_eq!(cursor_words(None), "off");
    }
}
