//! What the tap records per exception, and how it tells a nested exception from the next one.

use crate::addr::Gva;
use abi::exception::{self, PfBits, PfError, SelectorError};
use kvm_bindings::kvm_regs;
use std::fmt;

/// The exception frame the CPU pushed, read at the handler's entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Frame {
    /// Where the frame is: RSP at the handler's first instruction.
    pub at: Gva,
    pub error: Option<u64>,
    pub rip: Gva,
    pub cs: u16,
    pub rflags: u64,
    pub rsp: Gva,
    pub ss: u16,
    /// Pushed in real mode, where CS is a segment (CPL 0 whatever its low bits).
    pub real_mode: bool,
}

impl Frame {
    /// Privilege level of the code the exception interrupted.
    pub fn cpl(&self) -> u8 {
        if self.real_mode {
            0
        } else {
            (self.cs & 3) as u8
        }
    }

    /// Decode the qwords at the handler's RSP.
    pub fn parse(at: Gva, words: &[u64; 6], has_error: bool) -> Self {
        let (error, rest) = if has_error {
            (Some(words[0]), &words[1..6])
        } else {
            (None, &words[0..5])
        };
        Self {
            at,
            error,
            rip: Gva::new(rest[0]),
            cs: crate::narrow::low_u16(rest[1]),
            rflags: rest[2],
            rsp: Gva::new(rest[3]),
            ss: crate::narrow::low_u16(rest[4]),
            real_mode: false,
        }
    }

    /// Decode the dwords at a 32-bit handler's ESP. Without a privilege change the CPU pushes
    /// no SS:ESP: the interrupted ESP is just above the frame, and SS is `ss` (the current).
    pub fn parse32(at: Gva, words: &[u32; 6], has_error: bool, ss: u16) -> Self {
        let (error, rest) = if has_error {
            (Some(u64::from(words[0])), &words[1..6])
        } else {
            (None, &words[0..5])
        };
        let cs = crate::narrow::low_u16(u64::from(rest[1]));
        let pushed = if has_error { 16 } else { 12 };
        let (rsp, ss) = if cs & 3 == 0 {
            (Gva::new(at.raw() + pushed), ss)
        } else {
            (
                Gva::new(u64::from(rest[3])),
                crate::narrow::low_u16(u64::from(rest[4])),
            )
        };
        Self {
            at,
            error,
            rip: Gva::new(u64::from(rest[0])),
            cs,
            rflags: u64::from(rest[2]),
            rsp,
            ss,
            real_mode: false,
        }
    }
}

impl Frame {
    /// Decode real mode's frame at SS:SP (`at`, linear): IP, CS and FLAGS, 16 bits each, no
    /// error code. The interrupted SP (an offset in SS) is just above it.
    pub fn parse16(at: Gva, words: [u16; 3], ss: u16, sp: u64) -> Self {
        Self {
            at,
            error: None,
            rip: Gva::new(u64::from(words[0])),
            cs: words[1],
            rflags: u64::from(words[2]),
            rsp: Gva::new(sp.wrapping_add(6) & 0xffff),
            ss,
            real_mode: true,
        }
    }

    /// The frame of an exception delivered through a task gate: the error code (if any) on
    /// the new task's stack at `at`; the interrupted CS:EIP, EFLAGS and SS:ESP in the TSS of
    /// the task it interrupted.
    pub fn from_task(at: Gva, error: Option<u64>, interrupted: &super::task::Tss32) -> Self {
        Self {
            at,
            error,
            rip: Gva::new(u64::from(interrupted.eip)),
            cs: interrupted.cs,
            rflags: u64::from(interrupted.eflags),
            rsp: Gva::new(u64::from(interrupted.esp())),
            ss: interrupted.ss,
            real_mode: false,
        }
    }
}

/// Control registers at the moment the handler was entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ControlRegisters {
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}

impl ControlRegisters {
    /// The control registers of a vCPU's system registers.
    pub fn of(sregs: &kvm_bindings::kvm_sregs) -> Self {
        Self {
            cr0: sregs.cr0,
            cr2: sregs.cr2,
            cr3: sregs.cr3,
            cr4: sregs.cr4,
            efer: sregs.efer,
        }
    }

    /// The bitness of code running with these registers: 64 in long mode, 32 in protected
    /// mode (kernels' code segments are 32-bit there), 16 in real mode.
    pub fn bitness(&self) -> u32 {
        use x86_64::registers::control::Cr0Flags;
        use x86_64::registers::model_specific::EferFlags;
        if self.efer & EferFlags::LONG_MODE_ACTIVE.bits() != 0 {
            64
        } else if self.cr0 & Cr0Flags::PROTECTED_MODE_ENABLE.bits() != 0 {
            32
        } else {
            16
        }
    }
}

/// One exception the guest took.
#[derive(Debug, Clone)]
pub struct ExceptionRecord {
    /// 1 for the first exception of the run.
    pub seq: u64,
    pub vector: u8,
    /// Several vectors share this handler; `vector` is the lowest of them.
    pub shared_handler: bool,
    pub handler: Gva,
    /// `None` when the frame could not be read (the reason is in `frame_error`).
    pub frame: Option<Frame>,
    pub frame_error: Option<String>,
    pub control: ControlRegisters,
    /// General registers as the interrupted code left them (RIP, RSP, RFLAGS from the frame).
    pub regs: kvm_regs,
    /// The segment bases addresses were formed with (FS and GS in long mode; all six in
    /// protected and real mode).
    pub segments: crate::registers::SegmentBases,
    /// 1 at top level, 2 for an exception raised while handling another, and so on.
    pub depth: usize,
    /// Sequence numbers of the exceptions being handled when this one came, outermost first.
    pub outer: Vec<u64>,
}

impl ExceptionRecord {
    /// The general registers at the exception, by the names instructions use.
    pub fn registers(&self) -> crate::registers::RegisterFile<'_> {
        crate::registers::RegisterFile {
            regs: &self.regs,
            segments: self.segments,
        }
    }

    pub fn error(&self) -> Option<u64> {
        self.frame.and_then(|f| f.error)
    }

    pub fn rip(&self) -> Gva {
        Gva::new(self.regs.rip)
    }

    pub fn cpl(&self) -> Option<u8> {
        self.frame.map(|f| f.cpl())
    }

    pub fn is_page_fault(&self) -> bool {
        self.vector == exception::PAGE_FAULT
    }

    /// The error code in words, or `None` for vectors without one.
    pub fn error_text(&self) -> Option<String> {
        let error = self.error()?;
        Some(if self.is_page_fault() {
            format!("{error:#x} ({}: {})", PfBits(error), PfError(error))
        } else if exception::has_selector_error(self.vector) {
            format!("{error:#x} ({})", SelectorError(error))
        } else {
            format!("{error:#x}")
        })
    }
}

/// One line: "#14 #PF page fault  error 0x6 (…)  rip 0x…  cr2 0x…  depth 1".
impl fmt::Display for ExceptionRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] vector {} ({})",
            self.seq,
            self.vector,
            exception::name(self.vector)
        )?;
        if let Some(error) = self.error_text() {
            write!(f, ", error {error}")?;
        }
        write!(f, " at rip {}", self.rip())?;
        if let Some(cpl) = self.cpl() {
            write!(f, " (CPL {cpl})")?;
        }
        if self.is_page_fault() {
            write!(f, ", cr2 {:#x}", self.control.cr2)?;
        }
        if self.depth > 1 {
            write!(f, ", nested at depth {}", self.depth)?;
        }
        Ok(())
    }
}

/// Kernel stacks are small; a frame more than this far above an interrupted RSP is on another
/// stack.
const STACK_WINDOW: u64 = 1 << 20;

/// An exception whose handler has not returned, as far as the host can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Active {
    seq: u64,
    frame_at: u64,
}

/// The exceptions being handled right now. The host sees handler entries, never `iretq`, so
/// it infers returns from stacks: a new exception is nested in an active one when the code it
/// interrupted was running on that handler's stack, below its frame.
#[derive(Debug, Default, Clone)]
pub struct Nesting {
    active: Vec<Active>,
}

impl Nesting {
    /// Account for a new exception; returns the outer exceptions it is nested in.
    pub fn enter(&mut self, seq: u64, frame: Option<&Frame>) -> Vec<u64> {
        match frame {
            Some(frame) if frame.cpl() == 0 => {
                let interrupted = frame.rsp.raw();
                while let Some(top) = self.active.last() {
                    let inside =
                        interrupted <= top.frame_at && top.frame_at - interrupted < STACK_WINDOW;
                    if inside {
                        break;
                    }
                    self.active.pop();
                }
            }
            // From user mode nothing kernel-side was running; without a frame, assume the
            // same of an unreadable one rather than invent a chain.
            _ => self.active.clear(),
        }
        let outer = self.active.iter().map(|a| a.seq).collect();
        if let Some(frame) = frame {
            self.active.push(Active {
                seq,
                frame_at: frame.at.raw(),
            });
        }
        outer
    }

    /// Sequence numbers of the exceptions still being handled, outermost first.
    pub fn chain(&self) -> Vec<u64> {
        self.active.iter().map(|a| a.seq).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(at: u64, cs: u16, rsp: u64) -> Frame {
        Frame {
            at: Gva::new(at),
            error: Some(2),
            rip: Gva::new(0x1000),
            cs,
            rflags: 0x2,
            rsp: Gva::new(rsp),
            ss: 0x10,
            real_mode: false,
        }
    }

    /// A 32-bit frame: dwords, and SS:ESP only when the privilege changed.
    #[test]
    fn frames_of_32_bit_handlers() {
        let same_level = [0x20_00ff, 0x08, 0x202, 0xdead, 0xbeef, 0];
        let f = Frame::parse32(Gva::new(0x1000), &same_level, false, 0x10);
        assert_eq!((f.rip.raw(), f.cs, f.rflags), (0x20_00ff, 0x08, 0x202));
        assert_eq!(
            (f.rsp.raw(), f.ss),
            (0x100c, 0x10),
            "ESP above the 3 dwords"
        );
        let f = Frame::parse32(
            Gva::new(0x1000),
            &[0xd, 0x20_00ff, 0x08, 0x202, 0, 0],
            true,
            0x10,
        );
        assert_eq!((f.error, f.rsp.raw()), (Some(0xd), 0x1010));
        let from_ring3 = [0x4, 0x40_0000, 0x1b, 0x202, 0x7f_f000, 0x23];
        let f = Frame::parse32(Gva::new(0x1000), &from_ring3, true, 0x10);
        assert_eq!((f.cpl(), f.rsp.raw(), f.ss), (3, 0x7f_f000, 0x23));
    }

    #[test]
    fn frames_with_and_without_error_code() {
        let words = [0x6, 0x5555_0000, 0x23, 0x202, 0x7ffe_0000, 0x1b];
        let f = Frame::parse(Gva::new(0x9000), &words, true);
        assert_eq!((f.error, f.rip.raw(), f.cpl()), (Some(6), 0x5555_0000, 3));
        let f = Frame::parse(Gva::new(0x9000), &words, false);
        assert_eq!(
            (f.error, f.rip.raw(), f.cs),
            (None, 0x6, 0x5555_0000u64 as u16)
        );
    }

    #[test]
    fn a_fault_inside_a_handler_nests_and_a_later_one_does_not() {
        let mut nesting = Nesting::default();
        // Kernel code on stack 0x20000 faults: frame at 0x1ffd8.
        assert!(
            nesting
                .enter(1, Some(&frame(0x1_ffd8, 0x08, 0x2_0000)))
                .is_empty()
        );
        // The handler, running below its frame, faults again.
        assert_eq!(
            nesting.enter(2, Some(&frame(0x1_fe00, 0x08, 0x1_fe80))),
            [1]
        );
        assert_eq!(nesting.chain(), [1, 2]);
        // Later, back at the original stack depth: both handlers returned.
        assert!(
            nesting
                .enter(3, Some(&frame(0x1_ffd8, 0x08, 0x2_0000)))
                .is_empty()
        );
        // A fault from user mode starts afresh.
        assert!(
            nesting
                .enter(4, Some(&frame(0x1_ffd8, 0x2b, 0x7ffe_0000)))
                .is_empty()
        );
        assert_eq!(nesting.chain(), [4]);
    }

    #[test]
    fn an_ist_double_fault_is_nested_in_the_handler_it_interrupted() {
        let mut nesting = Nesting::default();
        nesting.enter(1, Some(&frame(0x1_ffd8, 0x08, 0x2_0000)));
        // #DF on its own IST stack far away, interrupting code on the first handler's stack.
        assert_eq!(
            nesting.enter(2, Some(&frame(0x50_0fd8, 0x08, 0x1_f000))),
            [1]
        );
    }
}
