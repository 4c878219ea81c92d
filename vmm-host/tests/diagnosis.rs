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

/// Exit code 0 is a run that ended well, even from inside a handler (the journey's process
/// exits through its system call, a #UD here): no diagnosis.
#[test]
fn a_clean_run_has_no_diagnosis() {
    if kvm_or_skip("clean_run_no_diagnosis").is_none() {
        return;
    }
    assert!(diagnosis("hello").is_empty());
    assert!(diagnosis("journey").is_empty());
}

/// A triple fault whose exceptions never reached a handler still gets a diagnosis: the chain
/// of deliveries replayed from the final state, what started it and what stopped the CPU, and
/// the rerun that holds the final state for gdb.
#[test]
fn a_triple_fault_with_no_handler_run_is_diagnosed() {
    if kvm_or_skip("triple_fault_diagnosis").is_none() {
        return;
    }
    let lines = diagnosis("stack-overflow-no-ist");
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert!(
        lines[0].ends_with(
            "none reached a handler: #PF → #DF → #PF and the CPU shut down (triple fault)"
        ),
        "{lines:#?}"
    );
    assert!(
        lines[1].contains("writes [rsp-0x8] at 0x329f18: the PTE entry is not present; delivering #DF then raised #PF: pushing the #DF frame at 0x329f18, on the current stack (RSP 0x329f20, no IST)")
            && lines[1].ends_with("give it an IST stack in the TSS."),
        "{lines:#?}"
    );
    assert!(
        lines[2].ends_with("vmm-host scenario stack-overflow-no-ist --quiet --gdb 1234 --gdb-wait"),
        "{lines:#?}"
    );
    assert!(lines[3].contains("`continue` stops at the final state"));
}

/// `--brief`: the ending, the diagnosis and the counts; no registers, no walks.
#[test]
fn brief_prints_the_ending_the_diagnosis_and_the_counts() {
    if kvm_or_skip("brief").is_none() {
        return;
    }
    let run = vmm(&["scenario", "boxkernel-nx-heap", "--quiet", "--brief"]);
    let out = &run.stdout;
    assert_eq!(run.status, 0, "{out}");
    assert!(
        out.contains("== run ended: the guest exited with code 4"),
        "{out}"
    );
    assert!(
        out.contains("== diagnosis\n  fault   [1] #GP general protection"),
        "{out}"
    );
    assert!(out.contains("== exceptions: 1 captured: #GP\n"), "{out}");
    assert!(!out.contains("rip: walk of"), "no walks: {out}");
    assert!(!out.contains("-- page tables"), "no audit: {out}");
    assert!(
        out.lines().count() <= 14,
        "{} lines:\n{out}",
        out.lines().count()
    );
}

/// The JSON lines end with a `diagnosis` record after the `run` record.
#[test]
fn the_report_carries_the_diagnosis() {
    if kvm_or_skip("diagnosis_json").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.jsonl");
    let run = vmm(&[
        "run",
        "--quiet",
        "--cmdline",
        "test=null",
        "--report",
        path.to_str().unwrap(),
    ]);
    assert_eq!(run.status, 4, "{}", run.stdout);
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = lines.last().unwrap();
    assert_eq!(last["type"], "diagnosis");
    assert_eq!(last["seq"], 1);
    assert!(
        last["cause"]
            .as_str()
            .unwrap()
            .starts_with("null pointer dereference")
    );
    assert!(last["next"][0].as_str().unwrap().ends_with("--break-at 1"));
    assert_eq!(lines[lines.len() - 2]["type"], "run");
}

/// `--color always` paints the report; by default a pipe gets none, nor does `--color never`.
#[test]
fn colour_only_when_asked_or_on_a_terminal() {
    if kvm_or_skip("colour").is_none() {
        return;
    }
    let args = ["run", "--cmdline", "test=null", "--quiet", "--brief"];
    let painted = vmm(&[&["--color", "always"], &args[..]].concat());
    assert!(
        painted.stdout.contains("\u{1b}[1m== run ended"),
        "{:?}",
        painted.stdout
    );
    assert!(painted.stdout.contains("\u{1b}[31m"), "the fault in red");
    for plain in [
        vmm(&args),
        vmm(&[&["--color", "never"], &args[..]].concat()),
    ] {
        assert!(!plain.stdout.contains('\u{1b}'), "{:?}", plain.stdout);
        assert!(plain.stdout.starts_with("== run ended"), "{}", plain.stdout);
    }
}

/// A run longer than a second shows one live status line on a terminal (here a pseudo-terminal
/// made by util-linux's `script`), erased before the report; a pipe never sees it.
#[test]
fn the_live_status_line_is_drawn_on_a_terminal_and_never_in_a_pipe() {
    if kvm_or_skip("live status line").is_none()
        || common::program_or_skip("live status line", "script", "bsdutils").is_none()
    {
        return;
    }
    let binary = env!("CARGO_BIN_EXE_vmm-host");
    // hostile-spin spins for 2 s without a single exit: its time must still go by.
    let on_terminal = common::run(
        std::process::Command::new("script")
            .args([
                "-qec",
                &format!("{binary} scenario hostile-spin"),
                "/dev/null",
            ])
            .current_dir(common::repo_root())
            .env("TERM", "xterm"),
    );
    let out = on_terminal.stdout;
    let erase = "\r\u{1b}[2K";
    let drawn: Vec<&str> = out
        .split(erase)
        .filter(|piece| piece.starts_with("running "))
        .collect();
    assert!(
        !drawn.is_empty(),
        "no status line under a terminal: {out:?}"
    );
    let last = drawn[drawn.len() - 1];
    assert!(
        last.contains(" s in the guest · ") && last.contains(" exits/s · no exceptions yet"),
        "{last:?}"
    );
    let seconds: f64 = last["running ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1.0..=2.5).contains(&seconds),
        "guest time {seconds} in {last:?}"
    );
    // Erased before the report: the report's first line starts after an erase.
    let report = out.find("== run ended").expect("the report");
    let last_drawn = out[..report]
        .rfind("running ")
        .expect("drawn before the report");
    assert!(
        out[last_drawn..report].contains(erase),
        "the line is not erased before the report: {out:?}"
    );
    let piped = common::vmm(&["scenario", "hostile-spin"]);
    for text in [&piped.stdout, &piped.stderr] {
        assert!(
            !text.contains("in the guest") && !text.contains('\u{1b}'),
            "{text:?}"
        );
    }
    assert!(piped.stdout.contains("PASS"), "{}", piped.stdout);
}

/// The list: boxkernel-heap, stack-overflow, and every hostile scenario. A run that
/// dies of an exception, a triple fault or the watchdog gets at most six lines naming the
/// fault, the cause and the command to type next (and the place, where there is code to
/// name); one that exits on its own with no exception being handled gets none.
#[test]
fn every_hostile_scenario_is_diagnosed_in_at_most_six_lines_or_not_at_all() {
    if kvm_or_skip("hostile_diagnoses").is_none() {
        return;
    }
    let dir = common::repo_root().join("scenarios");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.path().file_stem()?.to_str().map(String::from))
        .filter(|n| n.starts_with("hostile-"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 12, "{names:?}");
    names.extend(["boxkernel-heap", "stack-overflow"].map(String::from));
    // Exit on their own, no exception being handled: nothing to diagnose.
    let clean = [
        "hostile-debug-exit-garbage",
        "hostile-pic-overlap",
        "hostile-pit-flood",
        "hostile-serial-flood",
        "hostile-vga-flood",
    ];
    for name in &names {
        let lines = diagnosis(name);
        if clean.contains(&name.as_str()) {
            assert!(lines.is_empty(), "{name}: {lines:#?}");
            continue;
        }
        assert!((3..=6).contains(&lines.len()), "{name}: {lines:#?}");
        let has = |label: &str| {
            lines
                .iter()
                .any(|l| l.starts_with(&format!("  {label:<7} ")))
        };
        for label in ["fault", "cause", "next"] {
            assert!(has(label), "{name}: no {label} in {lines:#?}");
        }
        let triple = lines[0].contains("triple fault");
        assert!(triple || has("where"), "{name}: no place in {lines:#?}");
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("vmm-host scenario {name} --quiet --gdb 1234"))),
            "{name}: {lines:#?}"
        );
    }
}
