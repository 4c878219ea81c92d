//! `--report FILE.jsonl`: one JSON object per line for every exception, diff and audit, then
//! one for the end of the run (schema: docs/report-schema.md).

use crate::analysis::{Analysis, Diff, NamedWalk};
use crate::ending::RunReport;
use crate::paging::{Audit, Walk, WalkEnd};
use crate::screen::Screen;
use crate::tap::ExceptionRecord;
use abi::exception;
use serde_json::{Value, json};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot create the report file `{path}`: {error}; check that its directory exists and is writable", path = .0.display(), error = .1)]
    Create(PathBuf, std::io::Error),
    #[error("cannot write the report file `{path}`: {error}", path = .0.display(), error = .1)]
    Write(PathBuf, std::io::Error),
}

fn hex(value: u64) -> String {
    format!("{value:#x}")
}

pub fn walk_json(walk: &Walk) -> Value {
    let steps: Vec<Value> = walk
        .steps
        .iter()
        .map(|s| {
            json!({
                "level": walk.format.linux_name(s.level),
                "index": s.index,
                "table": hex(s.table.raw()),
                "entry": hex(s.entry.raw()),
                "flags": s.entry.to_string(),
            })
        })
        .collect();
    let end = match walk.end {
        WalkEnd::Mapped(m) => json!({
            "result": "mapped", "physical": hex(m.gpa.raw()), "page_size": m.page_size,
            "writable": m.writable, "user": m.user, "executable": m.executable,
        }),
        WalkEnd::NonCanonical => json!({"result": "non-canonical"}),
        WalkEnd::NotPresent { level } => {
            json!({"result": "not-present", "level": walk.format.linux_name(level)})
        }
        WalkEnd::ReservedBits { level, bits } => {
            json!({"result": "reserved-bits", "level": walk.format.linux_name(level), "bits": hex(bits)})
        }
        WalkEnd::TableOutsideRam { level, table } => json!({
            "result": "table-outside-ram", "level": walk.format.linux_name(level), "table": hex(table.raw()),
        }),
    };
    json!({
        "address": hex(walk.gva.raw()),
        "offset": walk.gva.page_offset(),
        "paging": walk.format.key(),
        "steps": steps,
        "end": end,
    })
}

fn walks_json(walks: &[NamedWalk]) -> Value {
    walks
        .iter()
        .map(|w| json!({"what": w.what.to_string(), "walk": walk_json(&w.walk)}))
        .collect()
}

pub fn exception_json(record: &ExceptionRecord, analysis: Option<&Analysis>) -> Value {
    let frame = record.frame.map(|f| {
        json!({
            "at": hex(f.at.raw()), "rip": hex(f.rip.raw()), "cs": f.cs, "rflags": hex(f.rflags),
            "rsp": hex(f.rsp.raw()), "ss": f.ss,
        })
    });
    let c = &record.control;
    let mut value = json!({
        "type": "exception",
        "seq": record.seq,
        "vector": record.vector,
        "name": exception::name(record.vector),
        "error": record.error(),
        "error_text": record.error_text(),
        "rip": hex(record.regs.rip),
        "cpl": record.cpl(),
        "frame": frame,
        "cr0": hex(c.cr0), "cr2": hex(c.cr2), "cr3": hex(c.cr3), "cr4": hex(c.cr4),
        "efer": hex(c.efer),
        "depth": record.depth,
        "outer": record.outer,
    });
    if let Some(a) = analysis {
        let instruction = a.instruction.as_ref().ok().map(|i| {
            let operands: Vec<Value> = i
                .operands
                .iter()
                .map(|o| {
                    json!({"text": o.text, "address": o.address.map(|a| hex(a.raw())),
                           "write": o.write, "size": o.size})
                })
                .collect();
            json!({"text": i.text, "bytes": i.bytes.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                   "operands": operands})
        });
        let location = a.location.as_ref().map(
            |l| json!({"function": l.function, "offset": l.offset, "file": l.file, "line": l.line}),
        );
        value["instruction"] = instruction.unwrap_or(Value::Null);
        value["location"] = location.unwrap_or(Value::Null);
        value["walks"] = walks_json(&a.walks);
        value["explanation"] = json!(a.explanation);
    }
    value
}

pub fn diff_json(seq: u64, diff: &Diff) -> Value {
    let changes: Vec<Value> = diff
        .changes
        .iter()
        .map(|c| {
            json!({
                "level": diff.now.format.linux_name(c.level), "index": c.index,
                "entry_address": hex(c.entry_address.raw()),
                "old": c.old.map(|p| hex(p.raw())),
                "new": hex(c.new.raw()),
                "new_flags": c.new.to_string(),
                "new_pfn": hex(c.new.pfn()),
                "hardware_only": c.hardware_only(),
            })
        })
        .collect();
    json!({"type": "diff", "seq": seq, "address": hex(diff.gva.raw()), "changes": changes})
}

/// One exception as the delivery replay names it.
fn raised_json(raised: &crate::delivery::Raised) -> Value {
    json!({
        "vector": raised.vector,
        "name": abi::exception::mnemonic(raised.vector),
        "error": raised.error,
        "cr2": raised.cr2.map(hex),
        "why": raised.why,
    })
}

/// One delivery the CPU attempted before it shut down (`step` from 1): the exception, and the
/// handler it reached or the exception delivering it raised.
pub fn delivery_json(step: usize, attempt: &crate::delivery::Attempt, shutdown: bool) -> Value {
    let mut value = raised_json(&attempt.exception);
    value["type"] = json!("delivery");
    value["step"] = json!(step);
    match &attempt.outcome {
        Ok(d) => {
            value["delivered"] =
                json!({"handler": hex(d.handler.raw()), "frame": hex(d.frame.raw())});
        }
        Err(raised) => {
            value["raised"] = raised_json(raised);
            value["shutdown"] = json!(shutdown);
        }
    }
    value
}

/// The loop of deliveries to a handler the CPU could not run that came before a triple
/// fault's chain, and the exception that started it.
pub fn loop_json(
    found: &crate::delivery::Loop,
    started: Option<&crate::delivery::Raised>,
) -> Value {
    json!({
        "type": "loop",
        "handler": hex(found.handler.raw()),
        "deliveries": found.deliveries,
        "counted": if found.live { "live" } else { "frames" },
        "oldest_frame": hex(found.oldest.raw()),
        "newest_frame": hex(found.newest.raw()),
        "origin": found.origin.map(|(rip, rsp)| json!({"rip": hex(rip.raw()), "rsp": hex(rsp.raw())})),
        "started": started.map(raised_json),
        "stopped": found.stopped,
    })
}

pub fn audit_json(seq: Option<u64>, audit: &Audit) -> Value {
    let ranges: Vec<Value> = audit
        .ranges
        .iter()
        .map(|r| json!({"start": hex(r.start.raw()), "size": hex(r.size), "rights": r.rights()}))
        .collect();
    let findings: Vec<String> = audit.findings.iter().map(ToString::to_string).collect();
    json!({
        "type": "audit",
        "seq": seq,
        "cr3": hex(audit.cr3.raw()),
        "entries": audit.entries_visited,
        "ranges": ranges,
        "identity": audit.identity.iter().map(|(s, n)| json!({"start": hex(s.raw()), "size": hex(*n)})).collect::<Vec<_>>(),
        "direct_map": audit.direct_map.map(|d| json!({"base": hex(d.base.raw()), "physical": hex(d.phys_start.raw()), "size": hex(d.size)})),
        "recursive_slot": audit.recursive_slot,
        "table_frames": audit.table_frames.len(),
        "findings": findings,
    })
}

pub fn run_json(report: &RunReport, exceptions: u64) -> Value {
    json!({
        "type": "run",
        "ending": report.ending.kind(),
        "status": report.exit_status(),
        "seconds": report.elapsed.as_secs_f64(),
        "vm_exits": report.vm_exits,
        "exceptions": exceptions,
        "post_codes": report.post_codes,
        "screen": report.screen.as_ref().map(screen_json),
        "interrupts": report
            .interrupts
            .iter()
            .map(|(vector, count)| json!({"vector": vector, "count": count}))
            .collect::<Vec<_>>(),
    })
}

/// The screen as the run record carries it: every row's text and attributes, and the cursor.
pub fn screen_json(screen: &Screen) -> Value {
    json!({
        "text": screen.lines(),
        "attributes": screen.attribute_rows(),
        "cursor": screen.cursor.map(|(row, column)| [row, column]),
    })
}

/// The open report file. Write errors are kept and reported once, at the end.
#[derive(Debug)]
pub struct ReportFile {
    path: PathBuf,
    out: BufWriter<File>,
    error: Option<std::io::Error>,
    /// The screen when the last exception was recorded, and its text as the last record that
    /// carried one had it.
    last_screen: Option<Screen>,
    last_text: Vec<String>,
}

impl ReportFile {
    pub fn create(path: &Path) -> Result<Self, ReportError> {
        let file = File::create(path).map_err(|e| ReportError::Create(path.into(), e))?;
        Ok(Self {
            path: path.into(),
            out: BufWriter::new(file),
            error: None,
            last_screen: None,
            last_text: Vec::new(),
        })
    }

    /// The screen's text rows (up to the last with text) when they differ from what the last
    /// exception record carried: records carry the screen only when it changed.
    pub fn screen_changed(&mut self, screen: &Screen) -> Option<Vec<String>> {
        // The same cells mean the same text: most exceptions leave the screen alone.
        if self.last_screen.as_ref() == Some(screen) {
            return None;
        }
        self.last_screen = Some(screen.clone());
        let text: Vec<String> = screen.text().lines().map(str::to_string).collect();
        (text != self.last_text).then(|| {
            self.last_text.clone_from(&text);
            text
        })
    }

    pub fn line(&mut self, value: &Value) {
        if self.error.is_some() {
            return;
        }
        let result = serde_json::to_writer(&mut self.out, value)
            .map_err(std::io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"));
        if let Err(e) = result {
            self.error = Some(e);
        }
    }

    pub fn finish(mut self) -> Result<(), ReportError> {
        if let Some(e) = self.error.take() {
            return Err(ReportError::Write(self.path, e));
        }
        self.out
            .flush()
            .map_err(|e| ReportError::Write(self.path.clone(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Gpa;
    use crate::paging::{CpuPaging, PagingMode, audit, identity_tree_4k};

    #[test]
    fn an_audit_record_carries_the_cr3_ranges_and_identity_map_it_found() {
        // 4 MiB identity-mapped with 4 KiB pages; the tables sit right above it.
        let (memory, cr3) = identity_tree_4k(4 << 20);
        let mode = PagingMode::new(CpuPaging::with_phys_bits(48), 0xd00);
        let found = audit(&memory, mode, cr3, &[(Gpa::new(0), 8 << 20)]);
        let record = audit_json(Some(3), &found);
        assert_eq!(record["type"], "audit");
        assert_eq!(record["seq"], 3);
        assert_eq!(record["cr3"], "0x400000");
        assert_eq!(record["ranges"][0]["start"], "0x0");
        assert_eq!(record["ranges"][0]["size"], "0x400000");
        assert_eq!(record["identity"][0]["size"], "0x400000");
        assert_eq!(record["recursive_slot"], serde_json::Value::Null);
    }
}
