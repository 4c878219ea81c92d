//! I/O ports the guest uses to talk to the host.

/// COM1: the 16550 UART the host emulates (and QEMU provides with `-serial`).
pub const SERIAL_COM1: u16 = 0x3f8;

/// Writing a byte here ends the run with that byte as the guest's exit code.
///
/// 0xf4 is QEMU's customary `isa-debug-exit` port, so the same kernel ends a QEMU run with
/// `-device isa-debug-exit,iobase=0xf4,iosize=0x04` (QEMU then exits with `code << 1 | 1`).
pub const DEBUG_EXIT: u16 = 0xf4;
