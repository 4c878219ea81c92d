//! 32-bit delivery on a small protected-mode machine with paging off: a flat GDT (32-bit code
//! at 0x08, data at 0x10), 8-byte gates to one handler, a 32-bit TSS with ESP0/SS0.

use super::*;
use crate::paging::{CpuPaging, Cr3, PagingMode};
use crate::virt::GuestView;
use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const GDT: u64 = 0x1000;
const IDT: u64 = 0x2000;
const TSS: u64 = 0x3000;
const HANDLER: u64 = 0x4000;
const ESP0: u64 = 0x9000;
const CODE: u64 = 0x5000;

struct Fixture {
    mem: GuestMemoryMmap,
    regs: kvm_regs,
    sregs: kvm_sregs,
}

impl Fixture {
    fn new() -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let put = |at: u64, value: u64| mem.write_obj(value, GuestAddress(at)).unwrap();
        put(GDT + 0x08, 0x00cf_9a00_0000_ffff);
        put(GDT + 0x10, 0x00cf_9200_0000_ffff);
        let gate = (HANDLER & 0xffff) | 0x08 << 16 | 0x8e00 << 32 | (HANDLER >> 16) << 48;
        for vector in 0..32 {
            put(IDT + vector * 8, gate);
        }
        mem.write_obj(ESP0 as u32, GuestAddress(TSS + 4)).unwrap();
        mem.write_obj(0x10u16, GuestAddress(TSS + 8)).unwrap();
        mem.write_slice(&[0x0f, 0x0b], GuestAddress(CODE)).unwrap();
        let mut sregs = kvm_sregs {
            cr0: 0x11,
            cs: kvm_segment {
                selector: 0x08,
                present: 1,
                db: 1,
                ..Default::default()
            },
            ..Default::default()
        };
        sregs.gdt.base = GDT;
        sregs.gdt.limit = 0x17;
        sregs.idt.base = IDT;
        sregs.idt.limit = 32 * 8 - 1;
        sregs.tr.base = TSS;
        sregs.tr.limit = 0x67;
        sregs.tr.selector = 0x18;
        let regs = kvm_regs {
            rip: CODE,
            rsp: 0x7000,
            ..Default::default()
        };
        Self { mem, regs, sregs }
    }

    fn machine(&self) -> Machine<'_> {
        Machine {
            space: AddressSpace {
                view: GuestView::new(&self.mem, None),
                mode: PagingMode::of_vcpu(CpuPaging::with_phys_bits(36), 0x11, 0, 0),
                cr3: Cr3::new(0),
            },
            regs: &self.regs,
            sregs: &self.sregs,
        }
    }

    fn deliver(&self, vector: u8, error: Option<u64>) -> Result<Delivered, Raised> {
        protected::deliver(&self.machine(), &Raised::new(vector, error, "test"))
    }
}

#[test]
fn a_32_bit_frame_is_dwords_on_the_current_stack_unaligned() {
    let mut f = Fixture::new();
    f.regs.rsp = 0x7004;
    let d = f.deliver(6, None).unwrap();
    assert_eq!(
        (d.handler, d.frame),
        (Gva::new(HANDLER), Gva::new(0x7004 - 12))
    );
    assert_eq!(f.deliver(13, Some(0)).unwrap().frame, Gva::new(0x7004 - 16));
}

#[test]
fn from_ring_3_the_frame_goes_on_tss_esp0_with_ss_and_esp() {
    let mut f = Fixture::new();
    f.sregs.cs.dpl = 3;
    f.sregs.cs.selector = 0x1b;
    let d = f.deliver(14, Some(4)).unwrap();
    assert_eq!(
        d.frame,
        Gva::new(ESP0 - 24),
        "SS, ESP, EFLAGS, CS, EIP, error"
    );
    f.sregs.tr.limit = 0x6;
    let e = f.deliver(14, Some(4)).unwrap_err();
    assert_eq!((e.vector, e.error), (10, Some(0x18 | 1)));
    assert_eq!(e.why, "TSS.ESP0 lies past the TSS limit 0x6");
}

#[test]
fn eight_byte_gates_are_checked_against_the_limit_and_present_bit() {
    let mut f = Fixture::new();
    f.sregs.idt.limit = 6 * 8 - 1;
    let e = f.deliver(6, None).unwrap_err();
    assert_eq!((e.vector, e.error), (13, Some(6 << 3 | 3)));
    f.sregs.idt.limit = 32 * 8 - 1;
    f.mem
        .write_obj(0x0e00u16, GuestAddress(IDT + 13 * 8 + 4))
        .unwrap();
    let e = f.deliver(13, Some(0)).unwrap_err();
    assert_eq!((e.vector, e.error), (11, Some(13 << 3 | 3)));
    // A 64-bit code segment cannot be entered from a 32-bit gate.
    f.mem
        .write_obj(0x00af_9a00_0000_ffffu64, GuestAddress(GDT + 8))
        .unwrap();
    let e = f.deliver(6, None).unwrap_err();
    assert_eq!((e.vector, e.error), (13, Some(0x08 | 1)));
}

#[test]
fn a_32_bit_empty_idt_replays_to_a_shutdown() {
    let mut f = Fixture::new();
    f.sregs.idt.limit = 0;
    let chain = replay_shutdown(&f.machine()).unwrap();
    assert_eq!(chain.summary(), "#UD → #GP → #DF → #GP", "{chain}");
    assert!(chain.shuts_down());
}
