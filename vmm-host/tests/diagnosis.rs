//! The answer first: for runs that die of an exception, the `diagnosis` block right after
//! "run ended" names the exception, the cause, the place and the next command, in at most
//! six lines below its heading; a run that ends cleanly has none.

mod common;
use common::{kvm_or_skip, vmm};

/// The diagnosis block of `scenario NAME --quiet`: its lines after the heading.
fn diagnosis(name: &str) -> Vec<String> {
    let run = vmm(&["scenario", name, "--quiet"]);
    let out = run.stdout;
    let Some(start) = out.find("== diagnosis\n") else {
        return Vec::new();
    };
    let labelled = |l: &&str| {
        ["fault", "cause", "where", "during", "next"]
            .iter()
            .any(|label| l.starts_with(&format!("  {label:<7} ")))
            || l.starts_with(&" ".repeat(10))
    };
    out[start..]
        .lines()
        .skip(1)
        .take_while(labelled)
        .map(String::from)
        .collect()
}

#[test]
fn a_fatal_exception_is_diagnosed_in_six_lines_with_the_command_to_type() {
    if kvm_or_skip("diagnosis_in_six_lines").is_none() {
        return;
    }
    for (name, fault, cause, place) in [
        (
            "boxkernel-nx-heap",
            "#GP general protection",
            "not canonical",
            "vmm_get_or_create_table",
        ),
        (
            "null-deref",
            "#PF page fault",
            "null pointer dereference",
            "null_dereference",
        ),
        ("kernel32", "#DE divide error", "raised #DE", "k32_divide"),
    ] {
        let lines = diagnosis(name);
        assert!(
            (4..=6).contains(&lines.len()),
            "{name}: {} lines: {lines:#?}",
            lines.len()
        );
        let line = |label: &str| {
            lines
                .iter()
                .find(|l| l.starts_with(&format!("  {label:<7} ")))
                .unwrap_or_else(|| panic!("{name}: no {label} line in {lines:#?}"))
        };
        assert!(line("fault").contains(fault), "{name}: {lines:#?}");
        assert!(line("cause").contains(cause), "{name}: {lines:#?}");
        assert!(line("where").contains(place), "{name}: {lines:#?}");
        let next = line("next");
        assert!(
            next.contains(&format!(
                "vmm-host scenario {name} --quiet --gdb 1234 --gdb-wait --break-at "
            )),
            "{name}: {next}"
        );
    }
}

#[test]
fn a_clean_run_has_no_diagnosis() {
    if kvm_or_skip("clean_run_no_diagnosis").is_none() {
        return;
    }
    assert!(diagnosis("hello").is_empty());
}
