//! The GDB stub with the real gdb in batch mode: what a kernel developer types, and what
//! they must see. Plus a raw client sending hostile packets.

mod common;
use common::kvm_or_skip;
use common::remote::{Host, exchange, packet};
use std::io::Read;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

const BOXKERNEL_NX: &str = "test=heap vmm=boxkernel-nx log=quiet";
const IDENTITY_HEAP: &str = "test=heap vmm=identity4g log=quiet";

/// The value gdb's `info registers NAME` printed.
fn register(out: &str, name: &str) -> u64 {
    out.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(name)?.trim_start();
            u64::from_str_radix(rest.split_whitespace().next()?.strip_prefix("0x")?, 16).ok()
        })
        .unwrap_or_else(|| panic!("no {name} in: {out}"))
}

fn gdb_or_skip(test: &str) -> Option<()> {
    kvm_or_skip(test)?;
    common::program_or_skip(test, "gdb", "gdb")
}

#[test]
fn break_on_gp_stops_at_the_faulting_instruction_and_shows_what_the_host_sees() {
    if gdb_or_skip("break_on_gp").is_none() {
        return;
    }
    let host = Host::start(BOXKERNEL_NX, &["--gdb-wait", "--break-on", "gp"]);
    let out = host.gdb(&[
        "continue",
        "x/i $pc",
        "info registers rip cr2 cr3 efer",
        "monitor walk rip",
        "monitor explain",
        "monitor regs",
        "monitor idt",
        "monitor gdt",
        "monitor history 2",
        "monitor catch",
        "monitor maps",
        "detach",
    ]);
    assert!(
        out.contains("Program received signal SIGSEGV, Segmentation fault."),
        "{out}"
    );
    // The faulting instruction, not the handler: mov rax, [r12+rax*8].
    assert!(
        out.lines().any(|l| l.starts_with("=> 0x")
            && l.contains("vmm_get_or_create_table")
            && l.contains("mov    (%r12,%rax,8),%rax")),
        "{out}"
    );
    assert!(
        out.contains("efer           0xd00               [ NXE LMA LME ]"),
        "{out}"
    );
    let cr3 = register(&out, "cr3");
    // The walk names each level with index, table, entry and flags.
    assert!(
        out.lines().any(
            |l| l.starts_with(&format!("  PML4 [  0]  table {cr3:#012x}  entry 0x"))
                && l.ends_with("P RW A")
        ),
        "{out}"
    );
    assert!(
        out.contains("r12 = 0x8000000000")
            && out.contains("is a page-table entry value used as a pointer"),
        "{out}"
    );
    assert!(
        out.contains("EFER   0x0000000000000d00  SCE=0 LME LMA NXE")
            || out.contains("EFER   0x0000000000000d00"),
        "{out}"
    );
    assert!(out.contains("vector 13: interrupt gate"), "{out}");
    assert!(out.contains("code 64-bit readable ring 0"), "{out}");
    assert!(out.contains("#GP  err 0x0"), "{out}");
    assert!(out.contains("vectors that stop the guest: gp"), "{out}");
    // `maps` lists what is mapped; the findings belong to `audit`.
    assert!(
        out.contains("identity map: 0x0-0x4000000 (64 MiB)"),
        "{out}"
    );
    assert!(out.contains("recursive slot: none"), "{out}");
    assert!(!out.contains("W+X"), "{out}");
    // Detached, the guest goes on: its own #GP handler reports and exits with 4.
    let (status, stdout, stderr) = host.finish();
    assert_eq!(status, 4, "{stdout}{stderr}");
    assert!(
        stderr.contains("gdb: detached; the guest runs on to its end"),
        "{stderr}"
    );
}

#[test]
fn breakpoint_stepping_and_a_register_write_on_boxkernel_nx() {
    if gdb_or_skip("breakpoint_stepping").is_none() {
        return;
    }
    let host = Host::start(BOXKERNEL_NX, &["--gdb-wait"]);
    let out = host.gdb(&[
        "break guest_kernel::vmm::vmm_get_or_create_table",
        "continue",
        "delete",
        "stepi 100",
        "p/x $pc",
        "set $rbx = 0x1234abcd",
        "maint flush register-cache",
        "p/x $rbx",
        "stepi",
        "hbreak guest_kernel::vmm::vmm_get_or_create_table",
        "continue",
        "info registers rip",
        "kill",
    ]);
    assert!(
        out.contains("Breakpoint 1, guest_kernel::vmm::vmm_get_or_create_table"),
        "{out}"
    );
    assert!(
        out.contains("$2 = 0x1234abcd"),
        "the write reached the vCPU: {out}"
    );
    assert!(
        out.contains("Breakpoint 2, guest_kernel::vmm::vmm_get_or_create_table"),
        "the hardware breakpoint fires on the next call: {out}"
    );
    let (status, stdout, stderr) = host.finish();
    assert_eq!(status, 87, "killed from gdb: {stdout}{stderr}");
}

/// gdb's Python: `stepi` one at a time from the first call of `vmm_get_or_create_table`,
/// printing RIP and RSP after each step.
const STEP_TRACE: &str = "\
steps = []
for _ in range(100):
    gdb.execute('stepi', to_string=True)
    steps.append('%x/%x' % (int(gdb.parse_and_eval('$pc')), int(gdb.parse_and_eval('$rsp'))))
print('TRACE ' + ' '.join(steps))
";

fn step_trace(addr: &str, script: &std::path::Path) -> Vec<String> {
    let out = common::remote::gdb_at(
        addr,
        &[
            "break guest_kernel::vmm::vmm_get_or_create_table",
            "continue",
            "delete",
            &format!("source {}", script.display()),
            "kill",
        ],
    );
    out.lines()
        .find_map(|l| l.strip_prefix("TRACE "))
        .unwrap_or_else(|| panic!("no step trace in: {out}"))
        .split(' ')
        .map(String::from)
        .collect()
}

#[test]
fn a_hundred_stepis_run_the_instructions_qemu_runs() {
    if gdb_or_skip("stepi_like_qemu").is_none()
        || common::program_or_skip("stepi_like_qemu", "qemu-system-x86_64", "qemu-system-x86")
            .is_none()
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("trace.py");
    std::fs::write(&script, STEP_TRACE).unwrap();
    let host = Host::start(BOXKERNEL_NX, &["--gdb-wait"]);
    let ours = step_trace(&host.addr, &script);
    host.finish();
    let qemu = common::remote::Qemu::start(BOXKERNEL_NX, "256M");
    let theirs = step_trace(&qemu.addr, &script);
    assert_eq!(ours.len(), 100);
    let distinct: std::collections::HashSet<&String> = ours.iter().collect();
    assert!(distinct.len() > 20, "the steps go somewhere: {ours:?}");
    if let Err(why) = same_steps(&ours, &theirs) {
        panic!("{why}\nvmm-host: {ours:?}\nQEMU: {theirs:?}");
    }
}

/// Whether our step trace is QEMU's, step by step. QEMU TCG's gdbstub now and then answers a
/// `stepi` over a locked instruction (`xchg` with memory) without running it, so QEMU may
/// repeat a position ours does not: up to three such repeats are skipped in QEMU's trace
/// only, so a step of ours that ran nothing (or two instructions) still fails.
fn same_steps(ours: &[String], theirs: &[String]) -> Result<(), String> {
    let mut skipped = 0;
    let mut j = 0;
    for (step, a) in ours.iter().enumerate() {
        while theirs.get(j) != Some(a) && j > 0 && theirs.get(j) == theirs.get(j - 1) && skipped < 3
        {
            skipped += 1;
            j += 1;
        }
        match theirs.get(j) {
            Some(b) if b == a => j += 1,
            Some(b) => {
                return Err(format!(
                    "step {}: vmm-host at rip/rsp {a}, QEMU at {b}",
                    step + 1
                ));
            }
            None if step + skipped >= theirs.len() => return Ok(()),
            None => return Err(format!("QEMU's trace ended at step {}", step + 1)),
        }
    }
    Ok(())
}

#[test]
fn step_traces_tolerate_only_qemus_own_repeats() {
    let t = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert!(same_steps(&t(&["a", "b", "c"]), &t(&["a", "b", "c"])).is_ok());
    // QEMU stood still once at b: skipped.
    assert!(same_steps(&t(&["a", "b", "c"]), &t(&["a", "b", "b", "c"])).is_ok());
    // Ours stood still (a step that ran nothing): a failure.
    assert!(same_steps(&t(&["a", "a", "b"]), &t(&["a", "b", "c"])).is_err());
    // Ours ran two instructions in one step: a failure.
    assert!(same_steps(&t(&["a", "c", "d"]), &t(&["a", "b", "c"])).is_err());
}

#[test]
fn a_watchpoint_on_a_heap_word_fires_and_physical_reads_equal_virtual_ones() {
    if gdb_or_skip("watchpoint").is_none() {
        return;
    }
    let host = Host::start(IDENTITY_HEAP, &["--gdb-wait", "--timeout", "60"]);
    let out = host.gdb(&[
        "set language c",
        "watch *(unsigned long *)0xffff800000085aa0",
        "continue",
        "delete",
        "python import re",
        "python v = bytes(gdb.selected_inferior().read_memory(0xffff800000085aa0, 8))",
        "python w = gdb.execute('monitor walk 0xffff800000085aa0', to_string=True)",
        "python p = int(re.search(r'-> (0x[0-9a-f]+) ', w).group(1), 16)",
        "maint packet Qqemu.PhyMemMode:1",
        "python print('phys', hex(p), 'equal' if bytes(gdb.selected_inferior().read_memory(p, 8)) == v else 'DIFFERENT')",
        "x/gx 0xffff800000085aa0",
        "maint packet Qqemu.PhyMemMode:0",
        "detach",
    ]);
    assert!(out.contains("Hardware watchpoint 1"), "{out}");
    assert!(out.contains("Old value = <unreadable>"), "{out}");
    assert!(out.contains("New value = 1663341876833526392"), "{out}");
    assert!(
        out.contains("heap_workload") && out.contains("src/workloads.rs:"),
        "stops after the write: {out}"
    );
    assert!(out.contains(" equal"), "{out}");
    assert!(
        out.contains("Cannot access memory at address 0xffff800000085aa0"),
        "in physical mode the virtual address is no RAM: {out}"
    );
    let (status, stdout, stderr) = host.finish();
    assert_eq!(status, 0, "{stdout}{stderr}");
}

#[test]
fn ctrl_c_interrupts_a_running_guest() {
    if gdb_or_skip("interrupt").is_none() {
        return;
    }
    let host = Host::start(IDENTITY_HEAP, &["--gdb-wait", "--timeout", "60"]);
    let mut gdb = Command::new("gdb")
        .args(["-batch", "-nx", "-ex", "set confirm off"])
        .args(["-ex", &format!("file {}", vmm_host::GUEST_KERNEL_ELF)])
        .args(["-ex", &format!("target remote {}", host.addr)])
        .args([
            "-ex",
            "continue",
            "-ex",
            "monitor history 1",
            "-ex",
            "detach",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gdb");
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: kill(2) on the gdb child we spawned, with SIGINT (what Ctrl-C sends).
    unsafe { libc::kill(gdb.id() as i32, libc::SIGINT) };
    let mut out = String::new();
    gdb.stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .ok();
    gdb.stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut out)
        .ok();
    let _ = gdb.wait();
    assert!(out.contains("Program received signal SIGINT"), "{out}");
    assert!(out.contains("exceptions captured; the last 1:"), "{out}");
    let (status, stdout, stderr) = host.finish();
    assert_eq!(
        status, 0,
        "detached, the heap run completes: {stdout}{stderr}"
    );
}

#[test]
fn hostile_packets_get_errors_and_a_second_client_is_refused() {
    if kvm_or_skip("hostile_packets").is_none() {
        return;
    }
    let host = Host::start(BOXKERNEL_NX, &["--gdb-wait"]);
    let mut gdb = TcpStream::connect(&host.addr).expect("connect");
    gdb.set_read_timeout(Some(Duration::from_secs(30))).ok();
    assert_eq!(exchange(&mut gdb, "$g#00"), "-", "bad checksum");
    assert_eq!(
        exchange(&mut gdb, &packet("qSupported")),
        "+$E01#a6",
        "malformed"
    );
    assert!(exchange(&mut gdb, &packet("qSupported:multiprocess+")).contains("PacketSize="));
    // Unmapped, non-canonical and huge reads are errors, not zeros and not a crash.
    assert!(exchange(&mut gdb, &packet("mffff900000000000,10")).starts_with("+$E"));
    assert!(exchange(&mut gdb, &packet("m8000000000000000,8")).starts_with("+$E"));
    assert_eq!(
        exchange(&mut gdb, &packet("m0,ffffffffffffffff")),
        "+$E22#a9"
    );
    // A read running off the end of RAM returns what there is.
    let tail = exchange(&mut gdb, &packet("mfffff00,200"));
    assert!(tail.starts_with("+$") && !tail.starts_with("+$E"), "{tail}");
    assert!(exchange(&mut gdb, &packet("Z0,ffff900000000000,1")).starts_with("+$E"));
    let oversized = exchange(&mut gdb, &packet(&"X".repeat(300_000)));
    assert!(oversized.contains("$E16"), "{oversized}");
    assert!(
        exchange(&mut gdb, &packet("G00")).starts_with("+$E"),
        "short G"
    );
    // The session is still alive and sane.
    let stop = exchange(&mut gdb, &packet("?"));
    assert!(
        stop.starts_with("+$T05") || stop.starts_with("+$S05"),
        "{stop}"
    );
    // Nobody else gets in while a client is attached.
    assert!(
        TcpStream::connect(&host.addr).is_err(),
        "second client refused"
    );
    exchange(&mut gdb, &packet("D"));
    let (status, stdout, stderr) = host.finish();
    assert_eq!(status, 4, "{stdout}{stderr}");
}

#[test]
fn the_repository_command_file_connects_and_the_python_helpers_take_gdb_expressions() {
    if gdb_or_skip("connect_gdb").is_none() {
        return;
    }
    let host = Host::start(BOXKERNEL_NX, &["--gdb-wait", "--break-on", "gp"]);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root");
    let port = host.addr.rsplit(':').next().expect("a port").to_string();
    let mut cmd = Command::new("timeout");
    cmd.current_dir(root)
        .args(["120", "gdb", "-batch", "-nx"])
        .args(["-ex", &format!("set $vmm_port = {port}")]);
    // connect.gdb finds the kernel under target/ itself; a relocated target dir needs `file`.
    if !root
        .join("target/guest-kernel/x86_64-unknown-none/release/guest-kernel")
        .exists()
    {
        cmd.args(["-ex", &format!("file {}", vmm_host::GUEST_KERNEL_ELF)]);
    }
    cmd.args(["-x", "gdb/connect.gdb"]);
    for c in [
        "continue",
        "info registers cr3",
        "vmm walk $pc",
        "vmm-pte $pc",
        "vmm phys $cr3 8",
        "vmm",
        "detach",
    ] {
        cmd.args(["-ex", c]);
    }
    let out = cmd.output().expect("run gdb");
    let out =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // Symbols came from the file connect.gdb loaded.
    assert!(
        out.contains("Program received signal SIGSEGV")
            && out.contains("guest_kernel::vmm::vmm_get_or_create_table (ctx="),
        "{out}"
    );
    // `vmm walk $pc` passed the expression's value to the monitor.
    let cr3 = register(&out, "cr3");
    assert!(out.contains("walk of 0x10"), "{out}");
    assert!(
        out.contains(&format!("PML4 [  0]  table {cr3:#012x}  entry 0x")),
        "{out}"
    );
    // `vmm-pte` shows only the last level: the PT entry indexed by bits 20..12 of $pc.
    let pc = out
        .split("walk of 0x")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .unwrap_or_else(|| panic!("no walk of $pc: {out}"));
    let leaf = format!("PT   [{:>3}]", (pc >> 12) & 0x1ff);
    let pte = out
        .lines()
        .find(|l| l.starts_with(&leaf))
        .unwrap_or_else(|| panic!("no leaf entry line `{leaf}`: {out}"));
    assert!(pte.contains("table 0x"), "{pte}");
    assert!(
        out.contains(&format!("{cr3:016x}  23 ")),
        "`vmm phys $cr3 8` dumps the PML4's first entry: {out}"
    );
    assert!(
        out.contains("monitor commands"),
        "`vmm` alone is help: {out}"
    );
    let (status, stdout, stderr) = host.finish();
    assert_eq!(status, 4, "{stdout}{stderr}");
}

#[test]
fn a_triple_fault_stops_with_the_final_state_before_the_run_ends() {
    if gdb_or_skip("triple_fault").is_none() {
        return;
    }
    let host = Host::start("test=triple-fault", &["--gdb-wait"]);
    let out = host.gdb(&[
        "continue",
        "x/i $pc",
        "info registers cr3",
        "monitor chain",
        "continue",
    ]);
    // The CPU shut down on the ud2 after the guest emptied its IDT: gdb sees where, and
    // `monitor chain` replays the deliveries that failed.
    assert!(
        out.contains("Program received signal SIGABRT, Aborted."),
        "{out}"
    );
    assert!(out.contains("ud2"), "x/i $pc shows the instruction: {out}");
    assert_ne!(register(&out, "cr3"), 0, "{out}");
    for step in [
        "[1] #UD: `ud2` raises #UD",
        "delivering it raised #GP error 0x33: #UD's gate (vector 6) lies past the IDT limit 0x0",
        "[3] #DF error 0x0: #GP while delivering #GP",
        "a fault while delivering #DF: the CPU shuts down (triple fault)",
    ] {
        assert!(out.contains(step), "monitor chain: no {step:?} in {out}");
    }
    assert!(
        out.contains("Program terminated with signal SIGABRT, Aborted."),
        "continuing after the final state ends the session: {out}"
    );
    let (status, stdout, stderr) = host.finish();
    assert_eq!(status, 80, "{stdout}{stderr}");
    assert!(stdout.contains("triple fault"), "{stdout}");
}

#[test]
fn break_on_an_interrupt_vector_stops_before_each_delivery() {
    if gdb_or_skip("break_on_an_interrupt_vector").is_none() {
        return;
    }
    let host = Host::start("test=timer", &["--gdb-wait", "--break-on", "0x20"]);
    let out = host.gdb(&[
        "continue",
        "x/i $pc",
        "monitor pic",
        "continue",
        "monitor catch none",
        "detach",
    ]);
    assert_eq!(
        out.matches("Program received signal SIGTRAP").count(),
        2,
        "a stop before each of two ticks:\n{out}"
    );
    // The guest stands where the tick interrupts it, in the timer's wait, not in a handler.
    assert!(
        out.lines()
            .any(|l| l.starts_with("=> 0x") && l.contains("timer_workload")),
        "{out}"
    );
    // Acknowledged at the PIC (in service), not yet delivered.
    assert!(
        out.contains("master (0x20): vectors 0x20-0x27  IMR 0xfe  IRR 0x00  ISR 0x01"),
        "{out}"
    );
    assert!(out.contains("vectors that stop the guest: none"), "{out}");
    // Every tick held for gdb was delivered: the guest counts its 100 and exits 0.
    let (status, stdout, stderr) = host.finish();
    assert_eq!(status, 0, "{stdout}{stderr}");
    assert!(
        stderr.contains("gdb: detached; the guest runs on to its end"),
        "{stderr}"
    );
}

/// The diagnosis's `next` command reaches the exception it diagnosed: run once, take the
/// `[N]` and RIP it names, rerun under gdb with `--break-at N` (and nothing else caught),
/// and gdb stands at that RIP.
#[test]
fn the_diagnosis_rerun_stops_gdb_at_the_exception_it_names() {
    if gdb_or_skip("diagnosis_rerun").is_none() {
        return;
    }
    let first = common::vmm(&["run", "--quiet", "--cmdline", "test=null"]);
    let fault = first
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("  fault   ["))
        .unwrap_or_else(|| panic!("no diagnosis: {}", first.stdout));
    let (seq, rest) = fault.split_once(']').unwrap();
    let rip = rest
        .split("at rip ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap();
    let next = format!("--gdb 1234 --gdb-wait --break-at {seq}");
    assert!(first.stdout.contains(&next), "{}", first.stdout);
    assert!(
        first.stdout.contains("  cause   null pointer dereference"),
        "{}",
        first.stdout
    );

    let host = Host::start(
        "test=null",
        &["--gdb-wait", "--break-on", "none", "--break-at", seq],
    );
    let out = host.gdb(&["continue", "p/x $pc", "kill"]);
    assert!(out.contains("Program received signal SIGSEGV"), "{out}");
    assert!(out.contains(&format!("= {rip}")), "gdb at {rip}:\n{out}");
    host.finish();
}

/// A 32-bit kernel under gdb: the stub describes the i386 layout, so `x/i $pc` disassembles
/// 32-bit code and the registers have their 32-bit names (QEMU's x86-64 stub offers only the
/// 64-bit layout). kernel32 is an ELF64 holding 32-bit code, so gdb is told `set architecture
/// i386` before `file` (an ELF32 kernel needs nothing).
#[test]
fn a_32_bit_kernel_shows_32_bit_code_and_registers() {
    if gdb_or_skip("a_32_bit_kernel").is_none() {
        return;
    }
    // kernel32 is an ELF64 holding 32-bit code: the default layout follows the file (x86-64),
    // so it asks for i386.
    let k32 = [
        "--kernel",
        vmm_host::GUEST_KERNEL32,
        "--gdb-wait",
        "--gdb-arch",
        "i386",
    ];
    let host = Host::start("", &k32);
    let file = format!("file {}", vmm_host::GUEST_KERNEL32);
    let out = common::remote::gdb_with(
        &host.addr,
        &["set architecture i386", &file],
        &[
            "x/24i $pc",
            "info registers eip cr0 efer",
            "continue",
            "x/i $pc",
            "info registers eax ecx eip cs",
            "set $eax = 7",
            "p/x $eax",
            "detach",
        ],
    );
    assert!(!out.contains("not compatible"), "{out}");
    assert!(out.contains("=> 0x200020 <kernel32_start>:\tcli"), "{out}");
    // Decoded as 64-bit code, 0x50 would be `push %rax` and 0x41 a REX prefix.
    assert!(out.contains("\tpush   %eax"), "{out}");
    assert!(out.contains("\tinc    %ecx"), "{out}");
    assert!(
        out.contains("cr0            0x11                [ ET PE ]"),
        "{out}"
    );
    assert!(
        out.contains("Program received signal SIGFPE, Arithmetic exception."),
        "{out}"
    );
    // At the #DE: the 32-bit registers by name, and a write that takes.
    assert!(out.contains("<k32_divide>:\tdiv    %ecx"), "{out}");
    assert_eq!(register(&out, "ecx"), 0);
    assert_eq!(register(&out, "eax"), 1);
    assert!(out.contains("$1 = 0x7"), "{out}");
    let (status, stdout, stderr) = host.finish();
    // Detached with EAX = 7: the divide still faults and the handler exits with 4.
    assert_eq!(status, 4, "{stdout}{stderr}");
}
