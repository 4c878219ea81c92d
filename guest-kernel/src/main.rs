//! guest-kernel: a small x86-64 kernel with BoxKernel's memory architecture (seed 000),
//! booted through PVH by vmm-host or QEMU.
#![no_std]
#![no_main]

mod boot;
mod bootinfo;
mod exit;
mod serial;
mod workloads;

use abi::boot::{BOOT_IDENTITY_MAP, BOOT_PAGE_TABLES, BOOT_STACK_TOP, E820_MAP, KERNEL_LOAD};
use abi::cmdline::Cmdline;
use core::panic::PanicInfo;

/// Command-line keys this kernel understands.
const KNOWN_KEYS: &[&str] = &["test", "log"];

#[unsafe(no_mangle)]
extern "C" fn kmain(start_info_paddr: u32) -> ! {
    serial::console().init();
    kprintln!(
        "guest-kernel {}: PVH entry at {:#x}, long mode, boot page tables at {:#x} identity-mapping {} MiB, stack top {:#x}",
        env!("CARGO_PKG_VERSION"),
        KERNEL_LOAD,
        BOOT_PAGE_TABLES,
        BOOT_IDENTITY_MAP >> 20,
        BOOT_STACK_TOP,
    );
    let boot = match bootinfo::BootInfo::read(start_info_paddr) {
        Ok(boot) => boot,
        Err(error) => {
            kprintln!("boot: {error}");
            exit::exit(abi::exit::FAILURE)
        }
    };
    kprintln!(
        "start info at {:#x}, version {}",
        boot.start_info_paddr,
        boot.version
    );
    kprintln!("command line: \"{}\"", boot.cmdline);
    print_memory_map(&boot);

    let cmdline = Cmdline::new(boot.cmdline);
    if let Some(word) = cmdline.first_unknown(KNOWN_KEYS) {
        kprintln!(
            "unknown command-line word \"{}\"; known keys: {:?}",
            word.key,
            KNOWN_KEYS
        );
        exit::exit(abi::exit::BAD_COMMAND_LINE)
    }
    workloads::run(cmdline.get("test").unwrap_or("hello"))
}

fn print_memory_map(boot: &bootinfo::BootInfo) {
    kprintln!("memory map (E820 at {:#x}):", E820_MAP);
    let mut usable = 0u64;
    for entry in boot.memory_map() {
        kprintln!(
            "  [{:#012x}-{:#012x}] {:<9} {:>8} KiB",
            entry.addr,
            entry.end().saturating_sub(1),
            abi::boot::e820::type_name(entry.kind),
            entry.size >> 10,
        );
        if entry.kind == abi::boot::e820::RAM {
            usable = usable.saturating_add(entry.size);
        }
    }
    if boot.dropped_entries > 0 {
        kprintln!(
            "  ({} more entries dropped: the E820 area holds 64)",
            boot.dropped_entries
        );
    }
    kprintln!("usable RAM: {} KiB", usable >> 10);
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    kprintln!("PANIC: {}", info);
    exit::exit(abi::exit::PANIC)
}
