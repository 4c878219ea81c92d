//! `ci/test.sh` is honest about what it cannot test: under `CI=true` a machine lacking what
//! the tests need fails at once with one line, and every run ends with the count of skips.

mod common;
use std::os::unix::fs::symlink;
use std::process::Command;

/// Runs `ci/test.sh` with `CI=true` and a PATH holding only the shell tools it needs, so gdb,
/// QEMU, Chromium and cargo-fuzz are all absent.
fn ci_without_tools(allow_skip: bool) -> common::Run {
    let bin = tempfile::tempdir().unwrap();
    for tool in ["bash", "dirname", "mkdir", "grep", "sed", "sort", "uniq"] {
        let path = ["/usr/bin", "/bin"]
            .iter()
            .map(|dir| std::path::Path::new(dir).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} is not installed"));
        symlink(path, bin.path().join(tool)).unwrap();
    }
    let log = bin.path().join("skipped.txt");
    let mut cmd = Command::new("bash");
    cmd.arg("ci/test.sh")
        .current_dir(common::repo_root())
        .env_clear()
        .env("PATH", bin.path())
        .env("CI", "true")
        .env("VMM_SKIP_LOG", &log);
    if allow_skip {
        // Stops right after the check: no cargo on this PATH.
        cmd.env("VMM_ALLOW_SKIP", "1");
    }
    common::run(&mut cmd)
}

#[test]
fn ci_true_without_the_tools_fails_with_one_line_naming_them() {
    let run = ci_without_tools(false);
    assert_eq!(run.status, 1, "{}{}", run.stdout, run.stderr);
    let errors: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", run.stdout);
    for missing in [
        "qemu-system-x86_64",
        "gdb",
        "chromium",
        "grub-file",
        "cargo-fuzz",
        "VMM_ALLOW_SKIP=1",
    ] {
        assert!(errors[0].contains(missing), "{missing} in {}", errors[0]);
    }
    assert!(
        run.stdout.ends_with("== skipped tests: 0\n"),
        "the count ends the output: {}",
        run.stdout
    );
}

#[test]
fn allowed_skipping_passes_the_check_and_goes_on_to_the_tests() {
    let run = ci_without_tools(true);
    assert!(!run.stdout.contains("error: CI=true"), "{}", run.stdout);
    assert!(
        run.stdout.contains("== cargo fmt --check"),
        "went on to the first step: {}",
        run.stdout
    );
}

#[test]
fn a_skip_is_recorded_and_fails_under_ci_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("skipped.txt");
    let probe = |ci: &str, allow: &str| {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "skip_probe", "--nocapture", "--include-ignored"])
            .env("VMM_SKIP_LOG", &log)
            .env("CI", ci)
            .env(common::ALLOW_SKIP, allow);
        common::run(&mut cmd)
    };
    let run = probe("false", "");
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    let run = probe("true", "1");
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    let run = probe("true", "");
    assert_ne!(run.status, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(
            "skip_probe cannot run under CI=true: a probe's reason (set VMM_ALLOW_SKIP=1 to allow skipping)"
        ),
        "{}",
        run.stderr
    );
    let recorded = std::fs::read_to_string(&log).unwrap();
    assert_eq!(recorded, "SKIPPED skip_probe: a probe's reason\n".repeat(3));
}

/// Run only by the test above, in a child process.
#[test]
#[ignore = "run by a_skip_is_recorded_and_fails_under_ci_unless_allowed"]
fn skip_probe() {
    let _ = common::skip("skip_probe", "a probe's reason");
}
