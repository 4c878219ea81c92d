//! The explanation rules on a small hand-built tree: identity map of 0–2 MiB in 4 KiB pages,
//! a heap at 0xffff800000000000 whose PT lives at 3 MiB (above the identity map).

use super::*;
use crate::paging::{Cr3, PagingMode, WalkEnd};
use crate::tap::{ControlRegisters, ExceptionRecord, Frame};
use crate::virt::GuestView;
use kvm_bindings::kvm_regs;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const PML4: u64 = 0x1000;
const HEAP_PT: u64 = 0x30_0000;
const HEAP: u64 = 0xffff_8000_0000_0000;

fn ram() -> GuestMemoryMmap {
    let ram = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 8 << 20)]).unwrap();
    let put = |at: u64, value: u64| ram.write_obj(value, GuestAddress(at)).unwrap();
    put(PML4, 0x2003); // PML4[0] -> PDPT 0x2000
    put(0x2000, 0x3003); // PDPT[0] -> PD 0x3000
    put(0x3000, 0x4003); // PD[0] -> PT 0x4000: identity 0-2 MiB
    for page in 0..512u64 {
        put(0x4000 + page * 8, page << 12 | 0x63);
    }
    put(PML4 + 256 * 8, 0x5003); // PML4[256] -> PDPT 0x5000 (heap)
    put(0x5000, 0x6003); // -> PD 0x6000
    put(0x6000, HEAP_PT | 0x3); // PD[0] -> PT at 3 MiB
    put(HEAP_PT, 0x70_0063); // heap page 0 -> 7 MiB
    ram
}

fn record(vector: u8, error: Option<u64>, rip: u64, cr2: u64, regs: kvm_regs) -> ExceptionRecord {
    ExceptionRecord {
        seq: 1,
        vector,
        shared_handler: false,
        handler: Gva::new(0x1000),
        frame: Some(Frame {
            at: Gva::new(0x8000),
            error,
            rip: Gva::new(rip),
            cs: 0x08,
            rflags: 0x2,
            rsp: Gva::new(0x8100),
            ss: 0x10,
            real_mode: false,
        }),
        frame_error: None,
        control: ControlRegisters {
            // PG, WP, ET, PE: what a 64-bit kernel runs with.
            cr0: 0x8001_0011,
            cr2,
            cr3: PML4,
            cr4: 0x20,
            efer: 0xd00,
        },
        regs: kvm_regs {
            rip,
            rsp: 0x8100,
            ..regs
        },
        segments: crate::registers::SegmentBases::default(),
        depth: 1,
        outer: vec![],
    }
}

fn explain_on(ram: &GuestMemoryMmap, code: &[u8], record: &ExceptionRecord) -> Analysis {
    ram.write_slice(code, GuestAddress(record.regs.rip))
        .unwrap();
    let regions = [(Gpa::new(0), 8u64 << 20)];
    let space = AddressSpace {
        view: GuestView::new(ram, None),
        mode: PagingMode::of_vcpu(
            crate::paging::CpuPaging::with_phys_bits(48),
            record.control.cr0,
            record.control.cr4,
            record.control.efer,
        ),
        cr3: Cr3::new(PML4),
    };
    let ctx = Context::new(space, &regions, None, None, false);
    analyse(record, &ctx).0
}

#[test]
fn a_physical_page_table_frame_used_as_a_pointer() {
    let ram = ram();
    // mov [rdi], rax with rdi = the heap PT's physical address.
    let regs = kvm_regs {
        rdi: HEAP_PT,
        ..Default::default()
    };
    let r = record(14, Some(0x2), 0x1_0000, HEAP_PT, regs);
    let a = explain_on(&ram, &[0x48, 0x89, 0x07], &r);
    assert!(
        a.explanation.starts_with(
            "physical address 0x300000 dereferenced as virtual: 0x300000 is a page-table frame (the PT table used to map 0xffff800000000000)"
        ),
        "{}",
        a.explanation
    );
    assert_eq!(a.walks[0].what, WalkOf::Cr2);
    assert_eq!(
        a.walks[0].walk.end,
        WalkEnd::NotPresent {
            level: crate::paging::Level::Pd
        }
    );
}

#[test]
fn ram_above_the_identity_map_used_as_a_pointer() {
    let ram = ram();
    let regs = kvm_regs {
        rdi: 0x50_0000,
        ..Default::default()
    };
    let r = record(14, Some(0x2), 0x1_0000, 0x50_0000, regs);
    let a = explain_on(&ram, &[0x48, 0x89, 0x07], &r);
    assert!(
        a.explanation
            .contains("0x500000 lies in RAM above the identity map, which ends at 0x200000"),
        "{}",
        a.explanation
    );
}

#[test]
fn an_entry_value_with_nx_used_as_a_pointer_is_non_canonical() {
    let ram = ram();
    // mov rax, [r12+rax*8] with r12 = the heap PML4 entry's value with NX kept.
    let regs = kvm_regs {
        r12: 0x8000_0000_0000_5003,
        rax: 0,
        ..Default::default()
    };
    let r = record(13, Some(0), 0x1_0000, 0, regs);
    let a = explain_on(&ram, &[0x49, 0x8b, 0x04, 0xc4], &r);
    assert!(
        a.explanation.starts_with("operand [r12+rax*8] of `mov rax,[r12+rax*8]` addresses 0x8000000000005003, which is not canonical"),
        "{}",
        a.explanation
    );
    assert!(
        a.explanation.contains("r12 = 0x8000000000005003 is a page-table entry value used as a pointer: frame 0x5000 with flag bits P RW NX; the frame is itself a PDPT table (for 0xffff800000000000)"),
        "{}",
        a.explanation
    );
}

#[test]
fn a_write_to_a_read_only_page_is_a_protection_fault() {
    let ram = ram();
    ram.write_obj(0x20_0061u64, GuestAddress(HEAP_PT + 8))
        .unwrap(); // heap page 1: read-only
    let regs = kvm_regs {
        rdi: HEAP + 0x1010,
        ..Default::default()
    };
    let r = record(14, Some(0x3), 0x1_0000, HEAP + 0x1010, regs);
    let a = explain_on(&ram, &[0x48, 0x89, 0x07], &r);
    assert_eq!(
        a.explanation,
        "protection fault at 0xffff800000001010: a write to a read-only page, which faults in the kernel because CR0.WP is set (the page maps to 0x200010)."
    );
}

#[test]
fn garbage_in_the_tables_is_explained_not_a_panic() {
    let ram = ram();
    // PD[0] of the heap points outside RAM; PD[1] has reserved bits.
    ram.write_obj(0x1_0000_0003u64, GuestAddress(0x6000))
        .unwrap();
    ram.write_obj(0x000f_0000_0000_2003u64, GuestAddress(0x6008))
        .unwrap();
    let r = record(14, Some(0x0), 0x1_0000, HEAP, kvm_regs::default());
    let a = explain_on(&ram, &[0x48, 0x8b, 0x07], &r);
    assert!(
        a.explanation.contains("outside guest RAM"),
        "{}",
        a.explanation
    );
    let r = record(
        14,
        Some(0x9),
        0x1_0000,
        HEAP + (2 << 20),
        kvm_regs::default(),
    );
    let a = explain_on(&ram, &[0x48, 0x8b, 0x07], &r);
    assert!(a.explanation.contains("reserved bits"), "{}", a.explanation);
}

#[test]
fn ram_regions_are_half_open_and_the_hole_between_them_is_not_ram() {
    let ram = ram();
    let regions = [(Gpa::new(0), 0xc000_0000u64), (Gpa::new(1 << 32), 1 << 30)];
    let space = AddressSpace {
        view: GuestView::new(&ram, None),
        mode: PagingMode::new(crate::paging::CpuPaging::with_phys_bits(48), 0xd00),
        cr3: Cr3::new(PML4),
    };
    let ctx = Context::new(space, &regions, None, None, false);
    for (gpa, inside) in [
        (0, true),
        (0xbfff_ffff, true),
        (0xc000_0000, false),
        (0xffff_ffff, false),
        (1 << 32, true),
        ((1 << 32) + (1 << 30) - 1, true),
        ((1 << 32) + (1 << 30), false),
    ] {
        assert_eq!(ctx.in_ram(Gpa::new(gpa)), inside, "{gpa:#x}");
    }
}

#[test]
fn faults_that_stop_at_different_levels_are_different_kinds() {
    let ram = ram();
    // `mov [rax], rax` at a heap page (mapped) and far above it (PD entry missing).
    let code = [0x48, 0x89, 0x00];
    let kind_at = |cr2: u64| {
        let regs = kvm_regs {
            rax: cr2,
            ..Default::default()
        };
        explain_on(&ram, &code, &record(14, Some(0x2), 0x9000, cr2, regs)).kind()
    };
    let mapped = kind_at(HEAP);
    let unmapped = kind_at(HEAP + (1 << 30));
    assert!(!mapped.trim().is_empty() && !unmapped.trim().is_empty());
    assert_ne!(mapped, unmapped);
}

/// The diff of a walk of `gva` across `handler`, which changes guest RAM.
fn diff_across(gva: u64, at_end: bool, handler: impl FnOnce(&GuestMemoryMmap)) -> Diff {
    let ram = ram();
    let space = |ram| AddressSpace {
        view: GuestView::new(ram, None),
        mode: PagingMode::new(crate::paging::CpuPaging::with_phys_bits(48), 0xd00),
        cr3: Cr3::new(PML4),
    };
    let before = space(&ram);
    let snapshot = Snapshot {
        seq: 1,
        walk: before.walk(Gva::new(gva)),
        mode: before.mode,
    };
    handler(&ram);
    snapshot.resolve(&space(&ram), at_end)
}

#[test]
fn the_diff_shows_the_entry_the_handler_installed_and_where_it_now_maps() {
    let diff = diff_across(HEAP + 0x1000, false, |ram| {
        ram.write_obj(0x80_0063u64, GuestAddress(HEAP_PT + 8))
            .unwrap();
    });
    assert_eq!(
        diff.to_string(),
        "  changed while the fault was handled (walk of 0xffff800000001000):\n    \
         PTE[1]    at 0x300008: 0x0000000000000000 (not present), PFN 0x0 -> 0x0000000000800063 (P RW A D), PFN 0x800\n    \
         0xffff800000001000 now maps to physical 0x800000\n"
    );
}

#[test]
fn a_table_the_fault_never_reached_is_shown_as_not_reached() {
    // PD[1] (HEAP + 2 MiB) is missing: the handler adds it and the PT entry below it.
    let diff = diff_across(HEAP + (2 << 20), false, |ram| {
        ram.write_obj(0x7000u64 | 0x3, GuestAddress(0x6008))
            .unwrap();
        ram.write_obj(0x90_0003u64, GuestAddress(0x7000)).unwrap();
    });
    let text = diff.to_string();
    assert!(text.contains("PMD[1]    at 0x6008: 0x0000000000000000 (not present), PFN 0x0 -> 0x0000000000007003 (P RW), PFN 0x7"), "{text}");
    assert!(
        text.contains("PTE[0]    at 0x7000: (not reached) -> 0x0000000000900003 (P RW), PFN 0x900"),
        "{text}"
    );
}

#[test]
fn accessed_and_dirty_bits_alone_are_the_cpus_not_the_handlers() {
    let change = |old: Option<u64>, new: u64| Change {
        level: crate::paging::Level::Pt,
        index: 0,
        entry_address: Gpa::new(HEAP_PT),
        old: old.map(crate::paging::Pte::new),
        new: crate::paging::Pte::new(new),
    };
    assert!(change(Some(0x80_0003), 0x80_0063).hardware_only());
    assert!(change(Some(0x80_0023), 0x80_0063).hardware_only());
    assert!(
        !change(Some(0x80_0063), 0x80_0003).hardware_only(),
        "cleared, not set"
    );
    assert!(
        !change(Some(0x80_0003), 0x80_0067).hardware_only(),
        "US too"
    );
    assert!(
        !change(Some(0x80_0003), 0x90_0063).hardware_only(),
        "a new frame"
    );
    assert!(
        !change(None, 0x80_0063).hardware_only(),
        "not reached before"
    );
    let diff = diff_across(HEAP, false, |ram| {
        ram.write_obj(0x70_0003u64, GuestAddress(HEAP_PT)).unwrap();
    });
    // 0x63 -> 0x03 is the handler clearing A and D, shown as a change.
    assert!(
        diff.to_string().contains("PTE[0]    at 0x300000:"),
        "{diff}"
    );
    let diff = diff_across(HEAP, false, |ram| {
        ram.write_obj(0x6023u64, GuestAddress(0x5000)).unwrap();
    });
    assert_eq!(
        diff.to_string(),
        "  changed while the fault was handled (walk of 0xffff800000000000):\n    \
         accessed/dirty bits set by the CPU on PUD[0]\n    \
         0xffff800000000000 now maps to physical 0x700000\n"
    );
}

#[test]
fn nothing_changed_says_what_that_means_then_and_at_the_end() {
    let unchanged = diff_across(HEAP + 0x1000, false, |_| {});
    assert_eq!(
        unchanged.to_string(),
        "  changed: nothing on the walk of 0xffff800000001000 (a handler that returns now faults again)\n"
    );
    let at_end = diff_across(HEAP + 0x1000, true, |_| {});
    assert_eq!(
        at_end.to_string(),
        "  changed: nothing on the walk of 0xffff800000001000 by the end of the run\n"
    );
}

/// The first sentence of the explanation of a #PF with `error` at `cr2`, through `mov
/// [rdi], rax` at 0x10000, after `setup` changed the tables.
fn pf_explanation(
    error: u64,
    cr2: u64,
    efer_nxe: bool,
    setup: impl FnOnce(&GuestMemoryMmap),
) -> String {
    let ram = ram();
    setup(&ram);
    let regs = kvm_regs {
        rdi: cr2,
        ..Default::default()
    };
    let mut r = record(14, Some(error), 0x1_0000, cr2, regs);
    if !efer_nxe {
        r.control.efer = 0x500;
    }
    explain_on(&ram, &[0x48, 0x89, 0x07], &r).explanation
}

#[test]
fn each_page_fault_cause_is_named() {
    let put = |at: u64, value: u64| {
        move |ram: &GuestMemoryMmap| ram.write_obj(value, GuestAddress(at)).unwrap()
    };
    let cases: Vec<(String, &str)> = vec![
        (
            // The tree identity-maps page 0; a kernel that cares leaves it unmapped.
            pf_explanation(0x2, 0x18, true, put(0x4000, 0)),
            "null pointer dereference: a kernel write at 0x18, offset 0x18 from address 0",
        ),
        (
            pf_explanation(0x6, HEAP + 0x1000, true, |_| {}),
            "a user write at 0xffff800000001000 found a not-present PTE (PTE[1] in the PT at 0x300000): the walk stops at the PTE level, so the page must be demand-paged",
        ),
        (
            // Kernel, lower half, but past RAM: not a physical address used as virtual.
            pf_explanation(0x2, 0x4000_0000, true, |_| {}),
            "a kernel write at 0x40000000 found a not-present PUD (PUD[1] in the PDPT at 0x2000)",
        ),
        (
            pf_explanation(0x5, HEAP + 0x10, true, |_| {}),
            "protection fault at 0xffff800000000010: a user access to a supervisor page (the page maps to 0x700010)",
        ),
        (
            pf_explanation(0x11, HEAP + 0x10, true, put(HEAP_PT, 0x8000_0000_0070_0063)),
            "protection fault at 0xffff800000000010: an instruction fetch from a no-execute page",
        ),
        (
            // Present, writable, kernel: nothing forbids it now.
            pf_explanation(0x3, HEAP + 0x10, true, |_| {}),
            "a kernel write at 0xffff800000000010 faulted, but the tables allow it now",
        ),
        (
            pf_explanation(0x9, HEAP + 0x10, false, put(HEAP_PT, 0x8000_0000_0070_0063)),
            "has reserved bits 0x8000000000000000 set (bit 63, NX, is reserved because EFER.NXE is clear)",
        ),
        (
            // PML4[300] points back at the PML4: every level below reads the PML4 again.
            pf_explanation(
                0x2,
                0xffff_9600_0000_0000,
                true,
                put(PML4 + 300 * 8, PML4 | 0x3),
            ),
            "The walk went through a self-referencing entry: its PDPT table is the PML4 itself (0x1000), so PML4[300] points back at the PML4",
        ),
    ];
    for (explanation, phrase) in cases {
        assert!(
            explanation.contains(phrase),
            "{phrase:?} not in {explanation:?}"
        );
    }
    // The reserved-bit note is only for NX with NXE clear.
    let plain = pf_explanation(0x9, HEAP + 0x10, true, put(HEAP_PT, 0x70_0063 | 1 << 51));
    assert!(
        plain.contains("has reserved bits 0x8000000000000 set: the CPU refuses"),
        "{plain}"
    );
}

/// The explanation of `vector` (error code `error`) raised at 0x10000 running `code`, with
/// the interrupted code at `cs` and RSP and CR2 as given.
fn explanation_of(
    vector: u8,
    error: Option<u64>,
    code: &[u8],
    cs: u16,
    rsp: u64,
    cr2: u64,
) -> String {
    let ram = ram();
    let regs = kvm_regs {
        rsp,
        ..Default::default()
    };
    let mut r = record(vector, error, 0x1_0000, cr2, regs);
    if let Some(frame) = &mut r.frame {
        frame.cs = cs;
        frame.rsp = Gva::new(rsp);
    }
    r.regs.rsp = rsp;
    explain_on(&ram, code, &r).explanation
}

#[test]
fn ud_de_df_and_gp_without_an_operand_are_named() {
    let ud2 = explanation_of(6, None, &[0x0f, 0x0b], 0x08, 0x8100, 0);
    assert!(
        ud2.starts_with("`ud2`: the code raised #UD on purpose"),
        "{ud2}"
    );
    let int80_user = explanation_of(6, None, &[0xcd, 0x80], 0x23, 0x8100, 0);
    assert!(
        int80_user.starts_with("`int 80h` from ring 3 arrived as #UD"),
        "{int80_user}"
    );
    let int80_kernel = explanation_of(6, None, &[0xcd, 0x80], 0x08, 0x8100, 0);
    assert!(
        int80_kernel.starts_with("`int 80h` is not valid here"),
        "{int80_kernel}"
    );
    // div rcx / mov eax, ecx.
    let div = explanation_of(0, None, &[0x48, 0xf7, 0xf1], 0x08, 0x8100, 0);
    assert!(
        div.starts_with("`div rcx` raised #DE: the divisor is zero"),
        "{div}"
    );
    let not_div = explanation_of(0, None, &[0x89, 0xc8], 0x08, 0x8100, 0);
    assert!(
        not_div.starts_with("#DE divide error at 0x10000"),
        "{not_div}"
    );
    // A #DF whose CR2 is just below RSP: the stack ran into its guard page.
    let overflow = explanation_of(8, Some(0), &[0x90], 0x08, 0x8100, 0x80f8);
    assert!(
        overflow.contains(
            ". CR2 0x80f8 lies just below the interrupted RSP 0x8100: a kernel stack overflow"
        ),
        "{overflow}"
    );
    for (cr2, why) in [
        (0x8100, "at RSP"),
        (0x7000, "a page below"),
        (0x9000, "above"),
    ] {
        let other = explanation_of(8, Some(0), &[0x90], 0x08, 0x8100, cr2);
        assert!(!other.contains("stack overflow"), "{why}: {other}");
    }
    let overflow_edge = explanation_of(8, Some(0), &[0x90], 0x08, 0x8100, 0x7100);
    assert!(
        overflow_edge.contains("stack overflow"),
        "a page below RSP exactly: {overflow_edge}"
    );
    let selector = explanation_of(13, Some(0x10), &[0x90], 0x08, 0x8100, 0);
    assert!(
        selector.starts_with("general protection fault with selector error"),
        "{selector}"
    );
    let no_selector = explanation_of(13, Some(0), &[0x90], 0x08, 0x8100, 0);
    assert!(
        no_selector.starts_with("general protection fault with no non-canonical operand"),
        "{no_selector}"
    );
}

#[test]
fn a_user_read_of_a_read_only_supervisor_page_names_only_what_the_read_broke() {
    let read_only = |ram: &GuestMemoryMmap| {
        ram.write_obj(0x70_0061u64, GuestAddress(HEAP_PT)).unwrap();
    };
    let user_read = pf_explanation(0x5, HEAP + 0x10, true, read_only);
    assert!(
        user_read.starts_with("protection fault at 0xffff800000000010: a user access to a supervisor page (the page maps"),
        "{user_read}"
    );
    let kernel_fetch = pf_explanation(0x11, HEAP + 0x10, true, read_only);
    assert!(
        kernel_fetch.contains("faulted, but the tables allow it now"),
        "{kernel_fetch}"
    );
}

#[test]
fn every_general_register_is_read_from_its_own_field() {
    use iced_x86::Register;
    let regs = kvm_regs {
        rax: 1,
        rbx: 2,
        rcx: 3,
        rdx: 4,
        rsi: 5,
        rdi: 6,
        rbp: 7,
        rsp: 8,
        r8: 9,
        r9: 10,
        r10: 11,
        r11: 12,
        r12: 13,
        r13: 14,
        r14: 15,
        r15: 16,
        ..Default::default()
    };
    let file = crate::registers::RegisterFile {
        regs: &regs,
        segments: crate::registers::SegmentBases::default(),
    };
    let order = [
        Register::RAX,
        Register::RBX,
        Register::RCX,
        Register::RDX,
        Register::RSI,
        Register::RDI,
        Register::RBP,
        Register::RSP,
        Register::R8,
        Register::R9,
        Register::R10,
        Register::R11,
        Register::R12,
        Register::R13,
        Register::R14,
        Register::R15,
    ];
    for (expected, register) in (1..).zip(order) {
        assert_eq!(file.value(register), Some(expected), "{register:?}");
    }
    // A 32-bit name reads the low half of its register.
    assert_eq!(file.value(Register::EDX), Some(4));
}

#[test]
fn an_entry_on_a_new_table_was_not_reached_before() {
    // The handler points PML4[256] at a fresh PDPT (0x8000) that maps the same PD.
    let diff = diff_across(HEAP, false, |ram| {
        ram.write_obj(0x6003u64, GuestAddress(0x8000)).unwrap();
        ram.write_obj(0x8003u64, GuestAddress(PML4 + 256 * 8))
            .unwrap();
    });
    let text = diff.to_string();
    assert!(text.contains("PGD[256]  at 0x1800: 0x0000000000005003 (P RW), PFN 0x5 -> 0x0000000000008003 (P RW), PFN 0x8"), "{text}");
    assert!(
        text.contains("PUD[0]    at 0x8000: (not reached) -> 0x0000000000006003 (P RW), PFN 0x6"),
        "{text}"
    );
}

#[test]
fn only_the_rights_the_access_needed_are_named() {
    // A read-only, no-execute supervisor page.
    let locked = |ram: &GuestMemoryMmap| {
        ram.write_obj(0x8000_0000_0070_0061u64, GuestAddress(HEAP_PT))
            .unwrap();
    };
    let write = pf_explanation(0x3, HEAP + 0x10, true, locked);
    assert!(
        write.starts_with(
            "protection fault at 0xffff800000000010: a write to a read-only page, which faults in the kernel because CR0.WP is set (the page maps"
        ),
        "{write}"
    );
    // Reserved bit 51 with EFER.NXE clear: the note about NX is not this entry's.
    let bit51 = pf_explanation(0x9, HEAP + 0x10, false, |ram| {
        ram.write_obj(0x70_0063u64 | 1 << 51, GuestAddress(HEAP_PT))
            .unwrap();
    });
    assert!(
        bit51.contains("has reserved bits 0x8000000000000 set: the CPU refuses"),
        "{bit51}"
    );
}

#[test]
fn only_values_with_entry_flags_and_a_frame_in_ram_are_called_entries() {
    let ram = ram();
    let called_entry = |r12: u64| {
        let regs = kvm_regs {
            r12,
            ..Default::default()
        };
        let r = record(13, Some(0), 0x1_0000, 0, regs);
        let text = explain_on(&ram, &[0x49, 0x8b, 0x04, 0xc4], &r).explanation;
        assert!(text.contains("which is not canonical"), "{r12:#x}: {text}");
        text.contains("is a page-table entry value used as a pointer")
    };
    assert!(called_entry(0x8000_0000_0030_0003), "P, NX, a frame in RAM");
    assert!(called_entry(0x0010_0000_0030_0001), "P alone");
    assert!(
        !called_entry(0x0010_0000_0030_0000),
        "no P, no NX: a wild pointer"
    );
    assert!(
        !called_entry(0x8000_0001_0000_0001),
        "its frame is past RAM"
    );
    assert!(
        !called_entry(0x8000_0000_0000_0000),
        "frame 0: bit 63 of a pointer"
    );
}

#[test]
fn the_null_page_ends_at_4_kib_and_the_identity_map_at_its_size() {
    // Page 1 unmapped too: an access there is not a null dereference.
    let unmap = |ram: &GuestMemoryMmap| {
        ram.write_obj(0u64, GuestAddress(0x4000)).unwrap();
        ram.write_obj(0u64, GuestAddress(0x4008)).unwrap();
    };
    let last_null = pf_explanation(0x2, 0xfff, true, unmap);
    assert!(
        last_null.starts_with("null pointer dereference"),
        "{last_null}"
    );
    let past_null = pf_explanation(0x2, 0x1000, true, unmap);
    assert!(
        past_null.starts_with(
            "physical address 0x1000 dereferenced as virtual: 0x1000 is a page-table frame"
        ),
        "{past_null}"
    );
    // 2 MiB is where this tree's identity map ends: RAM there lies above it.
    let above = pf_explanation(0x2, 0x20_0000, true, |_| {});
    assert!(
        above.contains("0x200000 lies in RAM above the identity map, which ends at 0x200000"),
        "{above}"
    );
}

/// A #DE's explanation names the divide by its operand's size: 32-bit kernels divide by
/// `ecx`, not `rcx`.
#[test]
fn a_divide_error_names_the_divide_by_its_width() {
    use super::explain::divide_width;
    for (text, width) in [
        ("div rcx", "128-by-64"),
        ("div r9", "128-by-64"),
        ("div qword ptr [rax]", "128-by-64"),
        ("div ecx", "64-by-32"),
        ("div r9d", "64-by-32"),
        ("idiv dword ptr [ebx+4]", "64-by-32"),
        ("div cx", "32-by-16"),
        ("div si", "32-by-16"),
        ("div word ptr [bx]", "32-by-16"),
        ("div r9w", "32-by-16"),
        ("div cl", "16-by-8"),
        ("div ah", "16-by-8"),
        ("div sil", "16-by-8"),
        ("div r9b", "16-by-8"),
        ("div byte ptr [rax]", "16-by-8"),
    ] {
        assert!(
            divide_width(text).contains(width),
            "{text}: {}",
            divide_width(text)
        );
    }
}
