//! Ending the run through the host's debug-exit port.

use x86_64::instructions::port::Port;

/// Hand `code` to the host and stop. Under QEMU's `isa-debug-exit` the process exits with
/// `code << 1 | 1`; under vmm-host with `code`.
pub fn exit(code: u8) -> ! {
    let mut port: Port<u32> = Port::new(abi::ports::DEBUG_EXIT);
    // SAFETY: the debug-exit port only ends the VM; no guest memory is touched.
    unsafe { port.write(u32::from(code)) };
    // Without a debug-exit device (e.g. QEMU started without one) there is nothing left to do.
    halt_forever()
}

pub fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
