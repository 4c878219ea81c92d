//! QEMU as an independent oracle: the very ELF vmm-host boots must boot under QEMU's own
//! loader (TCG, no KVM; QEMU takes the Multiboot header over the PVH note), print the same
//! banner, take the same exceptions, and exit through isa-debug-exit.

mod common;
use common::tcg::{Logged, exceptions_in, qemu_tcg};
use std::process::Command;

fn qemu_or_skip(test: &str) -> Option<()> {
    common::program_or_skip(test, "qemu-system-x86_64", "qemu-system-x86")
}

#[test]
fn qemu_tcg_boots_the_same_kernel() {
    let Some(()) = qemu_or_skip("qemu_tcg_boots_the_same_kernel") else {
        return;
    };
    let output = Command::new("timeout")
        .args([
            "60",
            "qemu-system-x86_64",
            "-accel",
            "tcg",
            "-display",
            "none",
            "-no-reboot",
            "-net",
            "none",
        ])
        .args(["-m", "128M", "-serial", "stdio", "-monitor", "none"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .args([
            "-kernel",
            vmm_host::GUEST_KERNEL_ELF,
            "-append",
            "test=hello",
        ])
        .output()
        .expect("spawn qemu");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(abi::exit::qemu_status(abi::exit::SUCCESS)),
        "{stdout}"
    );
    // QEMU's Multiboot loader, not ours: its information structure, its name, its command
    // line ("IMAGE ARGS"), its memory map.
    assert!(
        stdout.contains("guest-kernel 0.1.0: Multiboot entry at 0x100000, long mode"),
        "{stdout}"
    );
    assert!(stdout.contains(", from \"qemu\""), "{stdout}");
    assert!(stdout.contains("command line: \"test=hello\""), "{stdout}");
    assert!(stdout.contains("memory map (E820 at 0x500):"), "{stdout}");
    assert!(stdout.contains("hello from guest-kernel"), "{stdout}");
}

/// How QEMU boots the bundled kernel: its own Multiboot loader, or SeaBIOS reading the
/// bundled disk image (a snapshot: the build's image is never written).
#[derive(Debug, Clone, Copy)]
enum QemuBoot<'a> {
    Kernel {
        cmdline: &'a str,
    },
    Disk,
    /// The 32-bit test kernel, through QEMU's Multiboot loader.
    Kernel32 {
        cmdline: &'a str,
    },
}

impl QemuBoot<'_> {
    fn args(self) -> Vec<String> {
        match self {
            Self::Kernel { cmdline } => vec![
                "-kernel".into(),
                vmm_host::GUEST_KERNEL_ELF.into(),
                "-append".into(),
                cmdline.into(),
            ],
            Self::Kernel32 { cmdline } => vec![
                "-kernel".into(),
                vmm_host::GUEST_KERNEL32.into(),
                "-append".into(),
                cmdline.into(),
            ],
            Self::Disk => vec![
                "-drive".into(),
                format!(
                    "format=raw,snapshot=on,file={}",
                    vmm_host::GUEST_KERNEL_DISK
                ),
            ],
        }
    }
}

/// QEMU TCG running the bundled kernel with `cmdline` in `mem_mib` of RAM, its `-d int` log
/// in `log`; its output once it ends (at most two minutes).
fn qemu_logging_interrupts(
    mem_mib: u64,
    cmdline: &str,
    log: &std::path::Path,
) -> std::process::Output {
    qemu_booting(mem_mib, QemuBoot::Kernel { cmdline }, log)
}

/// QEMU TCG booting the bundled kernel as `boot` says, in `mem_mib` of RAM, its `-d int` log
/// in `log` (QEMU logs protected- and long-mode deliveries only, so a boot loader's real-mode
/// BIOS calls are not in it); its output once it ends (at most two minutes).
fn qemu_booting(mem_mib: u64, boot: QemuBoot, log: &std::path::Path) -> std::process::Output {
    qemu_tcg(&format!("{mem_mib}M"))
        .args(["-serial", "stdio", "-monitor", "none"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .args(["-d", "int,cpu_reset", "-D"])
        .arg(log)
        .args(boot.args())
        .output()
        .expect("spawn qemu")
}

/// "[kernel] exceptions taken: N, sequence digest 0x…" from the kernel's serial output.
fn kernel_digest(serial: &str) -> (u64, u64) {
    let line = serial
        .lines()
        .find_map(|l| l.strip_prefix("[kernel] exceptions taken: "))
        .unwrap_or_else(|| panic!("no digest line in:\n{serial}"));
    let (count, hash) = line
        .split_once(", sequence digest 0x")
        .expect("digest format");
    (
        count.parse().expect("count"),
        u64::from_str_radix(hash.trim(), 16).expect("hash"),
    )
}

/// The scenario's exception sequence under KVM (vmm-host) and under QEMU TCG must be the
/// same: same count, same digest over (vector, error code, CR2 of page faults), and the
/// digest QEMU's log gives must match what the kernel itself computed.
fn cross_check(name: &str) {
    if common::kvm_or_skip(name).is_none() || qemu_or_skip(name).is_none() {
        return;
    }
    let scenario = common::scenario(name);

    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("tap.jsonl");
    let kvm = common::vmm(&[
        "scenario",
        name,
        "--report",
        report.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(kvm.status, 0, "{}{}", kvm.stdout, kvm.stderr);
    let (kvm_count, kvm_hash) = kernel_digest(&kvm.stdout);
    let tapped = tap_sequence(&std::fs::read_to_string(&report).expect("report"));

    let log_path = dir.path().join("int.log");
    let boot = if scenario.boot == Some(vmm_host::loader::BootProtocol::Disk) {
        QemuBoot::Disk
    } else {
        QemuBoot::Kernel {
            cmdline: &scenario.cmdline,
        }
    };
    let output = qemu_booting(scenario.mem >> 20, boot, &log_path);
    let serial = String::from_utf8_lossy(&output.stdout);
    let log = std::fs::read_to_string(&log_path).expect("qemu -d int log");
    let logged = exceptions_in(&log);

    let mut digest = abi::trace::ExceptionDigest::new();
    for e in &logged {
        digest.record(e.vector, e.error, e.cr2);
    }
    assert_eq!(
        kernel_digest(&serial),
        (digest.count(), digest.hash()),
        "QEMU's log and the kernel under QEMU disagree"
    );
    assert_eq!(
        (kvm_count, kvm_hash),
        (digest.count(), digest.hash()),
        "KVM and QEMU took different exception sequences; QEMU's last: {:?}",
        logged.last()
    );

    // What the host's tap saw, exception by exception, against QEMU's log.
    assert_eq!(tapped.len(), logged.len(), "count of captured exceptions");
    for (i, (tap, qemu)) in tapped.iter().zip(&logged).enumerate() {
        assert_eq!(
            tap.normalised(),
            qemu.comparable(),
            "exception {} differs: tap {tap:?}, QEMU {qemu:?}",
            i + 1
        );
    }
}

/// One exception from the tap's JSON lines.
#[derive(Debug, Clone, Copy)]
struct Tapped {
    logged: Logged,
    cpl: Option<u64>,
}

impl Tapped {
    /// In QEMU's terms: `int 0x80` from ring 3 arrives here as #UD at the `int`, where QEMU
    /// delivers vector 0x80 at the same RIP.
    fn normalised(&self) -> Logged {
        let mut l = self.logged;
        if l.vector == 6 && self.cpl == Some(3) {
            l.vector = 0x80;
        }
        l.comparable()
    }
}

impl Logged {
    /// CR2 only means something for page faults (QEMU does not print it for `int n`).
    fn comparable(self) -> Logged {
        Logged {
            cr2: if self.vector == 14 { self.cr2 } else { 0 },
            ..self
        }
    }
}

fn tap_sequence(jsonl: &str) -> Vec<Tapped> {
    let hex = |v: &serde_json::Value| {
        u64::from_str_radix(v.as_str().expect("hex").trim_start_matches("0x"), 16).expect("hex")
    };
    jsonl
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json line"))
        .filter(|v| v["type"] == "exception")
        .map(|v| Tapped {
            logged: Logged {
                vector: v["vector"].as_u64().expect("vector") as u8,
                error: v["error"].as_u64().unwrap_or(0),
                cr2: hex(&v["cr2"]),
                rip: hex(&v["rip"]),
                // The tap sees an exception when its handler is reached.
                delivered: true,
            },
            cpl: v["cpl"].as_u64(),
        })
        .collect()
}

#[test]
fn boxkernel_heap_takes_the_same_exceptions_under_kvm_and_qemu() {
    cross_check("boxkernel-heap");
}

#[test]
fn boxkernel_nx_heap_takes_the_same_exceptions_under_kvm_and_qemu() {
    cross_check("boxkernel-nx-heap");
}

/// vmm-host's Multiboot loader against QEMU's, on a kernel that faults.
#[test]
fn multiboot_takes_the_same_exceptions_under_kvm_and_qemu() {
    cross_check("multiboot");
}

/// Under QEMU the text buffer is the VGA device's memory, not RAM: the same exceptions still.
#[test]
fn vga_takes_the_same_exceptions_under_kvm_and_qemu() {
    cross_check("vga");
}

/// The boot-sector image through the host's BIOS against SeaBIOS: stage1 and stage2 load the
/// same kernel bytes, and it takes the same exceptions.
#[test]
fn boxkernel_disk_takes_the_same_exceptions_under_kvm_and_qemu() {
    cross_check("boxkernel-disk");
}

#[test]
fn journey_takes_the_same_exceptions_under_kvm_and_qemu() {
    cross_check("journey");
}

#[test]
fn the_log_parser_reads_qemu_int_lines() {
    let log = "check_exception old: 0xffffffff new 0xe\n     \
               0: v=0e e=0006 i=0 cpl=3 IP=0023:0000555555554046 pc=0000555555554046 SP=001b:00007ffdfffffff8 CR2=0000716b326c8100\n\
               RAX=0000000000000000\n     \
               1: v=80 e=0000 i=1 cpl=3 IP=0023:0000555555554070 pc=0000555555554070 SP=001b:00007ffdfffffff8 env->regs[R_EAX]=000000000000003c\n";
    assert_eq!(
        exceptions_in(log),
        [
            Logged {
                vector: 14,
                error: 6,
                cr2: 0x716b_326c_8100,
                rip: 0x5555_5555_4046,
                delivered: true,
            },
            Logged {
                vector: 0x80,
                error: 0,
                cr2: 0,
                rip: 0x5555_5555_4070,
                delivered: true,
            }
        ]
    );
    // A #DE whose gate is not present: #NP while delivering it, folded into a #DF.
    let failed = "check_exception old: 0xffffffff new 0x0\n    \
                  10: v=00 e=0000 i=0 cpl=0 IP=0008:00000000002002e6 pc=00000000002002e6 SP=0010:0000000000206270 env->regs[R_EAX]=0000000000000001\n\
                  check_exception old: 0x0 new 0xb\n    \
                  11: v=08 e=0000 i=0 cpl=0 IP=0008:00000000002002e6 pc=00000000002002e6 SP=0010:0000000000206270 env->regs[R_EAX]=0000000000000001\n";
    let delivered: Vec<(u8, bool)> = exceptions_in(failed)
        .iter()
        .map(|e| (e.vector, e.delivered))
        .collect();
    assert_eq!(delivered, [(0, false), (8, true)]);
}

/// Interrupts QEMU's own PIC delivered at `vector`, from its `-d int` log ("Servicing
/// hardware INT=0x20").
fn hardware_interrupts(log: &str, vector: u8) -> usize {
    let wanted = format!("Servicing hardware INT={vector:#04x}");
    log.lines().filter(|l| l.trim() == wanted).count()
}

/// The injected count at `vector` in vmm-host's report (`IRQs   N injected: vector 0x20 ×N`).
fn injected(out: &str, vector: u8) -> u64 {
    let key = format!("vector {vector:#04x} ×");
    out.lines()
        .filter(|l| l.starts_with("  IRQs   "))
        .find_map(|l| {
            let rest = l.split(&key).nth(1)?;
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// QEMU TCG's PIC and PIT as the oracle for the host's: each timer workload ends with the
/// same exit code under both, and the interrupts go to the same vector (IRQ 0 at 0x20 after
/// the remap, at 0x08 through the #DF gate without it).
#[test]
fn timer_workloads_end_the_same_under_kvm_and_qemu() {
    let name = "timer_workloads_under_qemu";
    if common::kvm_or_skip(name).is_none() || qemu_or_skip(name).is_none() {
        return;
    }
    for (workload, code, vector, ticks) in [
        ("timer", abi::exit::SUCCESS, 0x20, 100..=102),
        (
            "timer-unremapped",
            abi::exit::UNHANDLED_EXCEPTION,
            0x08,
            1..=1,
        ),
    ] {
        let cmdline = format!("test={workload}");
        let kvm = common::vmm(&["run", "--cmdline", &cmdline]);
        assert_eq!(kvm.status, i32::from(code), "{}", kvm.stdout);
        let ours = injected(&kvm.stdout, vector);
        assert!(ticks.contains(&ours), "{workload}: {ours} injected");

        let dir = tempfile::tempdir().expect("tempdir");
        let log_path = dir.path().join("int.log");
        let output = qemu_logging_interrupts(128, &cmdline, &log_path);
        let serial = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            output.status.code(),
            Some(abi::exit::qemu_status(code)),
            "{workload} under QEMU: {serial}"
        );
        let log = std::fs::read_to_string(&log_path).expect("qemu -d int log");
        // QEMU's firmware takes its own ticks at 0x08 before the kernel runs: at least as
        // many as the kernel's.
        let theirs = hardware_interrupts(&log, vector);
        assert!(
            theirs >= usize::try_from(*ticks.start()).unwrap(),
            "{workload}: QEMU serviced {theirs} at {vector:#04x}"
        );
        let last = log
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix("Servicing hardware INT="));
        assert_eq!(
            last,
            Some(format!("{vector:#04x}").as_str()),
            "{workload}: the kernel's last interrupt under QEMU"
        );
    }
}

/// The 32-bit test kernel under QEMU TCG (its Multiboot loader, the a.out kludge) and under
/// vmm-host: the same serial lines, the same ten timer interrupts at 0x20, and one #DE at the
/// same EIP; under vmm-host each handler's 32-bit `iret` may be carried out by the host.
#[test]
fn kernel32_runs_the_same_under_kvm_and_qemu() {
    let name = "kernel32_under_qemu";
    if common::kvm_or_skip(name).is_none() || qemu_or_skip(name).is_none() {
        return;
    }
    let kvm = common::vmm(&["run", "--kernel", vmm_host::GUEST_KERNEL32]);
    assert_eq!(kvm.status, 4, "{}", kvm.stdout);
    assert_eq!(injected(&kvm.stdout, 0x20), 10, "{}", kvm.stdout);

    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("int.log");
    let output = qemu_booting(128, QemuBoot::Kernel32 { cmdline: "" }, &log_path);
    let serial = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(abi::exit::qemu_status(abi::exit::UNHANDLED_EXCEPTION)),
        "{serial}"
    );
    let kernel_lines = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("kernel32: "))
            .map(String::from)
            .collect()
    };
    let ours = kernel_lines(&kvm.stdout);
    assert_eq!(ours.len(), 5, "{}", kvm.stdout);
    assert_eq!(ours, kernel_lines(&serial), "the same lines, the same EIP");
    let log = std::fs::read_to_string(&log_path).expect("qemu -d int log");
    assert_eq!(hardware_interrupts(&log, 0x20), 10);
    let exceptions: Vec<Logged> = exceptions_in(&log)
        .into_iter()
        .filter(|e| e.vector < 32)
        .collect();
    assert_eq!(exceptions.len(), 1, "{exceptions:?}");
    let eip = format!("{:#010x}", exceptions[0].rip);
    assert_eq!(exceptions[0].vector, 0);
    assert!(ours[4].ends_with(&eip), "{} vs QEMU's {eip}", ours[4]);
}

/// At a triple fault vmm-host replays the deliveries from the final state; QEMU TCG logs
/// each one it made. The replay's attempts must be the last ones of QEMU's log (vector, error
/// code, CR2 of a page fault, RIP), and the exception its last delivery raised QEMU's last
/// `check_exception … new V` before "Triple fault". Two ways QEMU 7.2 departs from the SDM
/// in those error codes are compared around: it leaves the EXT bit (bit 0) out, and in long
/// mode it names an IDT gate as vector × 16 rather than the vector's index (vector × 8), so
/// #UD's gate past the limit is error 0x62 under QEMU and 0x33 by the SDM.
fn shutdown_chain_matches_qemu(name: &str, compare_cr2: bool) {
    shutdown_matches_qemu(name, compare_cr2, 16);
}

/// As [`shutdown_chain_matches_qemu`], with QEMU naming an IDT gate in an error code as
/// vector × `idt_stride` (16 in long mode, 8 in protected mode).
fn shutdown_matches_qemu(name: &str, compare_cr2: bool, idt_stride: u64) {
    if common::kvm_or_skip(name).is_none() || qemu_or_skip(name).is_none() {
        return;
    }
    let scenario = common::scenario(name);
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("chain.jsonl");
    let kvm = common::vmm(&["scenario", name, "--report", report.to_str().unwrap()]);
    assert_eq!(kvm.status, 0, "{}{}", kvm.stdout, kvm.stderr);
    let all: Vec<serde_json::Value> = std::fs::read_to_string(&report)
        .expect("report")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let records: Vec<&serde_json::Value> = all.iter().filter(|v| v["type"] == "delivery").collect();
    assert!(!records.is_empty(), "no delivery records:\n{}", kvm.stdout);
    let last = records.last().unwrap();
    assert_eq!(
        last["shutdown"], true,
        "the replay ends in a shutdown: {last}"
    );

    let log_path = dir.path().join("int.log");
    let boot = if scenario.kernel.as_deref() == Some(std::path::Path::new(vmm_host::GUEST_KERNEL32))
    {
        QemuBoot::Kernel32 {
            cmdline: &scenario.cmdline,
        }
    } else {
        QemuBoot::Kernel {
            cmdline: &scenario.cmdline,
        }
    };
    let output = qemu_booting(scenario.mem >> 20, boot, &log_path);
    let log = std::fs::read_to_string(&log_path).expect("qemu -d int log");
    assert!(
        log.contains("Triple fault"),
        "QEMU did not triple-fault:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let logged = exceptions_in(&log);
    // A loop counted live is compared; one the frames could not show is only reported.
    if let Some(found) = all
        .iter()
        .find(|v| v["type"] == "loop" && v["counted"] == "live")
    {
        loop_matches_qemu(found, &logged, &stack_pointers(&log));
    }
    assert!(logged.len() >= records.len(), "QEMU logged {logged:x?}");
    let tail = &logged[logged.len() - records.len()..];
    let hex = |v: &serde_json::Value| {
        v.as_str()
            .map(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex"))
    };
    for (&record, qemu) in records.iter().zip(tail) {
        let vector = record["vector"].as_u64().expect("vector");
        assert_eq!(
            vector,
            u64::from(qemu.vector),
            "{record} against QEMU's {qemu:x?}"
        );
        let error = record["error"].as_u64().unwrap_or(0);
        let qemu_error = if qemu.error & 2 != 0 {
            (qemu.error / idt_stride) << 3 | (qemu.error & 7)
        } else {
            qemu.error
        };
        assert_eq!(
            error & !1,
            qemu_error & !1,
            "{record} against QEMU's {qemu:x?}"
        );
        if vector == 14 && compare_cr2 {
            assert_eq!(
                hex(&record["cr2"]),
                Some(qemu.cr2),
                "{record} against {qemu:x?}"
            );
        }
    }
    let final_raise = log
        .lines()
        .take_while(|l| !l.starts_with("Triple fault"))
        .filter_map(|l| l.strip_prefix("check_exception old: "))
        .last()
        .and_then(|l| l.split("new 0x").nth(1))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .expect("QEMU's last check_exception");
    assert_eq!(
        last["raised"]["vector"].as_u64(),
        Some(final_raise),
        "{last}"
    );
}

/// SP at each exception of a `-d int` log, in the order of [`exceptions_in`].
fn stack_pointers(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|line| line.contains(": v="))
        .filter_map(|line| {
            let sp = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("SP="))?;
            u64::from_str_radix(sp.split(':').nth(1)?, 16).ok()
        })
        .collect()
}

/// The loop vmm-host counted live against QEMU's: the exception that started it (the one
/// before QEMU's run of exceptions at the handler) at the same RIP, and as many deliveries
/// once the place the stack gave out is accounted for. Where that is depends on what the TLB
/// still held after the loop's pushes overwrote the page tables (QEMU's TLB kept more), so
/// each 48 bytes between the two stacks' last frames is one delivery more for QEMU.
fn loop_matches_qemu(found: &serde_json::Value, logged: &[Logged], sps: &[u64]) {
    let hex = |v: &serde_json::Value| {
        u64::from_str_radix(v.as_str().expect("hex").trim_start_matches("0x"), 16).expect("hex")
    };
    let handler = hex(&found["handler"]);
    let at_handler = |e: &&Logged| e.rip == handler;
    let first = logged
        .iter()
        .position(|e| e.rip == handler)
        .expect("QEMU's loop");
    let origin = &logged[first - 1];
    assert_eq!(hex(&found["origin"]["rip"]), origin.rip, "{found}");
    let delivered = 1 + logged[first..]
        .iter()
        .filter(at_handler)
        .filter(|e| e.delivered)
        .count() as u64;
    let qemu_newest = sps[first..]
        .iter()
        .zip(&logged[first..])
        .filter(|(_, e)| e.rip == handler)
        .map(|(sp, _)| *sp)
        .next_back()
        .expect("SP");
    let newest = hex(&found["newest_frame"]);
    assert_eq!(
        (newest - qemu_newest) % 48,
        0,
        "{newest:#x} and QEMU's {qemu_newest:#x}"
    );
    let deliveries = found["deliveries"].as_u64().expect("count");
    assert_eq!(
        deliveries + (newest - qemu_newest) / 48,
        delivered,
        "{found}"
    );
}

#[test]
fn stack_overflow_without_ist_shuts_down_as_qemu_does() {
    shutdown_chain_matches_qemu("stack-overflow-no-ist", true);
}

#[test]
fn an_idt_limit_of_zero_shuts_down_as_qemu_does() {
    shutdown_chain_matches_qemu("hostile-idt-limit-zero", true);
}

/// A 32-bit kernel with an IDT of limit 0: the 8-byte gates' chain, as QEMU logs it.
#[test]
fn a_32_bit_kernel_with_an_empty_idt_shuts_down_as_qemu_does() {
    shutdown_matches_qemu("kernel32-triple-fault", true, 8);
}

/// The loop too: 40,295 #PF deliveries to the unmapped handler counted live here, 40,347 under
/// QEMU, whose stack went 52 frames further.
#[test]
fn an_unmapped_idt_handler_shuts_down_as_qemu_does() {
    shutdown_chain_matches_qemu("hostile-idt-unmapped", true);
}

/// Each #GP at the handler is delivered on the stack below the last (40,350 of them under
/// QEMU) until a push meets a page that is not present: where that is depends on the boot
/// (QEMU's Multiboot, vmm-host's PVH), so the page faults' CR2 differ; the chain does not.
#[test]
fn a_non_canonical_idt_handler_shuts_down_as_qemu_does() {
    shutdown_chain_matches_qemu("hostile-idt-noncanonical", false);
}
