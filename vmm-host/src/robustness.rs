//! Property tests that feed the host what a broken guest or a careless user would: page
//! tables of random words under a random CR3, random instruction bytes and registers at a
//! fault, scenario files with random damage, kernel ELFs with flipped and cut bytes. The
//! properties: nothing panics, walks stay within 4 levels, audits within their budget, and
//! every error is one line.
//!
//! These are proptest runs inside `cargo test`, from generators that aim at the interesting
//! cases; the cargo-fuzz targets (`fuzzing`, `fuzz/`) reach deeper by following coverage.
//! `PROPTEST_CASES=N cargo test -p vmm-host --lib robustness` runs more.

use crate::addr::{Gpa, Gva};
use crate::analysis::{Context, analyse};
use crate::layout::RamLayout;
use crate::loader::KernelImage;
use crate::paging::{AuditOptions, Cr3, Format, PagingMode, audit_with, walk};
use crate::scenario::Scenario;
use crate::tap::{ControlRegisters, ExceptionRecord, Frame};
use crate::virt::AddressSpace;
use crate::virt::GuestView;
use kvm_bindings::{kvm_regs, kvm_sregs};
use proptest::prelude::*;
use std::path::Path;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const RAM: u64 = 1 << 20;

/// `PROPTEST_CASES` when set, else `default`: CI runs the defaults (a few seconds).
pub(crate) fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default);
    ProptestConfig::with_cases(cases)
}

/// A page-table word a fuzzer should try: anything, a present entry pointing inside RAM,
/// one pointing just past it, or one pointing at the table it is in.
fn entry() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        (0..8u64).prop_map(|frame| frame << 12 | 0x3),
        (0..8u64).prop_map(|frame| frame << 12 | 0x8000_0000_0000_0083),
        (0..RAM / 4096).prop_map(|frame| frame << 12 | 0x3),
        (0..RAM / 4096).prop_map(|frame| frame << 12 | 0x83),
        (RAM / 4096..RAM / 4096 + 16).prop_map(|frame| frame << 12 | 0x7),
        Just(0x1003u64),
    ]
}

/// RAM holding `writes` (page-aligned table frame, index, entry).
fn ram_with(writes: &[(u64, u64, u64)]) -> GuestMemoryMmap {
    let ram = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
    for &(frame, index, value) in writes {
        let at = (frame << 12) + index * 8;
        let _ = ram.write_obj(value, GuestAddress(at));
    }
    ram
}

fn writes() -> impl Strategy<Value = Vec<(u64, u64, u64)>> {
    prop::collection::vec((0..8u64, 0..512u64, entry()), 0..96)
}

fn cr3() -> impl Strategy<Value = u64> {
    prop_oneof![
        (0..8u64).prop_map(|f| f << 12),
        any::<u64>(),
        Just(RAM + 0x1000)
    ]
}

proptest! {
    #![proptest_config(cases(1024))]

    /// Any sequence of port accesses, to the PC's devices or between them: no panic, the
    /// screen still 25 rows of at most 80 characters, a VGA register still reads back.
    #[test]
    fn port_sequences_never_break_the_devices(
        accesses in prop::collection::vec((0x0u16..0x400, any::<u8>(), any::<bool>(), 1usize..=4), 0..400),
        text in prop::collection::vec(any::<u8>(), 0..0x8000),
    ) {
        let sink = crate::console::ConsoleSink::new(false, None, 4096).unwrap();
        let mut devices = crate::devices::Devices::new(sink).unwrap();
        devices.set_clock(crate::devices::Clock::Fixed(std::time::Duration::from_secs(1)));
        for (port, value, write, len) in accesses {
            if write {
                let _ = devices.port_write(port, &vec![value; len]);
            } else {
                let mut buf = vec![0u8; len];
                devices.port_read(port, &mut buf);
            }
        }
        let screen = crate::screen::Screen::from_buffer(&text, devices.vga.text_mode());
        let lines = screen.lines();
        prop_assert_eq!(lines.len(), 25);
        prop_assert!(lines.iter().all(|l| l.chars().count() <= 80));
        prop_assert!(screen.to_string().lines().all(|l| l.chars().count() == 84));
        devices.port_write(0x3d4, &[0x0e]);
        devices.port_write(0x3d5, &[0x12]);
        let mut back = [0u8];
        devices.port_read(0x3d5, &mut back);
        prop_assert_eq!(back[0], 0x12);
    }

    #[test]
    fn walks_and_audits_of_random_tables_end_within_bounds(
        mut writes in writes(),
        cr3 in cr3(),
        chain in prop::collection::vec((0..512u64, entry()), 4),
        nxe in any::<bool>(),
        mut addresses in prop::collection::vec(any::<u64>(), 8),
    ) {
        // One address whose walk follows entries written on its own path, so that walks
        // go deep rather than stop at the first random word.
        let mut table = cr3 >> 12;
        let mut address = 0u64;
        for (level, (index, value)) in chain.into_iter().enumerate() {
            if table >= 8 {
                break;
            }
            writes.push((table, index, value));
            address |= index << (39 - 9 * level);
            table = (value & 0x000f_ffff_ffff_f000) >> 12;
        }
        if address & (1 << 47) != 0 {
            address |= 0xffff_0000_0000_0000;
        }
        addresses.push(address);
        let ram = ram_with(&writes);
        let view = GuestView::new(&ram, None);
        let long = PagingMode::new(crate::paging::CpuPaging::with_phys_bits(46), if nxe { 0xd00 } else { 0x500 });
        let cr3 = Cr3::new(cr3);
        // The same garbage read in every format: each ends within its levels and its budget.
        for format in [Format::FourLevel, Format::FiveLevel, Format::Pae, Format::TwoLevel { pse: nxe }] {
            let mode = long.with_format(format);
            for &address in &addresses {
                let w = walk(&view, mode, cr3, Gva::new(address));
                prop_assert!(w.steps.len() <= format.levels().len());
                prop_assert!(!w.to_string().is_empty());
            }
            let options = AuditOptions { max_entries: 40_000, ..AuditOptions::default() };
            let audit = audit_with(&view, mode, cr3, &[(Gpa::new(0), RAM)], &options);
            prop_assert!(audit.entries_visited <= options.max_entries + 1024);
            for finding in &audit.findings {
                prop_assert!(!finding.to_string().contains('\n'));
            }
        }
    }

    #[test]
    fn explanations_of_random_faults_are_one_paragraph(
        writes in writes(),
        code in prop::collection::vec(any::<u8>(), 16),
        vector in prop::sample::select(vec![0u8, 6, 8, 13, 14, 3, 17]),
        error in any::<u64>(),
        cr2 in any::<u64>(),
        rip in prop_oneof![(0..RAM - 16), any::<u64>()],
        registers in prop::collection::vec(any::<u64>(), 6),
        depth in 1usize..4,
    ) {
        // An identity map of the first 2 MiB so that RIP and operands are often mapped.
        let mut all = vec![(1, 0, 0x2003), (2, 0, 0x3003), (3, 0, 0x4003)];
        all.extend((0..256u64).map(|page| (4, page, page << 12 | 0x63)));
        all.extend(writes);
        let ram = ram_with(&all);
        let _ = ram.write_slice(&code, GuestAddress(rip));
        let regs = kvm_regs {
            rax: registers[0], rbx: registers[1], rdi: registers[2], rsi: registers[3],
            rsp: registers[4], rbp: registers[5], rip, ..Default::default()
        };
        let record = ExceptionRecord {
            seq: 1,
            vector,
            shared_handler: false,
            handler: Gva::new(0x1000),
            frame: Some(Frame {
                at: Gva::new(regs.rsp),
                error: abi::exception::pushes_error_code(vector).then_some(error),
                rip: Gva::new(rip),
                cs: 0x08,
                rflags: 0x2,
                rsp: Gva::new(regs.rsp),
                ss: 0x10,
                real_mode: false,
            }),
            frame_error: None,
            control: ControlRegisters { cr0: 0x8000_0011, cr2, cr3: 0x1000, cr4: 0x20, efer: 0xd00 },
            regs,
            segments: crate::registers::SegmentBases::default(),
            depth,
            outer: vec![],
        };
        let space = AddressSpace {
            view: GuestView::new(&ram, None),
            mode: PagingMode::new(crate::paging::CpuPaging::with_phys_bits(46), 0xd00),
            cr3: Cr3::new(0x1000),
        };
        let regions = [(Gpa::new(0), RAM)];
        let ctx = Context::new(space, &regions, None, None, false);
        let (analysis, _) = analyse(&record, &ctx);
        prop_assert!(!analysis.explanation.is_empty());
        prop_assert!(!analysis.explanation.contains('\n'), "{}", analysis.explanation);
        prop_assert!(analysis.walks.iter().all(|w| w.walk.steps.len() <= 4));
    }

    /// A shutdown replayed on garbage: random page tables, IDT, GDT and TSS bytes and
    /// descriptor-table registers. The replay ends within its bound, every reason is one line.
    #[test]
    fn shutdown_replays_of_random_tables_end_within_bounds(
        writes in writes(),
        tables in prop::collection::vec(any::<u64>(), 64),
        code in prop::collection::vec(any::<u8>(), 16),
        limits in (any::<u16>(), any::<u16>(), any::<u32>()),
        bases in (0..RAM, 0..RAM, prop_oneof![(0..RAM), any::<u64>()]),
        rsp in prop_oneof![(0..RAM), any::<u64>()],
        cpl in 0u8..4,
    ) {
        let mut all = vec![(1, 0, 0x2003), (2, 0, 0x3003), (3, 0, 0x4003)];
        all.extend((0..256u64).map(|page| (4, page, page << 12 | 0x63)));
        all.extend(writes);
        let ram = ram_with(&all);
        let (idt, gdt, tss) = bases;
        for (i, word) in tables.iter().enumerate() {
            let at = [idt, gdt, tss % RAM][i % 3] + (i as u64 / 3) * 8;
            let _ = ram.write_obj(*word, GuestAddress(at));
        }
        let rip = 0x8000;
        let _ = ram.write_slice(&code, GuestAddress(rip));
        let regs = kvm_regs { rip, rsp, ..Default::default() };
        let mut sregs = kvm_sregs {
            cr0: 0x8001_0011, cr3: 0x1000, cr4: 0x20, efer: 0xd00, ..Default::default()
        };
        sregs.cs.dpl = cpl;
        (sregs.idt.base, sregs.idt.limit) = (idt, limits.0);
        (sregs.gdt.base, sregs.gdt.limit) = (gdt, limits.1);
        (sregs.tr.base, sregs.tr.limit) = (tss, limits.2);
        let machine = crate::delivery::Machine {
            space: AddressSpace {
                view: GuestView::new(&ram, None),
                mode: PagingMode::new(crate::paging::CpuPaging::with_phys_bits(46), 0xd00),
                cr3: Cr3::new(0x1000),
            },
            regs: &regs,
            sregs: &sregs,
        };
        match crate::delivery::first_exception(&machine) {
            Err(why) => prop_assert!(!why.contains('\n'), "{why}"),
            Ok(first) => {
                let chain = crate::delivery::replay(&machine, first);
                prop_assert!(!chain.attempts.is_empty() && chain.attempts.len() <= 8);
                for attempt in &chain.attempts {
                    prop_assert!(!attempt.exception.why.contains('\n'), "{}", attempt.exception.why);
                }
                let _ = chain.to_string();
            }
        }
    }

    #[test]
    fn damaged_scenario_files_are_one_line_errors(
        at in any::<prop::sample::Index>(),
        cut in 0usize..8,
        insert in "[\\x00-\\x7f\u{80}-\u{10ffff}]{0,6}",
    ) {
        let base = include_str!("../../scenarios/journey.toml");
        let mut text = base.to_string();
        let mut at = at.index(text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        let mut end = (at + cut).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.replace_range(at..end, &insert);
        if let Err(e) = Scenario::parse(Path::new("scenarios/journey.toml"), &text) {
            let message = e.to_string();
            prop_assert!(message.starts_with("scenarios/journey.toml"), "{message}");
            prop_assert!(!message.contains('\n'), "{message:?}");
        }
    }

    #[test]
    fn arbitrary_text_is_never_a_scenario_that_panics(text in "\\PC{0,300}") {
        if let Err(e) = Scenario::parse(Path::new("s/x.toml"), &text) {
            prop_assert!(!e.to_string().contains('\n'));
        }
    }
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn damaged_kernel_elfs_are_refused_in_one_line(
        flips in prop::collection::vec((0usize..4096, any::<u8>()), 1..8),
        truncate in prop::option::of(0usize..8192),
    ) {
        let mut data = std::fs::read(crate::GUEST_KERNEL_ELF).expect("the bundled kernel");
        for (at, value) in flips {
            if let Some(byte) = data.get_mut(at) {
                *byte = value;
            }
        }
        if let Some(len) = truncate {
            data.truncate(len);
        }
        let ram = RamLayout::new(128 << 20, None).unwrap();
        if let Err(e) = KernelImage::inspect_bytes(Path::new("k.elf"), data.clone(), &ram, None) {
            prop_assert!(!e.to_string().contains('\n'), "{e}");
        }
    }

    /// Multiboot headers with a good checksum and random flags and address fields: refused
    /// in one line, or accepted only with everything inside RAM and clear of the boot data.
    #[test]
    fn random_multiboot_headers_load_inside_ram_or_are_refused_in_one_line(
        flags in prop_oneof![Just(0x1_0003u32), any::<u32>()],
        load in prop_oneof![Just(0x10_0000u32), 0u32..0x400_0000, any::<u32>()],
        deltas in prop::array::uniform4(prop_oneof![Just(None), Just(Some(0u32)), (0u32..0x2000).prop_map(Some)]),
        noise in prop::array::uniform4(any::<u32>()),
        offset in 0usize..64,
        tail in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        // Each field is sensible (near load_addr, or 0) or random.
        let near = |i: usize, zero_ok: bool| match deltas[i] {
            None => noise[i],
            Some(0) if zero_ok => 0,
            Some(d) => load.wrapping_add(d),
        };
        let header_addr = match deltas[0] {
            Some(_) => load.wrapping_add(4 * offset as u32),
            None => noise[0],
        };
        let fields = [header_addr, load, near(1, true), near(2, true), near(3, false)];
        let magic = abi::multiboot::HEADER_MAGIC;
        let checksum = 0u32.wrapping_sub(magic).wrapping_sub(flags);
        let mut data = vec![0u8; offset * 4];
        for word in [magic, flags, checksum].iter().chain(&fields) {
            data.extend(word.to_le_bytes());
        }
        data.extend(tail);
        let ram = RamLayout::new(64 << 20, None).unwrap();
        match KernelImage::inspect_bytes(Path::new("k.bin"), data, &ram, None) {
            Err(e) => prop_assert!(!e.to_string().contains('\n'), "{e}"),
            Ok(kernel) => {
                for (start, end) in &kernel.segments {
                    prop_assert!(ram.contains(*start, end.raw() - start.raw()));
                    prop_assert!(start.raw() >= 0xa000 || end.raw() <= 0x6000);
                }
                prop_assert!(kernel.segments.iter().any(|(s, e)| *s <= kernel.entry && kernel.entry < *e));
            }
        }
    }

    #[test]
    fn random_bytes_are_never_a_kernel(data in prop::collection::vec(any::<u8>(), 0..2048)) {
        let ram = RamLayout::new(128 << 20, None).unwrap();
        let mut data = data;
        // Half of them start like an ELF, to get past the magic.
        if data.len() > 4 && data[0] & 1 == 0 {
            data[..4].copy_from_slice(b"\x7fELF");
        }
        prop_assert!(KernelImage::inspect_bytes(Path::new("k.elf"), data.clone(), &ram, None).is_err());
    }
}
