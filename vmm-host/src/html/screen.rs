//! The VGA text screen drawn in its real colours: one `<pre>` of 25 rows, a `<span>` per run
//! of cells with the same attribute, the 16 CGA colours, the cursor underlined.

use super::escape;
use super::model::ScreenLine;
use std::fmt::Write as _;

/// The CGA/VGA text palette: black, blue, green, cyan, red, magenta, brown, light grey, then
/// their bright forms.
const PALETTE: [&str; 16] = [
    "#000000", "#0000aa", "#00aa00", "#00aaaa", "#aa0000", "#aa00aa", "#aa5500", "#aaaaaa",
    "#555555", "#5555ff", "#55ff55", "#55ffff", "#ff5555", "#ff55ff", "#ffff55", "#ffffff",
];

/// The attribute of each cell of one row (160 hex digits; light grey on black where missing).
fn attributes(row: &str) -> Vec<u8> {
    (0..crate::screen::COLUMNS)
        .map(|i| {
            row.get(2 * i..2 * i + 2)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .unwrap_or(0x07)
        })
        .collect()
}

/// Foreground from the low nibble, background from bits 4–6 (bit 7 blinks on a real VGA).
fn colours(attribute: u8) -> String {
    format!(
        "color:{};background:{}",
        PALETTE[usize::from(attribute & 0x0f)],
        PALETTE[usize::from(attribute >> 4 & 0x07)]
    )
}

/// The screen as an HTML section.
pub fn section(screen: &ScreenLine) -> String {
    let mut html = String::from(
        "<section class=\"screen\"><h2>Screen when the run ended</h2><pre class=\"vga\">",
    );
    for (row, text) in screen.text.iter().enumerate() {
        let cells: Vec<char> = text.chars().collect();
        let attrs = attributes(screen.attributes.get(row).map_or("", String::as_str));
        let mut column = 0;
        while column < crate::screen::COLUMNS {
            let attr = attrs[column];
            let cursor = screen.cursor == Some([row, column]);
            let mut end = column + 1;
            while !cursor
                && end < crate::screen::COLUMNS
                && attrs[end] == attr
                && screen.cursor != Some([row, end])
            {
                end += 1;
            }
            let run: String = (column..end)
                .map(|i| cells.get(i).copied().unwrap_or(' '))
                .collect();
            let class = if cursor { " class=\"cursor\"" } else { "" };
            let _ = write!(
                html,
                "<span style=\"{}\"{class}>{}</span>",
                colours(attr),
                escape(&run)
            );
            column = end;
        }
        html.push('\n');
    }
    html.push_str("</pre></section>");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_one_colour_become_one_span_and_the_cursor_is_marked() {
        let mut text = vec![String::new(); 25];
        text[0] = "OK <go>".into();
        let mut attributes = vec!["07".repeat(80); 25];
        attributes[0] = format!("4f4f{}", "07".repeat(78));
        let html = section(&ScreenLine {
            text,
            attributes,
            cursor: Some([0, 3]),
        });
        assert!(
            html.contains("<span style=\"color:#ffffff;background:#aa0000\">OK</span>"),
            "{html}"
        );
        assert!(html.contains("class=\"cursor\">&lt;</span>"), "{html}");
        assert!(html.contains("go&gt;"), "escaped: {html}");
        assert_eq!(html.matches('\n').count(), 25);
    }
}
