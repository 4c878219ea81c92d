//! Booting the bundled guest-kernel under KVM: the hello scenario and every way a run ends.

mod common;
use common::{kvm_or_skip, vmm};

#[test]
fn hello_scenario_prints_banner_and_memory_map_and_passes() {
    let Some(()) = kvm_or_skip("hello_scenario") else {
        return;
    };
    let run = vmm(&["scenario", "hello"]);
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    for line in [
        "guest-kernel 0.1.0: PVH entry at 0x100000, long mode, boot page tables at 0x500000 identity-mapping 32 MiB, stack top 0x510000",
        "start info at 0x6000, version 1",
        "command line: \"test=hello\"",
        "  [0x0000000000-0x000009ffff] usable         640 KiB",
        "  [0x00000a0000-0x00000fffff] reserved       384 KiB",
        "  [0x0000100000-0x0007ffffff] usable      130048 KiB",
        "hello from guest-kernel",
        "== run ended: the guest exited with code 0",
        "== scenario hello: PASS (exit, ",
    ] {
        assert!(
            run.stdout.contains(line),
            "missing {line:?} in:\n{}",
            run.stdout
        );
    }
}

#[test]
fn large_memory_is_split_around_the_hole_below_4_gib() {
    let Some(()) = kvm_or_skip("large_memory") else {
        return;
    };
    let run = vmm(&["run", "--mem", "4G", "--cmdline", "test=hello"]);
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("[0x0000100000-0x00bfffffff] usable"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("[0x0100000000-0x013fffffff] usable"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_panic_is_reported_over_serial_with_its_own_code() {
    let Some(()) = kvm_or_skip("panic") else {
        return;
    };
    let run = vmm(&["run", "--cmdline", "test=panic"]);
    assert_eq!(run.status, i32::from(abi::exit::PANIC));
    assert!(
        run.stdout.contains("PANIC: panicked at src/workloads.rs:"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("test=panic asked for a panic"));
}

#[test]
fn triple_fault_reports_registers_and_the_faulting_instruction() {
    let Some(()) = kvm_or_skip("triple_fault") else {
        return;
    };
    let run = vmm(&["run", "--quiet", "--cmdline", "test=triple-fault"]);
    assert_eq!(run.status, 80, "{}", run.stdout);
    let out = &run.stdout;
    assert!(
        out.contains("== run ended: triple fault: the CPU shut down (KVM_EXIT_SHUTDOWN)"),
        "{out}"
    );
    assert!(out.contains("mode   64-bit long mode, CPL 0"), "{out}");
    // The tap's account of why: no gate could take the #UD, nor the #GP and #DF after it.
    assert!(
        out.contains("IDTR base 0x0 limit 0x0: 0 of the 32 exception gates inside the limit"),
        "{out}"
    );
    assert!(
        out.contains("#DF  outside the IDT limit: delivering it raises #GP"),
        "{out}"
    );
    assert!(
        out.contains("cr0    0x0000000080010011 [PE ET WP PG]"),
        "{out}"
    );
    // The kernel runs on its own PML4 by then (vmm_init), not on the boot tables at 0x500000.
    let cr3 = out
        .lines()
        .find_map(|l| l.strip_prefix("  cr3    0x"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .expect("a cr3 line");
    assert!(cr3 != 0x50_0000 && cr3.is_multiple_of(4096), "cr3 {cr3:#x}");
    assert!(
        out.contains("efer   0x0000000000000d00 [LME LMA NXE]"),
        "{out}"
    );
    assert!(
        out.contains("idt base 0x0000000000000000 limit 0x0000"),
        "{out}"
    );
    assert!(out.contains("code   ud2   (0f 0b at physical 0x"), "{out}");
    assert!(
        !out.contains("loading an empty IDT"),
        "--quiet keeps serial off the terminal"
    );
}

#[test]
fn hlt_with_interrupts_disabled_ends_the_run() {
    let Some(()) = kvm_or_skip("halt") else {
        return;
    };
    let run = vmm(&["run", "--cmdline", "test=halt"]);
    assert_eq!(run.status, 83, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("the guest executed hlt with interrupts disabled: nothing can wake it")
    );
    // The decoded flags (whatever the last arithmetic left) do not include IF.
    let flags = run
        .stdout
        .split("rflags 0x")
        .nth(1)
        .and_then(|rest| rest.split('[').nth(1))
        .and_then(|rest| rest.split(']').next())
        .unwrap_or_else(|| panic!("no decoded rflags: {}", run.stdout));
    assert!(
        !flags.split_whitespace().any(|f| f == "IF"),
        "IF is clear: [{flags}]"
    );
}

#[test]
fn the_watchdog_ends_a_spinning_guest() {
    let Some(()) = kvm_or_skip("watchdog") else {
        return;
    };
    let run = vmm(&["run", "--cmdline", "test=spin", "--timeout", "0.5"]);
    assert_eq!(run.status, 84, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("watchdog: the guest was still running after 0.50 s"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("spinning forever"));
}

#[test]
fn an_unknown_kernel_argument_is_refused_by_the_guest() {
    let Some(()) = kvm_or_skip("unknown_argument") else {
        return;
    };
    let run = vmm(&["run", "--cmdline", "test=hello tset=heap"]);
    assert_eq!(run.status, i32::from(abi::exit::BAD_COMMAND_LINE));
    assert!(
        run.stdout.contains("unknown command-line word \"tset\""),
        "{}",
        run.stdout
    );
    let run = vmm(&["run", "--cmdline", "test=nonsense"]);
    assert_eq!(run.status, i32::from(abi::exit::BAD_COMMAND_LINE));
    assert!(
        run.stdout
            .contains("unknown workload test=nonsense; test=help lists them")
    );
}

#[test]
fn serial_log_receives_the_output() {
    let Some(()) = kvm_or_skip("serial_log") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serial.log");
    let run = vmm(&[
        "run",
        "--quiet",
        "--cmdline",
        "test=hello",
        "--serial-log",
        log.to_str().unwrap(),
    ]);
    assert_eq!(run.status, 0);
    assert!(!run.stdout.contains("hello from guest-kernel"));
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("hello from guest-kernel\n"), "{logged}");
    assert!(!logged.contains('\r'));
}

#[test]
fn a_failing_expectation_fails_the_scenario_and_points_at_its_line() {
    let Some(()) = kvm_or_skip("failing_scenario") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wrong.toml");
    std::fs::write(
        &path,
        "name = \"wrong\"\ndescription = \"expects the wrong code\"\ncmdline = \"test=hello\"\n\n[expect]\nending = \"exit\"\nexit_code = 7\nserial = [\"no such line\"]\n",
    )
    .unwrap();
    let run = vmm(&["scenario", path.to_str().unwrap(), "--quiet"]);
    assert_eq!(run.status, 1, "{}", run.stdout);
    let p = path.display();
    assert!(run.stdout.contains("== scenario wrong: FAIL"));
    assert!(
        run.stdout.contains(&format!(
            "  {p}:7: expected exit code 7, the guest exited with 0"
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("  {p}:8: serial output lacks \"no such line\"")),
        "{}",
        run.stdout
    );
}

/// `--cpuid` really changes what the guest sees: without long mode in CPUID the kernel's
/// `wrmsr` to EFER (ECX 0xc0000080, LME|NXE) raises #GP, and with no IDT yet, the CPU shuts
/// down at that instruction.
#[test]
fn hiding_long_mode_stops_the_kernel_at_its_wrmsr_to_efer() {
    let Some(()) = kvm_or_skip("cpuid_hides_lm") else {
        return;
    };
    let plain = vmm(&["run", "--quiet", "--cmdline", "test=hello"]);
    assert_eq!(plain.status, 0, "{}", plain.stdout);
    let run = vmm(&[
        "run",
        "--quiet",
        "--cpuid",
        "-lm",
        "--cmdline",
        "test=hello",
    ]);
    assert_eq!(run.status, 80, "triple fault: {}", run.stdout);
    assert!(
        run.stdout.contains("mode   32-bit protected mode"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("rcx  0x00000000c0000080"),
        "{}",
        run.stdout
    );
    let bad = vmm(&["run", "--cpuid", "-cx61"]);
    assert_eq!(bad.status, 2);
    assert!(
        bad.stderr.contains("unknown CPUID feature `cx61`"),
        "{}",
        bad.stderr
    );
}

/// `--clock` sets what the kernel reads from the CMOS; a malformed time is one line.
#[test]
fn the_kernel_reads_the_clock_it_was_given() {
    let Some(()) = kvm_or_skip("clock_fixed") else {
        return;
    };
    let run = vmm(&["run", "--clock", "@0", "--cmdline", "test=rtc"]);
    assert_eq!(run.status, 0, "{}", run.stdout);
    assert!(
        run.stdout.contains("[rtc] 1970-01-01 00:00:0"),
        "{}",
        run.stdout
    );
    let bad = vmm(&["run", "--clock", "noon", "--cmdline", "test=rtc"]);
    assert_eq!(bad.status, 2);
    assert!(
        bad.stderr.contains(
            "`noon` is not a time: write 2026-12-02T01:30:00 (UTC) or @SECONDS since 1970"
        ),
        "{}",
        bad.stderr
    );
}

/// A kernel that uses `lock cmpxchg16b` when CPUID offers CX16. Where this KVM cannot emulate
/// it (the nested kvm_pvm), the report names the instruction and the flag; hiding the flag
/// gets the kernel past it on any host.
#[test]
fn an_instruction_kvm_cannot_emulate_is_named_with_the_flag_that_avoids_it() {
    let Some(()) = kvm_or_skip("cx16_hint") else {
        return;
    };
    let run = vmm(&["run", "--quiet", "--cmdline", "test=cx16"]);
    if run.status == 82 {
        assert!(
            run.stdout.contains(
                "  hint   this KVM could not emulate `lock cmpxchg16b [rsi]`; a kernel that checks CPUID avoids it with --cpuid -cx16"
            ),
            "{}",
            run.stdout
        );
    } else {
        // A KVM that runs the instruction natively.
        assert_eq!(run.status, 0, "{}", run.stdout);
    }
    let hidden = vmm(&["run", "--cpuid", "-cx16", "--cmdline", "test=cx16"]);
    assert_eq!(hidden.status, 0, "{}", hidden.stdout);
    assert!(
        hidden
            .stdout
            .contains("[cx16] CPUID lacks CX16: swapping the pair one word at a time"),
        "{}",
        hidden.stdout
    );
}
