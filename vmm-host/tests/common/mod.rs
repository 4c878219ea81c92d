//! Helpers shared by the integration tests: running the real binary and skipping honestly.
#![allow(dead_code)]

pub mod debian;
pub mod remote;
pub mod rsp;
pub mod tcg;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn vmm_host() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmm-host"));
    cmd.current_dir(repo_root());
    cmd
}

/// The bundled guest kernel's ELF.
pub fn guest_kernel() -> &'static str {
    vmm_host::GUEST_KERNEL_ELF
}

/// The scenario `name` from the repository's `scenarios/`.
pub fn scenario(name: &str) -> vmm_host::scenario::Scenario {
    let path = repo_root().join("scenarios").join(format!("{name}.toml"));
    vmm_host::scenario::Scenario::load(&path).expect("scenario")
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `None` with a printed SKIPPED line when this machine cannot run KVM guests.
pub fn kvm_or_skip(test: &str) -> Option<()> {
    let usable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if usable {
        Some(())
    } else {
        skip(test, "/dev/kvm is missing or not readable and writable")
    }
}

/// `None` when `program --version` does not run here, after [`skip`] has said so.
pub fn program_or_skip(test: &str, program: &str, package: &str) -> Option<()> {
    let found = std::process::Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        Some(())
    } else {
        skip(
            test,
            &format!("{program} is not installed (.ci/run installs Debian's {package})"),
        )
    }
}

/// The variable that lets a CI run (`CI=true`) pass with tests skipped.
pub const ALLOW_SKIP: &str = "VMM_ALLOW_SKIP";

/// Skips `test` honestly. Cargo hides what passing tests print, so the SKIPPED line is also
/// appended to `target/skipped-tests.txt`, which `ci/test.sh` counts and lists at its end.
/// Under `CI=true` a skip is a failure unless `VMM_ALLOW_SKIP=1` says skipping is expected:
/// a KVM runner whose `/dev/kvm` vanished must not go green by testing nothing.
pub fn skip(test: &str, reason: &str) -> Option<()> {
    let line = format!("SKIPPED {test}: {reason}");
    println!("{line}");
    record_skip(&line);
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let allowed = std::env::var(ALLOW_SKIP).is_ok_and(|v| v == "1");
    assert!(
        !in_ci || allowed,
        "{test} cannot run under CI=true: {reason} (set {ALLOW_SKIP}=1 to allow skipping)"
    );
    None
}

/// The file the skips of one test run are collected in.
pub fn skip_log() -> PathBuf {
    std::env::var_os("VMM_SKIP_LOG").map_or_else(
        || repo_root().join("target").join("skipped-tests.txt"),
        PathBuf::from,
    )
}

fn record_skip(line: &str) {
    use std::io::Write;
    let path = skip_log();
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| writeln!(file, "{line}"));
    if let Err(e) = written {
        println!("(could not record the skip in {}: {e})", path.display());
    }
}

#[derive(Debug)]
pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(cmd: &mut Command) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("spawn vmm-host");
    Run {
        status: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

pub fn vmm(args: &[&str]) -> Run {
    run(vmm_host().args(args))
}

/// Bad input must end with exit status 2 and exactly one line on stderr: `error: …`.
pub fn assert_one_line_error(run: &Run, expected: &str) {
    assert_eq!(run.status, 2, "status; stderr: {}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr, got: {:?}", run.stderr);
    assert!(lines[0].starts_with("error: "), "{:?}", lines[0]);
    assert!(
        lines[0].contains(expected),
        "{:?} should contain {expected:?}",
        lines[0]
    );
    assert!(!run.stderr.contains("panicked") && !run.stderr.contains("backtrace"));
    assert!(
        run.stderr.matches("(os error").count() <= 1,
        "the cause is said once: {:?}",
        lines[0]
    );
}

/// Every `.rs` file under `dir`, for the tests that read the host's own source.
pub fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}
