//! Drives gdbstub's state machine: reads gdb's bytes while the guest stands, runs the
//! guest when gdb resumes it, and answers each stop with RIP, RSP and RBP in the stop
//! reply. gdb then often needs no `g` packet after a `stepi`, one round trip of three.

use super::arch::GdbRegId;
use super::connection::GdbLink;
use super::target::{GdbTarget, TargetFault};
use crate::vm::{Resume, Stop};
use gdbstub::common::Signal;
use gdbstub::conn::ConnectionExt;
use gdbstub::stub::state_machine::GdbStubStateMachine;
use gdbstub::stub::{DisconnectReason, GdbStub, GdbStubError, MultiThreadStopReason};

/// Why a session's packet loop stopped without gdb disconnecting.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    /// gdbstub refused a packet or could not answer it.
    #[error(transparent)]
    Stub(#[from] GdbStubError<TargetFault, std::io::Error>),
    #[error("the gdb connection failed: {0}")]
    Connection(#[from] std::io::Error),
}

/// Serve gdb until it detaches, kills the guest, or the run ends.
pub fn drive<'a>(
    stub: GdbStub<'_, GdbTarget<'a>, GdbLink<'_>>,
    target: &mut GdbTarget<'a>,
) -> Result<DisconnectReason, DriveError> {
    let mut gdb = stub.run_state_machine(target)?;
    loop {
        gdb = match gdb {
            GdbStubStateMachine::Idle(mut idle) => {
                let byte = idle.borrow_conn().read()?;
                idle.incoming_data(target, byte)?
            }
            GdbStubStateMachine::Disconnected(gone) => return Ok(gone.get_reason()),
            GdbStubStateMachine::CtrlCInterrupt(interrupted) => {
                let reason = MultiThreadStopReason::SignalWithThread {
                    tid: super::target::tid_of(0),
                    signal: Signal::SIGINT,
                };
                interrupted.interrupt_handled(target, Some(reason))?
            }
            GdbStubStateMachine::Running(mut running) => {
                let conn = running.borrow_conn();
                if conn.0.has_pending() {
                    let byte = conn.read()?;
                    running.incoming_data(target, byte)?
                } else {
                    conn.0.flush_pending()?;
                    match run_guest(target) {
                        Some(stop) => {
                            let regs = expedited(target, &stop);
                            let reason = target.stop_reason(stop);
                            match regs {
                                Some(regs) => {
                                    let mut pairs =
                                        regs.iter().map(|(id, v, width)| (*id, &v[..*width]));
                                    running.report_stop_with_regs(target, reason, &mut pairs)?
                                }
                                None => running.report_stop(target, reason)?,
                            }
                        }
                        // gdb sent something (Ctrl-C or a packet) while the guest ran.
                        None => {
                            let byte = running.borrow_conn().read()?;
                            running.incoming_data(target, byte)?
                        }
                    }
                }
            }
        }
    }
}

/// Run the guest as gdb asked; `None` when gdb interrupted it.
fn run_guest(target: &mut GdbTarget<'_>) -> Option<Stop> {
    // A single step ends at the vCPU's next exit; waking the watcher thread for it would
    // cost more than the step.
    let watch = target.mode != Resume::Step;
    if watch {
        target.interrupter.arm();
    }
    let stop = target.vm.resume(target.mode);
    if watch {
        target.interrupter.disarm();
    }
    (stop != Stop::Interrupted).then_some(stop)
}

/// The registers gdb needs for the stop's frame, when the guest still stands: (number,
/// little-endian value, width in this session's layout).
fn expedited(target: &GdbTarget<'_>, stop: &Stop) -> Option<[(GdbRegId, [u8; 8], usize); 3]> {
    if matches!(stop, Stop::Ended(_)) {
        return None;
    }
    let regs = target.vm.general_registers().ok()?;
    let ([bp, sp, pc], width) = target.layout.frame_registers();
    Some([
        (bp, regs.rbp.to_le_bytes(), width),
        (sp, regs.rsp.to_le_bytes(), width),
        (pc, regs.rip.to_le_bytes(), width),
    ])
}
