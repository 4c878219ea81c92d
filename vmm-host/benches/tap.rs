//! What the exception tap costs: the heap workload of a fixed variant (24,576 demand-paging
//! faults, `log=quiet`) with no tap, with the tap recording only, and with the tap plus the
//! per-fault analysis (walks, decode, explanation, diff), interleaved in one run so the
//! machine's noise hits all three alike. Prints ratios, never asserts a time.
//!
//! `cargo bench -p vmm-host --bench tap` (needs /dev/kvm).

use std::time::Duration;
use vmm_host::vm::{AuditMode, Vm, VmConfig};

const ROUNDS: usize = 3;
const CMDLINE: &str = "test=heap vmm=identity4g log=quiet";

#[derive(Debug, Clone, Copy)]
struct Sample {
    seconds: f64,
    exits: u64,
    captured: u64,
}

fn run(tap: bool, audit: AuditMode) -> Sample {
    let mut vm = Vm::new(VmConfig {
        kernel: vmm_host::GUEST_KERNEL_ELF.into(),
        symbols: None,
        boot: None,
        files: Default::default(),
        cpuid: Default::default(),
        clock: None,
        mem: 256 << 20,
        cmdline: CMDLINE.into(),
        timeout: Duration::from_secs(300),
        serial_log: None,
        serial_limit: vmm_host::console::DEFAULT_LIMIT,
        echo_serial: false,
        kvm_device: "/dev/kvm".into(),
        tap,
        audit,
        report: None,
    })
    .expect("create VM");
    let report = vm.run();
    assert_eq!(report.exit_status(), 0, "{report}");
    Sample {
        seconds: report.elapsed.as_secs_f64(),
        exits: report.vm_exits,
        captured: vm.exceptions().total,
    }
}

fn median(samples: &[Sample]) -> Sample {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    sorted[sorted.len() / 2]
}

fn main() {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        println!("tap benchmark skipped: /dev/kvm is not usable here");
        return;
    }
    let configs = [
        ("no tap", false, AuditMode::Off),
        ("tap, --audit off", true, AuditMode::Off),
        ("tap, --audit faults", true, AuditMode::Faults),
    ];
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); configs.len()];
    for round in 0..ROUNDS {
        for (i, (name, tap, audit)) in configs.iter().enumerate() {
            let sample = run(*tap, *audit);
            println!(
                "round {} {name:<20} {:>7.2} s  {:>7} exits  {:>6} exceptions captured",
                round + 1,
                sample.seconds,
                sample.exits,
                sample.captured
            );
            samples[i].push(sample);
        }
    }
    let base = median(&samples[0]);
    println!("\nmedians of {ROUNDS} interleaved rounds, `{CMDLINE}`:");
    for (i, (name, _, _)) in configs.iter().enumerate() {
        let m = median(&samples[i]);
        let per_exception = if m.captured > 0 {
            format!(
                "{:>6.1} µs and {:.2} extra exits per captured exception",
                (m.seconds - base.seconds) * 1e6 / m.captured as f64,
                (m.exits as f64 - base.exits as f64) / m.captured as f64
            )
        } else {
            String::new()
        };
        println!(
            "  {name:<20} {:>7.2} s  {:>5.2}x  {per_exception}",
            m.seconds,
            m.seconds / base.seconds
        );
    }
}
