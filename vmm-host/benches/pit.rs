//! What a ticking PIT costs the host: host CPU time (user + system, every thread of this
//! process) per second of guest time, for guest-kernel idling in `sti; hlt` with the PIT at
//! 100 Hz and at 1000 Hz, and for an interrupt-heavy run (a guest spinning with interrupts
//! on at 1000 Hz) with and without the tap. All as ratios against the same guest second
//! with no timer at all: a guest spinning with interrupts off, which costs the host one
//! busy vCPU thread. (A guest halted with no timer cannot be run for a second: the host ends
//! it at once as `idle`.) The configurations are interleaved in one run, so the machine's
//! noise hits them alike. Prints ratios, never asserts a time.
//!
//! `cargo bench -p vmm-host --bench pit` (needs /dev/kvm).

use std::time::Duration;
use vmm_host::vm::{AuditMode, Vm, VmConfig};

const ROUNDS: usize = 3;
/// Guest seconds each configuration runs for.
const SECONDS: u64 = 2;

/// One configuration: its name, command line, tap, and whether it ends by the watchdog.
struct Config {
    name: &'static str,
    cmdline: String,
    tap: bool,
    ends_by_timeout: bool,
}

fn configs() -> Vec<Config> {
    let timer = |name, test: &str, hz: u64, tap| Config {
        name,
        cmdline: format!("test={test} hz={hz} ticks={}", hz * SECONDS),
        tap,
        ends_by_timeout: false,
    };
    vec![
        Config {
            name: "no timer, spinning (baseline)",
            cmdline: "test=spin".into(),
            tap: true,
            ends_by_timeout: true,
        },
        timer("sti; hlt, PIT at 100 Hz", "timer", 100, true),
        timer("sti; hlt, PIT at 1000 Hz", "timer", 1000, true),
        timer("spinning, 1000 Hz, no tap", "timer-spin", 1000, false),
        timer("spinning, 1000 Hz, tap", "timer-spin", 1000, true),
    ]
}

/// Host CPU time this process has used so far (all threads).
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes only into the struct it is given, which is zeroed and ours.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.unsigned_abs())
            + Duration::from_micros(t.tv_usec.unsigned_abs())
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    guest: f64,
    cpu: f64,
    injected: u64,
}

impl Sample {
    fn cpu_per_guest_second(&self) -> f64 {
        self.cpu / self.guest
    }
}

fn run(config: &Config) -> Sample {
    let mut vm = Vm::new(VmConfig {
        kernel: vmm_host::GUEST_KERNEL_ELF.into(),
        symbols: None,
        boot: None,
        files: Default::default(),
        cpuid: Default::default(),
        clock: None,
        mem: 128 << 20,
        cmdline: config.cmdline.clone(),
        timeout: Duration::from_secs(if config.ends_by_timeout { SECONDS } else { 60 }),
        serial_log: None,
        serial_limit: vmm_host::console::DEFAULT_LIMIT,
        echo_serial: false,
        kvm_device: "/dev/kvm".into(),
        tap: config.tap,
        audit: AuditMode::Faults,
        report: None,
    })
    .expect("create VM");
    let before = cpu_time();
    let report = vm.run();
    let cpu = (cpu_time() - before).as_secs_f64();
    let expected = if config.ends_by_timeout { 84 } else { 0 };
    assert_eq!(report.exit_status(), expected, "{}: {report}", config.name);
    Sample {
        guest: report.elapsed.as_secs_f64(),
        cpu,
        injected: report.interrupts.iter().map(|(_, n)| n).sum(),
    }
}

fn median(samples: &[Sample]) -> Sample {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| {
        a.cpu_per_guest_second()
            .total_cmp(&b.cpu_per_guest_second())
    });
    sorted[sorted.len() / 2]
}

fn main() {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        println!("PIT benchmark skipped: /dev/kvm is not usable here");
        return;
    }
    let configs = configs();
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); configs.len()];
    for round in 0..ROUNDS {
        for (i, config) in configs.iter().enumerate() {
            let s = run(config);
            println!(
                "round {} {:<32} {:>5.2} s guest  {:>5.2} s host CPU  {:>6} IRQs injected",
                round + 1,
                config.name,
                s.guest,
                s.cpu,
                s.injected
            );
            samples[i].push(s);
        }
    }
    let medians: Vec<Sample> = samples.iter().map(|s| median(s)).collect();
    let baseline = medians[0].cpu_per_guest_second();
    println!("\nhost CPU per guest second (median of {ROUNDS}), against the baseline:");
    for (config, m) in configs.iter().zip(&medians) {
        println!(
            "  {:<32} {:>6.3} s/s  {:>6.3}×",
            config.name,
            m.cpu_per_guest_second(),
            m.cpu_per_guest_second() / baseline
        );
    }
    let tap = medians[4].cpu_per_guest_second() / medians[3].cpu_per_guest_second();
    println!("the tap on the interrupt-heavy run: {tap:.2}× its cost without the tap");
}
