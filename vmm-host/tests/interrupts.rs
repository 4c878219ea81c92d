//! External interrupts: the PIT's ticks reach the guest through the PIC, whether it waits in
//! `sti; hlt` (each halt exits to the host, which waits for the next tick) or spins with
//! interrupts on and never exits by itself (the host's ticker kicks it out at the PIT's rate).
//! The report and the JSON lines count what the host injected.

mod common;
use common::{kvm_or_skip, vmm};

/// Run `test=WORKLOAD`; the status, stdout and the JSON run line.
fn timer_run(workload: &str) -> (i32, String, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("run.jsonl");
    let cmdline = format!("test={workload}");
    let run = vmm(&[
        "run",
        "--timeout",
        "10",
        "--cmdline",
        &cmdline,
        "--report",
        report.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    let last = text.lines().last().unwrap_or("null");
    let json: serde_json::Value = serde_json::from_str(last).unwrap();
    (run.status, run.stdout + &run.stderr, json)
}

/// The injected count for IRQ 0 at 0x20, from the report's `IRQs` line.
fn irq0_count(out: &str) -> u64 {
    let line = out
        .lines()
        .find(|l| l.starts_with("  IRQs   "))
        .unwrap_or_else(|| panic!("no IRQs line: {out}"));
    let count = line
        .split("vector 0x20 ×")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok());
    count.unwrap_or_else(|| panic!("no IRQ 0 count in {line:?}"))
}

fn assert_ticks_arrived(workload: &str) {
    let (status, out, json) = timer_run(workload);
    assert_eq!(status, 0, "{out}");
    assert!(out.contains("[timer] 100 ticks"), "{out}");
    // The guest counted 100; one more may land between its last check and its `cli`.
    let injected = irq0_count(&out);
    assert!((100..=102).contains(&injected), "{injected}: {out}");
    let block = format!("  IRQ at vector 0x20 (injected)    {injected:>9}\n");
    assert!(
        out.contains(&block),
        "the exception block counts them: {out}"
    );
    assert_eq!(json["type"], "run");
    assert_eq!(json["interrupts"][0]["vector"], 0x20, "{json}");
    assert_eq!(json["interrupts"][0]["count"], injected, "{json}");
}

#[test]
fn a_guest_waiting_in_sti_hlt_gets_its_timer_ticks() {
    if kvm_or_skip("timer_sti_hlt").is_none() {
        return;
    }
    assert_ticks_arrived("timer");
}

#[test]
fn a_guest_spinning_with_interrupts_on_gets_them_too() {
    if kvm_or_skip("timer_spin").is_none() {
        return;
    }
    assert_ticks_arrived("timer-spin");
}

/// `hz=` and `ticks=` set the workload's rate and length (the PIT benchmark's knobs); a rate
/// the PIT cannot divide is a bad command line.
#[test]
fn the_timer_workload_runs_at_the_rate_asked() {
    if kvm_or_skip("timer_rate").is_none() {
        return;
    }
    let run = vmm(&["run", "--cmdline", "test=timer hz=250 ticks=25"]);
    assert_eq!(run.status, 0, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("[timer] PIC remapped to 0x20, PIT at 250 Hz; waiting for 25 ticks"),
        "{}",
        run.stdout
    );
    let injected = irq0_count(&run.stdout);
    assert!((25..=27).contains(&injected), "{injected}: {}", run.stdout);
    let bad = vmm(&["run", "--cmdline", "test=timer hz=5"]);
    assert_eq!(bad.status, i32::from(abi::exit::BAD_COMMAND_LINE));
    assert!(
        bad.stdout
            .contains("bad value hz=5; expected a PIT rate from 19 to 596591"),
        "{}",
        bad.stdout
    );
}

#[test]
fn a_halt_that_nothing_can_wake_still_ends_the_run() {
    if kvm_or_skip("halt_without_timer").is_none() {
        return;
    }
    // `cli; hlt` with no PIC set up: halted for good, reported at once, no IRQs line.
    let (status, out, json) = timer_run("halt");
    assert_eq!(status, 83, "{out}");
    assert!(!out.contains("\n  IRQs   "), "{out}");
    assert_eq!(json["interrupts"], serde_json::json!([]), "{json}");
}

#[test]
fn an_irq_through_an_exception_gate_is_an_interrupt_not_that_exception() {
    if kvm_or_skip("timer_unremapped").is_none() {
        return;
    }
    // IRQ 0 at 0x08 runs the guest's #DF handler, which reports a double fault and exits 4;
    // the host knows it injected that vector, so it records no exception and says why.
    let (status, out, json) = timer_run("timer-unremapped");
    assert_eq!(status, 4, "{out}");
    assert!(out.contains("== exceptions: 0 captured"), "{out}");
    // Counted beside the exceptions as an interrupt, with nothing under #DF.
    assert!(
        out.contains(&format!("  IRQ at vector 0x08 (injected)    {:>9}\n", 1)),
        "{out}"
    );
    assert!(!out.contains("  vector  8 #DF"), "{out}");
    assert!(
        out.contains("  IRQs   1 injected: vector 0x08 ×1\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "  note   interrupts arrived at vector 0x08, which the CPU uses for #DF: the PIC was not remapped (ICW2); move its vectors above 0x1f"
        ),
        "{out}"
    );
    assert_eq!(json["interrupts"][0]["vector"], 8, "{json}");
}

#[test]
fn both_pics_at_one_vector_base_is_named_in_the_report() {
    if kvm_or_skip("pic_overlap").is_none() {
        return;
    }
    let (status, out, _) = timer_run("pic-overlap");
    assert_eq!(status, 0, "{out}");
    assert!(out.contains("[hostile] 50 ticks"), "{out}");
    assert!(
        out.contains(
            "  note   both PICs deliver at vectors 0x20-0x27: IRQ n and IRQ n+8 share a vector, so a handler cannot tell which line (or which chip to EOI) it serves; give the slave its own 8 vectors (ICW2)\n"
        ),
        "{out}"
    );
}
