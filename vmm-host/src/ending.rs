//! How a run ended, the exit status each ending maps to, and the block that reports it.

use crate::cpu_state::CpuState;
use std::fmt;
use std::time::Duration;

/// Exit statuses of `vmm-host` (docs/exit-status.md lists them for people).
pub mod status {
    /// `scenario`: the run did not match the scenario's expectations.
    pub const SCENARIO_FAILED: i32 = 1;
    /// Bad input: usage, a missing or malformed file, no KVM access, an impossible --mem.
    pub const BAD_INPUT: i32 = 2;
    /// `scenario NAME`: the host's KVM cannot do what the scenario needs (automake's "skip").
    pub const SCENARIO_SKIPPED: i32 = 77;
    /// The guest triple-faulted (KVM_EXIT_SHUTDOWN).
    pub const TRIPLE_FAULT: i32 = 80;
    /// KVM could not enter the guest (KVM_EXIT_FAIL_ENTRY).
    pub const ENTRY_FAILURE: i32 = 81;
    /// KVM gave up on the guest (KVM_EXIT_INTERNAL_ERROR), e.g. an instruction it cannot emulate.
    pub const INTERNAL_ERROR: i32 = 82;
    /// The guest executed `hlt` with interrupts disabled: nothing can ever wake it.
    pub const HALTED: i32 = 83;
    /// The watchdog ended a guest that ran past --timeout.
    pub const TIMEOUT: i32 = 84;
    /// The host failed while the guest ran (a KVM call failed, an unknown VM exit).
    pub const HOST_ERROR: i32 = 85;
    /// The guest executed `hlt` with interrupts enabled, but nothing will raise an interrupt
    /// (no PIT tick can reach an unmasked line of an initialised PIC).
    pub const IDLE: i32 = 86;
    /// gdb killed the guest (`kill`, or quitting gdb while attached).
    pub const KILLED: i32 = 87;
    /// The guest reset the machine (the i8042's 0xFE command, port 0x92's fast reset).
    pub const RESET: i32 = 88;
    /// The guest asked the BIOS for a keystroke (int 16h AH=00h), and there is no keyboard.
    pub const KEY_WAIT: i32 = 89;
    /// Real-mode code raised an exception its IVT sends to the BIOS, which has no handler.
    pub const REAL_MODE_EXCEPTION: i32 = 90;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The guest wrote its exit code to the debug-exit port.
    GuestExit {
        code: u8,
    },
    TripleFault,
    EntryFailure {
        reason: u64,
        cpu: u32,
    },
    InternalError {
        suberror: u32,
        data: Vec<u64>,
    },
    Halted {
        interrupts_enabled: bool,
    },
    Timeout {
        limit: Duration,
    },
    HostError {
        what: String,
    },
    /// gdb ended the run.
    Killed,
    /// The guest reset the machine; `how` says by what.
    Reset {
        how: &'static str,
    },
    /// A boot sector asked the host's BIOS for a key (int 16h AH=00h/10h) from `caller`
    /// (CS:IP after its `int`); no keystroke can ever come.
    WaitsForKey {
        caller: String,
    },
    /// Real-mode code raised exception `vector` at `at` (CS:IP, the instruction's text when it
    /// decodes), and its IVT entry is the BIOS's: no handler of the guest's runs. A PC BIOS
    /// returns from it, so a fault would repeat for ever.
    RealModeException {
        vector: u8,
        at: String,
        instruction: Option<String>,
    },
}

impl Ending {
    pub fn exit_status(&self) -> i32 {
        match self {
            Self::GuestExit { code } => i32::from(*code),
            Self::TripleFault => status::TRIPLE_FAULT,
            Self::EntryFailure { .. } => status::ENTRY_FAILURE,
            Self::InternalError { .. } => status::INTERNAL_ERROR,
            Self::Halted {
                interrupts_enabled: false,
            } => status::HALTED,
            Self::Halted {
                interrupts_enabled: true,
            } => status::IDLE,
            Self::Timeout { .. } => status::TIMEOUT,
            Self::HostError { .. } => status::HOST_ERROR,
            Self::Killed => status::KILLED,
            Self::Reset { .. } => status::RESET,
            Self::WaitsForKey { .. } => status::KEY_WAIT,
            Self::RealModeException { .. } => status::REAL_MODE_EXCEPTION,
        }
    }

    /// What the diagnosis makes of this ending, with the vCPU's final `state` and the place
    /// `location_at` names at an address (a timeout says where the guest ran).
    pub fn diagnosed_as(
        &self,
        state: Option<&CpuState>,
        location_at: &dyn Fn(u64) -> Option<String>,
    ) -> crate::diagnosis::RunEnd {
        use crate::diagnosis::RunEnd;
        match (self, state) {
            (Self::GuestExit { code: 0 }, _) => RunEnd::Clean,
            (Self::TripleFault, _) => RunEnd::TripleFault,
            (Self::Timeout { limit }, Some(state)) => RunEnd::Timeout {
                limit: seconds(*limit),
                rip: state.regs.rip,
                place: location_at(state.regs.rip),
            },
            _ => RunEnd::Other,
        }
    }

    /// The word scenarios use for this kind of ending.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::GuestExit { .. } => "exit",
            Self::TripleFault => "triple-fault",
            Self::EntryFailure { .. } => "entry-failure",
            Self::InternalError { .. } => "internal-error",
            Self::Halted {
                interrupts_enabled: false,
            } => "halted",
            Self::Halted {
                interrupts_enabled: true,
            } => "idle",
            Self::Timeout { .. } => "timeout",
            Self::HostError { .. } => "host-error",
            Self::Killed => "killed",
            Self::Reset { .. } => "reset",
            Self::WaitsForKey { .. } => "key-wait",
            Self::RealModeException { .. } => "real-mode-exception",
        }
    }

    /// One line saying what happened.
    pub fn headline(&self) -> String {
        match self {
            Self::GuestExit { code } => format!("the guest exited with code {code}"),
            Self::TripleFault => "triple fault: the CPU shut down (KVM_EXIT_SHUTDOWN)".into(),
            Self::EntryFailure { reason, cpu } => {
                format!("KVM could not enter the guest on CPU {cpu}: hardware entry failure reason {reason:#x}{}", entry_failure_name(*reason))
            }
            Self::InternalError { suberror, .. } => {
                format!("KVM internal error, suberror {suberror} ({})", internal_error_name(*suberror))
            }
            Self::Halted { interrupts_enabled: false } => {
                "the guest executed hlt with interrupts disabled: nothing can wake it".into()
            }
            Self::Halted { interrupts_enabled: true } => {
                "the guest executed hlt waiting for an interrupt, but nothing will raise one (no timer on an unmasked IRQ)".into()
            }
            Self::Timeout { limit } => format!("watchdog: the guest was still running after {}", seconds(*limit)),
            Self::HostError { what } => format!("host error: {what}"),
            Self::Killed => "gdb killed the guest".into(),
            Self::Reset { how } => format!("the guest reset the machine through {how}"),
            Self::WaitsForKey { caller } => format!("the guest waits for a key (int 16h, called from {caller}), and vmm-host has no keyboard"),
            Self::RealModeException { vector, at, instruction } => format!(
                "{} in real mode at {at}{}: the guest's IVT sends it to the BIOS, which has no handler for it (a PC BIOS returns from it, so a fault repeats for ever)",
                abi::exception::name(*vector),
                instruction.as_ref().map(|i| format!(" (`{i}`)")).unwrap_or_default(),
            ),
        }
    }
}

fn internal_error_name(suberror: u32) -> &'static str {
    match suberror {
        1 => "instruction emulation failed",
        2 => "exception while delivering an exception",
        3 => "error while delivering an event",
        4 => "unexpected exit reason",
        _ => "unknown suberror",
    }
}

fn entry_failure_name(reason: u64) -> &'static str {
    match reason {
        33 => " (VMX: invalid guest state)",
        34 => " (VMX: MSR loading)",
        41 => " (VMX: machine check)",
        u64::MAX => " (SVM: VMEXIT_INVALID, invalid guest state)",
        _ => "",
    }
}

pub fn seconds(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Everything known about a finished run.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub ending: Ending,
    /// The vCPU at the end; `None` for a clean guest exit, or if it could not be read.
    pub state: Option<CpuState>,
    pub elapsed: Duration,
    pub vm_exits: u64,
    /// Port and MMIO accesses that hit no device, with the first one described.
    pub stray_accesses: u64,
    pub first_stray: Option<String>,
    /// The last POST codes the guest wrote to port 0x80, oldest first.
    pub post_codes: Vec<u8>,
    /// The VGA text screen at the end, unless it was blank.
    pub screen: Option<crate::screen::Screen>,
    /// External interrupts the host injected: (vector, count), by vector.
    pub interrupts: Vec<(u8, u64)>,
    /// Both PICs programmed with this one vector base.
    pub pic_shared_base: Option<u8>,
    /// What the host's BIOS served, when a disk image booted.
    pub bios: Option<crate::bios::BiosReport>,
    /// Instructions KVM could not emulate that the host carried out: (name, count).
    pub carried_out: Vec<(&'static str, u64)>,
    /// The answer first: the exception the run died of, why, where, and what to type next.
    pub diagnosis: Option<crate::diagnosis::Diagnosis>,
    pub serial_dropped: u64,
    /// The serial limit the run had, for the note on dropped bytes.
    pub serial_limit: u64,
}

impl RunReport {
    pub fn exit_status(&self) -> i32 {
        self.ending.exit_status()
    }

    /// For a run KVM stopped because it could not emulate an instruction: which one, and
    /// how a kernel gets past it.
    fn emulation_hint(&self, state: &CpuState) -> Option<String> {
        let Ending::InternalError { suberror: 1, .. } = self.ending else {
            return None;
        };
        let crate::cpu_state::Code::Decoded { bytes, .. } = &state.code else {
            return None;
        };
        crate::emulation::hint(bytes, state.regs.rip, state.mode().bitness())
    }
}

impl RunReport {
    /// The lines about the machine around the guest: stray accesses, interrupts, the PICs,
    /// the BIOS, and instructions the host carried out.
    fn write_machine(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.stray_accesses > 0 {
            writeln!(
                f,
                "  note   {} accesses reached no device (first: {})",
                self.stray_accesses,
                self.first_stray.as_deref().unwrap_or("?")
            )?;
        }
        if !self.interrupts.is_empty() {
            let total: u64 = self.interrupts.iter().map(|(_, n)| n).sum();
            let each: Vec<String> = self
                .interrupts
                .iter()
                .map(|(vector, n)| format!("vector {vector:#04x} ×{n}"))
                .collect();
            writeln!(f, "  IRQs   {total} injected: {}", each.join(", "))?;
            if let Some((vector, _)) = self.interrupts.iter().find(|(v, _)| *v < 32) {
                writeln!(
                    f,
                    "  note   interrupts arrived at vector {vector:#04x}, which the CPU uses for {}: \
                     the PIC was not remapped (ICW2); move its vectors above 0x1f",
                    abi::exception::mnemonic(*vector)
                )?;
            }
        }
        if let Some(base) = self.pic_shared_base {
            writeln!(
                f,
                "  note   both PICs deliver at vectors {base:#04x}-{:#04x}: IRQ n and IRQ n+8 share a vector, \
                 so a handler cannot tell which line (or which chip to EOI) it serves; give the slave its own 8 vectors (ICW2)",
                base + 7
            )?;
        }
        if let Some(bios) = &self.bios {
            write!(f, "{bios}")?;
        }
        if !self.carried_out.is_empty() {
            let total: u64 = self.carried_out.iter().map(|(_, n)| n).sum();
            let each: Vec<String> = self
                .carried_out
                .iter()
                .map(|(name, n)| format!("{name} ×{n}"))
                .collect();
            writeln!(
                f,
                "  note   the host carried out {total} instructions KVM could not emulate: {}",
                each.join(", ")
            )?;
        }
        Ok(())
    }
}

impl RunReport {
    /// The headline, the status line and the diagnosis (`--brief`).
    pub fn brief(&self) -> String {
        let mut text = format!(
            "== run ended: {}\n  status {}   time {}   VM exits {}\n",
            self.ending.headline(),
            self.exit_status(),
            seconds(self.elapsed),
            self.vm_exits
        );
        if let Some(diagnosis) = &self.diagnosis {
            text.push_str(&diagnosis.to_string());
        }
        text
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "== run ended: {}", self.ending.headline())?;
        writeln!(
            f,
            "  status {}   time {}   VM exits {}",
            self.exit_status(),
            seconds(self.elapsed),
            self.vm_exits
        )?;
        if let Ending::InternalError { data, .. } = &self.ending
            && !data.is_empty()
        {
            let words: Vec<String> = data.iter().map(|d| format!("{d:#x}")).collect();
            writeln!(f, "  data   {}", words.join(" "))?;
        }
        if let Some(diagnosis) = &self.diagnosis {
            write!(f, "{diagnosis}")?;
        }
        if let Some(state) = &self.state {
            writeln!(f, "{state}")?;
            if let Some(hint) = self.emulation_hint(state) {
                writeln!(f, "  hint   {hint}")?;
            }
        }
        self.write_machine(f)?;
        if !self.post_codes.is_empty() {
            let codes: Vec<String> = self
                .post_codes
                .iter()
                .map(|c| format!("{c:#04x}"))
                .collect();
            writeln!(f, "  POST   last codes at port 0x80: {}", codes.join(" "))?;
        }
        if let Some(screen) = &self.screen {
            writeln!(
                f,
                "-- screen when the run ended (80×25 text at 0xb8000, cursor {})",
                crate::screen::cursor_words(screen.cursor)
            )?;
            writeln!(f, "{screen}")?;
        }
        if self.serial_dropped > 0 {
            writeln!(
                f,
                "  note   {} bytes of serial output past the {} limit were not kept (--serial-limit)",
                self.serial_dropped,
                crate::layout::human(self.serial_limit)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ending_has_its_own_status() {
        let endings = [
            Ending::TripleFault,
            Ending::EntryFailure { reason: 33, cpu: 0 },
            Ending::InternalError {
                suberror: 1,
                data: vec![],
            },
            Ending::Halted {
                interrupts_enabled: false,
            },
            Ending::Halted {
                interrupts_enabled: true,
            },
            Ending::Timeout {
                limit: Duration::from_secs(1),
            },
            Ending::HostError { what: "x".into() },
            Ending::Killed,
            Ending::Reset { how: "x" },
            Ending::WaitsForKey {
                caller: "0000:7c10".into(),
            },
        ];
        let mut statuses: Vec<i32> = endings.iter().map(Ending::exit_status).collect();
        statuses.extend([
            status::BAD_INPUT,
            status::SCENARIO_FAILED,
            status::SCENARIO_SKIPPED,
            i32::from(abi::exit::PANIC),
        ]);
        let count = statuses.len();
        statuses.sort();
        statuses.dedup();
        assert_eq!(statuses.len(), count, "statuses collide");
        assert_eq!(Ending::GuestExit { code: 7 }.exit_status(), 7);
    }

    #[test]
    fn every_kvm_failure_reason_is_named() {
        let internal = |suberror| {
            Ending::InternalError {
                suberror,
                data: vec![],
            }
            .headline()
        };
        assert!(internal(2).ends_with("(exception while delivering an exception)"));
        assert!(internal(3).ends_with("(error while delivering an event)"));
        assert!(internal(4).ends_with("(unexpected exit reason)"));
        assert!(internal(9).ends_with("(unknown suberror)"));
        let entry = |reason| Ending::EntryFailure { reason, cpu: 1 }.headline();
        assert!(entry(34).ends_with("reason 0x22 (VMX: MSR loading)"));
        assert!(entry(41).ends_with("(VMX: machine check)"));
        assert!(entry(u64::MAX).ends_with("(SVM: VMEXIT_INVALID, invalid guest state)"));
        assert!(entry(7).ends_with("reason 0x7"), "{}", entry(7));
    }

    #[test]
    fn the_notes_appear_only_when_there_is_something_to_note() {
        let mut report = RunReport {
            ending: Ending::GuestExit { code: 0 },
            state: None,
            elapsed: Duration::from_millis(100),
            vm_exits: 3,
            stray_accesses: 0,
            first_stray: None,
            post_codes: Vec::new(),
            screen: None,
            interrupts: Vec::new(),
            pic_shared_base: None,
            bios: None,
            carried_out: vec![],
            diagnosis: None,
            serial_dropped: 0,
            serial_limit: 16 << 10,
        };
        assert!(!report.to_string().contains("note"), "{report}");
        report.stray_accesses = 1;
        report.serial_dropped = 1;
        let text = report.to_string();
        assert!(
            text.contains("  note   1 accesses reached no device (first: ?)"),
            "{text}"
        );
        assert!(
            text.contains("  note   1 bytes of serial output past the 16 KiB limit were not kept"),
            "{text}"
        );
    }

    #[test]
    fn report_block_names_the_ending() {
        let report = RunReport {
            ending: Ending::InternalError {
                suberror: 1,
                data: vec![0x1, 0xcc],
            },
            state: None,
            elapsed: Duration::from_millis(250),
            vm_exits: 12,
            stray_accesses: 2,
            first_stray: Some("in from port 0x378".into()),
            post_codes: vec![0x10, 0xaa],
            screen: None,
            interrupts: vec![(0x20, 99), (0x21, 1)],
            pic_shared_base: Some(0x20),
            bios: None,
            carried_out: vec![],
            diagnosis: None,
            serial_dropped: 0,
            serial_limit: 0,
        };
        assert_eq!(
            report.to_string(),
            "== run ended: KVM internal error, suberror 1 (instruction emulation failed)\n  status 82   time 0.25 s   VM exits 12\n  data   0x1 0xcc\n  note   2 accesses reached no device (first: in from port 0x378)\n  IRQs   100 injected: vector 0x20 ×99, vector 0x21 ×1\n  note   both PICs deliver at vectors 0x20-0x27: IRQ n and IRQ n+8 share a vector, so a handler cannot tell which line (or which chip to EOI) it serves; give the slave its own 8 vectors (ICW2)\n  POST   last codes at port 0x80: 0x10 0xaa\n"
        );
        let entry = Ending::EntryFailure { reason: 33, cpu: 0 }.headline();
        assert_eq!(
            entry,
            "KVM could not enter the guest on CPU 0: hardware entry failure reason 0x21 (VMX: invalid guest state)"
        );
    }
}
