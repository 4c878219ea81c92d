//! `scenario --all`: every scenario in a directory (or those matching a glob), run on a
//! few worker threads, each a VM of its own; a progress line per scenario, a table at the
//! end, what differed for each failure, and JUnit/JSON files for CI.

use crate::ending::{RunReport, seconds};
use crate::html::escape;
use crate::scenario::{self, Scenario, TapFacts};
use crate::vm::{AuditMode, Vm, VmConfig, VmError};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("--filter `{glob}` is not a glob pattern: {error}")]
    Filter {
        glob: String,
        error: glob::PatternError,
    },
    #[error("no scenario in {dir} matches --filter `{glob}`; available: {available}", dir = .dir.display())]
    NoneMatch {
        dir: PathBuf,
        glob: String,
        available: String,
    },
    #[error("no scenarios in {}", .0.display())]
    Empty(PathBuf),
    #[error(transparent)]
    Scenario(#[from] scenario::ScenarioError),
    #[error("cannot write {path}: {error}", path = .path.display())]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// How every scenario of the suite is run.
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    pub kvm_device: PathBuf,
    pub timeout: Option<Duration>,
    /// `--serial-limit`, overriding the scenario's.
    pub serial_limit: Option<u64>,
    pub tap: bool,
    pub audit: AuditMode,
    /// `--artifacts DIR`: a failing scenario leaves its core and its HTML page there.
    pub artifacts: Option<PathBuf>,
}

/// The scenario files in `dir` whose names match `filter`, sorted by name.
pub fn select(dir: &Path, filter: Option<&str>) -> Result<Vec<PathBuf>, SuiteError> {
    let names = scenario::list(dir)?;
    if names.is_empty() {
        return Err(SuiteError::Empty(dir.to_path_buf()));
    }
    let pattern = filter
        .map(|glob| {
            glob::Pattern::new(glob).map_err(|error| SuiteError::Filter {
                glob: glob.to_string(),
                error,
            })
        })
        .transpose()?;
    let chosen: Vec<PathBuf> = names
        .iter()
        .filter(|n| pattern.as_ref().is_none_or(|p| p.matches(n)))
        .map(|n| dir.join(format!("{n}.toml")))
        .collect();
    if chosen.is_empty() {
        return Err(SuiteError::NoneMatch {
            dir: dir.to_path_buf(),
            glob: filter.unwrap_or_default().to_string(),
            available: names.join(", "),
        });
    }
    Ok(chosen)
}

/// How one scenario of the suite went.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub name: String,
    pub path: PathBuf,
    pub description: String,
    pub verdict: Verdict,
    /// "exit 4", "triple fault", …; empty when the scenario could not run.
    pub ending: String,
    pub exceptions: u64,
    /// The exceptions by mnemonic with counts: `#PF×3 #GP`.
    pub exception_summary: String,
    pub elapsed: Duration,
    pub budget: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Pass,
    /// What differed, one line each with the scenario's file:line.
    Fail(Vec<String>),
    /// The scenario file or the VM could not be set up.
    Error(String),
    /// The host's KVM cannot do what the scenario needs (why, in words): not run, not failed.
    Skipped(String),
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Pass
    }

    /// Whether it failed or could not run: what makes the suite's status non-zero. A skip
    /// does not.
    pub fn failed(&self) -> bool {
        matches!(self.verdict, Verdict::Fail(_) | Verdict::Error(_))
    }

    fn word(&self) -> &'static str {
        match self.verdict {
            Verdict::Pass => "PASS",
            Verdict::Fail(_) => "FAIL",
            Verdict::Error(_) => "ERROR",
            Verdict::Skipped(_) => "SKIP",
        }
    }
}

/// Check a finished run against its scenario, with what the tap saw when it was on.
pub fn check(vm: &Vm, scenario: &Scenario, report: &RunReport) -> Vec<String> {
    let serial = String::from_utf8_lossy(vm.serial_output());
    let function_at = |address: u64| vm.function_at(crate::addr::Gva::new(address));
    let facts = TapFacts {
        log: vm.exceptions(),
        function_at: &function_at,
        analysed: vm.analyses_exceptions(),
    };
    let tap = vm.tap_enabled().then_some(&facts);
    scenario.check(report, &serial, tap)
}

/// The VM a scenario asks for, quiet and without files (callers add those).
pub fn vm_config(scenario: &Scenario, options: &SuiteOptions) -> VmConfig {
    VmConfig {
        kernel: scenario
            .kernel
            .clone()
            .unwrap_or_else(|| crate::bundled_kernel(scenario.boot)),
        symbols: scenario.symbols.clone().or_else(|| {
            scenario
                .kernel
                .is_none()
                .then(|| crate::GUEST_KERNEL_ELF.into())
        }),
        boot: scenario.boot,
        files: Default::default(),
        cpuid: scenario.cpuid.clone(),
        clock: scenario.clock,
        mem: scenario.mem,
        cmdline: scenario.cmdline.clone(),
        timeout: options.timeout.unwrap_or(scenario.timeout),
        serial_log: None,
        serial_limit: options.serial_limit.unwrap_or(scenario.serial_limit),
        echo_serial: false,
        kvm_device: options.kvm_device.clone(),
        tap: options.tap,
        audit: options.audit,
        report: None,
    }
}

/// A scenario run to its end: the VM as it ended, its report, and what did not match.
#[derive(Debug)]
pub struct ScenarioRun {
    pub vm: Vm,
    pub report: RunReport,
    /// From creating the VM to the run's end.
    pub elapsed: Duration,
    /// One line per expectation the run did not meet, with its scenario line.
    pub failures: Vec<String>,
}

/// Why a scenario could not be run.
#[derive(Debug)]
pub enum RunFailed<E> {
    /// The VM could not be made (a bad kernel, no KVM, …).
    Vm(VmError),
    /// What took the guest to its end failed (a gdb session that could not start).
    Drive(E),
}

/// The one scenario runner, behind `scenario NAME` and `scenario --all`: a VM from `config`
/// (made from the scenario by [`vm_config`], plus whatever the caller adds), taken to its
/// end by `drive` (`Vm::run`, or a gdb session first), then checked against the scenario.
pub fn run_scenario<E>(
    scenario: &Scenario,
    config: VmConfig,
    drive: impl FnOnce(&mut Vm) -> Result<RunReport, E>,
) -> Result<ScenarioRun, RunFailed<E>> {
    let started = Instant::now();
    let mut vm = Vm::new(config).map_err(RunFailed::Vm)?;
    let report = drive(&mut vm).map_err(RunFailed::Drive)?;
    let elapsed = started.elapsed();
    let failures = check(&vm, scenario, &report);
    Ok(ScenarioRun {
        vm,
        report,
        elapsed,
        failures,
    })
}

/// Run one scenario file to its end, quietly.
pub fn run_one(path: &Path, options: &SuiteOptions) -> Outcome {
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut outcome = Outcome {
        name,
        path: path.to_path_buf(),
        description: String::new(),
        verdict: Verdict::Pass,
        ending: String::new(),
        exceptions: 0,
        exception_summary: String::new(),
        elapsed: Duration::ZERO,
        budget: None,
    };
    let scenario = match Scenario::load(path) {
        Ok(s) => s,
        Err(e) => {
            outcome.verdict = Verdict::Error(e.to_string());
            return outcome;
        }
    };
    outcome.description = scenario.description.clone();
    outcome.budget = scenario.expect.budget.as_ref().map(|b| b.value);
    if let Some(reason) = scenario.unmet_need(&options.kvm_device) {
        outcome.verdict = Verdict::Skipped(reason);
        return outcome;
    }
    let mut config = vm_config(&scenario, options);
    let report = options
        .artifacts
        .as_ref()
        .map(|dir| dir.join(format!("{}.jsonl", scenario.name)));
    config.report.clone_from(&report);
    let run = match run_scenario(&scenario, config, |vm| {
        Ok::<_, std::convert::Infallible>(vm.run())
    }) {
        Ok(run) => run,
        Err(RunFailed::Vm(e)) => {
            outcome.verdict = Verdict::Error(e.to_string());
            return outcome;
        }
        Err(RunFailed::Drive(never)) => match never {},
    };
    outcome.elapsed = run.elapsed;
    outcome.ending = match &run.report.ending {
        crate::ending::Ending::GuestExit { code } => format!("exit {code}"),
        other => other.kind().replace('-', " "),
    };
    outcome.exceptions = run.vm.exceptions().total;
    outcome.exception_summary = run.vm.exceptions().summary();
    let mut run = run;
    let diagnosis = (!run.failures.is_empty())
        .then(|| diagnosis_of(&scenario.name, &run.vm, &run.report))
        .flatten();
    if let Some(d) = &diagnosis {
        run.vm.record_diagnosis(d);
    }
    let finished = run.vm.finish_report();
    if !run.failures.is_empty() {
        let mut failures = std::mem::take(&mut run.failures);
        failures.extend(diagnosis.map(quoted).unwrap_or_default());
        if let (Some(dir), Some(jsonl)) = (&options.artifacts, &report) {
            failures.push(keep_artifacts(&scenario, &run, dir, jsonl, finished));
        }
        outcome.verdict = Verdict::Fail(failures);
    } else if let Some(jsonl) = &report {
        let _ = std::fs::remove_file(jsonl);
    }
    outcome
}

/// `--artifacts`: the failing run's core and HTML page in `dir` (the JSON lines it wrote
/// stay beside them), said in one line.
fn keep_artifacts(
    scenario: &Scenario,
    run: &ScenarioRun,
    dir: &Path,
    jsonl: &Path,
    report: Result<(), crate::report::ReportError>,
) -> String {
    let core = dir.join(format!("{}.core", scenario.name));
    let html = dir.join(format!("{}.html", scenario.name));
    let core_written = run
        .vm
        .write_core(&core, "at the run's end (scenario --all --artifacts)")
        .map_err(|e| e.to_string());
    let page = report
        .map_err(|e| e.to_string())
        .and_then(|()| crate::html::convert(jsonl, &html).map_err(|e| e.to_string()));
    match (core_written, page) {
        (Ok(_), Ok(())) => format!("artifacts: {} and {}", core.display(), html.display()),
        (Err(why), _) => format!("artifacts: no core written: {why}"),
        (_, Err(why)) => format!("artifacts: {}; no page: {why}", core.display()),
    }
}

/// The diagnosis of a scenario's run, with the rerun command of `vmm-host scenario NAME`.
fn diagnosis_of(name: &str, vm: &Vm, report: &RunReport) -> Option<crate::diagnosis::Diagnosis> {
    let argv = ["vmm-host", "scenario", name].map(String::from);
    let location_at = |rip| vm.location_at(crate::addr::Gva::new(rip));
    let ended = (report.ending).diagnosed_as(report.state.as_ref(), &location_at);
    crate::diagnosis::diagnose(vm.exceptions(), ended, &argv)
}

/// A failing scenario quotes the run's diagnosis after its mismatches: the fault with its
/// cause, and the rerun stopped there under gdb.
fn quoted(d: crate::diagnosis::Diagnosis) -> Vec<String> {
    let cause = d.cause.map(|c| format!(": {c}")).unwrap_or_default();
    let mut lines = vec![format!("diagnosis: {}{cause}", d.fault)];
    lines.extend(
        d.next
            .first()
            .map(|next| format!("to stop there under gdb: {next}")),
    );
    lines
}

/// Run `paths` on `jobs` threads; `progress` sees each outcome as it comes, with its
/// position and the total. Outcomes come back in the order of `paths`.
pub fn run_all(
    paths: &[PathBuf],
    jobs: usize,
    options: &SuiteOptions,
    progress: &(dyn Fn(usize, usize, &Outcome) + Sync),
) -> Vec<Outcome> {
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Outcome>>> = Mutex::new(vec![None; paths.len()]);
    let workers = jobs.clamp(1, paths.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(path) = paths.get(i) else { break };
                    let outcome = run_one(path, options);
                    let position = done.fetch_add(1, Ordering::SeqCst) + 1;
                    progress(position, paths.len(), &outcome);
                    if let Ok(mut results) = results.lock() {
                        results[i] = Some(outcome);
                    }
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .into_iter()
        .flatten()
        .collect()
}

/// One progress line: `[3/12] PASS  journey  (exit 0, 1 exception, 0.4 s)`.
pub fn progress_line(position: usize, total: usize, outcome: &Outcome) -> String {
    let width = total.to_string().len();
    let detail = match &outcome.verdict {
        Verdict::Error(e) | Verdict::Skipped(e) => e.clone(),
        _ => format!(
            "{}, {} exception{}, {}",
            outcome.ending,
            outcome.exceptions,
            if outcome.exceptions == 1 { "" } else { "s" },
            seconds(outcome.elapsed)
        ),
    };
    format!(
        "[{position:>width$}/{total}] {:<5} {}  ({detail})",
        outcome.word(),
        outcome.name
    )
}

/// The summary table and, for each failure, what was expected against what happened.
pub fn table(outcomes: &[Outcome]) -> String {
    let name_width = outcomes
        .iter()
        .map(|o| o.name.len())
        .max()
        .unwrap_or(0)
        .max("scenario".len());
    let ending_width = outcomes
        .iter()
        .map(|o| o.ending.len())
        .max()
        .unwrap_or(0)
        .max("ending".len());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<name_width$}  {:<6} {:<ending_width$}  {:>10}  {:>8}  {:>7}  exceptions seen",
        "scenario", "result", "ending", "exceptions", "time", "budget"
    );
    for o in outcomes {
        let budget = o
            .budget
            .map_or_else(|| "-".to_string(), |b| format!("{:.0} s", b.as_secs_f64()));
        let seen = if o.exception_summary.is_empty() {
            "none"
        } else {
            &o.exception_summary
        };
        let _ = writeln!(
            out,
            "{:<name_width$}  {:<6} {:<ending_width$}  {:>10}  {:>8}  {:>7}  {seen}",
            o.name,
            o.word(),
            o.ending,
            o.exceptions,
            seconds(o.elapsed),
            budget,
        );
    }
    let passed = outcomes.iter().filter(|o| o.passed()).count();
    let skipped = outcomes
        .iter()
        .filter(|o| matches!(o.verdict, Verdict::Skipped(_)))
        .count();
    let total_time: Duration = outcomes.iter().map(|o| o.elapsed).sum();
    let skipped = if skipped == 0 {
        String::new()
    } else {
        format!(", {skipped} skipped")
    };
    let _ = writeln!(
        out,
        "{passed} of {} scenarios passed{skipped} ({} of guest time)",
        outcomes.len(),
        seconds(total_time)
    );
    for o in outcomes {
        match &o.verdict {
            Verdict::Pass => {}
            Verdict::Fail(failures) => {
                let _ = writeln!(out, "\nFAIL {}: {}", o.name, o.description);
                for f in failures {
                    let _ = writeln!(out, "  {f}");
                }
            }
            Verdict::Error(e) => {
                let _ = writeln!(out, "\nERROR {}: {e}", o.name);
            }
            Verdict::Skipped(why) => {
                let _ = writeln!(out, "\nSKIP {}: {why}", o.name);
            }
        }
    }
    out
}

/// JUnit XML, as CI systems read it: one testsuite, a testcase per scenario.
pub fn junit(outcomes: &[Outcome]) -> String {
    let failures = outcomes
        .iter()
        .filter(|o| matches!(o.verdict, Verdict::Fail(_)))
        .count();
    let errors = outcomes
        .iter()
        .filter(|o| matches!(o.verdict, Verdict::Error(_)))
        .count();
    let skipped = outcomes
        .iter()
        .filter(|o| matches!(o.verdict, Verdict::Skipped(_)))
        .count();
    let time: f64 = outcomes.iter().map(|o| o.elapsed.as_secs_f64()).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuite name=\"vmm-host scenarios\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{time:.3}\">",
        outcomes.len()
    );
    for o in outcomes {
        let _ = write!(
            out,
            "  <testcase classname=\"scenarios\" name=\"{}\" file=\"{}\" time=\"{:.3}\">",
            escape(&o.name),
            escape(&o.path.display().to_string()),
            o.elapsed.as_secs_f64()
        );
        let system_out = format!(
            "{}\nending: {}; exceptions: {} ({})",
            o.description, o.ending, o.exceptions, o.exception_summary
        );
        match &o.verdict {
            Verdict::Pass => {}
            Verdict::Fail(failures) => {
                let _ = write!(
                    out,
                    "\n    <failure message=\"{}\">{}</failure>",
                    escape(failures.first().map_or("", String::as_str)),
                    escape(&failures.join("\n"))
                );
            }
            Verdict::Error(e) => {
                let _ = write!(out, "\n    <error message=\"{}\"/>", escape(e));
            }
            Verdict::Skipped(why) => {
                let _ = write!(out, "\n    <skipped message=\"{}\"/>", escape(why));
            }
        }
        let _ = writeln!(
            out,
            "\n    <system-out>{}</system-out>\n  </testcase>",
            escape(&system_out)
        );
    }
    out.push_str("</testsuite>\n");
    out
}

/// The outcomes as one JSON document.
pub fn json(outcomes: &[Outcome]) -> String {
    let list: Vec<serde_json::Value> = outcomes
        .iter()
        .map(|o| {
            let (result, failures) = match &o.verdict {
                Verdict::Pass => ("pass", Vec::new()),
                Verdict::Fail(f) => ("fail", f.clone()),
                Verdict::Error(e) => ("error", vec![e.clone()]),
                Verdict::Skipped(why) => ("skipped", vec![why.clone()]),
            };
            serde_json::json!({
                "name": o.name,
                "path": o.path.display().to_string(),
                "description": o.description,
                "result": result,
                "failures": failures,
                "ending": o.ending,
                "exceptions": o.exceptions,
                "exception_summary": o.exception_summary,
                "seconds": o.elapsed.as_secs_f64(),
                "budget_seconds": o.budget.map(|b| b.as_secs_f64()),
            })
        })
        .collect();
    let passed = outcomes.iter().filter(|o| o.passed()).count();
    let doc = serde_json::json!({
        "scenarios": list,
        "passed": passed,
        "total": outcomes.len(),
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}

/// Write `text` to `path`.
pub fn write(path: &Path, text: &str) -> Result<(), SuiteError> {
    std::fs::write(path, text).map_err(|error| SuiteError::Write {
        path: path.to_path_buf(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(name: &str, verdict: Verdict) -> Outcome {
        Outcome {
            name: name.into(),
            path: PathBuf::from(format!("scenarios/{name}.toml")),
            description: format!("{name} <described>"),
            verdict,
            ending: "exit 0".into(),
            exceptions: 2,
            exception_summary: "#PF×2".into(),
            elapsed: Duration::from_millis(1500),
            budget: Some(Duration::from_secs(5)),
        }
    }

    #[test]
    fn junit_lists_every_scenario_and_escapes_failures() {
        let xml = junit(&[
            outcome("hello", Verdict::Pass),
            outcome(
                "wrong",
                Verdict::Fail(vec![
                    "scenarios/wrong.toml:9: expected \"exit\" & <more>".into(),
                ]),
            ),
            outcome("broken", Verdict::Error("bad file".into())),
        ]);
        assert!(
            xml.contains("tests=\"3\" failures=\"1\" errors=\"1\" skipped=\"0\""),
            "{xml}"
        );
        assert!(xml.contains("<testcase classname=\"scenarios\" name=\"hello\""));
        assert!(xml.contains(
            "<failure message=\"scenarios/wrong.toml:9: expected &quot;exit&quot; &amp; &lt;more&gt;\">"
        ));
        assert!(xml.contains("<error message=\"bad file\"/>"));
        assert!(xml.contains("&lt;described&gt;"));
        assert_eq!(xml.matches("<testcase ").count(), 3);
        assert_eq!(xml.matches("</testcase>").count(), 3);
    }

    #[test]
    fn the_table_aligns_columns_and_details_each_failure() {
        let text = table(&[
            outcome("hello", Verdict::Pass),
            outcome(
                "a-longer-name",
                Verdict::Fail(vec!["x.toml:3: lacks y".into()]),
            ),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        let column = lines[0].find("result").unwrap();
        assert_eq!(lines[1].find("PASS"), Some(column));
        assert_eq!(lines[2].find("FAIL"), Some(column));
        assert!(text.contains("1 of 2 scenarios passed"));
        assert!(
            text.contains("\nFAIL a-longer-name: a-longer-name <described>\n  x.toml:3: lacks y\n")
        );
    }

    #[test]
    fn a_skipped_scenario_is_listed_with_its_reason_and_fails_nothing() {
        let why = "this KVM cannot do what the scenario needs: 32-bit paging";
        let outcomes = [
            outcome("hello", Verdict::Pass),
            outcome("kernel32-pse", Verdict::Skipped(why.into())),
        ];
        assert!(!outcomes[1].failed() && !outcomes[1].passed());
        let text = table(&outcomes);
        assert!(
            text.contains("1 of 2 scenarios passed, 1 skipped"),
            "{text}"
        );
        assert!(
            text.contains(&format!("\nSKIP kernel32-pse: {why}\n")),
            "{text}"
        );
        let line = progress_line(2, 2, &outcomes[1]);
        assert_eq!(line, format!("[2/2] SKIP  kernel32-pse  ({why})"));
        let xml = junit(&outcomes);
        assert!(xml.contains("skipped=\"1\""), "{xml}");
        assert!(
            xml.contains(&format!("<skipped message=\"{why}\"/>")),
            "{xml}"
        );
        assert!(json(&outcomes).contains("\"result\": \"skipped\""));
    }

    #[test]
    fn filters_are_globs_and_a_filter_matching_nothing_names_the_scenarios() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["boxkernel-heap", "boxkernel-nx-heap", "hello"] {
            std::fs::write(dir.path().join(format!("{name}.toml")), "").unwrap();
        }
        let chosen = select(dir.path(), Some("boxkernel-*")).unwrap();
        assert_eq!(chosen.len(), 2);
        let err = select(dir.path(), Some("nothing*"))
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with(
                "matches --filter `nothing*`; available: boxkernel-heap, boxkernel-nx-heap, hello"
            ),
            "{err}"
        );
        let err = select(dir.path(), Some("[")).unwrap_err().to_string();
        assert!(
            err.starts_with("--filter `[` is not a glob pattern"),
            "{err}"
        );
    }

    #[test]
    fn json_carries_results_and_failures() {
        let text = json(&[outcome("hello", Verdict::Fail(vec!["f".into()]))]);
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["total"], 1);
        assert_eq!(doc["scenarios"][0]["result"], "fail");
        assert_eq!(doc["scenarios"][0]["failures"][0], "f");
        assert_eq!(doc["scenarios"][0]["budget_seconds"], 5.0);
    }
}
