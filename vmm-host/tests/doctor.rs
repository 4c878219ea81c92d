//! `vmm-host doctor` measures, and the rest of the host trusts the measurement.

mod common;
use common::{kvm_or_skip, vmm};
use std::path::Path;

/// The nested, page-table based KVM of the project's machines (notes/kvm-on-these-machines.md).
fn nested_pvm() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

#[test]
fn doctor_prints_one_measured_line_per_capability() {
    let Some(()) = kvm_or_skip("doctor") else {
        return;
    };
    let run = vmm(&["doctor"]);
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "vmm-host doctor: what this host's KVM does, measured with throw-away VMs"
    );
    for (verdict, name) in [
        ("yes", "/dev/kvm access"),
        ("yes", "KVM API version"),
        ("yes", "CPUID set"),
        ("yes", "32→64-bit switch"),
        ("yes", "single-step"),
        ("yes", "hardware breakpoints"),
        // The SDM puts code breakpoints ahead of fetch faults: how loops are counted.
        ("yes", "breakpoint on an unmapped handler"),
        ("yes", "ring-3 iretq"),
        ("--", "port-I/O exit round trip"),
    ] {
        let line = lines
            .iter()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no line for {name}: {}", run.stdout));
        assert!(line.trim_start().starts_with(verdict), "{line}");
    }
    let instructions = lines
        .iter()
        .find(|l| l.contains("ring-0 instructions"))
        .unwrap_or_else(|| panic!("no line for ring-0 instructions: {}", run.stdout));
    assert!(
        instructions.trim_end().ends_with(" of 16 ran"),
        "{instructions}"
    );
    if nested_pvm() {
        // What stopped Debian's kernel here (../shared/notes).
        assert!(
            instructions.trim_start().starts_with("no ")
                && instructions.contains("KVM cannot emulate lock cmpxchg16b, xsave64, xrstor64"),
            "{instructions}"
        );
    }
    let api = lines
        .iter()
        .find(|l| l.contains("KVM API version"))
        .unwrap();
    assert!(api.trim_end().ends_with(" 12"), "{api}");
    for name in [
        "data breakpoints (watchpoints)",
        "int3 breakpoints",
        "int n from ring 3",
        "syscall from ring 3",
        "32-bit paging",
        "task gates",
        "5-level paging",
    ] {
        let line = lines
            .iter()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no line for {name}"));
        let verdict = line.split_whitespace().next().unwrap();
        assert!(verdict == "yes" || verdict == "no", "{line}");
        if nested_pvm() {
            assert_eq!(verdict, "no", "this nested KVM cannot do {name}: {line}");
        }
    }
    // The host's BIOS depends on it, and every KVM measured so far has it.
    let real_mode = lines
        .iter()
        .find(|l| l.contains("int n in real mode"))
        .expect("a line for int n in real mode");
    assert!(
        real_mode.trim_start().starts_with("yes ")
            && real_mode
                .contains("int 0x42 went through the IVT to its handler and iret came back"),
        "{real_mode}"
    );
    if nested_pvm() {
        assert!(
            run.stdout
                .contains("int3 in ring 0 ended in KVM_EXIT_INTERNAL_ERROR suberror 1"),
            "{}",
            run.stdout
        );
        assert!(
            run.stdout
                .contains("int 0x80 arrived as vector 6 (#UD) at 0x30000, the int instruction")
        );
        assert!(
            run.stdout
                .contains("landed at LSTAR 0x38000 still in CPL 3 (CS 0x23)")
        );
        assert!(
            run.stdout.contains(
                "a #UD through a task gate ended in vector 13 at EIP 0x68, not in the task"
            ),
            "{}",
            run.stdout
        );
        assert!(
            run.stdout
                .contains("without KVM_SET_CPUID2: wrmsr EFER failed"),
            "{}",
            run.stdout
        );
    }
    let micros: f64 = lines
        .iter()
        .find(|l| l.contains("port-I/O exit round trip"))
        .and_then(|l| l.split_whitespace().nth(5))
        .and_then(|n| n.parse().ok())
        .expect("a number of µs");
    assert!(micros > 0.0);
}

#[test]
fn doctor_without_kvm_says_so_and_fails() {
    let run = vmm(&["--kvm-device", "/nonexistent/kvm", "doctor"]);
    assert_eq!(run.status, 2);
    assert!(
        run.stdout
            .contains("no   /dev/kvm access  `/nonexistent/kvm` does not exist"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("skip other probes"), "{}", run.stdout);
}

#[test]
fn int3_in_the_guest_ends_as_the_probe_predicts() {
    let Some(()) = kvm_or_skip("int3_workload") else {
        return;
    };
    let caps = vmm_host::doctor::examine(Path::new("/dev/kvm")).capabilities;
    let run = vmm(&["run", "--quiet", "--cmdline", "test=int3"]);
    if caps.int3_breakpoints {
        // int3 is delivered to an IDT of limit 0: the CPU shuts down.
        assert_eq!(run.status, 80, "{}", run.stdout);
    } else {
        assert_eq!(run.status, 82, "{}", run.stdout);
        assert!(
            run.stdout
                .contains("KVM internal error, suberror 1 (instruction emulation failed)")
        );
        assert!(
            run.stdout.contains("code   int3   (cc at physical 0x"),
            "{}",
            run.stdout
        );
    }
}
