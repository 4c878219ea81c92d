//! The host's BIOS services on calls the fuzzer makes: any vector, any registers, any
//! buffers, on a disk of its bytes.

use super::{Input, assert_one_line};
use crate::bios::{Bios, Call, Disk, Served, rom};
use crate::console::{ConsoleSink, DEFAULT_LIMIT};
use crate::devices::{Clock, Devices};
use crate::layout::RamLayout;
use kvm_bindings::kvm_regs;
use std::time::Duration;
use vm_memory::{GuestAddress, GuestMemoryMmap};

/// The vectors a boot sector calls, and two it should not.
const VECTORS: [u8; 9] = [0x10, 0x11, 0x12, 0x13, 0x15, 0x16, 0x1a, 0x19, 0x42];
/// The vectors whose calls the BIOS counts by function.
const SERVED: [u8; 7] = [0x10, 0x11, 0x12, 0x13, 0x15, 0x16, 0x1a];
/// The services that report failure with CF.
const CARRY_SERVICES: [u8; 3] = [0x13, 0x15, 0x1a];

/// Every call returns, an unsupported one with CF set where that is the service's convention, the report counts exactly the calls
/// made to the services, and its summary and first unsupported call are one line each.
pub fn bios(data: &[u8]) {
    let mut input = Input::new(data);
    let sectors = usize::from(input.u8() % 8);
    let disk = input.bytes(sectors * 512).to_vec();
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)])
        .expect("4 MiB of anonymous memory");
    let sink = ConsoleSink::new(false, None, DEFAULT_LIMIT).expect("a sink with no log file");
    let mut devices = Devices::new(sink).expect("the PC's devices");
    devices.set_clock(Clock::Fixed(Duration::ZERO));
    let map = RamLayout::new(128 << 20, None)
        .expect("128 MiB is a valid RAM size")
        .memory_map();
    let mut bios = Bios::new(Disk::new(disk), map);
    rom::install(&mem).expect("the ROM fits in 4 MiB");
    bios.power_on(&mem, &mut devices);
    let mut served_calls = 0;
    while !input.is_empty() {
        let vector = input.pick(&VECTORS);
        let regs = kvm_regs {
            rax: u64::from(input.u32()),
            rbx: u64::from(input.u32()),
            rcx: u64::from(input.u32()),
            rdx: u64::from(input.u32()),
            rsi: u64::from(input.u16()),
            rdi: u64::from(input.u16()),
            ..Default::default()
        };
        let mut call = Call::new(regs, input.u16(), input.u16());
        let served = bios.serve(vector, &mut call, &mem, &mut devices);
        served_calls += u64::from(SERVED.contains(&vector));
        // The video and keyboard services have no CF convention: one they lack returns as is.
        if served == Served::Unsupported && CARRY_SERVICES.contains(&vector) {
            assert!(
                call.carry,
                "int {vector:02x}h unsupported without CF: {call:?}"
            );
        }
    }
    let report = bios.report();
    assert_eq!(report.calls, served_calls, "calls counted");
    if served_calls > 0 {
        assert_one_line("the BIOS summary", &report.summary);
    }
    for noted in [&report.unsupported, &report.unexpected] {
        if let Some(first) = &noted.first {
            assert_one_line("a BIOS call noted", first);
        }
    }
}
