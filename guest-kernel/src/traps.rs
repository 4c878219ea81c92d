//! What the kernel does with each exception: demand paging, system calls, killing a user
//! process, or the fatal report and the end of the run.

use crate::exceptions;
use crate::frame::TrapFrame;
use crate::process;
use crate::vmm::heap;
use abi::exception::{INVALID_OPCODE, PAGE_FAULT, name};
use abi::trace::SYSCALL_VECTOR;
use core::fmt;
use x86_64::registers::control::Cr2;

/// Entered from the stubs in `idt` with interrupts off.
pub extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    let vector = frame.vector as u8;
    if (crate::timer::IRQ_BASE..crate::timer::IRQ_BASE + 16).contains(&vector) {
        // An external interrupt, not an exception: no digest entry, no nesting.
        crate::timer::irq(vector);
        return;
    }
    let cr2 = Cr2::read_raw();
    let syscall_via_ud =
        vector == INVALID_OPCODE && frame.came_from_user() && process::is_int80_at(frame.rip);
    let recorded = if syscall_via_ud {
        SYSCALL_VECTOR
    } else {
        vector
    };
    exceptions::enter(frame, recorded, cr2);

    match vector {
        PAGE_FAULT => page_fault(frame, cr2),
        _ if syscall_via_ud => {
            process::note_int80_as_ud();
            frame.rip += 2;
            process::syscall(frame);
        }
        SYSCALL_VECTOR if frame.came_from_user() => process::syscall(frame),
        _ if frame.came_from_user() => process::kill_for_exception(frame, vector, cr2),
        _ => exceptions::fatal(
            frame,
            cr2,
            format_args!(
                "{} in kernel mode, which nothing recovers from",
                name(vector)
            ),
        ),
    }
    exceptions::leave();
}

fn page_fault(frame: &mut TrapFrame, cr2: u64) {
    if crate::log::per_fault() {
        exceptions::log_page_fault(cr2, frame.error, frame.rip);
    }
    if frame.came_from_user() {
        process::user_page_fault(frame, cr2);
        return;
    }
    if heap::is_heap(cr2) && frame.error & 1 == 0 {
        if crate::log::per_fault() {
            exceptions::log_demand_paging(cr2);
        }
        match heap::vmm_handle_page_fault(cr2) {
            Ok(_) => return,
            Err(error) => {
                exceptions::fatal(frame, cr2, format_args!("demand paging failed: {error}"))
            }
        }
    }
    let why: &dyn fmt::Display = if heap::is_heap(cr2) {
        &"a protection fault on a mapped kernel heap page"
    } else {
        &"the address is neither kernel heap nor user memory"
    };
    exceptions::fatal(frame, cr2, why)
}
