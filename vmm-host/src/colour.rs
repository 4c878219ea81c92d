//! Colour on a terminal, as cargo and rustc use it: the report's text is painted line by line
//! by what each line says (headings bold, the fault and every not-present or faulting level in
//! red, the page a walk reaches in green), and anstream drops the paint again wherever colour
//! is off (`--color never`, `NO_COLOR`, a pipe or a file), so that output stays byte for byte
//! what it is without colour.

use anstyle::{AnsiColor, Style};

const HEADING: Style = Style::new().bold();
const BAD: Style = AnsiColor::Red.on_default().bold();
const GOOD: Style = AnsiColor::Green.on_default();
const LABEL: Style = Style::new().bold();

/// `text` with ANSI styles added; stripping them gives `text` back.
pub fn paint(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for piece in text.split_inclusive('\n') {
        let (line, newline) = match piece.strip_suffix('\n') {
            Some(line) => (line, "\n"),
            None => (piece, ""),
        };
        out.push_str(&paint_line(line));
        out.push_str(newline);
    }
    out
}

fn styled(style: Style, text: &str) -> String {
    format!("{}{text}{}", style.render(), style.render_reset())
}

/// One line: a whole-line style, or a bold label followed by its text.
fn paint_line(line: &str) -> String {
    if line.starts_with("== ") || line.starts_with("-- ") {
        return styled(HEADING, line);
    }
    if line.contains("not present") || line.starts_with("  -> stops") || line.contains(" FAIL") {
        return styled(BAD, line);
    }
    if line.starts_with("  -> ") || line.contains(" PASS") {
        return styled(GOOD, line);
    }
    for label in [
        "fault",
        "cause",
        "where",
        "during",
        "next",
        "explanation",
        "instruction",
    ] {
        let prefix = format!("  {label} ");
        if let Some(rest) = line.strip_prefix(&prefix) {
            let rest_style = if label == "fault" { BAD } else { Style::new() };
            return format!("  {}{}", styled(LABEL, label), {
                let text = format!(" {rest}");
                if rest_style == Style::new() {
                    text
                } else {
                    styled(rest_style, &text)
                }
            });
        }
    }
    line.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Remove every `ESC [ … m` sequence.
    fn strip(text: &str) -> String {
        let mut out = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    const REPORT: &str = "== run ended: the guest exited with code 4\n== diagnosis\n  fault   [1] #PF page fault at rip 0x107c51, cr2 0x10\n  cause   null pointer dereference.\n  PD   [ 32]  table 0x0000334000  entry 0x0000000000000000  not present\n  -> 0x114909 (4 KiB page, offset 0x909; supervisor rwx)\nplain line\nno newline at the end";

    #[test]
    fn painting_adds_only_styles() {
        let painted = paint(REPORT);
        assert_ne!(painted, REPORT);
        assert_eq!(strip(&painted), REPORT);
    }

    #[test]
    fn faults_are_red_reached_pages_green_headings_bold() {
        let lines: Vec<String> = REPORT.lines().map(paint_line).collect();
        assert!(lines[0].starts_with(&HEADING.render().to_string()));
        assert!(
            lines[2].contains(&BAD.render().to_string()),
            "{:?}",
            lines[2]
        );
        assert!(
            lines[4].starts_with(&BAD.render().to_string()),
            "not present in red"
        );
        assert!(
            lines[5].starts_with(&GOOD.render().to_string()),
            "the page reached"
        );
        assert_eq!(lines[6], "plain line");
    }
}
