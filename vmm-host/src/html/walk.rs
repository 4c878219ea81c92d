//! A page-table walk drawn as linked tables: one box per level with the entry the walk used,
//! an arrow to the table (or page) it points at, and the level where the walk stopped in red.
//! Also the diff as a table of old → new entries.

use super::escape;
use super::model::{Diff, Walk};
use std::fmt::Write as _;

const BOX_WIDTH: u32 = 560;
const BOX_HEIGHT: u32 = 58;
const STEP_X: u32 = 46;
const STEP_Y: u32 = 78;

/// Whether the walk ended at this step: not present, reserved bits, a table outside RAM.
fn stopped_at(walk: &Walk, index: usize) -> bool {
    walk.end.result != "mapped" && index + 1 == walk.steps.len()
}

/// Where a box goes: a walk has at most five steps, so a report with more draws the rest
/// on top of the last rather than off the page.
fn position(index: usize) -> u32 {
    u32::try_from(index).unwrap_or(u32::MAX).min(8)
}

/// The walk as an SVG element.
pub fn walk_svg(walk: &Walk) -> String {
    let boxes = position(walk.steps.len()) + 1;
    let width = BOX_WIDTH + STEP_X * boxes + 20;
    let height = STEP_Y * boxes + 10;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg class=\"walk\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"page-table walk of {:#x}\">",
        walk.address.0
    );
    for (i, step) in walk.steps.iter().enumerate() {
        let x = 10 + STEP_X * position(i);
        let y = 5 + STEP_Y * position(i);
        let stopped = stopped_at(walk, i);
        let class = if stopped { "level stopped" } else { "level" };
        let _ = write!(
            svg,
            "<g class=\"{class}\" data-level=\"{}\"><rect x=\"{x}\" y=\"{y}\" width=\"{BOX_WIDTH}\" height=\"{BOX_HEIGHT}\" rx=\"4\"/>\
             <text x=\"{}\" y=\"{}\" class=\"head\">{} table at {:#x}</text>\
             <text x=\"{}\" y=\"{}\" class=\"entry\">[{:>3}]  {}  {}</text></g>",
            escape(&step.level),
            x + 8,
            y + 20,
            escape(&step.level),
            step.table.0,
            x + 8,
            y + 44,
            step.index,
            entry_text(walk, step.entry.0),
            escape(&step.flags),
        );
        if !stopped {
            // From the entry row down to the next box.
            let (x1, y1) = (x + 24, y + BOX_HEIGHT);
            let (x2, y2) = (x + STEP_X + 24, y + STEP_Y);
            let _ = write!(
                svg,
                "<path class=\"link\" d=\"M{x1},{y1} V{} H{x2} V{}\" marker-end=\"url(#arrow)\"/>",
                y1 + 10,
                y2 - 2
            );
        }
    }
    let last = position(walk.steps.len());
    let (x, y) = (10 + STEP_X * last, 5 + STEP_Y * last);
    let (class, text) = end_box(walk);
    let _ = write!(
        svg,
        "<g class=\"{class}\"><rect x=\"{x}\" y=\"{y}\" width=\"{BOX_WIDTH}\" height=\"{}\" rx=\"4\"/><text x=\"{}\" y=\"{}\">{}</text></g>",
        BOX_HEIGHT - 20,
        x + 8,
        y + 24,
        escape(&text)
    );
    svg.push_str("</svg>");
    svg
}

/// The last box: the page the walk reached, or where and why it stopped.
fn end_box(walk: &Walk) -> (&'static str, String) {
    match walk.end.result.as_str() {
        "mapped" => (
            "page",
            format!(
                "{:#x} → physical {:#x} ({} page)",
                walk.address.0,
                walk.end.physical.map_or(0, |p| p.0),
                page_size(walk.end.page_size.unwrap_or(4096))
            ),
        ),
        "not-present" => (
            "end stopped",
            format!(
                "stopped: the {} entry is not present",
                walk.end.level.as_deref().unwrap_or("?")
            ),
        ),
        "non-canonical" => (
            "end stopped",
            format!("{:#x} is not canonical: no walk", walk.address.0),
        ),
        other => (
            "end stopped",
            format!(
                "stopped: {other} at the {} level",
                walk.end.level.as_deref().unwrap_or("?")
            ),
        ),
    }
}

/// An entry at its width: 4 bytes in 32-bit paging's tables, 8 in the others.
fn entry_text(walk: &Walk, entry: u64) -> String {
    if walk
        .paging
        .as_deref()
        .is_some_and(|p| p.starts_with("32-bit"))
    {
        format!("{entry:#010x}")
    } else {
        format!("{entry:#018x}")
    }
}

fn page_size(bytes: u64) -> &'static str {
    match bytes {
        0x4000_0000 => "1 GiB",
        0x40_0000 => "4 MiB",
        0x20_0000 => "2 MiB",
        _ => "4 KiB",
    }
}

/// The diff as a table; the CPU's accessed/dirty bookkeeping in a line of its own.
pub fn diff_table(diff: &Diff) -> String {
    let mut html = format!(
        "<table class=\"diff\"><caption>changed while the fault was handled (walk of {:#x})</caption>\
         <tr><th>entry</th><th>at</th><th>old</th><th></th><th>new</th></tr>",
        diff.address.0
    );
    let mut hardware = Vec::new();
    for c in &diff.changes {
        let name = format!("{}[{}]", c.level, c.index);
        if c.hardware_only {
            hardware.push(name);
            continue;
        }
        let old = c
            .old
            .map_or_else(|| "(not reached)".to_string(), |o| format!("{:#018x}", o.0));
        let _ = write!(
            html,
            "<tr class=\"change\"><td>{}</td><td>{:#x}</td><td class=\"old\">{}</td><td>→</td><td class=\"new\">{:#018x} {}</td></tr>",
            escape(&name),
            c.entry_address.0,
            old,
            c.new.0,
            escape(&c.new_flags)
        );
    }
    if diff.changes.iter().all(|c| c.hardware_only) {
        html.push_str(
            "<tr><td colspan=\"5\">no entry on the walk was changed by the handler</td></tr>",
        );
    }
    html.push_str("</table>");
    if !hardware.is_empty() {
        let _ = write!(
            html,
            "<p class=\"note\">accessed/dirty bits set by the CPU on {}</p>",
            escape(&hardware.join(", "))
        );
    }
    html
}
