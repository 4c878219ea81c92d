//! The answer first: a few lines right after "run ended" saying what ended the run, the
//! exception that caused it, the root cause in one sentence, where, during what, and the
//! command that reruns it stopped there under gdb.

use crate::analysis::Captured;
use crate::exceptions::ExceptionLog;
use std::fmt;

/// What kind of ending a run had, as far as its diagnosis cares (`Ending::diagnosed_as`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// The guest exited with 0: nothing to diagnose.
    Clean,
    TripleFault,
    /// The watchdog stopped a guest still running after `limit` (in words), at `rip`, at
    /// `place` (function+offset, file:line) when the symbols name it.
    Timeout {
        limit: String,
        rip: u64,
        place: Option<String>,
    },
    Other,
}

/// The diagnosis block of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    /// The number of the exception the run died of; `None` for a triple fault the tap saw no
    /// exception of.
    pub seq: Option<u64>,
    /// The exception the run died of, in brief: `[15746] #PF page fault at rip 0x114909`.
    pub fault: String,
    /// The explanation's first sentence.
    pub cause: Option<String>,
    /// Function and line, with the two nearest callers.
    pub place: Option<String>,
    /// The exception that was being handled when this one came.
    pub during: Option<String>,
    /// What to type to get there under gdb.
    pub next: Vec<String>,
}

/// The diagnosis of a run that did not end well (anything but exit code 0), whose
/// exceptions the tap logged: about its innermost exception still being handled, or about a
/// triple fault that left none. `rerun` is the command line that ran it, to which the gdb
/// flags are added.
pub fn diagnose(log: &ExceptionLog, ended: RunEnd, rerun: &[String]) -> Option<Diagnosis> {
    if ended == RunEnd::Clean {
        return None;
    }
    // A timeout inside a handler is about that handler's exception.
    let Some(innermost) = log.active.last() else {
        return match ended {
            RunEnd::TripleFault => Some(triple_fault(log.chain_at_end.as_ref(), rerun)),
            RunEnd::Timeout { limit, rip, place } => Some(timeout(&limit, rip, place, rerun)),
            RunEnd::Clean | RunEnd::Other => None,
        };
    };
    let record = &innermost.record;
    let analysis = innermost.analysis.as_ref();
    let fault = format!(
        "[{}] {} at rip {:#x}{}",
        record.seq,
        abi::exception::name(record.vector),
        record.regs.rip,
        if record.is_page_fault() {
            format!(", cr2 {:#x}", record.control.cr2)
        } else {
            String::new()
        }
    );
    let cause = analysis.map(|a| first_sentence(&a.explanation));
    let place = analysis.and_then(|a| {
        let here = a.location.as_ref()?.to_string();
        let callers: Vec<String> = a
            .backtrace
            .iter()
            .filter_map(|(_, l)| l.as_ref().map(|l| l.function.clone()))
            .take(2)
            .collect();
        Some(if callers.is_empty() {
            here
        } else {
            format!("{here}, called from {}", callers.join(" ← "))
        })
    });
    let during = record
        .outer
        .last()
        .and_then(|seq| log.active.iter().find(|c| c.record.seq == *seq))
        .map(describe_outer);
    Some(Diagnosis {
        seq: Some(record.seq),
        fault,
        cause,
        place,
        during,
        next: next_commands(rerun, Some(record.seq)),
    })
}

/// A triple fault with no exception the tap saw: no handler ever ran. The deliveries replayed
/// from the final state say which exceptions and why, when the replay found them. gdb stops
/// at the final state.
fn triple_fault(
    chain: Option<&Result<crate::delivery::Chain, String>>,
    rerun: &[String],
) -> Diagnosis {
    let (fault, cause) = match chain {
        Some(Ok(chain)) if chain.shuts_down() => (
            format!(
                "none reached a handler: {} and the CPU shut down (triple fault)",
                chain.summary()
            ),
            format!("{}.", chain.cause()),
        ),
        _ => (
            "none reached a handler: the CPU shut down delivering an exception (triple fault)"
                .into(),
            "no handler could run: the gate, the handler's page or the stack it pushes on is unusable; the IDT and the final registers are below."
                .into(),
        ),
    };
    Diagnosis {
        seq: None,
        fault,
        cause: Some(cause),
        place: None,
        during: None,
        next: next_commands(rerun, None),
    }
}

/// A guest the watchdog stopped while it ran, with no exception being handled: a loop that
/// never ends, or a wait for something that never comes. gdb stops it where it runs.
fn timeout(limit: &str, rip: u64, place: Option<String>, rerun: &[String]) -> Diagnosis {
    let mut next = next_commands(rerun, None);
    if let Some(first) = next.first_mut() {
        *first = first.replace(" --gdb-wait", "");
    }
    if let Some(second) = next.get_mut(1) {
        *second = "gdb -x gdb/connect.gdb   (in another terminal: connecting stops the guest where it runs)".into();
    }
    Diagnosis {
        seq: None,
        fault: format!("none: the watchdog stopped the guest, still running after {limit}"),
        cause: Some(format!(
            "it was running at rip {rip:#x}: a loop that never ends, or a wait for an interrupt or a device that never comes."
        )),
        place,
        during: None,
        next,
    }
}

/// `[15745] #PF at 0x10a67b for 0xffff800003e00aa0 in heap_workload`.
fn describe_outer(outer: &Captured) -> String {
    let r = &outer.record;
    let mut text = format!(
        "[{}] {} raised at {:#x}",
        r.seq,
        abi::exception::mnemonic(r.vector),
        r.regs.rip
    );
    if r.is_page_fault() {
        text.push_str(&format!(" for {:#x}", r.control.cr2));
    }
    if let Some(location) = outer.analysis.as_ref().and_then(|a| a.location.as_ref()) {
        text.push_str(&format!(" in {}", location.function));
    }
    text
}

/// Up to the first ". " (a sentence), or the whole text.
fn first_sentence(text: &str) -> String {
    match text.find(". ") {
        Some(end) => text[..=end].trim_end().to_string(),
        None => text.to_string(),
    }
}

/// The rerun stopped at exception `seq` under gdb (without one: at the run's end, which a
/// triple fault holds for gdb), and the gdb line that connects.
fn next_commands(rerun: &[String], seq: Option<u64>) -> Vec<String> {
    if rerun.is_empty() {
        return Vec::new();
    }
    let mut words: Vec<String> = vec!["vmm-host".into()];
    let mut skip_value = false;
    for word in rerun.iter().skip(1) {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        match word.as_str() {
            "--gdb" | "--break-on" | "--break-at" => skip_value = true,
            "--gdb-wait" => {}
            w if w.starts_with("--gdb=") || w.starts_with("--break-") => {}
            w => words.push(quoted(w)),
        }
    }
    words.extend(["--gdb", "1234", "--gdb-wait"].map(String::from));
    let stops = match seq {
        Some(seq) => {
            words.extend(["--break-at".to_string(), seq.to_string()]);
            "stops before the handler of that exception"
        }
        None => "`continue` stops at the final state",
    };
    vec![
        words.join(" "),
        format!("gdb -x gdb/connect.gdb   (in another terminal: {stops})"),
    ]
}

/// A shell word: as is when it needs no quoting, else in single quotes.
fn quoted(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

impl Diagnosis {
    /// The `diagnosis` record of the JSON lines (docs/report-schema.md).
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "diagnosis",
            "seq": self.seq,
            "fault": self.fault,
            "cause": self.cause,
            "where": self.place,
            "during": self.during,
            "next": self.next,
        })
    }
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "== diagnosis")?;
        writeln!(f, "  fault   {}", self.fault)?;
        for (label, line) in [
            ("cause", &self.cause),
            ("where", &self.place),
            ("during", &self.during),
        ] {
            if let Some(line) = line {
                writeln!(f, "  {label:<7} {line}")?;
            }
        }
        for (i, command) in self.next.iter().enumerate() {
            let label = if i == 0 { "next" } else { "" };
            writeln!(f, "  {label:<7} {command}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rerun_keeps_what_was_typed_and_stops_at_the_exception() {
        let argv: Vec<String> = [
            "target/debug/vmm-host",
            "run",
            "--cmdline",
            "test=heap vmm=boxkernel",
            "--gdb",
            "9999",
            "--break-on",
            "pf",
            "--quiet",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            next_commands(&argv, Some(15746))[0],
            "vmm-host run --cmdline 'test=heap vmm=boxkernel' --quiet --gdb 1234 --gdb-wait --break-at 15746"
        );
        assert!(next_commands(&[], Some(1)).is_empty());
        assert_eq!(
            next_commands(&argv[..2], None),
            [
                "vmm-host run --gdb 1234 --gdb-wait",
                "gdb -x gdb/connect.gdb   (in another terminal: `continue` stops at the final state)"
            ]
        );
        assert_eq!(quoted("it's"), r"'it'\''s'");
    }

    #[test]
    fn the_cause_is_the_explanations_first_sentence() {
        assert_eq!(
            first_sentence(
                "physical address 0x4109000 dereferenced as virtual: it lies above 0x4000000. The kernel write went"
            ),
            "physical address 0x4109000 dereferenced as virtual: it lies above 0x4000000."
        );
        assert_eq!(first_sentence("no dot"), "no dot");
    }
}
