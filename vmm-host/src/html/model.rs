//! The JSON-lines report (docs/report-schema.md) read back: what the HTML page draws.
//! Unknown fields are ignored, so reports from later versions still render.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}:{line}: not a report line: {}", one_line(error))]
    Line {
        path: String,
        line: usize,
        error: serde_json::Error,
    },
    #[error("{path} holds no report lines: write one with --report FILE.jsonl")]
    Empty { path: String },
}

/// `error` with its control characters escaped: serde quotes values from the file, and a
/// `\n` in one must not break the error's one line.
fn one_line(error: &serde_json::Error) -> String {
    let text = error.to_string();
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// A hex string from the report as a number (`"0x716b326c8100"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hex(pub u64);

impl<'de> Deserialize<'de> for Hex {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let digits = text.strip_prefix("0x").unwrap_or(&text);
        u64::from_str_radix(digits, 16)
            .map(Hex)
            .map_err(|_| serde::de::Error::custom(format!("`{text}` is not a hex number")))
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Step {
    pub level: String,
    pub index: u64,
    pub table: Hex,
    pub entry: Hex,
    pub flags: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WalkEnd {
    pub result: String,
    pub level: Option<String>,
    pub physical: Option<Hex>,
    pub page_size: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Walk {
    pub address: Hex,
    /// The paging format ("32-bit", "pae", "4-level", …); absent in older reports.
    #[serde(default)]
    pub paging: Option<String>,
    pub steps: Vec<Step>,
    pub end: WalkEnd,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NamedWalk {
    pub what: String,
    pub walk: Walk,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Instruction {
    pub text: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Location {
    pub function: String,
    pub offset: u64,
    pub file: Option<String>,
    pub line: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Exception {
    pub seq: u64,
    pub vector: u8,
    pub name: String,
    pub error_text: Option<String>,
    pub rip: Hex,
    pub cpl: Option<u8>,
    pub cr2: Hex,
    pub cr3: Hex,
    pub depth: usize,
    #[serde(default)]
    pub outer: Vec<u64>,
    pub instruction: Option<Instruction>,
    pub location: Option<Location>,
    #[serde(default)]
    pub walks: Vec<NamedWalk>,
    pub explanation: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Change {
    pub level: String,
    pub index: u64,
    pub entry_address: Hex,
    pub old: Option<Hex>,
    pub new: Hex,
    pub new_flags: String,
    pub hardware_only: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Diff {
    pub seq: u64,
    pub address: Hex,
    pub changes: Vec<Change>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Range {
    pub start: Hex,
    pub size: Hex,
    pub rights: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Span {
    pub start: Hex,
    pub size: Hex,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DirectMap {
    pub base: Hex,
    pub size: Hex,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Audit {
    pub seq: Option<u64>,
    pub cr3: Hex,
    pub ranges: Vec<Range>,
    #[serde(default)]
    pub identity: Vec<Span>,
    pub direct_map: Option<DirectMap>,
    pub recursive_slot: Option<u64>,
    #[serde(default)]
    pub findings: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Run {
    pub ending: String,
    pub status: i64,
    pub seconds: f64,
    pub exceptions: u64,
    /// The VGA text screen at the end; absent in older reports and when it was blank.
    #[serde(default)]
    pub screen: Option<ScreenLine>,
}

/// The run record's `screen`: 25 rows of text, their attributes in hex, the cursor.
#[derive(Debug, Clone, Deserialize)]
pub struct ScreenLine {
    pub text: Vec<String>,
    pub attributes: Vec<String>,
    pub cursor: Option<[usize; 2]>,
}

/// The `diagnosis` record: the block that opens the console report.
#[derive(Debug, Clone, Deserialize)]
pub struct DiagnosisLine {
    pub seq: Option<u64>,
    pub fault: String,
    pub cause: Option<String>,
    #[serde(rename = "where")]
    pub place: Option<String>,
    pub during: Option<String>,
    #[serde(default)]
    pub next: Vec<String>,
}

/// An exception of a triple fault's replayed chain.
#[derive(Debug, Clone, Deserialize)]
pub struct Raised {
    pub vector: u8,
    pub name: String,
    pub error: Option<u64>,
    pub cr2: Option<Hex>,
    pub why: String,
}

/// Where a replayed delivery reached its handler.
#[derive(Debug, Clone, Deserialize)]
pub struct Delivered {
    pub handler: Hex,
    pub frame: Hex,
}

/// A `loop` record: deliveries to a handler the CPU could not run, before a triple fault.
#[derive(Debug, Clone, Deserialize)]
pub struct LoopLine {
    pub handler: Hex,
    pub deliveries: u64,
    pub oldest_frame: Hex,
    pub newest_frame: Hex,
    pub started: Option<Raised>,
}

/// A `delivery` record: one delivery the CPU attempted before it shut down.
#[derive(Debug, Clone, Deserialize)]
pub struct Delivery {
    pub step: usize,
    #[serde(flatten)]
    pub exception: Raised,
    pub raised: Option<Raised>,
    pub delivered: Option<Delivered>,
    #[serde(default)]
    pub shutdown: bool,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Line {
    Exception(Box<Exception>),
    Delivery(Box<Delivery>),
    Loop(LoopLine),
    Diff(Diff),
    Audit(Box<Audit>),
    Run(Run),
    Diagnosis(DiagnosisLine),
}

/// Everything one report holds.
#[derive(Debug, Default)]
pub struct Report {
    pub exceptions: Vec<Exception>,
    pub diffs: BTreeMap<u64, Diff>,
    /// Audits after an exception (`--audit full`, or where an explanation needed one).
    pub audits: BTreeMap<u64, Audit>,
    /// The audit of the page tables the run ended with.
    pub final_audit: Option<Audit>,
    pub run: Option<Run>,
    pub diagnosis: Option<DiagnosisLine>,
    /// A triple fault's deliveries, replayed.
    pub chain: Vec<Delivery>,
    /// The loop before them.
    pub chain_loop: Option<LoopLine>,
}

impl Report {
    /// Parse report text; `path` only names the file in errors.
    pub fn parse(path: &str, text: &str) -> Result<Self, ModelError> {
        let mut report = Report::default();
        let mut lines = 0;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            lines += 1;
            let parsed: Line = serde_json::from_str(line).map_err(|error| ModelError::Line {
                path: path.to_string(),
                line: i + 1,
                error,
            })?;
            match parsed {
                Line::Exception(e) => report.exceptions.push(*e),
                Line::Delivery(d) => report.chain.push(*d),
                Line::Loop(l) => report.chain_loop = Some(l),
                Line::Diff(d) => {
                    report.diffs.insert(d.seq, d);
                }
                Line::Audit(a) => match a.seq {
                    Some(seq) => {
                        report.audits.insert(seq, *a);
                    }
                    None => report.final_audit = Some(*a),
                },
                Line::Run(r) => report.run = Some(r),
                Line::Diagnosis(d) => report.diagnosis = Some(d),
            }
        }
        if lines == 0 {
            return Err(ModelError::Empty {
                path: path.to_string(),
            });
        }
        Ok(report)
    }

    /// The audit that shows the address space at exception `seq`: its own, else the final one
    /// if it is of the same CR3.
    pub fn audit_for(&self, seq: u64, cr3: u64) -> Option<&Audit> {
        self.audits
            .get(&seq)
            .or_else(|| self.final_audit.as_ref().filter(|a| a.cr3.0 == cr3))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_names_the_file_and_line() {
        let err = Report::parse("r.jsonl", "{\"type\":\"run\",\"ending\":\"exit\",\"status\":0,\"seconds\":1.0,\"exceptions\":0}\nnot json\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("r.jsonl:2: not a report line: "), "{err}");
        let err = Report::parse("r.jsonl", "{\"type\":\"exception\",\"seq\":1}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("r.jsonl:1: not a report line: missing field"),
            "{err}"
        );
        let err = Report::parse("r.jsonl", "\n").unwrap_err().to_string();
        assert_eq!(
            err,
            "r.jsonl holds no report lines: write one with --report FILE.jsonl"
        );
        let err = Report::parse(
            "r.jsonl",
            "{\"type\":\"diff\",\"seq\":1,\"address\":\"0xzz\",\"changes\":[]}",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`0xzz` is not a hex number"), "{err}");
    }
}
