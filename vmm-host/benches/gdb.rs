//! gdb against vmm-host's stub and against QEMU's gdbstub (TCG), same kernel, same gdb
//! commands, side by side in one run: `stepi` rate from kmain, and a 16 MiB
//! `dump binary memory`. Prints rates and ratios, never asserts a time.
//!
//! `cargo bench -p vmm-host --bench gdb` (needs /dev/kvm, gdb and qemu-system-x86_64).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

const STEPS: u32 = 2000;
const DUMP_START: u64 = 0x10_0000;
const DUMP_BYTES: u64 = 16 << 20;
const ROUNDS: usize = 3;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(1234)
}

fn start_vmm() -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmm-host"))
        .args([
            "run",
            "--quiet",
            "--cmdline",
            "test=hello",
            "--timeout",
            "300",
        ])
        .args(["--gdb", "127.0.0.1:0", "--gdb-wait"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vmm-host");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let addr = lines
        .find_map(|l| {
            l.ok()?
                .split_once("target remote ")
                .map(|(_, a)| a.trim_end_matches(['`', ')']).to_string())
        })
        .expect("vmm-host's gdb address");
    std::thread::spawn(move || lines.for_each(drop));
    (child, addr)
}

fn start_qemu() -> (Child, String) {
    let port = free_port();
    let child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-display",
            "none",
            "-no-reboot",
            "-net",
            "none",
        ])
        .args(["-m", "128M", "-serial", "null", "-monitor", "none"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .args([
            "-kernel",
            vmm_host::GUEST_KERNEL_ELF,
            "-append",
            "test=hello",
        ])
        .args(["-S", "-gdb", &format!("tcp:127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu-system-x86_64");
    std::thread::sleep(std::time::Duration::from_millis(500));
    (child, format!("127.0.0.1:{port}"))
}

/// What gdb measured against one stub.
#[derive(Debug, Clone, Copy)]
struct Measured {
    /// Seconds for `stepi STEPS`.
    stepi: f64,
    /// Seconds for the dump.
    dump: f64,
    /// CPU seconds gdb itself used during the `stepi`s.
    gdb_cpu: f64,
}

/// Times for `stepi STEPS` and for the dump, measured inside gdb.
fn measure(addr: &str) -> Measured {
    let script = format!(
        "import os, time\n\
         c = sum(os.times()[:2]); t = time.time(); gdb.execute('stepi {STEPS}', to_string=True)\n\
         s = time.time() - t; c = sum(os.times()[:2]) - c\n\
         t = time.time(); gdb.execute('dump binary memory /dev/null {DUMP_START:#x} {:#x}'); d = time.time() - t\n\
         print('MEASURED', s, d, c)\n",
        DUMP_START + DUMP_BYTES
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("measure.py");
    std::fs::write(&path, script).expect("script");
    let out = Command::new("gdb")
        .args(["-batch", "-nx", "-ex", "set confirm off"])
        .args(["-ex", &format!("file {}", vmm_host::GUEST_KERNEL_ELF)])
        .args(["-ex", &format!("target remote {addr}")])
        .args(["-ex", "break kmain", "-ex", "continue", "-ex", "delete"])
        .args(["-ex", &format!("source {}", path.display())])
        .args(["-ex", "kill"])
        .output()
        .expect("gdb");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.split_once("MEASURED").map(|(_, numbers)| numbers))
        .unwrap_or_else(|| {
            panic!(
                "gdb did not measure: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let mut numbers = line
        .split_whitespace()
        .map(|n| n.parse::<f64>().unwrap_or(f64::NAN));
    let mut next = || numbers.next().unwrap_or(f64::NAN);
    Measured {
        stepi: next(),
        dump: next(),
        gdb_cpu: next(),
    }
}

fn main() {
    let mut ours = Vec::new();
    let mut qemu = Vec::new();
    for round in 1..=ROUNDS {
        let (mut child, addr) = start_vmm();
        ours.push(measure(&addr));
        let _ = child.wait();
        let (mut child, addr) = start_qemu();
        qemu.push(measure(&addr));
        let _ = child.kill();
        let _ = child.wait();
        let (o, q) = (ours[round - 1], qemu[round - 1]);
        println!(
            "round {round}: stepi {:.3} s vs {:.3} s, dump {:.3} s vs {:.3} s (vmm-host vs qemu-tcg)",
            o.stepi, q.stepi, o.dump, q.dump
        );
    }
    let median = |pick: fn(&Measured) -> f64, of: &[Measured]| {
        let mut v: Vec<f64> = of.iter().map(pick).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (os, od) = (median(|m| m.stepi, &ours), median(|m| m.dump, &ours));
    let (qs, qd) = (median(|m| m.stepi, &qemu), median(|m| m.dump, &qemu));
    let gdb_cpu = median(|m| m.gdb_cpu, &ours);
    let steps = f64::from(STEPS);
    let mib = DUMP_BYTES as f64 / f64::from(1 << 20);
    println!("stepi from kmain, {STEPS} steps (median of {ROUNDS}):");
    println!("  vmm-host  {:>8.0} steps/s", steps / os);
    println!("  qemu-tcg  {:>8.0} steps/s", steps / qs);
    println!("  ratio     {:>8.2}x  (target >= 2x)", qs / os);
    // gdb works between a stop reply and its next request, so its own CPU time per step
    // bounds any stub's rate from above.
    println!(
        "  gdb's own CPU per stepi {:.0} us: no stub can pass {:.0} steps/s ({:.2}x qemu-tcg)",
        gdb_cpu / steps * 1e6,
        steps / gdb_cpu,
        qs / gdb_cpu
    );
    println!("dump binary memory, {mib} MiB (median of {ROUNDS}):");
    println!("  vmm-host  {:>8.1} MiB/s", mib / od);
    println!("  qemu-tcg  {:>8.1} MiB/s", mib / qd);
    println!("  ratio     {:>8.2}x  (target >= 1x)", qd / od);
}
