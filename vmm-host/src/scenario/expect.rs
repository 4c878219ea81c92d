//! What a scenario expects of the exceptions, the page tables and the time of a run, and
//! the check of a finished run against it. Serial text and the ending are checked in
//! `mod.rs`; everything here comes from the exception tap.

use crate::exceptions::ExceptionLog;
use crate::history::Brief;
use abi::exception::mnemonic;
use serde::Deserialize;
use std::fmt;
use std::ops::Range;
use std::time::Duration;
use toml::Spanned;

/// A run over budget fails only past this multiple: CI machines are shared and noisy.
pub const BUDGET_TOLERANCE: u32 = 10;

/// A value with the line it came from, so a failed check can point at it.
#[derive(Debug, Clone, PartialEq)]
pub struct Located<T> {
    pub value: T,
    pub line: usize,
}

/// Why an expectation in a scenario file is not valid: the byte offset and the message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ExpectError {
    pub offset: usize,
    pub message: String,
}

fn invalid(offset: usize, message: impl Into<String>) -> ExpectError {
    ExpectError {
        offset,
        message: message.into(),
    }
}

// ---- the file's form -------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawVector {
    Number(u8),
    Name(String),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawErrorCode {
    Value(u64),
    Bits(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawAddress {
    Value(u64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawException {
    vector: Spanned<RawVector>,
    error: Option<Spanned<RawErrorCode>>,
    cr2: Option<Spanned<RawAddress>>,
    rip: Option<Spanned<RawAddress>>,
    explanation: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDiff {
    entry: Spanned<String>,
    old: Option<Spanned<u64>>,
    flags: Option<Spanned<String>>,
}

// ---- checked expectations --------------------------------------------------------------

/// Error-code bits by name: page-fault bits for #PF, selector-error bits for the others.
const PF_BITS: [(&str, u64); 8] = [
    ("present", 1),
    ("write", 1 << 1),
    ("user", 1 << 2),
    ("reserved", 1 << 3),
    ("fetch", 1 << 4),
    ("pk", 1 << 5),
    ("ss", 1 << 6),
    ("sgx", 1 << 15),
];
const SELECTOR_BITS: [(&str, u64); 3] = [("ext", 1), ("idt", 1 << 1), ("ti", 1 << 2)];

/// The error code: exactly this value, or these bits set and those clear.
#[derive(Debug, Clone, PartialEq)]
pub enum ErrorCode {
    Exactly(u64),
    Bits { set: u64, clear: u64, text: String },
}

impl ErrorCode {
    fn matches(&self, error: Option<u64>) -> bool {
        let Some(error) = error else {
            return false;
        };
        match self {
            Self::Exactly(value) => error == *value,
            Self::Bits { set, clear, .. } => error & set == *set && error & clear == 0,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exactly(value) => write!(f, "error {value:#x}"),
            Self::Bits { text, .. } => write!(f, "error [{text}]"),
        }
    }
}

/// An address: a value, a half-open range, or anywhere in a function of the kernel.
#[derive(Debug, Clone, PartialEq)]
pub enum AddressPattern {
    Exactly(u64),
    Within(Range<u64>),
    InFunction(String),
}

impl AddressPattern {
    fn matches(&self, address: u64, function_at: &dyn Fn(u64) -> Option<String>) -> bool {
        match self {
            Self::Exactly(value) => address == *value,
            Self::Within(range) => range.contains(&address),
            Self::InFunction(name) => function_at(address).is_some_and(|f| names_match(&f, name)),
        }
    }
}

/// `vmm_get_or_create_table` matches `guest_kernel::vmm::vmm_get_or_create_table`: a
/// name matches whole path segments at the end of the symbol.
fn names_match(symbol: &str, wanted: &str) -> bool {
    symbol == wanted || symbol.ends_with(&format!("::{wanted}"))
}

impl fmt::Display for AddressPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exactly(value) => write!(f, "{value:#x}"),
            Self::Within(range) => write!(f, "{:#x}..{:#x}", range.start, range.end),
            Self::InFunction(name) => write!(f, "in {name}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExceptionExpect {
    pub vector: u8,
    pub error: Option<ErrorCode>,
    pub cr2: Option<AddressPattern>,
    pub rip: Option<AddressPattern>,
    /// A phrase the host's explanation of this exception must contain.
    pub explanation: Option<String>,
}

impl fmt::Display for ExceptionExpect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", mnemonic(self.vector))?;
        if let Some(error) = &self.error {
            write!(f, " {error}")?;
        }
        if let Some(cr2) = &self.cr2 {
            write!(f, " cr2 {cr2}")?;
        }
        if let Some(rip) = &self.rip {
            write!(f, " rip {rip}")?;
        }
        Ok(())
    }
}

/// A page-table entry that must have changed while some exception was handled.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffExpect {
    /// As the report prints it: `PTE[200]` (Linux names; PML4/PDPT/PD/PT work too).
    pub level: crate::paging::Level,
    pub index: usize,
    pub old: Option<u64>,
    /// The new entry's flags as the report prints them: `P RW US A D`.
    pub flags: Option<String>,
}

impl fmt::Display for DiffExpect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.level.linux_name(), self.index)?;
        if let Some(old) = self.old {
            write!(f, " from {old:#x}")?;
        }
        if let Some(flags) = &self.flags {
            write!(f, " to {flags}")?;
        }
        Ok(())
    }
}

// ---- parsing ---------------------------------------------------------------------------

/// An exception vector by number (0–31) or mnemonic (`gp`, `pf`, `df`).
pub(super) fn vector(raw: &Spanned<RawVector>) -> Result<u8, ExpectError> {
    match raw.get_ref() {
        RawVector::Number(n) if *n < 32 => Ok(*n),
        RawVector::Name(name) => crate::catch::parse_vector(name).ok_or_else(|| {
            invalid(
                raw.span().start,
                format!("unknown vector `{name}`: use a number 0-31 or a mnemonic like gp, pf, df"),
            )
        }),
        RawVector::Number(n) => Err(invalid(
            raw.span().start,
            format!("vector {n} is not an exception (0-31)"),
        )),
    }
}

pub(super) fn exception(raw: RawException) -> Result<ExceptionExpect, ExpectError> {
    let vector = vector(&raw.vector)?;
    let error = raw
        .error
        .map(|e| error_code(vector, e.span().start, e.into_inner()))
        .transpose()?;
    let cr2 = raw.cr2.map(address).transpose()?;
    let rip = raw.rip.map(address).transpose()?;
    let explanation = match raw.explanation {
        Some(text) if text.get_ref().trim().is_empty() => {
            return Err(invalid(
                text.span().start,
                "an empty explanation matches anything: remove it",
            ));
        }
        other => other.map(Spanned::into_inner),
    };
    Ok(ExceptionExpect {
        vector,
        error,
        cr2,
        rip,
        explanation,
    })
}

fn error_code(vector: u8, offset: usize, raw: RawErrorCode) -> Result<ErrorCode, ExpectError> {
    let names: &[(&str, u64)] = if vector == abi::exception::PAGE_FAULT {
        &PF_BITS
    } else {
        &SELECTOR_BITS
    };
    match raw {
        RawErrorCode::Value(value) => Ok(ErrorCode::Exactly(value)),
        RawErrorCode::Bits(words) if words.is_empty() => Err(invalid(
            offset,
            "an empty list of error bits matches anything: remove it",
        )),
        RawErrorCode::Bits(words) => {
            let (mut set, mut clear) = (0, 0);
            for word in &words {
                let (negated, name) = match word.strip_prefix('!') {
                    Some(name) => (true, name),
                    None => (false, word.as_str()),
                };
                let Some(&(_, bit)) = names.iter().find(|(n, _)| n.eq_ignore_ascii_case(name))
                else {
                    let known: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
                    return Err(invalid(
                        offset,
                        format!(
                            "`{word}` is not an error-code bit of {}: use {} (`!` for clear)",
                            mnemonic(vector),
                            known.join(", ")
                        ),
                    ));
                };
                if negated {
                    clear |= bit;
                } else {
                    set |= bit;
                }
            }
            if set & clear != 0 {
                return Err(invalid(offset, "a bit cannot be both set and clear"));
            }
            Ok(ErrorCode::Bits {
                set,
                clear,
                text: words.join(", "),
            })
        }
    }
}

fn number(text: &str) -> Option<u64> {
    crate::gdb::parse_number(text.trim()).ok()
}

fn address(raw: Spanned<RawAddress>) -> Result<AddressPattern, ExpectError> {
    let offset = raw.span().start;
    match raw.into_inner() {
        RawAddress::Value(value) => Ok(AddressPattern::Exactly(value)),
        RawAddress::Text(text) => {
            if let Some((start, end)) = text.split_once("..") {
                let (Some(start), Some(end)) = (number(start), number(end)) else {
                    return Err(invalid(
                        offset,
                        format!("`{text}` is not a range START..END of numbers"),
                    ));
                };
                if start >= end {
                    return Err(invalid(offset, format!("the range `{text}` is empty")));
                }
                return Ok(AddressPattern::Within(start..end));
            }
            if let Some(value) = number(&text) {
                return Ok(AddressPattern::Exactly(value));
            }
            let is_symbol = !text.is_empty()
                && text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '$' | '.'));
            if is_symbol && !text.starts_with(|c: char| c.is_ascii_digit()) {
                Ok(AddressPattern::InFunction(text))
            } else {
                Err(invalid(
                    offset,
                    format!("`{text}` is not an address, a range START..END or a function name"),
                ))
            }
        }
    }
}

pub(super) fn diff(raw: RawDiff) -> Result<DiffExpect, ExpectError> {
    use crate::paging::Level;
    let offset = raw.entry.span().start;
    let text = raw.entry.get_ref();
    let parsed = text.strip_suffix(']').and_then(|t| t.split_once('['));
    let Some((level_name, index)) = parsed else {
        return Err(invalid(
            offset,
            format!("`{text}` is not an entry like PTE[200] or PML4[511]"),
        ));
    };
    let level = match level_name.to_ascii_uppercase().as_str() {
        "PGD" | "PML4" => Level::Pml4,
        "PUD" | "PDPT" => Level::Pdpt,
        "PMD" | "PD" => Level::Pd,
        "PTE" | "PT" => Level::Pt,
        _ => {
            return Err(invalid(
                offset,
                format!(
                    "`{level_name}` is not a level: use PGD, PUD, PMD, PTE (or PML4, PDPT, PD, PT)"
                ),
            ));
        }
    };
    let index = match index.parse::<usize>() {
        Ok(i) if i < 512 => i,
        _ => {
            return Err(invalid(
                offset,
                format!("`{index}` is not a table index (0-511)"),
            ));
        }
    };
    Ok(DiffExpect {
        level,
        index,
        old: raw.old.map(Spanned::into_inner),
        flags: raw.flags.map(Spanned::into_inner),
    })
}

/// Seconds with as many decimals as a short time needs.
pub fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 0.1 {
        format!("{s:.3} s")
    } else {
        format!("{s:.1} s")
    }
}

// ---- checking --------------------------------------------------------------------------

/// What the tap saw of a run, as far as expectations go.
pub struct TapFacts<'a> {
    pub log: &'a ExceptionLog,
    /// The kernel function an address is in, from its symbols.
    pub function_at: &'a dyn Fn(u64) -> Option<String>,
    /// False with `--audit off`: exceptions were recorded, not explained or diffed.
    pub analysed: bool,
}

const NOT_ANALYSED: &str = "cannot be checked: --audit off records exceptions without explaining or diffing them; use --audit faults (the default)";

impl fmt::Debug for TapFacts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TapFacts")
            .field("exceptions", &self.log.total)
            .finish_non_exhaustive()
    }
}

fn brief_matches(wanted: &ExceptionExpect, seen: &Brief, facts: &TapFacts<'_>) -> bool {
    wanted.matches(
        (seen.vector, seen.error, seen.cr2, seen.rip.raw()),
        facts.function_at,
    )
}

impl ExceptionExpect {
    /// Whether a delivery of (vector, error code, CR2, RIP) is this one; `function_at` names
    /// the kernel function at an address. Also how tests hold a scenario to QEMU's `-d int`.
    pub fn matches(
        &self,
        (vector, error, cr2, rip): (u8, Option<u64>, u64, u64),
        function_at: &dyn Fn(u64) -> Option<String>,
    ) -> bool {
        vector == self.vector
            && self.error.as_ref().is_none_or(|e| e.matches(error))
            && self
                .cr2
                .as_ref()
                .is_none_or(|p| p.matches(cr2, function_at))
            && self
                .rip
                .as_ref()
                .is_none_or(|p| p.matches(rip, function_at))
    }
}

fn describe(seen: &Brief, facts: &TapFacts<'_>) -> String {
    let mut text = mnemonic(seen.vector).to_string();
    if let Some(error) = seen.error {
        text += &format!(" error {error:#x}");
    }
    if seen.vector == abi::exception::PAGE_FAULT {
        text += &format!(" cr2 {:#x}", seen.cr2);
    }
    text += &format!(" rip {:#x}", seen.rip.raw());
    if let Some(function) = (facts.function_at)(seen.rip.raw()) {
        text += &format!(" ({function})");
    }
    text
}

/// The exceptions must appear in this order (others may come between them); `count` is
/// the exact total when given. Each failure is (scenario line, message).
pub fn check_exceptions(
    wanted: &[Located<ExceptionExpect>],
    count: Option<&Located<u64>>,
    facts: &TapFacts<'_>,
) -> Vec<(usize, String)> {
    let mut failures = Vec::new();
    let seen: Vec<&Brief> = facts.log.sequence.iter().collect();
    let mut from = 0;
    for expect in wanted {
        let found = seen[from..]
            .iter()
            .position(|s| brief_matches(&expect.value, s, facts))
            .map(|i| from + i);
        let Some(at) = found else {
            let detail = not_seen(&expect.value, &seen, from, facts);
            failures.push((
                expect.line,
                format!("expected exception {} was not seen{detail}", expect.value),
            ));
            continue;
        };
        if let Some(failure) = check_explanation(&expect.value, seen[at].seq, facts) {
            failures.push((expect.line, failure));
        }
        from = at + 1;
    }
    if let Some(count) = count
        && facts.log.total != count.value
    {
        failures.push((
            count.line,
            format!(
                "expected {} exceptions in all, the run took {}",
                count.value, facts.log.total
            ),
        ));
    }
    failures
}

/// What came instead of an expected exception that was not seen from `seen[from]` on.
fn not_seen(
    expect: &ExceptionExpect,
    seen: &[&Brief],
    from: usize,
    facts: &TapFacts<'_>,
) -> String {
    let same_vector = seen[from..].iter().find(|s| s.vector == expect.vector);
    let detail = match same_vector {
        Some(first) => format!(
            "; the first {}{} was {}",
            mnemonic(expect.vector),
            if from > 0 { " after that" } else { "" },
            describe(first, facts)
        ),
        None if from > 0 => format!(
            "; no {} after exception #{}",
            mnemonic(expect.vector),
            seen[from - 1].seq
        ),
        None => format!("; the run took no {}", mnemonic(expect.vector)),
    };
    match facts.log.sequence.gap() {
        Some(gap) => format!("{detail} ({gap})"),
        None => detail,
    }
}

/// Whether exception `seq`'s explanation says what the scenario expects it to.
fn check_explanation(expect: &ExceptionExpect, seq: u64, facts: &TapFacts<'_>) -> Option<String> {
    let phrase = expect.explanation.as_ref()?;
    if !facts.analysed {
        return Some(format!("the explanation {NOT_ANALYSED}"));
    }
    let analysed = facts
        .log
        .kept()
        .find(|c| c.record.seq == seq)
        .and_then(|c| c.analysis.as_ref());
    match analysed {
        Some(analysis) if analysis.explanation.contains(phrase.as_str()) => None,
        Some(analysis) => Some(format!(
            "the explanation of exception #{seq} lacks {phrase:?}; it says: {}",
            first_line(&analysis.explanation)
        )),
        None => Some(format!(
            "exception #{seq} has no explanation kept (the host analyses the first of each kind, and those still handled at the end)"
        )),
    }
}

fn first_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

/// Findings of the audit of the final page tables that must, or must not, appear.
pub fn check_findings(
    present: &[Located<String>],
    absent: &[Located<String>],
    facts: &TapFacts<'_>,
) -> Vec<(usize, String)> {
    let mut failures = Vec::new();
    if present.is_empty() && absent.is_empty() {
        return failures;
    }
    let Some(audit) = &facts.log.final_audit else {
        let line = present.first().or(absent.first()).map_or(0, |l| l.line);
        failures.push((
            line,
            "no audit of the final page tables (paging was off when the run ended)".to_string(),
        ));
        return failures;
    };
    let findings: Vec<String> = audit.findings.iter().map(|f| f.to_string()).collect();
    for wanted in present {
        if !findings.iter().any(|f| f.contains(&wanted.value)) {
            let seen = if findings.is_empty() {
                "there were none".to_string()
            } else {
                format!("there were: {}", findings.join(" | "))
            };
            failures.push((
                wanted.line,
                format!(
                    "the final audit lacks a finding with {:?}; {seen}",
                    wanted.value
                ),
            ));
        }
    }
    for unwanted in absent {
        if let Some(found) = findings.iter().find(|f| f.contains(&unwanted.value)) {
            failures.push((
                unwanted.line,
                format!(
                    "the final audit has a finding with {:?}: {found}",
                    unwanted.value
                ),
            ));
        }
    }
    failures
}

/// Entries that must have changed while an exception was handled, in any captured diff.
pub fn check_diffs(wanted: &[Located<DiffExpect>], facts: &TapFacts<'_>) -> Vec<(usize, String)> {
    if !facts.analysed {
        return wanted
            .iter()
            .map(|w| (w.line, format!("the diff entry {} {NOT_ANALYSED}", w.value)))
            .collect();
    }
    let diffs: Vec<&crate::analysis::Diff> = facts
        .log
        .kept()
        .filter_map(|c| c.analysis.as_ref()?.diff.as_ref())
        .collect();
    let changes: Vec<&crate::analysis::Change> = diffs.iter().flat_map(|d| &d.changes).collect();
    let mut failures = Vec::new();
    for expect in wanted {
        let want = &expect.value;
        let matching = |c: &&&crate::analysis::Change| {
            c.level == want.level
                && c.index == want.index
                && want
                    .old
                    .is_none_or(|old| c.old.map(|o| o.raw()) == Some(old))
                && want.flags.as_ref().is_none_or(|flags| {
                    c.new.present() && mm::paging::Flags(c.new.raw()).to_string() == *flags
                })
        };
        if changes.iter().any(|c| matching(&c)) {
            continue;
        }
        let same_entry: Vec<String> = changes
            .iter()
            .filter(|c| c.level == want.level && c.index == want.index)
            .map(|c| {
                let old = c
                    .old
                    .map_or("(not reached)".to_string(), |o| format!("{:#x}", o.raw()));
                format!("{old} -> {:#x} ({})", c.new.raw(), c.new)
            })
            .collect();
        let detail = if same_entry.is_empty() {
            let plural = if diffs.len() == 1 { "" } else { "s" };
            format!(
                "{} diff{plural} captured, none touched that entry",
                diffs.len()
            )
        } else {
            format!("that entry changed {}", same_entry.join(", "))
        };
        failures.push((
            expect.line,
            format!("expected the diff entry {want}; {detail}"),
        ));
    }
    failures
}

/// The wall-time budget: reported always, a failure only past [`BUDGET_TOLERANCE`] times.
pub fn check_budget(
    budget: Option<&Located<Duration>>,
    elapsed: Duration,
) -> Option<(usize, String)> {
    let budget = budget?;
    (elapsed > budget.value * BUDGET_TOLERANCE).then(|| {
        (
            budget.line,
            format!(
                "took {}, over {BUDGET_TOLERANCE}x its budget of {}",
                seconds(elapsed),
                seconds(budget.value)
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Gva;

    fn brief(seq: u64, vector: u8, error: Option<u64>, cr2: u64, rip: u64) -> Brief {
        Brief {
            seq,
            vector,
            error,
            cr2,
            rip: Gva::new(rip),
            cpl: Some(0),
            depth: 1,
        }
    }

    fn expect(vector: u8, cr2: Option<AddressPattern>, line: usize) -> Located<ExceptionExpect> {
        Located {
            line,
            value: ExceptionExpect {
                vector,
                error: None,
                cr2,
                rip: None,
                explanation: None,
            },
        }
    }

    #[test]
    fn exceptions_match_in_order_with_others_between_and_functions_by_path_suffix() {
        let mut log = ExceptionLog::default();
        log.sequence = [
            brief(1, 14, Some(2), 0x1000, 0x10),
            brief(2, 6, None, 0, 0x20),
            brief(3, 14, Some(6), 0x5000, 0x30),
        ]
        .into_iter()
        .collect();
        log.total = 3;
        let function_at = |rip: u64| (rip == 0x30).then(|| "kernel::mm::fault_in".to_string());
        let facts = TapFacts {
            log: &log,
            function_at: &function_at,
            analysed: true,
        };
        let wanted = [
            expect(14, Some(AddressPattern::Exactly(0x1000)), 3),
            expect(14, Some(AddressPattern::Within(0x5000..0x6000)), 4),
        ];
        assert!(check_exceptions(&wanted, None, &facts).is_empty());
        // Out of order: the #PF at 0x1000 comes before the one at 0x5000, not after.
        let reversed = [wanted[1].clone(), wanted[0].clone()];
        let failures = check_exceptions(&reversed, None, &facts);
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].0, 3);
        assert!(
            failures[0].1.contains("no #PF after exception #3"),
            "{failures:?}"
        );
        let mut by_function = expect(14, None, 5);
        by_function.value.rip = Some(AddressPattern::InFunction("fault_in".into()));
        assert!(check_exceptions(&[by_function.clone()], None, &facts).is_empty());
        by_function.value.rip = Some(AddressPattern::InFunction("in".into()));
        assert_eq!(check_exceptions(&[by_function], None, &facts).len(), 1);
        let count = Located { value: 2, line: 9 };
        let failures = check_exceptions(&[], Some(&count), &facts);
        assert_eq!(
            failures,
            vec![(
                9,
                "expected 2 exceptions in all, the run took 3".to_string()
            )]
        );
    }

    #[test]
    fn error_bits_and_exact_codes() {
        let bits = ErrorCode::Bits {
            set: 2,
            clear: 1,
            text: String::new(),
        };
        assert!(bits.matches(Some(6)));
        assert!(!bits.matches(Some(7)));
        assert!(!bits.matches(None));
        assert!(ErrorCode::Exactly(0).matches(Some(0)));
        assert!(!ErrorCode::Exactly(0).matches(None));
    }

    /// The failure a scenario shows, word for word, for each way an exception can be missed.
    #[test]
    fn a_missed_exception_says_what_came_instead() {
        let mut log = ExceptionLog::default();
        log.sequence = [
            brief(1, 14, Some(2), 0x1000, 0x10),
            brief(2, 13, Some(0), 0, 0x20),
            brief(3, 14, None, 0x5000, 0x30),
        ]
        .into_iter()
        .collect();
        log.total = 3;
        let function_at = |rip: u64| (rip == 0x20).then(|| "kernel::vmm::map".to_string());
        let facts = TapFacts {
            log: &log,
            function_at: &function_at,
            analysed: false,
        };
        let at = |cr2: u64| expect(14, Some(AddressPattern::Exactly(cr2)), 7);
        let mut gp = expect(13, None, 8);
        gp.value.rip = Some(AddressPattern::InFunction("unmap".into()));
        let failures =
            check_exceptions(&[at(0x9000), gp.clone(), expect(0, None, 9)], None, &facts);
        assert_eq!(
            failures,
            vec![
                (
                    7,
                    "expected exception #PF cr2 0x9000 was not seen; the first #PF was #PF error 0x2 cr2 0x1000 rip 0x10".to_string()
                ),
                (
                    8,
                    "expected exception #GP rip in unmap was not seen; the first #GP was #GP error 0x0 rip 0x20 (kernel::vmm::map)".to_string()
                ),
                (9, "expected exception #DE was not seen; the run took no #DE".to_string()),
            ]
        );
        let after = check_exceptions(&[at(0x1000), at(0x7000)], None, &facts);
        assert_eq!(
            after[0].1,
            "expected exception #PF cr2 0x7000 was not seen; the first #PF after that was #PF cr2 0x5000 rip 0x30"
        );
        let mut explained = at(0x1000);
        explained.value.explanation = Some("demand".into());
        assert_eq!(
            check_exceptions(&[explained.clone()], None, &facts),
            vec![(7, format!("the explanation {NOT_ANALYSED}"))]
        );
        let analysed = TapFacts {
            analysed: true,
            ..facts
        };
        assert_eq!(
            check_exceptions(&[explained], None, &analysed),
            vec![(
                7,
                "exception #1 has no explanation kept (the host analyses the first of each kind, and those still handled at the end)".to_string()
            )]
        );
    }

    /// A run whose exception #1 (a #PF) was analysed: its explanation, and a diff in which
    /// PTE[3] went from 0 to `new`; the final audit of a 4 KiB identity map.
    fn analysed_run(new: u64) -> ExceptionLog {
        use crate::paging::{CpuPaging, PagingMode, Pte, audit, identity_tree_4k, walk};
        let (mem, cr3) = identity_tree_4k(0x10_0000);
        let mode = PagingMode::new(CpuPaging::with_phys_bits(48), 0);
        let gva = Gva::new(0x3000);
        let change = crate::analysis::Change {
            level: crate::paging::Level::Pt,
            index: 3,
            entry_address: crate::addr::Gpa::new(0x10_4018),
            old: Some(Pte::new(0)),
            new: Pte::new(new),
        };
        let analysis = crate::analysis::Analysis {
            instruction: Err("not decoded".into()),
            location: None,
            backtrace: Vec::new(),
            walks: Vec::new(),
            explanation: "a kernel write found a not-present PTE\nmore".into(),
            diff: Some(crate::analysis::Diff {
                gva,
                changes: vec![change],
                now: walk(&mem, mode, cr3, gva),
                at_end: false,
            }),
            audit: None,
        };
        let mut log = ExceptionLog::default();
        log.push(crate::analysis::Captured {
            record: crate::tap::ExceptionRecord {
                seq: 1,
                vector: 14,
                shared_handler: false,
                handler: Gva::new(0x1000),
                frame: None,
                frame_error: None,
                control: crate::tap::ControlRegisters::default(),
                regs: kvm_bindings::kvm_regs::default(),
                segments: crate::registers::SegmentBases::default(),
                depth: 1,
                outer: Vec::new(),
            },
            analysis: Some(analysis),
        });
        log.final_audit = Some(audit(&mem, mode, cr3, &mem.ram()));
        log
    }

    fn facts<'a>(log: &'a ExceptionLog, analysed: bool) -> TapFacts<'a> {
        TapFacts {
            log,
            function_at: &|_| None,
            analysed,
        }
    }

    #[test]
    fn explanations_are_matched_by_phrase() {
        let log = analysed_run(0x5007);
        let mut wanted = expect(14, None, 4);
        wanted.value.explanation = Some("not-present PTE".into());
        assert!(check_exceptions(&[wanted.clone()], None, &facts(&log, true)).is_empty());
        wanted.value.explanation = Some("null pointer".into());
        assert_eq!(
            check_exceptions(&[wanted], None, &facts(&log, true)),
            vec![(
                4,
                "the explanation of exception #1 lacks \"null pointer\"; it says: a kernel write found a not-present PTE".to_string()
            )]
        );
        assert_eq!(first_line("\n  \n  second  \nthird"), "second");
    }

    #[test]
    fn findings_of_the_final_audit_must_or_must_not_appear() {
        let log = analysed_run(0x5007);
        let facts = facts(&log, true);
        let at = |line: usize, text: &str| Located {
            value: text.to_string(),
            line,
        };
        let findings: Vec<String> = log
            .final_audit
            .as_ref()
            .unwrap()
            .findings
            .iter()
            .map(|f| f.to_string())
            .collect();
        assert!(findings.iter().any(|f| f.contains("W+X")), "{findings:?}");
        assert!(check_findings(&[at(3, "W+X")], &[at(4, "loop")], &facts).is_empty());
        let failures = check_findings(&[at(3, "loop")], &[at(4, "W+X")], &facts);
        assert_eq!(failures.len(), 2);
        assert_eq!(
            failures[0],
            (
                3,
                format!(
                    "the final audit lacks a finding with \"loop\"; there were: {}",
                    findings.join(" | ")
                )
            )
        );
        assert_eq!(
            failures[1],
            (
                4,
                format!(
                    "the final audit has a finding with \"W+X\": {}",
                    findings[0]
                )
            )
        );
        let no_audit = ExceptionLog::default();
        assert_eq!(
            check_findings(
                &[],
                &[at(6, "W+X")],
                &TapFacts {
                    log: &no_audit,
                    ..facts
                }
            ),
            vec![(
                6,
                "no audit of the final page tables (paging was off when the run ended)".to_string()
            )]
        );
        assert!(
            check_findings(
                &[],
                &[],
                &TapFacts {
                    log: &no_audit,
                    ..facts
                }
            )
            .is_empty()
        );
    }

    #[test]
    fn diff_entries_match_on_level_index_old_value_and_flags() {
        let log = analysed_run(0x5067);
        let facts = facts(&log, true);
        let want = |level, index, old: Option<u64>, flags: Option<&str>| Located {
            line: 12,
            value: DiffExpect {
                level,
                index,
                old,
                flags: flags.map(str::to_string),
            },
        };
        use crate::paging::Level;
        let pte3 = |old, flags| want(Level::Pt, 3, old, flags);
        assert!(check_diffs(&[pte3(Some(0), Some("P RW US A D"))], &facts).is_empty());
        assert!(check_diffs(&[pte3(None, None)], &facts).is_empty());
        let changed = "that entry changed 0x0 -> 0x5067 (P RW US A D)";
        for wrong in [pte3(Some(7), None), pte3(None, Some("P RW"))] {
            let failures = check_diffs(std::slice::from_ref(&wrong), &facts);
            assert_eq!(
                failures,
                vec![(
                    12,
                    format!("expected the diff entry {}; {changed}", wrong.value)
                )]
            );
        }
        for elsewhere in [
            want(Level::Pt, 4, None, None),
            want(Level::Pd, 3, None, None),
        ] {
            assert_eq!(
                check_diffs(std::slice::from_ref(&elsewhere), &facts)[0].1,
                format!(
                    "expected the diff entry {}; 1 diff captured, none touched that entry",
                    elsewhere.value
                )
            );
        }
        let not_present = analysed_run(0x5066);
        let failures = check_diffs(
            &[pte3(None, Some("RW US A D"))],
            &TapFacts {
                log: &not_present,
                ..facts
            },
        );
        assert_eq!(
            failures.len(),
            1,
            "a not-present new entry has no flags to match"
        );
        assert_eq!(
            check_diffs(
                &[pte3(None, None)],
                &TapFacts {
                    analysed: false,
                    ..facts
                }
            ),
            vec![(12, format!("the diff entry PTE[3] {NOT_ANALYSED}"))]
        );
    }

    #[test]
    fn addresses_are_numbers_ranges_or_function_names() {
        let parse = |text: &str| address(Spanned::new(0..0, RawAddress::Text(text.into())));
        assert_eq!(parse("0x10"), Ok(AddressPattern::Exactly(0x10)));
        assert_eq!(parse("16..0x20"), Ok(AddressPattern::Within(16..0x20)));
        assert_eq!(
            parse("guest_kernel::vmm::map$1.2"),
            Ok(AddressPattern::InFunction(
                "guest_kernel::vmm::map$1.2".into()
            ))
        );
        for bad in ["1abc", "map page", "", "a-b"] {
            let error = parse(bad).unwrap_err();
            assert_eq!(
                error.message,
                format!("`{bad}` is not an address, a range START..END or a function name")
            );
        }
        assert_eq!(
            parse("9..9").unwrap_err().message,
            "the range `9..9` is empty"
        );
    }

    #[test]
    fn diff_entries_take_linux_and_intel_level_names() {
        use crate::paging::Level;
        let entry = |text: &str| {
            diff(RawDiff {
                entry: Spanned::new(0..0, text.into()),
                old: None,
                flags: None,
            })
        };
        for (names, level) in [
            (["PGD[1]", "pml4[1]"], Level::Pml4),
            (["PUD[1]", "PDPT[1]"], Level::Pdpt),
            (["pmd[1]", "PD[1]"], Level::Pd),
            (["PTE[1]", "PT[1]"], Level::Pt),
        ] {
            for name in names {
                assert_eq!(entry(name).unwrap().level, level, "{name}");
            }
        }
        assert_eq!(entry("PTE[511]").unwrap().index, 511);
        assert_eq!(
            entry("PTE[512]").unwrap_err().message,
            "`512` is not a table index (0-511)"
        );
        assert!(
            entry("P4D[0]")
                .unwrap_err()
                .message
                .starts_with("`P4D` is not a level")
        );
    }

    #[test]
    fn seconds_show_milliseconds_only_below_a_tenth() {
        assert_eq!(seconds(Duration::from_millis(50)), "0.050 s");
        assert_eq!(seconds(Duration::from_millis(100)), "0.1 s");
        assert_eq!(seconds(Duration::from_millis(2500)), "2.5 s");
    }

    fn parsed(text: &str) -> Result<ExceptionExpect, ExpectError> {
        exception(toml::from_str::<RawException>(text).unwrap())
    }

    #[test]
    fn vectors_are_the_32_exceptions_by_number_or_name() {
        assert_eq!(parsed("vector = 0").unwrap().vector, 0);
        assert_eq!(parsed("vector = 31").unwrap().vector, 31);
        assert_eq!(parsed("vector = \"#PF\"").unwrap().vector, 14);
        let error = parsed("vector = 32").unwrap_err();
        assert_eq!(error.message, "vector 32 is not an exception (0-31)");
        assert_eq!(error.offset, 9, "points at the value");
        let error = parsed("vector = \"irq\"").unwrap_err();
        assert_eq!(
            error.message,
            "unknown vector `irq`: use a number 0-31 or a mnemonic like gp, pf, df"
        );
    }

    /// What a failure message quotes of an expectation.
    #[test]
    fn expectations_read_back_as_written() {
        let full = parsed(
            "vector = \"gp\"\nerror = [\"ext\", \"!ti\"]\ncr2 = \"0x0..0x1000\"\nrip = \"vmm_map_page\"",
        )
        .unwrap();
        assert_eq!(
            full.to_string(),
            "#GP error [ext, !ti] cr2 0x0..0x1000 rip in vmm_map_page"
        );
        let exact = parsed("vector = 14\nerror = 6\ncr2 = 0x10").unwrap();
        assert_eq!(exact.to_string(), "#PF error 0x6 cr2 0x10");
        assert_eq!(parsed("vector = 6").unwrap().to_string(), "#UD");
        let diff = DiffExpect {
            level: crate::paging::Level::Pt,
            index: 200,
            old: Some(0),
            flags: Some("P RW US".into()),
        };
        assert_eq!(diff.to_string(), "PTE[200] from 0x0 to P RW US");
        let bare = DiffExpect {
            old: None,
            flags: None,
            ..diff
        };
        assert_eq!(bare.to_string(), "PTE[200]");
    }

    /// Each name a scenario may write, with its bit as the Intel SDM numbers it.
    #[test]
    fn every_error_bit_name_sets_and_clears_its_own_bit() {
        let page_fault = [
            ("present", 0),
            ("write", 1),
            ("user", 2),
            ("reserved", 3),
            ("fetch", 4),
            ("pk", 5),
            ("ss", 6),
            ("sgx", 15),
        ];
        let selector = [("ext", 0), ("idt", 1), ("ti", 2)];
        for (vector, names) in [(14, &page_fault[..]), (13, &selector[..])] {
            for &(name, bit) in names {
                let words = |w: &str| RawErrorCode::Bits(vec![w.to_string()]);
                let set = error_code(vector, 0, words(name)).unwrap();
                assert_eq!(
                    set,
                    ErrorCode::Bits {
                        set: 1 << bit,
                        clear: 0,
                        text: name.into()
                    },
                    "{name}"
                );
                let upper = name.to_ascii_uppercase();
                let clear = error_code(vector, 0, words(&format!("!{upper}"))).unwrap();
                assert!(
                    matches!(clear, ErrorCode::Bits { set: 0, clear, .. } if clear == 1 << bit),
                    "!{upper}"
                );
            }
        }
        let error = error_code(13, 7, RawErrorCode::Bits(vec!["write".into()])).unwrap_err();
        assert_eq!(error.offset, 7);
        assert_eq!(
            error.message,
            "`write` is not an error-code bit of #GP: use ext, idt, ti (`!` for clear)"
        );
    }

    #[test]
    fn the_budget_fails_only_tenfold() {
        let budget = Located {
            value: Duration::from_secs(1),
            line: 4,
        };
        assert!(check_budget(Some(&budget), Duration::from_secs(9)).is_none());
        assert!(
            check_budget(Some(&budget), Duration::from_secs(10)).is_none(),
            "exactly tenfold still passes"
        );
        let (line, message) = check_budget(Some(&budget), Duration::from_secs(11)).unwrap();
        assert_eq!(line, 4);
        assert_eq!(message, "took 11.0 s, over 10x its budget of 1.0 s");
    }
}
