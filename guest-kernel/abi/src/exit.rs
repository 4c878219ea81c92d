//! Exit codes the guest writes to [`crate::ports::DEBUG_EXIT`].
//!
//! `vmm-host run` passes the guest's code through as its own exit status. Code 2 is skipped
//! because the host uses it for bad input, and 80–89 are the host's own run endings
//! (triple fault, watchdog, …; see `docs/exit-status.md`).

/// The workload finished and everything it checked held.
pub const SUCCESS: u8 = 0;
/// The workload ran to its end but a check it made failed.
pub const FAILURE: u8 = 1;
/// The kernel panicked (the message went to the serial port first).
pub const PANIC: u8 = 3;
/// An exception arrived that no handler could deal with.
pub const UNHANDLED_EXCEPTION: u8 = 4;
/// The kernel command line asked for something the kernel does not know.
pub const BAD_COMMAND_LINE: u8 = 5;

/// The status QEMU's `isa-debug-exit` device turns a guest exit code into.
pub const fn qemu_status(code: u8) -> i32 {
    ((code as i32) << 1) | 1
}
