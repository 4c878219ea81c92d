//! Cores: `--core` and `--core-on` write an ELF core that the real gdb opens with the kernel
//! (registers, backtrace, memory by virtual address, unmapped memory unreadable), and that
//! `vmm-host inspect` analyses with no KVM into the same explanation the live run gave.

mod common;
use common::{kvm_or_skip, program_or_skip, vmm};
use std::path::Path;

/// The `explanation` line of exception `[seq]` in a report's detailed blocks.
fn explanation(report: &str, seq: u64) -> Option<String> {
    let head = format!("[{seq}] vector ");
    let mut lines = report.lines().skip_while(|l| !l.starts_with(&head));
    lines.next()?;
    lines
        .take_while(|l| l.starts_with(' '))
        .find(|l| l.starts_with("  explanation"))
        .map(String::from)
}

/// gdb in batch mode on the bundled kernel (and `core`, if given), running `commands`.
fn gdb_batch(core: Option<&Path>, commands: &[&str]) -> String {
    let mut cmd = std::process::Command::new("timeout");
    cmd.args(["60", "gdb", "-nx", "-batch"]);
    for c in commands {
        cmd.args(["-ex", c]);
    }
    cmd.arg(common::guest_kernel()).args(core);
    let out = cmd.output().expect("run gdb");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn gdb(core: &Path, commands: &[&str]) -> String {
    gdb_batch(Some(core), commands)
}

#[test]
fn gdb_opens_a_core_and_inspect_explains_it_as_the_live_run_did() {
    if kvm_or_skip("core_null_deref").is_none()
        || program_or_skip("core_null_deref", "gdb", "gdb").is_none()
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("null.core");
    let live = vmm(&[
        "scenario",
        "null-deref",
        "--quiet",
        "--core",
        core.to_str().unwrap(),
    ]);
    assert_eq!(live.status, 0, "{}{}", live.stdout, live.stderr);
    assert!(
        live.stdout
            .contains(&format!("== core: {} (", core.display())),
        "{}",
        live.stdout
    );
    let text = gdb(&core, &["bt", "x/gx 0x10", "info registers cr2"]);
    assert!(
        text.contains("Program terminated with signal SIGSEGV"),
        "{text}"
    );
    assert!(
        text.contains("guest_kernel::traps::page_fault"),
        "the handler's frame: {text}"
    );
    assert!(
        text.contains("0x10:\tCannot access memory at address 0x10"),
        "page 0 is not mapped in the core either: {text}"
    );
    let inspected = vmm(&["inspect", core.to_str().unwrap()]);
    assert_eq!(inspected.status, 0, "{}", inspected.stderr);
    let offline = explanation(&inspected.stdout, 1).expect("an explanation offline");
    assert_eq!(
        Some(offline.clone()),
        explanation(&live.stdout, 1),
        "{}",
        inspected.stdout
    );
    assert!(offline.contains("null pointer dereference"), "{offline}");
    assert!(
        inspected
            .stdout
            .contains("  written     at the run's end (--core)")
    );
}

/// The nested fault of boxkernel-heap: the innermost exception still being handled, with the
/// outer one it interrupted, explained again from the core.
#[test]
fn inspect_explains_boxkernel_heap_nested_fault_from_the_core() {
    if kvm_or_skip("core_boxkernel_heap").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("heap.core");
    let live = vmm(&[
        "scenario",
        "boxkernel-heap",
        "--quiet",
        "--core",
        core.to_str().unwrap(),
    ]);
    assert_eq!(live.status, 0, "{}{}", live.stdout, live.stderr);
    let inspected = vmm(&["inspect", core.to_str().unwrap()]).stdout;
    let seq: u64 = inspected
        .lines()
        .filter(|l| l.starts_with('[') && l.contains("] vector 14"))
        .filter_map(|l| l[1..].split(']').next()?.parse().ok())
        .max()
        .expect("the nested #PF among the active exceptions");
    let offline = explanation(&inspected, seq).expect("its explanation");
    assert_eq!(
        Some(offline.clone()),
        explanation(&live.stdout, seq),
        "{inspected}"
    );
    assert!(offline.contains("physical address"), "{offline}");
    assert!(offline.contains("memset"), "{offline}");
}

#[test]
fn a_core_on_an_exception_is_taken_before_its_handler_runs() {
    if kvm_or_skip("core_on").is_none() || program_or_skip("core_on", "gdb", "gdb").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("journey.core");
    let path = core.to_str().unwrap();
    let live = vmm(&[
        "scenario",
        "journey",
        "--quiet",
        "--core",
        path,
        "--core-on",
        "pf",
    ]);
    assert_eq!(live.status, 0, "{}{}", live.stdout, live.stderr);
    let inspected = vmm(&["inspect", path]).stdout;
    assert!(
        inspected.contains(
            "  written     at exception [2] #PF page fault, before its handler ran (--core-on)"
        ),
        "{inspected}"
    );
    assert!(
        inspected.contains("  run         had not ended"),
        "{inspected}"
    );
    // journey's [1] is a #UD: the first #PF is [2]. gdb stands at its handler's entry, on the
    // guest's own first instruction (not the tap's trap byte).
    let text = gdb(&core, &["x/i $pc"]);
    assert!(text.contains("in guest_kernel::idt::vector_14"), "{text}");
    assert!(
        text.contains("vector_14") && text.contains(">:\tpush   $0xe"),
        "{text}"
    );
}

/// A triple fault: the chain of deliveries replayed from the core, as the live run replayed it.
#[test]
fn inspect_replays_a_triple_fault_from_the_core() {
    if kvm_or_skip("core_triple_fault").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("k32.core");
    let path = core.to_str().unwrap();
    let live = vmm(&[
        "scenario",
        "kernel32-triple-fault",
        "--quiet",
        "--core",
        path,
    ]);
    assert_eq!(live.status, 0, "{}{}", live.stdout, live.stderr);
    let inspected = vmm(&["inspect", path]).stdout;
    let chain = |text: &str, heading: &str| -> Vec<String> {
        text.lines()
            .skip_while(|l| !l.contains(heading))
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .map(String::from)
            .collect()
    };
    let offline = chain(&inspected, "how the CPU shut down (replayed from the core)");
    assert!(!offline.is_empty(), "{inspected}");
    assert_eq!(
        offline,
        chain(&live.stdout, "how the CPU shut down (each delivery")
    );
}

#[test]
fn inspect_refuses_what_is_not_a_core_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.core");
    common::assert_one_line_error(
        &vmm(&["inspect", missing.to_str().unwrap()]),
        "cannot read the core",
    );
    let kernel = common::guest_kernel();
    common::assert_one_line_error(&vmm(&["inspect", kernel]), "not a core (type 4)");
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    common::assert_one_line_error(
        &vmm(&["inspect", text.to_str().unwrap()]),
        "not a 64-bit ELF file",
    );
}

/// `inspect CORE --gdb PORT` serves the core: gdb reads its registers and memory, and the
/// monitor commands walk and explain on it; continuing says it cannot run.
#[test]
fn inspect_serves_a_core_to_gdb_with_the_monitor_commands() {
    if kvm_or_skip("core_gdb").is_none() || program_or_skip("core_gdb", "gdb", "gdb").is_none() {
        return;
    }
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("null.core");
    let path = core.to_str().unwrap();
    assert_eq!(
        vmm(&["scenario", "null-deref", "--quiet", "--core", path]).status,
        0
    );
    let mut server = common::vmm_host()
        .args(["inspect", path, "--gdb", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("vmm-host inspect --gdb");
    let mut stderr = BufReader::new(server.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.starts_with("gdb: the core is served"), "{line}");
    let addr = line
        .split("target remote ")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .expect("the address to connect to")
        .to_string();
    let connect = format!("target remote {addr}");
    let text = gdb_batch(
        None,
        &[
            &connect,
            "info registers cr2",
            "x/gx 0x10",
            "monitor walk 0x10",
            "monitor explain",
            "continue",
        ],
    );
    assert!(text.contains("cr2            0x10"), "{text}");
    assert!(
        text.contains("Cannot access memory at address 0x10"),
        "{text}"
    );
    assert!(
        text.contains("-> stops at the PT level: PTE[0] is not present"),
        "{text}"
    );
    assert!(
        text.contains("explanation  null pointer dereference"),
        "{text}"
    );
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(
        rest.contains("is a core: the guest as it stood cannot run on"),
        "{rest}"
    );
    assert!(server.wait().unwrap().success());
}
