//! The replay on a small long-mode machine in synthetic memory: the first 2 MiB identity-
//! mapped in 4 KiB pages, a GDT, an IDT whose every exception gate leads to one handler, a
//! TSS with an IST stack, and a kernel stack with a guard page below it. Each test breaks one
//! thing and checks what the CPU raises, with which error code and why.

use super::*;
use crate::paging::{CpuPaging, Cr3, Format, PagingMode};
use crate::virt::GuestView;
use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const PML4: u64 = 0x1000;
const PT: u64 = 0x4000;
const GDT: u64 = 0x10000;
const IDT: u64 = 0x11000;
const TSS: u64 = 0x12000;
const HANDLER: u64 = 0x20000;
/// The kernel stack: one page, the page below it not present.
const STACK_TOP: u64 = 0x31000;
const GUARD: u64 = 0x2f000;
const IST_TOP: u64 = 0x41000;
/// Where the faulting code runs.
const CODE: u64 = 0x50000;

struct Fixture {
    mem: GuestMemoryMmap,
    regs: kvm_regs,
    sregs: kvm_sregs,
}

fn put(mem: &GuestMemoryMmap, at: u64, value: u64) {
    mem.write_obj(value, GuestAddress(at)).unwrap();
}

/// A 64-bit interrupt gate to HANDLER through selector 0x08, with `ist`.
fn gate(ist: u64) -> (u64, u64) {
    let low =
        (HANDLER & 0xffff) | 0x08 << 16 | ist << 32 | 0x8e << 40 | (HANDLER >> 16 & 0xffff) << 48;
    (low, HANDLER >> 32)
}

impl Fixture {
    fn new() -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap();
        put(&mem, PML4, 0x2003);
        put(&mem, 0x2000, 0x3003);
        put(&mem, 0x3000, PT | 3);
        for page in 0..512u64 {
            put(&mem, PT + page * 8, page << 12 | 3);
        }
        put(&mem, PT + (GUARD >> 12) * 8, 0);
        put(&mem, GDT + 8, 0x00af_9a00_0000_ffff);
        put(&mem, GDT + 16, 0x00cf_9200_0000_ffff);
        for vector in 0..32 {
            let (low, high) = gate(0);
            put(&mem, IDT + vector * 16, low);
            put(&mem, IDT + vector * 16 + 8, high);
        }
        put(&mem, TSS + 0x24, IST_TOP);
        // ud2 at CODE.
        mem.write_slice(&[0x0f, 0x0b], GuestAddress(CODE)).unwrap();
        let flat = |selector: u16, type_: u8, l: u8| kvm_segment {
            selector,
            type_,
            present: 1,
            s: 1,
            l,
            g: 1,
            limit: 0xffff_ffff,
            ..Default::default()
        };
        let mut sregs = kvm_sregs {
            cr0: 0x8001_0011,
            cr3: PML4,
            cr4: 0x20,
            efer: 0xd00,
            cs: flat(0x08, 0xb, 1),
            ss: flat(0x10, 0x3, 0),
            ..Default::default()
        };
        sregs.gdt.base = GDT;
        sregs.gdt.limit = 0x27;
        sregs.idt.base = IDT;
        sregs.idt.limit = 32 * 16 - 1;
        sregs.tr = kvm_segment {
            base: TSS,
            limit: 0x67,
            selector: 0x18,
            type_: 0xb,
            present: 1,
            ..Default::default()
        };
        let regs = kvm_regs {
            rip: CODE,
            rsp: STACK_TOP,
            ..Default::default()
        };
        Self { mem, regs, sregs }
    }

    fn machine(&self) -> Machine<'_> {
        let mode = PagingMode::of_vcpu(
            CpuPaging::with_phys_bits(40),
            self.sregs.cr0,
            self.sregs.cr4,
            self.sregs.efer,
        );
        assert_eq!(mode.format, Format::FourLevel);
        Machine {
            space: AddressSpace {
                view: GuestView::new(&self.mem, None),
                mode,
                cr3: Cr3::new(PML4),
            },
            regs: &self.regs,
            sregs: &self.sregs,
        }
    }

    fn deliver(&self, vector: u8, error: Option<u64>) -> Result<Delivered, Raised> {
        long_mode::deliver(&self.machine(), &Raised::new(vector, error, "test"))
    }

    fn set_gate(&self, vector: u64, low: u64) {
        put(&self.mem, IDT + vector * 16, low);
    }
}

fn raised(result: Result<Delivered, Raised>) -> (u8, Option<u64>, String) {
    let e = result.expect_err("the delivery fails");
    (e.vector, e.error, e.why)
}

#[test]
fn a_healthy_delivery_pushes_the_frame_below_the_aligned_stack() {
    let f = Fixture::new();
    let d = f.deliver(14, Some(2)).unwrap();
    assert_eq!(d.handler, Gva::new(HANDLER));
    assert_eq!(
        d.frame,
        Gva::new(STACK_TOP - 48),
        "six qwords with an error code"
    );
    assert_eq!(f.deliver(6, None).unwrap().frame, Gva::new(STACK_TOP - 40));
}

#[test]
fn a_vector_past_the_idt_limit_raises_gp_naming_the_gate() {
    let mut f = Fixture::new();
    f.sregs.idt.limit = 6 * 16 - 1;
    let (vector, error, why) = raised(f.deliver(6, None));
    assert_eq!(
        (vector, error),
        (13, Some(6 << 3 | 3)),
        "index, IDT and EXT bits"
    );
    assert_eq!(why, "#UD's gate (vector 6) lies past the IDT limit 0x5f");
    assert!(f.deliver(5, None).is_ok(), "vector 5 is inside");
}

#[test]
fn a_gate_not_present_raises_np_and_a_wrong_type_gp() {
    let f = Fixture::new();
    let (low, _) = gate(0);
    f.set_gate(13, low & !(0x80 << 40));
    let (vector, error, why) = raised(f.deliver(13, Some(0)));
    assert_eq!((vector, error), (11, Some(13 << 3 | 3)));
    assert_eq!(why, "#GP's gate at 0x110d0 is not present");
    f.set_gate(13, low & !(0xf << 40) | 0xc << 40);
    let (vector, _, why) = raised(f.deliver(13, Some(0)));
    assert_eq!(vector, 13);
    assert!(
        why.contains("is not a 64-bit interrupt or trap gate"),
        "{why}"
    );
}

#[test]
fn a_bad_code_segment_is_named_by_its_selector() {
    let mut f = Fixture::new();
    f.sregs.gdt.limit = 7;
    let (vector, error, why) = raised(f.deliver(6, None));
    assert_eq!((vector, error), (13, Some(0x08 | 1)));
    assert_eq!(why, "#UD's code segment 0x0008 lies past the GDT limit 0x7");
    f.sregs.gdt.limit = 0x27;
    put(&f.mem, GDT + 8, 0x00cf_9200_0000_ffff);
    let (_, _, why) = raised(f.deliver(6, None));
    assert!(why.contains("is not a 64-bit code segment"), "{why}");
    put(&f.mem, GDT + 8, 0x00af_9a00_0000_ffff & !(1 << 47));
    let (vector, error, _) = raised(f.deliver(6, None));
    assert_eq!((vector, error), (11, Some(0x09)));
    // A 32-bit code segment, or one of ring 3 entered from ring 0: #GP.
    put(&f.mem, GDT + 8, 0x00cf_9a00_0000_ffff);
    let (_, _, why) = raised(f.deliver(6, None));
    assert!(why.contains("is not a 64-bit code segment"), "{why}");
    put(&f.mem, GDT + 8, 0x00af_fa00_0000_ffff);
    let (_, _, why) = raised(f.deliver(6, None));
    assert!(why.contains("may enter from CPL 0"), "{why}");
    // A gate naming the null selector.
    let (low, _) = gate(0);
    f.set_gate(6, low & !(0xffff << 16));
    let (vector, _, why) = raised(f.deliver(6, None));
    assert_eq!(vector, 13);
    assert!(why.contains("which is null or in the LDT"), "{why}");
    f.set_gate(6, low);
    // A ring-0 handler entered from ring 3 (on TSS.RSP0), and a limit that just holds it.
    put(&f.mem, GDT + 8, 0x00af_9a00_0000_ffff);
    put(&f.mem, TSS + 4, IST_TOP);
    f.sregs.cs.dpl = 3;
    assert_eq!(f.deliver(6, None).unwrap().frame, Gva::new(IST_TOP - 40));
    f.sregs.gdt.limit = 0x0f;
    assert!(
        f.deliver(6, None).is_ok(),
        "the descriptor's last byte is at the limit"
    );
}

#[test]
fn a_push_into_the_guard_page_raises_pf_with_the_stack_named() {
    let mut f = Fixture::new();
    f.regs.rsp = GUARD + 0x1000 + 0x18;
    let e = f.deliver(14, Some(2)).unwrap_err();
    assert_eq!(
        (e.vector, e.error, e.cr2),
        (14, Some(2), Some(GUARD + 0xff8))
    );
    assert_eq!(
        e.why,
        "pushing the #PF frame at 0x2fff8, on the current stack (RSP 0x30018, no IST): the PTE entry is not present"
    );
}

#[test]
fn an_ist_stack_is_used_and_checked_against_the_tss_limit() {
    let mut f = Fixture::new();
    let (low, _) = gate(1);
    f.set_gate(8, low);
    f.regs.rsp = GUARD + 0x1000;
    let d = f.deliver(8, Some(0)).unwrap();
    assert_eq!(
        d.frame,
        Gva::new(IST_TOP - 48),
        "IST1, not the overflowing stack"
    );
    // IST2 is the next qword of the TSS.
    put(&f.mem, TSS + 0x2c, IST_TOP + 0x1000);
    let (low, _) = gate(2);
    f.set_gate(12, low);
    let d = f.deliver(12, Some(0)).unwrap();
    assert_eq!(d.frame, Gva::new(IST_TOP + 0x1000 - 48), "IST2");
    // A TSS limit that just holds IST1.
    f.sregs.tr.limit = 0x2b;
    assert!(f.deliver(8, Some(0)).is_ok());
    f.sregs.tr.limit = 0x20;
    let (vector, error, why) = raised(f.deliver(8, Some(0)));
    assert_eq!((vector, error), (10, Some(0x18 | 1)));
    assert_eq!(why, "TSS.IST1 lies past the TSS limit 0x20");
}

#[test]
fn a_read_only_stack_faults_under_cr0_wp_and_a_non_canonical_one_raises_ss() {
    let mut f = Fixture::new();
    put(
        &f.mem,
        PT + ((STACK_TOP - 0x1000) >> 12) * 8,
        (STACK_TOP - 0x1000) | 1,
    );
    let e = f.deliver(6, None).unwrap_err();
    assert_eq!((e.vector, e.error), (14, Some(3)), "present + write");
    assert!(e.why.ends_with("because CR0.WP is set"), "{}", e.why);
    f.sregs.cr0 &= !(1 << 16);
    assert!(
        f.deliver(6, None).is_ok(),
        "without CR0.WP the kernel writes anyway"
    );
    f.regs.rsp = 0x8000_0000_0000_0000;
    let (vector, error, _) = raised(f.deliver(6, None));
    assert_eq!((vector, error), (12, Some(1)));
}

#[test]
fn a_stack_overflow_without_ist_replays_to_a_shutdown() {
    let mut f = Fixture::new();
    // `push rax` at the bottom of the stack: its write lands in the guard page.
    f.mem.write_slice(&[0x50], GuestAddress(CODE)).unwrap();
    f.regs.rsp = GUARD + 0x1000;
    let m = f.machine();
    let first = first_exception(&m).unwrap();
    assert_eq!(
        (first.vector, first.error, first.cr2),
        (14, Some(2), Some(GUARD + 0xff8))
    );
    assert!(
        first
            .why
            .starts_with("`push rax` writes [rsp-0x8] at 0x2fff8"),
        "{}",
        first.why
    );
    let chain = replay(&m, first);
    let vectors: Vec<u8> = chain.attempts.iter().map(|a| a.exception.vector).collect();
    assert_eq!(vectors, [14, 8], "{chain}");
    assert!(chain.shuts_down(), "{chain}");
    assert!(
        chain
            .to_string()
            .contains("#PF while delivering #PF (page fault then page fault: a double fault)"),
        "{chain}"
    );
    // With #DF on IST1, the #DF is delivered: no shutdown.
    let (low, _) = gate(1);
    f.set_gate(8, low);
    let chain = replay(&f.machine(), first_exception(&f.machine()).unwrap());
    assert!(!chain.shuts_down());
    assert_eq!(chain.attempts.last().map(|a| a.exception.vector), Some(8));
}

#[test]
fn the_first_exception_comes_from_the_instruction_at_rip() {
    let mut f = Fixture::new();
    let first = |f: &Fixture| first_exception(&f.machine());
    assert_eq!(first(&f).unwrap().vector, 6, "ud2");
    // xor ecx, ecx is harmless: the host cannot say what was raised.
    f.mem
        .write_slice(&[0x31, 0xc9], GuestAddress(CODE))
        .unwrap();
    assert!(
        first(&f)
            .unwrap_err()
            .contains("raises nothing the host can find")
    );
    // div rcx with RCX = 0.
    f.mem
        .write_slice(&[0x48, 0xf7, 0xf1], GuestAddress(CODE))
        .unwrap();
    assert_eq!(first(&f).unwrap().vector, 0);
    f.regs.rcx = 3;
    assert!(first(&f).is_err(), "a divisor that is not zero");
    // RIP in the guard page: the fetch faults.
    f.regs.rip = GUARD + 0x10;
    let e = first(&f).unwrap();
    assert_eq!(
        (e.vector, e.error, e.cr2),
        (14, Some(0x10), Some(GUARD + 0x10))
    );
}

/// A loop the frames show: the #UD handler's page is not mapped, so each delivery faults
/// again at its fetch. Three #PF frames below the #UD's, each 48 bytes under the last; the
/// final RIP is the handler, the final RSP the newest frame.
#[test]
fn a_loop_at_an_unmapped_handler_is_walked_back_to_its_first_exception() {
    let mut f = Fixture::new();
    put(&f.mem, PT + (HANDLER >> 12) * 8, 0);
    let origin_frame = STACK_TOP - 40;
    for (i, word) in [CODE, 0x08, 0x2, STACK_TOP, 0x10].iter().enumerate() {
        put(&f.mem, origin_frame + 8 * i as u64, *word);
    }
    let mut rsp = origin_frame;
    for _ in 0..3 {
        let frame = (rsp & !0xf) - 48;
        for (i, word) in [0x10, HANDLER, 0x08, 0x2, rsp, 0x10].iter().enumerate() {
            put(&f.mem, frame + 8 * i as u64, *word);
        }
        rsp = frame;
    }
    f.regs.rip = HANDLER;
    f.regs.rsp = rsp;
    let walk_back = |f: &Fixture| replay_shutdown(&f.machine()).unwrap();
    let chain = walk_back(&f);
    let (found, started) = chain.before.clone().expect("a loop");
    assert_eq!(found.deliveries, 3, "{found}");
    assert_eq!(
        (found.newest, found.oldest),
        (Gva::new(rsp), Gva::new(origin_frame))
    );
    assert_eq!(found.origin, Some((Gva::new(CODE), Gva::new(STACK_TOP))));
    assert_eq!(started.map(|e| e.vector), Some(6), "the ud2 at CODE");
    assert!(
        chain
            .to_string()
            .contains("3 deliveries to the handler at 0x20000, which the CPU cannot run"),
        "{chain}"
    );
    // The first exception of the replay is the fetch at the handler.
    assert_eq!(chain.attempts[0].exception.cr2, Some(HANDLER));
}

/// The loop's newest frames on a page the tables no longer map (its own pushes can overwrite
/// the entries that mapped the stack): counted 48 bytes apart up to the first readable frame,
/// which must lie on that grid.
#[test]
fn frames_on_unmapped_pages_are_counted_up_to_a_readable_one() {
    let mut f = Fixture::new();
    put(&f.mem, PT + (HANDLER >> 12) * 8, 0);
    put(&f.mem, PT + (GUARD >> 12) * 8, GUARD | 3);
    let origin_frame = STACK_TOP - 40;
    for (i, word) in [CODE, 0x08, 0x2, STACK_TOP, 0x10].iter().enumerate() {
        put(&f.mem, origin_frame + 8 * i as u64, *word);
    }
    let mut rsp = origin_frame;
    for _ in 0..100 {
        let frame = (rsp & !0xf) - 48;
        for (i, word) in [0x10, HANDLER, 0x08, 0x2, rsp, 0x10].iter().enumerate() {
            put(&f.mem, frame + 8 * i as u64, *word);
        }
        rsp = frame;
    }
    assert!(
        rsp < GUARD + 0x1000,
        "the newest frames are on the page below"
    );
    put(&f.mem, PT + (GUARD >> 12) * 8, 0);
    f.regs.rip = HANDLER;
    f.regs.rsp = rsp;
    let chain = replay_shutdown(&f.machine()).unwrap();
    let (found, _) = chain.before.expect("a loop");
    let on_the_unmapped_page = (GUARD + 0x1000 - rsp).div_ceil(48);
    assert_eq!(found.deliveries, 100, "{found}");
    assert_eq!(found.unreadable, on_the_unmapped_page, "{found}");
    assert_eq!(found.origin, Some((Gva::new(CODE), Gva::new(STACK_TOP))));
}

/// The page-fault error code names what the access was: a write crossing into a page that is
/// not present faults at that page's first byte; reserved bits in an entry set RSVD; an
/// access from ring 3 sets U/S.
#[test]
fn page_fault_error_codes_and_cr2_name_the_access() {
    let mut f = Fixture::new();
    // mov [rax], rcx with RAX 4 bytes below the guard page: the store's last four bytes are on
    // the page that is not present, and CR2 is that page's first byte.
    f.mem
        .write_slice(&[0x48, 0x89, 0x08], GuestAddress(CODE))
        .unwrap();
    f.regs.rax = GUARD - 4;
    let e = first_exception(&f.machine()).unwrap();
    assert_eq!(
        (e.vector, e.error, e.cr2),
        (14, Some(2), Some(GUARD)),
        "{}",
        e.why
    );
    // The same from ring 3, on a user page: U/S set too.
    f.sregs.cs.dpl = 3;
    put(&f.mem, PML4, 0x2007);
    put(&f.mem, 0x2000, 0x3007);
    put(&f.mem, 0x3000, PT | 7);
    for page in 0..512u64 {
        put(&f.mem, PT + page * 8, page << 12 | 7);
    }
    put(&f.mem, PT + (GUARD >> 12) * 8, 0);
    let e = first_exception(&f.machine()).unwrap();
    assert_eq!(e.error, Some(2 | 4), "{}", e.why);
    // A reserved bit in the stack page's PTE: present, write, RSVD.
    let mut f = Fixture::new();
    put(
        &f.mem,
        PT + ((STACK_TOP - 0x1000) >> 12) * 8,
        (STACK_TOP - 0x1000) | 3 | 1 << 51,
    );
    f.regs.rsp = STACK_TOP;
    let e = f.deliver(6, None).unwrap_err();
    assert_eq!((e.vector, e.error), (14, Some(1 | 2 | 8)), "{}", e.why);
    assert!(
        e.why
            .ends_with("the PTE entry has reserved bits 0x8000000000000 set"),
        "{}",
        e.why
    );
}
