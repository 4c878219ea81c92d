//! guest-kernel: a small x86-64 kernel with BoxKernel's memory architecture (seed 000),
//! booted through PVH by vmm-host or QEMU.
#![no_std]
#![no_main]

mod boot;
mod bootinfo;
mod cpu;
mod cx16;
mod exceptions;
mod exit;
mod faults;
mod frame;
mod hostile;
mod idt;
mod log;
mod pmm;
mod process;
mod rtc;
mod serial;
mod sync;
mod timer;
mod traps;
mod user;
mod vga;
mod vmm;
mod workloads;

use abi::boot::{BOOT_IDENTITY_MAP, BOOT_PAGE_TABLES, BOOT_STACK_TOP, E820_MAP, KERNEL_LOAD};
use abi::cmdline::Cmdline;
use core::panic::PanicInfo;

/// Command-line keys this kernel understands.
const KNOWN_KEYS: &[&str] = &["test", "log", "vmm", "pmm", "heap", "hz", "ticks"];

#[unsafe(no_mangle)]
extern "C" fn kmain(boot_data_paddr: u32, magic: u32) -> ! {
    serial::console().init();
    kprintln!(
        "guest-kernel {}: {} entry at {:#x}, long mode, boot page tables at {:#x} identity-mapping {} MiB, stack top {:#x}",
        env!("CARGO_PKG_VERSION"),
        bootinfo::Protocol::from_magic(magic).map_or("unknown", bootinfo::Protocol::name),
        KERNEL_LOAD,
        BOOT_PAGE_TABLES,
        BOOT_IDENTITY_MAP >> 20,
        BOOT_STACK_TOP,
    );
    let boot = match bootinfo::BootInfo::read(boot_data_paddr, magic) {
        Ok(boot) => boot,
        Err(error) => {
            kprintln!("boot: {error}");
            exit::exit(abi::exit::FAILURE)
        }
    };
    match boot.protocol {
        bootinfo::Protocol::Pvh => {
            kprintln!(
                "start info at {:#x}, version {}",
                boot.info_paddr,
                boot.version
            )
        }
        bootinfo::Protocol::Linux => kprintln!(
            "boot_params at {:#x}, boot protocol {}.{:02}",
            boot.info_paddr,
            boot.version >> 8,
            boot.version & 0xff
        ),
        bootinfo::Protocol::Multiboot | bootinfo::Protocol::Multiboot2 => kprintln!(
            "{} information at {:#x}, from \"{}\"",
            boot.protocol.name(),
            boot.info_paddr,
            boot.loader
        ),
    }
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
    let options = parse_options(&cmdline);

    let selectors = cpu::init();
    exceptions::init();
    idt::init(&selectors);
    kprintln!(
        "[kernel] GDT and TSS loaded (#DF on IST1); IDT: 32 exception vectors, 16 IRQs and int 0x80"
    );

    let pmm = pmm::init(&boot);
    kprintln!(
        "[PMM] bitmap over [{:#x}, {:#x}): {} free frames ({} KiB)",
        pmm::BASE,
        pmm.managed_end,
        pmm.free_frames,
        pmm.free_frames * 4
    );
    if let Some(limit) = pmm.ignored_above {
        kprintln!("[PMM] RAM above {limit:#x} is not managed (the bitmap covers 64 GiB)");
    }
    let ram = boot
        .memory_map()
        .filter(|e| e.kind == abi::boot::e820::RAM)
        .map(|e| (e.addr, e.end()));
    let init = vmm::vmm_init(options.variant, ram);
    kprintln!(
        "[VMM] vmm_init ({}: {}): kernel PML4 at {:#x}, identity map 0-{} MiB (4 KiB pages up to 64 MiB), {} table frames; CR3 switched",
        options.variant.name(),
        options.variant.describe(),
        init.pml4,
        init.identity_end >> 20,
        init.table_frames
    );
    if let Some(end) = init.direct_map_end {
        kprintln!(
            "[VMM] direct map: RAM 0-{:#x} at {:#x} with 2 MiB pages",
            end,
            vmm::HHDM_BASE
        );
    }
    if options.variant == vmm::Variant::Recursive {
        kprintln!(
            "[VMM] PML4[{}] points at the PML4 itself",
            vmm::RECURSIVE_SLOT
        );
    }
    pmm::set_placement(options.placement);
    kprintln!(
        "[PMM] placement {}: frames come from the {} of RAM",
        options.placement_name,
        if options.placement == mm::pmm::Placement::High {
            "top"
        } else {
            "bottom"
        }
    );
    vmm::heap::init();
    workloads::run(&workloads::Settings {
        name: options.test,
        heap_bytes: options.heap_bytes,
        timer: options.timer,
        selectors,
    })
}

struct Options<'a> {
    test: &'a str,
    variant: vmm::Variant,
    placement: mm::pmm::Placement,
    placement_name: &'a str,
    heap_bytes: u64,
    timer: timer::Rate,
}

/// Values of the known keys; a bad value ends the run with BAD_COMMAND_LINE.
fn parse_options<'a>(cmdline: &Cmdline<'a>) -> Options<'a> {
    let bad = |key: &str, value: &str, expected: &dyn core::fmt::Display| -> ! {
        kprintln!("bad value {key}={value}; expected {expected}");
        exit::exit(abi::exit::BAD_COMMAND_LINE)
    };
    let variant_name = cmdline.get("vmm").unwrap_or("boxkernel");
    let variant = vmm::Variant::parse(variant_name).unwrap_or_else(|| {
        bad(
            "vmm",
            variant_name,
            &"boxkernel, boxkernel-nx, identity4g, hhdm or recursive",
        )
    });
    let placement_name = cmdline.get("pmm").unwrap_or("low");
    let placement = match placement_name {
        "low" => mm::pmm::Placement::Low,
        "high" => mm::pmm::Placement::High,
        other => bad("pmm", other, &"low or high"),
    };
    let heap_bytes = match cmdline.get("heap") {
        None => workloads::DEFAULT_HEAP,
        Some(text) => abi::cmdline::parse_size(text)
            .filter(|&n| n > 0)
            .unwrap_or_else(|| bad("heap", text, &"a size such as 96M")),
    };
    let mut timer = timer::Rate::DEFAULT;
    if let Some(text) = cmdline.get("hz") {
        timer.hz = text
            .parse()
            .ok()
            .filter(|hz| timer::Rate::HZ.contains(hz))
            .unwrap_or_else(|| bad("hz", text, &"a PIT rate from 19 to 596591"));
    }
    if let Some(text) = cmdline.get("ticks") {
        timer.ticks = text
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or_else(|| bad("ticks", text, &"a number of ticks, at least 1"));
    }
    if let Some(level) = cmdline.get("log")
        && !log::set_level(level)
    {
        bad("log", level, &"verbose or quiet")
    }
    Options {
        test: cmdline.get("test").unwrap_or("hello"),
        variant,
        placement,
        placement_name,
        heap_bytes,
        timer,
    }
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
