//! What the kernel does after boot, chosen with `test=` on the command line.

use crate::exit::exit;
use crate::kprintln;

/// The workloads this kernel knows, in the order `test=help` lists them.
pub const NAMES: &[(&str, &str)] = &[
    ("hello", "print the banner and memory map, then exit 0"),
    (
        "panic",
        "panic on purpose: the panic handler reports and exits with code 3",
    ),
    (
        "triple-fault",
        "load an empty IDT and execute ud2: #UD -> #GP -> #DF -> triple fault",
    ),
    (
        "halt",
        "cli; hlt: halt with interrupts disabled, which nothing can wake",
    ),
    (
        "spin",
        "loop forever without exiting (the host's watchdog ends the run)",
    ),
    (
        "int3",
        "execute int3 in ring 0 with an empty IDT (a nested KVM may fail to emulate it)",
    ),
];

pub fn run(name: &str) -> ! {
    match name {
        "hello" => {
            kprintln!("hello from guest-kernel");
            exit(abi::exit::SUCCESS)
        }
        "panic" => panic!("test=panic asked for a panic"),
        "triple-fault" => {
            kprintln!("loading an empty IDT and executing ud2");
            load_empty_idt();
            // SAFETY: deliberately faults; with no IDT the CPU shuts down, which is the test.
            unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
            unreachable!("ud2 returned")
        }
        "halt" => {
            kprintln!("halting with interrupts disabled");
            crate::exit::halt_forever()
        }
        "spin" => {
            kprintln!("spinning forever");
            loop {
                core::hint::spin_loop();
            }
        }
        "int3" => {
            kprintln!("executing int3 with an empty IDT");
            load_empty_idt();
            // SAFETY: deliberately traps; the run ends in a triple fault or a host-side error.
            unsafe { core::arch::asm!("int3", options(nomem, nostack)) };
            unreachable!("int3 returned")
        }
        "help" => {
            for (name, what) in NAMES {
                kprintln!("  test={name:<13} {what}");
            }
            exit(abi::exit::SUCCESS)
        }
        other => {
            kprintln!("unknown workload test={other}; test=help lists them");
            exit(abi::exit::BAD_COMMAND_LINE)
        }
    }
}

fn load_empty_idt() {
    let idt = x86_64::structures::DescriptorTablePointer {
        limit: 0,
        base: x86_64::VirtAddr::new(0),
    };
    // SAFETY: an IDT of limit 0 makes every exception escalate to a triple fault, which is
    // exactly what the callers want.
    unsafe { x86_64::instructions::tables::lidt(&idt) };
}
