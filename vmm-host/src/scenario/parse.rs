//! Reading a scenario file: TOML into raw structures with spans, then each field checked and
//! turned into what [`Scenario`] holds. Every error names `file:line:col`.

use super::expect::{self, Located, RawDiff, RawException};
use super::{DEFAULT_TIMEOUT, EndingKind, Expect, Need, Scenario, ScenarioError};
use crate::layout;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// The longest timeout or budget a scenario may set: a day.
const MAX_SECONDS: f64 = 86_400.0;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Spanned<String>,
    description: String,
    mem: Option<Spanned<String>>,
    #[serde(default)]
    cmdline: String,
    timeout: Option<Spanned<f64>>,
    serial_limit: Option<Spanned<String>>,
    kernel: Option<PathBuf>,
    /// A kernel the build bundles, by name (`kernel32`, `guest-kernel`), instead of a file.
    bundled: Option<Spanned<String>>,
    symbols: Option<PathBuf>,
    boot: Option<crate::loader::BootProtocol>,
    clock: Option<Spanned<String>>,
    cpuid: Option<Spanned<String>>,
    /// What the host's KVM must be able to do (`needs = ["32-bit paging"]`).
    #[serde(default)]
    needs: Vec<Spanned<String>>,
    expect: RawExpect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    ending: Spanned<EndingKind>,
    exit_code: Option<Spanned<u8>>,
    #[serde(default)]
    serial: Vec<Spanned<String>>,
    serial_capped: Option<Spanned<bool>>,
    #[serde(default)]
    screen: Vec<Spanned<String>>,
    #[serde(default)]
    exception: Vec<Spanned<RawException>>,
    exception_count: Option<Spanned<u64>>,
    #[serde(default)]
    findings: Vec<Spanned<String>>,
    #[serde(default)]
    no_findings: Vec<Spanned<String>>,
    #[serde(default)]
    diff: Vec<Spanned<RawDiff>>,
    #[serde(default)]
    chain: Vec<Spanned<super::chain::RawChainStep>>,
    budget: Option<Spanned<f64>>,
}

/// The file of a kernel the build bundles, by the name a scenario's `bundled` gives it.
fn bundled_kernel(name: &str) -> Option<&'static str> {
    match name {
        "kernel32" => Some(crate::GUEST_KERNEL32),
        // The ELF itself, also where `boot` would pick the bzImage or the disk image.
        "guest-kernel" => Some(crate::GUEST_KERNEL_ELF),
        _ => None,
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, col)
}

/// The file being read, for errors and line numbers.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    /// An error at byte `offset`.
    fn at(&self, offset: usize, message: &str) -> ScenarioError {
        let (line, col) = line_col(self.text, offset);
        // Messages quote the file's strings, which may hold escaped newlines.
        let message: String = message
            .chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect();
        ScenarioError::Invalid(format!("{}:{line}:{col}: {message}", self.path.display()))
    }

    /// The line a value starts on.
    fn line<T>(&self, value: &Spanned<T>) -> usize {
        line_col(self.text, value.span().start).0
    }

    fn located<T>(&self, value: Spanned<T>) -> Located<T> {
        Located {
            line: self.line(&value),
            value: value.into_inner(),
        }
    }

    /// A number of seconds above 0 and at most a day.
    fn seconds(&self, value: &Spanned<f64>, what: &str) -> Result<Duration, ScenarioError> {
        let seconds = *value.get_ref();
        if seconds.is_finite() && seconds > 0.0 && seconds <= MAX_SECONDS {
            Ok(Duration::from_secs_f64(seconds))
        } else {
            Err(self.at(
                value.span().start,
                &format!("{what} must be a number of seconds above 0 and at most 86400"),
            ))
        }
    }
}

pub(super) fn scenario(path: &Path, text: &str) -> Result<Scenario, ScenarioError> {
    let source = Source { path, text };
    let raw: RawScenario = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        source.at(offset, e.message().trim())
    })?;
    check_name(&source, &raw.name)?;
    let mem = match &raw.mem {
        None => layout::DEFAULT_RAM,
        Some(mem) => layout::parse_size(mem.get_ref())
            .and_then(|size| layout::RamLayout::new(size, None).map(|l| l.size()))
            .map_err(|e| source.at(mem.span().start, &e.to_string()))?,
    };
    let timeout = match &raw.timeout {
        None => DEFAULT_TIMEOUT,
        Some(t) => source.seconds(t, "timeout")?,
    };
    let serial_limit = match &raw.serial_limit {
        None => crate::console::DEFAULT_LIMIT,
        Some(limit) => layout::parse_size(limit.get_ref())
            .map_err(|e| source.at(limit.span().start, &format!("serial_limit: {e}")))?,
    };
    let beside = |file: PathBuf| path.parent().unwrap_or(Path::new(".")).join(file);
    let kernel = match (raw.kernel, &raw.bundled) {
        (Some(_), Some(b)) => {
            return Err(source.at(
                b.span().start,
                "bundled and kernel both name the kernel: keep one",
            ));
        }
        (Some(file), None) => Some(beside(file)),
        (None, Some(b)) => match bundled_kernel(b.get_ref()) {
            Some(file) => Some(PathBuf::from(file)),
            None => {
                let why = format!(
                    "bundled = \"{}\": the build bundles \"kernel32\" and \"guest-kernel\" (its ELF, whatever boot says)",
                    b.get_ref()
                );
                return Err(source.at(b.span().start, &why));
            }
        },
        (None, None) => None,
    };
    let symbols = raw.symbols.map(beside);
    Ok(Scenario {
        path: path.to_path_buf(),
        name: raw.name.into_inner(),
        description: raw.description,
        mem,
        cmdline: raw.cmdline,
        timeout,
        serial_limit,
        kernel,
        symbols,
        boot: raw.boot,
        clock: raw
            .clock
            .map(|c| {
                crate::devices::cmos::parse_time(c.get_ref())
                    .map_err(|e| source.at(c.span().start, &format!("clock: {e}")))
            })
            .transpose()?,
        cpuid: match raw.cpuid {
            None => crate::cpuid::Hidden::default(),
            Some(c) => c
                .get_ref()
                .parse()
                .map_err(|e: String| source.at(c.span().start, &format!("cpuid: {e}")))?,
        },
        needs: needs(&source, &raw.needs)?,
        expect: expectations(&source, raw.expect)?,
    })
}

fn needs(source: &Source<'_>, raw: &[Spanned<String>]) -> Result<Vec<Need>, ScenarioError> {
    raw.iter()
        .map(|need| {
            Need::from_name(need.get_ref()).ok_or_else(|| {
                let known: Vec<String> = Need::ALL.iter().map(|n| format!("\"{n}\"")).collect();
                let why = format!(
                    "needs: \"{}\" is not a capability vmm-host can check; it knows {}",
                    need.get_ref(),
                    known.join(", ")
                );
                source.at(need.span().start, &why)
            })
        })
        .collect()
}

/// The name must be the file's: `scenario NAME` finds it by its file name.
fn check_name(source: &Source<'_>, name: &Spanned<String>) -> Result<(), ScenarioError> {
    let stem = source
        .path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.get_ref() == &stem {
        return Ok(());
    }
    Err(source.at(
        name.span().start,
        &format!(
            "name `{}` differs from the file name `{stem}.toml`",
            name.get_ref()
        ),
    ))
}

fn expectations(source: &Source<'_>, raw: RawExpect) -> Result<Expect, ScenarioError> {
    check_exit_code(source, &raw.ending, raw.exit_code.as_ref())?;
    let budget = match &raw.budget {
        None => None,
        Some(b) => Some(Located {
            line: source.line(b),
            value: source.seconds(b, "budget")?,
        }),
    };
    Ok(Expect {
        ending: source.located(raw.ending),
        exit_code: raw.exit_code.map(|c| source.located(c)),
        serial: texts(source, raw.serial, "serial expectation")?,
        serial_capped: raw.serial_capped.map(|c| source.located(c)),
        screen: texts(source, raw.screen, "screen expectation")?,
        exceptions: raw
            .exception
            .into_iter()
            .map(|e| checked(source, e, expect::exception))
            .collect::<Result<_, _>>()?,
        exception_count: raw.exception_count.map(|c| source.located(c)),
        findings: texts(source, raw.findings, "finding")?,
        no_findings: texts(source, raw.no_findings, "finding")?,
        diffs: raw
            .diff
            .into_iter()
            .map(|d| checked(source, d, expect::diff))
            .collect::<Result<_, _>>()?,
        chain: raw
            .chain
            .into_iter()
            .map(|c| checked(source, c, super::chain::chain_step))
            .collect::<Result<_, _>>()?,
        budget,
    })
}

/// `exit_code` goes with `ending = "exit"`, and only with it.
fn check_exit_code(
    source: &Source<'_>,
    ending: &Spanned<EndingKind>,
    exit_code: Option<&Spanned<u8>>,
) -> Result<(), ScenarioError> {
    match (ending.get_ref(), exit_code) {
        (EndingKind::Exit, None) => Err(source.at(
            ending.span().start,
            "ending = \"exit\" needs exit_code = N (the code the guest must exit with)",
        )),
        (kind, Some(code)) if *kind != EndingKind::Exit => Err(source.at(
            code.span().start,
            &format!(
                "exit_code only applies to ending = \"exit\", not \"{}\"",
                kind.name()
            ),
        )),
        _ => Ok(()),
    }
}

/// Phrases to look for; an empty one would match anything.
fn texts(
    source: &Source<'_>,
    list: Vec<Spanned<String>>,
    what: &str,
) -> Result<Vec<Located<String>>, ScenarioError> {
    list.into_iter()
        .map(|s| {
            if s.get_ref().is_empty() {
                return Err(source.at(
                    s.span().start,
                    &format!("an empty {what} matches anything: remove it"),
                ));
            }
            Ok(source.located(s))
        })
        .collect()
}

/// A raw table turned into its expectation by `convert`, located at the table.
fn checked<R, T>(
    source: &Source<'_>,
    raw: Spanned<R>,
    convert: impl Fn(R) -> Result<T, expect::ExpectError>,
) -> Result<Located<T>, ScenarioError> {
    let line = source.line(&raw);
    let value = convert(raw.into_inner()).map_err(|e| source.at(e.offset, &e.message))?;
    Ok(Located { value, line })
}
