//! The address space as a picture: the lower and upper canonical halves as two columns of
//! mapped ranges, coloured by rights, gaps between them drawn short (a linear scale would
//! make 64 MiB invisible next to 128 TiB), each range labelled with what it is.

use super::escape;
use super::model::Audit;
use std::fmt::Write as _;

const UPPER_HALF: u64 = 0xffff_8000_0000_0000;
const ROW: u32 = 26;
const GAP: u32 = 14;
const BAR_WIDTH: u32 = 150;
const WIDTH: u32 = 900;

/// The largest unit that is at least 1: whole when exact, else one decimal.
fn size_text(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    match UNITS.iter().find(|(_, scale)| bytes >= *scale) {
        Some((unit, scale)) if bytes.is_multiple_of(*scale) => format!("{} {unit}", bytes / scale),
        Some((unit, scale)) => format!("{:.1} {unit}", bytes as f64 / *scale as f64),
        None => format!("{bytes} B"),
    }
}

/// What a range is, from what the audit and the guest's layout say.
fn label(audit: &Audit, start: u64, size: u64, rights: &str) -> String {
    let end = start.saturating_add(size);
    let overlaps = |s: u64, n: u64| start < s.saturating_add(n) && s < end;
    let mut names = Vec::new();
    if audit.identity.iter().any(|i| overlaps(i.start.0, i.size.0)) {
        names.push("identity map".to_string());
    }
    if let Some(d) = &audit.direct_map
        && overlaps(d.base.0, d.size.0)
    {
        names.push("direct map".to_string());
    }
    if overlaps(abi::boot::KERNEL_HEAP_BASE, abi::boot::KERNEL_HEAP_SIZE) {
        names.push("kernel heap".to_string());
    }
    if let Some(slot) = audit.recursive_slot {
        // Sign-extended start of the PML4 slot.
        let base = if slot >= 256 {
            0xffff_0000_0000_0000 | (slot << 39)
        } else {
            slot << 39
        };
        if overlaps(base, 1 << 39) {
            names.push(format!("recursive slot {slot}"));
        }
    }
    if rights.starts_with('u') {
        names.push("user".to_string());
    }
    names.join(", ")
}

fn rights_class(rights: &str) -> &'static str {
    match rights.get(1..).unwrap_or("") {
        "rwx" => "rwx",
        "rw-" => "rw",
        "r-x" => "rx",
        _ => "r",
    }
}

/// A row saying where the faulting address falls: inside the range drawn above it, or in the
/// unmapped room between the ranges around it.
fn fault_row(svg: &mut String, fault: u64, previous_end: Option<u64>, inside: bool, y: &mut u32) {
    let place = match (inside, previous_end) {
        (true, _) => "inside the range above".to_string(),
        (false, Some(end)) => format!(
            "not mapped: {} past the range above, which ends at {end:#x}",
            size_text(fault - end)
        ),
        (false, None) => "not mapped: below every range of this half".to_string(),
    };
    let _ = write!(
        svg,
        "<g class=\"faultmark\"><circle cx=\"{}\" cy=\"{}\" r=\"5\"/><text x=\"{}\" y=\"{}\">fault at {fault:#x}: {}</text></g>",
        20 + BAR_WIDTH / 2,
        *y + ROW / 2 - 2,
        30 + BAR_WIDTH,
        *y + 16,
        escape(&place)
    );
    *y += ROW;
}

fn half(
    svg: &mut String,
    audit: &Audit,
    title: &str,
    upper: bool,
    fault: Option<u64>,
    y: &mut u32,
) {
    let mut fault = fault.filter(|&f| (f >= UPPER_HALF) == upper);
    let ranges: Vec<_> = audit
        .ranges
        .iter()
        .filter(|r| (r.start.0 >= UPPER_HALF) == upper)
        .collect();
    let _ = write!(
        svg,
        "<text x=\"10\" y=\"{}\" class=\"half\">{}</text>",
        *y + 16,
        escape(title)
    );
    *y += 26;
    if ranges.is_empty() {
        let _ = write!(
            svg,
            "<text x=\"20\" y=\"{}\" class=\"none\">nothing mapped</text>",
            *y + 14
        );
        *y += ROW;
        if let Some(f) = fault {
            fault_row(svg, f, None, false, y);
        }
        return;
    }
    let mut previous_end: Option<u64> = None;
    for r in ranges {
        let (start, size) = (r.start.0, r.size.0);
        if let Some(f) = fault.filter(|&f| f < start) {
            fault_row(svg, f, previous_end, false, y);
            fault = None;
        }
        if let Some(end) = previous_end
            && start > end
        {
            let _ = write!(
                svg,
                "<line x1=\"{x}\" y1=\"{y1}\" x2=\"{x}\" y2=\"{y2}\" class=\"gap\"/><text x=\"{tx}\" y=\"{ty}\" class=\"gap\">gap of {}</text>",
                size_text(start - end),
                x = 20 + BAR_WIDTH / 2,
                y1 = *y + 1,
                y2 = *y + GAP - 1,
                tx = 30 + BAR_WIDTH,
                ty = *y + GAP - 3,
            );
            *y += GAP;
        }
        let name = label(audit, start, size, &r.rights);
        let _ = write!(
            svg,
            "<g class=\"range {}\" data-start=\"{start:#x}\"><rect x=\"20\" y=\"{}\" width=\"{BAR_WIDTH}\" height=\"{}\"/>\
             <text x=\"{}\" y=\"{}\">{start:#018x}–{:#018x}  {:>8}  {}  {}</text></g>",
            rights_class(&r.rights),
            *y,
            ROW - 4,
            30 + BAR_WIDTH,
            *y + 16,
            start.saturating_add(size),
            size_text(size),
            escape(&r.rights),
            escape(&name),
        );
        *y += ROW;
        previous_end = Some(start.saturating_add(size));
        if let Some(f) = fault.filter(|&f| f < start.saturating_add(size)) {
            fault_row(svg, f, previous_end, true, y);
            fault = None;
        }
    }
    if let Some(f) = fault {
        fault_row(svg, f, previous_end, false, y);
    }
}

/// The map of `audit` as an SVG element with a legend, `fault` (CR2, or the address an
/// instruction used) marked where it falls.
pub fn address_space_svg(audit: &Audit, fault: Option<u64>) -> String {
    let mut body = String::new();
    let mut y = 4;
    half(
        &mut body,
        audit,
        "lower half 0x0000000000000000–0x00007fffffffffff",
        false,
        fault,
        &mut y,
    );
    y += 10;
    half(
        &mut body,
        audit,
        "upper half 0xffff800000000000–0xffffffffffffffff",
        true,
        fault,
        &mut y,
    );
    y += 8;
    let legend = [
        ("rwx", "rwx (W+X)"),
        ("rw", "rw-"),
        ("rx", "r-x"),
        ("r", "r--"),
    ];
    let mut x = 20;
    for (class, text) in legend {
        let _ = write!(
            body,
            "<g class=\"range {class}\"><rect x=\"{x}\" y=\"{y}\" width=\"14\" height=\"14\"/><text x=\"{}\" y=\"{}\">{text}</text></g>",
            x + 20,
            y + 12
        );
        x += 110;
    }
    y += 24;
    format!(
        "<svg class=\"addrmap\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{y}\" viewBox=\"0 0 {WIDTH} {y}\" role=\"img\" aria-label=\"address space under CR3 {:#x}\">{body}</svg>",
        audit.cr3.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seed 004's address space: the identity map, the process's page, the kernel heap.
    fn journey() -> Audit {
        serde_json::from_str(r#"{"seq":2,"cr3":"0x34f000","ranges":[{"start":"0x0","size":"0x4000000","rights":"-rwx"},{"start":"0x555555554000","size":"0x1000","rights":"ur-x"},{"start":"0xffff800000000000","size":"0x2000","rights":"-rw-"}],"identity":[{"start":"0x0","size":"0x4000000"}],"direct_map":null,"recursive_slot":null}"#).unwrap()
    }

    /// Where the mark is among the ranges' rows: the text before and after it.
    fn around(svg: &str, mark: &str) -> (usize, usize) {
        let at = svg
            .find(mark)
            .unwrap_or_else(|| panic!("no {mark:?} in {svg}"));
        (svg[..at].matches("class=\"range").count(), at)
    }

    #[test]
    fn the_fault_is_marked_where_it_falls() {
        let audit = journey();
        // A physical address used as virtual: just past the identity map's end.
        let svg = address_space_svg(&audit, Some(0x410_9000));
        let (ranges_before, _) = around(&svg, "fault at 0x4109000: not mapped: ");
        assert_eq!(
            ranges_before, 1,
            "after the identity map, before the process's page"
        );
        assert!(
            svg.contains("past the range above, which ends at 0x4000000"),
            "{svg}"
        );
        let svg = address_space_svg(&audit, Some(0x5555_5555_4010));
        let (ranges_before, _) = around(&svg, "fault at 0x555555554010: inside the range above");
        assert_eq!(ranges_before, 2);
        let svg = address_space_svg(&audit, Some(0xffff_8000_0000_3000));
        let (ranges_before, _) = around(&svg, "fault at 0xffff800000003000: not mapped");
        assert_eq!(
            ranges_before, 3,
            "in the upper half, after the heap's range"
        );
        assert!(!address_space_svg(&audit, None).contains("faultmark"));
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size_text(64 << 20), "64 MiB");
        assert_eq!(size_text(4096), "4 KiB");
        assert_eq!(size_text(3 << 39), "1.5 TiB");
        assert_eq!(size_text(3 << 40), "3 TiB");
        assert_eq!(size_text((3 << 39) + 4096), "1.5 TiB");
        assert_eq!(size_text(12), "12 B");
    }
}
