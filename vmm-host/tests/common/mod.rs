//! Helpers shared by the integration tests: running the real binary and skipping honestly.
#![allow(dead_code)]

pub mod remote;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn vmm_host() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmm-host"));
    cmd.current_dir(repo_root());
    cmd
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
        println!("SKIPPED {test}: /dev/kvm is missing or not readable and writable");
        None
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
