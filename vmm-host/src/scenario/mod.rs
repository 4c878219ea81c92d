//! Scenarios: a TOML file per reproduction, saying how to boot the guest and what must happen.
//!
//! ```toml
//! name = "hello"
//! description = "boots, prints the memory map, exits 0"
//! mem = "128M"
//! cmdline = "test=hello"
//! timeout = 10
//!
//! [expect]
//! ending = "exit"
//! exit_code = 0
//! serial = ["memory map", "hello from guest-kernel"]
//! ```
//!
//! Expectations on exceptions, findings, diffs and time are in [`expect`]; the format is
//! documented in docs/scenarios.md.

pub mod chain;
pub mod expect;
mod parse;

use crate::ending::{Ending, RunReport};
use crate::layout;
use crate::screen::Screen;
use expect::{DiffExpect, ExceptionExpect};
pub use expect::{ExpectError, Located, TapFacts};
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Watchdog limit when a scenario does not set one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("unknown scenario `{name}`; available: {available}")]
    Unknown { name: String, available: String },
    #[error("cannot read scenario `{path}`: {error}", path = .0.display(), error = .1)]
    Read(PathBuf, std::io::Error),
    #[error("cannot list scenarios in `{path}`: {error}", path = .0.display(), error = .1)]
    List(PathBuf, std::io::Error),
    /// `file:line:col: message`, pointing at the offending text.
    #[error("{0}")]
    Invalid(String),
}

/// How a run may end, as scenarios name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndingKind {
    Exit,
    TripleFault,
    EntryFailure,
    InternalError,
    Halted,
    Idle,
    Timeout,
    Reset,
    KeyWait,
    RealModeException,
}

impl EndingKind {
    fn name(self) -> &'static str {
        match self {
            Self::Exit => "exit",
            Self::TripleFault => "triple-fault",
            Self::EntryFailure => "entry-failure",
            Self::InternalError => "internal-error",
            Self::Halted => "halted",
            Self::Idle => "idle",
            Self::Timeout => "timeout",
            Self::Reset => "reset",
            Self::KeyWait => "key-wait",
            Self::RealModeException => "real-mode-exception",
        }
    }
}

/// A parsed, checked scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub path: PathBuf,
    pub name: String,
    pub description: String,
    pub mem: u64,
    pub cmdline: String,
    pub timeout: Duration,
    /// Serial output the host keeps (see `--serial-limit`).
    pub serial_limit: u64,
    /// A kernel other than the bundled guest-kernel, relative to the scenario file.
    pub kernel: Option<PathBuf>,
    /// The ELF with the kernel's symbols (a bzImage's vmlinux), relative to the scenario file.
    pub symbols: Option<PathBuf>,
    /// The boot protocol, when the kernel file's contents should not decide.
    pub boot: Option<crate::loader::BootProtocol>,
    /// Unix seconds the CMOS clock starts at (`clock = "2026-12-02T01:30:00"`).
    pub clock: Option<u64>,
    /// CPUID features hidden from the guest (`cpuid = "-cx16,-xsave"`).
    pub cpuid: crate::cpuid::Hidden,
    /// What the host's KVM must do for the scenario to run at all; where it cannot, the
    /// scenario is skipped with the reason.
    pub needs: Vec<Need>,
    pub expect: Expect,
}

/// A capability a scenario needs from the host's KVM, measured by `doctor`'s probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A 32-bit kernel can turn on 2-level and PAE paging.
    Paging32,
    /// Exceptions can be delivered through 32-bit task gates.
    TaskGates,
}

impl Need {
    pub const ALL: [Need; 2] = [Need::Paging32, Need::TaskGates];

    /// The name a scenario file gives it: doctor's probe name.
    pub const fn name(self) -> &'static str {
        match self {
            Need::Paging32 => "32-bit paging",
            Need::TaskGates => "task gates",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|need| need.name() == name)
    }

    /// Whether the KVM at `device` can do it (probed once per process).
    pub fn met(self, device: &std::path::Path) -> bool {
        match self {
            Need::Paging32 => crate::doctor::runs_32_bit_paging(device),
            Need::TaskGates => crate::doctor::runs_task_gates(device),
        }
    }
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Scenario {
    /// Why this scenario cannot run on the KVM at `device`, if it cannot.
    pub fn unmet_need(&self, device: &std::path::Path) -> Option<String> {
        let need = self.needs.iter().find(|need| !need.met(device))?;
        Some(format!(
            "this KVM cannot do what the scenario needs: {need} (`vmm-host doctor` shows the probe)"
        ))
    }
}

#[derive(Debug, Clone)]
pub struct Expect {
    pub ending: Located<EndingKind>,
    pub exit_code: Option<Located<u8>>,
    /// Substrings that must appear in the serial output, in this order.
    pub serial: Vec<Located<String>>,
    /// Substrings that must appear on the VGA text screen at the end (rows joined by
    /// newlines), in this order.
    pub screen: Vec<Located<String>>,
    /// Whether the guest's serial output must (true) or must not (false) pass the limit.
    pub serial_capped: Option<Located<bool>>,
    /// Exceptions that must be taken in this order (others may come between).
    pub exceptions: Vec<Located<ExceptionExpect>>,
    /// The exact number of exceptions taken.
    pub exception_count: Option<Located<u64>>,
    /// Phrases that must appear among the final audit's findings.
    pub findings: Vec<Located<String>>,
    /// Phrases that must not.
    pub no_findings: Vec<Located<String>>,
    /// Page-table entries that must change while an exception is handled.
    pub diffs: Vec<Located<DiffExpect>>,
    /// A triple fault's exceptions, step by step, as the host replays them.
    pub chain: Vec<Located<chain::ChainExpect>>,
    /// Wall time the run should take; reported, and failed only when exceeded tenfold.
    pub budget: Option<Located<Duration>>,
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ScenarioError::Read(path.into(), e))?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ScenarioError> {
        parse::scenario(path, text)
    }

    /// What differs between this scenario's expectations and a finished run, one line each,
    /// naming the scenario line of the expectation.
    pub fn check(
        &self,
        report: &RunReport,
        serial: &str,
        tap: Option<&TapFacts<'_>>,
    ) -> Vec<String> {
        let mut located: Vec<(usize, String)> = Vec::new();
        located.extend(self.check_ending(&report.ending));
        located.extend(in_order(&self.expect.serial, serial, "serial output"));
        located.extend(self.check_serial_capped(report));
        let screen = report.screen.as_ref().map(Screen::text).unwrap_or_default();
        let what = if screen.is_empty() {
            "the screen (blank at the end)"
        } else {
            "the screen"
        };
        located.extend(in_order(&self.expect.screen, &screen, what));
        located.extend(self.check_tap(tap));
        located.extend(expect::check_budget(
            self.expect.budget.as_ref(),
            report.elapsed,
        ));
        // Stable: several failures on one line keep the order they were found in.
        located.sort_by_key(|(line, _)| *line);
        located
            .into_iter()
            .map(|(line, message)| format!("{}:{line}: {message}", self.path.display()))
            .collect()
    }

    fn check_ending(&self, actual: &Ending) -> Option<(usize, String)> {
        let expected = self.expect.ending.value;
        if expected.name() != actual.kind() {
            return Some((
                self.expect.ending.line,
                format!(
                    "expected ending \"{}\", but {}",
                    expected.name(),
                    actual.headline()
                ),
            ));
        }
        match (&self.expect.exit_code, actual) {
            (Some(code), Ending::GuestExit { code: got }) if code.value != *got => Some((
                code.line,
                format!(
                    "expected exit code {}, the guest exited with {got}",
                    code.value
                ),
            )),
            _ => None,
        }
    }

    fn check_serial_capped(&self, report: &RunReport) -> Option<(usize, String)> {
        let capped = self.expect.serial_capped.as_ref()?;
        if capped.value == (report.serial_dropped > 0) {
            return None;
        }
        let limit = layout::human(report.serial_limit);
        let what = if capped.value {
            format!("expected the serial output to pass the {limit} limit, but it stayed within it")
        } else {
            format!(
                "expected the serial output to stay within the {limit} limit, but {} bytes past it were dropped",
                report.serial_dropped
            )
        };
        Some((capped.line, what))
    }

    /// Exceptions, findings and diffs, which only the tap can see.
    fn check_tap(&self, tap: Option<&TapFacts<'_>>) -> Vec<(usize, String)> {
        let expect = &self.expect;
        let Some(facts) = tap else {
            let expects_tap = !expect.exceptions.is_empty()
                || expect.exception_count.is_some()
                || !expect.findings.is_empty()
                || !expect.no_findings.is_empty()
                || !expect.diffs.is_empty()
                || !expect.chain.is_empty();
            let needs = "expectations on exceptions, findings, diffs or chains need the tap: run without --no-tap";
            return expects_tap
                .then(|| (expect.ending.line, needs.to_string()))
                .into_iter()
                .collect();
        };
        let mut located =
            expect::check_exceptions(&expect.exceptions, expect.exception_count.as_ref(), facts);
        located.extend(expect::check_findings(
            &expect.findings,
            &expect.no_findings,
            facts,
        ));
        located.extend(expect::check_diffs(&expect.diffs, facts));
        located.extend(chain::check_chain(&expect.chain, facts));
        located
    }
}

/// The scenario for `NAME` (in `dir`) or `PATH` (anything with a slash or a .toml ending).
pub fn resolve(name_or_path: &str, dir: &Path) -> Result<PathBuf, ScenarioError> {
    if name_or_path.contains('/') || name_or_path.ends_with(".toml") {
        return Ok(PathBuf::from(name_or_path));
    }
    let path = dir.join(format!("{name_or_path}.toml"));
    if path.is_file() {
        return Ok(path);
    }
    let available = list(dir)?.join(", ");
    let available = if available.is_empty() {
        format!("none in {}", dir.display())
    } else {
        available
    };
    Err(ScenarioError::Unknown {
        name: name_or_path.to_string(),
        available,
    })
}

/// Names of the scenarios in `dir`, sorted.
pub fn list(dir: &Path) -> Result<Vec<String>, ScenarioError> {
    let entries = std::fs::read_dir(dir).map_err(|e| ScenarioError::List(dir.into(), e))?;
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    Ok(names)
}

/// Each expected phrase in `text`, in order, after the previous one; `what` names the text.
fn in_order(wanted: &[Located<String>], text: &str, what: &str) -> Vec<(usize, String)> {
    let mut missing = Vec::new();
    let mut from = 0;
    let mut previous: Option<&str> = None;
    for wanted in wanted {
        if let Some(pos) = text[from..].find(&wanted.value) {
            from += pos + wanted.value.len();
            previous = Some(&wanted.value);
            continue;
        }
        let whereabouts = match previous {
            Some(p) if text.contains(&wanted.value) => {
                format!(" after {p:?} (it appears only before it)")
            }
            Some(p) => format!(" (looked after {p:?})"),
            None => String::new(),
        };
        missing.push((
            wanted.line,
            format!("{what} lacks {:?}{whereabouts}", wanted.value),
        ));
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ending::RunReport;

    const HELLO: &str = r#"name = "hello"
description = "boots and exits"
mem = "64M"
cmdline = "test=hello"
timeout = 5

[expect]
ending = "exit"
exit_code = 0
serial = ["memory map", "hello from guest-kernel"]
"#;

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(Path::new("scenarios/hello.toml"), text)
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    /// Each text must fail to parse with one line starting with its message.
    fn assert_errors(cases: &[(String, &str)]) {
        for (text, expected) in cases {
            let message = error(text);
            assert!(
                message.starts_with(expected),
                "{message:?} should start with {expected:?}"
            );
            assert!(!message.contains('\n'), "one line: {message:?}");
        }
    }

    #[test]
    fn screen_expectations_are_searched_in_order_on_the_final_screen() {
        let text = HELLO.replace(
            "serial = [",
            "screen = [\"READY\", \"C:\\\\>\"]\nserial = [",
        );
        let scenario = parse(&text).unwrap();
        let serial = "memory map\nhello from guest-kernel";
        let ok = Ending::GuestExit { code: 0 };
        let mut buffer = vec![0u8; 4000];
        for (at, byte) in b"READY".iter().enumerate() {
            buffer[at * 2] = *byte;
        }
        for (at, byte) in br"C:\>".iter().enumerate() {
            buffer[160 + at * 2] = *byte;
        }
        let mode = crate::screen::TextMode {
            start: 0,
            cursor: None,
        };
        let mut shown = report(ok.clone());
        shown.screen = Some(Screen::from_buffer(&buffer, mode));
        assert_eq!(scenario.check(&shown, serial, None), Vec::<String>::new());

        let blank = scenario.check(&report(ok), serial, None);
        assert_eq!(
            blank,
            [
                "scenarios/hello.toml:10: the screen (blank at the end) lacks \"READY\"",
                "scenarios/hello.toml:10: the screen (blank at the end) lacks \"C:\\\\>\""
            ]
        );
        buffer.copy_within(0..10, 320); // READY again, below the prompt: order still holds
        buffer[..10].fill(0);
        shown.screen = Some(Screen::from_buffer(&buffer, mode));
        let order = scenario.check(&shown, serial, None);
        assert_eq!(
            order,
            [
                "scenarios/hello.toml:10: the screen lacks \"C:\\\\>\" after \"READY\" (it appears only before it)"
            ]
        );
    }

    fn report(ending: Ending) -> RunReport {
        RunReport {
            ending,
            state: None,
            elapsed: Duration::ZERO,
            vm_exits: 0,
            stray_accesses: 0,
            first_stray: None,
            post_codes: Vec::new(),
            screen: None,
            interrupts: Vec::new(),
            pic_shared_base: None,
            bios: None,
            carried_out: vec![],
            diagnosis: None,
            serial_dropped: 0,
            serial_limit: crate::console::DEFAULT_LIMIT,
        }
    }

    #[test]
    fn parses_a_scenario() {
        let s = parse(HELLO).unwrap();
        assert_eq!(
            (s.name.as_str(), s.mem, s.cmdline.as_str()),
            ("hello", 64 << 20, "test=hello")
        );
        assert_eq!(s.timeout, Duration::from_secs(5));
        assert_eq!(
            s.expect.ending,
            Located {
                value: EndingKind::Exit,
                line: 8
            }
        );
        assert_eq!(
            s.expect.serial[1],
            Located {
                value: "hello from guest-kernel".into(),
                line: 10
            }
        );
    }

    /// Another kernel and its symbols are found beside the scenario file; without them the
    /// bundled kernel is booted in the form `boot` asks for, with the ELF's symbols.
    #[test]
    fn kernel_and_symbols_are_relative_to_the_scenario_and_default_to_the_bundled_elf() {
        let options = crate::suite::SuiteOptions {
            kvm_device: "/dev/kvm".into(),
            timeout: None,
            serial_limit: None,
            tap: true,
            audit: crate::vm::AuditMode::Faults,
            artifacts: None,
        };
        let own = format!("kernel = \"../bz\"\nsymbols = \"../vmlinux\"\n{HELLO}");
        let config = crate::suite::vm_config(&parse(&own).unwrap(), &options);
        assert_eq!(config.kernel, Path::new("scenarios/../bz"));
        assert_eq!(
            config.symbols.as_deref(),
            Some(Path::new("scenarios/../vmlinux"))
        );
        let linux = format!("boot = \"linux\"\n{HELLO}");
        let config = crate::suite::vm_config(&parse(&linux).unwrap(), &options);
        assert_eq!(config.kernel, Path::new(crate::GUEST_KERNEL_BZIMAGE));
        assert_eq!(
            config.symbols.as_deref(),
            Some(Path::new(crate::GUEST_KERNEL_ELF))
        );
        let disk = format!("boot = \"disk\"\n{HELLO}");
        let config = crate::suite::vm_config(&parse(&disk).unwrap(), &options);
        assert_eq!(config.kernel, Path::new(crate::GUEST_KERNEL_DISK));
        // Another bundled kernel carries its own symbols.
        let k32 = format!("bundled = \"kernel32\"\n{HELLO}");
        let config = crate::suite::vm_config(&parse(&k32).unwrap(), &options);
        assert_eq!(config.kernel, Path::new(crate::GUEST_KERNEL32));
        assert_eq!(config.symbols, None);
    }

    #[test]
    fn bundled_names_a_kernel_the_build_has_and_excludes_kernel() {
        let unknown = format!("bundled = \"kernel64\"\n{HELLO}");
        assert_eq!(
            parse(&unknown).unwrap_err().to_string(),
            "scenarios/hello.toml:1:11: bundled = \"kernel64\": the build bundles \"kernel32\" and \"guest-kernel\" (its ELF, whatever boot says)"
        );
        let both = format!("bundled = \"kernel32\"\nkernel = \"k\"\n{HELLO}");
        assert_eq!(
            parse(&both).unwrap_err().to_string(),
            "scenarios/hello.toml:1:11: bundled and kernel both name the kernel: keep one"
        );
    }

    #[test]
    fn chain_steps_name_a_vector_and_an_optional_phrase() {
        let chain = format!(
            "{HELLO}\n[[expect.chain]]\nvector = \"pf\"\nwhy = \"no IST\"\n\n[[expect.chain]]\nvector = 8\n"
        );
        let steps: Vec<_> = parse(&chain)
            .unwrap()
            .expect
            .chain
            .into_iter()
            .map(|c| c.value)
            .collect();
        assert_eq!(
            steps,
            [
                chain::ChainExpect {
                    vector: 14,
                    why: Some("no IST".into())
                },
                chain::ChainExpect {
                    vector: 8,
                    why: None
                }
            ]
        );
        let unknown = format!("{HELLO}\n[[expect.chain]]\nvector = \"xx\"\n");
        let err = parse(&unknown).unwrap_err().to_string();
        assert!(
            err.ends_with("unknown vector `xx`: use a number 0-31 or a mnemonic like gp, pf, df"),
            "{err}"
        );
        let empty = format!("{HELLO}\n[[expect.chain]]\nvector = \"pf\"\nwhy = \" \"\n");
        let err = parse(&empty).unwrap_err().to_string();
        assert!(
            err.ends_with("an empty reason matches anything: remove it"),
            "{err}"
        );
    }

    #[test]
    fn needs_are_capabilities_doctor_measures() {
        let needs = format!("needs = [\"32-bit paging\"]\n{HELLO}");
        assert_eq!(parse(&needs).unwrap().needs, [Need::Paging32]);
        let both = format!("needs = [\"task gates\", \"32-bit paging\"]\n{HELLO}");
        assert_eq!(
            parse(&both).unwrap().needs,
            [Need::TaskGates, Need::Paging32]
        );
        assert_eq!(parse(HELLO).unwrap().needs, []);
        let unknown = format!("needs = [\"64-bit paging\"]\n{HELLO}");
        assert_eq!(
            parse(&unknown).unwrap_err().to_string(),
            "scenarios/hello.toml:1:10: needs: \"64-bit paging\" is not a capability vmm-host can check; it knows \"32-bit paging\", \"task gates\""
        );
        // A scenario with no needs runs anywhere, without probing.
        let device = Path::new("/nonexistent/kvm");
        assert_eq!(parse(HELLO).unwrap().unmet_need(device), None);
        // Where KVM cannot even be opened, 32-bit paging is not there either.
        assert_eq!(
            parse(&needs).unwrap().unmet_need(device).as_deref(),
            Some(
                "this KVM cannot do what the scenario needs: 32-bit paging (`vmm-host doctor` shows the probe)"
            )
        );
    }

    #[test]
    fn every_error_points_at_its_line() {
        let cases = [
            (
                HELLO.replace("timeout = 5", "timeuot = 5"),
                "scenarios/hello.toml:5:1: unknown field `timeuot`",
            ),
            (
                HELLO.replace("mem = \"64M\"", "mem = \"lots\""),
                "scenarios/hello.toml:3:7: memory size `lots` is not a size",
            ),
            (
                HELLO.replace("mem = \"64M\"", "mem = \"1M\""),
                "scenarios/hello.toml:3:7: memory size 1 MiB is too small",
            ),
            (
                HELLO.replace("ending = \"exit\"", "ending = \"exploded\""),
                "scenarios/hello.toml:8:10: unknown variant `exploded`",
            ),
            (
                HELLO.replace("exit_code = 0\n", ""),
                "scenarios/hello.toml:8:10: ending = \"exit\" needs exit_code",
            ),
            (
                HELLO.replace("ending = \"exit\"", "ending = \"timeout\""),
                "scenarios/hello.toml:9:13: exit_code only applies to ending = \"exit\"",
            ),
            (
                HELLO.replace("exit_code = 0", "exit_code = 300"),
                "scenarios/hello.toml:9:13: ",
            ),
            (
                HELLO.replace("timeout = 5", "timeout = -1.0"),
                "scenarios/hello.toml:5:11: timeout must be a number of seconds",
            ),
            (
                HELLO.replace("name = \"hello\"", "name = \"other\""),
                "scenarios/hello.toml:1:8: name `other` differs from the file name `hello.toml`",
            ),
            (
                HELLO.replace("description = \"boots and exits\"\n", ""),
                "scenarios/hello.toml:1:1: missing field `description`",
            ),
            (
                HELLO.replace("\"memory map\", ", "\"\", "),
                "scenarios/hello.toml:10:11: an empty serial expectation",
            ),
            ("name = [".to_string(), "scenarios/hello.toml:1:"),
        ];
        assert_errors(&cases);
    }

    const RICH: &str = r#"name = "hello"
description = "boots and exits"

[expect]
ending = "exit"
exit_code = 4
budget = 2
exception_count = 1
findings = ["W+X"]
no_findings = ["table outside RAM"]

[[expect.exception]]
vector = "pf"
error = ["write", "!present"]
cr2 = "0x1000..0x2000"
rip = "vmm_map_page"
explanation = "dereferenced as virtual"

[[expect.diff]]
entry = "PTE[200]"
old = 0
flags = "P RW US A D"
"#;

    #[test]
    fn parses_exception_finding_diff_and_budget_expectations() {
        use expect::{AddressPattern, ErrorCode};
        let s = parse(RICH).unwrap();
        let e = &s.expect.exceptions[0];
        assert_eq!(e.line, 12);
        assert_eq!(e.value.vector, 14);
        assert!(matches!(
            e.value.error,
            Some(ErrorCode::Bits {
                set: 2,
                clear: 1,
                ..
            })
        ));
        assert_eq!(e.value.cr2, Some(AddressPattern::Within(0x1000..0x2000)));
        assert_eq!(
            e.value.rip,
            Some(AddressPattern::InFunction("vmm_map_page".into()))
        );
        assert_eq!(s.expect.diffs[0].value.index, 200);
        assert_eq!(s.expect.diffs[0].line, 19);
        assert_eq!(
            s.expect.budget.as_ref().unwrap().value,
            Duration::from_secs(2)
        );
        assert_eq!(s.expect.exception_count.as_ref().unwrap().value, 1);
        assert_eq!(s.expect.findings[0].value, "W+X");
    }

    #[test]
    fn every_expectation_error_points_at_its_line() {
        let cases = [
            (
                RICH.replace("vector = \"pf\"", "vector = \"zz\""),
                "scenarios/hello.toml:13:10: unknown vector `zz`: use a number 0-31 or a mnemonic",
            ),
            (
                RICH.replace("vector = \"pf\"", "vector = 40"),
                "scenarios/hello.toml:13:10: vector 40 is not an exception (0-31)",
            ),
            (
                RICH.replace("\"!present\"", "\"sideways\""),
                "scenarios/hello.toml:14:9: `sideways` is not an error-code bit of #PF: use present, write, user",
            ),
            (
                RICH.replace("\"!present\"", "\"!write\""),
                "scenarios/hello.toml:14:9: a bit cannot be both set and clear",
            ),
            (
                RICH.replace("[\"write\", \"!present\"]", "[]"),
                "scenarios/hello.toml:14:9: an empty list of error bits matches anything",
            ),
            (
                RICH.replace("0x1000..0x2000", "0x2000..0x1000"),
                "scenarios/hello.toml:15:7: the range `0x2000..0x1000` is empty",
            ),
            (
                RICH.replace("0x1000..0x2000", "0x1000..lots"),
                "scenarios/hello.toml:15:7: `0x1000..lots` is not a range START..END of numbers",
            ),
            (
                RICH.replace("\"vmm_map_page\"", "\"9 lives\""),
                "scenarios/hello.toml:16:7: `9 lives` is not an address, a range START..END or a function name",
            ),
            (
                RICH.replace("\"dereferenced as virtual\"", "\" \""),
                "scenarios/hello.toml:17:15: an empty explanation matches anything",
            ),
            (
                RICH.replace("cr2 = ", "cr3 = "),
                "scenarios/hello.toml:15:1: unknown field `cr3`",
            ),
            (
                RICH.replace("PTE[200]", "PXE[200]"),
                "scenarios/hello.toml:20:9: `PXE` is not a level: use PGD, PUD, PMD, PTE",
            ),
            (
                RICH.replace("PTE[200]", "PTE[512]"),
                "scenarios/hello.toml:20:9: `512` is not a table index (0-511)",
            ),
            (
                RICH.replace("PTE[200]", "PTE 200"),
                "scenarios/hello.toml:20:9: `PTE 200` is not an entry like PTE[200]",
            ),
            (
                RICH.replace("budget = 2", "budget = 0"),
                "scenarios/hello.toml:7:10: budget must be a number of seconds above 0",
            ),
            (
                RICH.replace("[\"W+X\"]", "[\"\"]"),
                "scenarios/hello.toml:9:13: an empty finding matches anything",
            ),
            (
                RICH.replace("exception_count = 1", "exception_count = -1"),
                "scenarios/hello.toml:8:19: ",
            ),
        ];
        assert_errors(&cases);
    }

    #[test]
    fn check_passes_a_matching_run() {
        let s = parse(HELLO).unwrap();
        let failures = s.check(
            &report(Ending::GuestExit { code: 0 }),
            "memory map:\nhello from guest-kernel\n",
            None,
        );
        assert!(failures.is_empty(), "{failures:?}");
    }

    #[test]
    fn check_names_each_mismatch_with_its_line() {
        let s = parse(HELLO).unwrap();
        let failures = s.check(
            &report(Ending::GuestExit { code: 3 }),
            "hello from guest-kernel\nmemory map\n",
            None,
        );
        assert_eq!(
            failures,
            vec![
                "scenarios/hello.toml:9: expected exit code 0, the guest exited with 3".to_string(),
                "scenarios/hello.toml:10: serial output lacks \"hello from guest-kernel\" after \"memory map\" (it appears only before it)".to_string(),
            ]
        );
        let failures = s.check(&report(Ending::TripleFault), "", None);
        assert_eq!(
            failures[0],
            "scenarios/hello.toml:8: expected ending \"exit\", but triple fault: the CPU shut down (KVM_EXIT_SHUTDOWN)"
        );
    }

    #[test]
    fn control_characters_in_quoted_values_stay_on_one_line() {
        // Found by the longer property-test run in CI: a name holding an escaped newline.
        let text = HELLO.replace("name = \"hello\"", "name = \"\\ney\"");
        assert_eq!(
            error(&text),
            "scenarios/hello.toml:1:8: name `\\ney` differs from the file name `hello.toml`"
        );
    }

    #[test]
    fn serial_limit_and_serial_capped_are_parsed_and_checked() {
        let text = HELLO
            .replace("timeout = 5", "timeout = 5\nserial_limit = \"16K\"")
            .replace("exit_code = 0", "exit_code = 0\nserial_capped = true");
        let s = parse(&text).unwrap();
        assert_eq!(s.serial_limit, 16 << 10);
        assert_eq!(parse(HELLO).unwrap().serial_limit, 16 << 20);
        let serial = "memory map\nhello from guest-kernel\n";
        let mut run = report(Ending::GuestExit { code: 0 });
        run.serial_limit = 16 << 10;
        assert_eq!(
            s.check(&run, serial, None),
            [
                "scenarios/hello.toml:11: expected the serial output to pass the 16 KiB limit, but it stayed within it"
            ]
        );
        run.serial_dropped = 70;
        assert!(s.check(&run, serial, None).is_empty());
        let within = parse(&text.replace("serial_capped = true", "serial_capped = false")).unwrap();
        assert_eq!(
            within.check(&run, serial, None),
            [
                "scenarios/hello.toml:11: expected the serial output to stay within the 16 KiB limit, but 70 bytes past it were dropped"
            ]
        );
        assert_errors(&[
            (
                text.replace("\"16K\"", "\"lots\""),
                "scenarios/hello.toml:6:16: serial_limit: ",
            ),
            (
                text.replace("serial_capped = true", "serial_capped = \"yes\""),
                "scenarios/hello.toml:11:17: ",
            ),
        ]);
    }

    #[test]
    fn the_clock_and_boot_keys_are_read_and_a_bad_clock_is_located() {
        let text = HELLO.replace(
            "timeout = 5",
            "timeout = 5\nclock = \"@86400\"\nboot = \"multiboot\"\ncpuid = \"-cx16\"",
        );
        let s = parse(&text).unwrap();
        assert_eq!(s.clock, Some(86_400));
        assert_eq!(s.cpuid, "-cx16".parse().unwrap());
        assert_eq!(s.boot, Some(crate::loader::BootProtocol::Multiboot));
        assert_eq!(parse(HELLO).unwrap().clock, None);
        assert_errors(&[
            (
                text.replace("@86400", "noon"),
                "scenarios/hello.toml:6:9: clock: `noon` is not a time",
            ),
            (
                text.replace("\"multiboot\"", "\"grub\""),
                "scenarios/hello.toml:7:8: ",
            ),
            (
                text.replace("-cx16", "cx16"),
                "scenarios/hello.toml:8:9: cpuid: `cx16`: write -cx16 to hide it",
            ),
        ]);
    }

    #[test]
    fn resolves_names_and_lists_the_available_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hello.toml"), HELLO).unwrap();
        std::fs::write(dir.path().join("heap.toml"), "").unwrap();
        assert_eq!(
            resolve("hello", dir.path()).unwrap(),
            dir.path().join("hello.toml")
        );
        assert_eq!(
            resolve("x/y.toml", dir.path()).unwrap(),
            PathBuf::from("x/y.toml")
        );
        let err = resolve("helo", dir.path()).unwrap_err().to_string();
        assert_eq!(err, "unknown scenario `helo`; available: heap, hello");
    }
}
