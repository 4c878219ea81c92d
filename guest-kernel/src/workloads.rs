//! What the kernel does after boot, chosen with `test=` on the command line.

use crate::cpu::Selectors;
use crate::exceptions::finish;
use crate::exit::exit;
use crate::kprintln;
use crate::process::{self, Outcome, SIGSEGV};
use crate::user::Program;
use crate::vmm::{self, heap};
use abi::exit::{BAD_COMMAND_LINE, FAILURE, SUCCESS};
use mm::paging::PAGE_SIZE;

/// The workloads this kernel knows, in the order `test=help` lists them.
pub const NAMES: &[(&str, &str)] = &[
    ("hello", "print the banner and memory map, then exit 0"),
    (
        "heap",
        "vmalloc(8192), then touch heap= bytes (default 96M) of demand-paged heap; log=quiet saves 2 lines a fault",
    ),
    (
        "journey",
        "seed 004: a ring-3 process mmaps a page and writes \"offset world\" at +0x100",
    ),
    (
        "segv",
        "the same process writes one page past its mapping and is killed with SIGSEGV",
    ),
    ("dump", "vmalloc(8192), then dump the kernel's page tables"),
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
        "timer",
        "remap the PICs, run the PIT at 1 kHz and wait in sti; hlt for 100 ticks, then exit 0",
    ),
    (
        "timer-spin",
        "the same, waiting in a spin loop with interrupts on: the guest never exits by itself",
    ),
    (
        "timer-unremapped",
        "the PIT started with the PICs at the BIOS's vectors: IRQ 0 arrives through the #DF gate",
    ),
    ("reset", "reset the machine through the keyboard controller"),
    (
        "rtc",
        "read the CMOS real-time clock and print the date and time",
    ),
    (
        "vga",
        "a boot log on the VGA text screen that scrolls, then a null dereference painted on it",
    ),
    (
        "spin",
        "loop forever without exiting (the host's watchdog ends the run)",
    ),
    (
        "int3",
        "execute int3 in ring 0 with an empty IDT (a nested KVM may fail to emulate it)",
    ),
    (
        "stack-overflow",
        "recurse into a guard page: #PF cannot be delivered, #DF runs on its IST stack",
    ),
    (
        "stack-overflow-no-ist",
        "the same with #DF on the faulting stack: #DF cannot be delivered, triple fault",
    ),
    (
        "nx",
        "call code written to an NX data page: #PF on the fetch",
    ),
    (
        "write-read-only",
        "write to a read-only kernel page with CR0.WP set: #PF, present and write",
    ),
    (
        "user-peek",
        "a ring-3 process reads the kernel image, a supervisor page: SIGSEGV",
    ),
    (
        "null",
        "unmap page 0, then read through a null pointer: #PF at 0x10",
    ),
    ("ud", "execute ud2 in the kernel: #UD"),
    ("divide", "divide by zero with div: #DE"),
    (
        "non-canonical",
        "read through 0x8000000000000000: #GP, not #PF",
    ),
    (
        "pt-loop",
        "hostile: PML4[300] points at the PML4; read through the loop to an empty entry",
    ),
    (
        "pt-past-ram",
        "hostile: PML4[300] points at a table 1 TiB up, past RAM; read through it",
    ),
    (
        "idt-unmapped",
        "hostile: every exception gate points at an unmapped address; ud2",
    ),
    (
        "idt-noncanonical",
        "hostile: every exception gate points at a non-canonical address; ud2",
    ),
    (
        "idt-churn",
        "hostile: rewrite and reload the IDT 1000 times, then ud2",
    ),
    (
        "debug-exit-garbage",
        "hostile: write the dword 0xdeadbeef to the debug-exit port",
    ),
    (
        "vga-flood",
        "hostile: garbage to every VGA register and the whole text buffer, a wrapped screen, exit 0",
    ),
    (
        "serial-flood",
        "hostile: 32 KiB to COM1 one out at a time, then 128 KiB by rep outsb, then exit 0",
    ),
    (
        "pit-flood",
        "hostile: the PIT at its fastest rate (count 2), sti; hlt until 200 ticks, then exit 0",
    ),
    (
        "pic-overlap",
        "hostile: both PICs at vectors 0x20-0x27 (IRQ n and n+8 share one), 50 ticks, then exit 0",
    ),
];

/// The heap workload's default size: enough to push the PMM past the 64 MiB identity map
/// with 256 MiB of RAM.
pub const DEFAULT_HEAP: u64 = 96 << 20;

pub struct Settings<'a> {
    pub name: &'a str,
    pub heap_bytes: u64,
    /// `hz=` and `ticks=` for the timer workloads.
    pub timer: crate::timer::Rate,
    pub selectors: Selectors,
}

pub fn run(settings: &Settings) -> ! {
    match settings.name {
        "hello" => {
            kprintln!("hello from guest-kernel");
            finish(SUCCESS)
        }
        "heap" => heap_workload(settings.heap_bytes),
        "journey" => match process::run(Program::Journey, &settings.selectors) {
            Outcome::Exited(0) => {
                kprintln!("[kernel] journey complete: the process wrote, read back and exited 0");
                finish(SUCCESS)
            }
            other => {
                kprintln!("[kernel] journey failed: the process ended with {other:?}");
                finish(FAILURE)
            }
        },
        "segv" => expect_sigsegv(Program::Segv, settings),
        "dump" => {
            let buf = vmalloc_or_exit(8192);
            kprintln!("[heap] vmalloc(8192) = {buf:#x}");
            vmm::dump::vmm_dump_page_tables(vmm::kernel_context());
            finish(SUCCESS)
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
        "timer" => crate::timer::timer_workload(crate::timer::Wait::Halt, settings.timer),
        "timer-spin" => crate::timer::timer_workload(crate::timer::Wait::Spin, settings.timer),
        "timer-unremapped" => crate::timer::unremapped_workload(),
        "cx16" => {
            let pair = crate::cx16::swap_pair();
            kprintln!("[cx16] the pair is now {pair:?}");
            finish(if pair == [3, 4] { SUCCESS } else { FAILURE })
        }
        "rtc" => {
            let t = crate::rtc::now();
            kprintln!(
                "[rtc] {:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC (CMOS)",
                t.year,
                t.month,
                t.day,
                t.hour,
                t.minute,
                t.second
            );
            finish(SUCCESS)
        }
        "vga" => {
            crate::vga::draw_boot_log();
            crate::faults::null_dereference()
        }
        "reset" => {
            kprintln!("resetting through the keyboard controller (0xfe to port 0x64)");
            let mut command: x86_64::instructions::port::Port<u8> =
                x86_64::instructions::port::Port::new(0x64);
            // SAFETY: the i8042's reset command ends the machine; no memory is touched.
            unsafe { command.write(0xfe) };
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
        "stack-overflow" => crate::faults::stack_overflow(true, &settings.selectors),
        "stack-overflow-no-ist" => crate::faults::stack_overflow(false, &settings.selectors),
        "nx" => crate::faults::execute_nx(),
        "write-read-only" => crate::faults::write_read_only(),
        "user-peek" => expect_sigsegv(Program::Peek, settings),
        "null" => crate::faults::null_dereference(),
        "ud" => crate::faults::invalid_opcode(),
        "divide" => crate::faults::divide_by_zero(),
        "non-canonical" => crate::faults::non_canonical(),
        "pt-loop" => crate::hostile::page_table_loop(),
        "pt-past-ram" => crate::hostile::page_table_past_ram(),
        "idt-unmapped" => {
            crate::hostile::idt_pointing_at(0xffff_c000_0010_0000, "unmapped", &settings.selectors)
        }
        "idt-noncanonical" => crate::hostile::idt_pointing_at(
            0x8000_0000_0010_0000,
            "non-canonical",
            &settings.selectors,
        ),
        "idt-churn" => crate::hostile::idt_churn(1000),
        "debug-exit-garbage" => crate::hostile::debug_exit_garbage(),
        "serial-flood" => crate::hostile::serial_flood(32 << 10, 128 << 10),
        "pit-flood" => crate::timer::pit_flood(),
        "pic-overlap" => crate::timer::pic_overlap(),
        "vga-flood" => {
            kprintln!(
                "[hostile] flooding the VGA: 20000 register accesses, 32 KiB of garbage text"
            );
            crate::vga::flood(20_000);
            kprintln!("[hostile] VGA flood done");
            finish(SUCCESS)
        }
        "help" => {
            for (name, what) in NAMES {
                kprintln!("  test={name:<21} {what}");
            }
            exit(SUCCESS)
        }
        other => {
            kprintln!("unknown workload test={other}; test=help lists them");
            exit(BAD_COMMAND_LINE)
        }
    }
}

/// Run a process that must be killed by SIGSEGV while the kernel carries on.
fn expect_sigsegv(program: Program, settings: &Settings) -> ! {
    match process::run(program, &settings.selectors) {
        Outcome::Killed(SIGSEGV) => {
            kprintln!("[kernel] process 1 was killed by SIGSEGV; the kernel carries on");
            finish(SUCCESS)
        }
        other => {
            kprintln!("[kernel] expected SIGSEGV, the process ended with {other:?}");
            finish(FAILURE)
        }
    }
}

fn vmalloc_or_exit(size: u64) -> u64 {
    match heap::vmalloc(size) {
        Ok(va) => va,
        Err(error) => {
            kprintln!("[heap] vmalloc({size}) failed: {error}");
            finish(FAILURE)
        }
    }
}

/// The value written into heap page `i`, so a page mapped twice or lost shows on read-back.
fn pattern(i: u64) -> u64 {
    i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xb0c5_ce11
}

/// Seed 000's scenario: vmalloc(8192), then the kernel heap used page by page until the PMM
/// hands out frames above the identity map.
fn heap_workload(bytes: u64) -> ! {
    let pages = bytes.div_ceil(PAGE_SIZE);
    let room = (heap::HEAP_BASE + heap::HEAP_SIZE - heap::VMALLOC_END) / PAGE_SIZE;
    // Each 512 pages need a page table too.
    let needed = pages + pages.div_ceil(512) + 8;
    let free = crate::pmm::free_frames() as u64;
    if pages > room || needed > free {
        kprintln!(
            "[heap] heap={bytes} needs {needed} frames but {free} are free and the heap holds {room} pages; lower heap= or raise the RAM"
        );
        exit(BAD_COMMAND_LINE)
    }

    let buf = vmalloc_or_exit(8192);
    match vmm::vmm_virt_to_phys(vmm::kernel_context(), buf) {
        Some(phys) => kprintln!("[heap] vmalloc(8192) = {buf:#x}, vmm_virt_to_phys: {phys:#x}"),
        None => {
            kprintln!("[heap] vmalloc(8192) = {buf:#x}, but vmm_virt_to_phys finds no mapping");
            finish(FAILURE)
        }
    }
    let words = buf as *mut u64;
    for i in 0..1024 {
        // SAFETY: vmalloc mapped 8 KiB at `buf`.
        unsafe { words.add(i).write_volatile(pattern(i as u64)) };
    }
    // SAFETY: as above.
    let intact = (0..1024).all(|i| unsafe { words.add(i).read_volatile() } == pattern(i as u64));
    if !intact {
        kprintln!("[heap] vmalloc'd memory did not read back what was written");
        finish(FAILURE)
    }

    let start = heap::VMALLOC_END;
    kprintln!(
        "[heap] touching {pages} pages ({} KiB) of demand-paged heap from {start:#x}",
        (pages * PAGE_SIZE) >> 10
    );
    // The word at +0xaa0 of each page, like the faulting access of seed 000.
    let slot = |i: u64| (start + i * PAGE_SIZE + 0xaa0) as *mut u64;
    for i in 0..pages {
        // SAFETY: heap addresses are demand-paged by the #PF handler.
        unsafe { slot(i).write_volatile(pattern(i)) };
    }
    // SAFETY: every page was mapped by the writes above.
    let bad = (0..pages).find(|&i| unsafe { slot(i).read_volatile() } != pattern(i));
    if let Some(i) = bad {
        kprintln!("[heap] heap page {:#x} lost its contents", slot(i) as u64);
        finish(FAILURE)
    }
    if let Err(error) = heap::vfree(buf) {
        kprintln!("[heap] {error}");
        finish(FAILURE)
    }
    let stats = heap::stats();
    kprintln!(
        "[heap] {} demand-paging faults handled; all {pages} pages read back intact",
        stats.faults
    );
    kprintln!(
        "[heap] frames above the {} MiB identity map in use: {} ({} KiB), highest frame {:#x}",
        vmm::IDENTITY_MAP_END >> 20,
        stats.frames_above_identity,
        stats.frames_above_identity * 4,
        stats.highest_frame
    );
    finish(SUCCESS)
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
