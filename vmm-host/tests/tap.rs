//! The exception tap on the real guest kernel: what a kernel developer reads in the report
//! (console and JSON lines) for seed 004's journey and seed 000's BoxKernel bugs, and that
//! the tap is invisible to the guest.

mod common;
use common::{Run, kvm_or_skip, vmm};
use serde_json::Value;

/// Run a scenario with `--report`; it must pass. Returns the run and the report's lines.
fn scenario_with_report(name: &str, extra: &[&str]) -> Option<(Run, Vec<Value>)> {
    kvm_or_skip(name)?;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("report.jsonl");
    let mut args = vec!["scenario", name, "--quiet", "--report"];
    let path_text = path.to_str().expect("utf-8 path").to_string();
    args.push(&path_text);
    args.extend_from_slice(extra);
    let run = vmm(&args);
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    let text = std::fs::read_to_string(&path).expect("report file");
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    Some((run, lines))
}

fn of_type<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["type"] == kind).collect()
}

#[test]
fn journey_report_decodes_the_fault_walks_to_the_pte_and_shows_the_new_entry() {
    let Some((run, lines)) = scenario_with_report("journey", &[]) else {
        return;
    };
    let out = &run.stdout;
    // The console: the fault, its error code in words, CR2, the walk and the diff.
    assert!(
        out.contains("vector 14 (#PF page fault), error 0x6 (P=0 W=1 U=1 RSVD=0 I=0 PK=0 SS=0: write, user, not-present) at rip 0x555555554054 (CPL 3), cr2 0x716b326c8100"),
        "{out}"
    );
    assert!(
        out.contains("walk of 0x716b326c8100 (PGD 226, PUD 428, PMD 403, PTE 200, offset 0x100)"),
        "{out}"
    );
    assert!(
        out.contains("-> stops at the PT level: PTE[200] is not present"),
        "{out}"
    );
    assert!(out.contains("found a not-present PTE (PTE[200]"), "{out}");

    // The JSON lines: the same facts, as data.
    let faults: Vec<&Value> = of_type(&lines, "exception")
        .into_iter()
        .filter(|e| e["vector"] == 14)
        .collect();
    assert_eq!(faults.len(), 1, "one page fault");
    let fault = faults[0];
    assert_eq!(fault["error"], 6);
    assert_eq!(fault["cr2"], "0x716b326c8100");
    assert_eq!(fault["cpl"], 3);
    let walk = &fault["walks"][0]["walk"];
    let indices: Vec<u64> = walk["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["index"].as_u64().expect("index"))
        .collect();
    assert_eq!(indices, [226, 428, 403, 200]);
    assert_eq!(walk["offset"], 0x100);
    assert_eq!(walk["end"]["result"], "not-present");
    assert_eq!(walk["end"]["level"], "PTE");

    // Seed 004's Phase 6 from the host: PTE[200] goes from 0 to PFN << 12 | 0x67.
    let diff = of_type(&lines, "diff")
        .into_iter()
        .find(|d| d["seq"] == fault["seq"])
        .expect("a diff for the fault");
    // The CPU sets A on the upper levels when the write is retried; the handler's own work
    // is the PTE alone.
    let changes: Vec<&Value> = diff["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter(|c| c["hardware_only"] == false)
        .collect();
    assert_eq!(changes.len(), 1, "only the PTE changed: {diff}");
    let change = &changes[0];
    assert_eq!(
        (change["level"].as_str(), change["index"].as_u64()),
        (Some("PTE"), Some(200))
    );
    assert_eq!(change["old"], "0x0");
    let new = u64::from_str_radix(change["new"].as_str().unwrap().trim_start_matches("0x"), 16)
        .expect("hex");
    assert_eq!(new & 0xfff, 0x067, "P RW US A D");
    assert_eq!(
        format!("{:#x}", new >> 12),
        change["new_pfn"].as_str().unwrap()
    );
    assert!(out.contains("PTE[200]  at 0x"), "{out}");
    let run_line = of_type(&lines, "run");
    assert_eq!(run_line.len(), 1);
    assert_eq!(run_line[0]["exceptions"], 4);
}

#[test]
fn the_tap_is_invisible_to_the_guest() {
    let Some(()) = kvm_or_skip("the_tap_is_invisible_to_the_guest") else {
        return;
    };
    let serial = |extra: &[&str]| {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("serial.log");
        let log_text = log.to_str().expect("utf-8").to_string();
        // `run`, not `scenario`: the scenario's exception expectations need the tap.
        let mut args = vec![
            "run",
            "--cmdline",
            "test=journey",
            "--quiet",
            "--serial-log",
            &log_text,
        ];
        args.extend_from_slice(extra);
        let run = vmm(&args);
        assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
        std::fs::read_to_string(&log).expect("serial log")
    };
    let tapped = serial(&[]);
    let untapped = serial(&["--no-tap"]);
    // Same frames, same CR2 and error codes, same digest of the exception sequence.
    assert_eq!(tapped, untapped);
    assert!(tapped.contains("[kernel] exceptions taken: 4"), "{tapped}");
}

#[test]
fn audit_full_audits_the_whole_tree_at_every_exception() {
    let Some((run, lines)) = scenario_with_report("journey", &["--audit", "full"]) else {
        return;
    };
    let exceptions = of_type(&lines, "exception");
    let audits = of_type(&lines, "audit");
    // One per exception, then the end of the run's (seq null).
    assert_eq!(audits.len(), exceptions.len() + 1, "{audits:?}");
    for (audit, exception) in audits.iter().zip(&exceptions) {
        assert_eq!(audit["seq"], exception["seq"]);
        assert_eq!(audit["cr3"], exception["cr3"]);
        assert_eq!(audit["identity"][0]["size"], "0x4000000", "{audit}");
    }
    assert!(audits.last().unwrap()["seq"].is_null());
    // The console shows the audit summary under each exception and what re-arming cost.
    assert!(
        run.stdout
            .contains("  audit        page tables under CR3 0x"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("  IDT re-checked at "),
        "{}",
        run.stdout
    );
}
