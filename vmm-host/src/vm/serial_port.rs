//! Port writes to COM1, one access at a time: a plain `out`, or a `rep outs` that KVM may
//! hand over as up to a page of bytes in one exit.

use super::{COM1, Vm};

/// The (port, byte) writes that `bytes` from one exit make, for accesses of `size` bytes
/// starting at `port`: an access of N bytes writes N consecutive ports, as on real hardware,
/// and a repeated access writes the same ports again, so `rep outsb` to THR sends every byte.
fn port_writes(port: u16, bytes: &[u8], size: usize) -> impl Iterator<Item = (u16, u8)> + '_ {
    bytes.chunks(size.max(1)).flat_map(move |access| {
        access
            .iter()
            .enumerate()
            .map(move |(i, &byte)| (port.wrapping_add(i as u16), byte))
    })
}

impl Vm {
    /// Give the UART the bytes of the last exit's `out` to `port` (kept in `serial_out`).
    pub(super) fn feed_uart(&mut self, port: u16) {
        let size = self.io_access_size();
        let bytes = std::mem::take(&mut self.serial_out);
        for (at, byte) in port_writes(port, &bytes, size) {
            if COM1.contains(&at) {
                // The UART's only error is a failed trigger, and ours cannot fail.
                let _ = self.uart.write((at - COM1.start) as u8, byte);
            } else {
                self.progress
                    .stray
                    .note(|| format!("out {byte:#x} to port {at:#x}"));
            }
        }
        self.serial_out = bytes;
    }

    /// The size of one access (1, 2 or 4 bytes) of the port I/O exit KVM just reported.
    fn io_access_size(&mut self) -> usize {
        let run = self.vcpu.get_kvm_run();
        if run.exit_reason != kvm_bindings::KVM_EXIT_IO {
            return 1;
        }
        // SAFETY: the exit reason is KVM_EXIT_IO, so the kernel filled the `io` member of the
        // exit union; it is plain data that any bit pattern makes valid.
        let io = unsafe { run.__bindgen_anon_1.io };
        usize::from(io.size).clamp(1, 4)
    }
}

#[cfg(test)]
mod tests {
    use super::port_writes;

    #[test]
    fn rep_outsb_sends_every_byte_to_one_port() {
        let writes: Vec<_> = port_writes(0x3f8, b"abc", 1).collect();
        assert_eq!(writes, [(0x3f8, b'a'), (0x3f8, b'b'), (0x3f8, b'c')]);
    }

    #[test]
    fn a_wide_out_writes_consecutive_ports() {
        // `out dx, ax` with AX = 0x4142: the low byte to DX, the high byte to DX + 1.
        let writes: Vec<_> = port_writes(0x3f8, &[0x42, 0x41], 2).collect();
        assert_eq!(writes, [(0x3f8, 0x42), (0x3f9, 0x41)]);
        // `rep outsw` of two words repeats that pair.
        let writes: Vec<_> = port_writes(0x3fe, &[1, 2, 3, 4], 2).collect();
        assert_eq!(writes, [(0x3fe, 1), (0x3ff, 2), (0x3fe, 3), (0x3ff, 4)]);
    }
}
