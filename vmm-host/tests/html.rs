//! The HTML report: `report FILE.jsonl -o FILE.html`, `--html` on a scenario, and the page as
//! a headless Chromium renders it (queried through the DOM, not compared as pixels).

mod common;
use common::{assert_one_line_error, kvm_or_skip, run, vmm, vmm_host};
use std::path::Path;
use std::process::Command;

#[test]
fn a_missing_or_malformed_report_is_one_line_of_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.html");
    let out = out.to_str().unwrap();
    let r = vmm(&["report", "/nonexistent/r.jsonl", "-o", out]);
    assert_one_line_error(&r, "cannot read the report `/nonexistent/r.jsonl`: ");
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"type\":\"run\",\"ending\":\"exit\",\"status\":0,\"seconds\":1,\"exceptions\":0}\n{garbage\n").unwrap();
    let r = vmm(&["report", bad.to_str().unwrap(), "-o", out]);
    assert_one_line_error(&r, &format!("{}:2: not a report line: ", bad.display()));
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let r = vmm(&["report", empty.to_str().unwrap(), "-o", out]);
    assert_one_line_error(&r, "holds no report lines");
    assert!(!Path::new(out).exists(), "nothing written on error");
}

/// Scenario `name` run with --report and --html into `dir`: the page's and the report's
/// paths, and what the run printed.
fn scenario_pages(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let html = dir.join(format!("{name}.html"));
    let jsonl = dir.join(format!("{name}.jsonl"));
    let r = vmm(&[
        "scenario",
        name,
        "--quiet",
        "--report",
        jsonl.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    assert_eq!(r.status, 0, "{}{}", r.stdout, r.stderr);
    (html, jsonl, r.stdout)
}

/// The journey scenario with --html (and --report, to convert it again with `report`).
fn journey_page(dir: &Path) -> Option<std::path::PathBuf> {
    kvm_or_skip("journey_html")?;
    let (html, jsonl, stdout) = scenario_pages(dir, "journey");
    assert!(stdout.contains(&format!("HTML report: {}", html.display())));
    let again = dir.join("again.html");
    let r = run(vmm_host().args([
        "report",
        jsonl.to_str().unwrap(),
        "-o",
        again.to_str().unwrap(),
    ]));
    assert_eq!(r.status, 0, "{}", r.stderr);
    let page = std::fs::read_to_string(&html).unwrap();
    let converted = std::fs::read_to_string(&again).unwrap();
    // Same drawing; only the title differs.
    let body = |p: &str| {
        p[p.find("<h1>").unwrap()..]
            .split_once("</h1>")
            .unwrap()
            .1
            .to_string()
    };
    assert_eq!(body(&page), body(&converted));
    Some(html)
}

#[test]
fn the_journey_page_has_the_fault_its_walk_its_diff_and_the_map() {
    let dir = tempfile::tempdir().unwrap();
    let Some(html) = journey_page(dir.path()) else {
        return;
    };
    let page = std::fs::read_to_string(html).unwrap();
    assert!(page.contains("<section class=\"panel default\" id=\"exc-2\">"));
    assert!(page.contains("<g class=\"level stopped\" data-level=\"PTE\">"));
    assert!(page.contains("<tr class=\"change\"><td>PTE[200]</td>"));
    assert!(page.contains("P RW US A D</td></tr>"));
    assert!(page.contains("<svg class=\"addrmap\""));
    assert!(page.contains("identity map"));
    assert!(!page.contains("<script") && !page.contains("src="));
}

fn chromium() -> Option<String> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(String::from)
}

/// Chromium, headless, on a 1300×2000 window, given at most a minute.
fn headless(browser: &str, extra: &[&str]) -> std::process::Output {
    Command::new("timeout")
        .arg("60")
        .arg(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--allow-file-access-from-files",
        ])
        .args(["--virtual-time-budget=5000", "--window-size=1300,2000"])
        .args(extra)
        .output()
        .expect("run chromium")
}

/// What a probe page wrote into its `<pre id="result">` once rendered.
fn probe_result(browser: &str, probe: &Path) -> String {
    let out = headless(
        browser,
        &["--dump-dom", &format!("file://{}", probe.display())],
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    dom.split_once("<pre id=\"result\">")
        .and_then(|(_, r)| r.split_once("</pre>"))
        .map(|(r, _)| r.to_string())
        .unwrap_or_else(|| {
            panic!(
                "no result in: {dom}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// Opens a page as it first shows and reports where the diagnosis and the fault's mark are.
const FIRST_VIEW_PROBE: &str = r#"<!DOCTYPE html><html><body><pre id="result">pending</pre>
<iframe id="page" width="1300" height="2000"></iframe>
<script>
const frame = document.getElementById('page');
frame.onload = () => {
  const d = frame.contentDocument, w = frame.contentWindow, out = [];
  const shown = el => el && w.getComputedStyle(el).display !== 'none' && el.getBoundingClientRect().height > 0;
  const sections = [...d.querySelectorAll('section')].filter(shown);
  out.push('first ' + (sections.length ? sections[0].className : 'none'));
  const diagnosis = d.querySelector('section.diagnosis');
  out.push('diagnosis-top ' + (diagnosis ? Math.round(diagnosis.getBoundingClientRect().top) : -1));
  out.push('diagnosis-text ' + (diagnosis ? diagnosis.textContent.replace(/\s+/g, ' ') : ''));
  const marks = [...d.querySelectorAll('svg.addrmap .faultmark')].filter(m => m.getBoundingClientRect().height > 0 && shown(m.closest('section')));
  const wide = [...diagnosis.querySelectorAll('pre')].filter(p => p.scrollWidth > p.clientWidth + 1);
  out.push('overflowing ' + wide.length);
  out.push('marks ' + marks.length);
  if (marks.length) {
    const dot = marks[0].querySelector('circle');
    out.push('mark-colour ' + w.getComputedStyle(dot).fill);
    out.push('mark-text ' + marks[0].textContent);
  }
  document.getElementById('result').textContent = out.join('\n');
};
frame.src = 'PAGE';
</script></body></html>"#;

/// The issue's check: on the page as it opens, the diagnosis comes first, and the map marks
/// where the null pointer's address falls. Leaves a screenshot in target/ for people.
#[test]
fn chromium_shows_the_diagnosis_first_and_the_fault_on_the_map() {
    let Some(browser) = chromium() else {
        common::skip(
            "chromium_diagnosis_first",
            "chromium is not installed (.ci/run installs it)",
        );
        return;
    };
    if kvm_or_skip("chromium_diagnosis_first").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (html, _, _) = scenario_pages(dir.path(), "null-deref");
    let probe = dir.path().join("probe.html");
    let page = html.file_name().unwrap().to_str().unwrap();
    std::fs::write(&probe, FIRST_VIEW_PROBE.replace("PAGE", page)).unwrap();
    let result = probe_result(&browser, &probe);
    let value = |key: &str| {
        result
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no {key} in {result}"))
            .to_string()
    };
    assert_eq!(value("first"), "diagnosis", "{result}");
    let top: i32 = value("diagnosis-top").parse().unwrap();
    assert!(
        (0..400).contains(&top),
        "the diagnosis is in the first view: {result}"
    );
    let text = value("diagnosis-text");
    assert!(text.contains("null pointer dereference"), "{text}");
    assert!(text.contains("null_dereference"), "where: {text}");
    assert!(text.contains("--break-at 1"), "the next command: {text}");
    assert_eq!(
        value("overflowing"),
        "0",
        "the command wraps in the page: {result}"
    );
    assert_ne!(value("marks"), "0", "{result}");
    assert_eq!(value("mark-colour"), "rgb(198, 40, 40)", "{result}");
    assert!(value("mark-text").starts_with("fault at 0x"), "{result}");
    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/null-deref-report.png");
    let out = headless(
        &browser,
        &[
            &format!("--screenshot={}", shot.display()),
            &format!("file://{}", html.display()),
        ],
    );
    assert!(
        out.status.success() && shot.is_file(),
        "no screenshot at {}",
        shot.display()
    );
}

/// Opens the page at #exc-2 in an iframe and reports, from the rendered DOM, what is shown.
const PROBE: &str = r#"<!DOCTYPE html><html><body><pre id="result">pending</pre>
<iframe id="page" width="1300" height="2000"></iframe>
<script>
const frame = document.getElementById('page');
frame.onload = () => {
  const d = frame.contentDocument, w = frame.contentWindow, out = [];
  const shown = el => el && w.getComputedStyle(el).display !== 'none' && el.getBoundingClientRect().height > 0;
  out.push('panel2 ' + shown(d.getElementById('exc-2')));
  out.push('panel1 ' + shown(d.getElementById('exc-1')));
  const panel = d.getElementById('exc-2');
  const walk = panel.querySelector('figure[data-what="cr2"] svg.walk');
  out.push('walk ' + (walk ? Math.round(walk.getBoundingClientRect().width) : 0));
  out.push('levels ' + (walk ? walk.querySelectorAll('g[data-level]').length : 0));
  const stopped = walk && walk.querySelector('g.stopped rect');
  out.push('stopped ' + (stopped ? w.getComputedStyle(stopped).fill : 'none'));
  const row = [...panel.querySelectorAll('table.diff tr.change')].find(r => r.textContent.includes('PTE[200]'));
  out.push('diffrow ' + (row ? Math.round(row.getBoundingClientRect().height) : 0));
  out.push('diffnew ' + (row ? row.querySelector('.new').textContent : ''));
  document.getElementById('result').textContent = out.join('\n');
};
frame.src = 'PAGE#exc-2';
</script></body></html>"#;

#[test]
fn chromium_renders_the_walk_and_the_diff_of_the_selected_fault() {
    let Some(browser) = chromium() else {
        common::skip(
            "chromium_renders",
            "chromium is not installed (.ci/run installs it)",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some(html) = journey_page(dir.path()) else {
        return;
    };
    let probe = dir.path().join("probe.html");
    std::fs::write(
        &probe,
        PROBE.replace("PAGE", html.file_name().unwrap().to_str().unwrap()),
    )
    .unwrap();
    let result = probe_result(&browser, &probe);
    let lines: Vec<&str> = result.lines().collect();
    assert!(lines.contains(&"panel2 true"), "{result}");
    assert!(
        lines.contains(&"panel1 false"),
        "only the selected panel shows: {result}"
    );
    assert!(lines.contains(&"levels 4"), "{result}");
    assert!(
        lines.contains(&"stopped rgb(253, 232, 230)"),
        "the PTE level is red: {result}"
    );
    let width: u32 = lines
        .iter()
        .find_map(|l| l.strip_prefix("walk "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(width > 500, "{result}");
    let row: u32 = lines
        .iter()
        .find_map(|l| l.strip_prefix("diffrow "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(row > 0, "{result}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("diffnew 0x") && l.ends_with("067 P RW US A D")),
        "{result}"
    );
    // A screenshot for people to look at (target/journey-report.png); not compared.
    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/journey-report.png");
    let _ = headless(
        &browser,
        &[
            &format!("--screenshot={}", shot.display()),
            &format!("file://{}#exc-2", html.display()),
        ],
    );
}

/// The screen in the report file and on the page: the exception record carries the screen
/// as it was when the fault came, the run record the final one with its colours.
#[test]
fn the_vga_screen_reaches_the_report_file_and_the_page() {
    if kvm_or_skip("vga_screen_html").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (html, jsonl, _) = scenario_pages(dir.path(), "vga");
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let fault = records.iter().find(|r| r["type"] == "exception").unwrap();
    let at_fault: Vec<&str> = fault["screen"]
        .as_array()
        .expect("the first exception record carries the screen")
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(at_fault.first(), Some(&"[vga] boot log line  6 of 30"));
    assert_eq!(at_fault.last(), Some(&"[vga] boot log line 30 of 30"));
    // The run record, then the diagnosis of the panic's exception.
    let run = &records[records.len() - 2];
    assert_eq!(run["type"], "run");
    assert_eq!(records.last().unwrap()["type"], "diagnosis");
    let panic_row = run["screen"]["text"][24].as_str().unwrap();
    assert!(
        panic_row.starts_with("KERNEL PANIC: vector 14"),
        "{panic_row}"
    );
    assert_eq!(
        &run["screen"]["attributes"][24].as_str().unwrap()[..4],
        "4f4f"
    );
    assert_eq!(run["screen"]["cursor"], serde_json::json!([24, 0]));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<pre class=\"vga\">"));
    assert!(
        page.contains("<span style=\"color:#ffffff;background:#aa0000\">ERNEL PANIC: vector 14"),
        "the panic row in white on red, after the cursor's cell"
    );
}

/// A triple fault: the report file carries a `delivery` record per replayed delivery, and
/// the page (written by --html, and again by `report`) draws the chain.
#[test]
fn a_triple_fault_chain_reaches_the_report_file_and_the_page() {
    if kvm_or_skip("triple_fault_html").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (html, jsonl, _) = scenario_pages(dir.path(), "stack-overflow-no-ist");
    let deliveries: Vec<serde_json::Value> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["type"] == "delivery")
        .collect();
    let vectors: Vec<u64> = deliveries
        .iter()
        .map(|d| d["vector"].as_u64().unwrap())
        .collect();
    assert_eq!(vectors, [14, 8], "{deliveries:#?}");
    assert_eq!(deliveries[1]["raised"]["name"], "#PF");
    assert_eq!(deliveries[1]["shutdown"], true);
    let again = dir.path().join("again.html");
    let r = vmm(&[
        "report",
        jsonl.to_str().unwrap(),
        "-o",
        again.to_str().unwrap(),
    ]);
    assert_eq!(r.status, 0, "{}{}", r.stdout, r.stderr);
    for page in [html, again] {
        let text = std::fs::read_to_string(&page).unwrap();
        assert!(
            text.contains("<h2>How the CPU shut down</h2>"),
            "{}",
            page.display()
        );
        assert!(
            text.contains("✗ delivering it raised <b>#PF</b> error 0x2 CR2 0x329f18: pushing the #DF frame at 0x329f18"),
            "{}",
            page.display()
        );
    }
}
