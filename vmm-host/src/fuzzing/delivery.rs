//! The shutdown replay on descriptor tables, stacks and code the fuzzer writes, in long mode
//! and in 32-bit protected mode.

use super::{Input, assert_one_line};
use crate::delivery::{Machine, replay_shutdown};
use crate::paging::{CpuPaging, Cr3, PagingMode};
use crate::virt::{AddressSpace, GuestView};
use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Guest RAM; in long mode its first 1 MiB is identity-mapped by tables at 0x1000–0x4fff.
pub(super) const RAM: u64 = 1 << 20;
/// Where the instruction that starts it all lies.
pub(super) const CODE: u64 = 0x8000;

/// 1 MiB of RAM with a 4-level identity map of all of it (PML4 at 0x1000), pages present,
/// writable, accessed and dirty, and user pages where `user` says.
pub(super) fn identity_ram(user: bool) -> GuestMemoryMmap {
    let ram = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), crate::narrow::to_usize(RAM))])
        .expect("1 MiB of anonymous memory");
    let put = |at: u64, value: u64| {
        ram.write_obj(value, GuestAddress(at))
            .expect("a table entry inside RAM");
    };
    let us = if user { 4 } else { 0 };
    put(0x1000, 0x2003 | us);
    put(0x2000, 0x3003 | us);
    put(0x3000, 0x4003 | us);
    for page in 0..RAM >> 12 {
        put(0x4000 + page * 8, page << 12 | 0x63 | us);
    }
    ram
}

/// Writes the fuzzer asks for, until its bytes run out: a region byte (IDT, GDT, TSS, stack,
/// page tables, anywhere), an offset in it and a value.
pub(super) fn scribble(ram: &GuestMemoryMmap, input: &mut Input<'_>, bases: [u64; 4]) {
    while !input.is_empty() {
        let region = usize::from(input.u8()) % 6;
        let offset = u64::from(input.u16());
        let at = match region {
            0..=3 => bases[region].wrapping_add(offset & 0xfff),
            4 => 0x1000 + offset % 0x4000,
            _ => u64::from(input.u32()) % RAM,
        };
        let _ = ram.write_obj(input.u64(), GuestAddress(at));
    }
}

fn segment(selector: u16, dpl: u8, long: bool) -> kvm_segment {
    kvm_segment {
        selector,
        present: 1,
        dpl,
        l: u8::from(long),
        db: u8::from(!long),
        s: 1,
        type_: 0xb,
        limit: 0xffff_ffff,
        g: 1,
        ..Default::default()
    }
}

/// The replay ends within its bound of eight deliveries, every reason and summary is one
/// line, and a chain that shuts down ends in a delivery that failed.
pub fn delivery(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.u8();
    let long = flags & 1 == 1;
    let cpl = if long { (flags >> 1) & 3 } else { 0 };
    let ram = identity_ram(flags & 8 != 0);
    let (idt, gdt, tss) = (input.below(RAM), input.below(RAM), input.below(RAM));
    let rsp = if flags & 16 != 0 {
        input.u64()
    } else {
        input.below(RAM)
    };
    let limits = (input.u16(), input.u16(), input.u32());
    let code = input.bytes(16);
    let _ = ram.write_slice(code, GuestAddress(CODE));
    scribble(&ram, &mut input, [idt, gdt, tss, rsp.wrapping_sub(0x800)]);
    let regs = kvm_regs {
        rip: CODE,
        rsp,
        rflags: 2,
        ..Default::default()
    };
    let mut sregs = kvm_sregs {
        cr0: if long { 0x8001_0011 } else { 0x11 },
        cr3: if long { 0x1000 } else { 0 },
        cr4: if long { 0x20 } else { 0 },
        efer: if long { 0xd00 } else { 0 },
        cs: segment(0x08 | u16::from(cpl), cpl, long),
        ss: segment(0x10 | u16::from(cpl), cpl, false),
        ..Default::default()
    };
    (sregs.idt.base, sregs.idt.limit) = (idt, limits.0);
    (sregs.gdt.base, sregs.gdt.limit) = (gdt, limits.1);
    (sregs.tr.base, sregs.tr.limit) = (tss, limits.2);
    let paging = CpuPaging::with_phys_bits(46);
    let machine = Machine {
        space: AddressSpace {
            view: GuestView::new(&ram, None),
            mode: PagingMode::of_vcpu(paging, sregs.cr0, sregs.cr4, sregs.efer),
            cr3: Cr3::new(sregs.cr3),
        },
        regs: &regs,
        sregs: &sregs,
    };
    match replay_shutdown(&machine) {
        Err(why) => assert_one_line("why a shutdown cannot be replayed", &why),
        Ok(chain) => {
            assert!(
                (1..=8).contains(&chain.attempts.len()),
                "{} attempts",
                chain.attempts.len()
            );
            for attempt in &chain.attempts {
                assert_one_line("an exception's reason", &attempt.exception.why);
                assert!(attempt.exception.vector < 32, "{:?}", attempt.exception);
            }
            if chain.shuts_down() {
                let last = chain.attempts.last().expect("at least one attempt");
                assert!(
                    last.outcome.is_err(),
                    "a shutdown after a delivery that worked"
                );
            }
            assert_one_line("a chain's summary", &chain.summary());
            assert_one_line("a chain's cause", &chain.cause());
            assert!(!chain.to_string().is_empty());
        }
    }
}
