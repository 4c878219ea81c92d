//! `vmm-host report FILE.jsonl -o report.html` and `--html FILE`: the run as one
//! self-contained page — no network, no script. A timeline of the exceptions to click
//! through; for each, the explanation, its page-table walks drawn as linked tables, the diff,
//! and the address space as a map. Selection is by URL fragment (`#exc-12`) and CSS
//! `:target`, so the page works wherever HTML does.

mod chain;
pub mod map;
pub mod model;
mod screen;
pub mod walk;

use crate::analysis::WalkOf;
use model::{Exception, Report};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum HtmlError {
    #[error("cannot read the report `{path}`: {error}", path = .0.display(), error = .1)]
    Read(PathBuf, std::io::Error),
    #[error(transparent)]
    Model(#[from] model::ModelError),
    #[error("cannot write `{path}`: {error}; check that its directory exists and is writable", path = .0.display(), error = .1)]
    Write(PathBuf, std::io::Error),
}

/// Exceptions drawn in full at each end of a long run; the middle is summarised.
pub const SHOWN_AT_EACH_END: usize = 25;

/// Text for HTML and XML (the JUnit file too): markup characters as entities, and control
/// characters, which XML 1.0 forbids even escaped, spelled out.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && !matches!(c, '\n' | '\t' | '\r') => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 24px 40px; color: #1d232b; background: #fbfbfa; }
h1 { font-size: 20px; margin: 18px 0 4px; } h2 { font-size: 16px; margin: 22px 0 8px; }
code, .mono, svg text { font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
.summary { color: #444; }
.chain ol { padding-left: 22px; } .chain li { margin: 4px 0; }
.chain .failed { color: #b3261e; } .chain .reached { color: #1e7b34; }
.timeline ol { list-style: none; padding: 0; margin: 0; columns: 2; }
.timeline li { margin: 1px 0; }
.timeline a { text-decoration: none; color: inherit; }
.timeline a:hover { text-decoration: underline; }
.badge { display: inline-block; min-width: 34px; padding: 0 4px; border-radius: 3px; color: #fff; font: 12px ui-monospace, monospace; text-align: center; }
/* One colour per vector: badge backgrounds and the timeline strip's ticks. */
.v14 { --c: #c0392b; } .v13 { --c: #8e44ad; } .v8 { --c: #2c3e50; } .v6 { --c: #d35400; } .vother { --c: #16a085; }
.badge { background: var(--c); } svg.strip line { stroke: var(--c); }
.skipped { color: #777; font-style: italic; }
.panel { display: none; border-top: 2px solid #ddd; margin-top: 14px; }
.panel:target { display: block; }
body:not(:has(.panel:target)) .panel.default { display: block; }
.fault { display: grid; grid-template-columns: minmax(280px, 440px) auto; gap: 18px; align-items: start; }
.explanation { background: #fff6e0; border-left: 4px solid #e0a800; padding: 8px 12px; max-width: 1100px; }
svg.walk rect { fill: #f4f7fb; stroke: #5b7aa3; } svg.walk .stopped rect { fill: #fde8e6; stroke: #c0392b; stroke-width: 2; }
svg.walk .page rect { fill: #e8f6ec; stroke: #2e8b57; }
svg.walk text { font-size: 13px; } svg.walk .head { fill: #556; font-size: 12px; }
svg.walk .link { fill: none; stroke: #5b7aa3; stroke-width: 1.5; }
table.diff { border-collapse: collapse; font: 13px ui-monospace, monospace; }
table.diff td, table.diff th { padding: 2px 10px; border-bottom: 1px solid #e3e3e3; text-align: left; }
table.diff caption { text-align: left; font: 14px system-ui, sans-serif; margin-bottom: 4px; }
.old { color: #a33; } .new { color: #1d7a3a; }
pre.vga { display: inline-block; margin: 0; padding: 6px; background: #000; font: 14px/1.15 ui-monospace, "DejaVu Sans Mono", monospace; }
pre.vga .cursor { text-decoration: underline; }
svg.addrmap text { font-size: 12px; } svg.addrmap .half { font-size: 13px; font-weight: bold; }
svg.addrmap .rwx rect { fill: #e74c3c; } svg.addrmap .rw rect { fill: #3498db; }
svg.addrmap .rx rect { fill: #27ae60; } svg.addrmap .r rect { fill: #95a5a6; }
svg.addrmap line.gap { stroke: #999; stroke-dasharray: 2 2; } svg.addrmap text.gap { fill: #888; font-size: 11px; }
section.diagnosis pre { white-space: pre-wrap; overflow-wrap: anywhere; }
svg.addrmap .faultmark circle { fill: #c62828; } svg.addrmap .faultmark text { fill: #c62828; font-weight: bold; }
svg.strip line { stroke-width: 3; }
.findings li { color: #8a2a1f; }
"#;

fn vector_class(vector: u8) -> &'static str {
    match vector {
        14 => "v14",
        13 => "v13",
        8 => "v8",
        6 => "v6",
        _ => "vother",
    }
}

fn mnemonic(vector: u8) -> &'static str {
    abi::exception::mnemonic(vector)
}

fn where_text(e: &Exception) -> String {
    match &e.location {
        Some(l) => format!("{}+{:#x}", l.function, l.offset),
        None => format!("{:#x}", e.rip.0),
    }
}

/// Indices into `exceptions` drawn in full: all of a short run, both ends of a long one.
fn shown(count: usize) -> Vec<usize> {
    if count <= 2 * SHOWN_AT_EACH_END {
        (0..count).collect()
    } else {
        (0..SHOWN_AT_EACH_END)
            .chain(count - SHOWN_AT_EACH_END..count)
            .collect()
    }
}

/// The exception the page opens on: the most deeply nested, and among those the last fault
/// (#DF, #GP, #PF) — usually the one that ended the run — else the last one.
fn default_panel(report: &Report, indices: &[usize]) -> usize {
    let rank = |i: usize| {
        let e = &report.exceptions[i];
        (e.depth, matches!(e.vector, 8 | 13 | 14), i)
    };
    indices
        .iter()
        .copied()
        .max_by_key(|&i| rank(i))
        .unwrap_or(0)
}

/// A strip with one tick per shown exception, lanes by nesting depth, each a link.
fn strip(report: &Report, indices: &[usize]) -> String {
    let width = 900usize;
    let lanes = indices
        .iter()
        .map(|&i| report.exceptions[i].depth)
        .max()
        .unwrap_or(1)
        .max(1);
    let height = 14 * lanes + 10;
    let step = (width - 20) as f64 / indices.len().max(1) as f64;
    let mut svg = format!(
        "<svg class=\"strip\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"exceptions in order\">"
    );
    for (k, &i) in indices.iter().enumerate() {
        let e = &report.exceptions[i];
        let x = 10.0 + step * (k as f64 + 0.5);
        let y = 5 + 14 * (e.depth.max(1) - 1);
        let _ = write!(
            svg,
            "<a href=\"#exc-{seq}\"><title>[{seq}] {}</title><line class=\"{}\" x1=\"{x:.1}\" y1=\"{y}\" x2=\"{x:.1}\" y2=\"{}\"/></a>",
            mnemonic(e.vector),
            vector_class(e.vector),
            y + 12,
            seq = e.seq
        );
    }
    svg.push_str("</svg>");
    svg
}

fn timeline(report: &Report, indices: &[usize]) -> String {
    let mut html = String::from("<section class=\"timeline\"><h2>Exceptions</h2>");
    html.push_str(&strip(report, indices));
    html.push_str("<ol>");
    let mut previous: Option<usize> = None;
    for &i in indices {
        if let Some(p) = previous
            && i > p + 1
        {
            let _ = write!(
                html,
                "<li class=\"skipped\">… {} more exceptions, in the JSON report …</li>",
                i - p - 1
            );
        }
        previous = Some(i);
        let e = &report.exceptions[i];
        let cr2 = if e.vector == 14 {
            format!(" cr2 {:#x}", e.cr2.0)
        } else {
            String::new()
        };
        let _ = write!(
            html,
            "<li style=\"padding-left:{}px\"><a href=\"#exc-{}\"><span class=\"badge {}\">{}</span> [{}] {}{}</a></li>",
            16 * (e.depth.max(1) - 1),
            e.seq,
            vector_class(e.vector),
            escape(mnemonic(e.vector)),
            e.seq,
            escape(&where_text(e)),
            escape(&cr2),
        );
    }
    html.push_str("</ol></section>");
    html
}

fn panel(report: &Report, e: &Exception, default: bool) -> String {
    let mut html = format!(
        "<section class=\"panel{}\" id=\"exc-{}\"><h2><span class=\"badge {}\">{}</span> [{}] {}</h2>",
        if default { " default" } else { "" },
        e.seq,
        vector_class(e.vector),
        escape(mnemonic(e.vector)),
        e.seq,
        escape(&e.name)
    );
    html.push_str(&facts_line(e));
    html.push_str(&walks(e));
    match report.diffs.get(&e.seq) {
        Some(diff) => html.push_str(&walk::diff_table(diff)),
        None => html.push_str("<p class=\"note\">no diff recorded for this exception</p>"),
    }
    if let Some(audit) = report.audit_for(e.seq, e.cr3.0) {
        let _ = write!(
            html,
            "<h3>Address space under CR3 {:#x}</h3>{}",
            audit.cr3.0,
            map::address_space_svg(audit, fault_address(e))
        );
    }
    html.push_str("</section>");
    html
}

/// RIP and where it is, CPL, error code, CR2, CR3 and the exceptions it is nested in.
fn facts_line(e: &Exception) -> String {
    let location = e
        .location
        .as_ref()
        .map(|_| format!(" ({})", escape(&where_text(e))))
        .unwrap_or_default();
    let cpl = e.cpl.map(|c| format!(" · CPL {c}")).unwrap_or_default();
    let error = e
        .error_text
        .as_ref()
        .map(|t| format!(" · error {}", escape(t)))
        .unwrap_or_default();
    let cr2 = if e.vector == 14 {
        format!(" · CR2 {:#x}", e.cr2.0)
    } else {
        String::new()
    };
    let nested = if e.depth > 1 {
        let outer: Vec<String> = e
            .outer
            .iter()
            .map(|s| format!("<a href=\"#exc-{s}\">[{s}]</a>"))
            .collect();
        format!(" · nested at depth {} inside {}", e.depth, outer.join(" "))
    } else {
        String::new()
    };
    format!(
        "<p class=\"mono\">rip {:#x}{location}{cpl}{error}{cr2} · CR3 {:#x}{nested}</p>",
        e.rip.0, e.cr3.0
    )
}

/// The explanation beside the fault's own walk (CR2's for a page fault, else the first); the
/// other walks (RIP, RSP, operands) folded below.
fn walks(e: &Exception) -> String {
    let mut html = String::from("<div class=\"fault\"><div class=\"why\">");
    if let Some(i) = &e.instruction {
        let _ = write!(html, "<p>instruction <code>{}</code></p>", escape(&i.text));
    }
    if let Some(text) = &e.explanation {
        let _ = write!(html, "<p class=\"explanation\">{}</p>", escape(text));
    }
    html.push_str("</div>");
    let main = e
        .walks
        .iter()
        .position(|w| w.what == WalkOf::Cr2.to_string())
        .unwrap_or(0);
    let figure = |w: &model::NamedWalk| {
        format!(
            "<figure class=\"walkfig\" data-what=\"{}\"><figcaption>{}: walk of {:#x}</figcaption>{}</figure>",
            escape(&w.what),
            escape(&w.what),
            w.walk.address.0,
            walk::walk_svg(&w.walk)
        )
    };
    if let Some(w) = e.walks.get(main) {
        html.push_str(&figure(w));
    }
    html.push_str("</div>");
    let (names, figures): (Vec<String>, Vec<String>) = e
        .walks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != main)
        .map(|(_, w)| (escape(&w.what), figure(w)))
        .unzip();
    if !figures.is_empty() {
        let _ = write!(
            html,
            "<details><summary>{} more walks ({})</summary>{}</details>",
            figures.len(),
            names.join(", "),
            figures.concat()
        );
    }
    html
}

/// The diagnosis first, as the console report has it, linked to the exception's panel.
fn diagnosis_section(d: &model::DiagnosisLine) -> String {
    let fault = format!("<b>{}</b>", escape(&d.fault));
    let fault = match d.seq {
        Some(seq) => format!("<a href=\"#exc-{seq}\">{fault}</a>"),
        None => fault,
    };
    let mut html = format!("<section class=\"diagnosis\"><h2>Diagnosis</h2><p>{fault}</p>");
    for (label, line) in [
        ("cause", &d.cause),
        ("where", &d.place),
        ("during", &d.during),
    ] {
        if let Some(line) = line {
            let _ = write!(html, "<p>{label}: {}</p>", escape(line));
        }
    }
    for command in &d.next {
        let _ = write!(html, "<pre>{}</pre>", escape(command));
    }
    html.push_str("</section>");
    html
}

/// The address a page fault was about (CR2), to mark on the map.
fn fault_address(e: &model::Exception) -> Option<u64> {
    (e.vector == abi::exception::PAGE_FAULT).then_some(e.cr2.0)
}

/// The diagnosed exception's fault address, for the map of the final page tables.
fn diagnosed_fault(report: &Report) -> Option<u64> {
    let seq = report.diagnosis.as_ref()?.seq?;
    report
        .exceptions
        .iter()
        .find(|e| e.seq == seq)
        .and_then(fault_address)
}

/// The whole page for `report`; `title` names the run.
pub fn render(report: &Report, title: &str) -> String {
    let mut html = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>",
        escape(title)
    );
    // The arrowhead every walk's links share.
    html.push_str("<svg width=\"0\" height=\"0\" style=\"position:absolute\" aria-hidden=\"true\"><defs><marker id=\"arrow\" viewBox=\"0 0 8 8\" refX=\"7\" refY=\"4\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto\"><path d=\"M0,0 L8,4 L0,8 z\" fill=\"#5b7aa3\"/></marker></defs></svg>");
    let _ = write!(html, "<h1>{}</h1>", escape(title));
    if let Some(diagnosis) = &report.diagnosis {
        html.push_str(&diagnosis_section(diagnosis));
    }
    html.push_str(&chain::section(&report.chain, report.chain_loop.as_ref()));
    match &report.run {
        Some(run) => {
            let _ = write!(
                html,
                "<p class=\"summary\">ended: <b>{}</b> (status {}) after {:.2} s · {} exceptions captured</p>",
                escape(&run.ending),
                run.status,
                run.seconds,
                run.exceptions
            );
            if let Some(shown) = &run.screen {
                html.push_str(&screen::section(shown));
            }
        }
        None => html.push_str(
            "<p class=\"summary\">the report has no end-of-run line: the run was cut short</p>",
        ),
    }
    let indices = shown(report.exceptions.len());
    if indices.is_empty() {
        html.push_str("<p>No exceptions were captured.</p>");
    } else {
        html.push_str(&timeline(report, &indices));
        let first_shown = default_panel(report, &indices);
        for &i in &indices {
            html.push_str(&panel(report, &report.exceptions[i], i == first_shown));
        }
    }
    if let Some(audit) = &report.final_audit {
        let _ = write!(
            html,
            "<section class=\"final\"><h2>Page tables when the run ended (CR3 {:#x})</h2>{}",
            audit.cr3.0,
            map::address_space_svg(audit, diagnosed_fault(report))
        );
        if !audit.findings.is_empty() {
            html.push_str("<ul class=\"findings\">");
            for f in &audit.findings {
                let _ = write!(html, "<li>{}</li>", escape(f));
            }
            html.push_str("</ul>");
        }
        html.push_str("</section>");
    }
    html.push_str("</body></html>\n");
    html
}

/// Read `input` (JSON lines) and write the page to `output`.
pub fn convert(input: &Path, output: &Path) -> Result<(), HtmlError> {
    let text =
        std::fs::read_to_string(input).map_err(|e| HtmlError::Read(input.to_path_buf(), e))?;
    let report = Report::parse(&input.display().to_string(), &text)?;
    let title = format!(
        "vmm-host report: {}",
        input
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    write_page(&report, &title, output)
}

pub fn write_page(report: &Report, title: &str, output: &Path) -> Result<(), HtmlError> {
    std::fs::write(output, render(report, title))
        .map_err(|e| HtmlError::Write(output.to_path_buf(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seed 004's fault as the report writes it, trimmed to what the page draws.
    const JOURNEY: &str = r##"{"type":"exception","seq":1,"vector":6,"name":"#UD invalid opcode","error":null,"error_text":null,"rip":"0x55555555402e","cpl":3,"cr2":"0x0","cr3":"0x34f000","depth":1,"outer":[]}
{"type":"exception","seq":2,"vector":14,"name":"#PF page fault","error":6,"error_text":"0x6 (write, user, not-present)","rip":"0x555555554054","cpl":3,"cr2":"0x716b326c8100","cr3":"0x34f000","depth":1,"outer":[],"instruction":{"text":"rep movsb [rdi],[rsi]"},"location":null,"walks":[{"what":"cr2","walk":{"address":"0x716b326c8100","offset":256,"steps":[{"level":"PGD","index":226,"table":"0x34f000","entry":"0x8000000000359007","flags":"P RW US NX"},{"level":"PUD","index":428,"table":"0x359000","entry":"0x800000000035a007","flags":"P RW US NX"},{"level":"PMD","index":403,"table":"0x35a000","entry":"0x800000000035b007","flags":"P RW US NX"},{"level":"PTE","index":200,"table":"0x35b000","entry":"0x0","flags":"not present"}],"end":{"result":"not-present","level":"PTE"}}}],"explanation":"a user write at 0x716b326c8100 found a not-present PTE <here>"}
{"type":"diff","seq":2,"address":"0x716b326c8100","changes":[{"level":"PTE","index":200,"entry_address":"0x35b640","old":"0x0","new":"0x35c067","new_flags":"P RW US A D","new_pfn":"0x35c","hardware_only":false},{"level":"PGD","index":226,"entry_address":"0x34f710","old":"0x8000000000359007","new":"0x8000000000359027","new_flags":"P RW US A NX","new_pfn":"0x359","hardware_only":true}]}
{"type":"audit","seq":2,"cr3":"0x34f000","entries":100,"ranges":[{"start":"0x0","size":"0x4000000","rights":"-rwx"},{"start":"0x555555554000","size":"0x1000","rights":"ur-x"},{"start":"0xffff800000000000","size":"0x2000","rights":"-rw-"}],"identity":[{"start":"0x0","size":"0x4000000"}],"direct_map":null,"recursive_slot":null,"table_frames":9,"findings":["W+X: kernel range"]}
{"type":"run","ending":"exit","status":0,"seconds":0.25,"vm_exits":2000,"exceptions":2}
"##;

    /// A report with a diagnosis opens with it, linked to the exception's panel.
    #[test]
    fn the_diagnosis_opens_the_page() {
        let with = format!(
            "{JOURNEY}{}\n",
            r#"{"type":"diagnosis","seq":2,"fault":"[2] #PF page fault at rip 0x555555554054","cause":"a user write <here>.","where":null,"during":null,"next":["vmm-host run --gdb 1234 --gdb-wait --break-at 2"]}"#
        );
        let html = render(&Report::parse("j.jsonl", &with).unwrap(), "t");
        let diagnosis = html
            .find("<h2>Diagnosis</h2>")
            .expect("a diagnosis section");
        assert!(
            diagnosis < html.find("class=\"timeline\"").unwrap(),
            "before the timeline"
        );
        assert!(
            html.contains("<a href=\"#exc-2\"><b>[2] #PF page fault at rip 0x555555554054</b></a>")
        );
        assert!(html.contains("<p>cause: a user write &lt;here&gt;.</p>"));
        assert!(html.contains("<pre>vmm-host run --gdb 1234 --gdb-wait --break-at 2</pre>"));
        assert!(!page().contains("Diagnosis"), "none without the record");
    }

    fn page() -> String {
        render(
            &Report::parse("journey.jsonl", JOURNEY).unwrap(),
            "journey <test>",
        )
    }

    #[test]
    fn the_page_is_self_contained() {
        let html = page();
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(!html.contains("<script"), "no script");
        assert!(!html.contains("src="), "nothing loaded from elsewhere");
        assert!(!html.contains("href=\"http"), "no links out");
        assert!(html.contains("<title>journey &lt;test&gt;</title>"));
    }

    #[test]
    fn the_timeline_links_every_exception_to_its_panel() {
        let html = page();
        for seq in [1, 2] {
            assert!(html.contains(&format!("<a href=\"#exc-{seq}\">")), "{seq}");
            assert!(html.contains(&format!("id=\"exc-{seq}\"")), "{seq}");
        }
        // The page opens on the page fault, not on the last #UD.
        assert!(html.contains("<section class=\"panel default\" id=\"exc-2\">"));
        assert_eq!(html.matches("panel default").count(), 1);
    }

    #[test]
    fn the_walk_is_drawn_level_by_level_and_the_stop_is_marked() {
        let html = page();
        for level in ["PGD", "PUD", "PMD"] {
            assert!(
                html.contains(&format!("<g class=\"level\" data-level=\"{level}\">")),
                "{level}"
            );
        }
        assert!(html.contains("<g class=\"level stopped\" data-level=\"PTE\">"));
        assert!(html.contains("[200]  0x0000000000000000  not present"));
        assert!(html.contains("stopped: the PTE entry is not present"));
        assert!(
            html.contains("found a not-present PTE &lt;here&gt;"),
            "escaped"
        );
    }

    /// A 32-bit kernel's walks, as the report writes them: two tables with 4-byte entries for
    /// a 4 KiB page, one for a 4 MiB PSE page.
    #[test]
    fn a_two_level_walk_is_drawn_with_two_tables() {
        use crate::addr::{Gpa, Gva};
        use crate::paging::{CpuPaging, Format, PagingMode, identity_tree, walk};
        let format = Format::TwoLevel { pse: true };
        let (mut mem, cr3) = identity_tree(format, 8 << 20);
        // PD[1]: a 4 MiB page at 4 MiB instead of its page table.
        mem.write_u32(Gpa::new(cr3.raw() + 4), 0x40_0083);
        let mode = PagingMode::new(CpuPaging::with_phys_bits(36), 0).with_format(format);
        let line = |gva: u64| {
            let w = walk(&mem, mode, cr3, Gva::new(gva));
            let record = serde_json::json!({"type": "exception", "seq": 1, "vector": 14,
                "name": "#PF page fault", "rip": "0x1000", "cr2": format!("{gva:#x}"), "cr3": format!("{:#x}", cr3.raw()),
                "depth": 1, "outer": [], "walks": [{"what": "cr2", "walk": crate::report::walk_json(&w)}],
                "explanation": "test"});
            record.to_string()
        };
        let html = |gva: u64| {
            render(
                &Report::parse("k32.jsonl", &format!("{}\n", line(gva))).unwrap(),
                "k32",
            )
        };
        let small = html(0x1234);
        assert_eq!(small.matches("<g class=\"level\"").count(), 2, "{small}");
        assert!(small.contains("data-level=\"PGD\""), "{small}");
        assert!(small.contains("data-level=\"PTE\""), "{small}");
        assert!(
            small.contains("[  1]  0x00001003  P RW"),
            "4-byte entries: {small}"
        );
        assert!(
            small.contains("0x1234 → physical 0x1234 (4 KiB page)"),
            "{small}"
        );
        let large = html(0x40_5678);
        assert_eq!(large.matches("<g class=\"level\"").count(), 1, "{large}");
        assert!(
            large.contains("0x405678 → physical 0x405678 (4 MiB page)"),
            "{large}"
        );
    }

    /// A triple fault's replayed chain, as `--report` writes it, drawn with each failed
    /// delivery and the shutdown.
    #[test]
    fn a_triple_fault_chain_is_drawn_step_by_step() {
        use crate::addr::Gva;
        use crate::delivery::{Attempt, Raised};
        let push = |name: &str| {
            Raised::page_fault(
                2,
                Gva::new(0x329f18),
                format!(
                    "pushing the {name} frame at 0x329f18, on the current stack (RSP 0x329f20, no IST): the PTE entry is not present"
                ),
            )
        };
        let first = Attempt {
            exception: Raised::page_fault(
                2,
                Gva::new(0x329f18),
                "`call` writes [rsp-0x8] at 0x329f18: the PTE entry is not present",
            ),
            outcome: Err(push("#PF")),
        };
        let double = Attempt {
            exception: Raised::new(8, Some(0), "#PF while delivering #PF"),
            outcome: Err(push("#DF")),
        };
        let lines = [
            crate::report::delivery_json(1, &first, false).to_string(),
            crate::report::delivery_json(2, &double, true).to_string(),
            r#"{"type":"run","ending":"triple-fault","status":80,"seconds":0.1,"vm_exits":3,"exceptions":0}"#.to_string(),
        ];
        let html = render(&Report::parse("tf.jsonl", &lines.join("\n")).unwrap(), "tf");
        assert!(html.contains("<h2>How the CPU shut down</h2>"), "{html}");
        assert_eq!(html.matches("<li class=\"attempt\">").count(), 2);
        assert!(
            html.contains("<b>#PF</b> error 0x2 CR2 0x329f18: `call` writes"),
            "{html}"
        );
        assert!(html.contains("<div class=\"failed\">✗ delivering it raised <b>#PF</b> error 0x2 CR2 0x329f18: pushing the #DF frame"), "{html}");
        assert!(
            html.contains("the CPU shut down (triple fault)</p>"),
            "{html}"
        );
        assert!(
            !page().contains("How the CPU shut down"),
            "none without a triple fault"
        );
    }

    #[test]
    fn the_diff_lists_the_handler_s_writes_and_the_cpu_s_bookkeeping_apart() {
        let html = page();
        assert!(html.contains(
            "<tr class=\"change\"><td>PTE[200]</td><td>0x35b640</td><td class=\"old\">0x0000000000000000</td><td>→</td><td class=\"new\">0x000000000035c067 P RW US A D</td></tr>"
        ));
        assert!(html.contains("accessed/dirty bits set by the CPU on PGD[226]"));
        assert!(
            html.contains("no diff recorded for this exception"),
            "the #UD has none"
        );
    }

    #[test]
    fn the_address_space_map_labels_what_it_knows() {
        let html = page();
        assert!(html.contains("<svg class=\"addrmap\""));
        assert!(html.contains("64 MiB  -rwx  identity map"));
        assert!(html.contains("4 KiB  ur-x  user"));
        assert!(html.contains("8 KiB  -rw-  kernel heap"));
        assert!(html.contains("gap of "));
        assert!(html.contains("<g class=\"range rwx\""));
    }

    #[test]
    fn a_long_run_shows_both_ends_and_says_what_it_left_out() {
        let line = |seq: u64| {
            format!(
                "{{\"type\":\"exception\",\"seq\":{seq},\"vector\":14,\"name\":\"#PF\",\"error\":2,\"error_text\":\"0x2\",\"rip\":\"0x1000\",\"cpl\":0,\"cr2\":\"0x2000\",\"cr3\":\"0x3000\",\"depth\":1,\"outer\":[]}}\n"
            )
        };
        let text: String = (1..=1000).map(line).collect();
        let html = render(&Report::parse("long.jsonl", &text).unwrap(), "long");
        assert_eq!(
            html.matches("<section class=\"panel").count(),
            2 * SHOWN_AT_EACH_END
        );
        assert!(html.contains("… 950 more exceptions, in the JSON report …"));
        assert!(html.contains("id=\"exc-1000\""));
        assert!(!html.contains("id=\"exc-500\""));
        assert!(html.contains("the report has no end-of-run line"));
    }
}
