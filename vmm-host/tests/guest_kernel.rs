//! The guest kernel's scenarios (seeds 000 and 004) under KVM: each passes, and the facts a
//! kernel developer would check in its output hold.

mod common;
use common::{Run, kvm_or_skip, vmm};
use iced_x86::{Decoder, DecoderOptions, Register};
use object::{Object, ObjectSection, ObjectSymbol};

/// Run a scenario with its serial output on stdout; it must pass.
fn scenario(name: &str) -> Option<Run> {
    kvm_or_skip(name)?;
    let run = vmm(&["scenario", name]);
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!("== scenario {name}: PASS")),
        "{}",
        run.stdout
    );
    Some(run)
}

/// The hex number that follows `prefix` on the first line containing it.
fn hex_after(out: &str, prefix: &str) -> u64 {
    let rest = out
        .split_once(prefix)
        .unwrap_or_else(|| panic!("no {prefix:?} in:\n{out}"))
        .1;
    let digits: String = rest
        .trim_start()
        .trim_start_matches("0x")
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    u64::from_str_radix(&digits, 16).unwrap_or_else(|_| panic!("no hex after {prefix:?}"))
}

fn decimal_after(out: &str, prefix: &str) -> u64 {
    let rest = out.split_once(prefix).expect(prefix).1;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().expect(prefix)
}

#[test]
fn journey_installs_pfn_shifted_with_0x67() {
    let Some(run) = scenario("journey") else {
        return;
    };
    let out = &run.stdout;
    let pte = hex_after(out, "PTE[200] = ");
    let frame = hex_after(out, "[mm] frame ");
    let pfn = hex_after(out, "(PFN ");
    assert_eq!(pte & 0xfff, 0x067, "P RW US A D");
    assert_eq!(pte >> 12, pfn);
    assert_eq!(frame, pfn << 12);
    assert_eq!(pte >> 63, 0, "no NX on the journey's page");
    // The process exits only after reading the string back through its own mapping.
    assert!(out.contains("[user] offset world"), "{out}");
}

#[test]
fn segv_kills_the_process_and_the_kernel_carries_on() {
    let Some(run) = scenario("segv") else {
        return;
    };
    // The teardown gives back every frame the process had: 3 pages (code, stack, the
    // library page above the mmap area) and 10 tables (the PML4, and PDPT/PD/PT for the code,
    // stack and mmap slots).
    assert_eq!(
        decimal_after(&run.stdout, "torn down: "),
        13,
        "{}",
        run.stdout
    );
}

#[test]
fn boxkernel_faults_on_a_physical_address_above_the_identity_map_while_demand_paging() {
    let Some(run) = scenario("boxkernel-heap") else {
        return;
    };
    let out = &run.stdout;
    let cr2 = hex_after(out, "  CR2:");
    assert!(
        (64 << 20..256 << 20).contains(&cr2),
        "the faulting address {cr2:#x} is RAM above the 64 MiB identity map"
    );
    let outer = hex_after(out, "demand-paging kernel heap page ");
    assert_eq!(outer >> 47, 0x1_ffff, "the outer fault is a heap address");
    assert_eq!(
        hex_after(out, "[VMM] Demand paging: mapping kernel heap page at "),
        outer
    );
    // The nested fault hit a fresh page-table frame: a 2 MiB boundary of the heap.
    assert_eq!(outer % (2 << 20), 0, "{outer:#x}");

    // The guest counts its own exceptions: the nested fault is the last, the outer one the
    // one before it, and the guest's fatal report names the outer fault's RIP.
    let taken = decimal_after(out, "[kernel] exceptions taken: ");
    let outer_rip = hex_after(out, "1. #PF page fault at rip ");
    assert!(
        out.contains(&format!("\n[{}] vector 14 (#PF page fault)", taken - 1)),
        "the tap numbers the outer fault as the guest counts it: {out}"
    );

    // The host's explanation of the nested fault, worked out with no help from the guest.
    let explanation = tap_explanation(out, 14, 2);
    for fact in [
        format!("physical address {cr2:#x} dereferenced as virtual"),
        format!(
            "while the kernel was still handling exception [{}] #PF raised at {outer_rip:#x} for {:#x}",
            taken - 1,
            outer + 0xaa0
        ),
        "lies in RAM above the identity map, which ends at 0x4000000".into(),
        "It happened in memset+".into(),
        "called from guest_kernel::pmm::pmm_alloc_zero+".into(),
        "(guest-kernel/src/pmm.rs:".into(),
        format!("(page {outer:#x} being demand-paged)"),
    ] {
        assert!(
            explanation.contains(&fact),
            "{fact:?} not in: {explanation}"
        );
    }
}

/// The tap's explanation of the exception with `vector` at nesting `depth` among those still
/// being handled when the run ended.
fn tap_explanation(out: &str, vector: u8, depth: usize) -> String {
    let chain = out
        .split("-- still being handled when the run ended")
        .nth(1)
        .unwrap_or_else(|| panic!("no chain in the tap's report:\n{out}"));
    let header = format!("vector {vector} (");
    let mut lines = chain.lines().skip_while(|l| {
        !(l.starts_with('[')
            && l.contains(&header)
            && (depth == 1 || l.contains(&format!("nested at depth {depth}"))))
    });
    lines
        .find_map(|l| l.strip_prefix("  explanation  "))
        .unwrap_or_else(|| panic!("no explanation for vector {vector} in:\n{chain}"))
        .to_string()
}

/// The kernel ELF's symbol containing `addr`, demangled.
fn symbol_at(elf: &object::File, addr: u64) -> String {
    let symbol = elf
        .symbols()
        .filter(|s| s.address() <= addr && addr < s.address() + s.size())
        .max_by_key(|s| s.address())
        .expect("a symbol covers the address");
    symbol.name().expect("utf-8 name").to_string()
}

fn register_value(out: &str, register: Register) -> u64 {
    let name = format!("{register:?}").to_uppercase();
    hex_after(out, &format!("  {name:<3} "))
}

#[test]
fn boxkernel_nx_gps_in_the_table_walk_on_a_non_canonical_pointer() {
    let Some(run) = scenario("boxkernel-nx-heap") else {
        return;
    };
    let out = &run.stdout;
    let rip = hex_after(out, "  RIP:");
    let bytes = std::fs::read(vmm_host::GUEST_KERNEL_ELF).expect("kernel ELF");
    let elf = object::File::parse(&*bytes).expect("parse ELF");
    let function = symbol_at(&elf, rip);
    assert!(
        function.contains("vmm_get_or_create_table"),
        "RIP {rip:#x} is in {function}"
    );
    let text = elf.section_by_name(".text").expect(".text");
    let code = text.data().expect("text bytes");
    let start = usize::try_from(rip - text.address()).expect("offset");
    let mut decoder = Decoder::with_ip(64, &code[start..], rip, DecoderOptions::NONE);
    let instruction = decoder.decode();
    let base = instruction.memory_base();
    assert_ne!(base, Register::None, "{instruction} has a memory operand");
    let pointer = register_value(out, base.full_register());
    let canonical = pointer >> 47 == 0 || pointer >> 47 == 0x1_ffff;
    assert!(!canonical, "{instruction}: {base:?} = {pointer:#x}");
    assert_eq!(pointer >> 63, 1, "bit 63 is the entry's NX bit");

    let explanation = tap_explanation(out, 13, 1);
    for fact in [
        "which is not canonical (bits 63..47 differ)".to_string(),
        format!("= {pointer:#x} is a page-table entry value used as a pointer"),
        "with flag bits NX".into(),
        "It happened in guest_kernel::vmm::vmm_get_or_create_table+".into(),
        "(guest-kernel/src/vmm/mod.rs:".into(),
    ] {
        assert!(
            explanation.contains(&fact),
            "{fact:?} not in: {explanation}"
        );
    }
}

fn fixed_variant(name: &str) {
    let Some(run) = scenario(name) else {
        return;
    };
    let above = decimal_after(&run.stdout, "identity map in use: ");
    assert!(above > 0, "{}", run.stdout);
    let highest = hex_after(&run.stdout, "highest frame ");
    assert!(highest >= 64 << 20, "{highest:#x}");
}

#[test]
fn identity4g_completes_the_heap_with_frames_above_64_mib() {
    fixed_variant("identity4g-heap");
}

#[test]
fn hhdm_completes_the_heap_with_frames_above_64_mib() {
    fixed_variant("hhdm-heap");
}

#[test]
fn recursive_completes_the_heap_with_frames_above_64_mib() {
    fixed_variant("recursive-heap");
}

/// GRUB's own checker as the oracle for the bundled kernel's Multiboot 1 and 2 headers, with
/// a spoiled copy to show it refuses what it should.
#[test]
fn grub_accepts_both_multiboot_headers_of_the_bundled_kernel() {
    let found = std::process::Command::new("grub-file")
        .arg("--help")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        common::skip(
            "grub_multiboot_headers",
            "grub-file is not installed (.ci/run installs Debian's grub-common)",
        );
        return;
    }
    let check = |kind: &str, path: &std::path::Path| {
        std::process::Command::new("grub-file")
            .arg(format!("--is-x86-{kind}"))
            .arg(path)
            .status()
            .expect("run grub-file")
            .success()
    };
    let kernel = std::path::Path::new(vmm_host::GUEST_KERNEL_ELF);
    assert!(
        check("multiboot", kernel),
        "GRUB refuses the Multiboot 1 header"
    );
    assert!(
        check("multiboot2", kernel),
        "GRUB refuses the Multiboot 2 header"
    );
    let mut spoiled = std::fs::read(kernel).unwrap();
    let at = spoiled
        .windows(4)
        .position(|w| w == 0xe852_50d6u32.to_le_bytes())
        .expect("the Multiboot 2 magic");
    spoiled[at + 12] ^= 1; // its checksum
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("spoiled.elf");
    std::fs::write(&bad, &spoiled).unwrap();
    assert!(!check("multiboot2", &bad), "a bad checksum must be refused");
    assert!(
        check("multiboot", &bad),
        "the Multiboot 1 header is untouched"
    );
}
