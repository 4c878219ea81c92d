//! `scenario --all`: the table, the JUnit and JSON files, and a deliberately wrong scenario
//! (a fixture, not in scenarios/) whose every mismatch is named with its line.

mod common;
use common::{assert_one_line_error, kvm_or_skip, vmm};

#[test]
fn a_filtered_suite_passes_and_junit_lists_each_scenario() {
    if kvm_or_skip("filtered_suite").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("junit.xml");
    let json = dir.path().join("suite.json");
    let run = vmm(&[
        "scenario",
        "--all",
        "--filter",
        "n*",
        "--jobs",
        "2",
        "--junit",
        junit.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .starts_with("== 3 scenarios from scenarios, 2 at a time\n"),
        "{}",
        run.stdout
    );
    for name in ["non-canonical", "null-deref", "nx-heap-exec"] {
        assert!(
            run.stdout.lines().any(|l| l.starts_with('[')
                && l.contains(&format!("PASS  {name}  (exit 4, 1 exception, "))),
            "a progress line for {name}: {}",
            run.stdout
        );
    }
    assert!(
        run.stdout.contains(
            "\nscenario       result ending  exceptions      time   budget  exceptions seen\n"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("\nnull-deref     PASS   exit 4           1"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("3 of 3 scenarios passed"),
        "{}",
        run.stdout
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("tests=\"3\" failures=\"0\" errors=\"0\""),
        "{xml}"
    );
    for name in ["non-canonical", "null-deref", "nx-heap-exec"] {
        assert!(xml.contains(&format!("name=\"{name}\"")), "{xml}");
    }
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc["passed"], 3);
    assert_eq!(doc["scenarios"][1]["name"], "null-deref");
    assert_eq!(doc["scenarios"][1]["exception_summary"], "#PF");
}

#[test]
fn a_wrong_scenario_fails_with_each_mismatch_at_its_line() {
    if kvm_or_skip("wrong_scenario").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("junit.xml");
    let artifacts = dir.path().join("artifacts");
    let run = vmm(&[
        "scenario",
        "--all",
        "--scenarios",
        "vmm-host/tests/fixtures",
        "--junit",
        junit.to_str().unwrap(),
        "--artifacts",
        artifacts.to_str().unwrap(),
    ]);
    assert_eq!(run.status, 1, "{}{}", run.stdout, run.stderr);
    let file = "vmm-host/tests/fixtures/wrong-expectations.toml";
    // The exact text, with only what varies between runs and builds replaced: the time taken
    // and the faulting instruction's address.
    let expected = [
        format!("{file}:9: expected exit code 0, the guest exited with 4"),
        format!("{file}:10: took TIME s, over 10x its budget of 0.001 s"),
        format!(
            "{file}:11: serial output lacks \"this line never appears\" (looked after \"[VMM] vmm_init (boxkernel-nx:\")"
        ),
        format!(
            "{file}:12: the final audit lacks a finding with \"table outside RAM\"; there were: W+X: kernel range 0x0-0x4000000 (64 MiB) is writable and executable; set NX on data or clear RW on code"
        ),
        format!(
            "{file}:13: the final audit has a finding with \"W+X\": W+X: kernel range 0x0-0x4000000 (64 MiB) is writable and executable; set NX on data or clear RW on code"
        ),
        format!(
            "{file}:15: expected exception #GP rip in vmm_map_page was not seen; the first #GP was #GP error 0x0 rip ADDR (guest_kernel::vmm::vmm_get_or_create_table)"
        ),
        format!(
            "{file}:19: expected exception #PF error [write, user] was not seen; the run took no #PF"
        ),
        // One exception, the #GP, both first of its kind and still being handled: one diff.
        format!(
            "{file}:23: expected the diff entry PTE[5] to P RW; 1 diff captured, none touched that entry"
        ),
        // Then the run's diagnosis, quoted.
        "diagnosis: [1] #GP general protection at rip ADDR: operand [r12+rax*8] of `mov rax,[r12+rax*8]` addresses 0x8000000000357000, which is not canonical (bits 63..47 differ): the CPU raises #GP before any page walk.".to_string(),
        "to stop there under gdb: vmm-host scenario wrong-expectations --gdb 1234 --gdb-wait --break-at 1".to_string(),
        // And what it left for a post-mortem.
        "artifacts: ARTIFACTS/wrong-expectations.core and ARTIFACTS/wrong-expectations.html".to_string(),
    ];
    let details: Vec<String> = run
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("FAIL wrong-expectations"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| {
            normalise(
                &l.trim_start()
                    .replace(artifacts.to_str().unwrap(), "ARTIFACTS"),
            )
        })
        .collect();
    assert_eq!(details, expected, "{}", run.stdout);
    let core = artifacts.join("wrong-expectations.core");
    let inspected = vmm(&["inspect", core.to_str().unwrap()]);
    assert!(
        inspected
            .stdout
            .contains("[1] vector 13 (#GP general protection)"),
        "the failing run's core: {}{}",
        inspected.stdout,
        inspected.stderr
    );
    let page = std::fs::read_to_string(artifacts.join("wrong-expectations.html")).unwrap();
    assert!(
        page.contains("<section class=\"diagnosis\">"),
        "the failing run's page"
    );
    assert!(
        run.stdout.contains("0 of 1 scenarios passed"),
        "{}",
        run.stdout
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("tests=\"1\" failures=\"1\""), "{xml}");
    assert!(
        xml.contains(&format!(
            "<failure message=\"{file}:9: expected exit code 0, the guest exited with 4\">"
        )),
        "{xml}"
    );
}

#[test]
fn suite_options_that_follow_one_scenario_are_refused() {
    let run = vmm(&["scenario", "--all", "--filter", "zzz*"]);
    assert_one_line_error(
        &run,
        "no scenario in scenarios matches --filter `zzz*`; available: ",
    );
    for flag in ["--report", "--core"] {
        let run = vmm(&["scenario", "--all", flag, "/tmp/x"]);
        assert_one_line_error(
            &run,
            "--gdb, --report, --html, --serial-log and --core follow one scenario",
        );
    }
    for (flag, value) in [("--junit", "x.xml"), ("--artifacts", "dir")] {
        let run = vmm(&["scenario", "hello", flag, value]);
        assert_one_line_error(
            &run,
            "--filter, --jobs, --junit, --json and --artifacts go with --all, not with one scenario",
        );
    }
}

/// A scenario that needs 32-bit paging runs where the KVM has it and is skipped, with exit
/// status 77 and the reason, where it does not (this project's nested KVM).
#[test]
fn a_scenario_the_kvm_cannot_run_is_skipped_with_the_reason() {
    let name = "a_scenario_the_kvm_cannot_run_is_skipped_with_the_reason";
    if common::kvm_or_skip(name).is_none() {
        return;
    }
    let run = vmm(&["scenario", "kernel32-wp"]);
    if vmm_host::doctor::runs_32_bit_paging(std::path::Path::new("/dev/kvm")) {
        assert_eq!(run.status, 0, "{}", run.stdout);
        assert!(
            run.stdout.contains("== scenario kernel32-wp: PASS"),
            "{}",
            run.stdout
        );
    } else {
        assert_eq!(run.status, 77, "{}", run.stdout);
        assert!(
            run.stdout.ends_with(
                "== scenario kernel32-wp: SKIPPED: this KVM cannot do what the scenario needs: 32-bit paging (`vmm-host doctor` shows the probe)\n"
            ),
            "{}",
            run.stdout
        );
    }
    let suite = vmm(&["scenario", "--all", "--filter", "kernel32-p*"]);
    assert_eq!(suite.status, 0, "a skip fails nothing: {}", suite.stdout);
    assert!(suite.stdout.contains("kernel32-pae"), "{}", suite.stdout);
}

/// A mismatch line with the run's time and code addresses replaced by `TIME` and `ADDR`.
fn normalise(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find(|c: char| c.is_ascii_digit()) {
        let (before, from) = rest.split_at(at);
        out.push_str(before);
        let end = from
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.'))
            .unwrap_or(from.len());
        let (number, after) = from.split_at(end);
        let timed = before.ends_with("took ") && after.starts_with(" s");
        let address = before.ends_with("rip ") && number.starts_with("0x");
        out.push_str(match () {
            () if timed => "TIME",
            () if address => "ADDR",
            () => number,
        });
        rest = after;
    }
    out.push_str(rest);
    out
}
