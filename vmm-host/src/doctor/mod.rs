//! `vmm-host doctor`: measure what this host's KVM can do, with throw-away VMs, instead of
//! assuming it. Later parts of the host (the exception tap, gdb breakpoints) ask
//! [`Capabilities`] which mechanism to use.

mod emulator;
mod machine;
pub(crate) mod probes;

use crate::hypervisor;
use std::fmt;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Yes,
    No,
    /// A number, not a yes/no question.
    Measured,
    /// The probe itself could not run.
    Error,
    /// Not tried, because something it needs is missing.
    Skipped,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Self::Yes => "yes",
            Self::No => "no",
            Self::Measured => "--",
            Self::Error => "err",
            Self::Skipped => "skip",
        }
    }
}

/// One measured capability and what was seen.
#[derive(Debug, Clone)]
pub struct Probe {
    pub name: &'static str,
    pub verdict: Verdict,
    pub evidence: String,
}

/// What the host's KVM was measured to do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Capabilities {
    pub kvm: bool,
    pub cpuid: bool,
    pub long_mode_switch: bool,
    pub single_step: bool,
    pub hw_breakpoints: bool,
    /// A code breakpoint on a handler that is not mapped fires before the fetch faults.
    pub breakpoint_on_unmapped_handler: bool,
    /// Write watchpoints in DR0–DR3 report a debug exit.
    pub data_breakpoints: bool,
    /// `int3` with KVM_GUESTDBG_USE_SW_BP exits to the host (false on nested KVM here).
    pub int3_breakpoints: bool,
    pub ring3_iretq: bool,
    /// `int n` from ring 3 reaches vector n (on nested KVM here it arrives as #UD).
    pub int_n_from_ring3: bool,
    /// `syscall` from ring 3 lands at LSTAR in ring 0.
    pub syscall_from_ring3: bool,
    /// `int n` in real mode goes through the IVT and `iret` returns (boot sectors' BIOS calls).
    pub int_n_in_real_mode: bool,
    /// A 32-bit kernel can turn on 2-level and PAE paging (false on nested KVM here).
    pub paging_32: bool,
    /// Exceptions delivered through task gates (hardware task switches).
    pub task_gates: bool,
    /// CR4.LA57 (5-level paging) offered to guests.
    pub la57: bool,
    pub pio_exit_micros: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct DoctorReport {
    pub probes: Vec<Probe>,
    pub capabilities: Capabilities,
}

/// Run every probe against the KVM at `device`.
pub fn examine(device: &Path) -> DoctorReport {
    let mut caps = Capabilities::default();
    let access_name = "/dev/kvm access";
    let kvm = match hypervisor::open(device) {
        Ok(kvm) => kvm,
        Err(e) => {
            let probes = vec![
                Probe {
                    name: access_name,
                    verdict: Verdict::No,
                    evidence: e.to_string(),
                },
                Probe {
                    name: "other probes",
                    verdict: Verdict::Skipped,
                    evidence: "they need KVM".into(),
                },
            ];
            return DoctorReport {
                probes,
                capabilities: caps,
            };
        }
    };
    caps.kvm = true;
    let mut probes = vec![
        Probe {
            name: access_name,
            verdict: Verdict::Yes,
            evidence: format!("opened {} read-write", device.display()),
        },
        Probe {
            name: "KVM API version",
            verdict: Verdict::Yes,
            evidence: format!("{}", kvm.get_api_version()),
        },
    ];
    let mut measure = |probe: Probe, flag: &mut bool| {
        *flag = probe.verdict == Verdict::Yes;
        probes.push(probe);
    };
    measure(probes::cpuid(&kvm), &mut caps.cpuid);
    measure(probes::mode_switch(&kvm), &mut caps.long_mode_switch);
    measure(probes::single_step(&kvm), &mut caps.single_step);
    measure(probes::hw_breakpoint(&kvm), &mut caps.hw_breakpoints);
    measure(
        probes::breakpoint_on_unmapped_handler(&kvm),
        &mut caps.breakpoint_on_unmapped_handler,
    );
    measure(probes::data_breakpoint(&kvm), &mut caps.data_breakpoints);
    measure(probes::int3(&kvm), &mut caps.int3_breakpoints);
    measure(probes::ring3_iretq(&kvm), &mut caps.ring3_iretq);
    measure(probes::int_n_from_ring3(&kvm), &mut caps.int_n_from_ring3);
    measure(
        probes::syscall_from_ring3(&kvm),
        &mut caps.syscall_from_ring3,
    );
    measure(
        probes::int_n_in_real_mode(&kvm),
        &mut caps.int_n_in_real_mode,
    );
    measure(probes::paging_32(&kvm), &mut caps.paging_32);
    measure(probes::task_gate(&kvm), &mut caps.task_gates);
    measure(probes::la57(&kvm), &mut caps.la57);
    probes.push(emulator::ring0_instructions(&kvm));
    let (pio, micros) = probes::pio_round_trip(&kvm);
    probes.push(pio);
    caps.pio_exit_micros = micros;
    DoctorReport {
        probes,
        capabilities: caps,
    }
}

impl fmt::Display for DoctorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "vmm-host doctor: what this host's KVM does, measured with throw-away VMs"
        )?;
        let width = self
            .probes
            .iter()
            .map(|p| p.name.chars().count())
            .max()
            .unwrap_or(0);
        for p in &self.probes {
            let pad = width - p.name.chars().count();
            writeln!(
                f,
                "  {:<4} {}{}  {}",
                p.verdict.word(),
                p.name,
                " ".repeat(pad),
                p.evidence
            )?;
        }
        Ok(())
    }
}

/// Whether the KVM at `device` runs 32-bit kernels with paging on (2-level and PAE). Probed
/// once per device and process (the suite asks for each scenario); false where the device
/// cannot be opened.
pub fn runs_32_bit_paging(device: &Path) -> bool {
    probed_once(device, "32-bit paging", probes::paging_32)
}

/// Whether the KVM at `device` delivers exceptions through 32-bit task gates. Probed once per
/// device and process.
pub fn runs_task_gates(device: &Path) -> bool {
    probed_once(device, "task gates", probes::task_gate)
}

/// Whether `probe` says yes on the KVM at `device`, measured the first time it is asked.
fn probed_once(device: &Path, name: &'static str, probe: fn(&kvm_ioctls::Kvm) -> Probe) -> bool {
    type Measured = std::collections::HashMap<(std::path::PathBuf, &'static str), bool>;
    static MEASURED: std::sync::Mutex<Option<Measured>> = std::sync::Mutex::new(None);
    let mut measured = MEASURED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let key = (device.to_path_buf(), name);
    *(measured.get_or_insert_default())
        .entry(key)
        .or_insert_with(|| {
            hypervisor::open(device).is_ok_and(|kvm| probe(&kvm).verdict == Verdict::Yes)
        })
}

/// The tap's trap byte on this machine: `int3` where a throw-away VM shows KVM reports it
/// as a debug exit, `hlt` otherwise. Probed once per process.
pub fn trap_kind(kvm: &kvm_ioctls::Kvm) -> crate::tap::TrapKind {
    static KIND: std::sync::OnceLock<crate::tap::TrapKind> = std::sync::OnceLock::new();
    *KIND.get_or_init(|| match probes::int3(kvm).verdict {
        Verdict::Yes => crate::tap::TrapKind::Int3,
        _ => crate::tap::TrapKind::Hlt,
    })
}
